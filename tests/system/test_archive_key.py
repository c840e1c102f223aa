"""The compliance archive keeps its private key across restarts.

Devices learn the archive's public key once (at activation; in compose from the policy
file `doormat enterprise serve` writes) and keep sealing journal records to it. If a
restarted enterprise made itself a new key, it could open none of the records sealed
before, nor any its devices keep sending: these tests restart it for real (close the
store, open it again) and open an old record with the reloaded key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clients.archive import Archive, ArchiveError, Record, journal_record
from clients.enterprise import Enterprise, EnterpriseServer
from wire.events import EventLog

RECORD = Record("alice@acme.phone", "out", "m1", "alice@acme.phone", "bob@acme", 1, "hello")


def test_a_restarted_archive_opens_records_sealed_before_the_restart(tmp_path: Path) -> None:
    store = tmp_path / "archive-acme.sqlite"
    first = Archive("acme", store)
    public = first.public_key
    sealed_before = journal_record(public, RECORD)
    first.close()

    second = Archive("acme", store)
    try:
        assert second.public_key == public
        # A real decryption with the reloaded private key.
        assert second.ingest(RECORD.device, sealed_before) == RECORD
        assert second.records() == [RECORD]
    finally:
        second.close()


def test_another_store_has_another_key(tmp_path: Path) -> None:
    a, b = Archive("acme", tmp_path / "a.sqlite"), Archive("acme", tmp_path / "b.sqlite")
    try:
        assert a.public_key != b.public_key
        with pytest.raises(ArchiveError, match="does not open"):
            b.ingest(RECORD.device, journal_record(a.public_key, RECORD))
    finally:
        a.close()
        b.close()


def test_the_enterprise_server_keeps_its_archive_key_across_restarts(tmp_path: Path) -> None:
    def server() -> EnterpriseServer:
        return EnterpriseServer(Enterprise("acme", archive=True), "pw", "127.0.0.1", 1,
                                EventLog(), tmp_path)

    first = server()
    key = first.archive_public_key
    assert first.archive is not None
    first.archive.close()
    second = server()
    assert second.archive is not None
    try:
        assert key is not None and second.archive_public_key == key
    finally:
        second.archive.close()


def test_a_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "archive-acme.sqlite"
    Archive("acme", store).close()
    with sqlite3.connect(store) as db:
        db.execute("UPDATE archive_key SET private = ?", (b"short",))
    db.close()
    with pytest.raises(ArchiveError, match="corrupt archive key"):
        Archive("acme", store)

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(ArchiveError, match="not a readable archive store"):
        Archive("acme", garbage)
