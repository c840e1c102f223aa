"""The relay's durable store: envelopes, de-duplication, capture, and the key directory.

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

The directory: ``devices`` (device -> user, enterprise, published identity set once,
current signed prekey), ``one_time_prekeys`` (each handed out once: deleted in the same
transaction that hands it out) and ``spent_prekeys`` (the ids already handed out, so a
client re-publishing an old batch cannot make the relay hand the same key out twice).
Key material is opaque base64 text to the relay.

Key transparency (docs/key-transparency.md): ``kt_log`` holds the directory's Merkle log,
one row per entry, in leaf order. A device's first ``publish`` (the one that sets its
identity) appends its ``add`` entry *in the same transaction*, so the directory never
binds a key the log does not show. ``relay.kt.DirectoryLog`` rebuilds the tree from these
rows. Devices enrolled by the tap (the ``ghost`` back door) are ordinary rows of
``devices`` whose ``enterprise`` is ``tap``; they are left out of device lists and
bundles unless asked for (``ghosts=True``). ``load_or_create_signer`` keeps the relay's
checkpoint *signing* key in a file next to the database (mode 0600).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from relay.kt import LogRow
from wire.ids import TAP_ID
from wire.kt import entry_bytes
from wire.note import Signer

# 2: adds kt_log (key transparency). A version-1 store is upgraded in place: the new
# table is created and the relay logs the devices that had already published.
SCHEMA_VERSION = 2
DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_RETENTION_MS = 30 * DAY_MS
DEFAULT_RETENTION_ROWS = 1_000_000

_SCHEMA = """
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

CREATE TABLE IF NOT EXISTS devices (
    device       TEXT PRIMARY KEY,
    user         TEXT    NOT NULL,
    enterprise   TEXT    NOT NULL,
    enrolled_ms  INTEGER NOT NULL,
    identity     TEXT,              -- base64, set once
    spk_id       INTEGER,           -- current signed prekey
    spk_key      TEXT,
    spk_sig      TEXT,
    published_ms INTEGER
);
CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user);

CREATE TABLE IF NOT EXISTS one_time_prekeys (
    n      INTEGER PRIMARY KEY AUTOINCREMENT,  -- hand out oldest first
    device TEXT    NOT NULL,
    key_id INTEGER NOT NULL,
    key    TEXT    NOT NULL,
    UNIQUE (device, key_id)
);
CREATE INDEX IF NOT EXISTS one_time_prekeys_by_device ON one_time_prekeys (device, n);

