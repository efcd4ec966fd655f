"""Rich renderables for gradients: Jacobians, VJPs, saturation and gradient checks."""
from __future__ import annotations

import numpy as np
from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from smx_cli.core.grad import GradCheck, Saturation
from smx_cli.render.fit import first_fitting, never_cut
from smx_cli.render.tables import class_label, fmt_value, plural, row_label

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


def matrix_view(console, values: np.ndarray, *, title: str, class_names=None, lead_shape=None,
                max_rows: int = 20, digits: int = 4) -> Table:
    """:func:`matrix_table` that fits ``console``: fewer top entries, then fewer
    digits, rather than cut numbers."""
    c = values.shape[1]
    cands = [(("all", digits), lambda: matrix_table(values, title=title, class_names=class_names,
                                                    lead_shape=lead_shape, max_rows=max_rows,
                                                    digits=digits))] if c <= 12 else []
    for k in range(min(4, c), 0, -1):
        for dg in ((digits,) if k > 1 else range(digits, 1, -1)):
            cands.append(((k, dg), lambda k=k, dg=dg: matrix_table(
                values, title=title, class_names=class_names, lead_shape=lead_shape,
                max_rows=max_rows, digits=dg, max_cols=0, top=k, width=console.width)))
    return first_fitting(console, cands)[1]


def matrix_table(values: np.ndarray, *, title: str, class_names=None, lead_shape=None,
                 max_rows: int = 20, digits: int = 4, max_cols: int = 12, top: int = 4,
                 width: int | None = None) -> Table:
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
        k = min(top, c)
        for r in range(k):
            table.add_column(f"#{r + 1} (class: value)", justify="right")
        for i in range(shown):
            v = values[i]
            top = np.argsort(-np.abs(v), kind="stable")[:k]
            table.add_row(row_label(i, lead_shape),
                          *[f"{class_label(int(j), class_names)}: {fmt_value(float(v[j]), digits)}" for j in top])
        note = f"{c:,} classes: each row's {k} largest |entries|"
        if width is not None and c <= 12:
            note = f"{c} classes do not fit in {width} columns: each row's {k} largest |entries|"
    notes = [note, f"{plural(n - shown, 'more row')} not shown" if n > shown else None]
    table.caption = "; ".join(x for x in notes if x) or None
    return table


def gradient_panel(sat: Saturation, checks: list[GradCheck] | None, *, lead_shape=None) -> Panel:
    """Vanishing-gradient diagnostics and, with --check-grad, the finite-difference verdicts."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column(overflow="fold")
    n = len(sat.saturated)
    k = int(sat.saturated.sum())
    grid.add_row("saturated rows", Text(
        f"{k:,} of {plural(n, 'row')} have every softmax-Jacobian entry below "
        f"{sat.threshold:g}: a loss on p itself (e.g. MSE) sends them ~no gradient",
        style="yellow" if k else "green"))
    if k:
        grid.add_row("", Text("the Jacobian is dp/dx; with cross-entropy the gradient is p - y, "
                              "which stays large for a confidently wrong sample: smx xent "
                              "shows that training signal", style="italic"))
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


def gradients_view(console, report, *, vjp=None, class_names=None, lead_shape=None,
                   max_rows: int = 20, shown_rows: int = 0) -> list:
    """The renderables of a :class:`~smx_cli.analysis.gradients.GradientReport`."""
    out: list = []
    for jb in report.jacobians:
        out.append(never_cut(jacobian_table(
            jb.jac, jb.idx, row=jb.row, lead_shape=lead_shape, class_names=class_names,
            kind=report.kind, largest=jb.largest, frobenius=jb.frobenius,
            total_classes=report.classes)))
    if report.jacobians and report.rows > len(report.jacobians):
        out.append(Text(f"Jacobians shown for the first {len(report.jacobians)} of "
                        f"{report.rows:,} rows (--grad-rows N for more)", style="dim"))
    if vjp is not None:
        out.append(matrix_view(console, vjp, title="vector-Jacobian product: upstream @ J",
                               class_names=class_names, lead_shape=lead_shape,
                               max_rows=max_rows))
    if report.saturation is not None:
        out.append(gradient_panel(report.saturation, report.checks, lead_shape=lead_shape))
    return out


def jacobian_fit(width: int) -> int:
    """How many classes a Jacobian table shows whole at this terminal width."""
    return max(2, min(12, (width - 10) // 10))
