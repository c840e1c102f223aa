"""Run every benchmark: ``python -m bench [--quick] [--out DIR] [--only NAMES] [--no-docs]``.

Each benchmark runs as its own subprocess with a time bound, writes its JSON into the
output folder (default ``bench/results/``), and the runner then prints one table with
the machine (cores, CPU model, Python) and regenerates the results section of
``docs/benchmarks.md`` (between its ``bench:results`` markers; the rest of that file is
written by hand) and its figures, ``docs/img/bench-*.svg`` (``img/`` beside the file
given with ``--docs``). ``python -m bench.report`` does the same from the JSON already
written, without running anything.

    relay   bench/relay.py    E2EE throughput vs a null relay, worker scaling, latency
    scale   bench/scale.py    doormat demo --users 1000 --messages 1000: time, memory
    ledger  bench/ledger.py   Merkle log: append rate, proofs at 10^4..10^6 entries
    crypto  bench/crypto.py   per-message ratchet cost against its primitives

``--quick`` is a smoke run (tiny counts, well under a minute or two): it checks that the
harness works, not what the figures are; its docs table is marked as such, so by default
a quick run does not touch docs/benchmarks.md (``--docs`` forces it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, machine, write_json
from bench.report import render, update_docs, write_plots

# name -> (module, full args, quick args, time bound in seconds full / quick)
BENCHES: dict[str, tuple[str, list[str], list[str], float, float]] = {
    "relay": ("bench.relay", [], ["--quick"], 1500, 240),
    "scale": ("bench.scale", ["--timeout", "240"], ["--quick"], 1800, 300),
    "ledger": ("bench.ledger", [], ["--max", "10000", "--samples", "100"], 600, 120),
    "crypto": ("bench.crypto", [], ["--quick"], 600, 120),
}


def run_bench(name: str, out: Path, quick: bool) -> dict[str, Any]:
    module, full, small, bound, quick_bound = BENCHES[name]
    target = out / f"{name}.json"
    target.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, *(small if quick else full), "--json", str(target)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=quick_bound if quick else bound)
        code: int | str = done.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = round(time.monotonic() - started, 1)
    status = {"name": name, "exit": code, "seconds": seconds, "file": str(target)}
    if code == 0 and target.exists():
        status["ok"] = True
    else:
        status["ok"] = False
        print(f"!! {name} failed: exit {code} after {seconds} s", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny counts and times")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the JSON results (default bench/results, or "
        "bench/results/quick with --quick)",
    )
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument(
        "--docs",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="the Markdown file whose results section is regenerated",
    )
    p.add_argument("--no-docs", action="store_true", help="do not touch the Markdown file")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    if args.out is None:
        args.out = RESULTS / "quick" if args.quick else RESULTS
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(
        f"machine: {info['cores']} cores ({info['cpu_model']}), Python {info['python']}, "
        f"load {info['load_average']}",
        flush=True,
    )
    statuses = [run_bench(n, args.out, args.quick) for n in names]
    results: dict[str, Any] = {}
    for s in statuses:
        if s["ok"]:
            results[s["name"]] = json.loads(Path(s["file"]).read_text())
    # Benchmarks not run this time keep their last results in the table (and say so).
    for name in BENCHES:
        earlier = args.out / f"{name}.json"
        if name not in names and earlier.exists():
            results[name] = json.loads(earlier.read_text())
            statuses.append(
                {
                    "name": name,
                    "exit": 0,
                    "ok": True,
                    "earlier": True,
                    "seconds": None,
                    "file": str(earlier),
                }
            )
    summary = {
        "machine": info,
        "quick": args.quick,
        "runs": statuses,
        "load_average_end": os.getloadavg(),
    }
    write_json(args.out / "summary.json", summary)
    docs = not args.no_docs and (not args.quick or "--docs" in (argv or sys.argv))
    plots = write_plots(args.docs, summary, results) if docs else {}
    table = render(summary, results, plots)
    print()
    print(table)
    if docs:
        update_docs(args.docs, table)
        print(f"\n{args.docs} updated, figures in {args.docs.parent / 'img'}")
    return 0 if all(s["ok"] for s in statuses if not s.get("earlier")) else 1


if __name__ == "__main__":
    sys.exit(main())