CREATE TABLE IF NOT EXISTS spent_prekeys (
    device   TEXT    NOT NULL,
    key_id   INTEGER NOT NULL,
    spent_ms INTEGER NOT NULL,
    PRIMARY KEY (device, key_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS kt_log (
    idx    INTEGER PRIMARY KEY,     -- leaf index in the directory's Merkle log, from 0
    user   TEXT    NOT NULL,
    device TEXT    NOT NULL,
    op     TEXT    NOT NULL,        -- add | revoke
    entry  BLOB    NOT NULL,        -- canonical JSON: exactly the leaf's data
    ghost  INTEGER NOT NULL         -- 1: a ghost device (enrolled by the tap)
);
CREATE INDEX IF NOT EXISTS kt_log_by_user ON kt_log (user, idx);
CREATE INDEX IF NOT EXISTS kt_log_by_device ON kt_log (device, idx);
"""


class DirectoryError(ValueError):
    """A directory write the relay refuses (the message says why)."""


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


@dataclass(frozen=True)
class SignedPrekey:
    id: int
    key: str  # base64, opaque
    sig: str  # base64, opaque


@dataclass(frozen=True)
class OneTimePrekey:
    id: int
    key: str  # base64, opaque


@dataclass(frozen=True)
class DeviceRecord:
    device: str
    user: str
    enterprise: str
    enrolled_ms: int
    identity: str | None
    signed_prekey: SignedPrekey | None
    published_ms: int | None


@dataclass(frozen=True)
class Bundle:
    device: str
    identity: str
    signed_prekey: SignedPrekey
    one_time_prekey: OneTimePrekey | None
    remaining: int  # one-time prekeys this device still has at the relay


@dataclass(frozen=True)
class PublishResult:
    held: int  # one-time prekeys the relay now holds for the device
    added: int  # of the offered ones, how many were new
    identity_new: bool  # the identity was set by this request
    log_index: int | None = None  # the key-transparency entry this request appended


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
        self._batch = False  # inside batch(): methods use savepoints
        if readonly:
            # A reader beside a running relay (or after it stopped): WAL lets it read
            # committed data without blocking the writer. No schema work, no writes.
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=5000")
            return
        # isolation_level=None: no implicit transactions; every write goes through
        # _tx() with an explicit BEGIN IMMEDIATE, so what is one transaction is visible
        # in the code. check_same_thread=False lets the asyncio service call us from
        # the loop thread after creating us elsewhere; we are still used by one caller.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        # Several relay workers may share the file one day (shared subscriptions):
        # wait for the writer lock instead of failing at once.
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._tx():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(
                    f"{self.path}: store schema version {version}, expected {SCHEMA_VERSION}"
                )
            # Statement by statement: executescript() would COMMIT our transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self, *, single: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; inside batch(), a savepoint. ``single``: the block runs one
        statement, which SQLite already applies all or nothing, so inside a batch it
        needs no savepoint of its own."""
        if self._batch and single:
            yield self._db
            return
        if self._batch:
            # Inside batch(): a savepoint, so that a method that fails (a refused
            # publish, say) still leaves nothing behind, while the commit is shared.
            self._db.execute("SAVEPOINT tx")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO tx")
                self._db.execute("RELEASE tx")
                raise
            self._db.execute("RELEASE tx")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: every method called inside is one savepoint of a single
        transaction, committed when the block ends (rolled back whole if it raises).
        Nothing done inside is durable, or visible to other connections, before the
        block ends: acknowledge inputs only after it. Not reentrant."""
        if self._batch:
            raise RuntimeError("Store.batch() is not reentrant")
        self._db.execute("BEGIN IMMEDIATE")
        self._batch = True
        try:
            yield
        except BaseException:
            self._batch = False
            self._db.execute("ROLLBACK")
            raise
        self._batch = False
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:  # e.g. SQLITE_BUSY leaves it open
                self._db.execute("ROLLBACK")
            raise

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
        row = self._db.execute(
            "SELECT 1 FROM envelopes WHERE sender = ? AND msg_id = ? AND recipient = ?",
            (sender, msg_id, recipient),
        ).fetchone()
        return row is not None

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

    # -- directory ----------------------------------------------------------------

    def enrol(self, device: str, user: str, enterprise: str, now_ms: int) -> bool:
        """Add a device to the directory. Returns False if it was already enrolled
        (idempotent: an enterprise server may repeat its enrolment). Raises
        DirectoryError if the device is enrolled under another user."""
        with self._tx() as db:
            row = db.execute(
                "SELECT user, enterprise FROM devices WHERE device = ?", (device,)
            ).fetchone()
            if row is not None:
                if tuple(row) != (user, enterprise):
                    raise DirectoryError(f"device {device} is enrolled to another user")
                return False
            db.execute(
                "INSERT INTO devices (device, user, enterprise, enrolled_ms) VALUES (?, ?, ?, ?)",
                (device, user, enterprise, now_ms),
            )
            return True

    def device(self, device: str) -> DeviceRecord | None:
        row = self._db.execute(
            "SELECT device, user, enterprise, enrolled_ms, identity, spk_id, spk_key, spk_sig,"
            " published_ms FROM devices WHERE device = ?",
            (device,),
        ).fetchone()
        if row is None:
            return None
        dev, user, ent, enrolled, identity, spk_id, spk_key, spk_sig, published = row
        spk = None if spk_id is None else SignedPrekey(spk_id, spk_key, spk_sig)
        return DeviceRecord(dev, user, ent, enrolled, identity, spk, published)

    def is_enrolled(self, device: str) -> bool:
        row = self._db.execute("SELECT 1 FROM devices WHERE device = ?", (device,)).fetchone()
        return row is not None

    def enrolled_by(self, device: str) -> str | None:
        """Who enrolled the device: its enterprise, ``tap`` for a ghost device, or None
        if it is not enrolled."""
        row = self._db.execute(
            "SELECT enterprise FROM devices WHERE device = ?", (device,)
        ).fetchone()
        return None if row is None else str(row[0])

    def has_user(self, user: str) -> bool:
        """The user has at least one device enrolled by its enterprise."""
        row = self._db.execute(
            "SELECT 1 FROM devices WHERE user = ? AND enterprise != ? LIMIT 1", (user, TAP_ID)
        ).fetchone()
        return row is not None

    def publish(
        self,
        device: str,
        identity: str,
        signed_prekey: SignedPrekey | None,
        one_time_prekeys: list[OneTimePrekey],
        now_ms: int,
        *,
        max_held: int,
    ) -> PublishResult:
        """Publish a device's keys, all or nothing. The identity is set once: a
        different one is refused. A signed prekey replaces the current one (it is
        required on the first publish). One-time prekeys are added unless their id is
        already held or was already handed out."""
        with self._tx() as db:
            row = db.execute(
                "SELECT identity, spk_id, user, enterprise FROM devices WHERE device = ?",
                (device,),
            ).fetchone()
            if row is None:
                raise DirectoryError(f"device {device} is not enrolled")
            current_identity, current_spk, user, enterprise = row
            if current_identity is not None and current_identity != identity:
                raise DirectoryError("identity already published with a different key")
            if signed_prekey is None and current_spk is None:
                raise DirectoryError("first publish needs a signed_prekey")
            identity_new = current_identity is None
            log_index = None
            if identity_new:
                # The key binding and its log entry commit together (key transparency).
                log_index = self._kt_append(
                    db, user, device, identity, now_ms, ghost=enterprise == TAP_ID
                )
            if signed_prekey is not None:
                db.execute(
                    "UPDATE devices SET identity = ?, spk_id = ?, spk_key = ?, spk_sig = ?,"
                    " published_ms = ? WHERE device = ?",
                    (
                        identity,
                        signed_prekey.id,
                        signed_prekey.key,
                        signed_prekey.sig,
                        now_ms,
                        device,
                    ),
                )
            else:
                db.execute(
                    "UPDATE devices SET identity = ?, published_ms = ? WHERE device = ?",
                    (identity, now_ms, device),
                )
            added = 0
            for otpk in one_time_prekeys:
                spent = db.execute(
                    "SELECT 1 FROM spent_prekeys WHERE device = ? AND key_id = ?",
                    (device, otpk.id),
                ).fetchone()
                if spent is not None:
                    continue
                added += db.execute(
                    "INSERT INTO one_time_prekeys (device, key_id, key) VALUES (?, ?, ?)"
                    " ON CONFLICT (device, key_id) DO NOTHING",
                    (device, otpk.id, otpk.key),
                ).rowcount
            held = self._otpk_count(db, device)
            if held > max_held:
                # Raising rolls the whole request back: nothing of it is stored.
                raise DirectoryError(
                    f"would hold {held} one-time prekeys, over the limit of {max_held}"
                )
            return PublishResult(
                held=held, added=added, identity_new=identity_new, log_index=log_index
            )

    def devices_of(
        self, user: str, *, published_only: bool = True, ghosts: bool = False
    ) -> list[str]:
        """The user's enrolled devices (by default only those that published keys, and
        no ghost device unless ``ghosts``)."""
        query = "SELECT device FROM devices WHERE user = ?"
        params: list[str] = [user]
        if published_only:
            query += " AND identity IS NOT NULL AND spk_id IS NOT NULL"
        if not ghosts:
            query += " AND enterprise != ?"
            params.append(TAP_ID)
        rows = self._db.execute(query + " ORDER BY device", params)
        return [r[0] for r in rows]

    def take_bundles(
        self,
        user: str,
        now_ms: int,
        *,
        exclude: str | None = None,
        only: Collection[str] | None = None,
        ghosts: bool = False,
    ) -> list[Bundle]:
        """A prekey bundle for every published device of ``user`` (except ``exclude``;
        if ``only`` is given, just those devices), each with one one-time prekey if any
        is left; ghost devices only with ``ghosts``. The one-time prekeys handed out
        are deleted (and recorded as spent) in this same transaction, so each is handed
        out once even if the relay dies right after."""
        bundles: list[Bundle] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT device, identity, spk_id, spk_key, spk_sig FROM devices"
                " WHERE user = ? AND identity IS NOT NULL AND spk_id IS NOT NULL"
                + ("" if ghosts else " AND enterprise != ?")
                + " ORDER BY device",
                (user,) if ghosts else (user, TAP_ID),
            ).fetchall()
            for device, identity, spk_id, spk_key, spk_sig in rows:
                if device == exclude or (only is not None and device not in only):
                    continue
                otpk_row = db.execute(
                    "SELECT n, key_id, key FROM one_time_prekeys WHERE device = ?"
                    " ORDER BY n LIMIT 1",
                    (device,),
                ).fetchone()
                otpk: OneTimePrekey | None = None
                if otpk_row is not None:
                    n, key_id, key = otpk_row
                    db.execute("DELETE FROM one_time_prekeys WHERE n = ?", (n,))
                    db.execute(
                        "INSERT INTO spent_prekeys (device, key_id, spent_ms) VALUES (?, ?, ?)"
                        " ON CONFLICT DO NOTHING",
                        (device, key_id, now_ms),
                    )
                    otpk = OneTimePrekey(key_id, key)
                bundles.append(
                    Bundle(
                        device=device,
                        identity=identity,
                        signed_prekey=SignedPrekey(spk_id, spk_key, spk_sig),
                        one_time_prekey=otpk,
                        remaining=self._otpk_count(db, device),
                    )
                )
        return bundles

    def otpk_count(self, device: str) -> int:
        return self._otpk_count(self._db, device)

    @staticmethod
    def _otpk_count(db: sqlite3.Connection, device: str) -> int:
        count: int = db.execute(
            "SELECT count(*) FROM one_time_prekeys WHERE device = ?", (device,)
        ).fetchone()[0]
        return count

    # -- key transparency ---------------------------------------------------------

    @staticmethod
    def _kt_append(
        db: sqlite3.Connection, user: str, device: str, identity: str, now_ms: int, *, ghost: bool
    ) -> int:
        idx: int = db.execute("SELECT coalesce(max(idx) + 1, 0) FROM kt_log").fetchone()[0]
        db.execute(
            "INSERT INTO kt_log (idx, user, device, op, entry, ghost) VALUES (?, ?, ?, ?, ?, ?)",
            (idx, user, device, "add", entry_bytes(user, device, identity, "add", now_ms), ghost),
        )
        return idx

    def kt_backfill(self) -> list[int]:
        """Log every device that published an identity but has no log entry (a store
        written before key transparency existed), in the order they published, with
        their publication time. Returns the new entries' indices."""
        added = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT device, user, enterprise, identity, published_ms FROM devices"
                " WHERE identity IS NOT NULL"
                " AND device NOT IN (SELECT device FROM kt_log)"
                " ORDER BY published_ms, device"
            ).fetchall()
            for device, user, enterprise, identity, published in rows:
                added.append(
                    self._kt_append(
                        db, user, device, identity, published or 0, ghost=enterprise == TAP_ID
                    )
                )
        return added

    def kt_size(self) -> int:
        size: int = self._db.execute("SELECT count(*) FROM kt_log").fetchone()[0]
        return size

    def kt_rows(self, start: int = 0) -> list[LogRow]:
        """Log rows from leaf ``start`` on, in leaf order."""
        rows = self._db.execute(
            "SELECT idx, user, device, op, entry, ghost FROM kt_log WHERE idx >= ? ORDER BY idx",
            (start,),
        )
        return [_log_row(r) for r in rows]

    def kt_latest(self, devices: Collection[str]) -> list[LogRow]:
        """The latest log row of each of ``devices`` that has one, in the given order."""
        found = []
        for device in dict.fromkeys(devices):
            row = self._db.execute(
                "SELECT idx, user, device, op, entry, ghost FROM kt_log WHERE device = ?"
                " ORDER BY idx DESC LIMIT 1",
                (device,),
            ).fetchone()
            if row is not None:
                found.append(_log_row(row))
        return found

    def kt_rows_of_user(self, user: str, *, ghosts: bool = True, limit: int = -1) -> list[LogRow]:
        """Every log row about ``user`` (ghost devices' too unless ``ghosts`` is False),
        in leaf order; at most ``limit`` (-1: all)."""
        query = "SELECT idx, user, device, op, entry, ghost FROM kt_log WHERE user = ?"
        if not ghosts:
            query += " AND ghost = 0"
        rows = self._db.execute(query + " ORDER BY idx LIMIT ?", (user, limit))
        return [_log_row(r) for r in rows]


