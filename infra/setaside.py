"""Messages a service could not process, set aside: kept (within bounds), never in the way.

A message that makes a handler raise for a reason of its own (not the disk, not the
network) would fail the same way on every redelivery. Left unacknowledged it comes back
after every reconnection and every restart, and everything behind it waits: one message
stops an account for good. So the consumer (``infra.link``, the relay's service loop)
*sets it aside* here, acknowledges it, and goes on with the next one.

The store is one SQLite table per service, beside its own store (``<store>.set-aside``;
``:memory:`` for a service without one). Each entry: the topic, the payload, its SHA-256,
its size, why it was set aside, when it was first and last seen, and how many times.
The same payload on the same topic again (a redelivery after a crash, a restart, a
repeated attack) only counts up ``seen``: it takes no more room.

Bounds, so that a flood of poison cannot fill the disk or the memory:

* at most ``max_entries`` entries and ``max_bytes`` bytes of payload are kept;
* beyond either cap a message is **not kept**: it is acknowledged and counted
  (``overflow``), and the caller's event says ``kept: false`` - the first messages of a
  flood stay as evidence, the rest are only counted;
* a reason is cut to ``MAX_REASON`` characters and a topic to ``MAX_TOPIC``.

``SetAside.put`` raises only what SQLite raises (``sqlite3.OperationalError`` for a
locked or full disk): the caller then treats the message as a transient failure and does
not acknowledge it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from wire.events import EventLog

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000
# At most this many service.set_aside events a second per service (a flood of poison must
# not flood the event log, which the one-process system keeps in memory).
EVENTS_PER_SECOND = 10
MAX_BYTES = 32 * 1024 * 1024
MAX_REASON = 500
MAX_TOPIC = 300

_SCHEMA = """
CREATE TABLE IF NOT EXISTS set_aside (
    topic TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    PRIMARY KEY (topic, sha256)
);
CREATE TABLE IF NOT EXISTS set_aside_overflow (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Outcome:
    """What ``put`` did with one message."""

    sha256: str
    kept: bool  # stored (or already stored); False: over a cap, only counted
    seen: int  # times this payload was set aside on this topic (0 if not kept)
    overflow: int  # messages not kept so far, in total


@dataclass(frozen=True)
class Entry:
    topic: str
    sha256: str
    size: int
    payload: bytes
    reason: str
    first_ms: int
    last_ms: int
    seen: int


def store_path(beside: str | Path) -> Path:
    """Where the set-aside store of a service whose own store is ``beside`` lives (in
    memory for a store in memory)."""
    return Path(":memory:" if str(beside) == ":memory:" else f"{beside}.set-aside")


class SetAside:
    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.path = str(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            entries, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM set_aside"
            ).fetchone()
            row = self._db.execute("SELECT count FROM set_aside_overflow").fetchone()
        except BaseException:
            self._db.close()
            raise
        self._entries = int(entries)
        self._bytes = int(size)
        self._overflow = int(row[0]) if row else 0
        self._window = 0.0  # start of the current second of events
        self._in_window = 0
        self._suppressed = 0

    def put(self, topic: str, payload: bytes, reason: str) -> Outcome:
        """Keep ``payload`` (or count it, over a cap); see the module doc."""
        topic = topic[:MAX_TOPIC]
        reason = reason[:MAX_REASON]
        digest = hashlib.sha256(payload).hexdigest()
        now = time.time_ns() // 1_000_000
        row = self._db.execute(
            "UPDATE set_aside SET seen = seen + 1, last_ms = ? WHERE topic = ? AND sha256 = ?"
            " RETURNING seen",
            (now, topic, digest),
        ).fetchone()
        if row is not None:
            return Outcome(digest, True, int(row[0]), self._overflow)
        if self._entries >= self.max_entries or self._bytes + len(payload) > self.max_bytes:
            self._db.execute(
                "INSERT INTO set_aside_overflow (id, count, last_ms) VALUES (1, 1, ?)"
                " ON CONFLICT (id) DO UPDATE SET count = count + 1, last_ms = excluded.last_ms",
                (now,),
            )
            self._overflow += 1
            return Outcome(digest, False, 0, self._overflow)
        self._db.execute(
            "INSERT INTO set_aside VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            (topic, digest, len(payload), payload, reason, now, now),
        )
        self._entries += 1
        self._bytes += len(payload)
        return Outcome(digest, True, 1, self._overflow)

    def set_aside(
        self,
        owner: str,
        topic: str,
        payload: bytes,
        reason: str,
        events: EventLog | None = None,
    ) -> Outcome:
        """``put``, then say so: a warning in the log and one ``service.set_aside`` event
        (actor ``owner``: the account, the topic, the size, the SHA-256, the reason,
        whether it was kept, how often seen), at most ``EVENTS_PER_SECOND`` a second -
        the others are counted in the next event's ``suppressed``. Raises only what
        ``put`` raises."""
        outcome = self.put(topic, payload, reason)
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        if self._in_window >= EVENTS_PER_SECOND:
            self._suppressed += 1
            return outcome
        self._in_window += 1
        suppressed, self._suppressed = self._suppressed, 0
        log.warning(
            "%s: set aside a message on %s (%d bytes): %s%s",
            owner,
            topic[:200],
            len(payload),
            reason,
            "" if outcome.kept else " (set-aside store full: counted, not kept)",
        )
        if events is not None:
            events.emit(
                owner,
                "service.set_aside",
                account=owner,
                topic=topic[:MAX_TOPIC],
                size=len(payload),
                sha256=outcome.sha256,
                reason=reason[:MAX_REASON],
                kept=outcome.kept,
                seen=outcome.seen,
                overflow=outcome.overflow,
                suppressed=suppressed,
            )
        return outcome

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def overflow(self) -> int:
        return self._overflow

    def kept(self) -> list[Entry]:
        """Every entry kept, oldest first."""
        rows = self._db.execute(
            "SELECT topic, sha256, size, payload, reason, first_ms, last_ms, seen"
            " FROM set_aside ORDER BY first_ms, rowid"
        ).fetchall()
        return [Entry(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def close(self) -> None:
        self._db.close()


__all__ = [
    "EVENTS_PER_SECOND",
    "MAX_BYTES",
    "MAX_ENTRIES",
    "Entry",
    "Outcome",
    "SetAside",
    "store_path",
]
