"""``python -m bench.crypto`` runs and reports what it says it reports (not its figures:
timings on a shared test machine are no pass/fail signal)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_run_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.crypto", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "cores:" in done.stdout and "target" in done.stdout
    result = json.loads(out.read_text())
    assert result["cpu_count"] >= 1
    assert [row["padded_bytes"] for row in result["symmetric"]] == [256, 1024, 16384]
    for row in result["symmetric"]:
        assert row["floor_one_kdf_us"] > 0 and row["floor_both_sides_us"] > 0
        assert row["ratchet_us"] > 0 and row["ratio_both_sides"] > 0
    dh = result["dh_ratchet"]
    assert dh["floor_one_exchange_us"] < dh["floor_spec_step_us"]
    assert isinstance(result["meets_target_both_sides"], bool)
