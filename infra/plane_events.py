"""Events out on the plane: ``EventPublisher`` (see ``infra.plane``, whose public
names these are).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque

from infra.transport import Transport, TransportError
from wire import topics
from wire.events import Event, now_ms
from wire.plane import (
    MAX_BATCH_BYTES,
    MAX_BATCH_DELAY,
    MAX_BATCH_EVENTS,
    REPLAY_RING,
    Status,
)

log = logging.getLogger(__name__)




# -- events out ---------------------------------------------------------------------------


class EventPublisher:
    """The plane sink of one service's EventLog (see the module doc)."""

    def __init__(
        self,
        svc: str,
        kind: str,
        *,
        max_events: int = MAX_BATCH_EVENTS,
        max_bytes: int = MAX_BATCH_BYTES,
        delay: float = MAX_BATCH_DELAY,
        ring: int = REPLAY_RING,
        max_outstanding: int = 8,
        max_unsent: int = 64,
    ) -> None:
        self.svc = svc
        self.kind = kind
        self.topic = topics.events_topic(svc)
        self.started = now_ms()
        self.seq = 0  # the number of the last event taken
        self.dropped = 0  # events dropped because the buffer was full
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.delay = delay
        self.max_outstanding = max(1, max_outstanding)
        self.max_unsent = max(1, max_unsent)
        self._ring: deque[tuple[int, str]] = deque(maxlen=ring)
        self._buffer: list[str] = []
        self._buffer_first = 1
        self._buffer_bytes = 0
        self._unsent: deque[tuple[int, int, bytes]] = deque()  # (first, count, payload)
        self._outstanding = 0
        self._timer: asyncio.Handle | None = None
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._lock = threading.Lock()

    # -- input: the EventLog listener --------------------------------------------------

    def listener(self, event: Event) -> None:
        """Subscribe this to the service's EventLog. Never blocks: from another thread
        the event is handed to the loop."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._add, event)
            return
        self._add(event)

    def _add(self, event: Event) -> None:
        try:
            text = json.dumps(event, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            text = json.dumps({"t": event.get("t"), "actor": str(event.get("actor")),
                               "kind": str(event.get("kind")), "unencodable": True})
        with self._lock:
            self.seq += 1
            self._ring.append((self.seq, text))
            if not self._buffer:
                self._buffer_first = self.seq
            self._buffer.append(text)
            self._buffer_bytes += len(text) + 1
            full = (len(self._buffer) >= self.max_events
                    or self._buffer_bytes >= self.max_bytes)
        if full:
            self._cut()
            self._pump()
        else:
            self._schedule()

    # -- batching -------------------------------------------------------------------------

    def _schedule(self) -> None:
        loop = self._loop
        if self._timer is not None or loop is None:
            return
        if self._outstanding == 0 and not self._unsent:
            # Nothing in flight: send at the end of this turn of the loop (the events of
            # one step travel together; a quiet service's events go out at once).
            self._timer = loop.call_soon(self._due)
        else:
            self._timer = loop.call_later(self.delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._cut()
        self._pump()

    def _cut(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            first, events = self._buffer_first, self._buffer
            self._buffer, self._buffer_bytes = [], 0
        payload = (
            f'{{"svc":{json.dumps(self.svc)},"first":{first},"events":['
            + ",".join(events) + "]}"
        ).encode()
        self._unsent.append((first, len(events), payload))
        while len(self._unsent) > self.max_unsent:
            _, count, _ = self._unsent.popleft()
            self.dropped += count

    def _pump(self) -> None:
        transport = self._transport
        if transport is None:
            return
        while self._unsent and self._outstanding < self.max_outstanding:
            _, count, payload = self._unsent.popleft()
            try:
                transport.publish_soon(self.topic, payload, then=self._confirmed)
            except TransportError:
                self.dropped += count
                continue
            self._outstanding += 1

    def _confirmed(self) -> None:
        self._outstanding = max(0, self._outstanding - 1)
        self._pump()
        if not self._buffer:
            return
        if self._outstanding == 0 and not self._unsent and self._timer is not None:
            # Nothing in flight any more: what waited for the delay goes now (the
            # connection is the pace, as with Nagle's algorithm).
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._schedule()

    # -- binding to a connection ----------------------------------------------------------

    def bind(self, transport: Transport) -> None:
        """Publish on ``transport`` from now on (call in the loop that runs it)."""
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._schedule()
        self._pump()

    def flush(self) -> None:
        """Hand everything buffered to the transport now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._cut()
        self._pump()

    def unbind(self) -> None:
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    # -- status and replay ------------------------------------------------------------------

    def status(self, state: str = "running") -> Status:
        return Status(self.svc, self.kind, self.started, self.seq, state)

    def publish_status(self, state: str = "running") -> None:
        if self._transport is None:
            return
        with contextlib.suppress(TransportError):
            self._transport.publish_soon(topics.status_topic(self.svc),
                                         self.status(state).encode())

    def replay(self, since: int) -> list[bytes]:
        """The kept events after number ``since``, as batches (oldest first)."""
        with self._lock:
            kept = [(n, text) for n, text in self._ring if n > since]
        batches: list[bytes] = []
        i = 0
        while i < len(kept):
            first = kept[i][0]
            chunk: list[str] = []
            size = 0
            while i < len(kept) and len(chunk) < self.max_events and size < self.max_bytes:
                if chunk and kept[i][0] != kept[i - 1][0] + 1:
                    break  # keep each batch contiguous
                chunk.append(kept[i][1])
                size += len(kept[i][1]) + 1
                i += 1
            batches.append((
                f'{{"svc":{json.dumps(self.svc)},"first":{first},"events":['
                + ",".join(chunk) + "]}"
            ).encode())
        return batches

    @property
    def oldest_kept(self) -> int:
        with self._lock:
            return self._ring[0][0] if self._ring else self.seq + 1
