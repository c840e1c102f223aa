"""Structured events: every actor reports what it saw and did as one flat JSON object.

The exposure report, the dashboard and the exercises read these. An event is a dict
with at least ``t`` (milliseconds), ``actor`` and ``kind``; the rest are plain JSON
fields. No event ever carries a private key or a plaintext that its actor could not
read (a device's own plaintext is fine: the device can read it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

Event = dict[str, Any]
Listener = Callable[[Event], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventLog:
    """An in-memory, append-only list of events with listeners and an optional JSONL sink."""

    def __init__(self, sink: TextIO | None = None) -> None:
        self._events: list[Event] = []
        self._listeners: list[Listener] = []
        self._sink = sink
        self._lock = threading.Lock()

    def emit(self, actor: str, kind: str, **fields: Any) -> Event:
        event: Event = {"t": now_ms(), "actor": actor, "kind": kind, **fields}
        with self._lock:
            self._events.append(event)
            if self._sink is not None:
                self._sink.write(json.dumps(event, sort_keys=True) + "\n")
                self._sink.flush()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def events(self, kind: str | None = None, actor: str | None = None) -> list[Event]:
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in snapshot
            if (kind is None or e["kind"] == kind) and (actor is None or e["actor"] == actor)
        ]


class NullLog(EventLog):
    """An EventLog that keeps nothing (for tools that do not report)."""

    def emit(self, actor: str, kind: str, **fields: Any) -> Event:
        return {"t": now_ms(), "actor": actor, "kind": kind, **fields}
