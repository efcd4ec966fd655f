"""Pure functions: arrays and diagnostics -> rich renderables. No printing.

Every table is capped (rows, and columns via a top-k view) and says in its
caption what it left out, so output stays readable for any input size.
"""
from __future__ import annotations

import numpy as np
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from smx_cli.analysis.diagnostics import SoftmaxDiagnostics
from smx_cli.core import registry

DEFAULT_MAX_ROWS = 20
DEFAULT_MAX_COLS = 12
DEFAULT_TOP_K = 5


def class_label(j: int, class_names: list[str] | None) -> str:
    if class_names is not None and j < len(class_names):
        return str(class_names[j])
    return str(j)


def row_label(i: int, lead_shape: tuple[int, ...] | None = None) -> str:
    """Row i of the flattened (N, C) view, as an index into the input."""
    if lead_shape is None or len(lead_shape) <= 1:
        return str(i)
    return ",".join(str(int(v)) for v in np.unravel_index(i, lead_shape))


def fmt_value(v: float, digits: int = 6) -> str:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def styled_value(v: float, *, live: bool, tiny: float, kind: str, is_max: bool = False,
                 digits: int = 6) -> Text:
    """One cell: NaN red, inf magenta, 0-by-underflow yellow, the row's max bold."""
    text = fmt_value(float(v), digits)
    if np.isnan(v):
        return Text(text, style="bold red")
    p = np.exp(v) if kind == "logprob" else v
    if np.isinf(v) and kind == "prob":
        return Text(text, style="bold magenta")
    if live and p == 0:
        return Text(text, style="yellow")
    if live and 0 < p < tiny:
        return Text(text, style="dim yellow")
    if is_max:
        return Text(text, style="bold green")
    return Text(text)


def _elided_rows_note(shown: int, total: int) -> str | None:
    if total > shown:
        return f"{total - shown} more rows not shown (--rows N to see more, -o FILE for all)"
    return None


def values_table(values: np.ndarray, x2: np.ndarray, *, kind: str, tiny: float,
                 class_names: list[str] | None = None, lead_shape=None,
                 max_rows: int = DEFAULT_MAX_ROWS, title: str | None = None,
                 digits: int = 6) -> Table:
    """All classes of the first ``max_rows`` rows, values right-aligned."""
    n, width = values.shape
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("row", justify="right", style="dim")
    for j in range(width):
        table.add_column(class_label(j, class_names), justify="right")
    shown = min(n, max_rows)
    with np.errstate(invalid="ignore"):
        for i in range(shown):
            row = values[i].astype(np.float64)
            xrow = np.asarray(x2[i], dtype=np.float64)
            finite_row = bool(width) and np.isfinite(xrow.max())
            top = int(np.nanargmax(row)) if width and not np.isnan(row).all() else -1
            cells = [styled_value(row[j], live=finite_row and np.isfinite(xrow[j]), tiny=tiny,
                                  kind=kind, is_max=(j == top), digits=digits)
                     for j in range(width)]
            table.add_row(row_label(i, lead_shape), *cells)
    notes = [_elided_rows_note(shown, n)]
    if n == 0:
        notes.append("no rows: the input is empty")
    table.caption = "; ".join(x for x in notes if x) or None
    return table


def topk_table(values: np.ndarray, x2: np.ndarray, k: int, *, kind: str, tiny: float,
               class_names: list[str] | None = None, lead_shape=None,
               max_rows: int = DEFAULT_MAX_ROWS, title: str | None = None,
               reason: str | None = None, digits: int = 6) -> Table:
    """Each row's ``k`` largest values with their classes, plus the rest's mass."""
    n, width = values.shape
    k = max(1, min(k, width)) if width else 0
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("row", justify="right", style="dim")
    for r in range(k):
        table.add_column(f"#{r + 1} class", justify="left", style="cyan")
        table.add_column(f"#{r + 1} {'log p' if kind == 'logprob' else 'p'}", justify="right")
    table.add_column("rest p", justify="right", style="dim")
    shown = min(n, max_rows)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(shown):
            row = values[i].astype(np.float64)
            xrow = np.asarray(x2[i], dtype=np.float64)
            finite_row = bool(width) and np.isfinite(xrow.max())
            key = np.where(np.isnan(row), -np.inf, row)
            idx = np.argpartition(-key, k - 1)[:k] if k < width else np.arange(width)
            idx = idx[np.argsort(-key[idx], kind="stable")]
            cells: list = []
            for r, j in enumerate(idx):
                cells.append(class_label(int(j), class_names))
                cells.append(styled_value(row[j], live=finite_row, tiny=tiny, kind=kind,
                                          is_max=(r == 0), digits=digits))
            probs = np.exp(row) if kind == "logprob" else row
            # the others' own sum: 1 - sum(top k) cancels to 0 on a saturated row
            others = np.ones(width, dtype=bool)
            others[idx] = False
            rest = float(np.sum(probs[others])) if width > k else 0.0
            cells.append(fmt_value(max(rest, 0.0), 3) if np.isfinite(rest) else "nan")
            table.add_row(row_label(i, lead_shape), *cells)
    notes = [reason, _elided_rows_note(shown, n)]
    table.caption = "; ".join(x for x in notes if x) or None
    return table


