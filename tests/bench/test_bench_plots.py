"""The benchmark figures (bench/plots.py): well-formed SVG, the values and labels of the
results they are drawn from, and geometry that matches the numbers (bar heights in
proportion to the values from a zero baseline, the target lines where the targets are,
a logarithmic latency axis), built from a small hand-made set of results."""

from __future__ import annotations

import copy
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench.plots import make_plots
from bench.report import IMG_DIR, load, render, update_docs, write_plots

ROOT = Path(__file__).resolve().parents[2]

NS = "{http://www.w3.org/2000/svg}"

MACHINE = {
    "cores": 4,
    "cores_usable": 4,
    "cpu_model": "Test CPU 9000",
    "arch": "x86_64",
    "python": "3.11.0",
    "cryptography": "42",
    "os": "Linux",
    "mosquitto": None,
    "load_average": [0.1, 0.2, 0.3],
    "when": "2030-01-02 03:04:05 +0000",
}


def throughput(relay: float | None, null: float | None, ratio: float | None) -> dict[str, Any]:
    return {
        "relay_msgs_per_s": relay,
        "null_msgs_per_s": null,
        "relay_runs": [] if relay is None else [relay - 50, relay, relay + 50],
        "null_runs": [] if null is None else [null - 50, null, null + 50],
        "ratio": ratio,
        "ratio_of_medians": ratio,
    }


def latency(
    via: str, rate: float, achieved: float, p50: float, p90: float, p99: float
) -> dict[str, Any]:
    return {
        "via": via,
        "offered_rate": rate,
        "achieved": achieved,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": p99 * 1.5,
        "n": 100,
        "lost": 0,
    }


CPU = {
    "relay": {"broker": 1.0, "relay": 2.0, "clients": 3.0},
    "null": {"broker": 1.0, "null": 1.5, "clients": 3.0},
}


def hand_made() -> tuple[dict[str, Any], dict[str, Any]]:
    summary = {
        "machine": MACHINE,
        "quick": False,
        "runs": [{"name": n, "ok": True, "exit": 0, "seconds": 1.0} for n in ("relay", "ledger")],
        "load_average_end": [0.1, 0.2, 0.3],
    }
    relay = {
        "machine": MACHINE,
        "plan": {
            "conversations": 8,
            "window": 2,
            "duration": 3.0,
            "warmup": 1.0,
            "repeats": 3,
            "scaling_repeats": 3,
            "latency_rates": [500.0, 200.0],
            "latency_duration": 3.0,
            "client_procs": 2,
            "workers": [1, 2],
        },
        "runs": [
            {
                "relay": "relay",
                "offered_rate": None,
                "msgs_per_s": 1250.0,
                "mode": "core",
                "workers": 1,
            }
        ],
        "summary": {
            "core": {
                "throughput": {
                    "1": throughput(1200.0, 1500.0, 0.8),
                    "2": throughput(600.0, 1000.0, 0.6),
                },
                "cpu_us_per_msg": CPU,
                "latency": [
                    latency("relay", 500.0, 500.0, 3.0, 6.0, 30.0),
                    latency("null", 500.0, 500.0, 2.0, 4.0, 20.0),
                ],
                "lost": 0,
                "duplicates_at_app": 0,
            },
            "device": {
                "throughput": {"1": throughput(300.0, 400.0, 0.75)},
                "cpu_us_per_msg": CPU,
                "latency": [
                    latency("relay", 500.0, 350.0, 1000.0, 2000.0, 3000.0),
                    latency("null", 500.0, 360.0, 900.0, 1800.0, 2700.0),
                ],
                "lost": 0,
                "duplicates_at_app": 0,
            },
        },
    }
    rows = []
    for size in (1000, 1_000_000):
        proof = {
            "generate_us": 10.0,
            "verify_us": 5.0,
            "hashes_max": math.ceil(math.log2(size)),
            "hashes_avg": 9.5,
            "bytes_max": 320,
        }
        rows.append(
            {
                "size": size,
                "log2_size": math.ceil(math.log2(size)),
                "inclusion": proof,
                "consistency": {**proof, "hashes_max": proof["hashes_max"] + 1},
                "append_per_s": 123456.0 if size == 1000 else 234567.0,
            }
        )
    ledger = {
        "python": "3.11.0",
        "machine": "x86_64",
        "cpu_count": 4,
        "entry_bytes": 200,
        "samples": 50,
        "sizes": rows,
        "rebuild": {"size": 1_000_000, "seconds": 1.0},
    }
    return summary, {"relay": relay, "ledger": ledger}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if cls in (e.get("class") or "").split()]


