"""Shared pieces of the benchmarks: the machine description, result files, small stats.

Every benchmark reports the machine it ran on (cores, CPU model, Python), because a
figure without its machine means nothing, and this one is usually shared with other
work: its load average at the start and end of a run is recorded too.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    import cryptography

    mosquitto = None
    try:
        from doormat.broker.mosquitto import find_mosquitto

        mosquitto = find_mosquitto()
    except Exception:
        pass
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "hostname": socket.gethostname(),
        "mosquitto": mosquitto,
        "load_average": load_average(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", make_parents=True)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def rounded(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)
