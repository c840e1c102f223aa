"""Receiving: the part of a device (``clients.device.Device``) that takes the envelopes
arriving together in its inbox, opens them, commits them in one transaction, shows them
and acknowledges them, and sets aside one it cannot process (issue 12, point 2).

Events (actor = the device): ``device.received`` (id, from, from_user, text),
``device.unreadable`` (id, from, reason), ``device.rejected`` (reason), and the link's
``service.set_aside``; a message that needs its sender's identity checked first is held
(``clients.senders``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clients.archive import ARCHIVE_KIND
from clients.crypto import CryptoError, DeviceCrypto, Sealed
from clients.store import DeviceStore, Incoming
from infra.failures import describe, is_transient
from infra.link import Link
from wire import envelope as wire_envelope
from wire import topics
from wire.envelope import Envelope, EnvelopeError
from wire.events import EventLog, now_ms
from wire.ids import user_of


@dataclass(frozen=True)
class _Opened:
    env: Envelope
    text: bytes | None  # None: could not be read
    reason: str | None  # why not
    journal: bytes | None  # the record for our enterprise's archive, if it runs one


class _Poison(Exception):
    """An envelope of a batch this device cannot process (its index, and why)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


class Receiving:
    """A mixin of ``Device``: what it needs from the device is declared here."""

    id: str
    crypto: DeviceCrypto
    _store: DeviceStore
    _events: EventLog
    _link: Link
    _batch_committed: bool  # the incoming batch in hand is stored
    _otk_seen: int  # one-time prekeys left when last looked at

    if TYPE_CHECKING:  # the device's other parts (declared only: not to shadow them)

        def _must_hold(self, env: Envelope) -> bool: ...
        def _check_held_soon(self) -> None: ...
        def _upkeep_soon(self, *, expire: bool = True) -> None: ...
        def _published(self, key: tuple[str, str, str], payload: bytes) -> None: ...
        def _journal(
            self, direction: str, msg_id: str, sender: str, to_user: str | None, ts: int,
            text: bytes,
        ) -> bytes | None: ...
    async def _on_envelopes(self, payloads: list[bytes]) -> None:
        """Envelopes that arrived together: opened in order, committed in one
        transaction (one fsync, not one each), then shown and acknowledged.

        An envelope this device cannot process (anything but a CryptoError, which makes
        it "unreadable", or a transient failure of the disk) is set aside: the batch's
        work is undone (the keys as they were before it), the envelopes before it are
        processed again without it, it is kept in the set-aside store and acknowledged
        to the relay, and the rest follow. So a poison envelope consumes no message key
        (it can be opened later, by a fixed version) and holds up nothing."""
        pending = list(payloads)
        while pending:
            snapshot = self.crypto.to_bytes()
            self._batch_committed = False
            try:
                self._receive(pending)
                return
            except _Poison as poison:
                self.crypto = DeviceCrypto.from_bytes(snapshot)
                before, bad, pending = (
                    pending[: poison.index],
                    pending[poison.index],
                    pending[poison.index + 1 :],
                )
                if before:
                    await self._on_envelopes(before)
                self._link.set_aside(topics.inbox(self.id, topics.MSG), bad, poison.reason)
                self._on_set_aside(topics.MSG, bad)
            except BaseException:
                # Transient (the disk), cancelled, or a failure after the commit (then
                # the keys in memory are the committed ones: keep them). Before it,
                # nothing of this batch is stored: undo it in memory too.
                if not self._batch_committed:
                    self.crypto = DeviceCrypto.from_bytes(snapshot)
                raise

    def _receive(self, payloads: list[bytes]) -> None:
        """``_on_envelopes``' one pass; _Poison names an envelope it cannot process."""
        to_ack: list[Envelope] = []
        opened: list[_Opened] = []
        held: list[tuple[str, str, bytes]] = []
        fresh: set[tuple[str, str]] = set()
        for index, payload in enumerate(payloads):
            try:
                env = wire_envelope.parse(payload)
            except EnvelopeError as exc:
                self._events.emit(self.id, "device.rejected", reason=str(exc))
                continue
            if env.recipient != self.id:
                self._events.emit(
                    self.id, "device.rejected", reason=f"envelope addressed to {env.recipient}"
                )
                continue
            to_ack.append(env)
            if (
                (env.sender, env.id) in fresh
                or self._store.is_processed(env.sender, env.id)
                or self._store.is_held(env.sender, env.id)
            ):
                continue  # a redelivery: acknowledged again, nothing else
            fresh.add((env.sender, env.id))
            if self._must_hold(env):
                held.append((env.sender, env.id, payload))
                continue
            try:
                opened.append(self._decrypt(env))
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise _Poison(index, describe(exc)) from exc
        if held:
            # Kept before the acknowledgement below: checked (and opened or refused) by
            # _check_held, outside this handler, which must not ask the directory.
            self._store.hold(held, now_ms())
            for sender, msg_id, _ in held:
                self._events.emit(self.id, "device.identity_held", id=msg_id, **{"from": sender})
        if opened:
            self._store.commit_incoming_many(
                self.crypto.to_bytes(),
                [
                    Incoming(
                        o.env.sender, user_of(o.env.sender), o.env.id, o.env.ts, o.text, o.journal
                    )
                    for o in opened
                ],
            )
            self._batch_committed = True
        for o in opened:
            self._show(o)
        # Acknowledge after the commit: if we die before the ack leaves, the relay
        # re-sends, and the processed-table above turns the repeat into a no-op. Not
        # awaited: waiting for each ack's PUBACK would make receiving one broker round
        # trip per envelope; a lost ack costs only that redelivery.
        for env in to_ack:
            self._link.publish_soon("ack", json.dumps({"from": env.sender, "id": env.id}).encode())
        if held:
            self._check_held_soon()

    def _on_set_aside(self, kind: str, payload: bytes) -> None:
        """An envelope set aside (by us or by the link): acknowledge it to the relay, or
        the relay would send it again on every reconnection. Kept in the set-aside
        store; never opened, so no message key was spent on it."""
        if kind != topics.MSG:
            return
        try:
            env = wire_envelope.parse(payload)
        except EnvelopeError:
            return  # not an envelope: nothing the relay holds for us under a name
        if env.recipient == self.id:
            self._link.publish_soon(
                "ack", json.dumps({"from": env.sender, "id": env.id}).encode()
            )

    def _decrypt(self, env: Envelope) -> _Opened:
        """Open one envelope (the ratchet steps in memory; the caller commits them)."""
        sealed = Sealed(header=env.header, body=env.body, prekey=env.prekey)
        try:
            text: bytes | None = self.crypto.decrypt(env.sender, sealed)
            reason = None
        except CryptoError as exc:
            text, reason = None, f"{type(exc).__name__}: {exc}"
        journal = None
        if text is not None:
            journal = self._journal("in", env.id, env.sender, None, env.ts, text)
        return _Opened(env, text, reason, journal)

    def _show(self, o: _Opened) -> None:
        """After the commit: the event for the user, the journal record for the archive."""
        env = o.env
        if o.text is None:
            self._events.emit(
                self.id, "device.unreadable", id=env.id, reason=o.reason, **{"from": env.sender}
            )
            return
        self._events.emit(
            self.id,
            "device.received",
            id=env.id,
            from_user=user_of(env.sender),
            text=o.text.decode(errors="replace"),
            **{"from": env.sender},
        )
        if env.prekey is not None and self.crypto.one_time_prekeys_left != self._otk_seen:
            self._otk_seen = self.crypto.one_time_prekeys_left
            self._upkeep_soon()  # a first contact spent a one-time prekey: top up
        if o.journal is not None:
            self._link.publish_soon(
                ARCHIVE_KIND,
                o.journal,
                then=functools.partial(
                    self._published, (ARCHIVE_KIND, env.id, env.sender), o.journal
                ),
            )
