"""The relay's intake: what it has taken from the broker and not yet handled.

Three things the service needs under load (docs/relay.md, "Load and overload"):

* **Fairness.** The broker hands the relay one stream of messages, in arrival order,
  up to its in-flight window (Mosquitto: ``max_inflight_messages``) ahead of the relay's
  acknowledgements. ``Intake`` sorts what has arrived into one queue per topic owner and
  hands it out round-robin, one message per owner per turn, each owner's messages in
  their own order. A device that floods the relay therefore competes with every other
  device for a turn instead of standing in front of them all.
* **Acknowledgements in arrival order.** MQTT 3.1.1 wants a client's PUBACKs in the
  order it received the PUBLISHes ([MQTT-4.6.0-2]); handling out of order must not
  change that. ``done()`` marks messages handled and ``ackable()`` yields the longest
  handled prefix of the arrivals.
* **Bounds.** ``Intake`` holds at most what the broker let through (its in-flight
  window); the service stops reading ahead at ``read_ahead``.

``DeferredEvents`` holds a batch's events until its transaction committed, so that an
event such as ``relay.accepted`` still means "committed" when several messages share one
commit (the service's group commit), and a batch rolled back leaves no event behind.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wire.events import Event, EventLog, Listener, now_ms


@dataclass(eq=False)
class Item:
    """One message taken from the broker."""

    topic: str
    payload: bytes
    owner: str  # the topic's owner level ("" if the topic has none)
    kind: str  # the topic's last level
    message: Any = None  # the transport's Message (its ack() releases the PUBACK)
    done: bool = field(default=False)


def item_of(topic: str, payload: bytes, message: Any = None) -> Item:
    parts = topic.split("/")
    owner = parts[2] if len(parts) == 4 else ""
    return Item(topic, payload, owner, parts[-1], message)


class Intake:
    """Per-owner FIFO queues served round-robin; acknowledgements in arrival order."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Item]] = OrderedDict()
        self._arrivals: deque[Item] = deque()
        self._waiting = 0

    def __len__(self) -> int:
        """Messages taken but not yet handed out."""
        return self._waiting

    @property
    def unacked(self) -> int:
        """Messages taken whose PUBACK has not been released yet."""
        return len(self._arrivals)

    def add(self, item: Item) -> None:
        q = self._queues.get(item.owner)
        if q is None:
            q = self._queues[item.owner] = deque()
        q.append(item)
        self._arrivals.append(item)
        self._waiting += 1

    def take(self, n: int) -> list[Item]:
        """Up to ``n`` messages, one per owner per round, owners in turn."""
        out: list[Item] = []
        while len(out) < n and self._queues:
            owner, q = next(iter(self._queues.items()))
            out.append(q.popleft())
            self._waiting -= 1
            if q:
                self._queues.move_to_end(owner)  # next owner's turn
            else:
                del self._queues[owner]
        return out

    def done(self, items: list[Item]) -> None:
        for item in items:
            item.done = True

    def ackable(self) -> Iterator[Item]:
        """The handled messages at the front of the arrival order (remove as yielded)."""
        while self._arrivals and self._arrivals[0].done:
            yield self._arrivals.popleft()


class DeferredEvents(EventLog):
    """An EventLog in front of another: passes events through, except inside
    ``held()``, where it keeps them and emits them (in order) only when the block ends
    without an error. Reading (``events``, ``subscribe``) goes to the inner log."""

    def __init__(self, inner: EventLog) -> None:
        super().__init__()
        self.inner = inner
        self._held: list[tuple[str, str, dict[str, Any]]] | None = None

    def subscribe(self, listener: Listener) -> None:
        self.inner.subscribe(listener)

    def events(self, kind: str | None = None, actor: str | None = None) -> list[Event]:
        return self.inner.events(kind=kind, actor=actor)

    def emit(self, actor: str, kind: str, **fields: Any) -> Event:
        if self._held is None:
            return self.inner.emit(actor, kind, **fields)
        self._held.append((actor, kind, fields))
        return {"t": now_ms(), "actor": actor, "kind": kind, **fields}

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._held is not None:  # nested: the outer block decides
            yield
            return
        self._held = []
        try:
            yield
        except BaseException:
            self._held = None
            raise
        events, self._held = self._held, None
        with self.inner.deferred_flush():  # one flush of the sink for the lot
            for actor, kind, fields in events:
                self.inner.emit(actor, kind, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TokenBuckets:
    """Per-key token buckets: ``rate`` tokens per second, at most ``burst`` saved up.
    A key seen for the first time starts with a full bucket. Memory is bounded: past
    ``max_keys`` keys, the ones whose buckets have refilled (idle keys) are forgotten."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Any, tuple[float, int]] = {}  # key -> (tokens, at ms)

    def allow(self, key: Any, now_ms: int) -> bool:
        if self.rate <= 0:
            return True
        tokens, at = self._buckets.get(key, (self.burst, now_ms))
        tokens = min(self.burst, tokens + max(0, now_ms - at) * self.rate / 1000.0)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now_ms)
        if len(self._buckets) > self.max_keys:
            self._forget_idle(now_ms)
        return ok

    def _forget_idle(self, now_ms: int) -> None:
        full_after_ms = self.burst / self.rate * 1000.0
        self._buckets = {k: v for k, v in self._buckets.items() if now_ms - v[1] < full_after_ms}
