"""Scale: ``doormat demo --users N --messages N`` on one machine, timed, memory measured.

    python -m bench.scale [--users 1000] [--messages 1000] [--brokers embedded,mosquitto]
                          [--timeout 300] [--json FILE] [--quick]

For each broker it runs the real command, ``doormat demo --users N --messages N --quiet
--report FILE --broker B``, in a subprocess, with a time bound, and records: exit code,
wall time, the report's ``messages_sent`` / ``messages_delivered``, peak RSS of the demo
process (``ru_maxrss``) and the peak of the whole process tree (demo + Mosquitto),
sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT, machine, write_json

TARGET_SECONDS = 60.0
TARGET_RSS_BYTES = 1024**3


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_one(
    users: int, messages: int, broker: str, timeout: float, workdir: Path
) -> dict[str, Any]:
    report = workdir / f"report-{broker}.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "doormat"]
    cmd += [
        "demo",
        "--users",
        str(users),
        "--messages",
        str(messages),
        "--quiet",
        "--color",
        "never",
        "--report",
        str(report),
        "--broker",
        broker,
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PYTHONASYNCIODEBUG", None)
    log = workdir / f"demo-{broker}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        ps = psutil.Process(proc.pid)
        peak_tree = peak_demo = 0
        timed_out = False
        while proc.poll() is None:
            peak_tree = max(peak_tree, _tree_rss(ps))
            with contextlib.suppress(psutil.Error):
                peak_demo = max(peak_demo, ps.memory_info().rss)
            if time.monotonic() - started > timeout:
                timed_out = True
                for child in ps.children(recursive=True):
                    child.kill()
                proc.kill()
                break
            time.sleep(0.2)
        proc.wait()
    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "broker": broker,
        "variant": "as shipped",
        "command": " ".join(cmd[1:]),
        "users": users,
        "messages": messages,
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "timeout_s": timeout,
        "wall_s": round(wall, 1),
        "peak_rss_tree_mb": round(peak_tree / 2**20, 1),
        "peak_rss_demo_mb": round(peak_demo / 2**20, 1),
    }
    if report.exists():
        data = json.loads(report.read_text())
        result["messages_sent"] = data.get("messages_sent")
        result["messages_delivered"] = data.get("messages_delivered")
        result["report_elapsed_s"] = data.get("elapsed_s")
    tail = log.read_text(errors="replace").strip().splitlines()
    # The error lines that say why, for the docs ("found"), deduplicated.
    reasons: dict[str, int] = {}
    for line in tail:
        if any(w in line for w in ("Error", "error:", "exception", "Timeout")):
            key = line.strip()[:200]
            reasons[key] = reasons.get(key, 0) + 1
    result["log_tail"] = tail[-5:]
    result["errors"] = sorted(reasons.items(), key=lambda kv: -kv[1])[:8]
    ok = (
        proc.returncode == 0
        and not timed_out
        and result.get("messages_delivered") == result.get("messages_sent") == messages
    )
    result["completed"] = ok
    result["meets_time"] = ok and wall < TARGET_SECONDS
    result["meets_memory"] = peak_tree < TARGET_RSS_BYTES
    return result


def run(users: int, messages: int, brokers: list[str], timeout: float) -> dict[str, Any]:
    info = machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="doormat-scale-") as tmp:
        for broker in brokers:
            r = run_one(users, messages, broker, timeout, Path(tmp))
            runs.append(r)
            print(
                f"  {broker:9}: exit {r['exit_code']}"
                f"{' (timed out)' if r['timed_out'] else ''}, {r['wall_s']} s, "
                f"delivered {r.get('messages_delivered')}/{r.get('messages_sent')}, "
                f"peak RSS {r['peak_rss_tree_mb']} MB",
                flush=True,
            )
    return {
        "benchmark": "scale",
        "machine": info,
        "target_s": TARGET_SECONDS,
        "target_rss_mb": TARGET_RSS_BYTES / 2**20,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--messages", type=int, default=None)
    p.add_argument("--brokers", default="embedded,mosquitto")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--quick", action="store_true", help="20 users, 20 messages")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    users = 20 if args.quick else args.users
    messages = args.messages or users
    result = run(
        users,
        messages,
        args.brokers.split(","),
        120 if args.quick else args.timeout,
    )
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
