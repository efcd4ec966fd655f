"""Reliability diagrams as an SVG document, written directly (no plotting library).

Two panels (before, after): per bin a bar of its accuracy, the gap to its
mean confidence shaded (red: over-confident, green: under-confident), the
diagonal dashed, and under each panel the confidence histogram. Plain SVG
1.1 text: any browser or image viewer shows it; import cost is nil.
"""
from __future__ import annotations

import math
from xml.sax.saxutils import escape

from smx_cli.analysis.calibration import Bins

PANEL = 300      # plot area, px
HIST = 60        # histogram height, px
MARGIN = 50


def _panel(bins: Bins, x0: float, y0: float, title: str) -> list[str]:
    out = [f'<text x="{x0 + PANEL / 2}" y="{y0 - 12}" text-anchor="middle" '
           f'font-weight="bold">{escape(title)}</text>',
           f'<rect x="{x0}" y="{y0}" width="{PANEL}" height="{PANEL}" fill="none" '
           'stroke="#444"/>']
    for t in range(0, 11, 2):
        v = t / 10
        y = y0 + PANEL * (1 - v)
        x = x0 + PANEL * v
        out.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#444"/>')
        out.append(f'<text x="{x0 - 7}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{v:.1f}</text>')
        out.append(f'<line x1="{x:.1f}" y1="{y0 + PANEL}" x2="{x:.1f}" y2="{y0 + PANEL + 4}" '
                   'stroke="#444"/>')
    peak = max(int(bins.count.max()) if len(bins.count) else 0, 1)
    for k in range(len(bins.count)):
        lo, hi = float(bins.lo[k]), float(bins.hi[k])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            continue
        xa, w = x0 + PANEL * lo, max(PANEL * (hi - lo), 0.5)
        n = int(bins.count[k])
        hh = HIST * n / peak
        out.append(f'<rect x="{xa:.2f}" y="{y0 + PANEL + 24 + HIST - hh:.2f}" width="{w:.2f}" '
                   f'height="{hh:.2f}" fill="#7aa6c2" stroke="white" stroke-width="0.5">'
                   f'<title>({lo:.4g}, {hi:.4g}]: {n} samples</title></rect>')
        if n == 0:
            continue
        acc, conf = float(bins.acc[k]), float(bins.conf[k])
        out.append(f'<rect x="{xa:.2f}" y="{y0 + PANEL * (1 - acc):.2f}" width="{w:.2f}" '
                   f'height="{PANEL * acc:.2f}" fill="#3b6ea5" stroke="white" '
                   f'stroke-width="0.5"><title>({lo:.4g}, {hi:.4g}]: n = {n}, accuracy '
                   f'{acc:.4f}, confidence {conf:.4f}</title></rect>')
        top, bot = max(acc, conf), min(acc, conf)
        colour = "#d62728" if conf > acc else "#2ca02c"
        out.append(f'<rect x="{xa:.2f}" y="{y0 + PANEL * (1 - top):.2f}" width="{w:.2f}" '
                   f'height="{PANEL * (top - bot):.2f}" fill="{colour}" fill-opacity="0.35" '
                   f'stroke="{colour}" stroke-width="0.8"/>')
    out.append(f'<line x1="{x0}" y1="{y0 + PANEL}" x2="{x0 + PANEL}" y2="{y0}" stroke="#222" '
               'stroke-dasharray="5,4"/>')
    out.append(f'<text x="{x0 + PANEL / 2}" y="{y0 + PANEL + 18}" text-anchor="middle" '
               'font-size="12">confidence</text>')
    out.append(f'<text x="{x0 - 34}" y="{y0 + PANEL / 2}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 - 34} {y0 + PANEL / 2})">accuracy</text>')
    out.append(f'<text x="{x0 - 7}" y="{y0 + PANEL + 24 + HIST / 2}" text-anchor="end" '
               f'font-size="11">n (max {peak})</text>')
    return out


def reliability_svg(before: Bins, after: Bins, title: str = "") -> str:
    """An SVG document: the before and after reliability diagrams side by side.

    Examples
    --------
    >>> from smx_cli.analysis.calibration import width_bins
    >>> b = width_bins([0.55, 0.95], [True, False], m=4)
    >>> svg = reliability_svg(b, b, "demo")
    >>> svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    True
    """
    width = 2 * PANEL + 3 * MARGIN + 40
    height = PANEL + HIST + 2 * MARGIN + 50
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="12">'
             f'{escape(title)}</text>']
    y0 = MARGIN + 10
    parts += _panel(before, MARGIN + 20, y0, "before")
    parts += _panel(after, 2 * MARGIN + PANEL + 40, y0, "after")
    parts.append(f'<text x="{MARGIN}" y="{height - 10}" font-size="11">bars: accuracy; red: '
                 'gap, over-confident; green: gap, under-confident; dashed: perfect '
                 'calibration</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
