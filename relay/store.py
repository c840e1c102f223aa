"""The relay's durable store: envelopes, de-duplication and capture, on the one SQLite
connection that the key directory's tables (``Store.directory``) share.

Plain synchronous SQLite on one connection, no asyncio: the router calls it inline and
each method is one transaction. "Committed" means "survives the relay process being
killed": the service acknowledges a message to the broker only after the method that
stored it has returned.

Durability choice (see docs/relay.md): WAL journal with ``synchronous=NORMAL`` by
default. In WAL mode a COMMIT has written the transaction to the WAL file (``write()``
into the OS page cache) before it returns, so a SIGKILL of the relay loses nothing that
was committed; what NORMAL gives up is durability against an OS crash or power loss
(the last transactions before the next fsync may roll back). That is the failure model
of this lab (the process dies, the machine does not), and FULL (an fsync on every
commit) costs an order of magnitude in throughput. Pass ``synchronous="FULL"`` to get
power-loss durability.

Envelopes live in one table, ``envelopes``: every envelope the relay ever accepted, keyed
``(sender, msg_id, recipient)`` with a UNIQUE constraint, in arrival order (``seq``).
One row serves three purposes:

* pending delivery: ``acked_ms IS NULL`` (partial indexes keep this cheap);
* de-duplication: the row outlives delivery, so a replay after the ack is still refused
  (the INSERT hits the UNIQUE key; this is race-free even with several relay workers
  sharing one database);
* capture: what the operator holds. With ``keep_captured=True`` (the lab default: it is
  the honest worst case of an operator that keeps everything) the raw bytes stay after
  the ack; with False they are cleared on ack and only the de-dup key remains.

Retention is bounded by :meth:`Store.prune`: acknowledged rows older than
``retention_ms`` or beyond the newest ``retention_rows`` rows are deleted. Pending rows
are never pruned. A replay of a pruned key would be accepted again; the recipient
device still refuses it, because devices de-duplicate on ``(from, id)`` themselves.

The directory's tables (devices, prekeys, the key-transparency log) are in the same file
and written through the same connection and transactions, by ``Store.directory``
(``relay.directory_store.DirectoryStore``): a ``batch()`` commits envelope and directory
writes together. The relay's checkpoint signing key is a file of its own, beside the
database (``infra.files.load_or_create_signer``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infra.sqlite import Schema, Transactions, connect, exists, open_store
from relay.directory_store import TABLES as DIRECTORY_TABLES
from relay.directory_store import DirectoryStore

# 2: adds kt_log (key transparency). A version-1 store is upgraded in place: the new
# table is created and the relay logs the devices that had already published.
SCHEMA_VERSION = 2
DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_RETENTION_MS = 30 * DAY_MS
DEFAULT_RETENTION_ROWS = 1_000_000

TABLES = """
CREATE TABLE IF NOT EXISTS envelopes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
    sender      TEXT    NOT NULL,
    msg_id      TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    received_ms INTEGER NOT NULL,
    size        INTEGER NOT NULL,                   -- bytes of the raw envelope
    raw         BLOB,                               -- NULL once acked if not kept
    acked_ms    INTEGER,                            -- NULL while pending
    UNIQUE (sender, msg_id, recipient)
);
CREATE INDEX IF NOT EXISTS envelopes_pending_by_recipient
    ON envelopes (recipient, seq) WHERE acked_ms IS NULL;
CREATE INDEX IF NOT EXISTS envelopes_pending
    ON envelopes (seq) WHERE acked_ms IS NULL;
