"""Figures of the benchmark results, drawn with matplotlib (the ``bench`` extra:
``pip install -e '.[bench]'``). ``make_plots(summary, results)`` returns one ``Plot`` per
figure the results allow: its file name, its SVG text, an alt text for the Markdown image
link, and the matplotlib ``Figure`` it was drawn from (the tests read the values, labels
and targets off its Axes).

* ``bench-relay-throughput.svg``: relay and null relay throughput (msg/s) per client kind
  and relay worker count, grouped bars on a zero-based axis, each bar labelled with its
  value, every run as a dot, the 2,000 msg/s target as a line across and the 0.8 times
  null relay ratio target as a mark on each relay bar;
* ``bench-relay-latency.svg``: p50 / p90 / p99 latency per client kind, via (relay or
  null relay) and offered rate, on a log axis in ms, with the 50 ms target line, the rate
  each run actually achieved, and the runs that fell behind the offered rate shaded;
* ``bench-ledger.svg``: inclusion proof size (hashes) against entries on a log axis with
  the ⌈log2 n⌉ bound, and the append rate.

Every figure has a title, axis labels with units, a legend, labelled target lines and a
caption with the machine (cores, CPU) and the date of the run; nothing is told apart by
colour alone (bars by hatching and a label under each, percentiles by marker shape, lines
by dash and a direct label).

The SVG is reproducible: the same results give the same bytes (with the same matplotlib).
The figures are built on ``matplotlib.figure.Figure`` (no pyplot, no display) and written
by the SVG backend under matplotlib's default style and ``STYLE`` (not the process's
rcParams or a matplotlibrc): a fixed ``svg.hashsalt`` for the ids, text laid out in DejaVu
Sans (which matplotlib ships) and kept as text, and no date in the metadata.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

try:
    from matplotlib import patheffects, style
except ImportError as error:  # the figures need the bench extra
    raise ImportError(
        "bench/plots.py draws the figures with matplotlib: pip install -e '.[bench]'"
    ) from error
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

TARGET_RATIO = 0.8
TARGET_RATE = 2000.0
TARGET_P99_MS = 50.0

INK = "#1a1a1a"
MUTED = "#555555"
GRID = "#dddddd"
RELAY = "#1f4e79"  # dark blue: relay bars (solid), null relay bars (white, blue hatching)
TARGET = "#a4161a"  # dark red: target lines and their labels
MARK = "#c45a00"  # dark orange: the 0.8 ratio mark
BAND = "#ececec"  # background of saturated (achieved < offered) runs
TIMES = "\u00d7"  # the multiplication sign
QUICK = " QUICK SMOKE RUN: tiny counts, the figures mean nothing."

# Everything that decides how a figure looks, and the SVG's bytes, over matplotlib's
# defaults (not the rcParams of the process or a matplotlibrc of the user's).
STYLE: dict[str, Any] = {
    # Text is laid out in DejaVu Sans, which matplotlib ships (so the layout does not depend
    # on the fonts installed), and written as SVG text; a viewer without DejaVu Sans uses
    # the next of these, not its default serif.
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Verdana", "Arial", "Helvetica"],
    "font.size": 9,
    "svg.fonttype": "none",
    "svg.hashsalt": "doormat-bench",  # ids (clip paths, hatches) from the content, not random
    "axes.edgecolor": INK,
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": INK,
    "ytick.color": INK,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "hatch.linewidth": 1.2,
}
WIDTH_IN = 7.4  # figure width in inches (533 pt)
PAD_IN = 0.15  # left and right margin of the header and caption
# A white box behind a label, so that it reads over grid and target lines (a stroke
# path effect would do it too, but would turn the text into paths in the SVG).
HALO: dict[str, Any] = {"boxstyle": "square,pad=0.12", "facecolor": "white", "edgecolor": "none"}
VALUE: dict[str, Any] = {"weight": "bold", "bbox": HALO}  # a value written beside its mark
TARGET_DASH = (0, (6, 3))


@dataclass(frozen=True)
class Plot:
    key: str  # "relay-throughput", "relay-latency", "ledger"
    file: str  # file name, e.g. "bench-relay-throughput.svg"
    alt: str  # alt text for the Markdown image link
    svg: str
    figure: Figure = field(compare=False, repr=False)


# -- text helpers ----------------------------------------------------------------------


def plural(n: object, word: str) -> str:
    """'1 run', '3 runs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def thousands(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    """Latency for a label: 3.2, 11.2, 1,451."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def power_of_ten(value: float, _position: object = None) -> str:
    """A tick label of a log axis: 10⁴ (plain text, not mathtext: it stays SVG text in the
    fonts of ``STYLE``)."""
    k = round(math.log10(value)) if value > 0 else 0
    if value > 0 and math.isclose(value, 10.0**k):
        return "10" + str(k).translate(SUPERSCRIPT)
    return f"{value:,g}"


