"""The pruning sweep's curves as one SVG file (thesis Figs. 4.1–4.4, SPEC §5), dependency-free.

``fvaudit sweep`` runs without a server, so its curves cannot be the dashboard's charts;
matplotlib is not a dependency of the project, and an SVG is plain text a browser, an
editor or a paper opens. Two panels share the x axis (the pruning rate; the unpruned
model at 0): fine-tuned accuracy per method, and CLIP-δ per method and attack (push-down
solid, push-up dashed). Input: :func:`fvaudit.engine.defence.sweep_table.curves`.
"""
from __future__ import annotations

import math
from html import escape
from typing import Sequence

#: one colour per method (in sorted order; more methods cycle)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
DASH = {"push_down": "", "push_up": "6 4"}
W, H = 420, 300                     # one panel
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 36, 44


def nice_range(values: Sequence[float]) -> tuple[float, float]:
    """A y range around the finite values, widened to a multiple of a round step (0.1, 1, 5 ...)."""
    vs = [v for v in values if v is not None and math.isfinite(v)]
    if not vs:
        return 0.0, 1.0
    lo, hi = min(vs), max(vs)
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    step = _step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _step(span: float) -> float:
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def to_xy(x: float, y: float, y_range: tuple[float, float], x0: float = 0.0) -> tuple[float, float]:
    """Data → panel pixels: x ∈ [0, 1] (the rate), y within ``y_range``; ``x0`` is the panel's offset."""
    lo, hi = y_range
    px = x0 + LEFT + x * (W - LEFT - RIGHT)
    py = TOP + (hi - y) / (hi - lo) * (H - TOP - BOTTOM)
    return round(px, 2), round(py, 2)


def _series(xs: Sequence, ys: Sequence, y_range, x0: float, colour: str, dash: str, label: str) -> str:
    pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(y)]
    if not pts:
        return ""
    coords = [to_xy(x, y, y_range, x0) for x, y in pts]
    line = " ".join(f"{a},{b}" for a, b in coords)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    dots = "".join(f'<circle cx="{a}" cy="{b}" r="2.5" fill="{colour}"/>' for a, b in coords)
    return (f'<g class="series" data-label="{escape(label)}"><polyline fill="none" stroke="{colour}" '
            f'stroke-width="1.8"{dash_attr} points="{line}"/>{dots}</g>')


def _axes(title: str, y_label: str, y_range, x0: float) -> str:
    lo, hi = y_range
    step = _step(hi - lo)
    parts = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    x_axis_y = H - BOTTOM
    parts.append(f'<line x1="{x0 + LEFT}" y1="{x_axis_y}" x2="{x0 + W - RIGHT}" y2="{x_axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{x0 + LEFT}" y1="{TOP}" x2="{x0 + LEFT}" y2="{x_axis_y}" stroke="#333"/>')
    for i in range(5):
        x = i / 4
        px, _ = to_xy(x, lo, y_range, x0)
        parts.append(f'<text x="{px}" y="{x_axis_y + 16}" text-anchor="middle">{x:.0%}</text>')
    n = int(round((hi - lo) / step))
    for i in range(n + 1):
        y = lo + i * step
        _, py = to_xy(0, y, y_range, x0)
        parts.append(f'<line x1="{x0 + LEFT}" y1="{py}" x2="{x0 + W - RIGHT}" y2="{py}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + LEFT - 6}" y="{py + 4}" text-anchor="end">{y:.3g}</text>')
    parts.append(f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">pruning rate</text>')
    parts.append(f'<text transform="translate({x0 + 14},{(TOP + x_axis_y) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    return "".join(parts)


def curves_svg(curves: dict[str, dict[str, list]], title: str = "") -> str:
    """The SVG document: accuracy (left) and CLIP-δ (right) against the pruning rate, per method."""
    methods = list(curves)
    attacks = sorted({k[len("clip_delta_"):] for s in curves.values() for k in s if k.startswith("clip_delta_")})
    acc_range = nice_range([v for s in curves.values() for v in s.get("finetuned_acc", [])])
    delta_range = nice_range([v for s in curves.values() for a in attacks for v in s.get(f"clip_delta_{a}", [])]
                             + [0.0])
    body = [_axes("fine-tuned accuracy (%)", "Acc. (%)", acc_range, 0),
            _axes("CLIP-δ of the attack", "CLIP-δ", delta_range, W)]
    legend = []
    for i, m in enumerate(methods):
        c = COLOURS[i % len(COLOURS)]
        s = curves[m]
        body.append(_series(s["rate"], s.get("finetuned_acc", []), acc_range, 0, c, "", f"{m} accuracy"))
        for a in attacks:
            body.append(_series(s["rate"], s.get(f"clip_delta_{a}", []), delta_range, W, c, DASH.get(a, "2 2"),
                                f"{m} {a}"))
        legend.append(f'<rect x="{16 + 130 * i}" y="{H + 8}" width="12" height="12" fill="{c}"/>'
                      f'<text x="{32 + 130 * i}" y="{H + 18}">{escape(m)}</text>')
    styles = "  ".join(f"{a}: {'solid' if not DASH.get(a, '2 2') else 'dashed'}" for a in attacks)
    legend.append(f'<text x="{2 * W - 16}" y="{H + 18}" text-anchor="end">{escape(styles)}</text>')
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 30 + (20 if title else 0)}" '
            f'font-family="sans-serif" font-size="11">')
    t = f'<text x="16" y="{H + 44}" font-size="11">{escape(title)}</text>' if title else ""
    return head + '<rect width="100%" height="100%" fill="white"/>' + "".join(body) + "".join(legend) + t + "</svg>\n"
