"""``doormat court`` end to end, as a student runs it: real processes, real files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from doormat.cli import main
from wire.li.trust import AgencyPublicKey, TrustStore
from wire.li.warrant import iso, parse_warrant


def court(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doormat", "court", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The same command in this process (much faster; a traceback would fail the test)."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["court", *map(str, args)])
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("doormat court: error: ")
    return lines[0]


CHECK = ("--trust", "keys/trust.json", "--jurisdiction", "XX", "--agency-key", "keys/agency.pub")
Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    out = ok(run("keys", "--out", "keys", cwd=tmp_path))
    assert "agency key fingerprint: " in out
    return tmp_path


def issue(lab: Path, *extra: str, out: str = "w.json", via: Runner = run) -> Path:
    ok(
        via(
            "issue", "--case", "OP-7",
            "--target", "device:alice@acme.phone", "--target", "user:bob@acme",
            "--categories", "IRI,CC", "--hours", "24", "--not-before", "now",
            "--agency-key", "keys/agency.pub", "--jurisdiction", "XX", "--csp", "doormat",
            "--out", out, *extra,
            cwd=lab,
        )
    )  # fmt: skip
    return lab / out


def approve_both(lab: Path, name: str = "w.json") -> None:
    for key in ("executive", "judicial"):
        ok(run("approve", name, "--key", f"keys/{key}.key", cwd=lab))


# ------------------------------------------------- end to end, in separate processes


def test_keys_writes_private_keys_0600_and_a_trust_store(tmp_path: Path) -> None:
    out = ok(court("keys", "--out", "keys", cwd=tmp_path))
    keys = tmp_path / "keys"
    for name in ("executive.key", "judicial.key", "agency.key"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    trust = TrustStore.parse((keys / "trust.json").read_bytes())
    assert sorted(a.role for a in trust.values()) == ["executive", "judicial"]
    pub = AgencyPublicKey.parse((keys / "agency.pub").read_bytes())
    assert f"agency key fingerprint: {pub.fingerprint}" in out

    # Again: the court keys are not silently replaced ...
    assert "already exist" in one_line_error(run("keys", "--out", "keys", cwd=tmp_path))
    # ... and with --force they are, but the agency keeps its key.
    out = ok(run("keys", "--out", "keys", "--force", cwd=tmp_path))
    assert f"agency key fingerprint: {pub.fingerprint}" in out
    assert AgencyPublicKey.parse((keys / "agency.pub").read_bytes()) == pub
    assert TrustStore.parse((keys / "trust.json").read_bytes()) != trust


def test_issue_approve_once_refused_twice_accepted(lab: Path) -> None:
    w = issue(lab, via=court)
    assert parse_warrant(w.read_bytes()).approvals == ()
    ok(court("approve", "w.json", "--key", "keys/executive.key", cwd=lab))

    once = court("check", "w.json", *CHECK, cwd=lab)
    assert once.returncode == 1, once.stderr
    assert once.stdout.startswith("refused (missing-approval): ")
    assert "judicial" in once.stdout and "Traceback" not in once.stderr

    ok(court("approve", "w.json", "--key", "keys/judicial.key", cwd=lab))
    assert [a.type for a in parse_warrant(w.read_bytes()).approvals] == [
        "executive",
        "judicial",
    ]
    twice = ok(court("check", "w.json", *CHECK, "--state", "state.json", cwd=lab))
    assert twice.startswith("accepted: activate")

    # The state remembers it: the same warrant again is a replay.
    again = run("check", "w.json", *CHECK, "--state", "state.json", "--json", cwd=lab)
    assert again.returncode == 1
    decision = json.loads(again.stdout)
    assert decision["reason"] == "replayed-id" and decision["accepted"] is False


def test_malformed_files_give_one_line_errors(lab: Path) -> None:
    (lab / "bad.json").write_text('{"v": 1, "targets": [')
    line = one_line_error(court("approve", "bad.json", "--key", "keys/judicial.key", cwd=lab))
    assert "bad.json is not a valid warrant" in line and "not JSON" in line

    checked = court("check", "bad.json", *CHECK, cwd=lab)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stdout.startswith("refused (malformed): ")

    (lab / "big.json").write_bytes(b" " * 70_000)
    big = run("check", "big.json", *CHECK, cwd=lab)
    assert big.returncode == 1 and big.stdout.startswith("refused (too-large): ")

    issue(lab)
    for args in (
        ("approve", "w.json", "--key", "keys/trust.json"),
        ("approve", "w.json", "--key", "missing.key"),
        ("check", "w.json", "--trust", "keys/judicial.key", "--jurisdiction", "XX",
         "--agency-key", "keys/agency.pub"),
        ("check", "w.json", "--trust", "keys/trust.json", "--agency-key", "keys/agency.pub"),
        ("check", "w.json", *CHECK, "--state", "bad.json"),
        ("check", "w.json", *CHECK, "--policy", "bad.json"),
        ("check", "w.json", *CHECK, "--directory", "bad.json"),
        ("issue", "--case", "X", "--target", "user:bob@acme", "--hours", "1",
         "--agency-key", "keys/agency.key", "--jurisdiction", "XX"),
        ("issue", "--case", "X", "--target", "user:bob@acme", "--hours", "1",
         "--agency-key", "keys/agency.pub", "--jurisdiction", "xx"),
        ("cancel", "bad.json", "--out", "c.json"),
    ):  # fmt: skip
        one_line_error(run(*args, cwd=lab))


# ------------------------------------------------------- the rest, in this process


def test_update_then_cancel(lab: Path) -> None:
    issue(lab)
    approve_both(lab)
    state = ("--state", "state.json")
    ok(run("check", "w.json", *CHECK, *state, cwd=lab))

    ok(run("update", "w.json", "--target", "user:bob@acme", "--out", "w2.json", cwd=lab))
    approve_both(lab, "w2.json")
    assert ok(run("check", "w2.json", *CHECK, *state, cwd=lab)).startswith("accepted: update")
    stale = run("check", "w.json", *CHECK, *state, cwd=lab)
    assert stale.returncode == 1 and stale.stdout.startswith("refused (stale-generation)")

    ok(run("cancel", "w2.json", "--out", "c.json", cwd=lab))
    approve_both(lab, "c.json")
    assert ok(run("check", "c.json", *CHECK, *state, cwd=lab)).startswith("accepted: cancel")
    saved = json.loads((lab / "state.json").read_text())
    [record] = saved["authorisations"].values()
    assert record["status"] == "cancelled" and record["generation"] == 3


@pytest.mark.parametrize(
    ("extra_issue", "extra_check", "reason"),
    [
        ((), (), "accepted"),
        ((), ("--now", "2000-01-01T00:00"), "not-yet-valid"),
        ((), ("--now", "2999-01-01T00:00Z"), "expired"),
        ((), ("--max-hours", "12"), "window-too-long"),
        ((), ("--max-targets", "1"), "too-many-targets"),
        ((), ("--jurisdiction", "YY"), "wrong-jurisdiction"),
        ((), ("--csp", "other"), "wrong-csp"),
        ((), ("--agency-key", "other/agency.pub"), "wrong-delivery-key"),
        ((), ("--directory", "dir.json"), "unknown-target"),
        (("--target", "user:*"), (), "wildcard-target"),
        (("--target", "user:dave@acme"), (), "unknown-target"),
    ],
)
def test_check_refusals(
    lab: Path, extra_issue: tuple[str, ...], extra_check: tuple[str, ...], reason: str
) -> None:
    ok(run("keys", "--out", "other", cwd=lab))
    (lab / "dir.json").write_text(json.dumps(["alice@acme.phone", "alice@acme"]))
    issue(lab, *extra_issue)
    approve_both(lab)
    result = run("check", "w.json", *CHECK, *extra_check, "--json", cwd=lab)
    assert json.loads(result.stdout)["reason"] == reason, result.stdout
    assert result.returncode == (0 if reason == "accepted" else 1)


def test_policy_file(lab: Path) -> None:
    pub = AgencyPublicKey.parse((lab / "keys" / "agency.pub").read_bytes())
    policy = {
        "jurisdiction": "XX",
        "csp_id": "doormat",
        "agency_key_fingerprint": pub.fingerprint,
        "max_window_seconds": 48 * 3600,
        "max_targets": 5,
    }
    (lab / "policy.json").write_text(json.dumps(policy))
    issue(lab)
    approve_both(lab)
    trust = ("--trust", "keys/trust.json", "--policy", "policy.json")
    assert ok(run("check", "w.json", *trust, cwd=lab)).startswith("accepted")
    refused = run("check", "w.json", *trust, "--max-hours", "1", cwd=lab)
    assert refused.stdout.startswith("refused (window-too-long)")


def test_a_key_from_another_court_is_refused(lab: Path) -> None:
    ok(run("keys", "--out", "rogue", "--judicial-name", "Judicial Commissioner", cwd=lab))
    issue(lab)
    ok(run("approve", "w.json", "--key", "keys/executive.key", cwd=lab))
    ok(run("approve", "w.json", "--key", "rogue/judicial.key", cwd=lab))
    result = run("check", "w.json", *CHECK, cwd=lab)
    assert result.returncode == 1
    assert result.stdout.startswith("refused (bad-signature): ")


def test_same_role_twice_is_noted_and_refused(lab: Path) -> None:
    ok(run("keys", "--out", "second", "--judicial-name", "Judge Two", cwd=lab))
    trust = json.loads((lab / "keys" / "trust.json").read_text())
    second = json.loads((lab / "second" / "trust.json").read_text())
    trust["approvers"].append(second["approvers"][1])
    (lab / "keys" / "trust.json").write_text(json.dumps(trust))
    issue(lab)
    ok(run("approve", "w.json", "--key", "keys/judicial.key", cwd=lab))
    note = run("approve", "w.json", "--key", "second/judicial.key", cwd=lab)
    assert note.returncode == 0 and "same-role-twice" in note.stderr
    result = run("check", "w.json", *CHECK, cwd=lab)
    assert result.stdout.startswith("refused (same-role-twice): ")
    again = run("approve", "w.json", "--key", "keys/judicial.key", cwd=lab)
    assert "already approved" in one_line_error(again)


def test_usage_errors_are_argparse_errors(lab: Path) -> None:
    result = run("issue", "--case", "X", "--target", "bob", "--hours", "1", cwd=lab)
    assert result.returncode == 2 and "device:ID or user:ID" in result.stderr
    result = run("issue", "--case", "X", "--target", "user:bob@acme", "--hours", "-1", cwd=lab)
    assert result.returncode == 2 and "hours must be positive" in result.stderr
    result = run("check", "w.json", *CHECK, "--now", "yesterday", cwd=lab)
    assert result.returncode == 2 and "not a time" in result.stderr


# ------------------------------------------------ times: offsets, retrospection (issue 12)


def test_a_naive_time_is_refused_where_it_goes_into_a_warrant(lab: Path) -> None:
    """``--not-before 2025-11-29T08:00`` was read as UTC without a word: a court clerk in
    UTC+1 would open the window an hour late (or, west of Greenwich, early)."""
    for args in (
        ("issue", "--case", "X", "--target", "user:bob@acme", "--hours", "1",
         "--not-before", "2025-11-29T08:00", "--agency-key", "keys/agency.pub",
         "--jurisdiction", "XX", "--out", "n.json"),
    ):  # fmt: skip
        result = run(*args, cwd=lab)
        assert result.returncode == 2, result.stdout
        assert "has no UTC offset" in result.stderr and "2025-11-29T08:00Z" in result.stderr
        assert not (lab / "n.json").exists()
    issue(lab)
    result = run("approve", "w.json", "--key", "keys/judicial.key", "--at", "2025-11-29T08:00",
                 cwd=lab)
    assert result.returncode == 2 and "has no UTC offset" in result.stderr
    result = run("update", "w.json", "--not-before", "2025-11-29T08:00", "--out", "u.json",
                 cwd=lab)
    assert result.returncode == 2 and "has no UTC offset" in result.stderr


def test_explicit_offsets_are_honoured_and_the_summary_says_utc(lab: Path) -> None:
    out = ok(
        run(
            "issue", "--case", "X", "--target", "user:bob@acme", "--hours", "1",
            "--not-before", "2999-11-29T09:00+01:00", "--agency-key", "keys/agency.pub",
            "--jurisdiction", "XX", "--out", "o.json",
            cwd=lab,
        )
    )  # fmt: skip
    w = parse_warrant((lab / "o.json").read_bytes())
    assert iso(w.not_before) == "2999-11-29T08:00:00Z"
    assert "2999-11-29T08:00:00Z" in out and "(times in UTC)" in out


def test_check_reads_a_naive_now_as_utc_and_says_so(lab: Path) -> None:
    issue(lab)
    approve_both(lab)
    result = run("check", "w.json", *CHECK, "--now", "2000-01-01T00:00", cwd=lab)
    assert result.stdout.startswith("refused (not-yet-valid)")
    assert "note: 2000-01-01T00:00 has no UTC offset; read as UTC" in result.stderr


def test_issue_notes_a_retrospective_window_and_check_refuses_it(lab: Path) -> None:
    back = int(time.time()) - 29 * 24 * 3600
    result = run(
        "issue", "--case", "X", "--target", "user:bob@acme", "--categories", "IRI,CC",
        "--hours", "720", "--not-before", str(back), "--agency-key", "keys/agency.pub",
        "--jurisdiction", "XX", "--out", "r.json",
        cwd=lab,
    )  # fmt: skip
    assert result.returncode == 0 and "retrospective-window" in result.stderr
    approve_both(lab, "r.json")
    checked = run("check", "r.json", *CHECK, cwd=lab)
    assert checked.returncode == 1
    assert checked.stdout.startswith("refused (retrospective-window)")


def test_an_amendment_authorises_from_now(lab: Path) -> None:
    back = int(time.time()) - 3 * 3600
    ok(run("issue", "--case", "X", "--target", "user:bob@acme", "--categories", "IRI",
           "--hours", "24", "--not-before", str(back), "--agency-key", "keys/agency.pub",
           "--jurisdiction", "XX", "--out", "a.json", cwd=lab))  # fmt: skip
    ok(run("update", "a.json", "--categories", "IRI,CC", "--out", "a2.json", cwd=lab))
    g1 = parse_warrant((lab / "a.json").read_bytes())
    g2 = parse_warrant((lab / "a2.json").read_bytes())
    assert g2.not_before >= int(time.time()) - 5 and g2.not_after == g1.not_after
