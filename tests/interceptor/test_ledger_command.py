"""``doormat ledger verify / report / checkpoint / prove``: exit codes, located problems,
one-line errors, and prove -> verify-proof round trips.

The main paths run as real subprocesses (``python -m doormat ledger ...``), as a user
runs them; the long lists of bad inputs call ``doormat.cli.main`` in-process, which is
the same code without the ~0.4 s interpreter start (and stricter: an unexpected
exception would fail the test instead of becoming a traceback on stderr)."""

from __future__ import annotations

import base64
import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from doormat.cli import main as cli_main
from interceptor.ledger import Ledger, report
from tests.interceptor.ledger_support import (
    LOG_SIGNER,
    LOG_VKEY,
    OTHER_SIGNER,
    flip_byte,
    row_value,
    set_row_value,
    write_scenario,
)
from wire.checkpoint import open_checkpoint
from wire.note import Signer


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doormat", "ledger", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``doormat ledger ARGS`` in-process, as a CompletedProcess."""
    try:
        code = cli_main(["ledger", *args])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["doormat", "ledger", *args], code, out, err)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("doormat ledger: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    ledger = base / "ledger.db"
    with Ledger(ledger, signer=LOG_SIGNER) as log:
        write_scenario(log)
    # The pinned copy of the key lives elsewhere than the ledger (the court's copy): a
    # key file beside the ledger draws a warning.
    (base / "court").mkdir()
    keys = base / "court" / "keys.txt"
    keys.write_text(f"# the audit ledger's key\n\n{LOG_VKEY}\n")
    skey = base / "ledger.skey"
    skey.write_text(LOG_SIGNER.skey() + "\n")
    return {"ledger": ledger, "keys": keys, "skey": skey, "base": base}


@pytest.fixture
def ledger(files: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "ledger.db"
    shutil.copyfile(files["ledger"], copy)
    return copy


# -- verify ---------------------------------------------------------------------------


def test_verify_ok(files: dict[str, Path]) -> None:
    result = run("verify", "--ledger", str(files["ledger"]), "--keys", str(files["keys"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ledger OK: 18 entries, root ")
    assert "3 of 3 checkpoints verified (latest at size 18)" in result.stdout
    assert result.stderr == ""


def test_verify_tampered_locates_every_problem(ledger: Path) -> None:
    data = row_value(ledger, "entries", "entry", "idx", 3)
    set_row_value(ledger, "entries", "entry", "idx", 3, flip_byte(data, 40))
    result = run("verify", "--ledger", str(ledger), "--key", LOG_VKEY)
    line = one_line_error(result, 1, "does not verify", "problems", "entry 3")
    assert "first: entry 3: leaf hash does not match its content" in line
    out = result.stdout.splitlines()
    assert out[0].startswith("entry 3: leaf hash does not match its content")
    assert "checkpoint at size 13: root differs from the log's root at that size" in out
    assert "checkpoint at size 18: root differs from the log's root at that size" in out


def test_verify_json(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_row_value(ledger, "checkpoints", "size", "size", 13, 12)
    result = main(capsys, "verify", "--ledger", str(ledger), "--key", LOG_VKEY, "--json")
    assert result.returncode == 1
    obj = json.loads(result.stdout)
    assert obj["ok"] is False
    assert obj["problems"] == [
        {"where": "checkpoint at size 12", "message": "its signed note says size 13"}
    ]


def test_verify_with_the_wrong_key_fails_at_each_checkpoint(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    result = main(
        capsys, "verify", "--ledger", str(files["ledger"]), "--key", OTHER_SIGNER.verifier().vkey()
    )
    one_line_error(result, 1, "3 problems")
    assert all("not signed by any of the given keys" in line for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--ledger", "{base}/missing.db", "--key", LOG_VKEY], ["no ledger at"]),
        (["--ledger", "{base}/court/keys.txt", "--key", LOG_VKEY], ["not a database"]),
        (["--ledger", "{base}", "--key", LOG_VKEY], ["is not a file"]),
        (["--ledger", "{ledger}"], ["--key VKEY or --keys FILE"]),
        (["--ledger", "{ledger}", "--key", "nonsense"], ["verifier key", "form"]),
        (["--ledger", "{ledger}", "--key", LOG_VKEY[:-2] + "AA"], ["verifier key"]),
        (["--ledger", "{ledger}", "--keys", "{base}/nope.txt"], ["cannot read key file"]),
        (["--ledger", "{ledger}", "--keys", "{base}/ledger.skey"], ["private signing key"]),
        (["--ledger", "{ledger}", "--keys", "{base}/binary"], ["not UTF-8"]),
    ],
)
def test_verify_unusable_input_is_one_line_exit_2(
    files: dict[str, Path],
    args: list[str],
    words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    (files["base"] / "binary").write_bytes(b"\xff\xfe\x00")
    filled = [a.format(base=files["base"], ledger=files["ledger"]) for a in args]
    line = one_line_error(main(capsys, "verify", *filled), 2, *words)
    assert "PRIVATE+KEY" not in line  # a misplaced signing key is never echoed


def test_verify_malformed_input_as_a_subprocess(files: dict[str, Path], tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    one_line_error(
        run("verify", "--ledger", str(foreign), "--key", LOG_VKEY), 2, "not a doormat ledger"
    )
    one_line_error(
        run("verify", "--ledger", str(files["ledger"]), "--key", "nonsense"), 2, "verifier key"
    )


def test_raw_flips_never_give_a_traceback(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = files["ledger"].read_bytes()
    rng = random.Random(6962)
    path = tmp_path / "flipped.db"
    codes = set()
    # The header, the schema page and rows: places where SQLite itself may break. The
    # first two as real subprocesses, the rest in-process.
    positions = (0, 100, 18, 28, 105, 4096 + 8, *rng.sample(range(len(original)), 30))
    for number, position in enumerate(positions):
        data = bytearray(original)
        data[position % len(data)] ^= 0xFF
        path.write_bytes(bytes(data))
        args = ("verify", "--ledger", str(path), "--key", LOG_VKEY)
        result = run(*args) if number < 2 else main(capsys, *args)
        assert "Traceback" not in result.stdout + result.stderr, position
        assert result.returncode in (0, 1, 2)
        if result.returncode:
            one_line_error(result, result.returncode)
        codes.add(result.returncode)
    assert codes & {1, 2}


# -- report ---------------------------------------------------------------------------


def test_report_text_and_json(files: dict[str, Path]) -> None:
    text = run("report", "--ledger", str(files["ledger"]))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("Transparency report: doormat.example/ledger\n")
    assert "Records delivered: IRI 5, CC 3" in text.stdout
    as_json = run("report", "--ledger", str(files["ledger"]), "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == report(files["ledger"])


def test_report_on_unusable_input(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one_line_error(
        main(capsys, "report", "--ledger", str(files["base"] / "missing.db")), 2, "no ledger"
    )
    one_line_error(main(capsys, "report", "--ledger", str(files["keys"])), 2, "not a database")


# -- checkpoint -----------------------------------------------------------------------


def test_checkpoint_signs_and_stores(ledger: Path, files: dict[str, Path]) -> None:
    with Ledger(ledger) as log:
        log.append(
            {"type": "oversight", "event": "inspection", "actor": "Clerk", "detail": ""}, time_ms=1
        )
    result = run("checkpoint", "--ledger", str(ledger), "--signing-key", str(files["skey"]))
    assert result.returncode == 0, result.stderr
    cp = open_checkpoint(result.stdout, [LOG_SIGNER.verifier()]).checkpoint
    assert cp.size == 19
    assert Ledger(ledger, readonly=True).latest_checkpoint() == result.stdout.encode()
    assert run("verify", "--ledger", str(ledger), "--key", LOG_VKEY).returncode == 0


def test_checkpoint_errors(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.skey"
    other.write_text(Signer.generate("someone.else/log").skey())
    bad = tmp_path / "bad.skey"
    bad.write_text("PRIVATE+KEY+x+00000000+AAAA")
    ledger = str(files["ledger"])
    one_line_error(
        main(capsys, "checkpoint", "--ledger", ledger, "--signing-key", str(other)),
        2,
        "key of that name",
    )
    one_line_error(
        main(capsys, "checkpoint", "--ledger", ledger, "--signing-key", str(bad)), 2, "bad.skey"
    )
    one_line_error(
        main(
            capsys,
            "checkpoint",
            "--ledger",
            str(tmp_path / "new.db"),
            "--signing-key",
            str(files["skey"]),
        ),
        2,
        "no ledger",
    )
    assert not (tmp_path / "new.db").exists()


# -- prove ------------------------------------------------------------------------------


def test_prove_inclusion_round_trips_through_verify_proof(
    files: dict[str, Path], tmp_path: Path
) -> None:
    for index, size in ((7, "13"), (17, None)):
        args = ["prove", "--ledger", str(files["ledger"]), "--index", str(index)]
        if size is not None:
            args += ["--size", size]
        proved = run(*args)
        assert proved.returncode == 0, proved.stderr
        obj = json.loads(proved.stdout)
        assert obj["leafIdx"] == index and obj["treeSize"] == int(size or 18)
        # The checkpoint the ledger signed at that size is attached, and vouches for the root.
        cp = open_checkpoint(obj["checkpoint"], [LOG_SIGNER.verifier()]).checkpoint
        assert cp.size == obj["treeSize"] and base64.b64decode(obj["root"]) == cp.root
        proof_file = tmp_path / f"proof-{index}.json"
        proof_file.write_text(proved.stdout)
        checked = run("verify-proof", str(proof_file))
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith(f"valid inclusion proof: leaf {index} ")


def test_prove_consistency_round_trips_and_tampering_fails(
    files: dict[str, Path], tmp_path: Path
) -> None:
    proved = run("prove", "--ledger", str(files["ledger"]), "--from", "2", "--size", "13")
    assert proved.returncode == 0, proved.stderr
    checked = run("verify-proof", "-", stdin=proved.stdout)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("valid consistency proof: the tree of size 2")

    inclusion = json.loads(run("prove", "--ledger", str(files["ledger"]), "--index", "5").stdout)
    inclusion["leafHash"] = inclusion["proof"][0]  # another entry's hash
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(inclusion))
    one_line_error(run("verify-proof", str(bad)), 1, "invalid inclusion proof")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--index", "18"], 2, ["not in the first 18 entries"]),
        (["--index", "3", "--size", "19"], 2, ["beyond the log"]),
        (["--index", "3", "--size", "3"], 2, ["not in the first 3"]),
        (["--from", "14", "--size", "13"], 2, ["beyond --size 13"]),
        (["--index", "-1"], 2, []),
        (["--index", "x"], 2, []),
    ],
)
def test_prove_bad_arguments(
    files: dict[str, Path],
    args: list[str],
    code: int,
    words: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = main(capsys, "prove", "--ledger", str(files["ledger"]), *args)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_prove_every_entry_at_every_checkpoint_in_process(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof_file = tmp_path / "proof.json"
    for size in (2, 13, 18, 9):
        for index in range(size):
            proved = main(
                capsys,
                "prove",
                "--ledger",
                str(files["ledger"]),
                "--index",
                str(index),
                "--size",
                str(size),
            )
            assert proved.returncode == 0, proved.stderr
            obj = json.loads(proved.stdout)
            # Only sizes the ledger signed come with a checkpoint.
            assert ("checkpoint" in obj) == (size != 9)
            proof_file.write_text(proved.stdout)
            checked = main(capsys, "verify-proof", str(proof_file))
            assert checked.returncode == 0, (index, size, checked.stderr)
    for old in range(0, 19):
        proved = main(capsys, "prove", "--ledger", str(files["ledger"]), "--from", str(old))
        proof_file.write_text(proved.stdout)
        assert main(capsys, "verify-proof", str(proof_file)).returncode == 0, old
