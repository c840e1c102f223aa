"""The audit ledger cannot be rolled back unseen (issue 12, point 4).

The attack, as reproduced on the old main: with the ledger's verifier key written next to
the ledger, three rollbacks all passed ``doormat ledger verify`` ("ledger OK"):

1. an older copy of the ledger restored (before a cancellation),
2. the entries after a checkpoint deleted (with the later checkpoint rows),
3. the ledger rewritten and re-signed with a new key, placed beside it;

and an interceptor restarted on the rolled-back ledger re-provisioned the cancelled task
at the relay.

Now verification rests on what the ledger's operator cannot rewrite: the court's pinned
keys (``court/ledger.vkeys``, outside the interceptor's directory) and the court's
witness, which cosigned each checkpoint before the interceptor acted. Each rollback is
named by ``doormat ledger verify``, and the restarted interceptor refuses to start.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from doormat.cast import default_cast
from doormat.system import System
from interceptor.court import approve, cancel
from interceptor.ledger import DEFAULT_ORIGIN, Ledger, LedgerRollbackError, WitnessError
from tests.support.polling import until
from wire.note import Signer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def cancelled_case(tmp_path: Path) -> AsyncIterator[tuple[System, Path, int]]:
    """A system whose case was accepted (the ledger copied then: ``old.sqlite``) and
    then cancelled. Yields the system, the old copy, and the ledger's size at the copy."""
    async with System(default_cast(), state_dir=tmp_path / "state", li="scoped") as system:
        assert system.ledger is not None and system.relay is not None
        now = int(time.time())
        w = system.legal.warrant(
            case="OP-RB",
            targets=["user:alice@acme"],
            categories=["IRI"],
            not_before=now,
            not_after=now + 600,
        )
        assert (await system.submit_warrant(w.encode())).accepted
        await until(lambda: bool(system.relay.li.tasks), what="the task at the relay")
        old = tmp_path / "old.sqlite"
        backup(system.ledger.path, old)
        size = system.ledger.size
        stop = cancel(w)
        for key in (system.legal.executive, system.legal.judicial):
            stop = approve(stop, key)
        assert (await system.submit_warrant(stop.encode())).action == "cancel"
        await until(lambda: not system.relay.li.tasks, what="the relay to stop the task")
        yield system, old, size


