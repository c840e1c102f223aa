"""The benchmark figures (bench/plots.py, drawn with matplotlib): the data series that go
into each figure (bar heights, points, the target lines and their labels, the scales, the
tick and group labels) read off its matplotlib Axes and checked against the results it was
drawn from, a small hand-made set and the committed bench/results; SVG output that is the
same bytes for the same results; and the links bench/report.py writes to the figures."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="the bench extra: pip install -e '.[bench]'")

import matplotlib
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text

from bench.plots import Plot, make_plots, render_svg
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


# -- reading a figure --------------------------------------------------------------------


def by_gid(where: Figure | Axes, gid: str) -> Artist:
    (found,) = [a for a in where.findobj() if a.get_gid() == gid]
    return found


def line(ax: Axes, gid: str) -> Line2D:
    found = by_gid(ax, gid)
    assert isinstance(found, Line2D)
    return found


def bars(ax: Axes, label: str) -> dict[float, float]:
    """x (the bar's centre) -> height, of the bars with this legend label."""
    (container,) = [c for c in ax.containers if c.get_label() == label]
    assert isinstance(container, BarContainer)
    return {round(p.get_x() + p.get_width() / 2, 6): p.get_height() for p in container.patches}


def texts(where: Figure | Axes) -> list[str]:
    return [t.get_text() for t in where.findobj(Text) if t.get_text()]


def legend_labels(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def tick_labels(ax: Axes, which: str = "x") -> list[str]:
    """The labels of the ticks inside the axis limits (the locator also makes some outside)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    return [
        t.get_text()
        for tick, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=True)
        if lo * (1 - 1e-9) <= tick <= hi * (1 + 1e-9)
    ]


def group_axis(ax: Axes) -> Axes:
    """The second row of x labels (client kind and workers or rate), under the first."""
    (groups,) = ax.child_axes
    return groups


def series(ln: Line2D) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in zip(ln.get_xdata(), ln.get_ydata(), strict=True)]


def flat(pairs: list[tuple[float, ...]]) -> list[float]:
    """Pairs (or triples) in one list, for pytest.approx."""
    return [v for pair in pairs for v in pair]


@pytest.fixture(scope="module")
def plots() -> dict[str, Plot]:
    summary, results = hand_made()
    made = make_plots(summary, results)
    assert set(made) == {"relay-throughput", "relay-latency", "ledger"}
    return made


# -- every figure --------------------------------------------------------------------------


def test_every_figure_is_titled_labelled_and_captioned(plots: dict[str, Plot]) -> None:
    titles = {
        "relay-throughput": "Relay vs null relay throughput",
        "relay-latency": "End-to-end latency at a fixed offered rate",
        "ledger": "Merkle log (ledger / key directory): proof size and append rate",
    }
    for key, plot in plots.items():
        fig = plot.figure
        title, caption = by_gid(fig, "title"), by_gid(fig, "caption")
        assert isinstance(title, Text) and isinstance(caption, Text)
        assert title.get_text() == titles[key]
        # The machine and the date are on every figure.
        words = caption.get_text().replace("\n", " ")
        assert "4 cores" in words or "4 CPUs" in words, key
        assert "2030-01-02" in words or "no CPU model or date" in words, key
        assert "QUICK SMOKE RUN" not in " ".join(texts(fig))
        for ax in fig.axes:
            assert ax.get_ylabel(), key
            assert ax.get_legend() is not None, key
        # The SVG is titled and described for assistive technology and search.
        root = ET.fromstring(plot.svg)
        assert root.tag == f"{NS}svg"
        svg_title = root.find(f"{NS}title")
        assert svg_title is not None and svg_title.text
        assert "<dc:description>" in plot.svg
    assert plots["ledger"].file == "bench-ledger.svg"
    assert plots["relay-throughput"].file == "bench-relay-throughput.svg"
    assert plots["relay-latency"].file == "bench-relay-latency.svg"


def test_svg_is_the_same_bytes_for_the_same_results(plots: dict[str, Plot], tmp_path: Path) -> None:
    summary, results = hand_made()
    # Built again, under other rcParams in the process: the same bytes.
    with matplotlib.rc_context({"axes.grid": True, "axes.linewidth": 3, "svg.hashsalt": None}):
        again = make_plots(summary, results)
    for key, plot in plots.items():
        assert again[key].svg == plot.svg, key
        assert render_svg(plot.figure, "t", "d") == render_svg(plot.figure, "t", "d"), key
        assert "<dc:date>" not in plot.svg, key
    # In another process, with another hash seed and a matplotlibrc of its own: the same.
    rc = tmp_path / "matplotlibrc"
    rc.write_text("axes.grid: True\nxtick.major.size: 9\nsvg.fonttype: path\n")
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from bench.plots import make_plots\n"
        "summary, results = json.load(sys.stdin)\n"
        "for key, plot in sorted(make_plots(summary, results).items()):\n"
        "    sys.stdout.write(plot.svg)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)],
        input=json.dumps(hand_made()),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "12345", "MATPLOTLIBRC": str(rc)},
    )
    assert done.stdout == "".join(plots[key].svg for key in sorted(plots))


# -- 1. relay throughput -------------------------------------------------------------------


def test_throughput_bars_are_the_medians_from_zero(plots: dict[str, Plot]) -> None:
    (ax,) = plots["relay-throughput"].figure.axes
    # Groups at x = 0, 1, 2 (core/1, core/2, device/1); relay left, null right.
    relay, null = bars(ax, "relay (median)"), bars(ax, "null relay (median)")
    assert flat(sorted(relay.items())) == pytest.approx([-0.21, 1200, 0.79, 600, 1.79, 300])
    assert flat(sorted(null.items())) == pytest.approx([0.21, 1500, 1.21, 1000, 2.21, 400])
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 2000  # zero-based, target in view
    assert ax.get_yscale() == "linear"
    # Relay and null relay bars differ by fill pattern, not colour alone.
    (relay_bars,) = [c for c in ax.containers if c.get_label() == "relay (median)"]
    (null_bars,) = [c for c in ax.containers if c.get_label() == "null relay (median)"]
    assert all(not p.get_hatch() for p in relay_bars.patches)
    assert all(p.get_hatch() for p in null_bars.patches)
    # Each bar labelled with its value; every run a dot.
    words = texts(ax)
    for label in ("1,200", "1,500", "600", "1,000", "300", "400"):
        assert label in words, label
    runs = by_gid(ax, "runs")
    assert isinstance(runs, PathCollection) and runs.get_label() == "one run"
    ys = sorted(float(y) for _, y in runs.get_offsets())
    medians = (1200, 600, 300, 1500, 1000, 400)
    assert ys == pytest.approx(sorted(m + d for m in medians for d in (-50, 0, 50)))


def test_throughput_targets(plots: dict[str, Plot]) -> None:
    (ax,) = plots["relay-throughput"].figure.axes
    target = line(ax, "target")
    assert list(target.get_ydata()) == [2000, 2000]
    assert target.get_label() == "2,000 msg/s target"
    assert target.get_linestyle() != "-"  # dashed: told apart from the bars by form
    assert "target 2,000 msg/s" in texts(ax)
    # The ratio target: a mark at 0.8 x the null relay median across each relay bar.
    marks = by_gid(ax, "ratio-marks")
    assert isinstance(marks, LineCollection)
    assert marks.get_label() == "0.8 \u00d7 null relay median (ratio target)"
    segments = sorted(
        ((a[0] + b[0]) / 2, a[1], b[1]) for a, b in (s.tolist() for s in marks.get_segments())
    )
    assert flat(segments) == pytest.approx([-0.21, 1200, 1200, 0.79, 800, 800, 1.79, 320, 320])
    assert legend_labels(ax) == [
        "relay (median)",
        "0.8 \u00d7 null relay median (ratio target)",
        "null relay (median)",
        "2,000 msg/s target",
        "one run",
    ]  # two rows (the legend fills by column): the measurements, then the targets


def test_throughput_x_labels(plots: dict[str, Plot]) -> None:
    (ax,) = plots["relay-throughput"].figure.axes
    assert tick_labels(ax) == ["relay", "null"] * 3
    groups = group_axis(ax)
    assert tick_labels(groups) == [
        "core\n1 relay worker\nratio 0.80 ≥ 0.8",
        "core\n2 relay workers\nratio 0.60 < 0.8",
        "device\n1 relay worker\nratio 0.75 < 0.8",
    ]
    assert groups.get_xlabel() == "client kind and relay workers"
    assert ax.get_ylabel() == "throughput (messages/s)"
    assert tick_labels(ax, "y")[:3] == ["0", "250", "500"] and "2,000" in tick_labels(ax, "y")


# -- 2. relay latency ----------------------------------------------------------------------


def test_latency_percentiles_on_a_log_axis(plots: dict[str, Plot]) -> None:
    (ax,) = plots["relay-latency"].figure.axes
    assert ax.get_yscale() == "log"
    assert ax.get_ylim() == pytest.approx((1, 10_000))  # whole decades around the values
    # Columns: core relay, core null (group 0), device relay, device null (group 1).
    expected = {"p50": [3, 2, 1000, 900], "p90": [6, 4, 2000, 1800], "p99": [30, 20, 3000, 2700]}
    for p, values in expected.items():
        points = series(line(ax, p))
        assert [x for x, _ in points] == pytest.approx([-0.25, 0.25, 0.75, 1.25]), p
        assert [y for _, y in points] == values, p
    # Told apart by marker shape, not colour alone.
    markers = {p: line(ax, p).get_marker() for p in ("p50", "p90", "p99")}
    assert len(set(markers.values())) == 3
    words = texts(ax)
    for label in ("30.0", "3.0", "3,000", "2.0", "20.0", "900", "2,700"):
        assert label in words, label
    assert tick_labels(ax, "y") == ["1", "10", "100", "1,000", "10,000"]
    assert ax.get_ylabel() == "latency (ms, log scale)"


def test_latency_target_and_saturated_runs(plots: dict[str, Plot]) -> None:
    (ax,) = plots["relay-latency"].figure.axes
    target = line(ax, "target")
    assert list(target.get_ydata()) == [50, 50]
    assert target.get_label() == "p99 target 50 ms"
    assert "target: p99 < 50 ms at 500 msg/s offered" in texts(ax)
    # The achieved rate under each column, bold where it fell behind the offered rate,
    # and those columns shaded.
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == ["relay\n500", "null\n500", "relay\n350", "null\n360"]
    assert [t.get_fontweight() for t in labels] == ["normal", "normal", "bold", "bold"]
    shaded = [a for a in ax.patches if (a.get_gid() or "").startswith("saturated")]
    centres = []
    for band in shaded:  # a Rectangle (matplotlib >= 3.9) or a Polygon: x in data units
        xs = band.get_patch_transform().transform(band.get_path().vertices)[:, 0]
        centres.append(round(float(xs.min() + xs.max()) / 2, 6))
    assert sorted(centres) == [0.75, 1.25]
    assert tick_labels(group_axis(ax)) == ["core\n500 msg/s offered", "device\n500 msg/s offered"]
    assert group_axis(ax).get_xlabel() == "client kind and offered rate"
    assert legend_labels(ax) == [
        "p50",
        "p90",
        "p99",
        "p99 target 50 ms",
        "achieved < offered rate",
    ]


# -- 3. ledger -----------------------------------------------------------------------------


def test_ledger_proofs_under_the_bound_and_append_rate(plots: dict[str, Plot]) -> None:
    left, right = plots["ledger"].figure.axes
    assert left.get_title(loc="left") == "Inclusion proof size"
    assert right.get_title(loc="left") == "Append rate"
    for ax in (left, right):
        assert ax.get_xscale() == "log"
        assert ax.get_xlabel() == "entries in the log, n (log scale)"
        assert ax.get_ylim()[0] == 0
        assert tick_labels(ax) == ["10³", "10⁴", "10⁵", "10⁶"]
    assert series(line(left, "hashes")) == [(1000, 10), (1_000_000, 20)]
    assert left.get_ylabel() == "hashes per proof (count)"
    # The bound: a dashed staircase at ceil(log2 n) over the whole x range.
    bound = line(left, "bound")
    assert bound.get_linestyle() != "-"
    steps = series(bound)
    assert steps[0][0] == pytest.approx(left.get_xlim()[0])
    assert steps[-1][0] == pytest.approx(left.get_xlim()[1])
    for (x0, y0), (x1, y1) in zip(steps[::2], steps[1::2], strict=True):
        assert y0 == y1 == math.ceil(math.log2(x1) - 1e-9), (x0, x1)
        assert x0 < x1
    assert "10" in texts(left) and "20" in texts(left)
    rate = line(right, "append-rate")
    assert series(rate) == [(1000, 123456.0), (1_000_000, 234567.0)]
    assert right.get_ylabel() == "appends per second"
    assert "123,456" in texts(right) and "234,567" in texts(right)
    assert legend_labels(left) == [
        "inclusion proof: most hashes",
        "⌈log₂ n⌉ (the bound)",
    ]
    assert legend_labels(right) == ["appends per second"]


# -- partial results, the committed results, the report -------------------------------------


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
        assert "QUICK SMOKE RUN: tiny counts, the figures mean nothing." in texts(plot.figure)
        ET.fromstring(plot.svg)
    (ax,) = made["relay-throughput"].figure.axes
    assert "none" in texts(ax)  # core, 1 worker: no relay median
    assert sorted(bars(ax, "relay (median)").values()) == [300, 600]
    (ax,) = made["relay-latency"].figure.axes
    assert [y for _, y in series(line(ax, "p99"))] == [20]  # the one p99 left
    assert make_plots(summary, {}) == {}


def test_the_committed_results_plot_their_json() -> None:
    folder = ROOT / "bench" / "results"
    if not (folder / "summary.json").exists():
        pytest.skip("no bench/results/summary.json")
    summary, results = load(folder)
    made = make_plots(summary, results)
    relay = results["relay"]["summary"]
    (ax,) = made["relay-throughput"].figure.axes
    groups = [
        t
        for s in relay.values()
        for _, t in sorted(s["throughput"].items(), key=lambda kv: int(kv[0]))
    ]
    assert [h for _, h in sorted(bars(ax, "relay (median)").items())] == [
        t["relay_msgs_per_s"] for t in groups if t["relay_msgs_per_s"] is not None
    ]
    assert [h for _, h in sorted(bars(ax, "null relay (median)").items())] == [
        t["null_msgs_per_s"] for t in groups if t["null_msgs_per_s"] is not None
    ]
    (ax,) = made["relay-latency"].figure.axes
    p99 = sorted(lat["p99"] for s in relay.values() for lat in s["latency"] if lat["p99"])
    assert sorted(y for _, y in series(line(ax, "p99"))) == p99
    left, right = made["ledger"].figure.axes
    rows = results["ledger"]["sizes"]
    assert series(line(left, "hashes")) == [(r["size"], r["inclusion"]["hashes_max"]) for r in rows]
    assert series(line(right, "append-rate")) == [(r["size"], r["append_per_s"]) for r in rows]
    # The page shows these figures with these alt texts.
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for plot in made.values():
        alt = plot.alt.replace("[", "(").replace("]", ")")
        assert f"![{alt}]({IMG_DIR}/{plot.file})" in page, plot.key
        ET.parse(ROOT / "docs" / IMG_DIR / plot.file)


def test_report_writes_the_figures_beside_the_page_and_links_them(tmp_path: Path) -> None:
    summary, results = hand_made()
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    plots = write_plots(doc, summary, results)
    section = render(summary, results, plots)
    update_docs(doc, section)
    text = doc.read_text()
    for plot in plots.values():
        written = doc.parent / IMG_DIR / plot.file
        assert written.read_text(encoding="utf-8") == plot.svg
        link = f"]({IMG_DIR}/{plot.file})"
        assert link in text
        alt = text.split(link)[0].rsplit("![", 1)[1]
        assert len(alt) > 40 and "[" not in alt  # real alt text, nothing that breaks the link
    # Without plots the section has no image links (python -m bench --no-docs prints it).
    assert "![" not in render(summary, results)


def test_image_links_of_the_benchmarks_page_point_to_files() -> None:
    page = ROOT / "docs" / "benchmarks.md"
    targets = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"docs/benchmarks.md shows images that do not exist: {missing}"
