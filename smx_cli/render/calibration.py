"""Rich renderables for ``smx calibrate``: metric table, fit panel, reliability diagrams.

Everything fits 80 columns: the two reliability diagrams (before, after)
are 38 columns each, side by side; the bin table has 7 narrow columns.
"""
from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from smx_cli.render.fit import never_cut
from rich.text import Text

from smx_cli.analysis.calibration import Bins, Metrics
from smx_cli.analysis.temperature import Fit

# diagram rows (accuracy 0..1) and the widest plot area in columns
HEIGHT = 10
PLOT_COLS = 30
SPARK = " ▁▂▃▄▅▆▇█"


def _f(v: float, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}f}"


def _g(v: float, digits: int = 6) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}g}"


def binning_note(m: Metrics) -> str:
    """The binning every number below depends on, stated once."""
    scheme = "equal-width" if m.binning == "width" else "equal-mass"
    return (f"M = {m.n_bins} {scheme} bins, edges (lo, hi], confidence 1.0 in the last bin,\n"
            f"empty bins kept; top-label; ECE norm {m.norm}")


def metric_table(before: Metrics, after: Metrics, *, title: str | None = None) -> Table:
    """Metric | before | after, every number in full."""
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
    t.add_column("metric", no_wrap=True)
    t.add_column("before", justify="right", no_wrap=True)
    t.add_column("after", justify="right", no_wrap=True)
    t.add_column("", style="dim", no_wrap=True)
    scheme = "width" if before.binning == "width" else "mass"
    rows = [
        ("samples", f"{before.rows:,}", f"{after.rows:,}", ""),
        ("accuracy", _f(before.accuracy), _f(after.accuracy), "argmax = label"),
        ("NLL", _g(before.nll), _g(after.nll), "mean -log p(y)"),
        ("Brier", _g(before.brier), _g(after.brier), "mean sum (p_k - [k=y])^2"),
        (f"ECE ({before.norm})", _g(before.ece), _g(after.ece), f"{scheme} bins"),
        ("MCE", _g(before.mce), _g(after.mce), "max |gap|, width bins"),
        ("ACE", _g(before.ace), _g(after.ace), "l1, mass bins"),
        ("class-wise ECE", _g(before.classwise_ece), _g(after.classwise_ece), "width bins"),
        ("debiased L2", _g(before.debiased_l2), _g(after.debiased_l2), "Kumar 2019, mass bins"),
    ]
    if before.bootstrap:
        rows += [("  95% CI low", _g(before.debiased_l2_ci[0]), _g(after.debiased_l2_ci[0]),
                  f"{before.bootstrap} resamples,"),
                 ("  95% CI high", _g(before.debiased_l2_ci[1]), _g(after.debiased_l2_ci[1]),
                  f"seed {before.seed}")]
    rows += [
        ("over-confidence", _g(before.over_confidence), _g(after.over_confidence),
         "ECE from conf > acc"),
        ("under-confidence", _g(before.under_confidence), _g(after.under_confidence),
         "ECE from conf < acc"),
    ]
    for name, b, a, note in rows:
        t.add_row(name, b, a, Text(note))
    return never_cut(t)


def _ci(ci) -> str:
    return f"{_f(ci[0])}..{_f(ci[1])}"


def fit_panel(fit: Fit, fit_on: str, fit_source: str) -> Panel:
    """The fitted map: T (or a, b), NLL before and after, iterations, gradient."""
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold", justify="right", no_wrap=True)
    g.add_column()
    where = {"same": "the same rows as the report",
             "split": "a random split (the report uses the other rows)",
             "separate": fit_source}[fit_on]
    g.add_row("fit on", f"{fit.rows:,} rows: {where}")
    if fit.method == "temperature":
        g.add_row("temperature", Text(f"T = {fit.temperature!r}", style="bold"))
        g.add_row("", f"(beta = 1/T = {fit.beta:.10g}; divide the logits by T)")
        g.add_row("NLL", f"{fit.nll_before:.10g} -> {fit.nll_after:.10g}")
        g.add_row("start", f"T = {fit.start_temperature:.10g} (fitted in memory on "
                  f"{fit.sample_rows:,} evenly spaced rows)")
        g.add_row("Newton", f"on beta: {fit.iterations} full-data step"
                  f"{'s' if fit.iterations != 1 else ''}; {fit.passes} passes over the data")
        g.add_row("at optimum", f"dNLL/dbeta = {fit.gradient:.3g}, d2NLL/dbeta2 = "
                  f"{fit.hessian:.4g}")
    else:
        g.add_row("vector", f"per-class a z + b: scale {_g(float(fit.scale.min()), 4)}.."
                  f"{_g(float(fit.scale.max()), 4)}, bias {_g(float(fit.bias.min()), 4)}.."
                  f"{_g(float(fit.bias.max()), 4)}")
        g.add_row("NLL", f"{fit.nll_before:.10g} -> {fit.nll_after:.10g}")
        g.add_row("Newton", f"{fit.iterations} damped steps; {fit.passes} passes; "
                  f"max |gradient| {fit.gradient:.3g}")
    if not fit.converged:
        g.add_row("", Text("did not converge", style="bold red"))
    return Panel(g, title=f"{fit.method} scaling", title_align="left", box=box.ROUNDED,
                 expand=False)


