"""SQLite, written once for every store: open with the pragmas the store needs, check
that the file is of the right kind and version, create the schema, run transactions.

    db = open_store(path, Schema("device store", STATEMENTS), synchronous="FULL")
    with transaction(db):           # BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it raises)
        db.execute(...)

Every connection is in autocommit mode (``isolation_level=None``): nothing is a
transaction unless the code says so, with :func:`transaction` (or, for a store that
groups several writes in one commit, :class:`Transactions`), so what is one
transaction is visible in the code.

A store's file tells its kind and version in two header fields: ``PRAGMA
application_id`` (a store that sets one: the audit ledger's "dmlg") and ``PRAGMA
user_version`` (the relay's schema version). :func:`prepare` refuses a file that names
another application, or a version this code does not read (a newer one, say), with
:class:`StoreFileError`, one line that names the file. A store that sets neither field
refuses a file that has one set (another store's file, or a later format of its own).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

Synchronous = Literal["OFF", "NORMAL", "FULL"]

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds to wait for another connection's write lock


class StoreFileError(sqlite3.DatabaseError):
    """The file is not a store of this kind, is of a version this code does not read,
    or cannot be put in WAL mode. The message is one line that names the file."""


def connect(
    path: str | Path,
    *,
    readonly: bool = False,
    wal: bool = True,
    synchronous: Synchronous | None = None,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    any_thread: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit mode with the store's pragmas.

    ``readonly``: opened ``mode=ro`` (a reader beside a running writer, or after it
    stopped; with WAL it reads committed data without blocking the writer), and no
    pragma is changed. ``wal``: journal in WAL mode (StoreFileError if the file cannot
    be). ``synchronous``: NORMAL survives the process being killed, FULL also a power
    loss (None: SQLite's default). ``busy_timeout``: seconds to wait for another
    connection's lock instead of failing at once. ``any_thread``: the connection may be
    used from threads other than the one that made it (one at a time)."""
    if readonly:
        uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
        return sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            timeout=busy_timeout,
            check_same_thread=not any_thread,
        )
    db = sqlite3.connect(
        str(path), isolation_level=None, timeout=busy_timeout, check_same_thread=not any_thread
    )
    try:
        if wal:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreFileError(f"{path}: cannot switch to WAL mode (got {mode})")
        if synchronous is not None:
            if synchronous not in ("OFF", "NORMAL", "FULL"):
                raise ValueError(f"synchronous must be OFF, NORMAL or FULL, not {synchronous!r}")
            db.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` (the write lock is taken at once, so
    the block never fails half-way for want of it), COMMIT when the block ends, ROLLBACK
    if it raises. A COMMIT that fails (SQLITE_BUSY, a full disk) is rolled back too
    (when SQLite left the transaction open) and raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    try:
        db.execute("COMMIT")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class Transactions:
    """Transactions on one connection that can be grouped into one commit.

    ``with tx.transaction(): ...`` is one transaction; inside ``with tx.batch(): ...``
    it is a savepoint of the batch's single transaction instead, so that a step that
    fails leaves nothing behind while the commit (one fsync) is shared. Nothing done
    inside a batch is durable, or visible to other connections, before the batch ends.
    Every part of a store that writes through the same connection must use the same
    ``Transactions``, so that a batch takes all of them in."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._in_batch = False

    @property
    def in_batch(self) -> bool:
        return self._in_batch

    @contextmanager
    def transaction(self, *, single: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; inside ``batch()``, a savepoint. ``single``: the block runs
        one statement, which SQLite already applies all or nothing, so inside a batch
        it needs no savepoint of its own."""
        if not self._in_batch:
            with transaction(self.db) as db:
                yield db
            return
        if single:
            yield self.db
            return
        self.db.execute("SAVEPOINT tx")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK TO tx")
            self.db.execute("RELEASE tx")
            raise
        self.db.execute("RELEASE tx")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: every transaction inside is a savepoint of one transaction,
        committed when the block ends (rolled back whole if it raises). Acknowledge
        inputs only after it. Not reentrant."""
        if self._in_batch:
            raise RuntimeError("batch() is not reentrant")
        with transaction(self.db):
            self._in_batch = True
            try:
                yield
            finally:
                self._in_batch = False


@dataclass(frozen=True)
class Schema:
    """A store's file format: ``what`` it is called in errors ("relay store", "doormat
    ledger"), its CREATE statements (a string is split at ``;``), its ``version``
    (``PRAGMA user_version``; 0: none) and the earlier versions it ``upgrades_from`` in
    place, its ``application_id`` (0: none). ``only_if_empty``: the statements run on an
    empty file only (they are not IF NOT EXISTS)."""

    what: str
    statements: str | Sequence[str]
    version: int = 0
    upgrades_from: Collection[int] = ()
    application_id: int = 0
    only_if_empty: bool = False


def prepare(db: sqlite3.Connection, schema: Schema, *, path: str | Path) -> bool:
    """Check the file's kind and version, then create the schema. Call it inside a
    write transaction, with nothing else before it. Returns whether the file was empty.

    The file must carry the schema's application id (set on an empty file) and have a
    ``user_version`` equal to its version or one it upgrades from (an empty file has 0);
    else StoreFileError, naming ``path``. The statements run one by one (an
    ``executescript`` would commit the caller's transaction). A non-zero version is
    then written to ``user_version``."""
    empty = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    found_id = db.execute("PRAGMA application_id").fetchone()[0]
    if empty and schema.application_id:
        db.execute(f"PRAGMA application_id = {int(schema.application_id)}")
    elif found_id != schema.application_id:
        raise StoreFileError(f"{path} is not a {schema.what} (SQLite application id {found_id})")
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found != schema.version and found not in schema.upgrades_from:
        raise StoreFileError(
            f"{path}: {schema.what} schema version {found}, expected {schema.version}"
        )
    if empty or not schema.only_if_empty:
        statements = schema.statements
        for statement in statements.split(";") if isinstance(statements, str) else statements:
            if statement.strip():
                db.execute(statement)
    if schema.version and found != schema.version:
        db.execute(f"PRAGMA user_version = {int(schema.version)}")
    return bool(empty)


def open_store(
    path: str | Path,
    schema: Schema,
    *,
    synchronous: Synchronous | None = None,
    any_thread: bool = False,
) -> sqlite3.Connection:
    """:func:`connect` (WAL, the default busy timeout), then :func:`prepare` in one
    write transaction: a connection to a store of the right kind and version with its
    schema in place. On any failure the connection is closed and the error raised
    (StoreFileError for a file of another kind or version, sqlite3.DatabaseError for one
    that is not SQLite at all)."""
    db = connect(path, synchronous=synchronous, any_thread=any_thread)
    try:
        with transaction(db):
            prepare(db, schema, path=path)
    except BaseException:
        db.close()
        raise
    return db


def exists(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> bool:
    """Whether the query returns a row (``SELECT 1 FROM ... WHERE ...``)."""
    return db.execute(sql, params).fetchone() is not None
