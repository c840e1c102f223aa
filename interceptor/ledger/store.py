"""The audit ledger on disk: one SQLite file, written so that "log before act" holds.

``Ledger.append`` returns only after the entry is committed to SQLite in WAL mode with
``synchronous=FULL``: the WAL is fsynced at every commit, so an entry whose receipt the
interceptor holds survives the process being killed (and, as far as the disk honours
fsync, a power cut). The interceptor appends, and only then provisions a task or
delivers a record; if ``append`` raises, nothing was logged and it must not act.

The file holds three tables::

    meta(key TEXT PRIMARY KEY, value TEXT)           -- format, origin
    entries(idx INTEGER PRIMARY KEY, entry BLOB, leaf_hash BLOB)
    checkpoints(id INTEGER PRIMARY KEY, size INTEGER, note BLOB)

and ``PRAGMA application_id`` = 0x646d6c67 ("dmlg"), so a foreign SQLite file is told
apart from a damaged ledger. Opening reads only the leaf hashes (to rebuild the Merkle
tree) and checks that the indices run 0..n-1; re-hashing every entry and checking every
checkpoint is ``verify``'s job, so that opening stays fast.

``verify(path, keys)`` and ``report(path)`` open the file read-only and never write.
The logic of both lives in the package's sans-I/O modules (``interceptor.ledger.verifier``
and ``interceptor.ledger.transparency``); this module only reads rows and turns SQLite's
failures into :class:`LedgerFileError` or located problems.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from infra.sqlite import Schema, StoreFileError, connect, prepare, transaction
from interceptor.ledger.entries import Entry, parse_entry
from interceptor.ledger.errors import EntryError, LedgerError
from interceptor.ledger.log import (
    DEFAULT_ORIGIN,
    ConsistencyProof,
    InclusionProof,
    LedgerCore,
    Receipt,
    check_origin,
)
from interceptor.ledger.transparency import transparency_report
from interceptor.ledger.verifier import LogVerifier, VerifyReport, peek_checkpoint
from wire.note import NoteError, Signer, Verifier
from wire.witness import CosignatureVerifier, is_cosignature_vkey

#: The SQLite file's format tag (stored in its meta table).
FORMAT = "doormat-ledger/1"
APPLICATION_ID = 0x646D6C67  # "dmlg"
_BUSY_TIMEOUT_S = 10.0

_SCHEMA = Schema(
    "doormat ledger",
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL,"
        " leaf_hash BLOB NOT NULL)",
        "CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, size INTEGER NOT NULL,"
        " note BLOB NOT NULL)",
    ),
    application_id=APPLICATION_ID,
    only_if_empty=True,  # a file with tables is a ledger already, or refused
)


class LedgerFileError(LedgerError):
    """The file cannot be used as a ledger: missing, not SQLite, not a doormat ledger,
    or damaged beyond reading."""


def _decode_text(raw: bytes) -> str:
    # A tampered TEXT value may not be UTF-8; the default text factory would raise
    # mid-query. surrogateescape keeps every byte, so the verifier still sees them.
    return raw.decode("utf-8", "surrogateescape")


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    # WAL: readers (verify, report) run beside the writer; FULL: the WAL is fsynced at
    # every commit, which is what makes append durable on return.
    if readonly:
        conn = connect(path, readonly=True, busy_timeout=_BUSY_TIMEOUT_S, any_thread=True)
    else:
        conn = connect(path, synchronous="FULL", busy_timeout=_BUSY_TIMEOUT_S, any_thread=True)
    conn.text_factory = _decode_text
    return conn


def _file_error(path: Path, exc: sqlite3.Error) -> LedgerFileError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, StoreFileError):  # another kind of file, a newer version, no WAL
        return LedgerFileError(message)
    if "not a database" in message:
        return LedgerFileError(f"{path} is not a ledger: file is not a database")
    if "malformed" in message or "corrupt" in message:
        return LedgerFileError(f"{path} is damaged: {message}")
    return LedgerFileError(f"cannot use {path}: {message}")


def _read_meta(conn: sqlite3.Connection, path: Path) -> str:
    """Check that the file is a doormat ledger of our format; return its origin."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise LedgerFileError(f"{path} is not a doormat ledger (SQLite application id {app_id})")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = {"meta", "entries", "checkpoints"} - tables
    if missing:
        raise LedgerFileError(f"{path} is damaged: table(s) {', '.join(sorted(missing))} missing")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        raise LedgerFileError(
            f"{path} has ledger format {meta.get('format')!r}; this version reads {FORMAT!r}"
        )
    origin = meta.get("origin")
    if not isinstance(origin, str):
        raise LedgerFileError(f"{path} is damaged: it records no origin")
    return origin


