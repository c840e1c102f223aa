"""The relay's decisions, sans I/O.

``Relay.handle(topic, payload)`` takes one MQTT message the broker delivered on
``doormat/out/<owner>/<kind>`` and returns what to do, as plain data: ``Publish`` (send
this payload on this topic, QoS 1), ``Ack`` (the broker-level PUBACK for the input may
now be sent: whatever had to be stored is committed) and ``Event`` (a structured event;
it has already been emitted to the EventLog when it appears in the list, it is returned
too so that a caller or a test can see the decisions in order).

The relay never holds a key and never parses ciphertext: it reads the envelope's
routing fields, counts the bytes, and stores and forwards the opaque rest.

Bad input never raises: it becomes a ``relay.rejected`` event with a reason, an error
reply to the sender where there is somewhere to send one, and an ``Ack`` (a refused
message is finished with; not acknowledging it would make the broker redeliver it
forever); so is an unexpected exception (a bug: logged with its traceback, reason
``internal error: <type>``), because redelivering it would fail the same way and block
everything behind it. ``handle`` raises only if the store itself fails
(``sqlite3.OperationalError`` and kin: the disk, not the input); then nothing was
acknowledged and the caller must drop the connection so the broker redelivers.

Key transparency (docs/key-transparency.md): the directory is also an append-only Merkle
log (``relay.kt``). ``devices``, ``bundles`` and ``monitor`` answers carry a ``kt`` object
(signed checkpoint, each listed device's entry with an inclusion proof, and a
consistency proof from the requester's ``since``). The relay signs checkpoints with a
signing key of its own; it still holds no key that decrypts anything.

The ``ghost`` back door (off by default, ``set_ghost``): the tap account may enrol and
publish a government device ``<user>.gov`` for any user; while ghost mode is on, device
lists and bundles include it (with its log entry and proof, as for any device) and
envelopes addressed to it are handed to the tap (``doormat/in/tap/ghost``) and marked
delivered at once. ``set_split_view`` makes the directory show some users a log without
the ghost entries: a fork that devices detect by comparing checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.intake import TokenBuckets
from relay.kt import (
    GHOST_KIND,
    GHOST_NAME,
    KT_ORIGIN,
    TAP_ID,
    DirectoryLog,
    DirectoryLogError,
    LogRow,
    ghost_device,
)
from relay.store import (
    DirectoryError,
    OneTimePrekey,
    SignedPrekey,
    Store,
)
from wire import topics
from wire.envelope import MAX_ENVELOPE_BYTES, Envelope, EnvelopeError
from wire.envelope import parse as parse_envelope
from wire.events import EventLog, now_ms
from wire.ids import (
    ENTERPRISE_RE,
    RELAY_ID,
    USER_RE,
    enterprise_of,
    is_device,
    user_of,
)
from wire.note import Signer

ACTOR = RELAY_ID
log = logging.getLogger(__name__)


# -- actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Ack:
    """The broker-level acknowledgement of the input message may be sent now."""


@dataclass(frozen=True)
class Event:
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


Action = Publish | Ack | Event


# -- limits -----------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Input bounds, and per-device rate limits (docs/relay.md, "Load and overload")."""

    max_envelope_bytes: int = MAX_ENVELOPE_BYTES
    max_ack_bytes: int = 1024
    max_dir_bytes: int = 128 * 1024
    max_key_chars: int = 1024  # one base64 key, identity or signature
    max_otpks_per_publish: int = 200
    max_otpks_held: int = 1000
    max_devices_per_request: int = 64  # the optional 'devices' of a bundles request
    max_monitor_entries: int = 512  # log entries about one user in a monitor answer
    excerpt_bytes: int = 16  # of ciphertext shown in relay.accepted
    # Per-device token buckets, one per topic owner that is a device and per kind
    # (msg, dir, archive; acks are not limited: they answer what the relay sent).
    # Over the limit an input is refused before it is parsed or stored, and the
    # refusals are summarised: one relay.rejected event and one error reply per device,
    # kind and second. 0 disables the limit.
    device_rate: float = 500.0  # inputs per second, sustained
    device_burst: int = 2500  # saved up while idle


