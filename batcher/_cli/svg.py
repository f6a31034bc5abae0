"""Small charts as inline SVG text, for the self-contained HTML report (no plotting dependency).

Each function returns one ``<svg>`` element that carries its own sizes and colours: no scripts, no
fonts or images to fetch, so the report renders offline and prints as it shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TypeAlias

__all__ = ["Series", "bar_chart", "hbar_chart", "line_chart"]

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")


@dataclass(frozen=True, slots=True)
class Series:
    """A named line of (x, y) points."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marks:
    """Events drawn as ticks along the bottom of a chart (429s, retries), with their count."""

    name: str
    xs: Sequence[float]
    color: str = "#d62728"
    row: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    count: int | None = None
    """How many events there were, when ``xs`` draws fewer (one tick per stretch of many)."""


def nice_ticks(low: float, high: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1
    raw = (high - low) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.floor(low / step) * step
    ticks = []
    t = first
    while t <= high + step * 1e-9:
        if t >= low - step * 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


Scale: TypeAlias = Callable[[float], float]


def _frame(
    title: str, x_lo: float, x_hi: float, y_hi: float, labels: tuple[str, str]
) -> tuple[list[str], Scale, Scale]:
    """A chart's frame (title, grid, ticks, axes and their labels) over x in ``[x_lo, x_hi]`` and
    y in ``[0, y_hi]`` (raised to the top tick), with the scales that place data inside it."""
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    tx, ticks_y = nice_ticks(x_lo, x_hi), nice_ticks(0, y_hi)
    ticks_x = [t for t in tx if x_lo <= t <= x_hi]
    y_top = max(y_hi, ticks_y[-1])

    def sx(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - y / y_top * (HEIGHT - BOTTOM - TOP)

    out = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
        f"<title>{escape(title)}</title>",
    ]
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP
    for t in ticks_y:
        y = sy(t)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>')
    for t in ticks_x:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{_num(t)}</text>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#888"/>')
    mid = (x0 + x1) / 2
    out.append(f'<text x="{mid}" y="{HEIGHT - 4}" text-anchor="middle">{escape(labels[0])}</text>')
    out.append(
        f'<text x="12" y="{(y0 + y1) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(y0 + y1) / 2})">{escape(labels[1])}</text>'
    )
    return out, sx, sy


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    limit: float | None = None,
    limit_label: str = "limit",
    marks: Sequence[Marks] = (),
) -> str:
    """Lines over a shared x axis, with an optional horizontal limit and event ticks below."""
    xs = [x for s in series for x, _ in s.points] + [x for m in marks for x in m.xs]
    ys = [y for s in series for _, y in s.points] + ([limit] if limit else [])
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y_hi = max(ys, default=1.0) * 1.08 or 1.0
    out, sx, sy = _frame(title, x_lo, x_hi, y_hi, (x_label, y_label))
    if limit:
        y = sy(limit)
        out.append(
            f'<line class="limit" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
            f'stroke="#d62728" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#d62728">'
            f"{escape(limit_label)} {_num(limit)}</text>"
        )
    legend = []
    for s in series:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        out.append(
            f'<polyline class="series" fill="none" stroke="{s.color}" stroke-width="2"{dash} '
            f'points="{path}"/>'
        )
        legend.append((s.name, s.color))
    for m in marks:
        y = HEIGHT - BOTTOM - 6 - 8 * m.row
        for x in m.xs:
            out.append(
                f'<line class="mark" x1="{sx(x):.1f}" y1="{y - 5}" x2="{sx(x):.1f}" y2="{y + 1}" '
                f'stroke="{m.color}" stroke-width="1.5"/>'
            )
        count = len(m.xs) if m.count is None else m.count
        legend.append((f"{m.name} ({count:,})", m.color))
    for i, (name, color) in enumerate(legend):
        x = LEFT + 10 + 170 * i
        out.append(f'<rect x="{x}" y="{TOP - 2}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{TOP + 7}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    title: str, bins: Sequence[tuple[float, float, int]], *, x_label: str, y_label: str
) -> str:
    """A histogram: (low, high, count) per bin."""
    if not bins:
        bins = [(0.0, 1.0, 0)]
    y_hi = max(c for _, _, c in bins) * 1.08 or 1.0
    out, sx, sy = _frame(title, bins[0][0], bins[-1][1], y_hi, (x_label, y_label))
    for lo, hi, count in bins:
        x, w = sx(lo), max(1.0, sx(hi) - sx(lo) - 1)
        y = sy(count)
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
            f'height="{HEIGHT - BOTTOM - y:.1f}" fill="{PALETTE[0]}"><title>{_num(lo)}–{_num(hi)}: '
            f"{count:,}</title></rect>"
        )
    out.append("</svg>")
    return "\n".join(out)


def hbar_chart(title: str, rows: Sequence[tuple[str, float, str]]) -> str:
    """Horizontal bars: (label, value, value as text) per row."""
    height = TOP + 26 * max(1, len(rows)) + 8
    top = max((v for _, v, _ in rows), default=1.0) or 1.0
    label_w, bar_w = 200, WIDTH - 200 - 140
    out = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value, text) in enumerate(rows):
        y = TOP + 26 * i
        w = max(1.0, value / top * bar_w)
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{escape(label)}</text>')
        out.append(
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="18" fill="{color}"/>'
        )
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 14}">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)