def _open_existing(path: str | os.PathLike[str]) -> tuple[sqlite3.Connection, str]:
    """A read-only connection to an existing ledger, and its origin."""
    p = Path(path)
    if not p.is_file():
        raise LedgerFileError(f"no ledger at {p}" if not p.exists() else f"{p} is not a file")
    try:
        conn = _connect(p, readonly=True)
    except sqlite3.Error as exc:
        raise _file_error(p, exc) from None
    try:
        origin = _read_meta(conn, p)
    except sqlite3.Error as exc:
        conn.close()
        raise _file_error(p, exc) from None
    except LedgerFileError:
        conn.close()
        raise
    return conn, origin


class Ledger:
    """The audit ledger in one SQLite file. One writer; not for concurrent appends from
    two ``Ledger`` objects (the second's append fails instead of forking the log).

    ``Ledger(path, signer=..., origin=...)`` creates the file if needed (``create=True``)
    or reopens it; ``readonly=True`` opens an existing file for reading and proofs only.
    ``signer`` (a ``wire.note.Signer`` named as the origin) is needed only for
    ``checkpoint``. Methods may be called from any thread; calls are serialised.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        signer: Signer | None = None,
        origin: str | None = None,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._readonly = readonly
        if origin is not None:
            check_origin(origin)
        if readonly:
            self._conn, stored_origin = _open_existing(self._path)
        else:
            if not create and not self._path.is_file():
                raise LedgerFileError(f"no ledger at {self._path}")
            try:
                self._conn = _connect(self._path, readonly=False)
            except sqlite3.Error as exc:
                raise _file_error(self._path, exc) from None
        try:
            if not readonly:
                stored_origin = self._prepare_file(origin or DEFAULT_ORIGIN)
            if origin is not None and origin != stored_origin:
                raise LedgerError(
                    f"{self._path} is the ledger of {stored_origin!r}, not {origin!r}"
                )
            if signer is not None and signer.name != stored_origin:
                raise LedgerError(
                    f"the signing key is named {signer.name!r}; checkpoints of "
                    f"{stored_origin!r} need a key of that name"
                )
            self._signer = signer
            self._core = LedgerCore(stored_origin, self._load_leaf_hashes())
        except sqlite3.Error as exc:
            self._conn.close()
            raise _file_error(self._path, exc) from None
        except LedgerError:
            self._conn.close()
            raise

    def _prepare_file(self, origin: str) -> str:
        with transaction(self._conn) as conn:
            fresh = prepare(conn, _SCHEMA, path=self._path)
            if fresh:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("format", FORMAT), ("origin", origin)],
                )
        return _read_meta(self._conn, self._path)

    def _load_leaf_hashes(self) -> Iterator[bytes]:
        rows = self._conn.execute("SELECT idx, leaf_hash FROM entries ORDER BY idx")
        for expected, (idx, leaf) in enumerate(rows):
            # Cheap checks only; a mismatch between entry and hash is verify's to find.
            if idx != expected:
                raise LedgerFileError(
                    f"{self._path} is damaged: entry {expected} is missing "
                    "(run `doormat ledger verify`)"
                )
            if not isinstance(leaf, bytes) or len(leaf) != 32:
                raise LedgerFileError(
                    f"{self._path} is damaged: entry {idx} has no valid leaf hash "
                    "(run `doormat ledger verify`)"
                )
            yield leaf

    # -- properties ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def origin(self) -> str:
        return self._core.origin

    @property
    def size(self) -> int:
        return self._core.size

    def __len__(self) -> int:
        return self._core.size

    def root(self, size: int | None = None) -> bytes:
        return self._core.root(size)

    # -- writing -------------------------------------------------------------------

    def append(self, entry: Mapping[str, Any], *, time_ms: int) -> Receipt:
        """Log one entry; return only once it is durable. Raises EntryError for an
        invalid entry and LedgerError when it could not be stored: then nothing was
        logged, and the caller must not act on it."""
        self._writable()
        with self._lock:
            prepared = self._core.prepare(entry, time_ms=time_ms)
            # Entries cut from the end of the file while we run (a rollback under a live
            # writer) would leave a hole at the next index: refuse instead.
            last = self._query_one("SELECT max(idx) FROM entries")
            stored = -1 if last is None or last[0] is None else int(last[0])
            if stored < self._core.size - 1:
                raise LedgerError(
                    f"{self._path} lost entries {stored + 1}..{self._core.size - 1} while open "
                    "(rolled back under this writer?); nothing was logged"
                )
            self._write(
                "INSERT INTO entries (idx, entry, leaf_hash) VALUES (?, ?, ?)",
                (prepared.entry.index, prepared.data, prepared.leaf_hash),
                what=f"entry {prepared.entry.index}",
            )
            # Only now, with the row committed, does the entry join the tree.
            return self._core.commit(prepared)

    def checkpoint(self) -> bytes:
        """Sign a checkpoint over the current size and root, store it, return the note.

        Asking twice without an append in between returns the stored note again
        (Ed25519 is deterministic: it would be byte for byte the same)."""
        self._writable()
        if self._signer is None:
            raise LedgerError("no signing key: open the ledger with signer= to sign checkpoints")
        with self._lock:
            checkpoint, note = self._core.checkpoint(self._signer)
            data = note.encode("utf-8")
            last = self._query_one("SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1")
            if last is not None and last[0] == data:
                return data
            self._write(
                "INSERT INTO checkpoints (size, note) VALUES (?, ?)",
                (checkpoint.size, data),
                what=f"checkpoint at size {checkpoint.size}",
            )
            return data

    def _writable(self) -> None:
        if self._readonly:
            raise LedgerError(f"{self._path} is open read-only")

    def _write(self, sql: str, params: tuple[Any, ...], *, what: str) -> None:
        try:
            with transaction(self._conn) as conn:
                conn.execute(sql, params)
        except sqlite3.IntegrityError:
            raise LedgerError(
                f"{what} already exists in {self._path}: another writer appended; reopen "
                "the ledger (nothing was logged)"
            ) from None
        except sqlite3.Error as exc:
            raise LedgerError(f"{what} was not logged: {exc}") from None

    # -- reading -------------------------------------------------------------------

    def _query_one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        try:
            row = self._conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _file_error(self._path, exc) from None
        return None if row is None else tuple(row)

    def entry(self, index: int) -> Entry:
        """The stored entry at ``index``, parsed (EntryError if its content is invalid)."""
        with self._lock:
            row = self._query_one("SELECT entry FROM entries WHERE idx = ?", (index,))
        if row is None:
            raise LedgerError(f"no entry {index}: the log has {self.size} entries")
        return parse_entry(row[0])

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[Entry]:
        """The entries in [start, end), parsed."""
        end = self.size if end is None else end
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT entry FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                    (start, end),
                ).fetchall()
            except sqlite3.Error as exc:
                raise _file_error(self._path, exc) from None
        for (data,) in rows:
            yield parse_entry(data)

    def checkpoints(self) -> list[bytes]:
        """Every stored checkpoint note, oldest first."""
        with self._lock:
            try:
                rows = self._conn.execute("SELECT note FROM checkpoints ORDER BY id").fetchall()
            except sqlite3.Error as exc:
                raise _file_error(self._path, exc) from None
        return [bytes(r[0]) if isinstance(r[0], bytes) else str(r[0]).encode() for r in rows]

    def checkpoint_at(self, size: int) -> bytes | None:
        """The latest stored checkpoint note for exactly ``size`` entries, if any."""
        with self._lock:
            row = self._query_one(
                "SELECT note FROM checkpoints WHERE size = ? ORDER BY id DESC LIMIT 1", (size,)
            )
        return None if row is None or not isinstance(row[0], bytes) else row[0]

    def latest_checkpoint(self) -> bytes | None:
        notes = self.checkpoints()
        return notes[-1] if notes else None

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """RFC 9162 inclusion proof of entry ``index`` in the log of ``size`` (default:
        now), from the stored leaf hashes."""
        with self._lock:
            return self._core.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """RFC 9162 consistency proof from ``size1`` to ``size2`` (default: now)."""
        with self._lock:
            return self._core.consistency_proof(size1, size2)

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def parse_verifier_keys(keys: Iterable[Verifier | str]) -> list[Verifier]:
    """Verifier keys given as objects or in Go's note text form; LedgerError if
    malformed. A key of type 0x04 is a witness's (``wire.witness.CosignatureVerifier``)."""
    out: list[Verifier] = []
    for key in keys:
        if isinstance(key, Verifier):
            out.append(key)
            continue
        try:
            text = key.strip()
            if is_cosignature_vkey(text):
                out.append(CosignatureVerifier.from_vkey(text))
            else:
                out.append(Verifier.from_vkey(text))
        except NoteError as exc:
            raise LedgerError(f"verifier key {key.strip()[:60]!r}: {exc}") from None
    return out


