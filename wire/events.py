"""Structured events: every actor reports what it saw and did as one flat JSON object.

The exposure report, the dashboard and the exercises read these. An event is a dict
with at least ``t`` (milliseconds), ``actor`` and ``kind``; the rest are plain JSON
fields. No event ever carries a private key or a plaintext that its actor could not
read (a device's own plaintext is fine: the device can read it).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

Event = dict[str, Any]
Listener = Callable[[Event], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventsNotKept(RuntimeError):
    """``events()`` of a log made with ``keep=False``: it has none to give."""


class EventLog:
    """Where an actor's events go: an append-only list in memory (``keep``, the
    default), one JSON line each on ``sink`` (if given), and every listener
    (``subscribe``), always called, whatever else the log does.

    A long-running service keeps none (``keep=False``: it runs for days) and writes them
    to its sink (stdout, a file); asking such a log for ``events()`` raises
    EventsNotKept instead of answering with an empty list. The sink is flushed after
    every event, or once for a group of them inside ``deferred_flush()`` (the relay's
    group commit). Thread-safe: events are appended, written and handed to listeners in
    the order they were emitted."""

    def __init__(self, sink: TextIO | None = None, *, keep: bool = True) -> None:
        self._events: list[Event] = []
        self._listeners: list[Listener] = []
        self._sink = sink
        self._keep = keep
        self._deferring = 0
        self._lock = threading.Lock()

    @property
    def keeps(self) -> bool:
        """Whether ``events()`` can answer (the log keeps its events in memory)."""
        return self._keep

    def emit(self, actor: str, kind: str, **fields: Any) -> Event:
        event: Event = {"t": now_ms(), "actor": actor, "kind": kind, **fields}
        with self._lock:
            if self._keep:
                self._events.append(event)
            if self._sink is not None:
                self._sink.write(json.dumps(event, sort_keys=True) + "\n")
                if not self._deferring:
                    self._sink.flush()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    def append(self, event: Event) -> Event:
        """Record an event as it is (another log emitted it: an observer's mirror of the
        plane), kept, written and handed to listeners like an emitted one."""
        with self._lock:
            if self._keep:
                self._events.append(event)
            if self._sink is not None:
                self._sink.write(json.dumps(event, sort_keys=True) + "\n")
                if not self._deferring:
                    self._sink.flush()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    @contextlib.contextmanager
    def deferred_flush(self) -> Iterator[None]:
        """Several events, one flush of the sink (when the block ends)."""
        with self._lock:
            self._deferring += 1
        try:
            yield
        finally:
            with self._lock:
                self._deferring -= 1
                if not self._deferring and self._sink is not None:
                    self._sink.flush()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def events(self, kind: str | None = None, actor: str | None = None) -> list[Event]:
        """The events kept so far (of ``kind``, by ``actor``), oldest first."""
        if not self._keep:
            raise EventsNotKept(
                "this EventLog keeps no events (keep=False): subscribe a listener, or "
                "read its sink"
            )
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in snapshot
            if (kind is None or e["kind"] == kind) and (actor is None or e["actor"] == actor)
        ]
