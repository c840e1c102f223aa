"""What the relay's sans-I/O decisions are made of, shared by the router
(``relay.router``) and the directory (``relay.directory``): the actions they return
(``Publish``, ``Ack``, ``Event``), the input limits, the internal refusal
(``Rejected``), and the three steps every handler takes: emit an event, reply on an
account's ``dir`` inbox, read a bounded JSON object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wire import topics
from wire.envelope import MAX_ENVELOPE_BYTES
from wire.events import EventLog
from wire.ids import RELAY_ID

ACTOR = RELAY_ID


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
    # Prekey bundles (docs/protocol.md): each ``bundles`` request of a device costs a
    # token of its own bucket (refused over it), and one requester takes at most
    # ``otpks_per_requester`` one-time prekeys of any one device per window; past that
    # its bundles for that device come without one (X3DH without a one-time prekey).
    bundle_rate: float = 1.0  # bundles requests per second per requesting device
    bundle_burst: int = 60
    otpks_per_requester: int = 3
    otpk_window_ms: int = 3_600_000


class Rejected(Exception):
    """Internal: a refusal with its reason and, if any, the reply to send."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def emit(events: EventLog, out: list[Action], kind: str, /, **fields: Any) -> None:
    """Emit an event as the relay and add it to the actions (in decision order)."""
    events.emit(ACTOR, kind, **fields)
    out.append(Event(kind, fields))


def reply(out: list[Action], owner: str, answer: dict[str, Any]) -> None:
    """Answer ``owner`` on its ``dir`` inbox."""
    body = json.dumps(answer, separators=(",", ":"), sort_keys=True).encode()
    out.append(Publish(topics.inbox(owner, topics.DIR), body))


def read_json(payload: bytes, limit: int, what: str) -> dict[str, Any]:
    """A JSON object of at most ``limit`` bytes, or Rejected."""
    if len(payload) > limit:
        raise Rejected(f"{what} too large: {len(payload)} bytes, limit {limit}")
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, huge ints
        raise Rejected(f"malformed {what}: not JSON") from None
    if not isinstance(obj, dict):
        raise Rejected(f"malformed {what}: not a JSON object")
    return obj


__all__ = [
    "ACTOR",
    "Ack",
    "Action",
    "Event",
    "Limits",
    "Publish",
    "Rejected",
    "emit",
    "read_json",
    "reply",
]
