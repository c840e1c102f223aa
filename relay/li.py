"""The relay's lawful-intercept switch: ``off``, ``scoped`` or ``blanket``.

This is the only place a tap can be attached, and it sees exactly what the relay sees:
the envelope bytes it accepted and their metadata. It has no key and no way to get one
(the relay imports no decryption code), so what a tap can read depends entirely on what
the *clients* put in the envelope - which is the lab's point.

* ``off``: nothing leaves the relay.
* ``blanket``: every accepted envelope is mirrored, with a metadata record, to the tap's
  inbox ``doormat/in/tap/mirror`` (QoS 1, so the broker queues it while the tap is away).
* ``scoped``: only what a warrant's tasks select (the scoped interceptor provisions
  them; until a task is active nothing is copied).

The mirror record (JSON): ``{"liid", "seq", "t", "id", "from", "to", "size", "bucket",
"envelope": base64}`` - the envelope exactly as the relay accepted it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Literal

from relay.router import ACTOR, Action, Publish
from wire import topics
from wire.envelope import Envelope
from wire.events import EventLog, now_ms

Mode = Literal["off", "scoped", "blanket"]
MODES: tuple[Mode, ...] = ("off", "scoped", "blanket")

TAP_ID = "tap"
MIRROR_TOPIC = topics.inbox(TAP_ID, "mirror")
BLANKET_LIID = "BLANKET"


class LawfulIntercept:
    """A relay Observer: decides, per accepted envelope, what (if anything) the tap gets."""

    def __init__(
        self, events: EventLog, mode: str = "off", clock: Callable[[], int] = now_ms
    ) -> None:
        self._events = events
        self._clock = clock
        self.mode: Mode = "off"
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown LI mode {mode!r}: use one of {', '.join(MODES)}")
        if mode != self.mode:
            self._events.emit(ACTOR, "relay.li_mode", mode=mode, previous=self.mode)
        self.mode = mode

    def on_accepted(self, envelope: Envelope, raw: bytes, seq: int) -> Sequence[Action]:
        if self.mode != "blanket":
            return ()
        record = {
            "liid": BLANKET_LIID,
            "seq": seq,
            "t": self._clock(),
            "id": envelope.id,
            "from": envelope.sender,
            "to": envelope.recipient,
            "size": len(raw),
            "bucket": len(envelope.body),
            "envelope": base64.b64encode(raw).decode("ascii"),
        }
        self._events.emit(
            ACTOR,
            "relay.mirrored",
            liid=BLANKET_LIID,
            seq=seq,
            id=envelope.id,
            to=envelope.recipient,
            **{"from": envelope.sender},
        )
        return (Publish(MIRROR_TOPIC, json.dumps(record, separators=(",", ":")).encode()),)
