"""A JSON-lines event log written by another process, read as it grows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any


class EventsFile:
    """A JSON-lines event log (``--events FILE``), read incrementally: each poll reads
    only what was appended since the last (a relay's log grows by thousands of lines;
    re-reading it on every poll would starve a broker in the test's process). A last
    line still being written waits for its newline; blank lines are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                event = json.loads(line)
                self.events.append(event)
                self.counts[event["kind"]] += 1

    def count(self, kind: str) -> int:
        self.poll()
        return self.counts[kind]

    def of(self, kind: str) -> list[dict[str, Any]]:
        self.poll()
        return [e for e in self.events if e["kind"] == kind]