def _log_row(row: tuple[int, str, str, str, bytes, int]) -> LogRow:
    idx, user, device, op, entry, ghost = row
    return LogRow(idx, user, device, op, bytes(entry), bool(ghost))


def load_or_create_signer(path: str | Path, name: str) -> Signer:
    """The relay's checkpoint signing key (an Ed25519 *signing* key: it decrypts
    nothing). Read from ``path`` (the signer key's text form, ``PRIVATE+KEY+...``) or,
    if there is no such file, generated and written there with mode 0600. The verifier
    key, which clients pin, is (re)written beside it as ``<path>.vkey`` (mode 0644).

    Raises ValueError for a file that holds no valid key of that name, OSError for a
    file that cannot be read or written."""
    p = Path(path)
    try:
        fd: int | None = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = None
    if fd is None:
        text = p.read_text(encoding="utf-8").strip()
        try:
            signer = Signer.from_skey(text)
        except ValueError as exc:
            raise ValueError(f"{p}: not a signer key: {exc}") from None
        if signer.name != name:
            raise ValueError(f"{p}: the key is named {signer.name!r}, expected {name!r}")
    else:
        signer = Signer.generate(name)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(signer.skey() + "\n")
            f.flush()
            os.fsync(f.fileno())
    vkey_path = p.with_name(p.name + ".vkey")
    vkey = signer.verifier().vkey() + "\n"
    if not vkey_path.exists() or vkey_path.read_text(encoding="utf-8") != vkey:
        tmp = vkey_path.with_name(vkey_path.name + ".tmp")
        tmp.write_text(vkey, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, vkey_path)
    return signer