def verify(
    path: str | os.PathLike[str],
    verifier_keys: Iterable[Verifier | str],
    *,
    witnessed: bytes | Mapping[str, bytes] | None = None,
) -> VerifyReport:
    """Check a whole ledger file: every entry re-hashed, the tree recomputed, every
    checkpoint's signature (against the log keys among ``verifier_keys``), root and
    consistency, and the indices' continuity; and, given ``witnessed`` (the latest
    checkpoint the witness cosigned, from the witness, not from the ledger's file) and
    the witness's key among ``verifier_keys``, that the ledger is not behind it nor
    another history. Every problem is located in the report; nothing is raised for
    a tampered ledger. Raises LedgerFileError only when the file is no ledger at all,
    and LedgerError for a malformed key or a witnessed checkpoint without a witness key."""
    verifiers = parse_verifier_keys(verifier_keys)
    log_keys = [v for v in verifiers if not isinstance(v, CosignatureVerifier)]
    witness_keys = [v for v in verifiers if isinstance(v, CosignatureVerifier)]
    if witnessed is not None and not witness_keys:
        raise LedgerError("a witnessed checkpoint needs the witness's verifier key to check it")
    conn, origin = _open_existing(path)
    checker = LogVerifier(origin, log_keys)
    try:
        with _snapshot(conn):
            _verify_rows(conn, checker)
    finally:
        conn.close()
    if witnessed is not None:
        # A witness's whole state: the checkpoint it cosigned for this ledger's origin.
        note = witnessed.get(origin) if isinstance(witnessed, Mapping) else witnessed
        checker.add_witnessed(note, log_keys, witness_keys)
    return checker.finish()


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around several SELECTs: with the interceptor appending at
    the same time, entries and checkpoints must come from the same moment, or a
    checkpoint signed in between would seem to cover entries that are not there."""
    try:
        conn.execute("BEGIN")
    except sqlite3.Error:
        yield  # reading without the transaction still reports what it can
        return
    try:
        yield
    finally:
        with suppress(sqlite3.Error):  # a read-only transaction has nothing to lose
            conn.execute("COMMIT")


def _verify_rows(conn: sqlite3.Connection, checker: LogVerifier) -> None:
    # SQLite's own structural check first: a flipped byte in a page header or b-tree
    # pointer may leave rows readable but wrong, or unreadable past some point.
    try:
        rows = conn.execute("PRAGMA integrity_check(20)").fetchall()
        damage = [
            str(r[0]).replace("*** in database main ***", "").strip() for r in rows if r[0] != "ok"
        ]
        for message in damage:
            checker.problem("database file", f"SQLite integrity check: {message}")
    except sqlite3.Error as exc:
        checker.problem("database file", f"damaged: {exc}")
    read = 0
    try:
        for idx, data, leaf in conn.execute(
            "SELECT idx, entry, leaf_hash FROM entries ORDER BY idx"
        ):
            checker.add_entry(idx, data, leaf)
            read += 1
    except sqlite3.Error as exc:
        checker.problem(
            "entries table", f"unreadable after {read} rows: {exc} (the file is damaged)"
        )
    read = 0
    try:
        for row, size, note in conn.execute("SELECT id, size, note FROM checkpoints ORDER BY id"):
            checker.add_checkpoint(row, size, note)
            read += 1
    except sqlite3.Error as exc:
        checker.problem(
            "checkpoints table", f"unreadable after {read} rows: {exc} (the file is damaged)"
        )


def report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The transparency report of a ledger file (see ``interceptor.ledger.transparency.
    transparency_report``). Reads; does not verify."""
    conn, origin = _open_existing(path)
    try:
        entries: list[Entry] = []
        unreadable: list[int] = []
        with _snapshot(conn):
            for idx, data in conn.execute("SELECT idx, entry FROM entries ORDER BY idx"):
                try:
                    entries.append(parse_entry(data))
                except EntryError:
                    unreadable.append(idx)
            notes = [r[0] for r in conn.execute("SELECT note FROM checkpoints ORDER BY id")]
    except sqlite3.Error as exc:
        raise _file_error(Path(path), exc) from None
    finally:
        conn.close()
    latest = peek_checkpoint(notes[-1]) if notes else None
    return transparency_report(
        entries,
        origin=origin,
        unreadable=unreadable,
        checkpoints=len(notes),
        latest_checkpoint=latest,
    )


__all__ = [
    "APPLICATION_ID",
    "FORMAT",
    "Ledger",
    "LedgerFileError",
    "parse_verifier_keys",
    "report",
    "verify",
]
