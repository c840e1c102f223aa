"""The audit ledger: entries and their validation, append / reopen / checkpoint / proofs
on the SQLite store, durability across SIGKILL, and the sans-I/O rule for the core."""

from __future__ import annotations

import ast
import base64
import hashlib
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interceptor.ledger import (
    DEFAULT_ORIGIN,
    ENTRY_TYPES,
    MAX_ENTRY_BYTES,
    Entry,
    EntryError,
    Ledger,
    LedgerCore,
    LedgerError,
    LedgerFileError,
    make_entry,
    oversight_entry,
    parse_entry,
    record_delivered_entry,
    report,
    task_start_entry,
    verify,
    warrant_decision_entry,
)
from tests.interceptor.ledger_support import (
    LOG_SIGNER,
    LOG_VKEY,
    Interceptor,
    simple_ledger,
    task_stop_of,
    write_scenario,
)
from tests.support.warrants import draft, signed
from wire.canonical import canonical_bytes
from wire.checkpoint import open_checkpoint
from wire.li.checks import Decision
from wire.merkle import MerkleTree, hash_leaf, verify_consistency, verify_inclusion
from wire.note import Signer

ROOT = Path(__file__).resolve().parents[2]


def decision(**changes: Any) -> Decision:
    fields: dict[str, Any] = {
        "accepted": True,
        "reason": "accepted",
        "message": "case OP-ANCHOR-7 generation 1",
        "checked_at": 1_764_400_000,
        "action": "activate",
        "authorisation_id": "0b7c6f1e-2f4a-4c39-9a59-7d0c3e5b8a11",
        "generation": 1,
        "case_reference": "OP-ANCHOR-7",
        "liid": "XX-5D1C0A2B9E4F7A31",
        "not_after": 1_764_482_800,
        "digest": "ab" * 32,
    }
    fields.update(changes)
    return Decision(**fields)


def record(**changes: Any) -> dict[str, Any]:
    entry = record_delivered_entry(
        liid="XX-5D1C0A2B9E4F7A31",
        case_reference="OP-ANCHOR-7",
        category="CC",
        sequence=4,
        delivered=b"ciphertext",
        plaintext=False,
        source="relay",
        task_id="T-1",
    )
    entry.update(changes)
    return entry


# -- entries --------------------------------------------------------------------------


def valid_entries() -> list[dict[str, Any]]:
    w = signed(draft())
    return [
        decision().to_json(),  # logged as is, flat
        warrant_decision_entry(decision(digest=w.digest), w),
        decision(
            accepted=False,
            reason="malformed",
            action=None,
            authorisation_id=None,
            generation=None,
            case_reference=None,
            liid=None,
            not_after=None,
        ).to_json(),
        task_start_entry("T-1", w),
        task_stop_of("T-1", w, "cancelled"),
        record(),
        record(category="IRI", plaintext=None),
        oversight_entry("inspection", "Investigatory Powers Commissioner", "all in order"),
    ]


def test_every_builder_makes_a_valid_entry_that_round_trips() -> None:
    seen = set()
    for i, body in enumerate(valid_entries()):
        entry = make_entry(i, body, time_ms=1_000 + i)
        seen.add(entry.type)
        data = entry.encode()
        assert data == canonical_bytes(entry.to_json())
        assert parse_entry(data) == entry
        assert entry.leaf_hash == hash_leaf(data)
        assert entry.payload == {
            k: v for k, v in json.loads(json.dumps(body)).items() if k != "type"
        }
    assert seen == set(ENTRY_TYPES)


def test_the_stored_form_is_the_documented_one() -> None:
    entry = make_entry(17, oversight_entry("inspection", "Clerk", "ok"), time_ms=5)
    assert entry.encode() == (
        b'{"index":17,"payload":{"actor":"Clerk","detail":"ok","event":"inspection"},'
        b'"time_ms":5,"type":"oversight","v":1}'
    )


def test_a_refused_forgery_logs_its_categories_and_targets() -> None:
    w = signed(draft(targets=["user:*"]))
    body = warrant_decision_entry(
        decision(accepted=False, reason="wildcard-target", action=None, digest=w.digest), w
    )
    entry = make_entry(0, body, time_ms=0)
    assert entry.payload["targets"] == [{"format": "user", "value": "*"}]
    assert entry.payload["categories"] == ["IRI", "CC"]


