"""The benchmark harness does not rot: ``python -m bench --quick`` runs every benchmark,
writes its JSON and the Markdown results section. Its figures are not checked (timings
on a shared machine are no pass/fail signal), only that they are there and coherent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import BEGIN, END, render, update_docs

ROOT = Path(__file__).resolve().parents[2]


def test_report_section_replaces_only_between_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nhand-written\n\n{BEGIN}\nold\n{END}\n\n## found\nkept\n")
    update_docs(doc, "new table\n")
    text = doc.read_text()
    assert "old" not in text and "new table" in text
    assert text.startswith("# Benchmarks\n\nhand-written") and text.endswith("## found\nkept\n")
    fresh = tmp_path / "none.md"
    update_docs(fresh, "t\n")
    assert BEGIN in fresh.read_text() and END in fresh.read_text()


def test_report_renders_missing_benchmarks_without_failing() -> None:
    summary = {
        "machine": {"when": "now", "cores": 2, "cores_usable": 2, "cpu_model": "cpu",
                    "arch": "x86_64", "python": "3.11", "cryptography": "x", "os": "Linux",
                    "mosquitto": None, "load_average": [1.0, 1.0, 1.0]},
        "quick": True,
        "runs": [{"name": "relay", "ok": False, "exit": "timeout", "seconds": 1.0}],
        "load_average_end": [1.0, 1.0, 1.0],
    }  # fmt: skip
    text = render(summary, {})
    assert "did not finish" in text and "2 (usable: 2)" in text


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.timeout(600)
def test_bench_quick_runs_everything(tmp_path: Path) -> None:
    out, doc = tmp_path / "results", tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--docs", str(doc)],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cores" in done.stdout
    for name in ("relay", "scale", "ledger", "crypto", "summary"):
        assert (out / f"{name}.json").exists(), name
    relay = json.loads((out / "relay.json").read_text())
    assert relay["machine"]["cores"] >= 1
    kinds = {(r["mode"], r["relay"]) for r in relay["runs"]}
    assert {("core", "relay"), ("core", "null"), ("device", "relay"), ("device", "null")} <= kinds
    for r in relay["runs"]:
        assert r["lost"] == 0 and r["duplicates_at_app"] == 0, r["tag"]
        assert r["received"] > 0 and r["msgs_per_s"] > 0
    scale = json.loads((out / "scale.json").read_text())
    assert all(r["completed"] for r in scale["runs"]), scale["runs"]
    text = doc.read_text()
    assert BEGIN in text and "### Targets" in text and "Quick (smoke) run" in text
