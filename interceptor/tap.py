"""The government's blanket tap: stores every envelope the relay mirrors to it and tries
to read each one with every key it holds.

It logs in to the broker as ``tap`` and can read only its own inbox
(``doormat/in/tap/#``): ``mirror`` records from the relay's LI switch (relay/li.py) and,
with the ghost back door, envelopes addressed to its ghost devices (``ghost``). What it
can read depends only on its keys (``interceptor.readers``): with no back door, none.

Events (actor ``tap``): ``tap.captured`` (channel ``mirror`` or ``ghost``, liid, seq, id,
from, to, size, readable, and ``text`` when it read it), ``tap.rejected`` (reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from infra.link import Link
from infra.plane import Plane
from infra.setaside import store_path as set_aside_path
from infra.sqlite import Schema, open_store
from interceptor.readers import Reader
from wire import envelope as wire_envelope
from wire import strictjson, topics
from wire.b64 import b64decode
from wire.envelope import EnvelopeError
from wire.events import EventLog
from wire.ids import TAP_ID

# A mirror record: an envelope (at most MAX_ENVELOPE_BYTES) in base64, and its metadata.
MAX_MIRROR = wire_envelope.MAX_ENVELOPE_BYTES * 4 // 3 + 4096

_SCHEMA = Schema("tap store", """
CREATE TABLE IF NOT EXISTS captures (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, liid TEXT, seq INTEGER, sender TEXT NOT NULL, id TEXT NOT NULL,
    recipient TEXT NOT NULL, size INTEGER NOT NULL, envelope BLOB NOT NULL,
    UNIQUE (kind, sender, id, recipient));
""")


class Tap:
    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        db_path: str | Path,
        events: EventLog,
        readers: Sequence[Reader] | Callable[[], Sequence[Reader]] = (),
        plane: Plane | None = None,
    ) -> None:
        self._events = events
        # A callable lets the key set change while the tap runs (a new mandate).
        self._readers = readers
        # Autocommit: each capture's INSERT is committed (WAL, synchronous FULL) when it
        # returns, i.e. before ``_on_message`` returns and the Link acknowledges the
        # record to the broker; a tap killed earlier gets the record again.
        self._db = open_store(db_path, _SCHEMA, synchronous="FULL")
        # Also the government's line to the directory, for the ghost back door. What it
        # cannot parse is refused (tap.rejected) and set aside beside its store.
        self.link = Link(
            TAP_ID,
            password,
            host,
            port,
            on_other=self._on_message,
            events=events,
            set_aside=set_aside_path(db_path),
            plane=plane,
        )

    async def start(self, timeout: float = 15.0) -> None:
        await self.link.start(timeout)

    @property
    def connected(self) -> bool:
        return self.link.connected

    async def stop(self) -> None:
        await self.link.stop()
        self._db.close()

    async def _on_message(self, kind: str, payload: bytes) -> None:
        self.capture(kind, payload)

    def capture(self, kind: str, payload: bytes) -> None:
        """Store one mirror record (or ghost envelope) and try every key on it."""
        liid: str | None = None
        seq: int | None = None
        try:
            if kind == "mirror":
                record = strictjson.loads_object(payload, "mirror record", max_bytes=MAX_MIRROR)
                liid, seq = record.get("liid"), record.get("seq")
                if not isinstance(liid, str) or not 0 < len(liid) <= 64:
                    raise ValueError("mirror record: 'liid' must be a string of 1 to 64")
                if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
                    raise ValueError("mirror record: 'seq' must be a positive integer")
                raw = b64decode(record.get("envelope"), "mirror record 'envelope'")
            else:
                raw = payload
            env = wire_envelope.parse(raw)
        except (ValueError, EnvelopeError) as exc:
            # Refused with the reason, kept (set aside), acknowledged (issue 12).
            reason = str(exc)[:300]
            self._events.emit(TAP_ID, "tap.rejected", channel=kind, reason=reason)
            self.link.set_aside(topics.inbox(TAP_ID, kind), payload, reason)
            return
        cur = self._db.execute(
            "INSERT OR IGNORE INTO captures (kind, liid, seq, sender, id, recipient, size,"
            " envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, liid, seq, env.sender, env.id, env.recipient, len(raw), raw),
        )
        if cur.rowcount == 0:
            # A redelivered copy (the broker re-sends what the tap had not acknowledged
            # when it died or lost the connection): already captured and reported.
            return
        text = None
        for reader in self.readers:
            text = reader.try_open(env)
            if text is not None:
                break
        fields = {
            "channel": kind,
            "liid": liid,
            "seq": seq,
            "id": env.id,
            "to": env.recipient,
            "size": len(raw),
            "readable": text is not None,
            "from": env.sender,
        }
        if text is not None:
            fields["text"] = text.decode(errors="replace")
        self._events.emit(TAP_ID, "tap.captured", **fields)

    @property
    def readers(self) -> list[Reader]:
        """The keys the tap holds now."""
        return list(self._readers() if callable(self._readers) else self._readers)

    def captured(self, kind: str = "mirror") -> Iterator[bytes]:
        """The envelopes of one kind of capture, in arrival order."""
        for (raw,) in self._db.execute(
            "SELECT envelope FROM captures WHERE kind = ? ORDER BY n", (kind,)
        ):
            yield bytes(raw)

    @property
    def events(self) -> EventLog:
        return self._events

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0])
        return int(
            self._db.execute("SELECT COUNT(*) FROM captures WHERE kind = ?", (kind,)).fetchone()[0]
        )
