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

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import aiomqtt

from interceptor.readers import Reader
from wire import envelope as wire_envelope
from wire import topics
from wire.envelope import EnvelopeError
from wire.events import EventLog

log = logging.getLogger(__name__)

TAP_ID = "tap"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, liid TEXT, seq INTEGER, sender TEXT NOT NULL, id TEXT NOT NULL,
    recipient TEXT NOT NULL, size INTEGER NOT NULL, envelope BLOB NOT NULL,
    UNIQUE (kind, sender, id, recipient));
"""


class Tap:
    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        db_path: str | Path,
        events: EventLog,
        readers: Sequence[Reader] | Callable[[], Sequence[Reader]] = (),
    ) -> None:
        self._host, self._port, self._password = host, port, password
        self._events = events
        # A callable lets the key set change while the tap runs (a new mandate).
        self._readers = readers
        self._db = sqlite3.connect(db_path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def start(self, timeout: float = 15.0) -> None:
        self._task = asyncio.create_task(self._run(), name="tap")
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(5):
                    await self._task
        self._db.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with aiomqtt.Client(
                    self._host,
                    self._port,
                    username=TAP_ID,
                    password=self._password,
                    identifier=TAP_ID,
                    clean_session=False,
                ) as client:
                    await client.subscribe(f"{topics.IN}/{TAP_ID}/#", qos=1)
                    self._ready.set()
                    reader = asyncio.create_task(self._read(client))
                    stop = asyncio.create_task(self._stop.wait())
                    await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    if not reader.done():
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
                        return
                    reader.result()
            except aiomqtt.MqttError as exc:
                log.info("tap: connection lost (%s); reconnecting", exc)
                await asyncio.sleep(0.2)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            kind = str(message.topic).rsplit("/", 1)[-1]
            self.capture(kind, bytes(message.payload))  # type: ignore[arg-type]

    def capture(self, kind: str, payload: bytes) -> None:
        """Store one mirror record (or ghost envelope) and try every key on it."""
        liid: str | None = None
        seq: int | None = None
        try:
            if kind == "mirror":
                record = json.loads(payload)
                liid, seq = str(record["liid"]), int(record["seq"])
                raw = base64.b64decode(record["envelope"], validate=True)
            else:
                raw = payload
            env = wire_envelope.parse(raw)
        except (ValueError, KeyError, TypeError, binascii.Error, EnvelopeError) as exc:
            self._events.emit(TAP_ID, "tap.rejected", channel=kind, reason=str(exc))
            return
        cur = self._db.execute(
            "INSERT OR IGNORE INTO captures (kind, liid, seq, sender, id, recipient, size,"
            " envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, liid, seq, env.sender, env.id, env.recipient, len(raw), raw),
        )
        if cur.rowcount == 0:
            return  # a redelivered copy: already captured
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

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0])
        return int(
            self._db.execute("SELECT COUNT(*) FROM captures WHERE kind = ?", (kind,)).fetchone()[0]
        )
