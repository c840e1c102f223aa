"""The project's lint rules, checked on the source: ``ruff check .`` is clean, and
``mypy --strict`` is clean on the code (wire, infra, relay, clients, interceptor,
doormat) and on the benchmarks (bench).

Both run as ``python -m <tool>`` with this interpreter, from the repository root (so
pyproject.toml's settings apply), and skip when the tool is not installed (it is in the
``test`` extra, with the stub packages mypy needs). mypy gets a fresh cache directory, so
a stale cache can neither hide nor invent an error; cold, it takes about 6 s on a 2-CPU
machine, short enough for the default run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MYPY_TARGETS = ("wire", "infra", "relay", "clients", "interceptor", "doormat", "bench")
TIMEOUT_S = 240


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def fail_with_output(what: str, result: subprocess.CompletedProcess[str]) -> None:
    output = "\n".join(part for part in (result.stdout, result.stderr) if part.strip())
    # pytest.fail prints the whole message (an assert's would be truncated).
    pytest.fail(f"{what} failed (exit {result.returncode}):\n{output}", pytrace=False)


def test_ruff_check_is_clean() -> None:
    pytest.importorskip("ruff")
    result = run_tool("ruff", "check", "--no-cache", ".")
    if result.returncode != 0:
        fail_with_output("ruff check .", result)


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    result = run_tool(
        "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy-cache"), *MYPY_TARGETS
    )
    if result.returncode != 0:
        fail_with_output(f"mypy --strict {' '.join(MYPY_TARGETS)}", result)
