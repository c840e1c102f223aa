"""``verify`` against tampering: every kind of change to a stored row is found and
located, raw byte flips in the database file never pass unnoticed unless they changed
nothing, and (hypothesis) honest logs always verify while any one-byte change to any
stored entry is caught."""

from __future__ import annotations

import base64
import itertools
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interceptor.ledger import (
    Ledger,
    LedgerFileError,
    VerifyReport,
    make_entry,
    oversight_entry,
    record_delivered_entry,
    verify,
)
from tests.interceptor.ledger_support import (
    LOG_SIGNER,
    LOG_VKEY,
    OTHER_SIGNER,
    flip_byte,
    row_value,
    set_row_value,
    simple_ledger,
    write_scenario,
)
from wire.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from wire.merkle import hash_leaf

SIZES = (2, 13, 18)  # where write_scenario signs its checkpoints
N = 18


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "template.db"
    with Ledger(path, signer=LOG_SIGNER) as ledger:
        write_scenario(ledger)
        assert ledger.size == N
    notes = Ledger(path, readonly=True).checkpoints()
    sizes = tuple(open_checkpoint(n, [LOG_SIGNER.verifier()]).checkpoint.size for n in notes)
    assert sizes == SIZES
    return path


@pytest.fixture
def path(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ledger.db"
    shutil.copyfile(template, copy)
    return copy


def problems(path: Path, keys: tuple[str, ...] = (LOG_VKEY,)) -> list[str]:
    result = verify(path, list(keys))
    assert result.ok == (not result.problems)
    return [str(p) for p in result.problems]


def wheres(path: Path) -> set[str]:
    return {p.where for p in verify(path, [LOG_VKEY]).problems}


def checkpoint_row(path: Path, size: int) -> int:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT id FROM checkpoints WHERE size = ?", (size,)).fetchone()
    conn.close()
    return int(row[0])


def test_the_untouched_ledger_verifies(path: Path) -> None:
    result = verify(path, [LOG_VKEY])
    assert result.ok, result.problems
    assert (result.entries, result.checkpoints, result.checkpoints_verified) == (N, 3, 3)
    assert result.summary().startswith(f"{N} entries, root ")


# -- entries ---------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 5, 11, 17])
def test_a_flipped_byte_in_an_entry_is_located(path: Path, index: int) -> None:
    data = row_value(path, "entries", "entry", "idx", index)
    set_row_value(path, "entries", "entry", "idx", index, flip_byte(data, len(data) // 2))
    found = problems(path)
    assert found[0].startswith(f"entry {index}: leaf hash does not match its content")
    assert "the content was changed" in found[0]
    # ...and every checkpoint that covers it now disagrees with the log.
    expected = {f"entry {index}"} | {f"checkpoint at size {s}" for s in SIZES if s > index}
    assert wheres(path) == expected
    assert f"checkpoint at size {SIZES[-1]}: root differs from the log's root at that size" in found


@pytest.mark.parametrize("index", [1, 12])
def test_a_flipped_byte_in_a_stored_leaf_hash_is_located(path: Path, index: int) -> None:
    leaf = row_value(path, "entries", "leaf_hash", "idx", index)
    set_row_value(path, "entries", "leaf_hash", "idx", index, flip_byte(leaf, 7, 0x80))
    found = problems(path)
    assert len(found) == 1, found  # the content still matches every checkpoint
    assert found[0].startswith(f"entry {index}: leaf hash does not match its content")
    assert "the stored leaf hash was changed" in found[0]


def test_a_mismatch_beyond_every_checkpoint_says_so(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    simple_ledger(path, 6, checkpoint_at=(3,)).close()
    set_row_value(path, "entries", "entry", "idx", 4, b"{}")
    found = problems(path)
    assert found[0].startswith("entry 4: leaf hash does not match its content")
    assert "no signed checkpoint covers it" in found[0]
    assert found[1].startswith("entry 4: content is not a valid entry")


def test_every_byte_of_an_entry_is_covered(path: Path) -> None:
    index = 5
    original = row_value(path, "entries", "entry", "idx", index)
    for position in range(len(original)):
        set_row_value(path, "entries", "entry", "idx", index, flip_byte(original, position))
        result = verify(path, [LOG_VKEY])
        assert not result.ok, position
        assert result.problems[0].where == f"entry {index}", (position, result.problems)
    set_row_value(path, "entries", "entry", "idx", index, original)
    assert verify(path, [LOG_VKEY]).ok


def test_a_deleted_entry_is_located(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM entries WHERE idx = 7")
    conn.close()
    found = problems(path)
    assert found[0] == "entry 7: missing (stored indices jump from 6 to 8)"
    assert {w for w in wheres(path) if w.startswith("checkpoint")} == {
        "checkpoint at size 13",
        "checkpoint at size 18",
    }


def test_a_truncated_log_is_caught_by_its_checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= 16")
    conn.close()
    assert problems(path) == [
        "checkpoint at size 18: the log has only 16 entries: entries 16..17 are gone"
    ]


def test_a_moved_entry_is_located(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entries SET idx = 100 WHERE idx = 17")
    conn.close()
    assert problems(path) == [
        "entries 17..99: missing (stored indices jump from 16 to 100)",
        "entry 100: its content says it is entry 17",
    ]


def test_swapped_entries_are_located(path: Path) -> None:
    rows = {
        i: (
            row_value(path, "entries", "entry", "idx", i),
            row_value(path, "entries", "leaf_hash", "idx", i),
        )
        for i in (3, 4)
    }
    for i, j in ((3, 4), (4, 3)):
        set_row_value(path, "entries", "entry", "idx", i, rows[j][0])
        set_row_value(path, "entries", "leaf_hash", "idx", i, rows[j][1])
    found = problems(path)
    assert found[:2] == [
        "entry 3: its content says it is entry 4",
        "entry 4: its content says it is entry 3",
    ]
    assert "checkpoint at size 13: root differs from the log's root at that size" in found


def test_a_short_leaf_hash_and_a_text_entry_are_located(path: Path) -> None:
    leaf = row_value(path, "entries", "leaf_hash", "idx", 2)
    set_row_value(path, "entries", "leaf_hash", "idx", 2, leaf[:-1])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entries SET entry = CAST(entry AS TEXT) WHERE idx = 9")
    conn.close()
    assert problems(path) == [
        "entry 2: stored leaf hash is 31 bytes, expected 32",
        "entry 9: content is stored as text, not bytes",
    ]


def test_a_consistent_rewrite_is_caught_by_the_checkpoints(path: Path) -> None:
    """Rewriting an entry *and* its leaf hash leaves the row self-consistent; the signed
    checkpoints still hold the old history."""
    original = Ledger(path, readonly=True).entry(5)
    forged = make_entry(
        5, {"type": original.type, **original.payload, "plaintext": True}, time_ms=original.time_ms
    )
    set_row_value(path, "entries", "entry", "idx", 5, forged.encode())
    set_row_value(path, "entries", "leaf_hash", "idx", 5, hash_leaf(forged.encode()))
    assert problems(path) == [
        "checkpoint at size 13: root differs from the log's root at that size",
        "checkpoint at size 18: root differs from the log's root at that size",
    ]
    # The key holder re-signs the rewritten log: the new checkpoint matches the log, but
    # it forks from the one signed before it.
    with Ledger(path, signer=LOG_SIGNER) as ledger:
        ledger.checkpoint()
    found = problems(path)
    assert found[-1].startswith(
        "checkpoint at size 18: not consistent with the earlier checkpoint at size 18: "
        "the signed history was rewritten"
    )
    assert len(found) == 3


# -- checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("line", [0, 1, 2])  # origin, size, root
def test_a_flipped_byte_in_a_checkpoint_text_is_located(path: Path, size: int, line: int) -> None:
    row = checkpoint_row(path, size)
    note = row_value(path, "checkpoints", "note", "id", row)
    start = sum(len(part) + 1 for part in note.split(b"\n")[:line])
    set_row_value(path, "checkpoints", "note", "id", row, flip_byte(note, start, 0x01))
    found = problems(path)
    assert found == [found[0]]
    assert found[0].startswith(f"checkpoint at size {size}: signature invalid")


@pytest.mark.parametrize("size", SIZES)
def test_a_flipped_bit_in_a_signature_is_located(path: Path, size: int) -> None:
    row = checkpoint_row(path, size)
    note = row_value(path, "checkpoints", "note", "id", row).decode()
    text, _, line = note.rstrip("\n").rpartition("\n")
    prefix, _, b64 = line.rpartition(" ")
    blob = bytearray(base64.b64decode(b64))
    blob[4 + 20] ^= 0x04  # inside the Ed25519 signature, after the 4-byte key id
    forged = f"{text}\n{prefix} {base64.b64encode(bytes(blob)).decode()}\n"
    set_row_value(path, "checkpoints", "note", "id", row, forged.encode())
    found = problems(path)
    assert len(found) == 1
    assert found[0].startswith(f"checkpoint at size {size}: signature invalid")


def test_every_byte_of_a_checkpoint_is_covered(path: Path) -> None:
    row = checkpoint_row(path, 13)
    original = row_value(path, "checkpoints", "note", "id", row)
    for position in range(len(original)):
        set_row_value(path, "checkpoints", "note", "id", row, flip_byte(original, position))
        result = verify(path, [LOG_VKEY])
        assert not result.ok, position
        assert result.problems[0].where == "checkpoint at size 13", (position, result.problems)


def test_wrong_or_missing_keys_fail_every_checkpoint(path: Path) -> None:
    for keys in ((OTHER_SIGNER.verifier().vkey(),), ()):
        found = problems(path, keys)
        assert [f.split(":")[0] for f in found] == [f"checkpoint at size {s}" for s in SIZES]
        assert all("not signed by any of the given keys" in f for f in found)
    # A trusted key that is not the log's own (named otherwise) does not vouch for it.
    assert problems(path, (LOG_VKEY, OTHER_SIGNER.verifier().vkey())) == []


def test_a_checkpoint_signed_by_another_key_is_located(path: Path) -> None:
    row = checkpoint_row(path, 13)
    ledger = Ledger(path, readonly=True)
    impostor = sign_checkpoint(Checkpoint(ledger.origin, 13, ledger.root(13)), OTHER_SIGNER)
    set_row_value(path, "checkpoints", "note", "id", row, impostor.encode())
    found = problems(path)
    assert len(found) == 1
    assert found[0].startswith("checkpoint at size 13: not signed by any of the given keys")


def test_a_validly_signed_wrong_root_is_located(path: Path) -> None:
    ledger = Ledger(path, readonly=True)
    wrong = sign_checkpoint(Checkpoint(ledger.origin, 13, ledger.root(12)), LOG_SIGNER)
    set_row_value(path, "checkpoints", "note", "id", checkpoint_row(path, 13), wrong.encode())
    found = problems(path)
    assert found[0] == "checkpoint at size 13: root differs from the log's root at that size"
    # Two signed heads that no single history can satisfy: a fork (split view), which
    # the next checkpoint's consistency check reports too.
    assert found[1].startswith(
        "checkpoint at size 18: not consistent with the earlier checkpoint at size 13"
    )
    assert len(found) == 2


def test_a_changed_size_column_is_located(path: Path) -> None:
    set_row_value(path, "checkpoints", "size", "id", checkpoint_row(path, 13), 14)
    assert problems(path) == ["checkpoint at size 14: its signed note says size 13"]


def test_checkpoints_out_of_order_mean_the_log_shrank(path: Path) -> None:
    set_row_value(path, "checkpoints", "id", "size", 2, 99)  # the oldest now looks newest
    assert problems(path) == [
        "checkpoint at size 2: was signed after the checkpoint at size 18, yet is smaller: "
        "the log shrank"
    ]


def test_a_changed_origin_is_located_at_every_checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 'evil.example/ledger' WHERE key = 'origin'")
    conn.close()
    found = problems(path)
    assert len(found) == 3
    assert all("is for origin 'doormat.example/ledger', the ledger's is" in f for f in found)


# -- raw bytes of the database file -------------------------------------------------------


def _dump(path: Path) -> Any:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (
            conn.execute("SELECT idx, entry, leaf_hash FROM entries ORDER BY idx").fetchall(),
            conn.execute("SELECT size, note FROM checkpoints ORDER BY id").fetchall(),
            conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall(),
        )
    finally:
        conn.close()


def test_raw_byte_flips_are_found_or_change_nothing(template: Path, tmp_path: Path) -> None:
    original = template.read_bytes()
    expected = _dump(template)
    rng = random.Random(2015)
    positions = sorted(set(rng.sample(range(len(original)), 300)) | set(range(0, 100, 3)))
    outcomes = {"file error": 0, "problems": 0, "harmless": 0}
    path = tmp_path / "flipped.db"
    for position in positions:
        data = bytearray(original)
        data[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            result: VerifyReport | None = verify(path, [LOG_VKEY])
        except LedgerFileError as exc:
            message = str(exc)
            assert message and "\n" not in message
            outcomes["file error"] += 1
            continue
        assert result is not None
        if result.ok:
            # Only a flip that changed no row may pass: free space, a header counter.
            assert _dump(path) == expected, position
            outcomes["harmless"] += 1
        else:
            assert all(p.where and p.message for p in result.problems)
            outcomes["problems"] += 1
    assert outcomes["problems"] > 0 and outcomes["file error"] > 0, outcomes


# -- properties -------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_entries = st.one_of(
    st.builds(lambda d: oversight_entry("note", "Clerk", d), _text),
    st.builds(
        lambda cat, seq, plain, body: record_delivered_entry(
            liid="XX-5D1C0A2B9E4F7A31",
            case_reference="OP-ANCHOR-7",
            category=cat,
            sequence=seq,
            delivered=body,
            plaintext=plain if cat == "CC" else None,
            source="relay",
        ),
        st.sampled_from(["IRI", "CC"]),
        st.integers(0, 2**63 - 1),
        st.booleans(),
        st.binary(max_size=64),
    ),
)
_ops = st.lists(st.one_of(st.just("checkpoint"), _entries), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, times=st.integers(0, 2**40))
def test_any_honest_history_verifies(ops: list[Any], times: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.db"
        notes = []
        with Ledger(path, signer=LOG_SIGNER) as ledger:
            for i, op in enumerate(ops):
                if op == "checkpoint":
                    notes.append(ledger.checkpoint())
                else:
                    ledger.append(op, time_ms=times + i)
            verifier = [LOG_SIGNER.verifier()]
            cps = [open_checkpoint(n, verifier).checkpoint for n in ledger.checkpoints()]
            for old, new in itertools.pairwise(cps):
                ledger.consistency_proof(old.size, new.size).verify()
            if cps and cps[-1].size:
                for index in {0, cps[-1].size // 2, cps[-1].size - 1}:
                    proof = ledger.inclusion_proof(index, cps[-1].size)
                    assert proof.root == cps[-1].root
                    proof.verify()
            root = ledger.root()
        result = verify(path, [LOG_VKEY])
        assert result.ok, result.problems
        assert result.root == root and result.checkpoints == len(set(notes))
        with Ledger(path, readonly=True) as again:
            assert again.root() == root


@pytest.fixture(scope="module")
def small_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.db"
    simple_ledger(path, 12, checkpoint_at=(4, 9, 12)).close()
    return path


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(index=st.integers(0, 11), where=st.integers(0, 10_000), mask=st.integers(1, 255))
def test_any_single_byte_change_to_any_entry_is_found(
    small_template: Path, index: int, where: int, mask: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l.db"
        shutil.copyfile(small_template, path)
        data = row_value(path, "entries", "entry", "idx", index)
        set_row_value(path, "entries", "entry", "idx", index, flip_byte(data, where, mask))
        result = verify(path, [LOG_VKEY])
        assert not result.ok
        first = result.problems[0]
        assert first.where == f"entry {index}"
        assert first.message.startswith("leaf hash does not match its content")
        assert "the content was changed" in first.message
