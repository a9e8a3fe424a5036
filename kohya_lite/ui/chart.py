"""The loss chart as a small inline SVG (no gradio here): two lines (the step loss and its running average)
with a legend, whole-number step ticks, and a dot per point so even the first step shows.

A hand-drawn SVG instead of gr.LinePlot: that chart fixes its axes and colours at the first data it gets,
shows fractional step ticks and draws nothing for a single point.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

W, H = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 36
SERIES = (("loss", "#3b82f6", 1.5), ("average", "#f97316", 2.5))
EMPTY = '<div class="kl-chart kl-chart-empty" data-points="0">The loss appears here once training runs.</div>'


def _nice_step(span: float, target: int) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def step_ticks(lo: int, hi: int, target: int = 8) -> list[int]:
    """Whole-number ticks from lo to hi (at most about `target`)."""
    step = max(1, math.ceil(_nice_step(max(1, hi - lo), target)))
    first = math.ceil(lo / step) * step
    return list(range(first, hi + 1, step))


def value_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def loss_svg(points: Sequence[tuple[int, float, float | None]]) -> str:
    """The chart of (step, loss, average) points; a short note before the first step."""
    if not points:
        return EMPTY
    steps = [int(s) for s, _, _ in points]
    series = {"loss": [float(v) for _, v, _ in points],
              "average": [float(v if a is None else a) for _, v, a in points]}
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    if not values:
        return EMPTY
    x0, x1 = min(steps), max(steps)
    if x0 == x1:  # one step: centre it
        x0, x1 = max(0, x0 - 1), x1 + 1
    y0, y1 = min(values), max(values)
    pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.05, 0.01)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(s: float) -> float:
        return LEFT + (s - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return TOP + (y1 - v) / (y1 - y0) * ph

    parts = [f'<svg class="kl-chart" data-points="{len(points)}" viewBox="0 0 {W} {H}" width="100%" '
             f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="loss by step" '
             f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">']
    for t in value_ticks(y0, y1):
        y = py(t)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">{_fmt(t)}</text>')
    for t in step_ticks(x0, x1):
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="#9ca3af"/>'
                     f'<text class="kl-xtick" x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle" '
                     f'fill="#6b7280">{t}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}" stroke="#9ca3af"/>'
                 f'<text x="{LEFT + pw / 2}" y="{H - 4}" text-anchor="middle" fill="#374151">step</text>'
                 f'<text x="14" y="{TOP + ph / 2}" text-anchor="middle" fill="#374151" '
                 f'transform="rotate(-90 14 {TOP + ph / 2})">loss</text>')
    for name, colour, width in SERIES:
        xy = [(px(s), py(v)) for s, v in zip(steps, series[name]) if math.isfinite(v)]
        if len(xy) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline class="kl-series" data-series="{name}" points="{coords}" fill="none" '
                         f'stroke="{colour}" stroke-width="{width}" stroke-linejoin="round"/>')
        if len(xy) <= 60:  # a dot per point while they are few (one point alone is still a mark)
            parts += [f'<circle data-series="{name}" cx="{x:.1f}" cy="{y:.1f}" r="{width + 1}" fill="{colour}"/>'
                      for x, y in xy]
    lx = W - RIGHT - 150
    for i, (name, colour, width) in enumerate(SERIES):  # the legend
        x = lx + i * 78
        parts.append(f'<line x1="{x}" x2="{x + 18}" y1="12" y2="12" stroke="{colour}" stroke-width="{width + 1}"/>'
                     f'<text class="kl-legend" x="{x + 23}" y="16" fill="#374151">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