def _fmt(x: Any, nd: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


def machine_caption(name: str, result: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """'Machine: 2 cores (AMD EPYC, x86_64), Python 3.11.7; run 2026-11-29 08:46 +0000.'"""
    m = result.get("machine")
    if isinstance(m, Mapping):
        return (
            f"Machine: {m.get('cores')} cores ({m.get('cpu_model')}, {m.get('arch')}), "
            f"Python {m.get('python')}; run {m.get('when')}."
        )
    # Older result files (ledger, crypto) record only the architecture and CPU count.
    when = summary.get("machine", {}).get("when")
    earlier = any(r.get("name") == name and r.get("earlier") for r in summary.get("runs", []))
    dated = f"from a run before {when}" if earlier else f"run {when}"
    return (
        f"Machine: {result.get('cpu_count')} CPUs ({m}), Python {result.get('python')} "
        f"({name}.json records no CPU model or date; {dated}; the other benchmarks ran on "
        f"{summary.get('machine', {}).get('cores')} cores, "
        f"{summary.get('machine', {}).get('cpu_model')})."
    )


def quick_note(summary: Mapping[str, Any]) -> str:
    return QUICK if summary.get("quick") else ""


# -- the frame every figure shares -------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def styled(build: Callable[P, R]) -> Callable[P, R]:
    """``build`` run under ``STYLE`` (the style applies when the artists are made)."""

    @functools.wraps(build)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with style.context(["default", STYLE]):
            return build(*args, **kwargs)

    return run


def _wrap(text: str, size: float) -> list[str]:
    """``text`` in lines that fit the figure's width at ``size`` pt (DejaVu Sans is wide)."""
    chars = int((WIDTH_IN - 2 * PAD_IN) * 72 / (size * 0.56))
    return textwrap.wrap(text, chars)


def figure(
    title: str, subtitle: str, caption: str, summary: Mapping[str, Any], plot_height_in: float
) -> Figure:
    """A figure with a header (bold title, wrapped subtitle, the quick-run warning if it is
    one) and a wrapped caption, and ``plot_height_in`` inches between them for the axes and
    the legend, which matplotlib's constrained layout places."""
    lines = _wrap(subtitle, 9)
    if summary.get("quick"):
        lines.append(QUICK.strip())
    notes = _wrap(caption, 8)
    step, small = 9 * 1.3 / 72, 8 * 1.3 / 72  # line heights in inches
    head = 0.42 + step * len(lines)
    foot = 0.12 + small * len(notes)
    height = head + plot_height_in + foot
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    layout = fig.get_layout_engine()
    assert isinstance(layout, ConstrainedLayoutEngine)
    layout.set(  # the axes and legends go between the header and the caption
        rect=(0, foot / height, 1, plot_height_in / height), h_pad=0.04, w_pad=0.06
    )
    x = PAD_IN / WIDTH_IN
    fig.text(x, 1 - 0.3 / height, title, size=12.5, weight="bold", color=INK, gid="title")
    for i, line in enumerate(lines):
        quick = line == QUICK.strip()
        fig.text(
            x,
            1 - (0.3 + step * (i + 1)) / height,
            line,
            size=9,
            color=TARGET if quick else MUTED,
            weight="bold" if quick else "normal",
            gid="quick" if quick else f"subtitle-{i}",
        )
    fig.text(
        x,
        (foot - 0.06) / height,
        "\n".join(notes),
        size=8,
        color=MUTED,
        va="top",
        linespacing=1.3,
        gid="caption",
    )
    return fig


def legend(ax: Axes, handles: Sequence[Any], ncols: int, **kw: Any) -> None:
    """The legend in rows of ``ncols`` (left to right, then down), above ``ax`` unless
    ``kw`` says where."""
    rows = [list(handles[i : i + ncols]) for i in range(0, len(handles), ncols)]
    by_column = [row[c] for c in range(ncols) for row in rows if c < len(row)]
    where: dict[str, Any] = {"loc": "lower left", "bbox_to_anchor": (0, 1.02)}
    ax.legend(
        handles=by_column,
        ncols=ncols,
        handlelength=2.2,
        columnspacing=1.6,
        borderaxespad=0,
        **(kw or where),
    )


def note(
    ax: Axes, text: str, xy: tuple[float, float], offset: tuple[float, float], **style: Any
) -> None:
    """``text`` at ``xy`` (data coordinates unless ``xycoords`` says otherwise), moved by
    ``offset`` points."""
    style = {"size": 8.5, "color": INK, "ha": "center", "va": "bottom", **style}
    ax.annotate(text, xy=xy, xytext=offset, textcoords="offset points", **style)


def target_line(ax: Axes, y: float, label: str, text: str, side: str = "right") -> None:
    """A dashed red line across ``ax`` at ``y`` (``label`` for the legend), with ``text``
    written above it at the ``side`` end."""
    ax.axhline(y, color=TARGET, linewidth=1.3, linestyle=TARGET_DASH, label=label, gid="target")
    right = side == "right"
    xy = (1.0 if right else 0.0, y)
    offset = (-4.0 if right else 4.0, 3.0)
    note(ax, text, xy, offset, xycoords=("axes fraction", "data"), ha=side, color=TARGET, bbox=HALO)


def group_labels(
    ax: Axes, positions: Sequence[float], labels: Sequence[str], label: str, under: int
) -> None:
    """A second row of x labels, one per group of bars or columns, under the first (whose
    labels have ``under`` lines), and the x axis label under them."""
    groups = ax.secondary_xaxis("bottom")
    groups.set_xticks(list(positions), labels=list(labels))
    groups.tick_params(axis="x", length=0, pad=3.5 + under * 8.5 * 1.2 + 6, labelsize=9)
    groups.spines["bottom"].set_visible(False)
    groups.set_xlabel(label)


def render_svg(fig: Figure, title: str, desc: str) -> str:
    """The figure as SVG text: no date, ids from a fixed salt, so the same results give
    the same bytes. The first rendering lays the figure out (constrained layout), and the
    layout then stays as it is: run again, constrained layout would start from where it
    ended and move things by a few millionths of a point, and the bytes would change."""
    out = io.BytesIO()
    with style.context(["default", STYLE]):
        fig.savefig(
            out,
            format="svg",
            metadata={"Date": None, "Title": title, "Description": desc},
        )
    fig.set_layout_engine("none")
    return out.getvalue().decode("utf-8")


# -- 1. relay throughput ---------------------------------------------------------------

BAR_W = 0.38  # bar width, in groups
BAR_OFFSET = 0.21  # relay bar left of the group's centre, null relay bar right


def _throughput_groups(relay: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    groups: list[tuple[str, int, Mapping[str, Any]]] = []
    for mode, s in relay["summary"].items():
        for k, t in sorted(s["throughput"].items(), key=lambda kv: int(kv[0])):
            groups.append((mode, int(k), t))
    return groups


@styled
def throughput_figure(relay: Mapping[str, Any], summary: Mapping[str, Any]) -> Figure:
    groups = _throughput_groups(relay)
    plan = relay.get("plan", {})
    caption = (
        machine_caption("relay", relay, summary)
        + f" Closed loop: {plan.get('conversations')} conversations {TIMES} {plan.get('window')} "
        f"messages in flight, 512-byte plaintexts, QoS 1, Mosquitto on loopback, "
        f"{plan.get('duration')} s runs. Bars: median of {plural(plan.get('repeats'), 'run')} "
        f"({plan.get('scaling_repeats')} with 2+ workers); dots: each run. Ratio: median "
        "of back-to-back relay/null pairs. The machine is shared: runs vary by about 20 %."
        + quick_note(summary)
    )
    fig = figure(
        "Relay vs null relay throughput",
        "E2EE messages delivered and decrypted per second, by client kind and number of "
        "relay workers",
        caption,
        summary,
        4.3,
    )
    ax = fig.add_subplot()
    # (via, legend label, fill, hatch, x offset in the group)
    kinds = [
        ("relay", "relay (median)", RELAY, None, -BAR_OFFSET),
        ("null", "null relay (median)", "white", "////", BAR_OFFSET),
    ]
    tops: list[float] = [TARGET_RATE]
    run_x: list[float] = []
    run_y: list[float] = []
    mark_x: list[float] = []
    mark_y: list[float] = []
    for via, label, fill, hatch, dx in kinds:
        xs: list[float] = []
        heights: list[float] = []
        for gi, (_, _, t) in enumerate(groups):
            value = t.get(f"{via}_msgs_per_s")
            runs = [r for r in t.get(f"{via}_runs") or [] if r is not None]
            x = gi + dx
            for ri, run in enumerate(runs):
                run_x.append(x + (ri - (len(runs) - 1) / 2) * 0.09)
                run_y.append(run)
            above = [*runs]
            null = t.get("null_msgs_per_s")
            if via == "relay" and null is not None:
                mark_x.append(x)
                mark_y.append(TARGET_RATIO * null)
                above.append(TARGET_RATIO * null)
            if value is None:
                note(ax, "none", (x, 0), (0, 4), size=8, color=MUTED)
                continue
            xs.append(x)
            heights.append(value)
            top = max([value, *above])
            tops.append(top)
            note(ax, thousands(value), (x, top), (0, 5), **VALUE)
        ax.bar(
            xs,
            heights,
            width=BAR_W,
            color=fill,
            edgecolor=RELAY,
            linewidth=1,
            hatch=hatch,
            label=label,
        )
    ax.hlines(
        mark_y,
        [x - BAR_W / 2 - 0.06 for x in mark_x],
        [x + BAR_W / 2 + 0.06 for x in mark_x],
        colors=MARK,
        linewidth=3,
        path_effects=[patheffects.withStroke(linewidth=6, foreground="white")],
        zorder=2.5,
        label=f"{TARGET_RATIO} {TIMES} null relay median (ratio target)",
        gid="ratio-marks",
    )
    ax.scatter(
        run_x,
        run_y,
        s=16,
        facecolors="white",
        edgecolors=INK,
        linewidths=1,
        zorder=3,
        label="one run",
        gid="runs",
    )
    target_line(
        ax, TARGET_RATE, f"{TARGET_RATE:,.0f} msg/s target", f"target {TARGET_RATE:,.0f} msg/s"
    )
    ax.set_ylim(0, max(tops) * 1.12)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("throughput (messages/s)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: thousands(v)))
    ax.grid(axis="y")
    bars_x = [gi + dx for gi in range(len(groups)) for *_, dx in kinds]
    ax.set_xticks(bars_x, labels=[via for _ in groups for via, *_ in kinds])
    ax.tick_params(axis="x", length=0)
    names = []
    for mode, workers, t in groups:
        name = f"{mode}\n{plural(workers, 'relay worker')}"
        ratio = t.get("ratio")
        if ratio is not None:
            name += f"\nratio {ratio:.2f} {'≥' if ratio >= TARGET_RATIO else '<'} {TARGET_RATIO}"
        names.append(name)
    group_labels(ax, range(len(groups)), names, "client kind and relay workers", under=1)
    handles, labels = ax.get_legend_handles_labels()
    by_label = dict(zip(labels, handles, strict=True))
    # Two rows: what was measured, then the targets.
    order = ["relay (median)", "null relay (median)", "one run"]
    order += [label for label in labels if label not in order]
    legend(ax, [by_label[label] for label in order], 3)
    return fig


def _throughput_text(relay: Mapping[str, Any]) -> tuple[str, str]:
    groups = _throughput_groups(relay)
    desc = "; ".join(
        f"{mode} clients, {k} worker{'s' if k > 1 else ''}: relay "
        f"{_fmt(t.get('relay_msgs_per_s'))}, null relay {_fmt(t.get('null_msgs_per_s'))} msg/s, "
        f"ratio {_fmt(t.get('ratio'), 2)}"
        for mode, k, t in groups
    )
    medians = [
        (t["relay_msgs_per_s"], mode, k) for mode, k, t in groups if t.get("relay_msgs_per_s")
    ]
    ratios = [t["ratio"] for _, _, t in groups if t.get("ratio") is not None]
    alt = (
        "Grouped bar chart: relay and null relay throughput in messages per second (zero-based "
        "axis) for each client kind and number of relay workers, with the 2,000 msg/s target"
    )
    if medians:
        top, top_mode, top_k = max(medians)
        alt += (
            f"; highest relay median {top:,.0f} msg/s ({top_mode} clients, "
            f"{plural(top_k, 'relay worker')})"
        )
    if ratios:
        alt += f"; relay/null ratios {min(ratios):.2f} to {max(ratios):.2f} against the 0.8 target"
    alt += ". Figures in the table above."
    return desc + ".", alt


def throughput_plot(relay: Mapping[str, Any], summary: Mapping[str, Any]) -> Plot:
    fig = throughput_figure(relay, summary)
    desc, alt = _throughput_text(relay)
    title = "Relay vs null relay throughput (E2EE messages delivered and decrypted per second)"
    svg = render_svg(fig, title, desc)
    return Plot("relay-throughput", "bench-relay-throughput.svg", alt, svg, fig)


# -- 2. relay latency ------------------------------------------------------------------

PERCENTILES = {"p50": "o", "p90": "s", "p99": "^"}  # marker shapes
COLUMN_OFFSET = 0.25  # relay column left of the group's centre, null relay right
Column = tuple[str, Mapping[str, Any] | None]  # (via, latency entry or None: not run)


def _latencies(s: Mapping[str, Any]) -> list[dict[str, Any]]:
    lat = s.get("latency") or []
    if isinstance(lat, Mapping):  # results written before several rates were measured
        return [{"via": k, **v} for k, v in lat.items()]
    return list(lat)


def latency_groups(relay: Mapping[str, Any]) -> list[tuple[str, float, list[Column]]]:
    """(client kind, offered rate, [(via, entry or None), ...]) for relay and null."""
    groups: list[tuple[str, float, list[Column]]] = []
    for mode, s in relay["summary"].items():
        lats = _latencies(s)
        for rate in sorted({lat["offered_rate"] for lat in lats}):
            cols: list[Column] = []
            for via in ("relay", "null"):
                match = [lat for lat in lats if lat["via"] == via and lat["offered_rate"] == rate]
                cols.append((via, match[0] if match else None))
            groups.append((mode, rate, cols))
    return groups


def saturated(lat: Mapping[str, Any] | None, rate: float) -> bool:
    """The clients delivered less than the offered rate (queues grew)."""
    achieved = lat.get("achieved") if lat else None
    return achieved is not None and achieved < 0.98 * rate


@styled
def latency_figure(relay: Mapping[str, Any], summary: Mapping[str, Any]) -> Figure | None:
    groups = latency_groups(relay)
    values = [
        lat[p]
        for _, _, cols in groups
        for _, lat in cols
        if lat is not None
        for p in PERCENTILES
        if lat.get(p) is not None and lat[p] > 0
    ]
    if not values:
        return None
    plan = relay.get("plan", {})
    caption = (
        machine_caption("relay", relay, summary)
        + f" Open loop: messages due at a fixed offered rate round-robin over "
        f"{plan.get('conversations')} conversations for {plan.get('latency_duration')} s; "
        "latency from the time a message was due to its decryption by the receiving device "
        "(so waiting to be sent counts). Grey columns: the clients delivered less than the "
        "offered rate, queues grew, and latency is mostly queueing (through the null relay "
        "as much as through the relay)." + quick_note(summary)
    )
    fig = figure(
        "End-to-end latency at a fixed offered rate",
        "p50 / p90 / p99 from send to decryption, through the relay and the null relay, "
        "by client kind and offered rate",
        caption,
        summary,
        4.6,
    )
    ax = fig.add_subplot()
    lo = 10 ** math.floor(math.log10(min([*values, TARGET_P99_MS])))
    hi = 10 ** math.ceil(math.log10(max([*values, TARGET_P99_MS])))
    if hi <= lo:
        hi = lo * 10
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    points: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in PERCENTILES}
    ticks: list[tuple[float, str, bool]] = []  # (x, label, saturated)
    for gi, (_, rate, cols) in enumerate(groups):
        for ci, (via, lat) in enumerate(cols):
            x = gi + (ci - 0.5) * 2 * COLUMN_OFFSET
            behind = saturated(lat, rate)
            ticks.append((x, f"{via}\n{_fmt(lat.get('achieved')) if lat else '-'}", behind))
            if behind:
                ax.axvspan(x - 0.2, x + 0.2, color=BAND, zorder=0, gid=f"saturated-{len(ticks)}")
            present = [
                (p, float(lat[p]))
                for p in PERCENTILES
                if lat is not None and lat.get(p) is not None and lat[p] > 0
            ]
            if not present:
                note(ax, "not run" if lat is None else "no data", (x, lo), (0, 5), color=MUTED)
                continue
            for p, v in present:
                points[p][0].append(x)
                points[p][1].append(v)
            ys = [v for _, v in present]
            ax.vlines(x, min(ys), max(ys), colors=INK, linewidth=1.3, zorder=2)
            # p99 written up from its marker and p50 down, so that the two never overlap.
            for p, v in present:
                if p == "p99":
                    note(ax, ms(v), (x, v), (7, -3), ha="left", bbox=HALO)
                elif p == "p50":
                    note(ax, ms(v), (x, v), (7, 3), ha="left", va="top", bbox=HALO)
    for p, marker in PERCENTILES.items():
        xs, ys = points[p]
        ax.plot(
            xs,
            ys,
            linestyle="none",
            marker=marker,
            markersize=6 if p != "p90" else 5.5,
            markerfacecolor="white" if p == "p90" else INK,
            markeredgecolor=INK,
            markeredgewidth=1.2,
            zorder=3,
            label=p,
            gid=p,
        )
    rates = plan.get("latency_rates") or [plan.get("latency_rate")]
    at_rate = f" at {rates[0]:,.0f} msg/s offered" if rates and rates[0] else ""
    target_line(
        ax,
        TARGET_P99_MS,
        f"p99 target {TARGET_P99_MS:.0f} ms",
        f"target: p99 < {TARGET_P99_MS:.0f} ms{at_rate}",
        side="left",
    )
    ax.set_ylabel("latency (ms, log scale)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", which="major")
    ax.grid(axis="y", which="minor", linewidth=0.5, alpha=0.6)
    ax.set_xticks([x for x, _, _ in ticks], labels=[label for _, label, _ in ticks])
    for text, (_, _, behind) in zip(ax.get_xticklabels(), ticks, strict=True):
        text.set_fontweight("bold" if behind else "normal")
    ax.tick_params(axis="x", length=0)
    # What the two lines of the column labels are, at their left.
    note(
        ax,
        "via\nachieved msg/s",
        (0, 0),
        (-8, -3.5),
        xycoords="axes fraction",
        ha="right",
        va="top",
        color=MUTED,
    )
    group_labels(
        ax,
        range(len(groups)),
        [f"{mode}\n{rate:,.0f} msg/s offered" for mode, rate, _ in groups],
        "client kind and offered rate",
        under=2,
    )
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor=BAND, edgecolor=MUTED, label="achieved < offered rate"))
    legend(ax, handles, 5)
    return fig


def _latency_text(relay: Mapping[str, Any]) -> tuple[str, str]:
    groups = latency_groups(relay)
    desc = "; ".join(
        f"{mode} clients via {via} at {rate:,.0f} msg/s offered (achieved "
        f"{_fmt(lat.get('achieved'))}): p50 {_fmt(lat.get('p50'), 1)}, p90 "
        f"{_fmt(lat.get('p90'), 1)}, p99 {_fmt(lat.get('p99'), 1)} ms"
        for mode, rate, cols in groups
        for via, lat in cols
        if lat is not None
    )
    kept: list[float] = []
    behind: list[str] = []
    for mode, rate, cols in groups:
        for via, lat in cols:
            if lat is None or lat.get("p99") is None:
                continue
            if saturated(lat, rate):
                behind.append(f"{mode} via {via} at {rate:,.0f} msg/s (p99 {ms(lat['p99'])} ms)")
            else:
                kept.append(lat["p99"])
    alt = (
        "Latency p50, p90 and p99 in ms (log scale) per client kind, via the relay or the null "
        "relay, at each offered rate, with the 50 ms p99 target"
    )
    if kept:
        alt += f"; where the offered rate was achieved, p99 {ms(min(kept))} to {ms(max(kept))} ms"
    if behind:
        alt += "; rate not achieved, queues grew: " + ", ".join(behind)
    alt += ". Figures in the table above."
    return desc, alt


def latency_plot(relay: Mapping[str, Any], summary: Mapping[str, Any]) -> Plot | None:
    fig = latency_figure(relay, summary)
    if fig is None:
        return None
    desc, alt = _latency_text(relay)
    title = "End-to-end latency percentiles at a fixed offered rate"
    svg = render_svg(fig, title, desc)
    return Plot("relay-latency", "bench-relay-latency.svg", alt, svg, fig)


# -- 3. ledger -------------------------------------------------------------------------

BOUND = "⌈log₂ n⌉"


def bound_stairs(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """The points of the ⌈log2 n⌉ staircase from n = lo to n = hi."""
    xs: list[float] = []
    ys: list[float] = []
    k = math.ceil(math.log2(lo))
    n = lo
    while n < hi:
        step_end = min(2.0**k, hi)
        xs += [n, step_end]
        ys += [k, k]
        n, k = step_end, k + 1
    return xs, ys


@styled
def ledger_figure(ledger: Mapping[str, Any], summary: Mapping[str, Any]) -> Figure | None:
    rows = sorted(ledger.get("sizes") or [], key=lambda r: r["size"])
    if not rows:
        return None
    caption = (
        machine_caption("ledger", ledger, summary)
        + f" In-memory Merkle log of {ledger.get('entry_bytes')}-byte entries, one thread. "
        f"Proof size: the most hashes in any of {ledger.get('samples'):,} sampled inclusion "
        "proofs. Append rate: entries appended per second while growing the log to that size "
        "(from the previous size)." + quick_note(summary)
    )
    fig = figure(
        "Merkle log (ledger / key directory): proof size and append rate",
        "Inclusion proofs stay within ⌈log₂ n⌉ hashes as the log grows",
        caption,
        summary,
        3.7,
    )
    left, right = fig.subplots(1, 2)
    sizes = [float(r["size"]) for r in rows]
    hashes = [int(r["inclusion"]["hashes_max"]) for r in rows]
    rates = [float(r["append_per_s"]) for r in rows]
    x_lo, x_hi = min(sizes) / 2.5, max(sizes) * 2.5

    # Left: hashes per inclusion proof against entries, under the bound.
    stairs_x, stairs_y = bound_stairs(x_lo, x_hi)
    left.plot(
        stairs_x,
        stairs_y,
        color=MUTED,
        linewidth=1.4,
        linestyle=(0, (4, 2.5)),
        label=f"{BOUND} (the bound)",
        gid="bound",
    )
    note(left, BOUND, (stairs_x[-1], stairs_y[-1]), (-4, 6), ha="right", color=MUTED, bbox=HALO)
    left.plot(
        sizes,
        hashes,
        linestyle="none",
        marker="o",
        markersize=6,
        color=INK,
        zorder=3,
        label="inclusion proof: most hashes",
        gid="hashes",
    )
    for s, h in zip(sizes, hashes, strict=True):
        note(left, f"{h}", (s, h), (6, -4), ha="left", va="top", **VALUE)
    left.set_title("Inclusion proof size")
    left.set_ylim(0, max(max(stairs_y), *hashes) * 1.1)
    left.set_ylabel("hashes per proof (count)")

    # Right: append rate against entries.
    right.plot(
        sizes,
        rates,
        color=RELAY,
        linewidth=1.4,
        marker="D",
        markersize=5.5,
        label="appends per second",
        gid="append-rate",
    )
    for s, r in zip(sizes, rates, strict=True):
        note(right, thousands(r), (s, r), (0, 7), **VALUE)
    right.set_title("Append rate")
    right.set_ylim(0, max(rates) * 1.2)
    right.set_ylabel("appends per second")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: thousands(v)))

    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlim(x_lo, x_hi)
        ax.xaxis.set_major_formatter(FuncFormatter(power_of_ten))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("entries in the log, n (log scale)")
        ax.grid(axis="both", which="major")
    # Each panel's legend inside it, bottom right, where the data leave room (the bound
    # and the proof sizes are highest at the right; the rate is drawn from zero).
    legend(left, left.get_legend_handles_labels()[0][::-1], 1, loc="lower right")
    legend(right, right.get_legend_handles_labels()[0], 1, loc="lower right")
    return fig


