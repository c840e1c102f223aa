"""Plots of the benchmark results as SVG, written with plain string building (no plotting
library): ``make_plots(summary, results)`` returns one ``Plot`` per figure the results
allow, each with its file name, its SVG text and an alt text for the Markdown image link.

* ``bench-relay-throughput.svg``: relay and null relay throughput (msg/s) per client kind
  and relay worker count, grouped bars on a zero-based linear axis, each bar labelled
  with its value, every run as a dot, the 2,000 msg/s target as a line across and the
  0.8 times null relay ratio target as a mark on each relay bar;
* ``bench-relay-latency.svg``: p50 / p90 / p99 latency per client kind, via (relay or
  null relay) and offered rate, on a log axis in ms, with the 50 ms target line and the
  rate each run actually achieved;
* ``bench-ledger.svg``: inclusion proof size (hashes) against entries on a log axis with
  the ⌈log2 n⌉ bound, and the append rate.

Every figure has a title, axis labels with units, a legend, and a caption with the
machine (cores, CPU) and the date of the run; nothing is told apart by colour alone
(bars by fill pattern and a label under each, percentiles by marker shape, lines by
dash and a direct label). Elements that carry values have ``data-*`` attributes, so the
tests can check the geometry against the numbers.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

TARGET_RATIO = 0.8
TARGET_RATE = 2000.0
TARGET_P99_MS = 50.0

FONT = "'DejaVu Sans', 'Segoe UI', Helvetica, Arial, sans-serif"
INK = "#1a1a1a"
MUTED = "#555555"
GRID = "#dddddd"
RELAY = "#1f4e79"  # dark blue, solid
NULL_STROKE = "#1f4e79"  # null relay bars: white with blue diagonal hatching
TARGET = "#a4161a"  # dark red: target lines and their labels
MARK = "#c45a00"  # dark orange: the 0.8 ratio mark
BAND = "#ececec"  # background of saturated (achieved < offered) runs
TIMES = "\u00d7"  # the multiplication sign
QUICK = " QUICK SMOKE RUN: tiny counts, the figures mean nothing."
CHAR_W = 0.6  # average glyph width in em, for laying out text (DejaVu Sans is wide)


@dataclass(frozen=True)
class Plot:
    key: str  # "relay-throughput", "relay-latency", "ledger"
    file: str  # file name, e.g. "bench-relay-throughput.svg"
    alt: str  # alt text for the Markdown image link
    svg: str


# -- SVG building ----------------------------------------------------------------------


def _num(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def _attrs(attrs: Mapping[str, object]) -> str:
    """Keyword arguments as XML attributes: ``class_`` -> class, ``data_value`` -> data-value."""
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f'{name}="{escape(_num(value), quote=True)}"')
    return " ".join(parts)


def text_width(text: str, size: float) -> float:
    """An estimate of the width of ``text`` in px, for layout (no font metrics here)."""
    return len(text) * size * CHAR_W


HALO = {"stroke": "#ffffff", "stroke_width": 3, "paint_order": "stroke", "stroke_linejoin": "round"}


class Svg:
    """A list of SVG elements with a white background, a <title> and a <desc>."""

    def __init__(self, width: float, height: float, title: str, desc: str, ident: str) -> None:
        self.width = width
        self.height = height
        self.title = title
        self.desc = desc
        self.ident = ident
        self.defs: list[str] = []
        self.parts: list[str] = []

    def add(self, tag: str, content: str | None = None, /, **attrs: object) -> None:
        a = _attrs(attrs)
        if content is None:
            self.parts.append(f"<{tag} {a}/>")
        else:
            self.parts.append(f"<{tag} {a}>{content}</{tag}>")

    def rect(self, x: float, y: float, w: float, h: float, **attrs: object) -> None:
        self.add("rect", x=x, y=y, width=w, height=h, **attrs)

    def line(self, x1: float, y1: float, x2: float, y2: float, **attrs: object) -> None:
        self.add("line", x1=x1, y1=y1, x2=x2, y2=y2, **attrs)

    def polyline(self, points: Iterable[tuple[float, float]], **attrs: object) -> None:
        self.add("polyline", points=" ".join(f"{_num(x)},{_num(y)}" for x, y in points), **attrs)

    def polygon(self, points: Iterable[tuple[float, float]], **attrs: object) -> None:
        self.add("polygon", points=" ".join(f"{_num(x)},{_num(y)}" for x, y in points), **attrs)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        size: float = 12,
        anchor: str = "start",
        halo: bool = False,
        **attrs: object,
    ) -> None:
        style: dict[str, object] = {"font_size": size, "text_anchor": anchor}
        if halo:
            style.update(HALO)
        self.add(
            "text",
            escape(text, quote=False),
            x=x,
            y=y,
            fill=attrs.pop("fill", INK),
            **style,
            **attrs,
        )

    def lines(
        self, x: float, y: float, lines: Sequence[str], size: float = 12, fill: str = INK
    ) -> None:
        """Several lines of text, the first with its baseline at ``y``."""
        for i, line in enumerate(lines):
            self.text(x, y + i * size * 1.3, line, size=size, fill=fill)

    def render(self) -> str:
        w, h, i = _num(self.width), _num(self.height), self.ident
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-labelledby="{i}-title {i}-desc" '
            f'font-family="{escape(FONT, quote=True)}">'
        )
        return (
            "\n".join(
                [
                    head,
                    f'<title id="{i}-title">{escape(self.title, quote=False)}</title>',
                    f'<desc id="{i}-desc">{escape(self.desc, quote=False)}</desc>',
                    "<defs>",
                    *self.defs,
                    "</defs>",
                    f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
                    *self.parts,
                    "</svg>",
                ]
            )
            + "\n"
        )


# -- scales and axes -------------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """Maps values lo..hi to pixels start..end."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


