"""The relay operator as an *active* attacker: it forges a first message "from" another
user's device, under an identity it made itself, to get a session whose other end it
holds (issue 12, point 1; docs/threat-model.md).

What it needs is what the operator has: the victim's public prekey bundle (its own
store) and its broker account, which may publish into any device's inbox. It needs no
key of the victim and none of the device it impersonates. A device that takes the new
identity without checking it shows the forged text as the impersonated user's, replaces
its session with that device, and seals its replies in the attacker's session: the
operator reads them, and the real device cannot.

Two parts, as everywhere in the lab:

* ``ActiveRelay`` is sans-I/O: it forges envelopes from a bundle and reads captured
  envelopes with the keys it holds (a ``Reader``: it measures what it reads itself, with
  ``interceptor.measure.measure_envelopes``, like any other observer). ``log_entry`` is
  the forged key-transparency entry for the variant where the operator also writes the
  lie into its own log.
* ``run_active_relay`` drives one attack against a running ``System``: the bundle from
  the relay's store, the forged envelope published with the relay's broker account,
  the victim's reply, and the measurement (what the attacker read, whether the real
  device read the reply, which alarms the devices raised). A device's
  ``check_identities`` switch (on by default) shows both sides of the lesson.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clients.crypto import CryptoError, DeviceCrypto, PublicIdentity, Sealed
from doormat.exposure import ObserverCount
from doormat.system import System
from interceptor.measure import measure_envelopes
from wire import topics
from wire.b64 import b64encode
from wire.envelope import Envelope
from wire.events import now_ms
from wire.ids import user_of
from wire.kt import entry_bytes

NAME = "attacker:active-relay"


class ActiveRelay:
    """The forged identity of ``impersonate`` (a device id), whose private keys the
    attacker holds, and the sessions it starts with victims' devices."""

    def __init__(self, impersonate: str, name: str = NAME) -> None:
        self.name = name
        self.impersonate = impersonate
        self.crypto = DeviceCrypto.create(impersonate, one_time_prekeys=0)
        self.forged: list[tuple[str, str]] = []  # (target device, message id)
        self._seen: dict[tuple[str, str, str], bytes | None] = {}

    @property
    def identity(self) -> PublicIdentity:
        return self.crypto.identity

    def forge(
        self,
        target: str,
        bundle: Mapping[str, Any],
        text: bytes,
        *,
        msg_id: str | None = None,
        ts: int | None = None,
    ) -> bytes:
        """An envelope "from" the impersonated device to ``target``: a prekey message
        under the forged identity (X3DH against ``bundle``, the target's public bundle)
        and ``text`` sealed in that session."""
        if not self.crypto.has_session(target):
            self.crypto.start_session(target, dict(bundle))
        sealed = self.crypto.encrypt(target, text)
        env = Envelope(
            id=msg_id or secrets.token_hex(16),
            sender=self.impersonate,
            recipient=target,
            ts=now_ms() if ts is None else ts,
            header=sealed.header,
            body=sealed.body,
            prekey=sealed.prekey,
        )
        self.forged.append((target, env.id))
        return env.encode()

    def log_entry(self, t: int | None = None) -> bytes:
        """The key-transparency entry binding the impersonated device to the forged
        identity: what an operator that also lies in its own log appends."""
        identity = b64encode(self.identity.encode())
        when = now_ms() if t is None else t
        return entry_bytes(user_of(self.impersonate), self.impersonate, identity, "add", when)

    def try_open(self, env: Envelope) -> bytes | None:
        """A captured envelope sealed to the impersonated device in one of the attacker's
        sessions (a victim's reply). Each envelope is tried once."""
        if env.recipient != self.impersonate or not self.crypto.has_session(env.sender):
            return None
        if env.key not in self._seen:
            sealed = Sealed(header=env.header, body=env.body, prekey=env.prekey)
            try:
                self._seen[env.key] = self.crypto.decrypt(env.sender, sealed)
            except CryptoError:
                self._seen[env.key] = None
        return self._seen[env.key]


# -- the driver ---------------------------------------------------------------------------


def public_bundle(system: System, device: str) -> dict[str, Any]:
    """A device's public bundle as the operator reads it from its own store (identity
    and signed prekey; no one-time prekey, so no legitimate first contact loses one)."""
    with sqlite3.connect(f"file:{system.state_dir / 'relay.sqlite'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT identity, spk_id, spk_key, spk_sig FROM devices WHERE device = ?", (device,)
        ).fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"{device} has published no keys")
    identity, spk_id, key, sig = row
    return {
        "device": device,
        "identity": identity,
        "signed_prekey": {"id": spk_id, "key": key, "sig": sig},
        "one_time_prekey": None,
    }