def test_a_decision_about_another_warrant_is_refused() -> None:
    with pytest.raises(EntryError, match="digest"):
        warrant_decision_entry(decision(), signed(draft()))


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown type", {"type": "gossip"}, "unknown entry type"),
    ("no type", {"event": "x"}, "needs a 'type'"),
    (
        "missing field",
        {k: v for k, v in oversight_entry("a", "B").items() if k != "detail"},
        "lacks field",
    ),
    ("extra field", {**oversight_entry("a", "B"), "extra": 1}, "unknown field"),
    ("float", record(sequence=1.0), "sequence"),
    ("bool as int", record(sequence=True), "sequence"),
    ("negative sequence", record(sequence=-1), "sequence"),
    ("bad digest", record(digest="AB" * 32), "digest"),
    ("short digest", record(digest="ab"), "digest"),
    ("CC without plaintext flag", record(plaintext=None), "plaintext"),
    ("IRI with a plaintext flag", record(category="IRI", plaintext=True), "plaintext"),
    ("unknown category", record(category="ALL"), "category"),
    ("bad liid", record(liid="has space"), "liid"),
    ("bad source", record(source="Relay Operator"), "source"),
    ("bad task id", record(task_id="*"), "task_id"),
    (
        "decision: accepted without action",
        {**decision().to_json(), "action": None},
        "needs an action",
    ),
    ("decision: unknown reason", {**decision().to_json(), "reason": "because"}, "reason"),
    (
        "decision: missing field",
        {k: v for k, v in decision().to_json().items() if k != "digest"},
        "lacks field",
    ),
    (
        "decision: bad categories",
        {**decision().to_json(), "categories": ["IRI", "IRI"]},
        "categories",
    ),
    (
        "decision: bad target",
        {**decision().to_json(), "targets": [{"format": "ip", "value": "x"}]},
        "format",
    ),
    ("oversight: bad event", oversight_entry("Inspection!", "B"), "event"),
    ("oversight: huge detail", oversight_entry("a", "B", "x" * 5000), "detail"),
    ("nan", record(sequence=float("nan")), "sequence"),
]


@pytest.mark.parametrize(("body", "match"), [(b, m) for _, b, m in BAD], ids=[n for n, _, _ in BAD])
def test_invalid_entries_are_refused_with_a_reason(body: dict[str, Any], match: str) -> None:
    with pytest.raises(EntryError, match=match):
        make_entry(0, body, time_ms=0)


def test_task_start_needs_exact_targets_and_a_window() -> None:
    good = task_start_entry("T-1", signed(draft()))
    for change, match in (
        ({"targets": [{"format": "user", "value": "*"}]}, "not a user id"),
        ({"targets": []}, "targets"),
        ({"categories": []}, "categories"),
        ({"not_after": good["not_before"]}, "later than"),
        ({"generation": 0}, "generation"),
        ({"authorisation_id": "0B7C"}, "UUID"),
    ):
        with pytest.raises(EntryError, match=match):
            make_entry(0, {**good, **change}, time_ms=0)


@pytest.mark.parametrize("time_ms", [-1, 2**53, True, 1.5, "1"])
def test_time_is_integer_milliseconds(time_ms: Any) -> None:
    with pytest.raises(EntryError, match="time_ms"):
        make_entry(0, oversight_entry("a", "B"), time_ms=time_ms)


def test_an_oversized_entry_is_refused() -> None:
    body = {**decision().to_json(), "message": "m" * MAX_ENTRY_BYTES}
    with pytest.raises(EntryError, match="limit"):
        make_entry(0, body, time_ms=0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            b'{"index":0, "payload":{"actor":"B","detail":"","event":"a"},"time_ms":0,'
            b'"type":"oversight","v":1}',
            "canonical",
        ),
        (
            b'{"index":0,"index":0,"payload":{"actor":"B","detail":"","event":"a"},"time_ms":0,'
            b'"type":"oversight","v":1}',
            "repeats",
        ),
        (
            b'{"index":0,"payload":{"actor":"B","detail":"","event":"a"},"time_ms":0,'
            b'"type":"oversight","v":2}',
            "version",
        ),
        (b"\xff", "UTF-8"),
        (b"[]", "object"),
        ("text", "not bytes"),
    ],
)
def test_parse_entry_is_strict(data: Any, match: str) -> None:
    with pytest.raises(EntryError, match=match):
        parse_entry(data)


