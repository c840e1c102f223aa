"""The relay's key directory, sans I/O: the requests on ``doormat/out/<owner>/dir``
(``enrol``, ``publish``, ``devices``, ``bundles``, ``monitor``, ``prekeys``, ``sync``;
docs/protocol.md),
the key-transparency log behind their answers, the ghost back door and split view.
``relay.router.Relay`` hands every ``dir`` message to :meth:`Directory.handle`.

Key transparency (docs/key-transparency.md): the directory is also an append-only Merkle
log (``relay.kt``). ``devices``, ``bundles`` and ``monitor`` answers carry a ``kt`` object
(signed checkpoint, each listed device's entry with an inclusion proof, and a
consistency proof from the requester's ``since``). The relay signs checkpoints with a
signing key of its own; it still holds no key that decrypts anything.

The ``ghost`` back door (off by default, ``set_ghost``): the tap account may enrol and
publish a government device ``<user>.gov`` for any user; while ghost mode is on, device
lists and bundles include it (with its log entry and proof, as for any device); the
router hands envelopes addressed to it to the tap. ``set_split_view`` makes the
directory show some users a log without the ghost entries: a fork that devices detect
by comparing checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from relay.actions import Action, Limits, Publish, Rejected, emit, read_json, reply
from relay.directory_store import DirectoryError, OneTimePrekey, SignedPrekey
from relay.intake import TokenBuckets
from relay.kt import (
    GHOST_NAME,
    DirectoryLog,
    DirectoryLogError,
    LogRow,
    ghost_device,
)
from relay.store import Store
from wire import topics
from wire.b64 import B64Error, b64decode
from wire.events import EventLog
from wire.ids import ENTERPRISE_RE, TAP_ID, USER_RE, enterprise_of, is_device, user_of
from wire.kt import KT_ORIGIN
from wire.note import Signer


class Directory:
    """The directory's state (its log, the ghost switch, the split view) and its ops.

    Every op returns the fields of its answer, appends its events and publishes to
    ``out``, or raises Rejected."""

    def __init__(
        self,
        store: Store,
        events: EventLog,
        limits: Limits,
        clock: Callable[[], int],
        *,
        kt_signer: Signer | None,
        ghost: bool,
    ) -> None:
        self.store = store.directory  # the directory's tables
        self.envelopes = store  # for sync: what is pending for the requester
        self.events = events
        self.limits = limits
        self.clock = clock
        # Key transparency. Without a signer (unit tests) an ephemeral key signs: clients
        # that pinned another key refuse its checkpoints, as they should.
        self.kt = DirectoryLog(kt_signer or Signer.generate(KT_ORIGIN))
        self.store.kt_backfill()  # devices published before the log existed
        self._kt_sync()
        self.ghost = ghost
        self._hidden_from: frozenset[str] = frozenset()
        # Per requesting device (in memory, like the router's device buckets).
        self._bundle_buckets = TokenBuckets(limits.bundle_rate, limits.bundle_burst)

    # -- the ghost switch and split view ---------------------------------------------

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

    # -- key transparency ------------------------------------------------------------

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

    # -- requests --------------------------------------------------------------------

    def handle(self, out: list[Action], owner: str, payload: bytes) -> None:
        """One request on ``doormat/out/<owner>/dir``: answered on the owner's ``dir``
        inbox, or Rejected (the router reports refusals)."""
        if not (is_device(owner) or ENTERPRISE_RE.match(owner)):
            raise Rejected("topic owner is not a device or an enterprise")
        obj = read_json(payload, self.limits.max_dir_bytes, "dir")
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
            "prekeys": self._op_prekeys,
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
        reply(out, owner, {"req": req, "ok": True, **answer})

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

    def _about_user(self, owner: str, obj: dict[str, Any]) -> tuple[str, int | None]:
        """What a lookup of a user's entries asks about (``user``, ``since``), from an
        enrolled device: the checks the devices, monitor and bundles requests share."""
        self._require_enrolled_device(owner)
        user = obj["user"]
        if not isinstance(user, str) or not USER_RE.match(user):
            raise Rejected("'user' is not a user id")
        return user, _since(obj)

    def _op_devices(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user"}, {"since"})
        user, since = self._about_user(owner, obj)
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
        user, since = self._about_user(owner, obj)
        limit = self.limits.max_monitor_entries
        rows = self.store.kt_rows_of_user(user, ghosts=not self._hidden(owner), limit=limit + 1)
        if len(rows) > limit:
            raise Rejected(f"user {user} has more than {limit} log entries, the monitor limit")
        kt = self._kt_answer(owner, rows, since)
        self._event(out, "relay.monitored", requester=owner, user=user, entries=len(kt["entries"]))
        return {"user": user, "kt": kt}

    def _op_bundles(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, {"user"}, {"devices", "since"})
        user, since = self._about_user(owner, obj)
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
        now = self.clock()
        if not self._bundle_buckets.allow(owner, now):
            raise Rejected(
                f"rate limit: bundles over {self.limits.bundle_rate:g} per second "
                f"(burst {self.limits.bundle_burst}) for this device"
            )
        ghosts = self.ghost and not self._hidden(owner)
        bundles = self.store.take_bundles(
            user,
            now,
            exclude=owner,
            only=only,
            ghosts=ghosts,
            requester=owner,
            otpks_per_requester=self.limits.otpks_per_requester,
            window_ms=self.limits.otpk_window_ms,
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
                withheld=b.withheld,
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

    def _op_prekeys(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        """How many one-time prekeys the relay still holds for the requesting device,
        and its current signed prekey's id: what it needs to refill and rotate."""
        _fields(obj, set())
        self._require_enrolled_device(owner)
        record = self.store.device(owner)
        spk = None if record is None or record.signed_prekey is None else record.signed_prekey.id
        held = self.store.otpk_count(owner)
        self._event(out, "relay.prekeys_counted", device=owner, one_time_prekeys=held)
        return {"one_time_prekeys": held, "signed_prekey_id": spk}

    def _op_sync(self, out: list[Action], owner: str, obj: dict[str, Any]) -> dict[str, Any]:
        _fields(obj, set())
        self._require_enrolled_device(owner)
        pending = self.envelopes.pending(owner)
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
            b64decode(value, f"'{name}'")
        except B64Error as exc:
            raise Rejected(str(exc)) from None
        return value

    def _event(self, out: list[Action], kind: str, /, **fields: Any) -> None:
        emit(self.events, out, kind, **fields)


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


__all__ = ["Directory"]
