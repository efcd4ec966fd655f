"""Rich renderables for gradients: Jacobians, VJPs, saturation and gradient checks."""
from __future__ import annotations

import numpy as np
from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from smx_cli.core.grad import GradCheck, Saturation
from smx_cli.render.tables import class_label, fmt_value, row_label

_TINY_STYLE = "yellow"


def _cell(v: float, digits: int, largest: float) -> Text:
    text = fmt_value(float(v), digits)
    if v == 0:
        return Text(text, style="dim")
    if largest > 0 and abs(v) == largest:
        return Text(text, style="bold")
    return Text(text)


def jacobian_table(jac: np.ndarray, idx: np.ndarray, *, row: int, lead_shape=None,
                   class_names=None, kind: str, largest: float, frobenius: float,
                   total_classes: int, digits: int = 3) -> Table:
    """One row's Jacobian (or its block over the classes ``idx``)."""
    what = {"log": "d log p_i / d x_j"}.get(kind, "d p_i / d x_j")
    block = len(idx) < total_classes
    title = f"Jacobian {what}, row {row_label(row, lead_shape)}"
    if block:
        title += f" (block of the top {len(idx)} of {total_classes} classes)"
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("i \\ j", style="cyan")
    for j in idx:
        table.add_column(class_label(int(j), class_names), justify="right")
    for a, i in enumerate(idx):
        table.add_row(class_label(int(i), class_names),
                      *[_cell(jac[a, b], digits, largest) for b in range(len(idx))])
    style = _TINY_STYLE if largest < 1e-6 else ""
    table.caption = Text(f"largest |entry| {fmt_value(largest, 3)}, Frobenius norm "
                         f"{fmt_value(frobenius, 3)}" + ("  saturated: ~no gradient flows"
                                                          if largest < 1e-6 else ""), style=style)
    return table


def matrix_table(values: np.ndarray, *, title: str, class_names=None, lead_shape=None,
                 max_rows: int = 20, digits: int = 4, max_cols: int = 12) -> Table:
    """Rows of an N x C matrix (e.g. a VJP); the top-|value| entries when wide."""
    n, c = values.shape
    shown = min(n, max_rows)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("row", justify="right", style="dim")
    if c <= max_cols:
        for j in range(c):
            table.add_column(class_label(j, class_names), justify="right")
        for i in range(shown):
            table.add_row(row_label(i, lead_shape), *[fmt_value(float(v), digits) for v in values[i]])
        note = None
    else:
        k = 4
        for r in range(k):
            table.add_column(f"#{r + 1} (class: value)", justify="right")
        for i in range(shown):
            v = values[i]
            top = np.argsort(-np.abs(v), kind="stable")[:k]
            table.add_row(row_label(i, lead_shape),
                          *[f"{class_label(int(j), class_names)}: {fmt_value(float(v[j]), digits)}" for j in top])
        note = f"{c} classes: each row's {k} largest |entries|"
    notes = [note, f"{n - shown} more rows not shown" if n > shown else None]
    table.caption = "; ".join(x for x in notes if x) or None
    return table


def gradient_panel(sat: Saturation, checks: list[GradCheck] | None, *, lead_shape=None) -> Panel:
    """Vanishing-gradient diagnostics and, with --check-grad, the finite-difference verdicts."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column()
    n = len(sat.saturated)
    k = int(sat.saturated.sum())
    grid.add_row("saturated rows", Text(
        f"{k:,} of {n:,} rows have every Jacobian entry below {sat.threshold:g}: they stop learning",
        style="yellow" if k else "green"))
    finite = np.isfinite(sat.max_jacobian)
    if finite.any():
        grid.add_row("largest entry", f"median over rows {fmt_value(float(np.median(sat.max_jacobian[finite])), 3)}"
                     f", smallest {fmt_value(float(np.min(sat.max_jacobian[finite])), 3)}")
    grid.add_row("lost in " + sat.dtype, Text(
        f"{sat.underflow_share * 100:.3g} % of the logits' gradients p(1-p) underflow to 0",
        style="yellow" if sat.underflow_share else "green"))
    hint = sat.hint_temperature
    has = np.isfinite(hint)
    if has.any():
        first = int(np.flatnonzero(has)[0])
        grid.add_row("temperature hint", Text(
            f"T = {hint[first]:.4g} brings row {row_label(first, lead_shape)}'s max p down to 0.99"
            f" ({int(has.sum()):,} rows above 0.99; median T {np.median(hint[has]):.4g})",
            style="italic"))
    if checks:
        for c in checks:
            verdict = Text("pass", style="green") if c.passed else Text("FAIL", style="bold red")
            line = Text(f"{c.rows_checked} rows, {c.entries_checked} entries: max |error| "
                        f"{c.max_abs_error:.2g}, max relative {c.max_rel_error:.2g} "
                        f"(tolerance {c.atol:g} + {c.rtol:g} |fd|) ")
            line.append(verdict)
            grid.add_row(f"check {c.function}", line)
    bad = (checks and not all(c.passed for c in checks))
    title = "gradients" + (": check FAILED" if bad else "")
    style = "red" if bad else ("yellow" if k else "green")
    return Panel(grid, title=title, title_align="left", border_style=style, expand=False)
