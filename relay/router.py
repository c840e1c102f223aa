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
everything behind it. ``handle`` raises only for a transient failure
(``infra.failures.is_transient``: ``sqlite3.OperationalError`` - the disk, not the input
- an ``OSError``); then nothing was acknowledged and the caller must drop the connection
so the broker redelivers. JSON from outside is read strictly (``wire.strictjson``).

Requests on a ``dir`` topic (the key directory and its key-transparency log, ``sync``,
the ghost back door and split view) are ``relay.directory``'s: ``handle`` passes them to
:class:`relay.directory.Directory` and reports its refusals like any other. The router
itself routes an envelope addressed to a ghost device (``<user>.gov``, while ghost mode
is on) to the tap (``doormat/in/tap/ghost``) and marks it delivered at once.

The actions, ``Limits`` and ``ACTOR`` are defined in ``relay.actions`` (shared with the
directory) and exported here too, the router being where callers meet them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from infra.failures import is_transient
from relay.actions import (
    ACTOR,
    Ack,
    Action,
    Event,
    Limits,
    Publish,
    Rejected,
    emit,
    read_json,
    reply,
)
from relay.directory import Directory
from relay.intake import TokenBuckets
from relay.kt import GHOST_KIND, DirectoryLog
from relay.store import Store
from wire import topics
from wire.b64 import b64encode
from wire.envelope import Envelope, EnvelopeError
from wire.envelope import parse as parse_envelope
from wire.events import EventLog, now_ms
from wire.ids import (
    ENTERPRISE_RE,
    RELAY_ID,
    TAP_ID,
    enterprise_of,
    is_device,
)
from wire.note import Signer

log = logging.getLogger(__name__)


class Observer(Protocol):
    """A seam for what may later watch accepted envelopes (the LI switch's mirror to a
    tap, X1 tasks): called after an envelope is committed, it returns extra actions
    (e.g. a Publish to a tap topic). Observers see exactly what the relay sees: the
    raw envelope and its metadata, never plaintext."""

    def on_accepted(self, envelope: Envelope, raw: bytes, seq: int) -> Sequence[Action]: ...


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
        self.directory = Directory(
            store, events, self.limits, clock, kt_signer=kt_signer, ghost=ghost
        )

    # -- the key directory (relay.directory) ------------------------------------------

    @property
    def kt(self) -> DirectoryLog:
        """The directory's key-transparency log."""
        return self.directory.kt

    @property
    def directory_vkey(self) -> str:
        """The verifier key of the directory's checkpoints: what clients pin."""
        return self.directory.kt.vkey

    def set_ghost(self, on: bool) -> list[Action]:
        """The ghost back door on or off (``Directory.set_ghost``)."""
        return self.directory.set_ghost(on)

    def set_split_view(self, hidden_from: Collection[str] | None) -> list[Action]:
        """Which users see the log without the ghost entries (``Directory.set_split_view``)."""
        return self.directory.set_split_view(hidden_from)

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
                self.directory.handle(out, owner, payload)
        except Rejected as refusal:
            self._reject(out, owner, kind, payload, refusal)
        except Exception as exc:
            if is_transient(exc):
                raise  # the store failed: nothing acknowledged, the caller reconnects
            # A bug on some input (an IntegrityError, a DataError, ... included: not the
            # disk's, so retrying would fail the same way, forever): log it, refuse it
            # with a reason, do not crash or loop.
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
        if not is_device(owner) or not self.store.directory.is_enrolled(owner):
            raise Rejected("journal records come from enrolled devices")
        if len(payload) > self.limits.max_envelope_bytes:
            raise Rejected(f"journal record too large: {len(payload)} bytes")
        enterprise = enterprise_of(owner)
        wrapped = json.dumps(
            {"device": owner, "record": b64encode(payload)}
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
        if not self.store.directory.is_enrolled(owner):
            raise Rejected("sender not enrolled", op="msg", **ids)
        enrolled_by = self.store.directory.enrolled_by(env.recipient)
        to_ghost = enrolled_by == TAP_ID
        if enrolled_by is None or (to_ghost and not self.directory.ghost):
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
        obj = read_json(payload, self.limits.max_ack_bytes, "ack")
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

    # -- helpers ----------------------------------------------------------------------

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
        reply(out, owner, answer)

    def _event(self, out: list[Action], kind: str, /, **fields: Any) -> None:
        emit(self.events, out, kind, **fields)


# -- small validators -----------------------------------------------------------------


def _is_lower_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


__all__ = ["ACTOR", "Ack", "Action", "Event", "Limits", "Observer", "Publish", "Relay"]