def write_log_entry(system: System, entry: bytes, device: str) -> None:
    """The operator appends an entry to its own key-transparency log (it holds the
    store and the signing key: nothing stops it; the next answers prove the entry)."""
    with sqlite3.connect(system.state_dir / "relay.sqlite") as db:
        idx = db.execute("SELECT coalesce(max(idx) + 1, 0) FROM kt_log").fetchone()[0]
        db.execute(
            "INSERT INTO kt_log (idx, user, device, op, entry, ghost) VALUES (?, ?, ?, ?, ?, 0)",
            (idx, user_of(device), device, "add", entry),
        )


async def inject(system: System, target: str, payload: bytes) -> None:
    """Publish into ``target``'s inbox on the relay's own broker connection: the operator
    runs the relay, and its account may publish into any inbox. (A second login with the
    relay's account would take the relay's session over: both brokers force the client
    id to the username.) The envelope is not stored: the relay's capture, and so the
    exposure report's count of messages, holds only what users sent."""
    assert system.relay is not None
    transport = system.relay._transport
    if transport is None:
        raise RuntimeError("the relay is not running")
    await transport.publish(topics.inbox(target, topics.MSG), payload)


@dataclass
class AttackResult:
    target: str
    impersonated: str
    checked: bool  # the target device's check_identities switch
    forged_shown: bool  # the target showed the forged text as the impersonated user's
    reply_read_by_attacker: bool
    reply_read_by_peer: bool  # the real impersonated device read the reply
    alarms: list[dict[str, Any]] = field(default_factory=list)  # device.identity_alarm
    observer: ObserverCount | None = None  # the attacker's exposure row (its counts)
    #: the attacker itself (its forged identity's keys and sessions): the dashboard keeps
    #: it to measure its row again over what the relay captures later. Not in the JSON.
    attacker: ActiveRelay | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "impersonated": self.impersonated,
            "identity_check": self.checked,
            "forged_shown": self.forged_shown,
            "reply_read_by_attacker": self.reply_read_by_attacker,
            "reply_read_by_peer": self.reply_read_by_peer,
            "alarms": self.alarms,
            "observer": None if self.observer is None else self.observer.to_json(),
        }


async def run_active_relay(
    system: System,
    target: str = "alice@acme.phone",
    impersonate: str = "bob@acme.phone",
    *,
    forged_text: str = "It's bob, new phone. Send me the figures?",
    reply_text: str = "Here are the figures: 4.2M",
    log_forgery: bool = False,
    timeout: float = 10.0,
) -> AttackResult:
    """One attack: forge, inject, let the target's user reply, measure."""
    attacker = ActiveRelay(impersonate)
    raw = attacker.forge(target, public_bundle(system, target), forged_text.encode())
    forged_id = attacker.forged[-1][1]
    if log_forgery:
        write_log_entry(system, attacker.log_entry(), impersonate)
    device = system.devices[target]
    await inject(system, target, raw)

    def handled() -> list[dict[str, Any]]:
        return [
            e
            for e in system.events.events(actor=target)
            if e.get("id") == forged_id
            and e["kind"] in ("device.received", "device.unreadable", "device.identity_alarm")
        ]

    async with asyncio.timeout(timeout):
        while not handled():
            await asyncio.sleep(0.02)
    shown = any(e["kind"] == "device.received" for e in handled())
    alarms = [
        dict(e)
        for e in system.events.events(kind="device.identity_alarm", actor=target)
        if e.get("id") == forged_id
    ]
    reply = await system.send(target, user_of(impersonate), reply_text)

    def peer_outcome() -> list[dict[str, Any]]:
        return [
            e
            for e in system.events.events(actor=impersonate)
            if e.get("id") == reply.sent.id
            and e["kind"] in ("device.received", "device.unreadable")
        ]

    if impersonate in reply.sent.devices:
        async with asyncio.timeout(timeout):
            while not peer_outcome():
                await asyncio.sleep(0.02)
    assert system.relay is not None
    # The active relay measures itself, with the keys it holds (those it forged).
    measured = measure_envelopes(attacker.name, list(system.relay.captured()),
                                 readers=[attacker])
    row = measured.row
    observer = ObserverCount(row.observer, len(row.captured), len(row.readable),
                             row.metadata_records, list(row.keys_held))
    return AttackResult(
        target=target,
        impersonated=impersonate,
        checked=device.check_identities,
        forged_shown=shown,
        reply_read_by_attacker=(target, reply.sent.id) in measured.opened,
        reply_read_by_peer=any(e["kind"] == "device.received" for e in peer_outcome()),
        alarms=alarms,
        observer=observer,
        attacker=attacker,
    )