@dataclass(frozen=True)
class Log:
    """Maps values lo..hi (both > 0) to pixels start..end, logarithmically."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = math.log10(self.hi) - math.log10(self.lo)
        return self.start + (math.log10(value) - math.log10(self.lo)) / span * (
            self.end - self.start
        )


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0, step, 2 step, ... up to the first multiple of a 1/2/2.5/5 x 10^k step >= top."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def decades(lo: float, hi: float) -> list[float]:
    """The powers of ten from lo to hi."""
    return [
        10.0**k
        for k in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)
    ]


SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def power_of_ten(value: float) -> str:
    return "10" + str(round(math.log10(value))).translate(SUPERSCRIPT)


def plural(n: object, word: str) -> str:
    """'1 run', '3 runs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def thousands(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    """Latency for a label: 3.2, 11.2, 1,451."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


@dataclass(frozen=True)
class Frame:
    """The plot area: left, top, width, height in px."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


def y_axis(
    svg: Svg,
    frame: Frame,
    scale: Linear | Log,
    ticks: Sequence[float],
    label: str,
    fmt: Callable[[float], str],
    minor: Sequence[float] = (),
) -> None:
    """Grid lines, tick labels and a rotated axis label on the left of ``frame``."""
    for value in minor:
        y = scale(value)
        svg.line(frame.left, y, frame.right, y, stroke=GRID, stroke_width=0.5)
    for value in ticks:
        y = scale(value)
        svg.line(frame.left, y, frame.right, y, stroke=GRID, stroke_width=1)
        svg.line(frame.left - 4, y, frame.left, y, stroke=INK)
        svg.text(frame.left - 7, y + 4, fmt(value), size=11, anchor="end")
    svg.line(frame.left, frame.top, frame.left, frame.bottom, stroke=INK)
    widest = max((text_width(fmt(v), 11) for v in ticks), default=0)
    x = frame.left - 14 - widest
    y = frame.top + frame.height / 2
    svg.text(x, y, label, size=12, anchor="middle", transform=f"rotate(-90 {_num(x)} {_num(y)})")


def x_axis_log(svg: Svg, frame: Frame, scale: Log, label: str) -> None:
    for value in decades(scale.lo, scale.hi):
        x = scale(value)
        svg.line(x, frame.top, x, frame.bottom, stroke=GRID)
        svg.line(x, frame.bottom, x, frame.bottom + 4, stroke=INK)
        svg.text(x, frame.bottom + 17, power_of_ten(value), size=11, anchor="middle")
    for k in range(math.floor(math.log10(scale.lo)), math.ceil(math.log10(scale.hi))):
        for m in range(2, 10):
            value = m * 10.0**k
            if scale.lo <= value <= scale.hi:
                x = scale(value)
                svg.line(x, frame.bottom, x, frame.bottom + 2.5, stroke=MUTED, stroke_width=0.75)
    svg.line(frame.left, frame.bottom, frame.right, frame.bottom, stroke=INK)
    svg.text(frame.left + frame.width / 2, frame.bottom + 36, label, size=12, anchor="middle")


def x_axis_categories(svg: Svg, frame: Frame, label_y: float, label: str) -> None:
    """The baseline of a chart whose x positions are groups (labelled by the caller)."""
    svg.line(frame.left, frame.bottom, frame.right, frame.bottom, stroke=INK)
    svg.text(frame.left + frame.width / 2, label_y, label, size=12, anchor="middle")


# -- shared decorations ----------------------------------------------------------------

Swatch = Callable[[Svg, float, float], None]  # draws a 20 x 12 key at (x, middle y)


def legend(
    svg: Svg, x: float, y: float, width: float, items: Sequence[tuple[Swatch, str]]
) -> float:
    """Keys and their labels in rows from (x, y) within ``width``; returns the y below."""
    cx, row = x, y
    for swatch, label in items:
        need = 26 + text_width(label, 12) + 18
        if cx > x and cx + need > x + width:
            cx, row = x, row + 20
        swatch(svg, cx, row)
        svg.text(cx + 26, row + 4, label, size=12)
        cx += need
    return row + 14


def header_lines(width: float, subtitle: str, summary: Mapping[str, Any]) -> list[str]:
    """The subtitle wrapped to the width, then the quick-run warning if it is one."""
    lines = textwrap.wrap(subtitle, int((width - 32) / text_width("x", 12)))
    if summary.get("quick"):
        lines.append(QUICK.strip())
    return lines


def below_header(lines: Sequence[str]) -> float:
    """Where the legend starts under a header with these subtitle lines."""
    return 45 + 16 * max(len(lines) - 1, 0) + 23


def header(svg: Svg, title: str, lines: Sequence[str]) -> None:
    svg.text(16, 26, title, size=17, font_weight="bold")
    for i, line in enumerate(lines):
        quick = line == QUICK.strip()
        svg.text(
            16,
            45 + 16 * i,
            line,
            size=12,
            fill=TARGET if quick else MUTED,
            font_weight="bold" if quick else None,
        )


def caption(svg: Svg, y: float, text: str) -> None:
    chars = int((svg.width - 32) / text_width("x", 11))
    svg.lines(16, y, textwrap.wrap(text, chars), size=11, fill=MUTED)


def caption_height(width: float, text: str) -> float:
    chars = int((width - 32) / text_width("x", 11))
    return len(textwrap.wrap(text, chars)) * 11 * 1.3


def hatch_pattern(ident: str) -> str:
    return (
        f'<pattern id="{ident}-hatch" patternUnits="userSpaceOnUse" width="6" height="6" '
        'patternTransform="rotate(45)">'
        '<rect x="0" y="0" width="6" height="6" fill="#ffffff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{NULL_STROKE}" stroke-width="2.5"/>'
        "</pattern>"
    )


def target_line(svg: Svg, x1: float, x2: float, y: float, label: str, anchor: str = "end") -> None:
    svg.line(x1, y, x2, y, stroke=TARGET, stroke_width=1.5, stroke_dasharray="7 4", class_="target")
    x = x2 - 4 if anchor == "end" else x1 + 4
    svg.text(x, y - 5, label, size=11, anchor=anchor, fill=TARGET, halo=True)


def marker(svg: Svg, shape: str, x: float, y: float, **attrs: object) -> None:
    """circle (filled), square (open), triangle (filled), diamond (filled)."""
    if shape == "circle":
        svg.add("circle", cx=x, cy=y, r=4, fill=INK, **attrs)
    elif shape == "square":
        svg.rect(x - 3.5, y - 3.5, 7, 7, fill="#ffffff", stroke=INK, stroke_width=1.5, **attrs)
    elif shape == "triangle":
        svg.polygon([(x, y - 5), (x + 5, y + 4), (x - 5, y + 4)], fill=INK, **attrs)
    elif shape == "diamond":
        svg.polygon([(x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)], fill=RELAY, **attrs)
    else:
        raise ValueError(shape)


def spread(positions: Sequence[float], gap: float) -> list[float]:
    """Label positions moved apart (symmetrically, keeping order) to be >= gap apart."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = [positions[i] for i in order]
    for _ in range(20):
        moved = False
        for j in range(1, len(placed)):
            short = gap - (placed[j] - placed[j - 1])
            if short > 1e-6:
                placed[j - 1] -= short / 2
                placed[j] += short / 2
                moved = True
        if not moved:
            break
    out = [0.0] * len(positions)
    for i, p in zip(order, placed, strict=True):
        out[i] = p
    return out


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


