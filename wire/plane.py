"""What travels on the observation plane besides controls (``wire.control``): event
batches, a service's status, and the exposure row an observer computes of itself. Pure:
encoders and strict decoders, no I/O.

Event batch, on ``doormat/ev/<svc>`` (and, replayed, on ``doormat/to/<observer>/<svc>/ev``)::

    {"svc": "relay", "first": 41, "events": [{event}, {event}, ...]}

The events are ``wire.events`` events exactly as the service emitted them; the i-th has
the service's sequence number ``first + i`` (1, 2, 3 ... per service and per run: a
service that starts again starts a new run, with a new ``started``). The number is not
put into the event, whose own fields (the relay's ``seq`` is its store's) stay as they
are. An observer de-duplicates by (svc, number) and sees a gap as a jump.

Status, on ``doormat/ev/<svc>/status`` (when the service starts, when the observer says
hello, when it stops)::

    {"svc": "relay", "kind": "relay", "started": <ms>, "seq": <last number>, "state":
     "running" | "stopped"}

Exposure row (``ExposureRow``): what one observer holds, computed by that observer in its
own process from its own store with its own keys, and published as the event
``exposure.row`` (actor: the service) and in the answer to ``measure``. It names
messages by (sending device, message id) and carries no plaintext::

    {"observer": "relay" | "blanket-tap" | "agency" | "enterprise:acme" |
                 "attacker:escrow-key" | "attacker:device-image" | ...,
     "keys_held": ["..."], "metadata_records": n,
     "captured": [[sender, id], ...],       # messages it holds an envelope/record of
     "readable": [[sender, id], ...],       # those a key it holds opened
     "records": [[sender, id, n], ...],     # its metadata records, per message
     "journal": [[device, "out"|"in", sender, id], ...],   # an enterprise archive's
     "carried": [[sender, id, [recipient, ...], delivered], ...],  # the relay's only
     "detail": {...}}                       # e.g. an attacker's forward-secrecy counts

``doormat.exposure`` combines rows into the report; it holds no key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wire.ids import is_device

#: A publisher sends a batch after at most this many events ...
MAX_BATCH_EVENTS = 200
#: ... or this many bytes of JSON (an event larger than this travels alone) ...
MAX_BATCH_BYTES = 192 * 1024
#: ... and at most this long after the first event of the batch (seconds).
MAX_BATCH_DELAY = 0.05
#: How many recent events a service keeps to answer ``events.replay``.
REPLAY_RING = 5000

STATES = ("running", "stopped")


class PlaneFormatError(ValueError):
    """A batch, status or row that does not have the expected shape."""


MessageKey = tuple[str, str]  # (sending device, message id)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def _load(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        raise PlaneFormatError(f"{what}: not JSON") from None
    if not isinstance(obj, dict):
        raise PlaneFormatError(f"{what}: not a JSON object")
    return obj


# -- event batches --------------------------------------------------------------------


def encode_batch(svc: str, first: int, events: Sequence[Mapping[str, Any]]) -> bytes:
    return _dumps({"svc": svc, "first": first, "events": list(events)})


def decode_batch(payload: bytes, svc: str) -> tuple[int, list[dict[str, Any]]]:
    """(first number, events) of a batch that ``svc`` published (the topic's owner):
    a batch naming another service is refused."""
    obj = _load(payload, "event batch")
    if obj.get("svc") != svc:
        raise PlaneFormatError(f"event batch of {obj.get('svc')!r} on {svc!r}'s topic")
    first, events = obj.get("first"), obj.get("events")
    if not isinstance(first, int) or isinstance(first, bool) or first < 1:
        raise PlaneFormatError("event batch: 'first' must be a positive integer")
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and isinstance(e.get("kind"), str) for e in events
    ):
        raise PlaneFormatError("event batch: 'events' must be a list of events")
    return first, events


# -- status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    svc: str
    kind: str
    started: int
    seq: int
    state: str = "running"

    def encode(self) -> bytes:
        return _dumps({"svc": self.svc, "kind": self.kind, "started": self.started,
                       "seq": self.seq, "state": self.state})

    @classmethod
    def decode(cls, payload: bytes, svc: str) -> Status:
        obj = _load(payload, "status")
        if obj.get("svc") != svc:
            raise PlaneFormatError(f"status of {obj.get('svc')!r} on {svc!r}'s topic")
        kind, started, seq, state = (obj.get(k) for k in ("kind", "started", "seq", "state"))
        if not isinstance(kind, str) or state not in STATES:
            raise PlaneFormatError("status: bad 'kind' or 'state'")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (started, seq)):
            raise PlaneFormatError("status: 'started' and 'seq' must be integers")
        assert isinstance(started, int) and isinstance(seq, int) and isinstance(state, str)
        return cls(svc, kind, started, seq, state)


# -- exposure rows ------------------------------------------------------------------------


@dataclass
class ExposureRow:
    observer: str
    keys_held: list[str] = field(default_factory=list)
    metadata_records: int = 0
    captured: list[MessageKey] = field(default_factory=list)
    readable: list[MessageKey] = field(default_factory=list)
    records: list[tuple[str, str, int]] = field(default_factory=list)
    journal: list[tuple[str, str, str, str]] | None = None
    carried: list[tuple[str, str, list[str], bool]] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "observer": self.observer,
            "keys_held": list(self.keys_held),
            "metadata_records": self.metadata_records,
            "captured": [list(k) for k in self.captured],
            "readable": [list(k) for k in self.readable],
            "records": [list(r) for r in self.records],
        }
        if self.journal is not None:
            obj["journal"] = [list(j) for j in self.journal]
        if self.carried is not None:
            obj["carried"] = [[s, i, list(to), d] for s, i, to, d in self.carried]
        if self.detail:
            obj["detail"] = self.detail
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> ExposureRow:
        """Strict: a row from the plane is outside input to whoever aggregates it."""
        if not isinstance(obj, dict):
            raise PlaneFormatError("exposure row: not an object")
        name = obj.get("observer")
        if not isinstance(name, str) or not name or len(name) > 200:
            raise PlaneFormatError("exposure row: 'observer' must be a name")
        keys = obj.get("keys_held", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise PlaneFormatError("exposure row: 'keys_held' must be a list of names")
        meta = obj.get("metadata_records", 0)
        if not isinstance(meta, int) or isinstance(meta, bool) or meta < 0:
            raise PlaneFormatError("exposure row: 'metadata_records' must be a count")
        row = cls(name, list(keys), meta)
        row.captured = _keys(obj.get("captured", []), "captured")
        row.readable = _keys(obj.get("readable", []), "readable")
        records = obj.get("records", [])
        if not isinstance(records, list):
            raise PlaneFormatError("exposure row: 'records' must be a list")
        for r in records:
            if not (isinstance(r, list) and len(r) == 3 and _key_ok(r[:2])
                    and isinstance(r[2], int) and not isinstance(r[2], bool) and r[2] > 0):
                raise PlaneFormatError("exposure row: a record is [sender, id, count]")
            row.records.append((r[0], r[1], r[2]))
        if "journal" in obj:
            journal = obj["journal"]
            if not isinstance(journal, list):
                raise PlaneFormatError("exposure row: 'journal' must be a list")
            row.journal = []
            for j in journal:
                if not (isinstance(j, list) and len(j) == 4 and is_device(j[0])
                        and j[1] in ("out", "in") and _key_ok(j[2:])):
                    raise PlaneFormatError(
                        "exposure row: a journal record is [device, out|in, sender, id]")
                row.journal.append((j[0], j[1], j[2], j[3]))
        if "carried" in obj:
            carried = obj["carried"]
            if not isinstance(carried, list):
                raise PlaneFormatError("exposure row: 'carried' must be a list")
            row.carried = []
            for c in carried:
                if not (isinstance(c, list) and len(c) == 4 and _key_ok(c[:2])
                        and isinstance(c[2], list) and all(isinstance(d, str) for d in c[2])
                        and isinstance(c[3], bool)):
                    raise PlaneFormatError(
                        "exposure row: a carried message is [sender, id, [recipients], "
                        "delivered]")
                row.carried.append((c[0], c[1], list(c[2]), c[3]))
        detail = obj.get("detail", {})
        if not isinstance(detail, dict):
            raise PlaneFormatError("exposure row: 'detail' must be an object")
        row.detail = detail
        return row


def _key_ok(pair: Any) -> bool:
    return (
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
        and isinstance(pair[1], str) and len(pair[0]) <= 200 and len(pair[1]) <= 200
    )


def _keys(value: Any, what: str) -> list[MessageKey]:
    if not isinstance(value, list) or not all(_key_ok(k) for k in value):
        raise PlaneFormatError(f"exposure row: {what!r} must be a list of [sender, id]")
    return [(k[0], k[1]) for k in value]


__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_DELAY",
    "MAX_BATCH_EVENTS",
    "REPLAY_RING",
    "ExposureRow",
    "MessageKey",
    "PlaneFormatError",
    "Status",
    "decode_batch",
    "encode_batch",
]
