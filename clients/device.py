"""A device: the async agent around the E2EE core.

It publishes its prekeys to the relay's directory, opens sessions from prekey
bundles, seals every message separately for each device of the recipient and for its
own user's other devices (Sesame-lite fan-out), opens what arrives, and acknowledges
only after the result is durably stored. The crypto is ``clients.crypto`` (sans-I/O);
this module only moves bytes and records events.

Events (actor = the device id): ``device.sent`` (id, to_user, devices, text),
``device.received`` (id, from, from_user, text), ``device.unreadable`` (id, from,
reason), ``device.rejected`` (reason), ``device.bad_bundle`` (device, reason),
``device.kt_refused`` (device, reason: listed without a valid proof, so not used),
``device.undelivered`` (reason, op; id and to when the relay named the envelope;
refused and retry for a rate-limit refusal), ``device.resent`` (kinds, count),
``device.kt_alarm`` (user, device, time, reason, alarm_kind: a device the user's
enterprise never enrolled, a key that is not ours, or a split view);
``device.identity_held``, ``device.identity_accepted``, ``device.identity_alarm``,
``device.safety_verified`` (clients/senders.py), ``device.prekeys`` (clients/upkeep.py),
and the link's ``service.set_aside`` for an envelope it cannot process
(docs/protocol.md, "Set aside").
A device's events carry its own plaintext: that is what its user sees on screen.
``send`` refuses a text longer than a user can send (``clients.limits.TextTooLong``).

Checking who writes (issue 12). A message carrying a prekey message that would start a
session with an identity this device does not hold for its sender is not opened in the
link's handler: the handler may not ask the directory (infra/link.py), so the envelope
is *held* durably and acknowledged, and a task checks the identity against the
directory's log and against a safety number the user verified, then opens it or
refuses it (clients/senders.py, the rules in clients/identities.py).
``check_identities = False`` turns the check off (the lab shows what it prevents).

Refusals. The relay answers an envelope it will not take on our ``dir`` inbox with
``{"req": null, "ok": false, "op": "msg", "id", "to", "error"}``. A refusal that names
the envelope (unknown recipient, ...) is final: the envelope leaves the outbox, the
history entry records it as undelivered to that device, and ``device.undelivered``
says so. A rate-limit refusal names nothing (the relay refuses before parsing, and
reports at most once a second per device and kind, with a count): the device then
holds new envelopes back, waits longer than that second, and re-sends every envelope
it published in the last ``RESEND_WINDOW`` seconds, paced under the relay's stated
rate; the relay de-duplicates those it had taken. That is why published envelopes stay
in the outbox for that window (a crash meanwhile only re-sends them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.archive import ARCHIVE_KIND, Record, journal_record
from clients.backdoors import extensions
from clients.crypto import CryptoError, DeviceCrypto
from clients.enterprise import Credentials
from clients.identities import Decision, first_look
from clients.kt import DirectoryView
from clients.limits import check_text
from clients.receiving import Receiving
from clients.senders import SenderChecks
from clients.store import DeviceStore, HistoryEntry
from clients.upkeep import DAY, PrekeyUpkeep
from infra.link import RATE_LIMIT_PAUSE, Link, LinkError
from infra.plane import Plane
from infra.setaside import store_path as set_aside_path
from wire.envelope import Envelope
from wire.events import EventLog, now_ms
from wire.kt import Alarm, InconsistentCheckpoint, StaleCheckpoint
from wire.li.builds import ClientBuild

log = logging.getLogger(__name__)

ONE_TIME_PREKEYS = 20  # published at first start; refilled when the relay holds under half

# How long a published envelope stays re-sendable after a rate-limit refusal: the
# refusal comes back after the relay has worked through its input, and names nothing.
RESEND_WINDOW = 5.0
_RATE_LIMIT = re.compile(r"^rate limit: over ([0-9.e+]+) per second.*?(?:; (\d+) refused)?$")

OutboxKey = tuple[str, str, str]  # (topic kind, message id, recipient)


@dataclass(frozen=True)
class Sent:
    id: str
    devices: list[str]  # every device an envelope was sealed for


class Device(Receiving, SenderChecks, PrekeyUpkeep):
    def __init__(
        self,
        creds: Credentials,
        host: str,
        port: int,
        store_path: str | Path,
        events: EventLog,
        *,
        one_time_prekeys: int = ONE_TIME_PREKEYS,
        device_list_ttl: float = 2.0,
        build: ClientBuild | None = None,
        archive_key: bytes | None = None,
        directory_vkey: str | None = None,
        enrolled: Callable[[], set[str]] | None = None,
        plane: Plane | None = None,
        check_identities: bool = True,
        prekey_interval: float = 600.0,
        signed_prekey_rotation: float = 7 * DAY,
        signed_prekey_grace: float = 14 * DAY,
    ) -> None:
        self.id = creds.device
        # Check a sender's new or changed identity key before opening its message (see
        # the module docstring). The lab turns it off to show what it prevents.
        self.check_identities = check_identities
        # Our enterprise's disclosed archive key: every message we send or read is
        # journalled to it (clients/archive.py). None if the enterprise runs no archive.
        self.archive_key = archive_key
        self.user = creds.user
        self._events = events
        self._n_otk = one_time_prekeys
        self._store = DeviceStore(store_path)
        if build is None:
            # The build it runs: the one it installed last (a restart keeps it), or the
            # standard one.
            stored = self._store.get_meta("client_build")
            build = ClientBuild.from_json(json.loads(stored)) if stored else ClientBuild()
        self.set_build(build)
        state = self._store.load_crypto()
        if state is None:
            self.crypto = DeviceCrypto.create(
                self.id, one_time_prekeys=one_time_prekeys, now_ms=now_ms()
            )
            self._store.save_crypto(self.crypto.to_bytes())
        else:
            self.crypto = DeviceCrypto.from_bytes(state)
        # Key transparency (clients/kt.py): every directory answer is checked against the
        # relay's signed, append-only log; our own user's entries are audited against the
        # devices our enterprise says it enrolled. Without a pinned key: off.
        self.kt: DirectoryView | None = None
        if directory_vkey is not None:
            saved = self._store.get_meta("kt")
            self.kt = (
                DirectoryView.from_json(saved)
                if saved
                else DirectoryView(directory_vkey, owner=self.id)
            )
        self._enrolled = enrolled
        self._link = Link(
            self.id,
            creds.password,
            host,
            port,
            on_envelopes=self._on_envelopes,
            on_connect=self._on_connect,
            on_refusal=self._on_refusal,
            on_set_aside=self._on_set_aside,
            events=events,
            set_aside=set_aside_path(store_path),
            plane=plane,
        )
        self._ready = asyncio.Event()
        self._batch_committed = False  # the incoming batch in hand is stored (see below)
        self._device_lists: dict[str, tuple[float, list[str]]] = {}
        self._device_list_ttl = device_list_ttl
        # Prekeys over time (clients/upkeep.py): seconds between checks at the relay, and
        # the signed prekey's rotation period and the grace period of a replaced one.
        self.prekey_interval = prekey_interval
        self.signed_prekey_rotation = signed_prekey_rotation
        self.signed_prekey_grace = signed_prekey_grace
        self._upkeep: asyncio.Task[None] | None = None
        self._upkeep_again = False
        self._upkeep_timer: asyncio.Task[None] | None = None
        self._otk_seen = self.crypto.one_time_prekeys_left
        # Published envelopes and journal records, oldest first, re-sendable until they
        # are RESEND_WINDOW old (then they leave the outbox).
        self._recent: OrderedDict[OutboxKey, tuple[bytes, float]] = OrderedDict()
        self._open_gate = asyncio.Event()  # cleared while re-sending after a rate limit
        self._open_gate.set()
        self._resender: asyncio.Task[None] | None = None
        self._resend_kinds: set[str] = set()
        self._resend_rate = 0.0
        self._checker: asyncio.Task[None] | None = None  # checks held envelopes
        self._check_again = False

    @property
    def events(self) -> EventLog:
        """The device's event log."""
        return self._events

    @property
    def connected(self) -> bool:
        """Whether the device is connected to the broker right now."""
        return self._link.connected

    def set_build(self, build: ClientBuild, version: int | None = None) -> None:
        """Install a client build (an update pushed to the device; on the plane, only one
        the vendor signed: clients/device_plane.py). The build is part of the device
        image: a mandated build's baked-in keys are on its disk like the app."""
        self.build = build
        self._store.set_meta("client_build", json.dumps(build.to_json()))
        if version is not None:
            self._store.set_meta("client_build_version", str(version))

    @property
    def build_version(self) -> int:
        """The version of the installed build (0: the one it was made with)."""
        return int(self._store.get_meta("client_build_version") or 0)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await self._link.start()
        async with asyncio.timeout(20):
            await self._ready.wait()

    async def stop(self) -> None:
        if self._resender is not None:
            self._resender.cancel()
        if self._checker is not None:
            self._checker.cancel()
        await self._stop_upkeep()
        await self._link.stop()
        self._store.close()

    async def __aenter__(self) -> Device:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_connect(self) -> None:
        """After every (re)connection: make sure our keys are published, ask the relay to
        re-send what it holds for us, and re-send our own unconfirmed envelopes."""
        try:
            if self._store.get_meta("published") is None:
                await self._link.request("publish", **self.crypto.publish_material())
                self._store.set_meta("published", str(now_ms()))
            await self._link.request("sync")
            await self.monitor()
            for kind, msg_id, recipient, payload in self._store.outbox():
                await self._open_gate.wait()
                await self._link.publish(kind, payload)
                self._published((kind, msg_id, recipient), payload)
        except Exception as exc:  # logged, retried on the next connection
            log.warning("%s: start-up exchange with the relay failed: %s", self.id, exc)
            return
        self._ready.set()
        self._check_held_soon()  # what was held when we stopped or crashed
        self._upkeep_soon(expire=False)  # refill and rotate; delete only on the timer
        self._start_upkeep_timer()

    # -- sending -------------------------------------------------------------------

    async def _devices_of(self, user: str) -> list[str]:
        cached = self._device_lists.get(user)
        if cached is not None and time.monotonic() - cached[0] < self._device_list_ttl:
            return cached[1]
        _, listed = await self._directory("devices", "devices", user=user)
        devices = [str(d) for d in listed]
        self._device_lists[user] = (time.monotonic(), devices)
        return devices

    def forget_device_lists(self) -> None:
        """Ask the directory afresh next time (after it is known to have changed)."""
        self._device_lists.clear()

    async def _directory(
        self, op: str, listed: str, **fields: Any
    ) -> tuple[dict[str, Any], list[Any]]:
        """A ``devices`` or ``bundles`` request and the listed items the directory log
        proves (all of them without key transparency). With it, the request asks from our
        checkpoint on, once more if the relay answered from an older one; a listed device
        without a valid proof is not used, and an event says so."""
        answer, items, _ = await self._lookup(op, listed, **fields)
        return answer, items

    async def _lookup(
        self, op: str, listed: str, **fields: Any
    ) -> tuple[dict[str, Any], list[Any], dict[str, str]]:
        """``_directory``, and the identity the log proves for each device it proves."""
        for attempt in (1, 2):
            if self.kt is not None and self.kt.since is not None:
                fields["since"] = self.kt.since
            answer = await self._link.request(op, **fields)
            items = answer.get(listed)
            want = str if listed == "devices" else dict
            if not isinstance(items, list) or not all(isinstance(i, want) for i in items):
                # The relay's answer, not the user's text: a clear error for the caller.
                raise LinkError(f"{self.id}: malformed {op!r} answer from the relay")
            if self.kt is None:
                return answer, items, {}
            try:
                result = self.kt.verify_lookup(answer.get("kt"), items)
            except StaleCheckpoint:
                if attempt == 1:
                    continue
                raise
            except InconsistentCheckpoint as exc:
                if exc.alarm is not None:
                    self._alarm(exc.alarm)
                raise
            self._save_kt()
            for refused in result.refused:
                self._events.emit(
                    self.id, "device.kt_refused", device=refused.device, reason=refused.reason
                )
            proven = set(result.devices)
            return (
                answer,
                [i for i in items if (i if isinstance(i, str) else i.get("device")) in proven],
                dict(result.verified),
            )
        raise AssertionError("unreachable")

    def _save_kt(self) -> None:
        if self.kt is not None and self.kt.changed:
            self._store.set_meta("kt", self.kt.to_json())
            self.kt.changed = False

    def _alarm(self, alarm: Alarm) -> None:
        emit_alarm(self._events, self.id, alarm)

    async def monitor(self) -> list[Alarm]:
        """Audit our own user's entries in the directory log (key transparency)."""
        if self.kt is None:
            return []
        fields: dict[str, Any] = {"user": self.user}
        if self.kt.since is not None:
            fields["since"] = self.kt.since
        answer = await self._link.request("monitor", **fields)
        enrolled = self._enrolled() if self._enrolled is not None else {self.id}
        alarms = self.kt.monitor(
            answer,
            enrolled,
            known_identities={self.id: self.crypto.publish_material()["identity"]},
        )
        self._save_kt()
        for alarm in alarms:
            self._alarm(alarm)
        return alarms

    async def _open_sessions(self, user: str, devices: list[str]) -> None:
        missing = [d for d in devices if not self.crypto.has_session(d)]
        if not missing:
            return
        _, bundles = await self._directory("bundles", "bundles", user=user, devices=missing)
        for bundle in bundles:
            dev = str(bundle.get("device"))
            if dev not in missing or self.crypto.has_session(dev):
                continue
            # The bundle's identity is the one the log proves (or there is no log); it
            # must also be the one we hold for the device, if its safety number was
            # verified. No session is replaced here: only missing ones are started.
            presented = str(bundle.get("identity"))
            decision = Decision("accept", how="same")
            if self.check_identities:
                decision = first_look(self._known(dev), presented, kt=False)
                if decision.verdict == "refuse":
                    self._identity_alarm(dev, decision, presented, op="bundles")
                    continue
            try:
                self.crypto.start_session(dev, bundle)
            except CryptoError as exc:
                # A bundle whose signature does not verify is not used: no session, no
                # envelope for that device, and an event saying why.
                self._events.emit(self.id, "device.bad_bundle", device=dev, reason=str(exc))
                continue
            if self.check_identities and decision.how != "same":
                accepted = Decision("accept", changed=decision.changed, how="directory")
                self._accepted(dev, presented, accepted)

    async def send(self, to_user: str, text: str | bytes, *, lab: bool = False) -> Sent:
        """Seal ``text`` for every device of ``to_user`` and our own other devices.
        ``lab``: the lab made the device send it (its ``device.sent`` says so).

        TextTooLong (before anything is sealed, stored or sent) if ``text`` is longer
        than a user can send with this build (``clients.limits``)."""
        data = text.encode() if isinstance(text, str) else text
        check_text(data, self.build)
        theirs = await self._devices_of(to_user)
        ours = [d for d in await self._devices_of(self.user) if d != self.id]
        if self._enrolled is not None and set(ours) - self._enrolled():
            # Our own user has a device our enterprise never enrolled: audit the log
            # now (the alarm comes with the log's proof), and send anyway - as any
            # client would, which is the ghost's whole trick.
            await self.monitor()
        await self._open_sessions(to_user, theirs)
        if ours and to_user != self.user:
            await self._open_sessions(self.user, ours)
        # From here to the commit nothing awaits, so no incoming message can interleave
        # with the ratchet steps and the state we store.
        msg_id = secrets.token_hex(16)
        ts = now_ms()
        envelopes: list[tuple[str, bytes]] = []
        for dev in dict.fromkeys(theirs + ours):
            if dev == self.id or not self.crypto.has_session(dev):
                continue
            sealed = self.crypto.encrypt(dev, data)
            env = Envelope(
                id=msg_id,
                sender=self.id,
                recipient=dev,
                ts=ts,
                header=sealed.header,
                body=sealed.body,
                prekey=sealed.prekey,
                ext=extensions(self.build, msg_id, self.id, dev, data, sealed),
            )
            envelopes.append((dev, env.encode()))
        journal = self._journal("out", msg_id, self.id, to_user, ts, data)
        self._store.commit_outgoing(
            self.crypto.to_bytes(), msg_id, to_user, self.id, ts, data, envelopes, journal
        )
        devices = [d for d, _ in envelopes]
        self._events.emit(
            self.id,
            "device.sent",
            id=msg_id,
            to_user=to_user,
            devices=devices,
            text=data.decode(errors="replace"),
            **({"lab": True} if lab else {}),
        )
        for dev, env_bytes in envelopes:
            await self._open_gate.wait()
            await self._link.publish("msg", env_bytes)
            self._published(("msg", msg_id, dev), env_bytes)
        if journal is not None:
            await self._link.publish(ARCHIVE_KIND, journal)
            self._published((ARCHIVE_KIND, msg_id, self.id), journal)
        return Sent(id=msg_id, devices=devices)

    def _published(self, key: OutboxKey, payload: bytes) -> None:
        """Keep a published envelope re-sendable for RESEND_WINDOW, then let it go."""
        now = time.monotonic()
        self._recent[key] = (payload, now)
        self._recent.move_to_end(key)
        # Not while re-sending: what is still to be re-sent must stay (and only a final
        # refusal takes something out meanwhile).
        while self._recent and self._resender is None:
            oldest, (_, at) = next(iter(self._recent.items()))
            if now - at < RESEND_WINDOW:
                break
            del self._recent[oldest]
            self._store.sent(*oldest)

    # -- refusals ------------------------------------------------------------------------

    def _on_refusal(self, answer: dict[str, Any]) -> None:
        """The relay would not take something we published (see the module docstring)."""
        reason = str(answer.get("error") or "refused")
        op = answer.get("op")
        if op == "ack":
            # Our ack was malformed: a bug here, not something the user sent.
            log.warning("%s: the relay refused an ack: %s", self.id, reason)
            return
        limited = _RATE_LIMIT.match(reason)
        if limited is not None:
            # No op: a journal record, or a directory request (the link asks again).
            kind = "msg" if op == "msg" else ARCHIVE_KIND
            self._events.emit(
                self.id,
                "device.undelivered",
                reason=reason,
                op=op,
                refused=int(limited[2]) if limited[2] else None,
                retry=True,
            )
            self._resend_after_rate_limit(kind, float(limited[1]))
            return
        msg_id, to = answer.get("id"), answer.get("to")
        if op == "msg" and isinstance(msg_id, str) and isinstance(to, str):
            self._recent.pop(("msg", msg_id, to), None)
            self._store.undelivered(msg_id, to, reason)
            self._events.emit(
                self.id, "device.undelivered", reason=reason, op=op, id=msg_id, to=to, retry=False
            )
            return
        self._events.emit(self.id, "device.undelivered", reason=reason, op=op, retry=False)

    def _resend_after_rate_limit(self, kind: str, rate: float) -> None:
        self._resend_kinds.add(kind)
        self._resend_rate = rate
        if self._resender is None:
            self._resender = asyncio.get_running_loop().create_task(self._resend())

    async def _resend(self) -> None:
        self._open_gate.clear()
        try:
            while self._resend_kinds:
                await asyncio.sleep(RATE_LIMIT_PAUSE)
                kinds, self._resend_kinds = self._resend_kinds, set()
                # Half the stated rate: the copies count against it like new input, and
                # the bucket must not run dry again while we re-send.
                interval = 1.0 / max(1.0, self._resend_rate / 2)
                due = time.monotonic()
                todo = [(k, p) for k, (p, _) in self._recent.items() if k[0] in kinds]
                for key, payload in todo:
                    if key not in self._recent:
                        continue  # refused for good meanwhile
                    await self._link.publish(key[0], payload)
                    if key in self._recent:
                        self._published(key, payload)
                    due += interval
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                self._events.emit(self.id, "device.resent", kinds=sorted(kinds), count=len(todo))
        except Exception as exc:  # the envelopes stay in the outbox for the next start
            log.warning("%s: re-sending after a rate limit failed: %s", self.id, exc)
        finally:
            self._resender = None
            self._open_gate.set()

    def _journal(
        self, direction: str, msg_id: str, sender: str, to_user: str | None, ts: int, text: bytes
    ) -> bytes | None:
        """The sealed journal record for our enterprise's disclosed archive, if it runs one."""
        if self.archive_key is None:
            return None
        record = Record(
            self.id, direction, msg_id, sender, to_user, ts, text.decode(errors="replace")
        )
        # The text's own bytes: the record's size is the text's plus a bounded header
        # (clients/archive.py), so what check_text let through always fits. A longer
        # text (a sender that skipped the check) raises RecordTooLarge.
        return journal_record(self.archive_key, record, text)

    # -- what the user sees ------------------------------------------------------------

    def history(self) -> list[HistoryEntry]:
        return self._store.history()

    def image(self) -> bytes:
        """A copy of the device's whole store (what a breach of the phone yields)."""
        return self._store.image()


def emit_alarm(events: EventLog, actor: str, alarm: Alarm) -> None:
    """A key-transparency alarm as an event (the alarm's own ``kind`` - unenrolled-device,
    key-mismatch, split-view - travels as ``alarm_kind``)."""
    fields = alarm.to_json()
    fields["alarm_kind"] = fields.pop("kind")
    events.emit(actor, "device.kt_alarm", **fields)