class Observer(Protocol):
    """A seam for what may later watch accepted envelopes (the LI switch's mirror to a
    tap, X1 tasks): called after an envelope is committed, it returns extra actions
    (e.g. a Publish to a tap topic). Observers see exactly what the relay sees: the
    raw envelope and its metadata, never plaintext."""

    def on_accepted(self, envelope: Envelope, raw: bytes, seq: int) -> Sequence[Action]: ...


class Rejected(Exception):
    """Internal: a refusal with its reason and, if any, the reply to send."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


# -- the relay --------------------------------------------------------------------


class Relay:
    def __init__(
        self,
        store: Store,
        events: EventLog,
        *,
        limits: Limits | None = None,
        observers: Sequence[Observer] = (),
        clock: Callable[[], int] = now_ms,
        kt_signer: Signer | None = None,
        ghost: bool = False,
    ) -> None:
        self.store = store
        self.events = events
        self.limits = limits or Limits()
        self.observers = list(observers)
        # Handler of X1 task administration (relay/li.py), if the relay offers LI tasks.
        self.x1: Callable[[str, bytes], Sequence[Action]] | None = None
        self.clock = clock
        self._buckets = TokenBuckets(self.limits.device_rate, self.limits.device_burst)
        self._limited: dict[tuple[str, str], tuple[int, int]] = {}  # -> (refused, reported)
        self._is_device: dict[str, bool] = {}  # topic owner -> is a device id (memo)
        # Key transparency. Without a signer (unit tests) an ephemeral key signs: clients
        # that pinned another key refuse its checkpoints, as they should.
        self.kt = DirectoryLog(kt_signer or Signer.generate(KT_ORIGIN))
        self.store.kt_backfill()  # devices published before the log existed
        self._kt_sync()
        self.ghost = ghost
        self._hidden_from: frozenset[str] = frozenset()

    # -- key transparency and the ghost switch ----------------------------------------

    @property
    def directory_vkey(self) -> str:
        """The verifier key of the directory's checkpoints: what clients pin."""
        return self.kt.vkey

    def set_ghost(self, on: bool) -> list[Action]:
        """The ghost back door: while on, the tap may enrol and publish ``<user>.gov``
        devices, which are listed to every device and whose envelopes go to the tap."""
        out: list[Action] = []
        self.ghost = bool(on)
        self._event(out, "relay.ghost", on=self.ghost)
        return out

    def set_split_view(self, hidden_from: Collection[str] | None) -> list[Action]:
        """Show the devices of these users the *hidden* view of the log (ghost entries
        replaced, ghost devices never listed); everyone else sees the full log. None or
        empty: one honest view for all."""
        out: list[Action] = []
        self._hidden_from = frozenset(hidden_from or ())
        self._event(out, "relay.split_view", hidden_from=sorted(self._hidden_from))
        return out

    def _kt_sync(self) -> None:
        """Bring the in-memory tree up to the stored log (rows another worker or a
        publish of ours appended)."""
        self.kt.extend(self.store.kt_rows(self.kt.size))

    def _hidden(self, requester: str) -> bool:
        return bool(self._hidden_from) and user_of(requester) in self._hidden_from

    def _kt_answer(
        self, requester: str, rows: Sequence[LogRow], since: int | None
    ) -> dict[str, Any]:
        self._kt_sync()
        try:
            return self.kt.answer(rows, since=since, hidden=self._hidden(requester))
        except DirectoryLogError as exc:
            raise Rejected(str(exc)) from None

    # -- entry points -------------------------------------------------------------

    def startup(self, reason: str = "startup") -> list[Action]:
        """Republish every pending envelope, in arrival order (on start and on every
        reconnect: publishes in flight when the connection dropped may be lost)."""
        out: list[Action] = []
        pending = self.store.pending()
        self._event(out, "relay.started", pending=len(pending), reason=reason)
        for p in pending:
            out.append(Publish(topics.inbox(p.recipient, topics.MSG), p.raw))
            self._event(
                out,
                "relay.delivered",
                id=p.msg_id,
                to=p.recipient,
                seq=p.seq,
                reason=reason,
                **{"from": p.sender},
            )
        return out

    def maintenance(self) -> list[Action]:
        """Periodic work: apply the store's retention bounds."""
        out: list[Action] = []
        deleted = self.store.prune(self.clock())
        if deleted:
            self._event(out, "relay.pruned", rows=deleted)
        return out

    def handle(self, topic: str, payload: bytes) -> list[Action]:
        out: list[Action] = []
        parsed = topics.parse_outbound(topic)
        owner = parsed[0] if parsed else None
        kind = parsed[1] if parsed else None
        try:
            if parsed is None:
                raise Rejected("not an outbound topic", topic=topic[:200])
            assert owner is not None and kind is not None
            if owner == RELAY_ID:
                # Only the relay itself may write there; it never does.
                raise Rejected("the relay's own topic")
            if kind != topics.ACK and not self._within_rate(owner, kind):
                self._rate_limited(out, owner, kind, payload)
            elif kind == topics.MSG:
                self._msg(out, owner, payload)
            elif kind == topics.ACK:
                self._ack(out, owner, payload)
            elif kind == topics.ARCHIVE:
                self._journal(out, owner, payload)
            elif kind == topics.X1:
                if self.x1 is None:
                    raise Rejected("lawful-intercept tasks are not accepted here")
                out.extend(self.x1(owner, payload))
            else:
                self._dir(out, owner, payload)
        except Rejected as refusal:
            self._reject(out, owner, kind, payload, refusal)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            # Our bug, not the disk's: retrying would fail the same way, forever.
            log.exception("relay: internal error on %s", topic)
            self._reject(
                out, owner, kind, payload, Rejected(f"internal error: {type(exc).__name__}")
            )
        except sqlite3.Error:
            raise  # the store failed: nothing acknowledged, the caller reconnects
        except Exception as exc:  # a bug on some input: log it, do not crash or loop
            log.exception("relay: internal error on %s", topic)
            self._reject(
                out, owner, kind, payload, Rejected(f"internal error: {type(exc).__name__}")
            )
        out.append(Ack())
        return out

    # -- rate limits ---------------------------------------------------------------

    def _within_rate(self, owner: str, kind: str) -> bool:
        device = self._is_device.get(owner)
        if device is None:
            device = self._is_device[owner] = is_device(owner)
            if len(self._is_device) > 100_000:
                self._is_device.clear()
        if not device:
            return True  # enterprise servers, the tap, the interceptor: not limited
        return self._buckets.allow((owner, kind), self.clock())

    def _rate_limited(self, out: list[Action], owner: str, kind: str, payload: bytes) -> None:
        """Refuse without looking inside; report at most once per second per device and
        kind (a flood of refusals must not cost a reply and an event each)."""
        now = self.clock()
        refused, reported = self._limited.get((owner, kind), (0, -1000))
        refused += 1
        if now - reported < 1000:
            self._limited[(owner, kind)] = (refused, reported)
            return
        self._limited[(owner, kind)] = (0, now)
        reason = (
            f"rate limit: over {self.limits.device_rate:g} per second "
            f"(burst {self.limits.device_burst}); {refused} refused"
        )
        self._reject(out, owner, kind, payload, Rejected(reason, refused=refused))

    # -- archive journal ----------------------------------------------------------

    def _journal(self, out: list[Action], owner: str, payload: bytes) -> None:
        """Forward a device's sealed journal record to its own enterprise (the only party
        that can open it). The relay learns that a record of some size went there."""
        if not is_device(owner) or not self.store.is_enrolled(owner):
            raise Rejected("journal records come from enrolled devices")
        if len(payload) > self.limits.max_envelope_bytes:
            raise Rejected(f"journal record too large: {len(payload)} bytes")
        enterprise = enterprise_of(owner)
        wrapped = json.dumps(
            {"device": owner, "record": base64.b64encode(payload).decode("ascii")}
        ).encode()
        out.append(Publish(topics.inbox(enterprise, topics.ARCHIVE), wrapped))
        self._event(
            out, "relay.journal", enterprise=enterprise, size=len(payload), **{"from": owner}
        )

    # -- msg ------------------------------------------------------------------------

    def _msg(self, out: list[Action], owner: str, payload: bytes) -> None:
        if not is_device(owner):
            raise Rejected("topic owner is not a device")
        if len(payload) > self.limits.max_envelope_bytes:
            raise Rejected(
                f"envelope too large: {len(payload)} bytes, limit {self.limits.max_envelope_bytes}"
            )
        try:
            env = parse_envelope(payload, max_bytes=self.limits.max_envelope_bytes)
        except EnvelopeError as exc:
            raise Rejected(f"malformed envelope: {exc}", op="msg") from None
        ids = {"id": env.id, "from": env.sender, "to": env.recipient}
        if env.sender != owner:
            raise Rejected("sender mismatch", op="msg", **ids)
        if not self.store.is_enrolled(owner):
            raise Rejected("sender not enrolled", op="msg", **ids)
        enrolled_by = self.store.enrolled_by(env.recipient)
        to_ghost = enrolled_by == TAP_ID
        if enrolled_by is None or (to_ghost and not self.ghost):
            raise Rejected("unknown recipient", op="msg", **ids)
        now = self.clock()
        if to_ghost:
            # An envelope for a ghost device goes to the tap and is done with at once:
            # nobody will ever acknowledge it, so it is stored as delivered (one
            # transaction).
            seq = self.store.accept(env.sender, env.id, env.recipient, payload, now, delivered=True)
        else:
            seq = self.store.accept(env.sender, env.id, env.recipient, payload, now)
        if seq is None:
            # Already accepted (maybe already delivered and acked): store nothing,
            # forward nothing, but let the broker forget it.
            self._event(out, "relay.duplicate", size=len(payload), **ids)
            return
        self._event(
            out,
            "relay.accepted",
            seq=seq,
            ts=env.ts,
            size=len(payload),
            bucket=len(env.body),
            header_size=len(env.header),
            prekey=env.prekey is not None,
            ext=sorted(env.ext),
            excerpt=env.body[: self.limits.excerpt_bytes].hex(),
            **ids,
        )
        if to_ghost:
            out.append(Publish(topics.inbox(TAP_ID, GHOST_KIND), payload))
            self._event(out, "relay.delivered", seq=seq, reason="ghost", **ids)
        else:
            out.append(Publish(topics.inbox(env.recipient, topics.MSG), payload))
            self._event(out, "relay.delivered", seq=seq, reason="route", **ids)
        for observer in self.observers:
            out.extend(observer.on_accepted(env, payload, seq))

    # -- ack ------------------------------------------------------------------------

    def _ack(self, out: list[Action], owner: str, payload: bytes) -> None:
        if not is_device(owner):
            raise Rejected("topic owner is not a device")
        obj = self._json(payload, self.limits.max_ack_bytes, "ack")
        if set(obj) != {"from", "id"}:
            raise Rejected("malformed ack: expected exactly the fields 'from' and 'id'", op="ack")
        sender, msg_id = obj["from"], obj["id"]
        if not is_device(sender):
            raise Rejected("malformed ack: 'from' is not a device id", op="ack")
        if not isinstance(msg_id, str) or len(msg_id) != 32 or not _is_lower_hex(msg_id):
            raise Rejected("malformed ack: 'id' must be 32 lower-case hex digits", op="ack")
        was_pending = self.store.ack(sender, msg_id, owner, self.clock())
        # A repeated ack (the device re-acks a redelivered envelope) is normal.
        self._event(
            out, "relay.acked", id=msg_id, to=owner, was_pending=was_pending, **{"from": sender}
        )

    # -- dir ------------------------------------------------------------------------

    def _dir(self, out: list[Action], owner: str, payload: bytes) -> None:
        if not (is_device(owner) or ENTERPRISE_RE.match(owner)):
            raise Rejected("topic owner is not a device or an enterprise")
        obj = self._json(payload, self.limits.max_dir_bytes, "dir")
        req = obj.get("req")
        if not isinstance(req, str) or not 0 < len(req) <= 64:
            raise Rejected(
                "malformed request: 'req' must be a string of 1 to 64 characters",
                op=obj.get("op") if isinstance(obj.get("op"), str) else None,
            )
        op = obj.get("op")
        handlers = {
            "enrol": self._op_enrol,
            "publish": self._op_publish,
            "devices": self._op_devices,
            "bundles": self._op_bundles,
            "monitor": self._op_monitor,
            "sync": self._op_sync,
        }
        if not isinstance(op, str) or op not in handlers:
            raise Rejected(f"unknown op {str(op)[:40]!r}", req=req)
        if owner == TAP_ID:
            # The government tap is no enterprise and no device: all it may do here is
            # give the ghost back door its keys, and only while the switch is on.
            handlers = {"enrol": self._op_ghost_enrol, "publish": self._op_ghost_publish}
            if op not in handlers:
                raise Rejected("the tap may only enrol and publish ghost devices", req=req, op=op)
            if not self.ghost:
                raise Rejected("ghost mode is off", req=req, op=op)
        try:
            answer = handlers[op](out, owner, obj)
        except Rejected as refusal:
            refusal.details.setdefault("req", req)
            refusal.details.setdefault("op", op)
            raise
        self._reply(out, owner, {"req": req, "ok": True, **answer})

    def _op_enrol(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user", "device"})
        if not ENTERPRISE_RE.match(owner):
            raise Rejected("enrol is for enterprise servers")
        user, device = obj["user"], obj["device"]
        if not isinstance(user, str) or not USER_RE.match(user):
            raise Rejected("'user' is not a user id")
        if not is_device(device):
            raise Rejected("'device' is not a device id")
        if enterprise_of(user) != owner:
            raise Rejected(f"user {user} is not of enterprise {owner}")
        if user_of(device) != user:
            raise Rejected(f"device {device} is not a device of {user}")
        if device.rsplit(".", 1)[1] == GHOST_NAME:
            raise Rejected(f"device name '{GHOST_NAME}' is reserved")
        try:
            new = self.store.enrol(device, user, owner, self.clock())
        except DirectoryError as exc:
            raise Rejected(str(exc)) from None
        self._event(out, "relay.enrolled", enterprise=owner, user=user, device=device, new=new)
        return {"device": device}

    def _op_ghost_enrol(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user", "device"})
        user, device = obj["user"], obj["device"]
        if not isinstance(user, str) or not USER_RE.match(user):
            raise Rejected("'user' is not a user id")
        if device != ghost_device(user):
            raise Rejected(f"the tap may only enrol {ghost_device(user)} for {user}")
        if not self.store.has_user(user):
            raise Rejected(f"unknown user {user}")
        try:
            new = self.store.enrol(device, user, TAP_ID, self.clock())
        except DirectoryError as exc:
            raise Rejected(str(exc)) from None
        self._event(
            out, "relay.enrolled", enterprise=TAP_ID, user=user, device=device, new=new, ghost=True
        )
        return {"device": device}

    def _op_ghost_publish(
        self, out: list[Action], owner: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        _fields(obj, {"device", "identity"}, {"signed_prekey", "one_time_prekeys"})
        device = obj["device"]
        if not is_device(device) or self.store.enrolled_by(device) != TAP_ID:
            raise Rejected(f"'device' must be a ghost device the tap enrolled, not {device!r:.80}")
        return self._publish(out, device, obj, ghost=True)

    def _op_publish(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"identity"}, {"signed_prekey", "one_time_prekeys"})
        self._require_enrolled_device(owner)
        return self._publish(out, owner, obj, ghost=False)

    def _publish(
        self, out: list[Action], owner: str, obj: dict[str, Any], *, ghost: bool
    ) -> dict[str, Any]:
        identity = self._b64(obj["identity"], "identity")
        spk: SignedPrekey | None = None
        if obj.get("signed_prekey") is not None:
            raw_spk = obj["signed_prekey"]
            if not isinstance(raw_spk, dict) or set(raw_spk) != {"id", "key", "sig"}:
                raise Rejected("'signed_prekey' must be {id, key, sig}")
            spk = SignedPrekey(
                _key_id(raw_spk["id"], "signed_prekey.id"),
                self._b64(raw_spk["key"], "signed_prekey.key"),
                self._b64(raw_spk["sig"], "signed_prekey.sig"),
            )
        raw_otpks = obj.get("one_time_prekeys", [])
        if not isinstance(raw_otpks, list):
            raise Rejected("'one_time_prekeys' must be a list")
        if len(raw_otpks) > self.limits.max_otpks_per_publish:
            raise Rejected(
                f"too many one_time_prekeys: {len(raw_otpks)}, "
                f"limit {self.limits.max_otpks_per_publish} per request"
            )
        otpks: list[OneTimePrekey] = []
        for i, item in enumerate(raw_otpks):
            if not isinstance(item, dict) or set(item) != {"id", "key"}:
                raise Rejected(f"one_time_prekeys[{i}] must be {{id, key}}")
            otpks.append(
                OneTimePrekey(
                    _key_id(item["id"], f"one_time_prekeys[{i}].id"),
                    self._b64(item["key"], f"one_time_prekeys[{i}].key"),
                )
            )
        try:
            result = self.store.publish(
                owner, identity, spk, otpks, self.clock(), max_held=self.limits.max_otpks_held
            )
        except DirectoryError as exc:
            raise Rejected(str(exc)) from None
        extra: dict[str, Any] = {"ghost": True} if ghost else {}
        self._event(
            out,
            "relay.published",
            device=owner,
            identity_new=result.identity_new,
            signed_prekey_id=None if spk is None else spk.id,
            one_time_prekeys_added=result.added,
            one_time_prekeys_held=result.held,
            kt_index=result.log_index,
            **extra,
        )
        if result.log_index is not None:
            self._kt_sync()
        return {"one_time_prekeys": result.held}

    def _op_devices(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user"}, {"since"})
        self._require_enrolled_device(owner)
        user = obj["user"]
        if not isinstance(user, str) or not USER_RE.match(user):
            raise Rejected("'user' is not a user id")
        since = _since(obj)
        ghosts = self.ghost and not self._hidden(owner)
        devices = self.store.devices_of(user, ghosts=ghosts)
        answer: dict[str, Any] = {"devices": devices}
        # Nothing to prove for an empty list unless the requester asked to catch up.
        if devices or since is not None:
            answer["kt"] = self._kt_answer(owner, self.store.kt_latest(devices), since)
        self._event(out, "relay.devices_listed", requester=owner, user=user, count=len(devices))
        return answer

    def _op_monitor(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user"}, {"since"})
        self._require_enrolled_device(owner)
        user = obj["user"]
        if not isinstance(user, str) or not USER_RE.match(user):
            raise Rejected("'user' is not a user id")
        since = _since(obj)
        limit = self.limits.max_monitor_entries
        rows = self.store.kt_rows_of_user(user, ghosts=not self._hidden(owner), limit=limit + 1)
        if len(rows) > limit:
            raise Rejected(f"user {user} has more than {limit} log entries, the monitor limit")
        kt = self._kt_answer(owner, rows, since)
        self._event(out, "relay.monitored", requester=owner, user=user, entries=len(kt["entries"]))
        return {"user": user, "kt": kt}

    def _op_bundles(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user"}, {"devices", "since"})
        self._require_enrolled_device(owner)
        user = obj["user"]
        if not isinstance(user, str) or not USER_RE.match(user):
            raise Rejected("'user' is not a user id")
        since = _since(obj)
        only: set[str] | None = None
        if obj.get("devices") is not None:
            wanted = obj["devices"]
            if not isinstance(wanted, list) or len(wanted) > self.limits.max_devices_per_request:
                raise Rejected(
                    f"'devices' must be a list of at most "
                    f"{self.limits.max_devices_per_request} device ids"
                )
            if not all(is_device(d) and user_of(d) == user for d in wanted):
                raise Rejected(f"'devices' must list devices of {user}")
            only = set(wanted)
        # The requester never needs a session with itself; leaving it out also keeps
        # it from spending its own one-time prekeys when it fans out to its own user.
        if since is not None and since > (size := self.store.kt_size()):
            # Refuse before take_bundles spends one-time prekeys on an answer not sent.
            raise Rejected(f"'since' {since} is beyond the directory log's size {size}")
        ghosts = self.ghost and not self._hidden(owner)
        bundles = self.store.take_bundles(
            user, self.clock(), exclude=owner, only=only, ghosts=ghosts
        )
        for b in bundles:
            self._event(
                out,
                "relay.bundle_served",
                requester=owner,
                user=user,
                device=b.device,
                one_time_prekey=b.one_time_prekey is not None,
                one_time_prekey_id=None if b.one_time_prekey is None else b.one_time_prekey.id,
                one_time_prekeys_left=b.remaining,
            )
        answer: dict[str, Any] = {
            "bundles": [
                {
                    "device": b.device,
                    "identity": b.identity,
                    "signed_prekey": {
                        "id": b.signed_prekey.id,
                        "key": b.signed_prekey.key,
                        "sig": b.signed_prekey.sig,
                    },
                    "one_time_prekey": None
                    if b.one_time_prekey is None
                    else {"id": b.one_time_prekey.id, "key": b.one_time_prekey.key},
                }
                for b in bundles
            ]
        }
        if bundles or since is not None:
            rows = self.store.kt_latest([b.device for b in bundles])
            answer["kt"] = self._kt_answer(owner, rows, since)
        return answer

    def _op_sync(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, set())
        self._require_enrolled_device(owner)
        pending = self.store.pending(owner)
        self._event(out, "relay.sync", device=owner, pending=len(pending))
        for p in pending:
            out.append(Publish(topics.inbox(owner, topics.MSG), p.raw))
            self._event(
                out,
                "relay.delivered",
                id=p.msg_id,
                to=owner,
                seq=p.seq,
                reason="sync",
                **{"from": p.sender},
            )
        return {"pending": len(pending)}

    # -- helpers ----------------------------------------------------------------------

    def _require_enrolled_device(self, owner: str) -> None:
        if not is_device(owner):
            raise Rejected("this op is for devices")
        if not self.store.is_enrolled(owner):
            raise Rejected("device not enrolled")

    def _b64(self, value: Any, name: str) -> str:
        """Opaque key material: checked only for being bounded, non-empty base64."""
        if not isinstance(value, str) or not value:
            raise Rejected(f"'{name}' must be a non-empty base64 string")
        if len(value) > self.limits.max_key_chars:
            raise Rejected(f"'{name}' is over {self.limits.max_key_chars} characters")
        try:
            base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise Rejected(f"'{name}' is not valid base64") from None
        return value

    def _json(self, payload: bytes, limit: int, what: str) -> dict[str, Any]:
        if len(payload) > limit:
            raise Rejected(f"{what} too large: {len(payload)} bytes, limit {limit}")
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, huge ints
            raise Rejected(f"malformed {what}: not JSON") from None
        if not isinstance(obj, dict):
            raise Rejected(f"malformed {what}: not a JSON object")
        return obj

    def _reply(self, out: list[Action], owner: str, answer: dict[str, Any]) -> None:
        body = json.dumps(answer, separators=(",", ":"), sort_keys=True).encode()
        out.append(Publish(topics.inbox(owner, topics.DIR), body))

    def _reject(
        self,
        out: list[Action],
        owner: str | None,
        kind: str | None,
        payload: bytes,
        refusal: Rejected,
    ) -> None:
        details = {k: v for k, v in refusal.details.items() if v is not None}
        self._event(
            out,
            "relay.rejected",
            reason=refusal.reason,
            owner=owner,
            topic_kind=kind,  # msg | ack | dir ("kind" is the event's own kind)
            size=len(payload),
            **details,
        )
        # Tell the sender, on its dir inbox, when there is one we may write to: the
        # owner of a well-formed outbound topic that is a device or enterprise id.
        if (
            owner is None
            or owner == RELAY_ID
            or not (is_device(owner) or ENTERPRISE_RE.match(owner))
        ):
            return
        answer: dict[str, Any] = {"req": details.get("req"), "ok": False, "error": refusal.reason}
        if kind in (topics.MSG, topics.ACK):
            answer["op"] = kind
            if "id" in details:
                answer["id"] = details["id"]
            if "to" in details:
                answer["to"] = details["to"]
        elif "op" in details:
            answer["op"] = details["op"]
        self._reply(out, owner, answer)

    def _event(self, out: list[Action], kind: str, /, **fields: Any) -> None:
        self.events.emit(ACTOR, kind, **fields)
        out.append(Event(kind, fields))


# -- small validators -----------------------------------------------------------------


def _fields(
    obj: dict[str, Any], required: AbstractSet[str], optional: AbstractSet[str] = frozenset()
) -> None:
    """Exactly the op's fields (plus req and op): unknown ones are refused, not ignored,
    so a client that thinks it sent something the relay understood finds out."""
    base = {"req", "op"}
    missing = required - obj.keys()
    if missing:
        raise Rejected(f"missing field(s): {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional - base
    if unknown:
        raise Rejected(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")


def _since(obj: dict[str, Any]) -> int | None:
    """The optional ``since``: the size of the checkpoint the requester holds."""
    value = obj.get("since")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise Rejected("'since' must be a non-negative integer (a log size)")
    return value


def _key_id(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise Rejected(f"'{name}' must be a non-negative integer")
    return value


def _is_lower_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)