def _count_line(count: int, what: str, style_bad: str = "yellow") -> Text:
    return Text(f"{count:,} {what}", style=style_bad if count else "green")


def diagnostics_panel(d: SoftmaxDiagnostics, source: str | None = None,
                      support: np.ndarray | None = None) -> Panel:
    """The diagnostics panel under a softmax table (``support``: sparse maps' sizes)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column()
    inp = d.inputs
    how = f"emulated {d.dtype} arithmetic" if d.emulated else f"accurate, {d.dtype} result"
    grid.add_row("computed", f"{d.variant} ({how})")
    grid.add_row("input", f"{inp.rows:,} rows x {inp.classes:,} classes"
                 + (f" from {source}" if source else ""))
    bad_in = Text()
    bad_in.append(f"NaN {inp.nan:,}", style="red" if inp.nan else "green")
    bad_in.append(f"  +inf {inp.pos_inf:,}", style="magenta" if inp.pos_inf else "green")
    bad_in.append(f"  -inf {inp.neg_inf:,}", style="yellow" if inp.neg_inf else "green")
    bad_in.append(f"  fully masked rows {inp.masked_rows:,}",
                  style="yellow" if inp.masked_rows else "green")
    grid.add_row("non-finite input", bad_in)
    grid.add_row("exp overflow", _count_line(d.exp_overflow, "entries became inf", "bold red"))
    if d.sum_overflow_rows:
        grid.add_row("sum overflow", _count_line(d.sum_overflow_rows, "rows summed to inf", "bold red"))
    if support is not None and len(support):
        grid.add_row("support", f"{int(support.min()):,} .. {int(support.max()):,} classes per row "
                     f"(mean {float(np.mean(support)):.3g}); {d.exact_zeros:,} exact zeros")
    elif d.exact_zeros:
        grid.add_row("exact zeros", f"{d.exact_zeros:,} entries (by design of {d.variant})")
    else:
        under = "entries underflowed to 0" if d.kind == "prob" else "entries underflowed to -inf"
        grid.add_row("underflow", _count_line(d.underflow_to_zero, f"{under} (exact value > 0)"))
    if d.subnormal:
        grid.add_row("subnormal", _count_line(d.subnormal, f"entries below {d.dtype}'s normal range"))
    nan_text = _count_line(d.output_nan, f"NaN entries in {d.output_nan_rows:,} rows", "bold red")
    if d.produced_nan_rows:
        nan_text.append(f" ({d.produced_nan_rows:,} rows made NaN by the computation)", style="bold red")
    grid.add_row("output NaN", nan_text)
    grid.add_row("row sums", _count_line(
        d.sum_off_rows, f"rows with |sum - 1| > {d.sum_tolerance:g} eps "
        f"(max |sum - 1| = {d.max_sum_error:.3g})", "bold red"))
    if d.min_value is not None:
        grid.add_row("range", f"{fmt_value(d.min_value)} .. {fmt_value(d.max_value)}")
    if d.argmax_counts:
        grid.add_row("argmax", ", ".join(f"{c} ({n:,} rows)" for c, n in d.argmax_counts))
    for hint in hints(d):
        grid.add_row("hint", Text(hint, style="italic"))
    verdict, style = verdict_of(d)
    return Panel(grid, title=f"diagnostics: {verdict}", title_align="left", border_style=style,
                 expand=False)


def verdict_of(d: SoftmaxDiagnostics) -> tuple[str, str]:
    if d.produced_nan_rows or d.exp_overflow or d.sum_overflow_rows:
        return "broken", "red"
    if d.sum_off_rows:
        return "inaccurate", "yellow"
    if d.output_nan or d.underflow_to_zero or d.inputs.masked_rows:
        return "ok, with warnings", "yellow"
    return "ok", "green"


def hints(d: SoftmaxDiagnostics) -> list[str]:
    out = []
    if d.variant in registry.UNSHIFTED and (d.exp_overflow or d.sum_overflow_rows):
        out.append("exp(x) overflowed: the max-shifted --variant stable cannot overflow")
    if d.produced_nan_rows and d.inputs.inf_rows and d.emulated:
        out.append("+inf logits make inf - inf = NaN in plain arithmetic; smx's accurate "
                   "path (no --dtype) shares the mass among the +inf entries")
    if d.masked_nan_rows:
        out.append("fully masked rows (all -inf) have no softmax: --masked zeros gives 0s")
    if d.sum_off_rows and d.emulated:
        out.append(f"rounding in {d.dtype} spoils the sums: drop --dtype for the accurate result")
    return out


def stack(*renderables) -> Group:
    return Group(*[r for r in renderables if r is not None])