@pytest.fixture
def plots() -> dict[str, ET.Element]:
    summary, results = hand_made()
    made = make_plots(summary, results)
    assert set(made) == {"relay-throughput", "relay-latency", "ledger"}
    return {key: parse(p.svg) for key, p in made.items()}


def test_every_plot_is_titled_labelled_and_captioned(plots: dict[str, ET.Element]) -> None:
    for key, root in plots.items():
        title = root.find(f"{NS}title")
        desc = root.find(f"{NS}desc")
        assert title is not None and title.text, key
        assert desc is not None and desc.text, key
        assert root.get("role") == "img"
        words = " ".join(texts(root))
        # The machine and the date are on every figure.
        assert "4 cores" in words or "4 CPUs" in words, key
        assert "2030-01-02" in words or "no CPU model or date" in words, key
    tput = " ".join(texts(plots["relay-throughput"]))
    for label in (
        "throughput (messages/s)",
        "relay (median)",
        "null relay (median)",
        "target 2,000 msg/s",
        "Test CPU 9000",
        "1,200",
        "1,500",
        "600",
        "1,000",
        "ratio 0.60 < 0.8",
        "ratio 0.80 ≥ 0.8",
        "2 relay workers",
    ):
        assert label in tput, label
    lat = " ".join(texts(plots["relay-latency"]))
    for label in (
        "latency (ms, log scale)",
        "p50",
        "p90",
        "p99",
        "target: p99 < 50 ms",
        "30.0",
        "3.0",
        "3,000",
        "350",
        "500 msg/s offered",
    ):
        assert label in lat, label
    led = " ".join(texts(plots["ledger"]))
    for label in (
        "hashes per proof (count)",
        "appends per second",
        "⌈log₂ n⌉",
        "10³",
        "10⁶",
        "123,456",
        "234,567",
        "20",
        "10",
    ):
        assert label in led, label


def test_bar_heights_are_proportional_to_values_from_zero(plots: dict[str, ET.Element]) -> None:
    bars = by_class(plots["relay-throughput"], "rect", "bar")
    assert len(bars) == 6  # 3 groups x (relay, null)
    scales = {float(b.get("height", 0)) / float(b.get("data-value", 0)) for b in bars}
    assert max(scales) - min(scales) < 1e-3, scales
    bottoms = {round(float(b.get("y", 0)) + float(b.get("height", 0)), 2) for b in bars}
    assert len(bottoms) == 1, bottoms  # one zero baseline
    values = {(b.get("data-group"), b.get("class")): float(b.get("height", 0)) for b in bars}
    # core relay: 1,200 at 1 worker, 600 at 2: twice the height.
    assert values[("core/1", "bar relay")] == pytest.approx(2 * values[("core/2", "bar relay")])
    assert values[("core/1", "bar null")] == pytest.approx(1.5 * values[("core/2", "bar null")])
    # Relay and null relay bars differ by fill pattern, not colour alone.
    fills = {b.get("class"): b.get("fill") for b in bars}
    assert (fills["bar null"] or "").startswith("url(#") and fills["bar relay"] != fills["bar null"]


def test_target_lines_sit_at_the_targets(plots: dict[str, ET.Element]) -> None:
    root = plots["relay-throughput"]
    bar = by_class(root, "rect", "bar")[0]
    scale = float(bar.get("height", 0)) / float(bar.get("data-value", 0))
    base = float(bar.get("y", 0)) + float(bar.get("height", 0))
    (target,) = by_class(root, "line", "target")
    assert base - float(target.get("y1", 0)) == pytest.approx(2000 * scale, abs=0.02)
    marks = by_class(root, "line", "ratio-mark")
    assert sorted(float(m.get("data-value", 0)) for m in marks) == pytest.approx([320, 800, 1200])
    for m in marks:
        assert base - float(m.get("y1", 0)) == pytest.approx(
            float(m.get("data-value", 0)) * scale, abs=0.02
        )


def _y(e: ET.Element) -> float:
    if e.tag == f"{NS}circle":
        return float(e.get("cy", 0))
    if e.tag == f"{NS}rect":
        return float(e.get("y", 0)) + float(e.get("height", 0)) / 2
    points = [tuple(map(float, p.split(","))) for p in (e.get("points") or "").split()]
    return sum(p[1] for p in points[:1]) + 5  # triangle: apex is 5 px above the point