def _ledger_text(ledger: Mapping[str, Any]) -> tuple[str, str]:
    rows = sorted(ledger.get("sizes") or [], key=lambda r: r["size"])
    desc = "; ".join(
        f"{r['size']:,} entries: inclusion proof at most {r['inclusion']['hashes_max']} hashes "
        f"(⌈log2 n⌉ = {r['log2_size']}), {r['append_per_s']:,.0f} appends/s"
        for r in rows
    )
    alt = (
        "Two panels against the number of entries n (log scale). Left: the most hashes in an "
        "inclusion proof, "
        + ", ".join(f"{r['inclusion']['hashes_max']} at {r['size']:,}" for r in rows)
        + ", on or under the ceiling of log2 n. Right: appends per second, "
        + ", ".join(f"{r['append_per_s']:,.0f} at {r['size']:,}" for r in rows)
        + ". Figures in the table above."
    )
    return desc, alt


def ledger_plot(ledger: Mapping[str, Any], summary: Mapping[str, Any]) -> Plot | None:
    fig = ledger_figure(ledger, summary)
    if fig is None:
        return None
    desc, alt = _ledger_text(ledger)
    svg = render_svg(fig, "Merkle log: inclusion proof size and append rate", desc)
    return Plot("ledger", "bench-ledger.svg", alt, svg, fig)


# -- all of them -----------------------------------------------------------------------


def make_plots(summary: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Plot]:
    """The plots the results allow, by key ("relay-throughput", "relay-latency", "ledger")."""
    plots: list[Plot | None] = []
    relay = results.get("relay")
    if relay and relay.get("summary"):
        if any(s.get("throughput") for s in relay["summary"].values()):
            plots.append(throughput_plot(relay, summary))
        plots.append(latency_plot(relay, summary))
    ledger = results.get("ledger")
    if ledger:
        plots.append(ledger_plot(ledger, summary))
    return {p.key: p for p in plots if p is not None}
