"""relay.store: envelopes, de-dup, capture, retention, the directory, durability."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from relay.directory_store import DirectoryError, OneTimePrekey, SignedPrekey
from relay.store import DAY_MS, Store

A, B, C = "alice@acme.phone", "bob@globex.phone", "carol@acme.laptop"
ID1, ID2, ID3 = "1" * 32, "2" * 32, "3" * 32
SPK = SignedPrekey(1, "c3Br", "c2ln")


def test_wal_and_schema(store: Store) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_synchronous_full_option(tmp_path: Path) -> None:
    s = Store(tmp_path / "f.db", synchronous="FULL")
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    s.close()
    with pytest.raises(ValueError):
        Store(tmp_path / "g.db", synchronous="OFF")  # type: ignore[arg-type]


def test_a_newer_schema_or_another_kind_of_file_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    Store(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=3")
    with pytest.raises(sqlite3.DatabaseError, match="schema version 3, expected 2"):
        Store(newer)
    ledger = tmp_path / "ledger.db"
    with sqlite3.connect(ledger) as db:
        db.execute("PRAGMA application_id = 1684892775")  # the audit ledger's "dmlg"
        db.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY)")
    with pytest.raises(sqlite3.DatabaseError, match="is not a relay store"):
        Store(ledger)


def test_batch_commits_envelopes_and_directory_together(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    with pytest.raises(ZeroDivisionError), store.batch():
        store.directory.enrol(A, "alice@acme", "acme", 1)
        store.accept(A, ID1, B, b"one", 1)
        raise ZeroDivisionError
    assert not store.directory.is_enrolled(A) and store.pending_count() == 0
    with store.batch():
        store.directory.enrol(A, "alice@acme", "acme", 1)
        store.accept(A, ID1, B, b"one", 1)
    assert store.directory.is_enrolled(A) and store.pending_count() == 1
    store.close()


def test_accept_dedup_pending_order(store: Store) -> None:
    s1 = store.accept(A, ID1, B, b"one", 1)
    s2 = store.accept(A, ID2, B, b"two", 2)
    s3 = store.accept(A, ID1, C, b"one-to-carol", 3)  # same id, other recipient: new
    assert s1 is not None and s2 is not None and s3 is not None
    assert s1 < s2 < s3
    assert store.accept(A, ID1, B, b"one again", 4) is None
    assert [p.raw for p in store.pending()] == [b"one", b"two", b"one-to-carol"]
    assert [p.msg_id for p in store.pending(B)] == [ID1, ID2]
    assert store.pending_count() == 3 and store.pending_count(C) == 1


def test_ack_deletes_pending_but_dedup_outlives_it(store: Store) -> None:
    store.accept(A, ID1, B, b"one", 1)
    assert store.ack(A, ID1, C, 2) is False  # wrong recipient: nothing
    assert store.ack(A, ID1, B, 2) is True
    assert store.ack(A, ID1, B, 3) is False  # second ack: no longer pending
    assert store.pending() == []
    assert store.accept(A, ID1, B, b"replay", 4) is None  # still refused after delivery
    assert store.seen(A, ID1, B)


def test_captured_keeps_bytes_or_not(tmp_path: Path) -> None:
    keep = Store(tmp_path / "k.db")
    drop = Store(tmp_path / "d.db", keep_captured=False)
    for s in (keep, drop):
        s.accept(A, ID1, B, b"one", 1)
        s.accept(A, ID2, B, b"two", 2)
        s.ack(A, ID1, B, 5)
    assert [(c.msg_id, c.raw, c.acked_ms) for c in keep.captured()] == [
        (ID1, b"one", 5),
        (ID2, b"two", None),
    ]
    assert [(c.msg_id, c.raw) for c in drop.captured()] == [(ID1, None), (ID2, b"two")]
    assert drop.accept(A, ID1, B, b"replay", 6) is None  # the de-dup key remains
    assert [c.seq for c in keep.captured(batch=1)] == [c.seq for c in keep.captured()]


def test_prune_by_age_and_count_never_pending(tmp_path: Path) -> None:
    s = Store(tmp_path / "p.db", retention_ms=DAY_MS, retention_rows=3)
    for i in range(6):
        s.accept(A, f"{i:032x}", B, b"x", i * 1000)
    for i in range(5):
        s.ack(A, f"{i:032x}", B, 10_000)
    # count bound: 6 rows, keep 3 -> the 3 oldest acked go
    assert s.prune(now_ms=10_000) == 3
    assert [c.msg_id for c in s.captured()] == [f"{i:032x}" for i in (3, 4, 5)]
    # age bound: everything acked is older than a day; the pending one stays
    assert s.prune(now_ms=10 * DAY_MS) == 2
    assert [c.msg_id for c in s.captured()] == [f"{5:032x}"]
    assert s.pending_count() == 1


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
    s.accept(A, ID1, B, b"one", 1)
    s.directory.enrol(A, "alice@acme", "acme", 1)
    s.close()
    s = Store(tmp_path / "r.db")
    assert [p.raw for p in s.pending()] == [b"one"]
    assert s.directory.is_enrolled(A)


def test_enrol_idempotent_and_checked(store: Store) -> None:
    assert store.directory.enrol(A, "alice@acme", "acme", 1) is True
    assert store.directory.enrol(A, "alice@acme", "acme", 2) is False
    with pytest.raises(DirectoryError):
        store.directory.enrol(A, "alice@acme", "globex", 3)
    rec = store.directory.device(A)
    assert rec is not None and rec.user == "alice@acme" and rec.identity is None
    assert store.directory.device(B) is None


def test_publish_identity_set_once_and_first_needs_spk(store: Store) -> None:
    store.directory.enrol(A, "alice@acme", "acme", 1)
    with pytest.raises(DirectoryError, match="not enrolled"):
        store.directory.publish(B, "SUQ=", SPK, [], 1, max_held=10)
    with pytest.raises(DirectoryError, match="signed_prekey"):
        store.directory.publish(A, "SUQ=", None, [], 1, max_held=10)
    r = store.directory.publish(A, "SUQ=", SPK, [OneTimePrekey(1, "azE=")], 2, max_held=10)
    assert r.identity_new and r.held == 1 and r.added == 1
    with pytest.raises(DirectoryError, match="different key"):
        store.directory.publish(A, "T1RIRVI=", SPK, [OneTimePrekey(2, "azI=")], 3, max_held=10)
    assert store.directory.otpk_count(A) == 1  # the refused request stored nothing
    # same identity, top-up without a new signed prekey
    r = store.directory.publish(A, "SUQ=", None, [OneTimePrekey(2, "azI=")], 4, max_held=10)
    assert not r.identity_new and r.held == 2
    rec = store.directory.device(A)
    assert rec is not None and rec.identity == "SUQ=" and rec.signed_prekey == SPK


def test_publish_limit_rolls_back(store: Store) -> None:
    store.directory.enrol(A, "alice@acme", "acme", 1)
    otpks = [OneTimePrekey(i, "aw==") for i in range(3)]
    store.directory.publish(A, "SUQ=", SPK, otpks, 1, max_held=4)
    with pytest.raises(DirectoryError, match="over the limit"):
        store.directory.publish(
            A,
            "SUQ=",
            SignedPrekey(2, "bg==", "bg=="),
            [OneTimePrekey(i, "aw==") for i in range(3, 5)],
            2,
            max_held=4,
        )
    rec = store.directory.device(A)
    assert store.directory.otpk_count(A) == 3 and rec is not None and rec.signed_prekey == SPK


def test_one_time_prekeys_handed_out_once(store: Store) -> None:
    store.directory.enrol(A, "alice@acme", "acme", 1)
    store.directory.enrol(B, "bob@globex", "globex", 1)
    store.directory.enrol("bob@globex.laptop", "bob@globex", "globex", 1)
    otpks = [OneTimePrekey(i, f"k{i}==") for i in (7, 8)]
    store.directory.publish(B, "SUQ=", SPK, otpks, 1, max_held=9)
    store.directory.publish("bob@globex.laptop", "SUQ=", SPK, [], 1, max_held=9)
    got = []
    for _ in range(3):
        bundles = store.directory.take_bundles("bob@globex", 2)
        assert [b.device for b in bundles] == ["bob@globex.laptop", B]
        assert bundles[0].one_time_prekey is None
        got.append(bundles[1].one_time_prekey)
    assert got == [OneTimePrekey(7, "k7=="), OneTimePrekey(8, "k8=="), None]
    # re-publishing a handed-out id does not bring it back
    r = store.directory.publish(
        B, "SUQ=", None, [OneTimePrekey(7, "k7=="), OneTimePrekey(9, "k9==")], 3, max_held=9
    )
    assert r.added == 1 and r.held == 1
    assert store.directory.take_bundles("bob@globex", 4, exclude=B)[0].device == "bob@globex.laptop"


def test_devices_of_only_published(store: Store) -> None:
    store.directory.enrol(B, "bob@globex", "globex", 1)
    store.directory.enrol("bob@globex.laptop", "bob@globex", "globex", 1)
    assert store.directory.devices_of("bob@globex") == []
    assert store.directory.devices_of("bob@globex", published_only=False) == [
        "bob@globex.laptop",
        B,
    ]
    store.directory.publish(B, "SUQ=", SPK, [], 1, max_held=9)
    assert store.directory.devices_of("bob@globex") == [B]
    assert store.directory.take_bundles("bob@globex", 1)[0].device == B


def test_committed_survives_sigkill(tmp_path: Path) -> None:
    """A child process commits envelopes and a one-time prekey hand-out, then SIGKILLs
    itself: everything it committed is there, nothing is half-done."""
    db = tmp_path / "k.db"
    child = textwrap.dedent(
        f"""
        import os, signal
        from relay.store import Store
        from relay.directory_store import SignedPrekey, OneTimePrekey
        s = Store({str(db)!r})
        s.directory.enrol("bob@globex.phone", "bob@globex", "globex", 1)
        s.directory.publish("bob@globex.phone", "SUQ=", SignedPrekey(1, "aw==", "aw=="),
                  [OneTimePrekey(1, "aw=="), OneTimePrekey(2, "aw==")], 1, max_held=9)
        for i in range(500):
            s.accept("alice@acme.phone", f"{{i:032x}}", "bob@globex.phone", b"x" * 300, i)
        s.ack("alice@acme.phone", f"{{0:032x}}", "bob@globex.phone", 1)
        s.directory.take_bundles("bob@globex", 1)
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and "committed" in proc.stdout, proc.stderr
    s = Store(db)
    assert s.pending_count() == 499
    assert len(list(s.captured())) == 500
    assert s.directory.otpk_count("bob@globex.phone") == 1
    assert s.directory.take_bundles("bob@globex", 2)[0].one_time_prekey == OneTimePrekey(2, "aw==")