def test_latency_axis_is_logarithmic(plots: dict[str, ET.Element]) -> None:
    root = plots["relay-latency"]
    marks = [e for e in root.iter() if "pct" in (e.get("class") or "").split()]
    assert len(marks) == 12  # 2 kinds x 2 vias x 3 percentiles
    points = [(float(e.get("data-value", 0)), _y(e)) for e in marks]
    (v0, y0), (v1, y1) = min(points), max(points)
    px_per_decade = (y0 - y1) / math.log10(v1 / v0)
    assert px_per_decade > 0
    for v, y in points:
        assert y0 - y == pytest.approx(px_per_decade * math.log10(v / v0), abs=0.05), v
    (target,) = by_class(root, "line", "target")
    assert y0 - float(target.get("y1", 0)) == pytest.approx(
        px_per_decade * math.log10(50 / v0), abs=0.05
    )
    # The runs that could not keep the offered rate are marked as such.
    assert len(by_class(root, "rect", "saturated")) == 2


def test_ledger_points_sit_on_their_values(plots: dict[str, ET.Element]) -> None:
    root = plots["ledger"]
    hashes = by_class(root, "circle", "hashes")
    assert [int(h.get("data-value", 0)) for h in hashes] == [10, 20]
    (bound,) = by_class(root, "polyline", "bound")
    assert bound.get("stroke-dasharray")  # a dashed line, told apart from the points by form
    # Linear, zero-based y: 20 hashes is twice as high above the axis (the "0" tick) as 10.
    zeros = sorted(
        (float(t.get("x", 0)), float(t.get("y", 0)))
        for t in root.iter(f"{NS}text")
        if "".join(t.itertext()) == "0"
    )
    base = zeros[0][1] - 4  # the left panel's; tick labels sit 4 px below their tick
    y10, y20 = (float(h.get("cy", 0)) for h in hashes)
    assert base - y20 == pytest.approx(2 * (base - y10), abs=0.05)
    rates = by_class(root, "polygon", "rate")
    assert [float(r.get("data-value", 0)) for r in rates] == [123456.0, 234567.0]
    x1, x2 = (float(h.get("cx", 0)) for h in hashes)
    assert x2 > x1  # log x: 10^3 then 10^6


def test_report_writes_the_figures_beside_the_page_and_links_them(tmp_path: Path) -> None:
    summary, results = hand_made()
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    plots = write_plots(doc, summary, results)
    section = render(summary, results, plots)
    update_docs(doc, section)
    text = doc.read_text()
    for plot in plots.values():
        assert (doc.parent / IMG_DIR / plot.file).exists()
        link = f"]({IMG_DIR}/{plot.file})"
        assert link in text
        alt = text.split(link)[0].rsplit("![", 1)[1]
        assert len(alt) > 40 and "[" not in alt  # real alt text, nothing that breaks the link
        parse((doc.parent / IMG_DIR / plot.file).read_text())
    # Without plots the section has no image links (python -m bench --no-docs prints it).
    assert "![" not in render(summary, results)


def test_partial_results_still_plot() -> None:
    summary, results = hand_made()
    broken = copy.deepcopy(results)
    core = broken["relay"]["summary"]["core"]
    core["throughput"]["1"] = throughput(None, 900.0, None)
    core["latency"][0]["p99"] = None
    broken["relay"]["summary"]["device"]["latency"] = []
    broken["ledger"]["sizes"] = broken["ledger"]["sizes"][:1]
    quick = {**summary, "quick": True}
    made = make_plots(quick, broken)
    for plot in made.values():
        words = " ".join(texts(parse(plot.svg)))
        assert "QUICK SMOKE RUN" in words
    assert "none" in " ".join(texts(parse(made["relay-throughput"].svg)))
    assert make_plots(summary, {}) == {}


def test_the_committed_results_plot() -> None:
    folder = ROOT / "bench" / "results"
    if not (folder / "summary.json").exists():
        pytest.skip("no bench/results/summary.json")
    summary, results = load(folder)
    for plot in make_plots(summary, results).values():
        parse(plot.svg)


def test_image_links_of_the_benchmarks_page_point_to_files() -> None:
    page = ROOT / "docs" / "benchmarks.md"
    targets = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"docs/benchmarks.md shows images that do not exist: {missing}"