def backup(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        src.close()
        dst.close()


def restore(copy: Path, path: Path) -> None:
    """Put ``copy`` in place of the ledger file, as an operator with the disk would."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(copy, path)


def older_copy(system: System, old: Path, size: int, out: Path) -> Path:
    shutil.copy(old, out)
    return out


def cut_after_checkpoint(system: System, old: Path, size: int, out: Path) -> Path:
    assert system.ledger is not None
    backup(system.ledger.path, out)
    db = sqlite3.connect(out)
    with db:
        db.execute("DELETE FROM entries WHERE idx >= ?", (size,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (size,))
    db.close()
    return out


def resigned_with_new_key(system: System, old: Path, size: int, out: Path) -> Path:
    """The same first entries, rewritten into a new file, checkpointed by a new key of
    the same name, whose verifier key is written beside it."""
    assert system.ledger is not None
    evil = Signer.generate(DEFAULT_ORIGIN)
    with Ledger(out, signer=evil) as forged:
        for e in system.ledger.entries(0, size):
            forged.append({"type": e.type, **e.payload}, time_ms=e.time_ms)
        forged.checkpoint()
    (out.parent / "ledger.vkey").write_text(evil.verifier().vkey() + "\n")
    return out


ROLLBACKS: dict[str, tuple[Callable[[System, Path, int, Path], Path], str]] = {
    "older-copy": (older_copy, "it was rolled back"),
    "cut-after-checkpoint": (cut_after_checkpoint, "it was rolled back"),
    "resigned-new-key": (resigned_with_new_key, "not signed by any of the given keys"),
}


def ledger_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doormat", "ledger", "verify", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_no_verifier_key_beside_the_ledger(cancelled_case: tuple[System, Path, int]) -> None:
    system, _, _ = cancelled_case
    assert system.ledger is not None
    beside = sorted(p.name for p in system.ledger.path.parent.iterdir())
    assert not [name for name in beside if "key" in name], beside
    assert system.pinned_keys_path.parent != system.ledger.path.parent
    assert system.witness_path.parent != system.ledger.path.parent
    # The genuine ledger verifies against the court's keys and witness.
    system.ledger.checkpoint()
    result = ledger_verify(
        "--ledger", str(system.ledger.path), "--keys", str(system.pinned_keys_path),
        "--witnessed", str(system.witness_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "consistent with the witness's checkpoint at size" in result.stdout


@pytest.mark.parametrize("how", list(ROLLBACKS))
async def test_verify_names_each_rollback(
    cancelled_case: tuple[System, Path, int], tmp_path: Path, how: str
) -> None:
    system, old, size = cancelled_case
    make, expected = ROLLBACKS[how]
    (tmp_path / how).mkdir()
    rolled = make(system, old, size, tmp_path / how / "ledger.sqlite")

    # Against the court's pinned keys and the witness's state: refused, and named.
    result = ledger_verify(
        "--ledger", str(rolled), "--keys", str(system.pinned_keys_path),
        "--witnessed", str(system.witness_path),
    )
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout
    witness_lines = [line for line in result.stdout.splitlines() if line.startswith("witness:")]
    assert witness_lines, result.stdout

    # The witness alone names it too, even given the forger's key beside the ledger.
    beside = rolled.parent / "ledger.vkey"
    if beside.exists():
        witness_vkey = system.witness_cosigner.verifier().vkey()
        result = ledger_verify(
            "--ledger", str(rolled), "--keys", str(beside), "--key", witness_vkey,
            "--witnessed", str(system.witness_path),
        )
        assert result.returncode == 1, result.stdout
        assert "witness: the witnessed checkpoint does not verify" in result.stdout
        assert "is beside the ledger" in result.stderr


@pytest.mark.parametrize("how", list(ROLLBACKS))
async def test_a_restarted_interceptor_refuses_a_rolled_back_ledger(
    cancelled_case: tuple[System, Path, int], tmp_path: Path, how: str
) -> None:
    system, old, size = cancelled_case
    assert system.ledger is not None and system.relay is not None
    make, _ = ROLLBACKS[how]
    (tmp_path / how).mkdir()
    rolled = make(system, old, size, tmp_path / how / "ledger.sqlite")
    path = system.ledger.path
    mark = len(system.events.events())
    await system._stop_interceptor()
    restore(rolled, path)
    if how == "resigned-new-key":
        # The operator also swaps the interceptor's checkpoint key for the forger's.
        system.ledger_signer = Signer.generate(DEFAULT_ORIGIN)
    with pytest.raises(WitnessError) as caught:
        await system._start_interceptor()
    if how != "resigned-new-key":
        assert isinstance(caught.value, LedgerRollbackError)
        assert "rolled back" in str(caught.value) or "rewritten" in str(caught.value)
    halted = [e for e in system.events.events()[mark:] if e["kind"] == "interceptor.halted"]
    assert halted and halted[0]["reason"] == str(caught.value)
    await asyncio.sleep(0.3)
    # The cancelled task stays cancelled: nothing was re-provisioned.
    assert system.relay.li.tasks == {}
    assert not [e for e in system.events.events()[mark:] if e["kind"] == "relay.task_started"]


async def test_a_rollback_under_the_running_interceptor_halts_it(
    cancelled_case: tuple[System, Path, int],
) -> None:
    """Entries cut from the file while the interceptor runs: its next append is refused,
    it halts, and oversight names the rollback."""
    system, _, size = cancelled_case
    assert system.ledger is not None
    db = sqlite3.connect(system.ledger.path)
    with db:
        db.execute("DELETE FROM entries WHERE idx >= ?", (size,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (size,))
    db.close()
    now = int(time.time())
    w = system.legal.warrant(case="OP-AFTER", targets=["user:bob@acme"], categories=["IRI"],
                             not_before=now, not_after=now + 600)
    with pytest.raises(Exception, match="lost entries"):
        await system.submit_warrant(w.encode())
    assert system.interceptor is not None and system.interceptor.core.halted
    result = await system.verify_ledger()
    assert not result["ok"]
    assert any("it was rolled back" in p for p in result["problems"]), result["problems"]
    kinds = [e["kind"] for e in system.events.events()]
    assert "interceptor.halted" in kinds and "ledger.rollback_detected" in kinds


async def test_verify_cli_needs_the_witness_key_and_the_right_origin(
    cancelled_case: tuple[System, Path, int], tmp_path: Path
) -> None:
    system, _, _ = cancelled_case
    assert system.ledger is not None
    ledger = str(system.ledger.path)
    log_key = system.ledger_signer.verifier().vkey()
    # A witnessed checkpoint without the witness's key to check it: unusable input.
    result = ledger_verify("--ledger", ledger, "--key", log_key,
                           "--witnessed", str(system.witness_path))
    assert result.returncode == 2 and "witness's verifier key" in result.stderr
    # A witness state that holds nothing for this ledger's origin: a located problem.
    other = tmp_path / "other-witness.json"
    other.write_text('{"v": 1, "logs": {}, "evidence": []}')
    result = ledger_verify("--ledger", ledger, "--keys", str(system.pinned_keys_path),
                           "--witnessed", str(other))
    assert result.returncode == 1
    assert "witness: no witnessed checkpoint for this ledger's origin" in result.stdout
    # The witness's latest cosigned note alone (not its state file) works too, as JSON.
    note = system.witness.latest(DEFAULT_ORIGIN) if system.witness else None
    assert note is not None
    (tmp_path / "cosigned.note").write_bytes(note)
    system.ledger.checkpoint()
    result = ledger_verify("--ledger", ledger, "--keys", str(system.pinned_keys_path),
                           "--witnessed", str(tmp_path / "cosigned.note"), "--json")
    assert result.returncode == 0, result.stdout
    assert '"witnessed"' in result.stdout and '"size"' in result.stdout