"""


SCHEMA = Schema("relay store", TABLES + DIRECTORY_TABLES, SCHEMA_VERSION, upgrades_from=(0, 1))


@dataclass(frozen=True)
class Pending:
    seq: int
    sender: str
    msg_id: str
    recipient: str
    raw: bytes


@dataclass(frozen=True)
class Captured:
    """One envelope as the operator holds it (raw is None if it was not kept)."""

    seq: int
    sender: str
    msg_id: str
    recipient: str
    received_ms: int
    size: int
    raw: bytes | None
    acked_ms: int | None


class Store:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        keep_captured: bool = True,
        retention_ms: int = DEFAULT_RETENTION_MS,
        retention_rows: int = DEFAULT_RETENTION_ROWS,
        readonly: bool = False,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = str(path)
        self.keep_captured = keep_captured
        self.retention_ms = retention_ms
        self.retention_rows = retention_rows
        if readonly:
            # A reader beside a running relay (or after it stopped): WAL lets it read
            # committed data without blocking the writer. No schema work, no writes.
            self._db = connect(path, readonly=True)
        else:
            # check_same_thread=False lets the asyncio service call us from the loop
            # thread after creating us elsewhere; we are still used by one caller. The
            # busy timeout: several relay workers may share the file one day (shared
            # subscriptions): wait for the writer lock instead of failing at once.
            self._db = open_store(path, SCHEMA, synchronous=synchronous, any_thread=True)
        # Every write, envelope or directory, goes through these transactions.
        self._transactions = Transactions(self._db)
        self.directory = DirectoryStore(self._db, self._transactions)

    def close(self) -> None:
        self._db.close()

    def _tx(self, *, single: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        """One transaction; inside batch(), a savepoint (``infra.sqlite.Transactions``)."""
        return self._transactions.transaction(single=single)

    def batch(self) -> AbstractContextManager[None]:
        """Group commit: every method called inside (of the store and of its directory)
        is one savepoint of a single transaction, committed when the block ends (rolled
        back whole if it raises). Nothing done inside is durable, or visible to other
        connections, before the block ends: acknowledge inputs only after it. Not
        reentrant."""
        return self._transactions.batch()

    # -- envelopes ---------------------------------------------------------------

    def accept(
        self,
        sender: str,
        msg_id: str,
        recipient: str,
        raw: bytes,
        now_ms: int,
        *,
        delivered: bool = False,
    ) -> int | None:
        """Store a new envelope. Returns its seq, or None if (sender, id, recipient) was
        already accepted (pending or delivered): a duplicate, nothing stored.

        ``delivered=True`` stores it as already acknowledged, in the same transaction
        (envelopes to a ghost device: handed to the tap at once, never pending)."""
        acked = now_ms if delivered else None
        kept = raw if (self.keep_captured or not delivered) else None
        with self._tx(single=True) as db:
            cur = db.execute(
                "INSERT INTO envelopes"
                " (sender, msg_id, recipient, received_ms, size, raw, acked_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sender, msg_id, recipient) DO NOTHING",
                (sender, msg_id, recipient, now_ms, len(raw), kept, acked),
            )
            if cur.rowcount == 0:
                return None
            seq = cur.lastrowid
        assert seq is not None
        return seq

    def ack(self, sender: str, msg_id: str, recipient: str, now_ms: int) -> bool:
        """The recipient processed the envelope: it is no longer pending. Returns False
        if it was not pending (unknown, or already acknowledged)."""
        raw_after = "raw" if self.keep_captured else "NULL"
        with self._tx(single=True) as db:
            cur = db.execute(
                f"UPDATE envelopes SET acked_ms = ?, raw = {raw_after}"
                " WHERE sender = ? AND msg_id = ? AND recipient = ? AND acked_ms IS NULL",
                (now_ms, sender, msg_id, recipient),
            )
            return cur.rowcount == 1

    def pending(self, recipient: str | None = None) -> list[Pending]:
        """Envelopes not yet acknowledged, in arrival order."""
        if recipient is None:
            rows = self._db.execute(
                "SELECT seq, sender, msg_id, recipient, raw FROM envelopes"
                " WHERE acked_ms IS NULL ORDER BY seq"
            )
        else:
            rows = self._db.execute(
                "SELECT seq, sender, msg_id, recipient, raw FROM envelopes"
                " WHERE recipient = ? AND acked_ms IS NULL ORDER BY seq",
                (recipient,),
            )
        return [Pending(s, f, i, t, bytes(r)) for s, f, i, t, r in rows]

    def pending_count(self, recipient: str | None = None) -> int:
        if recipient is None:
            row = self._db.execute("SELECT count(*) FROM envelopes WHERE acked_ms IS NULL")
        else:
            row = self._db.execute(
                "SELECT count(*) FROM envelopes WHERE recipient = ? AND acked_ms IS NULL",
                (recipient,),
            )
        count: int = row.fetchone()[0]
        return count

    def seen(self, sender: str, msg_id: str, recipient: str) -> bool:
        return exists(
            self._db,
            "SELECT 1 FROM envelopes WHERE sender = ? AND msg_id = ? AND recipient = ?",
            (sender, msg_id, recipient),
        )

    def captured(self, after_seq: int = 0, batch: int = 500) -> Iterator[Captured]:
        """Everything the relay accepted and still retains, in arrival order: the
        operator's capture. Reads in batches so a long iteration holds no read
        transaction open across the caller's work."""
        last = after_seq
        while True:
            rows = self._db.execute(
                "SELECT seq, sender, msg_id, recipient, received_ms, size, raw, acked_ms"
                " FROM envelopes WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            for seq, sender, msg_id, recipient, received, size, raw, acked in rows:
                yield Captured(
                    seq,
                    sender,
                    msg_id,
                    recipient,
                    received,
                    size,
                    None if raw is None else bytes(raw),
                    acked,
                )
                last = seq

    def prune(self, now_ms: int) -> int:
        """Apply the retention bounds to acknowledged envelopes. Returns rows deleted."""
        with self._tx() as db:
            deleted = db.execute(
                "DELETE FROM envelopes WHERE acked_ms IS NOT NULL AND received_ms < ?",
                (now_ms - self.retention_ms,),
            ).rowcount
            total: int = db.execute("SELECT count(*) FROM envelopes").fetchone()[0]
            excess = total - self.retention_rows
            if excess > 0:
                deleted += db.execute(
                    "DELETE FROM envelopes WHERE seq IN (SELECT seq FROM envelopes"
                    " WHERE acked_ms IS NOT NULL ORDER BY seq LIMIT ?)",
                    (excess,),
                ).rowcount
        return deleted