# -- 1. relay throughput ---------------------------------------------------------------


def _bar_swatch(fill: str) -> Swatch:
    def draw(svg: Svg, x: float, y: float) -> None:
        svg.rect(x, y - 6, 20, 12, fill=fill, stroke=RELAY, stroke_width=1)

    return draw


def _dot_swatch(svg: Svg, x: float, y: float) -> None:
    svg.add("circle", cx=x + 10, cy=y, r=3, fill="#ffffff", stroke=INK, stroke_width=1.2)


def _mark_swatch(svg: Svg, x: float, y: float) -> None:
    svg.line(x, y, x + 20, y, stroke="#ffffff", stroke_width=6)
    svg.line(x, y, x + 20, y, stroke=MARK, stroke_width=3)


def _target_swatch(svg: Svg, x: float, y: float) -> None:
    svg.line(x, y, x + 20, y, stroke=TARGET, stroke_width=1.5, stroke_dasharray="7 4")


def throughput_plot(relay: Mapping[str, Any], summary: Mapping[str, Any]) -> Plot:
    groups: list[tuple[str, int, Mapping[str, Any]]] = []
    for mode, s in relay["summary"].items():
        for k, t in sorted(s["throughput"].items(), key=lambda kv: int(kv[0])):
            groups.append((mode, int(k), t))
    plan = relay.get("plan", {})
    bar_w, bar_gap = 38.0, 4.0
    pitch = max(136.0, 600.0 / max(len(groups), 1))
    left = 84.0
    width = left + pitch * len(groups) + 24
    ident = "tput"
    cap = (
        machine_caption("relay", relay, summary)
        + f" Closed loop: {plan.get('conversations')} conversations {TIMES} {plan.get('window')} "
        f"messages in flight, 512-byte plaintexts, QoS 1, Mosquitto on loopback, "
        f"{plan.get('duration')} s runs. Bars: median of {plural(plan.get('repeats'), 'run')} "
        f"({plan.get('scaling_repeats')} with 2+ workers); dots: each run. Ratio: median "
        "of back-to-back relay/null pairs. The machine is shared: runs vary by about 20 %."
        + quick_note(summary)
    )
    # Vertical layout: title, legend, plot, x labels, axis label, caption.
    head = header_lines(
        width,
        "E2EE messages delivered and decrypted per second, by client kind and number of "
        "relay workers",
        summary,
    )
    legend_top = below_header(head)
    items: list[tuple[Swatch, str]] = [
        (_bar_swatch(RELAY), "relay (median)"),
        (_bar_swatch(f"url(#{ident}-hatch)"), "null relay (median)"),
        (_dot_swatch, "one run"),
        (_mark_swatch, f"{TARGET_RATIO} {TIMES} null relay median (ratio target)"),
        (_target_swatch, f"{TARGET_RATE:,.0f} msg/s target"),
    ]
    probe = Svg(width, 0, "", "", ident)
    legend_bottom = legend(probe, 16, legend_top, width - 32, items)
    frame = Frame(left, legend_bottom + 26, pitch * len(groups), 300)
    x_label_y = frame.bottom + 82
    height = x_label_y + 14 + caption_height(width, cap) + 8

    values: list[float] = [TARGET_RATE]
    for _, _, t in groups:
        for key in ("relay_msgs_per_s", "null_msgs_per_s"):
            if t.get(key) is not None:
                values.append(t[key])
        values += [v for v in (t.get("relay_runs") or []) + (t.get("null_runs") or []) if v]
    ticks = nice_ticks(max(values) * 1.08)
    y = Linear(0.0, ticks[-1], frame.bottom, frame.top)

    desc = "; ".join(
        f"{mode} clients, {k} worker{'s' if k > 1 else ''}: relay "
        f"{_fmt(t.get('relay_msgs_per_s'))}, null relay {_fmt(t.get('null_msgs_per_s'))} msg/s, "
        f"ratio {_fmt(t.get('ratio'), 2)}"
        for mode, k, t in groups
    )
    title = "Relay vs null relay throughput (E2EE messages delivered and decrypted per second)"
    svg = Svg(width, height, title, desc + ".", ident)
    svg.defs.append(hatch_pattern(ident))
    header(svg, "Relay vs null relay throughput", head)
    legend(svg, 16, legend_top, width - 32, items)
    y_axis(svg, frame, y, ticks, "throughput (messages/s)", thousands)

    for gi, (mode, workers, t) in enumerate(groups):
        gx = frame.left + gi * pitch + (pitch - (2 * bar_w + bar_gap)) / 2
        null = t.get("null_msgs_per_s")
        mark = TARGET_RATIO * null if null is not None else None
        bars = [
            ("relay", t.get("relay_msgs_per_s"), t.get("relay_runs") or [], RELAY),
            ("null", t.get("null_msgs_per_s"), t.get("null_runs") or [], f"url(#{ident}-hatch)"),
        ]
        for bi, (via, value, runs, fill) in enumerate(bars):
            bx = gx + bi * (bar_w + bar_gap)
            cx = bx + bar_w / 2
            if value is None:
                svg.text(cx, frame.bottom - 6, "none", size=10, anchor="middle")
            else:
                top = y(value)
                svg.rect(
                    bx,
                    top,
                    bar_w,
                    frame.bottom - top,
                    fill=fill,
                    stroke=RELAY,
                    stroke_width=1,
                    class_=f"bar {via}",
                    data_value=value,
                    data_group=f"{mode}/{workers}",
                )
            if via == "relay" and mark is not None:  # drawn under the run dots
                my = y(mark)
                svg.line(bx - 5, my, bx + bar_w + 5, my, stroke="#ffffff", stroke_width=6)
                svg.line(
                    bx - 5,
                    my,
                    bx + bar_w + 5,
                    my,
                    stroke=MARK,
                    stroke_width=3,
                    class_="ratio-mark",
                    data_value=mark,
                )
            for ri, run in enumerate(runs):
                if run is None:
                    continue
                rx = cx + (ri - (len(runs) - 1) / 2) * 8
                svg.add(
                    "circle",
                    cx=rx,
                    cy=y(run),
                    r=3,
                    fill="#ffffff",
                    stroke=INK,
                    stroke_width=1.2,
                    class_="run",
                    data_value=run,
                )
            if value is not None:
                above = [value, *(r for r in runs if r is not None)]
                if via == "relay" and mark is not None:
                    above.append(mark)
                label_at = max(above)
                svg.text(
                    cx,
                    y(label_at) - 7,
                    thousands(value),
                    size=11,
                    anchor="middle",
                    halo=True,
                    font_weight="bold",
                    class_="value",
                )
            svg.text(cx, frame.bottom + 15, via, size=11, anchor="middle")
        center = gx + bar_w + bar_gap / 2
        svg.text(center, frame.bottom + 33, f"{mode}", size=12, anchor="middle", font_weight="bold")
        svg.text(
            center, frame.bottom + 48, plural(workers, "relay worker"), size=11, anchor="middle"
        )
        ratio = t.get("ratio")
        if ratio is not None:
            verdict = "≥" if ratio >= TARGET_RATIO else "<"
            svg.text(
                center,
                frame.bottom + 63,
                f"ratio {ratio:.2f} {verdict} {TARGET_RATIO}",
                size=11,
                anchor="middle",
                class_="ratio",
            )
    target_line(svg, frame.left, frame.right, y(TARGET_RATE), f"target {TARGET_RATE:,.0f} msg/s")
    x_axis_categories(svg, frame, x_label_y, "client kind and relay workers")
    caption(svg, x_label_y + 22, cap)

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
    return Plot("relay-throughput", "bench-relay-throughput.svg", alt, svg.render())


