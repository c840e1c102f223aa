"""relay.kt and the store's kt_log: the directory's Merkle log, its checkpoints and
proofs, persistence across a restart, the key file, and the hidden view."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from infra.files import load_or_create_signer
from relay.kt import DirectoryLog, DirectoryLogError, LogRow, ghost_device, has_ghost_name
from relay.store import Store
from tests.kt.kt_helpers import A2, ALICE, BOB, SIGNER, A, B, C, Harness, identity_of
from wire.checkpoint import open_checkpoint
from wire.kt import KT_ORIGIN, entry_bytes
from wire.merkle import hash_leaf, verify_consistency, verify_inclusion
from wire.note import Signer


def rows_for(n: int, *, ghosts: tuple[int, ...] = ()) -> list[LogRow]:
    rows = []
    for i in range(n):
        user = ALICE if i % 2 == 0 else BOB
        device = ghost_device(user) if i in ghosts else f"{user}.d{i}"
        rows.append(
            LogRow(
                i, user, device, "add", entry_bytes(user, device, f"k{i}", "add", i), i in ghosts
            )
        )
    return rows


def unb64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


def test_entry_is_canonical_json() -> None:
    data = entry_bytes(ALICE, A, "SUQ=", "add", 7)
    assert data == (
        b'{"device":"alice@acme.phone","identity":"SUQ=","op":"add","t":7,"user":"alice@acme"}'
    )
    with pytest.raises(ValueError, match="op must be"):
        entry_bytes(ALICE, A, "SUQ=", "delete", 7)  # type: ignore[arg-type]
    assert ghost_device(ALICE) == "alice@acme.gov" and has_ghost_name("alice@acme.gov")
    assert not has_ghost_name("alice@acme.government")


def test_answer_proofs_verify_for_every_entry_and_since() -> None:
    log = DirectoryLog(SIGNER)
    rows = rows_for(13)
    log.extend(rows)
    for since in range(0, 14):
        kt = log.answer(rows, since=since)
        cp = open_checkpoint(kt["checkpoint"], [SIGNER.verifier()], origin=KT_ORIGIN).checkpoint
        assert cp.size == 13 and kt["since"] == since
        verify_consistency(since, 13, unb64(kt["consistency"]), log.root(since), cp.root)
        for item, row in zip(kt["entries"], rows, strict=True):
            assert item["index"] == row.index
            leaf = hash_leaf(
                json.dumps(item["entry"], sort_keys=True, separators=(",", ":")).encode()
            )
            assert leaf == hash_leaf(row.entry)
            verify_inclusion(row.index, 13, leaf, unb64(item["proof"]), cp.root)
    assert "consistency" not in log.answer(rows) and "since" not in log.answer(rows)
    with pytest.raises(DirectoryLogError, match="'since' 14 is beyond the directory log's size 13"):
        log.answer(rows, since=14)


def test_extend_refuses_a_gap_and_a_misnamed_key() -> None:
    log = DirectoryLog(SIGNER)
    log.extend(rows_for(2))
    with pytest.raises(DirectoryLogError, match="log row 3 does not continue the log of size 2"):
        log.extend(rows_for(4)[3:])
    with pytest.raises(ValueError, match="named 'other'"):
        DirectoryLog(Signer.generate("other"))


def test_checkpoints_are_deterministic_and_signed_once_per_size() -> None:
    one, two = DirectoryLog(SIGNER), DirectoryLog(SIGNER)
    one.extend(rows_for(5))
    two.extend(rows_for(3))
    two.extend(rows_for(5)[3:])
    assert one.checkpoint() == two.checkpoint()
    assert one.checkpoint() is one.checkpoint()  # cached while the size stays
    assert one.vkey == SIGNER.verifier().vkey()
    empty = DirectoryLog(SIGNER)
    cp = open_checkpoint(empty.checkpoint(), [SIGNER.verifier()]).checkpoint
    assert cp.size == 0


def test_hidden_view_same_size_other_root_without_ghost_entries() -> None:
    log = DirectoryLog(SIGNER)
    rows = rows_for(6, ghosts=(4,))  # entry 4: alice@acme.gov
    log.extend(rows[:4])
    assert log.root(hidden=True) == log.root()  # no ghost yet: one view
    log.extend(rows[4:])
    assert log.root(hidden=True) != log.root()
    full = open_checkpoint(log.checkpoint(), [SIGNER.verifier()]).checkpoint
    hidden = open_checkpoint(log.checkpoint(hidden=True), [SIGNER.verifier()]).checkpoint
    assert full.size == hidden.size == 6 and full.root != hidden.root
    # the filler is a verbatim repeat of alice's latest earlier entry (row 2)
    assert log._hidden is not None and log._hidden.leaf_hash(4) == hash_leaf(rows[2].entry)
    # the hidden view leaves the ghost entry out of answers, and proves the rest
    kt = log.answer(rows, hidden=True)
    assert [e["index"] for e in kt["entries"]] == [0, 1, 2, 3, 5]
    for item in kt["entries"]:
        leaf = hash_leaf(rows[item["index"]].entry)
        verify_inclusion(item["index"], 6, leaf, unb64(item["proof"]), hidden.root)
    # both views extend the common prefix before the ghost entry
    assert log.root(4, hidden=True) == log.root(4)
    proof = unb64(log.answer([], since=4, hidden=True)["consistency"])
    verify_consistency(4, 6, proof, log.root(4), hidden.root)


def test_store_logs_first_publish_only_and_atomically(tmp_path: Path) -> None:
    h = Harness(Store(tmp_path / "r.db"))
    h.enrol(A)
    assert h.store.directory.kt_size() == 0  # enrolment binds no key: not logged
    h.publish(A)
    h.publish(A)  # same identity again (a prekey refill): nothing new to log
    assert h.refused(A, "publish", identity=identity_of(B)) == (
        "identity already published with a different key"
    )
    (row,) = h.store.directory.kt_rows()
    assert (row.index, row.user, row.device, row.op, row.ghost) == (0, ALICE, A, "add", False)
    assert json.loads(row.entry)["identity"] == identity_of(A)
    published = h.events.events("relay.published")
    assert [e["kt_index"] for e in published] == [0, None]
    assert h.relay.kt.size == 1


def test_restart_rebuilds_the_same_tree_and_checkpoint(tmp_path: Path) -> None:
    h = Harness(Store(tmp_path / "r.db"))
    h.setup()
    note = h.ok(A, "devices", user=BOB)["kt"]["checkpoint"]
    h.store.close()
    again = Harness(Store(tmp_path / "r.db"))
    assert again.relay.kt.size == 4
    assert again.ok(A, "devices", user=BOB, since=4)["kt"]["checkpoint"] == note
    # a relay restarted with another key signs the same tree differently: pinning matters
    other = Harness(Store(tmp_path / "r.db"), signer=Signer.generate(KT_ORIGIN))
    assert other.ok(A, "devices", user=BOB)["kt"]["checkpoint"] != note


def test_backfill_logs_devices_published_before_kt(tmp_path: Path) -> None:
    h = Harness(Store(tmp_path / "r.db"))
    h.setup((A, B))
    # a store written before key transparency: keys published, nothing logged
    h.store._db.execute("DELETE FROM kt_log")
    h.store._db.execute("PRAGMA user_version=1")
    h.store.close()
    again = Harness(Store(tmp_path / "r.db"))
    assert [(r.index, r.device) for r in again.store.directory.kt_rows()] == [(0, A), (1, B)]
    assert again.store._db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert again.relay.kt.size == 2


def test_signing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite.kt-key"
    signer = load_or_create_signer(path, KT_ORIGIN)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().startswith("PRIVATE+KEY+doormat.example/directory+")
    vkey = (tmp_path / "relay.sqlite.kt-key.vkey").read_text().strip()
    assert vkey == signer.verifier().vkey()
    assert load_or_create_signer(path, KT_ORIGIN).skey() == signer.skey()  # same key again
    with pytest.raises(ValueError, match="expected 'elsewhere'"):
        load_or_create_signer(path, "elsewhere")
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(ValueError, match="not a signer key"):
        load_or_create_signer(tmp_path / "junk", KT_ORIGIN)


def test_log_rows_queries(tmp_path: Path) -> None:
    h = Harness(Store(tmp_path / "r.db"), ghost=True)
    h.setup((A, A2, B, C))
    h.ghost(ALICE)
    assert [r.device for r in h.store.directory.kt_latest([B, A, "x@y.z", A])] == [B, A]
    assert [r.device for r in h.store.directory.kt_rows_of_user(ALICE)] == [A, A2, "alice@acme.gov"]
    assert [r.device for r in h.store.directory.kt_rows_of_user(ALICE, ghosts=False)] == [A, A2]
    assert [r.device for r in h.store.directory.kt_rows_of_user(ALICE, limit=1)] == [A]
    assert [r.index for r in h.store.directory.kt_rows(3)] == [3, 4]
    assert h.store.directory.kt_rows(4)[0].ghost is True