def test_the_payload_is_copied_when_appended() -> None:
    body = oversight_entry("a", "B", "before")
    entry = make_entry(0, body, time_ms=0)
    body["detail"] = "after"
    assert entry.payload["detail"] == "before"


# -- the store -----------------------------------------------------------------------


def test_append_returns_a_receipt_matching_the_rfc6962_tree(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, signer=LOG_SIGNER) as ledger:
        receipts = [ledger.append(body, time_ms=10 + i) for i, body in enumerate(valid_entries())]
        stored = [e.encode() for e in ledger.entries()]
    reference = MerkleTree()
    for i, (receipt, data) in enumerate(zip(receipts, stored, strict=True)):
        reference.append(data)
        assert receipt.index == i
        assert receipt.tree_size == i + 1
        assert receipt.leaf_hash == hash_leaf(data)
        assert receipt.root == reference.root()


def test_append_is_committed_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.append(oversight_entry("a", "B"), time_ms=1)
        # A different connection (another process could do the same) already sees it.
        other = sqlite3.connect(path)
        assert other.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
        assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reopen_rebuilds_the_same_tree_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with simple_ledger(path, 13, checkpoint_at=(5,)) as ledger:
        root, size = ledger.root(), ledger.size
        before = list(ledger.entries())
    with Ledger(path, signer=LOG_SIGNER) as again:
        assert (again.size, again.root()) == (size, root)
        assert list(again.entries()) == before
        assert again.entry(7) == before[7]
        receipt = again.append(oversight_entry("a", "B"), time_ms=99)
        assert receipt.index == 13
        again.checkpoint()
    result = verify(path, [LOG_VKEY])
    assert result.ok, result.problems
    assert (result.entries, result.checkpoints, result.checkpoints_verified) == (14, 2, 2)


def test_a_refused_entry_leaves_the_ledger_unchanged(tmp_path: Path) -> None:
    with simple_ledger(tmp_path / "l.db", 3) as ledger:
        root = ledger.root()
        with pytest.raises(EntryError):
            ledger.append({"type": "gossip"}, time_ms=1)
        assert (ledger.size, ledger.root()) == (3, root)
        assert ledger.append(oversight_entry("a", "B"), time_ms=1).index == 3


def test_checkpoints_are_signed_c2sp_notes_and_stored(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with simple_ledger(path, 8) as ledger:
        note = ledger.checkpoint()
        assert ledger.checkpoint() == note  # nothing new: the same note, stored once
        opened = open_checkpoint(note, [LOG_SIGNER.verifier()], origin=DEFAULT_ORIGIN)
        assert (opened.checkpoint.size, opened.checkpoint.root) == (8, ledger.root())
        assert note.decode().startswith(f"{DEFAULT_ORIGIN}\n8\n")
        ledger.append(oversight_entry("a", "B"), time_ms=1)
        second = ledger.checkpoint()
        assert ledger.checkpoints() == [note, second]
        assert ledger.checkpoint_at(8) == note and ledger.latest_checkpoint() == second
    with pytest.raises(LedgerError, match="no signing key"), Ledger(path) as unsigned:
        unsigned.checkpoint()


def test_proofs_verify_against_the_checkpointed_roots(tmp_path: Path) -> None:
    with simple_ledger(tmp_path / "l.db", 21, checkpoint_at=(1, 6, 16, 21)) as ledger:
        sizes = [
            open_checkpoint(n, [LOG_SIGNER.verifier()]).checkpoint for n in ledger.checkpoints()
        ]
        for cp in sizes:
            for index in range(cp.size):
                proof = ledger.inclusion_proof(index, cp.size)
                assert proof.root == cp.root
                verify_inclusion(
                    index, cp.size, ledger.entry(index).leaf_hash, list(proof.hashes), cp.root
                )
                proof.verify()
        for old, new in itertools.pairwise(sizes):
            consistency = ledger.consistency_proof(old.size, new.size)
            verify_consistency(old.size, new.size, list(consistency.hashes), old.root, new.root)
        as_json = ledger.inclusion_proof(3).to_json()
        assert set(as_json) == {"leafIdx", "treeSize", "root", "leafHash", "proof"}
        assert base64.b64decode(as_json["root"]) == ledger.root()
        with pytest.raises(LedgerError):
            ledger.inclusion_proof(21)
        with pytest.raises(LedgerError):
            ledger.inclusion_proof(3, 22)
        with pytest.raises(LedgerError):
            ledger.consistency_proof(6, 3)


def test_signer_and_origin_must_match_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path, origin="lab.example/audit").close()
    with pytest.raises(LedgerError, match=r"not 'doormat\.example/ledger'"):
        Ledger(path, origin=DEFAULT_ORIGIN)
    with pytest.raises(LedgerError, match="need a key of that name"):
        Ledger(path, signer=LOG_SIGNER)
    with Ledger(path, signer=Signer.generate("lab.example/audit")) as ledger:
        assert ledger.origin == "lab.example/audit"
        assert ledger.checkpoint().startswith(b"lab.example/audit\n0\n")
    with pytest.raises(LedgerError, match="origin"):
        Ledger(tmp_path / "other.db", origin="has space")