def _fmt(x: Any, nd: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


# -- 2. relay latency ------------------------------------------------------------------


def _latencies(s: Mapping[str, Any]) -> list[dict[str, Any]]:
    lat = s.get("latency") or []
    if isinstance(lat, Mapping):  # results written before several rates were measured
        return [{"via": k, **v} for k, v in lat.items()]
    return list(lat)


def _shape_swatch(shape: str) -> Swatch:
    def draw(svg: Svg, x: float, y: float) -> None:
        marker(svg, shape, x + 10, y)

    return draw


def _band_swatch(svg: Svg, x: float, y: float) -> None:
    svg.rect(x, y - 6, 20, 12, fill=BAND, stroke=MUTED, stroke_width=0.75)


def latency_plot(relay: Mapping[str, Any], summary: Mapping[str, Any]) -> Plot | None:
    # groups: (mode, offered rate, [(via, entry or None), ...])
    groups: list[tuple[str, float, list[tuple[str, Mapping[str, Any] | None]]]] = []
    for mode, s in relay["summary"].items():
        lats = _latencies(s)
        for rate in sorted({lat["offered_rate"] for lat in lats}):
            cols: list[tuple[str, Mapping[str, Any] | None]] = []
            for via in ("relay", "null"):
                match = [lat for lat in lats if lat["via"] == via and lat["offered_rate"] == rate]
                cols.append((via, match[0] if match else None))
            groups.append((mode, rate, cols))
    values = [
        lat[p]
        for _, _, cols in groups
        for _, lat in cols
        if lat is not None
        for p in ("p50", "p90", "p99")
        if lat.get(p) is not None and lat[p] > 0
    ]
    if not values:
        return None
    plan = relay.get("plan", {})
    ident = "lat"
    col_w, group_gap = 54.0, 24.0
    pitch = max(2 * col_w + group_gap, 620.0 / len(groups))
    left = 110.0
    width = left + pitch * len(groups) + 24
    cap = (
        machine_caption("relay", relay, summary)
        + f" Open loop: messages due at a fixed offered rate round-robin over "
        f"{plan.get('conversations')} conversations for {plan.get('latency_duration')} s; "
        "latency from the time a message was due to its decryption by the receiving device "
        "(so waiting to be sent counts). Grey columns: the clients delivered less than the "
        "offered rate, queues grew, and latency is mostly queueing (through the null relay "
        "as much as through the relay)." + quick_note(summary)
    )
    items: list[tuple[Swatch, str]] = [
        (_shape_swatch("circle"), "p50"),
        (_shape_swatch("square"), "p90"),
        (_shape_swatch("triangle"), "p99"),
        (_target_swatch, f"p99 target {TARGET_P99_MS:.0f} ms"),
        (_band_swatch, "achieved < offered rate"),
    ]
    head = header_lines(
        width,
        "p50 / p90 / p99 from send to decryption, through the relay and the null relay, "
        "by client kind and offered rate",
        summary,
    )
    legend_top = below_header(head)
    probe = Svg(width, 0, "", "", ident)
    legend_bottom = legend(probe, 16, legend_top, width - 32, items)
    frame = Frame(left, legend_bottom + 22, pitch * len(groups), 340)
    lo = 10 ** math.floor(math.log10(min([*values, TARGET_P99_MS])))
    hi = 10 ** math.ceil(math.log10(max([*values, TARGET_P99_MS])))
    if hi <= lo:
        hi = lo * 10
    y = Log(lo, hi, frame.bottom, frame.top)
    x_label_y = frame.bottom + 88
    height = x_label_y + 14 + caption_height(width, cap) + 8

    desc_parts = []
    for mode, rate, cols in groups:
        for via, lat in cols:
            if lat is not None:
                desc_parts.append(
                    f"{mode} clients via {via} at {rate:,.0f} msg/s offered (achieved "
                    f"{_fmt(lat.get('achieved'))}): p50 {_fmt(lat.get('p50'), 1)}, p90 "
                    f"{_fmt(lat.get('p90'), 1)}, p99 {_fmt(lat.get('p99'), 1)} ms"
                )
    desc = "; ".join(desc_parts)
    svg = Svg(width, height, "End-to-end latency percentiles at a fixed offered rate", desc, ident)
    header(svg, "End-to-end latency at a fixed offered rate", head)
    legend(svg, 16, legend_top, width - 32, items)

    # Saturated columns first, behind the grid.
    for gi, (_, rate, cols) in enumerate(groups):
        for ci, (_, lat) in enumerate(cols):
            achieved = lat.get("achieved") if lat else None
            if achieved is not None and achieved < 0.98 * rate:
                cx0 = frame.left + gi * pitch + (pitch - 2 * col_w) / 2 + ci * col_w
                svg.rect(cx0 + 2, frame.top, col_w - 4, frame.height, fill=BAND, class_="saturated")
    minor = [
        m * 10.0**k
        for k in range(round(math.log10(lo)), round(math.log10(hi)))
        for m in range(2, 10)
    ]
    y_axis(svg, frame, y, decades(lo, hi), "latency (ms, log scale)", thousands, minor)
    svg.text(frame.left - 8, frame.bottom + 19, "via", size=11, anchor="end", fill=MUTED)
    svg.text(frame.left - 8, frame.bottom + 34, "achieved msg/s", size=11, anchor="end", fill=MUTED)
    rates = plan.get("latency_rates") or [plan.get("latency_rate")]
    at_rate = f" at {rates[0]:,.0f} msg/s offered" if rates and rates[0] else ""
    target_line(
        svg,
        frame.left,
        frame.right,
        y(TARGET_P99_MS),
        f"target: p99 < {TARGET_P99_MS:.0f} ms{at_rate}",
        anchor="start",
    )

    for gi, (mode, rate, cols) in enumerate(groups):
        g0 = frame.left + gi * pitch + (pitch - 2 * col_w) / 2
        for ci, (via, lat) in enumerate(cols):
            c0 = g0 + ci * col_w
            mx = c0 + 16
            svg.text(c0 + col_w / 2, frame.bottom + 19, via, size=11, anchor="middle")
            if lat is None:
                svg.text(c0 + col_w / 2, frame.bottom - 8, "not run", size=10, anchor="middle")
                continue
            achieved = lat.get("achieved")
            saturated = achieved is not None and achieved < 0.98 * rate
            svg.text(
                c0 + col_w / 2,
                frame.bottom + 34,
                _fmt(achieved),
                size=11,
                anchor="middle",
                font_weight="bold" if saturated else None,
            )
            shown = [(p, lat.get(p)) for p in ("p50", "p90", "p99")]
            present = [(p, v) for p, v in shown if v is not None and v > 0]
            if not present:
                svg.text(c0 + col_w / 2, frame.bottom - 8, "no data", size=10, anchor="middle")
                continue
            ys = [y(v) for _, v in present]
            svg.line(mx, min(ys), mx, max(ys), stroke=INK, stroke_width=1.5)
            shapes = {"p50": "circle", "p90": "square", "p99": "triangle"}
            for (p, v), py in zip(present, ys, strict=True):
                marker(
                    svg,
                    shapes[p],
                    mx,
                    py,
                    class_=f"pct {p}",
                    data_value=v,
                    data_group=f"{mode}/{rate:g}/{via}",
                )
            labelled = [(p, v, py) for (p, v), py in zip(present, ys, strict=True) if p != "p90"]
            at = spread([py for _, _, py in labelled], 13.0)
            for (p, v, _), ly in zip(labelled, at, strict=True):
                svg.text(mx + 8, ly + 4, ms(v), size=11, halo=True, class_=f"label {p}")
        center = g0 + col_w
        svg.text(center, frame.bottom + 54, mode, size=12, anchor="middle", font_weight="bold")
        svg.text(center, frame.bottom + 69, f"{rate:,.0f} msg/s offered", size=11, anchor="middle")
    x_axis_categories(svg, frame, x_label_y, "client kind and offered rate")
    caption(svg, x_label_y + 22, cap)
    kept: list[float] = []
    behind: list[str] = []
    for mode, rate, cols in groups:
        for via, lat in cols:
            if lat is None or lat.get("p99") is None:
                continue
            if lat.get("achieved") is not None and lat["achieved"] < 0.98 * rate:
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
    return Plot("relay-latency", "bench-relay-latency.svg", alt, svg.render())


# -- 3. ledger -------------------------------------------------------------------------


def _stairs_swatch(svg: Svg, x: float, y: float) -> None:
    steps = [(x, y + 5), (x + 10, y + 5), (x + 10, y - 5), (x + 20, y - 5)]
    svg.polyline(steps, fill="none", stroke=MUTED, stroke_width=1.5, stroke_dasharray="3 2")


def _rate_swatch(svg: Svg, x: float, y: float) -> None:
    svg.line(x, y, x + 20, y, stroke=RELAY, stroke_width=1.5)
    marker(svg, "diamond", x + 10, y)


def ledger_plot(ledger: Mapping[str, Any], summary: Mapping[str, Any]) -> Plot | None:
    rows = sorted(ledger.get("sizes") or [], key=lambda r: r["size"])
    if not rows:
        return None
    ident = "ledger"
    panel_w, panel_h = 290.0, 260.0
    width = 84 + panel_w + 130 + panel_w + 40
    cap = (
        machine_caption("ledger", ledger, summary)
        + f" In-memory Merkle log of {ledger.get('entry_bytes')}-byte entries, one thread. "
        f"Proof size: the most hashes in any of {ledger.get('samples'):,} sampled inclusion "
        "proofs. Append rate: entries appended per second while growing the log to that size "
        "(from the previous size)." + quick_note(summary)
    )
    items: list[tuple[Swatch, str]] = [
        (_shape_swatch("circle"), "inclusion proof: most hashes"),
        (_stairs_swatch, "⌈log₂ n⌉ (the bound)"),
        (_rate_swatch, "appends per second"),
    ]
    head = header_lines(
        width, "Inclusion proofs stay within ⌈log₂ n⌉ hashes as the log grows", summary
    )
    legend_top = below_header(head)
    probe = Svg(width, 0, "", "", ident)
    legend_bottom = legend(probe, 16, legend_top, width - 32, items)
    top = legend_bottom + 40
    left_frame = Frame(84, top, panel_w, panel_h)
    right_frame = Frame(84 + panel_w + 130, top, panel_w, panel_h)
    x_label_y = top + panel_h + 36
    height = x_label_y + 14 + caption_height(width, cap) + 8

    sizes = [float(r["size"]) for r in rows]
    x_lo, x_hi = min(sizes) / 2.5, max(sizes) * 2.5

    desc = "; ".join(
        f"{r['size']:,} entries: inclusion proof at most {r['inclusion']['hashes_max']} hashes "
        f"(⌈log2 n⌉ = {r['log2_size']}), {r['append_per_s']:,.0f} appends/s"
        for r in rows
    )
    svg = Svg(width, height, "Merkle log: inclusion proof size and append rate", desc, ident)
    header(svg, "Merkle log (ledger / key directory): proof size and append rate", head)
    legend(svg, 16, legend_top, width - 32, items)

    # Left panel: hashes per inclusion proof against entries.
    f = left_frame
    x = Log(x_lo, x_hi, f.left, f.right)
    bound_hi = math.ceil(math.log2(x_hi))
    y_ticks = nice_ticks(max(bound_hi, *(r["inclusion"]["hashes_max"] for r in rows)) * 1.1)
    y = Linear(0, y_ticks[-1], f.bottom, f.top)
    svg.text(f.left, f.top - 12, "Inclusion proof size", size=13, font_weight="bold")
    y_axis(svg, f, y, y_ticks, "hashes per proof (count)", lambda v: f"{v:g}")
    x_axis_log(svg, f, x, "entries in the log, n (log scale)")
    stairs: list[tuple[float, float]] = []
    k = math.ceil(math.log2(x_lo))
    n = x_lo
    while n < x_hi:
        step_end = min(2.0**k, x_hi)
        stairs += [(x(n), y(k)), (x(step_end), y(k))]
        n, k = step_end, k + 1
    svg.polyline(
        stairs, fill="none", stroke=MUTED, stroke_width=1.5, stroke_dasharray="4 3", class_="bound"
    )
    last_x, last_y = stairs[-1]
    svg.text(last_x - 4, last_y - 8, "⌈log₂ n⌉", size=11, anchor="end", fill=MUTED, halo=True)
    for r in rows:
        px, py = x(r["size"]), y(r["inclusion"]["hashes_max"])
        marker(
            svg,
            "circle",
            px,
            py,
            class_="hashes",
            data_value=r["inclusion"]["hashes_max"],
            data_size=r["size"],
        )
        svg.text(
            px + 7,
            py + 16,
            f"{r['inclusion']['hashes_max']}",
            size=11,
            halo=True,
            font_weight="bold",
            class_="value",
        )

    # Right panel: append rate against entries.
    f = right_frame
    x = Log(x_lo, x_hi, f.left, f.right)
    rates = [float(r["append_per_s"]) for r in rows]
    r_ticks = nice_ticks(max(rates) * 1.15)
    y = Linear(0, r_ticks[-1], f.bottom, f.top)
    svg.text(f.left, f.top - 12, "Append rate", size=13, font_weight="bold")
    y_axis(svg, f, y, r_ticks, "appends per second", thousands)
    x_axis_log(svg, f, x, "entries in the log, n (log scale)")
    points = [(x(s), y(v)) for s, v in zip(sizes, rates, strict=True)]
    svg.polyline(points, fill="none", stroke=RELAY, stroke_width=1.5)
    for (px, py), s, v in zip(points, sizes, rates, strict=True):
        marker(svg, "diamond", px, py, class_="rate", data_value=v, data_size=s)
        svg.text(
            px,
            py - 10,
            thousands(v),
            size=11,
            anchor="middle",
            halo=True,
            font_weight="bold",
            class_="value",
        )
    caption(svg, x_label_y + 22, cap)
    alt = (
        "Two panels against the number of entries n (log scale). Left: the most hashes in an "
        "inclusion proof, "
        + ", ".join(f"{r['inclusion']['hashes_max']} at {r['size']:,}" for r in rows)
        + ", on or under the ceiling of log2 n. Right: appends per second, "
        + ", ".join(f"{r['append_per_s']:,.0f} at {r['size']:,}" for r in rows)
        + ". Figures in the table above."
    )
    return Plot("ledger", "bench-ledger.svg", alt, svg.render())


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
