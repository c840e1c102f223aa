"""The transparency report: exact counts on a synthetic case history, determinism, the
text rendering, anomalies (acts that no logged warrant allowed), unreadable entries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from interceptor.court import cancel
from interceptor.ledger import (
    Ledger,
    make_entry,
    oversight_entry,
    render_report,
    report,
    task_start_entry,
    transparency_report,
)
from tests.interceptor.ledger_support import (
    LOG_SIGNER,
    Interceptor,
    set_row_value,
    task_stop_of,
    write_scenario,
)
from tests.support.warrants import draft, signed


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "ledger.db"
    with Ledger(path, signer=LOG_SIGNER) as ledger:
        write_scenario(ledger)
    return path


def test_totals(scenario: Path) -> None:
    r = report(scenario)
    assert r["format"] == "doormat-transparency-report/1"
    assert r["ledger"]["entries"] == 18 and r["ledger"]["unreadable_entries"] == []
    assert r["ledger"]["checkpoints"] == 3 and r["ledger"]["latest_checkpoint"]["size"] == 18
    w = r["warrants"]
    assert (w["decisions"], w["accepted"], w["refused"]) == (6, 3, 3)
    assert w["by_reason"] == {"malformed": 1, "unknown-approver": 1, "wildcard-target": 1}
    assert w["by_action"] == {"activate": 2, "cancel": 1}
    assert w["categories"] == {
        "IRI": {"accepted": 3, "refused": 2},
        "CC": {"accepted": 2, "refused": 0},
        "unknown": {"accepted": 0, "refused": 1},  # the input that did not even parse
    }
    assert w["unidentified"]["refused"] == 1
    assert w["unidentified"]["by_reason"] == {"malformed": 1}
    assert r["tasks"] == {
        "started": 2,
        "stopped": 1,
        "running_at_end": 1,
        "stop_reasons": {"cancelled": 1},
    }
    assert r["records"] == {"IRI": 5, "CC": 3, "cc_with_plaintext": 1, "cc_ciphertext_only": 2}
    assert r["oversight"] == {"events": 1, "by_event": {"inspection": 1}}
    assert r["anomalies"] == []


def test_per_case(scenario: Path) -> None:
    cases = report(scenario)["cases"]
    assert sorted(cases) == ["OP-ANCHOR-7", "OP-BEACON-2"]
    anchor, beacon = cases["OP-ANCHOR-7"], cases["OP-BEACON-2"]

    assert anchor["warrants"]["accepted"] == 2 and anchor["warrants"]["refused"] == 0
    assert anchor["warrants"]["by_action"] == {"activate": 1, "cancel": 1}
    assert anchor["categories"]["IRI"] == {"accepted": 2, "refused": 0}
    assert anchor["categories"]["CC"] == {"accepted": 2, "refused": 0}
    assert anchor["targets"] == ["device:alice@acme.phone", "user:bob@acme"]
    assert anchor["targets_refused"] == []
    assert anchor["tasks"] == {"started": 1, "stopped": 1, "running_at_end": 0}
    assert anchor["records"] == {
        "IRI": 3,
        "CC": 3,
        "cc_with_plaintext": 1,  # the enterprise archive's export
        "cc_ciphertext_only": 2,  # what the relay task could copy: E2EE ciphertext
    }
    assert len(anchor["liids"]) == 1 and len(anchor["authorisations"]) == 1

    assert beacon["warrants"]["accepted"] == 1 and beacon["warrants"]["refused"] == 2
    assert beacon["warrants"]["by_reason"] == {"unknown-approver": 1, "wildcard-target": 1}
    assert beacon["categories"]["IRI"] == {"accepted": 1, "refused": 2}
    assert beacon["categories"]["CC"] == {"accepted": 0, "refused": 0}
    assert beacon["targets"] == ["device:carol@globex.phone"]
    assert beacon["targets_refused"] == ["user:*"]
    assert beacon["tasks"] == {"started": 1, "stopped": 0, "running_at_end": 1}
    assert beacon["records"]["IRI"] == 2 and beacon["records"]["CC"] == 0


def test_the_report_is_deterministic(scenario: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copyfile(scenario, copy)
    first, second = report(scenario), report(copy)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert render_report(first) == render_report(second)

    # No floats anywhere: the JSON is exact.
    def walk(value: Any) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(first)


def test_the_text_rendering(scenario: Path) -> None:
    text = render_report(report(scenario))
    assert "Warrants: 6 decisions, 3 accepted (activate 2, cancel 1), 3 refused" in text
    assert "refused because: malformed 1, unknown-approver 1, wildcard-target 1" in text
    assert "Tasks: 2 started, 1 stopped (cancelled 1), 1 running at the end" in text
    assert "Records delivered: IRI 5, CC 3" in text
    assert (
        "Encryption: of 3 CC records, 1 carried readable content and 2 were ciphertext "
        "nobody in the chain could read (encryption prevented plaintext in 67%)"
    ) in text
    assert "Case OP-BEACON-2" in text and "named only in refused warrants: user:*" in text
    assert "Anomalies: none" in text


def _entries(bodies: list[dict[str, Any]]) -> list[Any]:
    return [make_entry(i, b, time_ms=i) for i, b in enumerate(bodies)]


def test_acts_no_logged_warrant_allowed_are_anomalies(tmp_path: Path) -> None:
    narrow = signed(draft(targets=["device:alice@acme.phone"], categories=["IRI"]))
    wide = signed(draft(targets=["device:alice@acme.phone", "user:bob@acme"]))
    with Ledger(tmp_path / "l.db") as ledger:
        li = Interceptor(ledger)
        li.start("T-0", narrow)  # 0: before any decision
        li.submit(narrow)  # 1
        li.start("T-1", wide)  # 2: more targets and categories than the warrant
        li.deliver(narrow, "CC", plaintext=False, task_id="T-1")  # 3: fine by T-1's own terms
        li.deliver(narrow, "IRI", task_id="T-7")  # 4: no such task
        li.stop("T-8", narrow, "expired")  # 5: not running
        li.submit(signed(cancel(narrow)))  # 6: cancelled, but T-1 is never stopped
        li.deliver(narrow, "IRI")  # 7: no task, and the authorisation is cancelled
        r = report(ledger.path)
    assert r["anomalies"] == [
        "entry 0: task T-0 started with no accepted warrant logged before it",
        "entry 2: task T-1 covers targets the warrant does not name: user:bob@acme",
        "entry 2: task T-1 collects categories the warrant does not allow: CC",
        f"entry 4: IRI record 1 for LIID {narrow.liid} delivered under task T-7, "
        "which is not running",
        "entry 5: task T-8 stopped but it was not running",
        f"entry 7: IRI record 2 for LIID {narrow.liid} delivered with no accepted, "
        "uncancelled warrant for it",
        "task T-0: still running at the end of the log although its authorisation was cancelled",
        "task T-1: still running at the end of the log although its authorisation was cancelled",
    ]
    assert "Anomalies (8):" in render_report(r)


def test_a_category_outside_the_task_is_an_anomaly() -> None:
    w = signed(draft(categories=["IRI"]))
    li_entries: list[dict[str, Any]] = []

    class Sink:
        def append(self, body: dict[str, Any], *, time_ms: int) -> None:
            li_entries.append(body)

    li = Interceptor(Sink())  # type: ignore[arg-type]
    li.submit(w)
    li.start("T-1", w)
    li.deliver(w, "CC", plaintext=True, task_id="T-1")
    li.deliver(w, "CC", plaintext=True, source="enterprise:acme")
    li.stop("T-1", w, "expired")
    anomalies = transparency_report(_entries(li_entries))["anomalies"]
    assert anomalies == [
        f"entry 2: CC record 0 for LIID {w.liid} delivered, but task T-1 collects only IRI",
        f"entry 3: CC record 1 for LIID {w.liid} delivered, but the warrant does not allow CC",
    ]


def test_unreadable_entries_are_listed_not_counted(scenario: Path, tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    shutil.copyfile(scenario, path)
    set_row_value(path, "entries", "entry", "idx", 3, b"{garbage")
    r = report(path)
    assert r["ledger"]["unreadable_entries"] == [3]
    assert r["ledger"]["entries"] == 18
    assert r["records"]["IRI"] == 4
    assert "UNREADABLE entries (not counted): 3" in render_report(r)


def test_an_empty_ledger_reports_zeros(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.db").close()
    r = report(tmp_path / "l.db")
    assert r["warrants"]["decisions"] == 0 and r["cases"] == {}
    assert r["ledger"]["latest_checkpoint"] is None
    text = render_report(r)
    assert "ledger: 0 entries" in text and "checkpoints: none" in text


def test_text_never_carries_control_characters() -> None:
    entries = _entries([oversight_entry("note", "Clerk", "line\nbreak \x1b[31m")] * 1)
    r = transparency_report(entries)
    r["anomalies"].append("entry 9: odd \x1b[2J")
    text = render_report(r)
    assert "\x1b" not in text and "\\x1b" in text


def test_task_stop_entries_count_per_case() -> None:
    w = signed(draft())
    bodies = [
        task_start_entry("T-1", w),
        task_stop_of("T-1", w, "expired"),
    ]
    r = transparency_report(_entries(bodies))
    assert r["cases"]["OP-ANCHOR-7"]["tasks"] == {"started": 1, "stopped": 1, "running_at_end": 0}
    assert r["tasks"]["stop_reasons"] == {"expired": 1}
    assert r["anomalies"] == ["entry 0: task T-1 started with no accepted warrant logged before it"]