def test_files_that_are_not_ledgers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerFileError, match="no ledger"):
        Ledger(tmp_path / "missing.db", create=False)
    with pytest.raises(LedgerFileError, match="no ledger"):
        Ledger(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not SQLite at all, but it is long enough\n" * 20)
    with pytest.raises(LedgerFileError, match="not a database"):
        Ledger(text)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(LedgerFileError, match="not a doormat ledger"):
        Ledger(foreign)
    with pytest.raises(LedgerFileError, match="not a doormat ledger"):
        verify(foreign, [LOG_VKEY])


def test_read_only_ledgers_refuse_to_write(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    simple_ledger(path, 4).close()
    with Ledger(path, readonly=True, signer=LOG_SIGNER) as ledger:
        assert ledger.size == 4
        with pytest.raises(LedgerError, match="read-only"):
            ledger.append(oversight_entry("a", "B"), time_ms=1)
        with pytest.raises(LedgerError, match="read-only"):
            ledger.checkpoint()


def test_a_second_writer_cannot_fork_the_log(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    first, second = Ledger(path), Ledger(path)
    first.append(oversight_entry("a", "First"), time_ms=1)
    with pytest.raises(LedgerError, match="another writer"):
        second.append(oversight_entry("a", "Second"), time_ms=2)
    assert second.size == 0  # nothing was logged, so the caller must not act
    first.close()
    second.close()
    assert [e.payload["actor"] for e in Ledger(path, readonly=True).entries()] == ["First"]


def test_opening_refuses_a_ledger_with_a_hole(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    simple_ledger(path, 5).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM entries WHERE idx = 2")
    conn.close()
    with pytest.raises(LedgerFileError, match="entry 2 is missing"):
        Ledger(path)


def test_the_core_two_phase_append_changes_nothing_until_commit() -> None:
    core = LedgerCore()
    prepared = core.prepare(oversight_entry("a", "B"), time_ms=1)
    assert core.size == 0
    receipt = core.commit(prepared)
    assert (receipt.index, core.size) == (0, 1)
    with pytest.raises(LedgerError, match="not the next one"):
        core.commit(prepared)
    with pytest.raises(LedgerError, match="named"):
        core.checkpoint(Signer.generate("someone.else/log"))


def test_a_scenario_ledger_verifies(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, signer=LOG_SIGNER) as ledger:
        write_scenario(ledger)
        assert isinstance(ledger.entry(0), Entry)
    result = verify(path, [LOG_VKEY])
    assert result.ok, result.problems
    assert result.latest is not None and result.latest.size == result.size


def test_interceptor_helper_logs_before_it_applies(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db") as ledger:
        li = Interceptor(ledger)
        d = li.submit(signed(draft()))
        assert d.accepted and ledger.size == 1
        assert (
            Decision.from_json(
                {
                    "type": "warrant-decision",
                    **{
                        k: v
                        for k, v in ledger.entry(0).payload.items()
                        if k not in ("categories", "targets")
                    },
                }
            )
            == d
        )


# -- durability across SIGKILL ------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from interceptor.ledger import Ledger, oversight_entry
    from wire.note import Signer
    signer = Signer.from_skey(sys.argv[2])
    ledger = Ledger(sys.argv[1], signer=signer)
    mode, count = sys.argv[3], int(sys.argv[4])
    i = ledger.size
    while True:
        receipt = ledger.append(oversight_entry("note", "Clerk", f"entry {i}"), time_ms=i)
        # "act" only after append returned: the parent counts these acts.
        sys.stdout.write(f"acted {receipt.index}\\n")
        sys.stdout.flush()
        if receipt.index % 7 == 6:
            ledger.checkpoint()
        i += 1
        if mode == "self" and i == count:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _child(path: Path, mode: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), LOG_SIGNER.skey(), mode, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_right_after_append_keeps_every_returned_entry(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    proc = _child(path, "self", 25)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    acted = [int(line.split()[1]) for line in out.splitlines()]
    assert acted == list(range(25))
    # The WAL is still there (no clean close): verify reads it, read-only, as is.
    assert (tmp_path / "l.db-wal").exists()
    result = verify(path, [LOG_VKEY])
    assert result.ok, result.problems
    assert result.size == 25 and result.checkpoints == 3
    with Ledger(path, signer=LOG_SIGNER) as ledger:
        assert ledger.size == 25
        assert [e.payload["detail"] for e in ledger.entries()] == [f"entry {i}" for i in range(25)]


def test_sigkill_at_random_moments_never_loses_an_acted_on_entry(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    total_acted = 0
    for round_ in range(4):
        proc = _child(path, "loop", 0)
        assert proc.stdout is not None
        wanted = 10 + 7 * round_
        acted = []
        for line in proc.stdout:
            acted.append(int(line.split()[1]))
            if len(acted) == wanted:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: maybe mid-append, mid-checkpoint
        proc.wait(timeout=30)
        assert proc.stdout is not None
        acted += [int(line.split()[1]) for line in proc.stdout.read().splitlines()]
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
        total_acted = max(acted) + 1
        result = verify(path, [LOG_VKEY])
        assert result.ok, result.problems
        # Every entry the child acted on is in the log (one more may have been logged
        # and not yet acted on: log before act allows that, never the reverse).
        assert result.size in (total_acted, total_acted + 1)
    with Ledger(path) as ledger:
        assert [e.index for e in ledger.entries()] == list(range(ledger.size))


def test_verify_and_report_run_beside_a_busy_writer(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path).close()
    proc = _child(path, "loop", 0)
    try:
        assert proc.stdout is not None
        for _ in range(5):  # let it get going
            proc.stdout.readline()
        sizes = []
        for _ in range(15):
            result = verify(path, [LOG_VKEY])
            assert result.ok, result.problems
            sizes.append(result.size)
            assert report(path)["anomalies"] == []
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert sizes[-1] > sizes[0]  # the log grew while it was being checked


def test_the_documented_checkpoint_is_real(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "ledger.md").read_text()
    blocks = re.findall(r"```text\n(.*?)```", doc, re.S)
    note = next(b for b in blocks if b.startswith("doormat.example/ledger\n18\n"))
    vkey = next(b for b in blocks if b.startswith("doormat.example/ledger+")).strip()
    seed = hashlib.sha256(b"doormat documentation-only ledger key").digest()
    signer = Signer(DEFAULT_ORIGIN, Ed25519PrivateKey.from_private_bytes(seed))
    assert signer.verifier().vkey() == vkey
    open_checkpoint(note, [signer.verifier()], origin=DEFAULT_ORIGIN)
    with Ledger(tmp_path / "doc.db", signer=signer) as ledger:
        write_scenario(ledger)
        assert ledger.latest_checkpoint() == note.encode()


# -- sans I/O --------------------------------------------------------------------------


def test_the_ledger_core_is_sans_io() -> None:
    # The core is every module of interceptor/ledger/ but the SQLite store.
    core = [p for p in (ROOT / "interceptor" / "ledger").glob("*.py") if p.name != "store.py"]
    assert core
    imported: set[str] = set()
    for node in (n for path in core for n in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"sqlite3", "os", "pathlib", "time", "asyncio", "socket", "subprocess", "io"}
    assert not imported & forbidden
