"""infra.sqlite: pragmas, the file's kind and version, transactions and group commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from infra.sqlite import Schema, StoreFileError, Transactions, connect, open_store, transaction

TABLES = """
CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY);
CREATE INDEX IF NOT EXISTS i ON t (x)
"""
STORE = Schema("test store", TABLES)


def test_open_store_sets_the_pragmas_and_creates_the_schema(tmp_path: Path) -> None:
    db = open_store(tmp_path / "s.db", STORE, synchronous="FULL")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert db.isolation_level is None  # autocommit: transactions are explicit
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert names == {"t", "i"}
    db.close()


def test_versions_and_application_ids_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    open_store(path, Schema("test store", TABLES, 2, upgrades_from=(0, 1))).close()
    assert connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
    with pytest.raises(StoreFileError, match=r"v.db: test store schema version 2, expected 3"):
        open_store(path, Schema("test store", TABLES, 3))
    with pytest.raises(StoreFileError, match="schema version 2, expected 0"):
        open_store(path, Schema("other store", TABLES))  # versionless: refuses it too
    tagged = tmp_path / "a.db"
    open_store(tagged, Schema("tagged store", TABLES, application_id=0x1234)).close()
    refused = r"a.db is not a test store \(SQLite application id 4660\)"
    with pytest.raises(StoreFileError, match=refused):
        open_store(tagged, STORE)
    # a refused file is left as it was
    assert {r[0] for r in connect(tagged).execute("SELECT name FROM sqlite_master")} == {"t", "i"}


def test_a_file_that_is_not_sqlite_is_a_database_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        open_store(junk, STORE)


def test_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    db = open_store(tmp_path / "t.db", STORE)
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    assert [r[0] for r in db.execute("SELECT x FROM t")] == [1]
    assert not db.in_transaction


def test_a_batch_is_one_commit_of_savepoints(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    db = open_store(path, STORE)
    other = connect(path, readonly=True)
    tx = Transactions(db)
    with tx.batch():
        assert tx.in_batch
        with tx.transaction():
            db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError), tx.transaction():
            db.execute("INSERT INTO t VALUES (2)")
            db.execute("INSERT INTO t VALUES (1)")  # fails: only this step is undone
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # not yet visible
    assert [r[0] for r in other.execute("SELECT x FROM t")] == [1]
    with pytest.raises(RuntimeError, match="not reentrant"), tx.batch(), tx.batch():
        pass
    assert not tx.in_batch and not db.in_transaction
