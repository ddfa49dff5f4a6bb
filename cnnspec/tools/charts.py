"""Inline SVG charts for the HTML report: line charts, a heat map, bars, parallel coordinates.

Pure string building, no plotting library: the report must open offline and stay small. Every
label that can come from the user (class names, run names, parameter values) goes through
``html.escape``; numbers are formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")
DASHES = {"train": "6 4", "val": "2 3", "test": ""}  # as curves.png: train dashed, val dotted, test solid


@dataclass(frozen=True)
class Series:
    """One line: its label, its points (x, y; y None where missing), colour and dash pattern."""

    label: str
    points: Sequence[tuple[float, float | None]]
    color: str = COLORS[0]
    dash: str = ""


def _num(v: float) -> str:
    """A tick label: short, no trailing zeros."""
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.1e}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values from lo to hi (a 1-2-5 step)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def line_chart(series: Sequence[Series], title: str, xlabel: str = "epoch", width: int = 460,
               height: int = 280) -> str:
    """Several lines on shared axes, with a legend under the plot."""
    pts = [(float(x), float(y)) for s in series for x, y in s.points if _finite(x) and y is not None and _finite(y)]
    if not pts:
        return f'<p class="muted">{escape(title)}: nothing to draw</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0  # 5% room above and below the lines
    y0, y1 = y0 - pad, y1 + pad
    left, right, top = 52, 12, 24
    legend_rows = math.ceil(len(series) / 3)
    plot_h = height - top - 36 - 16 * legend_rows
    plot_w = width - left - right

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
           f'<text x="{width / 2:.0f}" y="15" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{_num(t)}</text>')
    for t in _ticks(x0, x1, 6):
        if float(t).is_integer() or xlabel != "epoch":
            out.append(f'<text x="{sx(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle" class="tick">'
                       f'{_num(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
               f'<text x="{left + plot_w / 2}" y="{top + plot_h + 28}" text-anchor="middle" class="tick">'
               f'{escape(xlabel)}</text>')
    for i, s in enumerate(series):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points if _finite(x) and y is not None and _finite(y))
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.8"{dash}/>')
        if len(s.points) <= 30:  # a dot per point: a one-epoch line is a point
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.color}"/>'
                    for x, y in s.points if _finite(x) and y is not None and _finite(y)]
        lx = left + (i % 3) * (plot_w / 3)
        ly = top + plot_h + 44 + 16 * (i // 3)
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 22:.1f}" y1="{ly - 4}" y2="{ly - 4}" stroke="{s.color}" '
                   f'stroke-width="2"{dash}/><text x="{lx + 26:.1f}" y="{ly}" class="tick">'
                   f'{escape(_clip(s.label, 28))}</text>')
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def heat_map(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> str:
    """A confusion matrix (rows: true class, columns: predicted); each cell's colour is its share
    of its row, so a rare class's confusions show as clearly as a common one's."""
    k = len(labels)
    cell = max(14, min(40, 520 // max(k, 1)))
    left, top = 110, 110
    size = left + cell * k + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{size}" height="{top + cell * k + 10}" '
           f'role="img"><title>{escape(title)}</title>']
    for j, name in enumerate(labels):
        x = left + j * cell + cell / 2
        out.append(f'<text transform="translate({x:.1f},{top - 6}) rotate(-60)" class="tick">'
                   f'{escape(_clip(name, 14))}</text>')
    for i, (name, row) in enumerate(zip(labels, matrix)):
        y = top + i * cell
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end" class="tick">'
                   f'{escape(_clip(name, 14))}</text>')
        total = sum(row) or 1
        for j, n in enumerate(row):
            share = n / total  # 0..1 of the true class's samples
            hue = 210 if i == j else 5
            light = 100 - 55 * share if n else 100
            color = f"hsl({hue},70%,{light:.0f}%)"
            text = "#fff" if share > 0.6 else "#222"
            out.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" fill="{color}" '
                       f'stroke="#ddd"><title>{escape(name)} as {escape(labels[j])}: {n}</title></rect>')
            if cell >= 24 and n:
                out.append(f'<text x="{left + j * cell + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                           f'text-anchor="middle" font-size="10" fill="{text}">{n}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(values: Sequence[tuple[str, float]], title: str, width: int = 460) -> str:
    """Horizontal bars for values in [0, 1] (parameter importances)."""
    row = 22
    height = 30 + row * len(values)
    left = 170
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" role="img">'
           f'<title>{escape(title)}</title>']
    for i, (name, v) in enumerate(values):
        y = 10 + i * row
        w = max(0.0, min(1.0, v)) * (width - left - 60)
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="tick">{escape(_clip(name, 26))}'
                   f'</text><rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{COLORS[0]}"/>'
                   f'<text x="{left + w + 4:.1f}" y="{y + 14}" class="tick">{v:.3f}</text>')
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Axis:
    """One vertical axis of a parallel-coordinates chart: numbers (``log``: on a log scale), or
    categories when ``choices`` is given (values are then their labels)."""

    name: str
    log: bool = False
    choices: tuple[str, ...] = ()

    def scale(self, values: Sequence[Any]) -> Any:
        """A function from a value to 0..1 (bottom to top) over ``values``; None for a missing one."""
        if self.choices:
            n = len(self.choices)
            return lambda v: (self.choices.index(v) + 0.5) / n if v in self.choices else None
        nums = [self._t(v) for v in values if _finite(v) and (v > 0 or not self.log)]
        lo, hi = (min(nums), max(nums)) if nums else (0.0, 1.0)
        span = hi - lo or 1.0
        return lambda v: (self._t(v) - lo) / span if _finite(v) and (v > 0 or not self.log) else None

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else float(v)

    def ends(self, values: Sequence[Any]) -> tuple[str, str]:
        """The labels at the bottom and top of a numeric axis."""
        nums = [v for v in values if _finite(v) and (v > 0 or not self.log)]
        return (_num(min(nums)), _num(max(nums))) if nums else ("", "")


def parallel_coordinates(axes: Sequence[Axis], rows: Sequence[Sequence[Any]], title: str,
                         width: int = 760, height: int = 320) -> str:
    """One polyline per row across the axes; the last axis (the metric) colours the lines."""
    if not axes or not rows:
        return f'<p class="muted">{escape(title)}: nothing to draw</p>'
    top, bottom, side = 34, 40, 70
    gap = (width - 2 * side) / max(len(axes) - 1, 1)
    plot_h = height - top - bottom
    columns = [[r[i] for r in rows] for i in range(len(axes))]
    scales = [a.scale(c) for a, c in zip(axes, columns)]
    metric = scales[-1]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" role="img">'
           f'<title>{escape(title)}</title>']
    for r in rows:
        pts = []
        for i, (s, v) in enumerate(zip(scales, r)):
            t = s(v)
            if t is not None:
                pts.append(f"{side + i * gap:.1f},{top + (1 - t) * plot_h:.1f}")
        m = metric(r[-1])
        color = f"hsl({(0 if m is None else 20 + 190 * m):.0f},75%,45%)"  # low: red, high: blue
        out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" stroke-width="1.6" '
                   f'opacity="0.75"/>')
    for i, (a, col) in enumerate(zip(axes, columns)):
        x = side + i * gap
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#333"/>'
                   f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle" font-weight="bold" class="tick">'
                   f'{escape(_clip(a.name, 22))}{" (log)" if a.log else ""}</text>')
        if a.choices:
            for j, c in enumerate(a.choices):
                y = top + (1 - (j + 0.5) / len(a.choices)) * plot_h
                out.append(f'<text x="{x + 4:.1f}" y="{y + 4:.1f}" class="tick">{escape(_clip(c, 16))}</text>')
        else:
            lo, hi = a.ends(col)
            out.append(f'<text x="{x + 4:.1f}" y="{top + plot_h + 14}" class="tick">{escape(lo)}</text>'
                       f'<text x="{x + 4:.1f}" y="{top + 10}" class="tick">{escape(hi)}</text>')
    out.append("</svg>")
    return "".join(out)