def _cell_width(m: int) -> int:
    return max(1, min(3, PLOT_COLS // max(m, 1)))


def diagram(bins: Bins, title: str) -> Text:
    """A reliability diagram as text: accuracy bars, gap shading, diagonal, histogram.

    Per bin: ``█`` up to min(accuracy, confidence); ``░`` from accuracy up to a
    higher mean confidence (over-confident); ``▓`` from confidence up to a
    higher accuracy (under-confident); ``·`` the diagonal where the bar is
    not; the bottom line is the confidence histogram (counts, scaled).
    """
    m = len(bins.count)
    w = _cell_width(m)
    out = Text()
    out.append(title + "\n", style="bold")
    acc_h = [_height(a) for a in bins.acc]
    conf_h = [_height(c) for c in bins.conf]
    mid = [_height(0.5 * (lo + hi)) for lo, hi in zip(bins.lo, bins.hi)]
    for r in range(HEIGHT, 0, -1):
        label = f"{r / HEIGHT:.1f}" if r % 2 == 0 else "   "
        out.append(f"{label} ┤" if r % 2 == 0 else "    │", style="dim")
        for k in range(m):
            a, c = acc_h[k], conf_h[k]
            if a is not None and r <= min(a, c):
                out.append("█" * w, style="blue")
            elif a is not None and c < r <= a:
                out.append("▓" * w, style="green")
            elif a is not None and a < r <= c:
                out.append("░" * w, style="red")
            elif r == mid[k]:
                out.append("·" * w, style="dim")
            else:
                out.append(" " * w)
        out.append("\n")
    out.append("    └" + "─" * (w * m) + "\n", style="dim")
    peak = max(int(bins.count.max()) if m else 0, 1)
    out.append("  n  ", style="dim")
    for k in range(m):
        n = int(bins.count[k])
        level = 0 if n == 0 else max(1, math.ceil(math.log1p(n) / math.log1p(peak)
                                                  * (len(SPARK) - 1)))
        out.append(SPARK[level] * w, style="cyan")
    out.append("\n")
    axis = f"{bins.lo[0]:.2g}" if m else ""
    right = f"{bins.hi[-1]:.2g}" if m else ""
    out.append("     " + axis + " " * max(1, w * m - len(axis) - len(right)) + right,
               style="dim")
    return out


def _height(v) -> int | None:
    if v is None or not math.isfinite(v):
        return None
    return int(round(float(v) * HEIGHT))


def diagrams(before: Bins, after: Bins, width: int = 80):
    """Before and after side by side (stacked when the terminal is narrow)."""
    left = diagram(before, "before: accuracy vs confidence")
    right = diagram(after, "after")
    need = 2 * (5 + _cell_width(len(before.count)) * len(before.count)) + 4
    legend = Text("█ accuracy  ░ gap, over-confident  ▓ gap, under-confident  · diagonal\n"
                  "n: histogram of confidences (log scale)", style="dim")
    if width < need:
        return Group(left, Text(""), right, legend)
    grid = Table.grid(padding=(0, 3))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_row(left, right)
    return Group(grid, legend)


def bin_table(before: Bins, after: Bins, *, title: str | None = None) -> Table:
    """Per bin: range, count, mean confidence and accuracy, before and after."""
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", padding=(0, 1))
    t.add_column("bin (lo, hi]", no_wrap=True)
    for side in ("before", "after"):
        t.add_column(f"n {side}", justify="right", no_wrap=True)
        t.add_column("conf", justify="right", no_wrap=True)
        t.add_column("acc", justify="right", no_wrap=True)
    for k in range(len(before.count)):
        cells = [f"({before.lo[k]:.3f}, {before.hi[k]:.3f}]"]
        for b in (before, after):
            n = int(b.count[k])
            style = "" if n == 0 or not math.isfinite(b.gap[k]) else (
                "red" if b.gap[k] < -0.05 else "green" if b.gap[k] > 0.05 else "")
            cells += [f"{n:,}", _f(b.conf[k]), Text(_f(b.acc[k]), style=style)]
        t.add_row(*cells)
    return never_cut(t)


def rows_of_metrics(before: Metrics, after: Metrics, fit: Fit) -> tuple[list[str], np.ndarray]:
    """CSV: metric names and a (k, 2) before/after matrix."""
    keys = ["rows", "accuracy", "nll", "brier", "ece", "mce", "ace", "classwise_ece",
            "debiased_l2", "debiased_l2_ci_lo", "debiased_l2_ci_hi", "over_confidence",
            "under_confidence"]

    def val(m, k):
        if k == "debiased_l2_ci_lo":
            return m.debiased_l2_ci[0]
        if k == "debiased_l2_ci_hi":
            return m.debiased_l2_ci[1]
        return float(getattr(m, k))
    mat = np.array([[val(before, k), val(after, k)] for k in keys], dtype=np.float64)
    if fit.method == "temperature":
        keys.append("temperature")
        mat = np.vstack([mat, [1.0, fit.temperature]])
    return keys, mat
