"""The court's witness of the audit ledger, and the ledger's side of witnessing
(issue 12, point 4): C2SP cosignatures, the add-checkpoint rules, the state file, the
refusals, and ``verify`` against a witnessed checkpoint - sans broker.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from interceptor.ledger import (
    DEFAULT_ORIGIN,
    Ledger,
    LedgerRollbackError,
    WitnessError,
    Witnessing,
    oversight_entry,
    verify,
    witness_now,
)
from interceptor.witness import Witness, WitnessCore, WitnessState, WitnessStateError
from tests.interceptor.ledger_support import LOG_SIGNER
from wire.b64 import b64decode
from wire.checkpoint import open_checkpoint
from wire.note import Signer, parse_note
from wire.witness import (
    AddCheckpoint,
    CosignatureVerifier,
    Cosigner,
    WitnessFormatError,
    WitnessResponse,
    cosignature_time,
    cosigned_message,
)

COSIGNER = Cosigner.generate("witness.example/court")
NOW = 1_764_400_000


def grow(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.append(oversight_entry("note", "Clerk", f"entry {ledger.size + i}"), time_ms=1)


def core() -> WitnessCore:
    return WitnessCore(COSIGNER, {DEFAULT_ORIGIN: [LOG_SIGNER.verifier()]})


def request(ledger: Ledger, old: int) -> bytes:
    proof = ledger.consistency_proof(old).hashes if old else ()
    return AddCheckpoint(old, tuple(proof), ledger.checkpoint()).encode()


def add(c: WitnessCore, body: bytes) -> WitnessResponse:
    response, state = c.add_checkpoint(body, now=NOW)
    c.commit(state)
    return response


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite", signer=LOG_SIGNER)


# ------------------------------------------------------------------------ cosignatures


def test_cosignature_key_id_and_vkey_follow_the_spec() -> None:
    v = COSIGNER.verifier()
    digest = hashlib.sha256(v.name.encode() + b"\n\x04" + v.public_key).digest()
    assert v.key_id == int.from_bytes(digest[:4], "big")
    assert CosignatureVerifier.from_vkey(v.vkey()) == v
    assert b64decode(v.vkey().split("+", 2)[2], "key")[0] == 0x04
    assert Cosigner.from_skey(COSIGNER.skey()).verifier() == v
    assert "PRIVATE" not in repr(COSIGNER)


def test_a_cosignature_verifies_with_the_log_signature_and_carries_its_time(
    ledger: Ledger,
) -> None:
    grow(ledger, 3)
    note = ledger.checkpoint().decode()
    text = parse_note(note).text
    line = COSIGNER.cosign(text, NOW)
    both = open_checkpoint(note + line, [LOG_SIGNER.verifier(), COSIGNER.verifier()])
    assert set(both.note.signers) == {DEFAULT_ORIGIN, COSIGNER.name}
    (sig,) = [s for s in both.note.verified if s.name == COSIGNER.name]
    assert cosignature_time(sig) == NOW
    # The signed message is the spec's: header, time line, the checkpoint text.
    assert cosigned_message(text, NOW).startswith(b"cosignature/v1\ntime 1764400000\n")
    # A cosignature is not a log signature: the same key as a plain note key fails.
    plain = Signer("witness.example/court", COSIGNER._key)
    with pytest.raises(Exception, match="no signature from a known key"):
        open_checkpoint(note.split("\n\n")[0] + "\n\n" + line, [plain.verifier()],
                        require_origin_key=False)


def test_add_checkpoint_requests_are_parsed_strictly() -> None:
    good = AddCheckpoint(3, (b"\x01" * 32,), b"cp\n").encode()
    assert AddCheckpoint.parse(good) == AddCheckpoint(3, (b"\x01" * 32,), b"cp\n")
    for bad in (b"old 03\n\ncp", b"old 1\nnot-base64\n\ncp", b"new 1\n\ncp", b"old 1",
                b"old -1\n\ncp", ("old 1\n" + "AQ==\n" * 64 + "\ncp").encode()):
        with pytest.raises(WitnessFormatError):
            AddCheckpoint.parse(bad)


# ------------------------------------------------------------------- the witness's rules


def test_first_then_consistent_checkpoints_are_cosigned(ledger: Ledger) -> None:
    c = core()
    grow(ledger, 2)
    assert add(c, request(ledger, 0)).status == 200
    grow(ledger, 5)
    answer = add(c, request(ledger, 2))
    assert answer.status == 200 and answer.body.startswith("— witness.example/court ".encode())
    held = c.latest(DEFAULT_ORIGIN)
    assert held is not None and (held.size, held.root) == (7, ledger.root())
    # The same checkpoint again (a lost answer): cosigned again.
    assert add(c, request(ledger, 7)).status == 200


def test_a_stale_old_size_gets_409_with_the_witness_size(ledger: Ledger) -> None:
    c = core()
    grow(ledger, 4)
    assert add(c, request(ledger, 0)).status == 200
    grow(ledger, 1)
    answer = add(c, request(ledger, 0))
    assert answer.status == 409 and answer.body == b"4\n" and answer.conflict_size() == 4


def test_a_rewritten_history_gets_422_and_is_kept_as_evidence(tmp_path: Path) -> None:
    c = core()
    a = Ledger(tmp_path / "a.sqlite", signer=LOG_SIGNER)
    grow(a, 4)
    assert add(c, request(a, 0)).status == 200
    # Another history with the same key: 6 different entries, a proof from 4 to 6.
    b = Ledger(tmp_path / "b.sqlite", signer=LOG_SIGNER)
    for i in range(6):
        b.append(oversight_entry("note", "Forger", f"other {i}"), time_ms=2)
    answer = add(c, request(b, 4))
    assert answer.status == 422 and "not consistent" in answer.reason
    assert c.latest(DEFAULT_ORIGIN).size == 4  # type: ignore[union-attr]
    assert [e.old_size for e in c.state.evidence] == [4]
    assert "\n\n— doormat.example/ledger " in c.state.evidence[0].note


def test_the_same_size_with_another_root_gets_409(tmp_path: Path) -> None:
    c = core()
    a = Ledger(tmp_path / "a.sqlite", signer=LOG_SIGNER)
    grow(a, 3)
    assert add(c, request(a, 0)).status == 200
    b = Ledger(tmp_path / "b.sqlite", signer=LOG_SIGNER)
    for i in range(3):
        b.append(oversight_entry("note", "Forger", f"other {i}"), time_ms=2)
    answer = add(c, AddCheckpoint(3, (), b.checkpoint()).encode())
    assert answer.status == 409 and answer.body == b"3\n" and "forked" in answer.reason
    assert len(c.state.evidence) == 1


@pytest.mark.parametrize(
    ("case", "status"),
    [("unknown-origin", 404), ("other-key", 403), ("malformed", 400), ("old-too-big", 400),
     ("proof-from-zero", 400), ("bad-proof", 422)],
)
def test_refusals(ledger: Ledger, tmp_path: Path, case: str, status: int) -> None:
    c = core()
    grow(ledger, 3)
    assert add(c, request(ledger, 0)).status == 200
    grow(ledger, 2)
    if case == "unknown-origin":
        other = Ledger(tmp_path / "o.sqlite", signer=Signer.generate("other.example/log"),
                       origin="other.example/log")
        grow(other, 1)
        body = AddCheckpoint(0, (), other.checkpoint()).encode()
    elif case == "other-key":
        evil = Ledger(tmp_path / "e.sqlite", signer=Signer.generate(DEFAULT_ORIGIN))
        grow(evil, 5)
        body = request(evil, 3)
    elif case == "malformed":
        body = b"old 3\n\ndoormat.example/ledger\nnot a size\n\n"
    elif case == "old-too-big":
        body = AddCheckpoint(9, (), ledger.checkpoint()).encode()
    elif case == "proof-from-zero":
        body = AddCheckpoint(0, (b"\x00" * 32,), ledger.checkpoint()).encode()
    else:
        proof = [bytes([h[0] ^ 1]) + h[1:] for h in ledger.consistency_proof(3).hashes]
        body = AddCheckpoint(3, tuple(proof), ledger.checkpoint()).encode()
    answer = add(c, body)
    assert answer.status == status, answer.reason
    assert c.latest(DEFAULT_ORIGIN).size == 3  # type: ignore[union-attr]


# --------------------------------------------------------------------- the state file


def test_state_is_persisted_before_the_answer_and_reloaded(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "court" / "witness.json"
    w = Witness(path, COSIGNER, {DEFAULT_ORIGIN: [LOG_SIGNER.verifier()]}, clock=lambda: NOW)
    grow(ledger, 3)
    assert w.add_checkpoint(request(ledger, 0)).ok
    assert path.stat().st_mode & 0o777 == 0o600
    saved = json.loads(path.read_text())
    assert saved["logs"][DEFAULT_ORIGIN]["size"] == 3
    again = Witness(path, COSIGNER, {DEFAULT_ORIGIN: [LOG_SIGNER.verifier()]}, clock=lambda: NOW)
    grow(ledger, 1)
    assert again.add_checkpoint(request(ledger, 0)).status == 409  # it remembers 3
    assert again.add_checkpoint(request(ledger, 3)).ok
    note = again.latest(DEFAULT_ORIGIN)
    assert note is not None and b"\n4\n" in note


def test_a_failed_write_cosigns_nothing(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = Witness(tmp_path / "witness.json", COSIGNER, {DEFAULT_ORIGIN: [LOG_SIGNER.verifier()]})
    grow(ledger, 2)

    def disk_full(path: Path, data: bytes, **options: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("interceptor.witness.write_atomic", disk_full)
    with pytest.raises(OSError):
        w.add_checkpoint(request(ledger, 0))
    assert w.latest(DEFAULT_ORIGIN) is None  # not committed in memory either
    assert not (tmp_path / "witness.json").exists()


def test_an_unreadable_state_file_stops_the_witness(tmp_path: Path) -> None:
    path = tmp_path / "witness.json"
    path.write_text('{"v": 1, "logs": {"x": {"size": "3"}}}')
    with pytest.raises(WitnessStateError, match="will not start"):
        Witness(path, COSIGNER, {})
    with pytest.raises(WitnessStateError):
        WitnessState.parse(b"[]")


# ------------------------------------------------------------ the ledger's side, verify


def witnessing(ledger: Ledger) -> Witnessing:
    return Witnessing(ledger, log_key=LOG_SIGNER.verifier(), witness_key=COSIGNER.verifier())


def test_a_fresh_interceptor_learns_the_witness_size_and_proves_from_it(
    ledger: Ledger,
) -> None:
    c = core()
    grow(ledger, 3)
    witness_now(witnessing(ledger), lambda body: add(c, body))
    grow(ledger, 2)
    fresh = witnessing(ledger)  # after a restart: it knows nothing, asks with old 0
    seen: list[int] = []

    def call(body: bytes) -> WitnessResponse:
        seen.append(AddCheckpoint.parse(body).old_size)
        return add(c, body)

    witness_now(fresh, call)
    assert seen == [0, 3] and fresh.up_to_date
    assert fresh.witnessed is not None and fresh.witnessed.size == 5


def test_a_ledger_behind_the_witness_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    c = core()
    grow(ledger, 3)
    copy = tmp_path / "old.sqlite"
    ledger.close()
    shutil.copy(ledger.path, copy)
    ledger = Ledger(ledger.path, signer=LOG_SIGNER)
    grow(ledger, 4)
    witness_now(witnessing(ledger), lambda body: add(c, body))
    old = Ledger(copy, signer=LOG_SIGNER)
    with pytest.raises(LedgerRollbackError, match="has only 3: it was rolled back"):
        witness_now(witnessing(old), lambda body: add(c, body))


def test_a_forged_ok_does_not_count(ledger: Ledger) -> None:
    grow(ledger, 2)
    impostor = Cosigner.generate(COSIGNER.name)
    w = witnessing(ledger)

    def call(body: bytes) -> WitnessResponse:
        note = AddCheckpoint.parse(body).checkpoint.decode()
        line = impostor.cosign(parse_note(note).text, NOW)
        return WitnessResponse(200, line.encode(), "ok")

    with pytest.raises(WitnessError, match=r"cosignature does not verify|no cosignature"):
        witness_now(w, call)
    assert w.witnessed is None


def test_verify_against_the_witnessed_checkpoint(ledger: Ledger, tmp_path: Path) -> None:
    c = core()
    grow(ledger, 5)
    witness_now(witnessing(ledger), lambda body: add(c, body))
    keys = [LOG_SIGNER.verifier(), COSIGNER.verifier()]
    witnessed = c.latest(DEFAULT_ORIGIN).note.encode()  # type: ignore[union-attr]
    report = verify(ledger.path, keys, witnessed=witnessed)
    assert report.ok and report.witnessed is not None and report.witnessed.size == 5
    assert "consistent with the witness's checkpoint at size 5" in report.summary()
    # Without the witness's key the witnessed checkpoint cannot be checked: refused.
    with pytest.raises(Exception, match="witness's verifier key"):
        verify(ledger.path, [LOG_SIGNER.verifier()], witnessed=witnessed)
    # A cosignature by someone else is no witness.
    other = Cosigner.generate(COSIGNER.name)
    report = verify(ledger.path, [LOG_SIGNER.verifier(), other.verifier()], witnessed=witnessed)
    assert not report.ok and report.problems[0].where == "witness"
    # Not checked against any witness: the summary says what that leaves open.
    assert "NOT checked against a witness" in verify(ledger.path, keys).summary()


def test_entries_cut_under_a_running_writer_are_refused(ledger: Ledger) -> None:
    """A rollback while the interceptor runs: its next append fails, nothing logged."""
    import sqlite3

    grow(ledger, 4)
    db = sqlite3.connect(ledger.path)
    with db:
        db.execute("DELETE FROM entries WHERE idx >= 2")
    db.close()
    with pytest.raises(Exception, match=r"lost entries 2\.\.3 while open"):
        grow(ledger, 1)
