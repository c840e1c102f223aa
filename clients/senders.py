"""Checking who writes: the part of a device (``clients.device.Device``) that checks a
sender's new or changed identity key before opening its message (issue 12, point 1).

The rules are ``clients.identities`` (sans I/O). The mechanics, here: the link's handler
(``Device._on_envelopes``) may not ask the directory (infra/link.py: the answer could
only be read by the loop that waits for the handler), so a message that needs a check
is *held*: stored, still sealed, in the device store, and acknowledged. A task
(``_check_held``) then asks the directory for the sender's user's devices (a ``devices``
lookup, every entry proven against a checkpoint consistent with the one held),
decides, and opens the message (committed with the crypto state and its removal from
``held``, in one transaction) or refuses it (nothing installed, an alarm). Held
envelopes survive a crash: the task runs after every (re)connection. While the
directory does not answer, they stay held and the task tries again with back-off.

Also here: safety numbers, and the user's word that one was verified.

Events (actor = the device): ``device.identity_held`` (id, from), ``device.identity_accepted``
(device, user, fingerprint, changed, how: first-use | key-transparency | directory),
``device.identity_alarm`` (user, device, reason, alarm_kind, id, op: receive | bundles,
presented, known: fingerprints), ``device.safety_verified`` (device, user, fingerprint).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from clients.crypto import CryptoError, DeviceCrypto, PublicIdentity, Sealed
from clients.identities import Decision, Known, after_lookup, first_look, unverifiable
from clients.kt import DirectoryView
from clients.store import DeviceStore, Incoming
from infra.failures import describe, is_transient
from infra.link import Link
from wire import envelope as wire_envelope
from wire import topics
from wire.b64 import b64decode, b64encode
from wire.envelope import Envelope, EnvelopeError
from wire.events import EventLog, now_ms
from wire.ids import user_of
from wire.kt import InconsistentCheckpoint

if TYPE_CHECKING:
    from clients.receiving import _Opened

log = logging.getLogger(__name__)


class SenderChecks:
    """A mixin of ``Device``: what it needs from the device is declared here."""

    id: str
    crypto: DeviceCrypto
    kt: DirectoryView | None
    check_identities: bool
    _store: DeviceStore
    _link: Link
    _events: EventLog
    _checker: asyncio.Task[None] | None
    _check_again: bool

    async def _lookup(
        self, op: str, listed: str, **fields: Any
    ) -> tuple[dict[str, Any], list[Any], dict[str, str]]:
        raise NotImplementedError

    def _decrypt(self, env: Envelope) -> _Opened:
        raise NotImplementedError

    def _show(self, o: _Opened) -> None:
        raise NotImplementedError

    def _known(self, peer: str) -> Known | None:
        """The identity held for a peer device: the one accepted, else the one of the
        session held with it (made before identities were recorded)."""
        known = self._store.peer_identity(peer)
        if known is None:
            identity = self.crypto.peer_identity(peer)
            if identity is not None:
                known = Known(b64encode(identity.encode()))
        return known

    def _presented(self, env: Envelope) -> str | None:
        """The identity ``env`` would bind its sender to by starting a session (base64),
        or None if it starts none or would not open anyway."""
        sealed = Sealed(header=env.header, body=env.body, prekey=env.prekey)
        try:
            identity = self.crypto.new_session_identity(env.sender, sealed)
        except CryptoError:
            return None  # the normal path reports it unreadable
        return None if identity is None else b64encode(identity.encode())

    def _must_hold(self, env: Envelope) -> bool:
        if not self.check_identities:
            return False
        presented = self._presented(env)
        if presented is None:
            return False
        decision = first_look(self._known(env.sender), presented, kt=self.kt is not None)
        if decision.verdict == "accept" and decision.how != "same":
            self._accepted(env.sender, presented, decision)  # trust on first use
        return decision.verdict != "accept"

    def _accepted(self, peer: str, identity: str, decision: Decision) -> None:
        self._store.set_peer_identity(
            peer, identity, verified=False, how=decision.how, now_ms=now_ms()
        )
        self._events.emit(
            self.id,
            "device.identity_accepted",
            device=peer,
            user=user_of(peer),
            fingerprint=_fingerprint(identity),
            changed=decision.changed,
            how=decision.how,
        )

    def _identity_alarm(
        self, peer: str, decision: Decision, presented: str, *, op: str, msg_id: str | None = None
    ) -> None:
        known = self._known(peer)
        self._events.emit(
            self.id,
            "device.identity_alarm",
            user=user_of(peer),
            device=peer,
            reason=decision.reason,
            alarm_kind=decision.alarm_kind,
            id=msg_id,
            op=op,
            presented=_fingerprint(presented),
            known=None if known is None else _fingerprint(known.identity),
        )

    def _check_held_soon(self) -> None:
        if self._checker is None or self._checker.done():
            self._checker = asyncio.get_running_loop().create_task(self._check_held())
        else:
            self._check_again = True

    async def _check_held(self) -> None:
        """Check every held envelope's sender identity, then open or refuse it. The
        directory not answering (or answering what cannot be verified) leaves them held:
        tried again with back-off, and after every reconnection."""
        delay = 0.2
        while True:
            self._check_again = False
            try:
                await self._check_held_once()
                delay = 0.2
            except Exception as exc:
                log.warning("%s: checking held envelopes failed, will retry: %s", self.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self._check_again = True
            if not self._check_again:
                return

    async def _check_held_once(self) -> None:
        logged: dict[str, dict[str, str] | str] = {}  # user -> proven identities | why not
        for sender, msg_id, payload in self._store.held():
            try:
                env = wire_envelope.parse(payload)
            except EnvelopeError:
                self._store.refuse_held(sender, msg_id)
                continue
            user = user_of(sender)
            if user not in logged and self._first_decision(env).verdict == "check":
                try:
                    _, _, logged[user] = await self._lookup("devices", "devices", user=user)
                except InconsistentCheckpoint as exc:
                    logged[user] = f"split view ({exc})"
            # Nothing awaits from here to the commit: no other message interleaves.
            self._settle_held(env, payload, logged.get(user))

    def _first_decision(self, env: Envelope) -> Decision:
        presented = self._presented(env)
        if presented is None or not self.check_identities:
            return Decision("accept", how="same")
        return first_look(self._known(env.sender), presented, kt=self.kt is not None)

    def _settle_held(
        self, env: Envelope, payload: bytes, logged: dict[str, str] | str | None
    ) -> None:
        presented = self._presented(env)
        decision = self._first_decision(env)
        if decision.verdict == "check":
            assert presented is not None
            if logged is None:
                self._check_again = True  # not looked up in this round: the next one
                return
            if isinstance(logged, str):
                decision = unverifiable(logged)
            else:
                decision = after_lookup(
                    self._known(env.sender),
                    presented,
                    logged.get(env.sender),
                    "not listed, or listed without a valid proof",
                )
        if decision.verdict == "refuse":
            assert presented is not None
            self._store.refuse_held(env.sender, env.id)
            self._identity_alarm(env.sender, decision, presented, op="receive", msg_id=env.id)
            return
        snapshot = self.crypto.to_bytes()
        try:
            o = self._decrypt(env)
        except Exception as exc:
            if is_transient(exc):
                raise
            # One this device cannot process (a text too long for its journal record,
            # from a client that skipped the sender's check): set aside, as in the
            # receiving path (clients/receiving.py), no key spent, and the next goes on.
            # It was acknowledged when it was held.
            self.crypto = DeviceCrypto.from_bytes(snapshot)
            self._link.set_aside(topics.inbox(self.id, topics.MSG), payload, describe(exc))
            self._store.refuse_held(env.sender, env.id)
            return
        record = None
        if presented is not None and o.text is not None and decision.how != "same":
            record = (env.sender, presented, False, decision.how)
        self._store.release(
            self.crypto.to_bytes(),
            Incoming(env.sender, user_of(env.sender), env.id, env.ts, o.text, o.journal),
            record,
            now_ms(),
        )
        if record is not None:
            self._events.emit(
                self.id,
                "device.identity_accepted",
                device=env.sender,
                user=user_of(env.sender),
                fingerprint=_fingerprint(presented or ""),
                changed=decision.changed,
                how=decision.how,
            )
        self._show(o)

    # -- safety numbers ------------------------------------------------------------------

    def safety_number(self, peer_device: str) -> str | None:
        """The safety number (60 digits) made with the identity held for a peer device,
        for the user to compare out of band; None if none is held."""
        known = self._known(peer_device)
        if known is None:
            return None
        identity = PublicIdentity.decode(b64decode(known.identity, "identity"))
        return self.crypto.safety_number(identity)

    def mark_verified(self, peer_device: str, number: str) -> None:
        """The user compared the safety number with the peer's: from now on another
        identity for that device is refused, whatever the directory says. ValueError if
        ``number`` (digits; spaces ignored) is not the one made with the identity held."""
        expected = self.safety_number(peer_device)
        known = self._known(peer_device)
        if expected is None or known is None:
            raise ValueError(f"no identity is held for {peer_device}")
        if "".join(c for c in number if not c.isspace()) != expected:
            raise ValueError(f"that is not the safety number made with {peer_device}'s key")
        self._store.set_peer_identity(
            peer_device, known.identity, verified=True, how="verified", now_ms=now_ms()
        )
        self._events.emit(
            self.id,
            "device.safety_verified",
            device=peer_device,
            user=user_of(peer_device),
            fingerprint=_fingerprint(known.identity),
        )



def _fingerprint(identity: str) -> str:
    """A short name for an identity in events (the start of its SHA-256 fingerprint)."""
    try:
        return PublicIdentity.decode(b64decode(identity, "identity")).fingerprint()[:16]
    except Exception:
        return "unreadable"


