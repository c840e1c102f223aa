"""Benchmark of the Merkle log behind the audit ledger and the key directory.

    python -m bench.ledger [--json FILE] [--max 1000000] [--samples 1000]

Grows one tree to 10^4, 10^5 and 10^6 entries (capped by --max) and, at each size,
measures the append rate of the segment just added, root, inclusion and consistency
proof generation and verification (averaged over --samples random proofs), and proof
sizes, which must grow as log2(n). Finally it rebuilds the largest tree from its leaf
hashes, as the ledger does on restart. Single-threaded: the core count is reported so
figures from different machines can be compared, not because more cores help.

The whole run stays well under two minutes at the default --max on a laptop-class CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from wire.merkle import (
    HASH_SIZE,
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)

SIZES = (10_000, 100_000, 1_000_000)
ENTRY_BYTES = 200  # about the size of one canonical-JSON audit record


def _entry(i: int) -> bytes:
    # Distinct, cheap to make, and the size of a real record: the benchmark is of the
    # tree, not of building inputs.
    return i.to_bytes(8, "big") * (ENTRY_BYTES // 8)


def _measure_size(tree: MerkleTree, n: int, samples: int, rng: random.Random) -> dict[str, Any]:
    t0 = time.perf_counter()
    root = tree.root(n)
    root_s = time.perf_counter() - t0

    indices = [rng.randrange(n) for _ in range(samples)]
    t0 = time.perf_counter()
    inclusion = [tree.inclusion_proof(i, n) for i in indices]
    incl_gen_s = time.perf_counter() - t0
    leaves = [tree.leaf_hash(i) for i in indices]
    t0 = time.perf_counter()
    for i, leaf, proof in zip(indices, leaves, inclusion, strict=True):
        verify_inclusion(i, n, leaf, proof, root)
    incl_ver_s = time.perf_counter() - t0

    olds = [rng.randrange(1, n) for _ in range(samples)]
    old_roots = [tree.root(m) for m in olds]
    t0 = time.perf_counter()
    consistency = [tree.consistency_proof(m, n) for m in olds]
    cons_gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for m, old_root, proof in zip(olds, old_roots, consistency, strict=True):
        verify_consistency(m, n, proof, old_root, root)
    cons_ver_s = time.perf_counter() - t0

    incl_lens = [len(p) for p in inclusion]
    cons_lens = [len(p) for p in consistency]
    log2n = math.ceil(math.log2(n))
    # The claim the ledger's design rests on: proofs are O(log n), not O(n).
    assert max(incl_lens) <= log2n, (max(incl_lens), log2n)
    assert max(cons_lens) <= 2 * log2n, (max(cons_lens), log2n)
    return {
        "size": n,
        "log2_size": log2n,
        "root_us": root_s * 1e6,
        "inclusion": {
            "generate_us": incl_gen_s / samples * 1e6,
            "verify_us": incl_ver_s / samples * 1e6,
            "hashes_avg": sum(incl_lens) / samples,
            "hashes_max": max(incl_lens),
            "bytes_max": max(incl_lens) * HASH_SIZE,
        },
        "consistency": {
            "generate_us": cons_gen_s / samples * 1e6,
            "verify_us": cons_ver_s / samples * 1e6,
            "hashes_avg": sum(cons_lens) / samples,
            "hashes_max": max(cons_lens),
            "bytes_max": max(cons_lens) * HASH_SIZE,
        },
    }


def run(max_size: int, samples: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    sizes = [s for s in SIZES if s <= max_size] or [max_size]
    tree = MerkleTree()
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in sizes:
        before = tree.size
        t0 = time.perf_counter()
        for i in range(before, n):
            tree.append(_entry(i))
        elapsed = time.perf_counter() - t0
        row = _measure_size(tree, n, samples, rng)
        row["append_per_s"] = (n - before) / elapsed if elapsed else float("inf")
        row["appended"] = n - before
        results.append(row)

    leaf_hashes = list(tree.leaf_hashes())
    t0 = time.perf_counter()
    rebuilt = MerkleTree.from_leaf_hashes(leaf_hashes)
    rebuild_s = time.perf_counter() - t0
    assert rebuilt.root() == tree.root()
    stored = tree.storage_bytes

    return {
        "benchmark": "ledger-merkle",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads_used": 1,
        "entry_bytes": ENTRY_BYTES,
        "samples": samples,
        "seed": seed,
        "sizes": results,
        "rebuild": {
            "size": tree.size,
            "seconds": rebuild_s,
            "leaves_per_s": tree.size / rebuild_s if rebuild_s else float("inf"),
        },
        "tree_storage_bytes": stored,
        "total_seconds": time.perf_counter() - started,
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"Merkle log benchmark: Python {report['python']} on {report['machine']}, "
        f"{report['cpu_count']} cores ({report['cpus_usable']} usable, 1 used), "
        f"{report['entry_bytes']}-byte entries, {report['samples']} proofs per size"
    )
    header = (
        f"{'size':>9} {'append/s':>10} {'root µs':>8} "
        f"{'incl gen µs':>11} {'incl ver µs':>11} {'incl hashes':>11} "
        f"{'cons gen µs':>11} {'cons ver µs':>11} {'cons hashes':>11} {'log2 n':>6}"
    )
    print(header)
    for row in report["sizes"]:
        inc, con = row["inclusion"], row["consistency"]
        print(
            f"{row['size']:>9} {row['append_per_s']:>10.0f} {row['root_us']:>8.1f} "
            f"{inc['generate_us']:>11.1f} {inc['verify_us']:>11.1f} "
            f"{inc['hashes_avg']:>6.1f}/{inc['hashes_max']:<4} "
            f"{con['generate_us']:>11.1f} {con['verify_us']:>11.1f} "
            f"{con['hashes_avg']:>6.1f}/{con['hashes_max']:<4} {row['log2_size']:>6}"
        )
    rb = report["rebuild"]
    print(
        f"rebuild from {rb['size']} stored leaf hashes: {rb['seconds']:.2f} s "
        f"({rb['leaves_per_s']:.0f} leaves/s); tree storage "
        f"{report['tree_storage_bytes'] / 1e6:.1f} MB; total {report['total_seconds']:.1f} s"
    )
    print("(hashes: average/maximum per proof; every proof generated was verified)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--max", type=int, default=SIZES[-1], help="largest tree size")
    parser.add_argument("--samples", type=int, default=1000, help="proofs measured per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    args = parser.parse_args(argv)
    if args.max < 2 or args.samples < 1:
        parser.error("--max must be at least 2 and --samples at least 1")
    report = run(args.max, args.samples, args.seed)
    _print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
