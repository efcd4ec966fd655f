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
from smx_cli.core.precision import FORMATS
from smx_cli.render.fit import first_fitting, needed_width, never_cut

DEFAULT_MAX_ROWS = 20
DEFAULT_MAX_COLS = 12
DEFAULT_TOP_K = 5
#: rows of a candidate table measured to see whether it fits the terminal
FIT_ROWS = 64


def class_label(j: int, class_names: list[str] | None) -> str:
    if class_names is not None and j < len(class_names):
        return str(class_names[j])
    return str(j)


class RowIds(list):
    """Row names from an id column: pass one where a ``lead_shape`` is taken and
    every table and panel names rows by their ids."""


def row_label(i: int, lead_shape: tuple[int, ...] | None = None) -> str:
    """Row i of the flattened (N, C) view, as an index into the input (or its id).

    Examples
    --------
    >>> row_label(5, (2, 3)), row_label(1, RowIds(["cat-17", "dog-2"]))
    ('1,2', 'dog-2')
    """
    if isinstance(lead_shape, RowIds):
        if not 0 <= i < len(lead_shape):
            return str(i)
        return str(lead_shape[i]) or '""'  # an empty id, visibly
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


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,000 rows`` (one thousands style everywhere).

    Examples
    --------
    >>> plural(1, "row"), plural(12345, "entry"), plural(3, "class")
    ('1 row', '12,345 entries', '3 classes')
    """
    if n == 1:
        return f"1 {noun}"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        many = noun[:-1] + "ies"
    elif noun.endswith(("s", "x", "ch", "sh")):
        many = noun + "es"
    else:
        many = noun + "s"
    return f"{n:,} {many}"


def _elided_rows_note(shown: int, total: int) -> str | None:
    if total > shown:
        return f"{plural(total - shown, 'more row')} not shown (--rows N to see more, -o FILE for all)"
    return None


def values_table(values: np.ndarray, x2: np.ndarray, *, kind: str, tiny: float,
                 class_names: list[str] | None = None, lead_shape=None,
                 max_rows: int = DEFAULT_MAX_ROWS, title: str | None = None,
                 digits: int = 6, total_rows: int | None = None) -> Table:
    """All classes of the first ``max_rows`` rows, values right-aligned.

    ``total_rows``: the rows of the whole result when ``values`` holds only
    the first ones (a streamed file).
    """
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
    notes = [_elided_rows_note(shown, n if total_rows is None else total_rows)]
    if n == 0:
        notes.append("no rows: the input is empty")
    table.caption = "; ".join(x for x in notes if x) or None
    return table


def topk_table(values: np.ndarray, x2: np.ndarray, k: int, *, kind: str, tiny: float,
               class_names: list[str] | None = None, lead_shape=None,
               max_rows: int = DEFAULT_MAX_ROWS, title: str | None = None,
               reason: str | None = None, digits: int = 6,
               total_rows: int | None = None) -> Table:
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
            if width and np.isnan(row).all():
                # no ranking exists in a NaN row: no class is its prediction
                for r in range(k):
                    cells += [Text("undefined" if r == 0 else "-", style="bold red"),
                              Text("nan", style="bold red")]
                cells.append("nan")
                table.add_row(row_label(i, lead_shape), *cells)
                continue
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
    notes = [reason, _elided_rows_note(shown, n if total_rows is None else total_rows)]
    table.caption = "; ".join(x for x in notes if x) or None
    return table


def _count_line(count: int, what: str, style_bad: str = "yellow") -> Text:
    return Text(f"{count:,} {what}", style=style_bad if count else "green")


#: the panel names at most this many rows; JSON lists all of them
PANEL_ROWS = 5


def row_list(index: list[int], lead_shape=None, limit: int = PANEL_ROWS) -> str:
    """``rows 2, 7, 9 and 12 more`` for the panel.

    Examples
    --------
    >>> row_list([3]), row_list(list(range(8)), limit=3)
    ('row 3', 'rows 0, 1, 2 and 5 more (all in --format json)')
    """
    shown = ", ".join(row_label(i, lead_shape) for i in index[:limit])
    more = len(index) - limit
    head = "row" if len(index) == 1 else "rows"
    return f"{head} {shown}" + (f" and {more:,} more (all in --format json)" if more > 0 else "")


def fallback_engine(d: SoftmaxDiagnostics) -> bool:
    """True when the numpy kernels computed what the compiled core takes when it
    runs (float64 stable/log): the panel then says why the core did not run."""
    from smx_cli.core.accurate import NATIVE_FORMATS
    from smx_cli.core.registry import VARIANTS

    spec = VARIANTS.get(d.variant)
    return (not d.emulated and d.engine == "numpy" and d.dtype in NATIVE_FORMATS
            and spec is not None and spec.fast)


def native_status() -> str:
    """Why the compiled core is not running: forced off, or not built."""
    from smx_cli.core import native

    if native.available():
        return "SMX_ENGINE=numpy"
    return "the compiled core is not built (reinstall with a C compiler)"


def diagnostics_panel(d: SoftmaxDiagnostics, source: str | None = None,
                      support: np.ndarray | None = None, lead_shape=None) -> Panel:
    """The diagnostics panel under a softmax table (``support``: sparse maps' sizes)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column(overflow="fold")
    inp = d.inputs
    how = f"emulated {d.dtype} arithmetic" if d.emulated else f"accurate, {d.dtype} result"
    if fallback_engine(d):
        how += f"; numpy engine: {native_status()}"
    if d.variant.startswith("torch."):
        how = f"PyTorch's CPU kernel: {d.dtype} storage, float32 arithmetic"
    grid.add_row("computed", f"{d.variant} ({how})")
    grid.add_row("input", f"{plural(inp.rows, 'row')} x {plural(inp.classes, 'class')}"
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
        under = "underflowed to 0" if d.kind == "prob" else "underflowed to -inf"
        noun = "entry" if d.underflow_to_zero == 1 else "entries"
        if d.emulated:
            grid.add_row("underflow", _count_line(d.underflow_to_zero,
                                                  f"{noun} {under} (exact value > 0)"))
            if d.zero_below_range:
                grid.add_row("", Text(f"and {plural(d.zero_below_range, 'entry')} whose exact "
                                      f"value is below {d.dtype}'s range: 0 is correct",
                                      style="dim"))
        else:
            # the accurate path rounds correctly: a 0 here is the nearest number
            # of the format to a value too small for it -- information, not a fault
            grid.add_row("underflow", Text(f"{d.underflow_to_zero:,} {noun} {under}: the exact "
                                           f"value is below {d.dtype}'s range (correctly rounded)",
                                           style="dim" if d.underflow_to_zero else "green"))
    if d.subnormal:
        grid.add_row("subnormal", _count_line(d.subnormal, f"entries below {d.dtype}'s normal range"))
    nan_text = _count_line(d.output_nan, f"NaN {'entry' if d.output_nan == 1 else 'entries'}"
                           f" in {plural(d.output_nan_rows, 'row')}", "bold red")
    if d.produced_nan_rows:
        nan_text.append(f" ({plural(d.produced_nan_rows, 'row')} made NaN by the computation)",
                        style="bold red")
    grid.add_row("output NaN", nan_text)
    if d.nan_output_row_index:
        grid.add_row("NaN rows", Text(row_list(d.nan_output_row_index, lead_shape), style="red"))
    if d.nonfinite_input_row_index:
        grid.add_row("NaN/+inf input", row_list(d.nonfinite_input_row_index, lead_shape))
    grid.add_row("row sums", _count_line(
        d.sum_off_rows, f"{'row' if d.sum_off_rows == 1 else 'rows'} with |sum - 1| > "
        f"{d.sum_tolerance:g} eps (max |sum - 1| = {d.max_sum_error:.3g})", "bold red"))
    if d.min_value is not None:
        grid.add_row("range", f"{fmt_value(d.min_value)} .. {fmt_value(d.max_value)}")
    if d.argmax_counts:
        grid.add_row("argmax", ", ".join(f"{c} ({plural(n, 'row')})" for c, n in d.argmax_counts))
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
    if d.output_nan or (d.underflow_to_zero and d.emulated) or d.inputs.masked_rows:
        return "ok, with warnings", "yellow"
    return "ok", "green"


def hints(d: SoftmaxDiagnostics) -> list[str]:
    out = []
    if d.exp_overflow or d.sum_overflow_rows:
        fmt = FORMATS.get(d.dtype)
        where = f" (exp overflows {d.dtype} above x = {np.log(fmt.max):.4g})" if fmt else ""
        if d.variant in registry.UNSHIFTED:
            out.append(f"exp(x) overflowed{where}: subtract the row max first (--variant "
                       "stable), or upcast the logits to float32 before softmax/loss")
        else:
            out.append(f"the sum of exponentials overflowed{where}: upcast the logits to "
                       "float32 before softmax/loss")
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


def _title(kind: str, variant: str, temperature: float, source: str | None) -> str:
    what = "log_softmax" if kind == "logprob" else registry.get(variant).title
    t = f"x/{temperature:g}" if temperature != 1 else "x"
    return f"{what}({t}) of {source}"


def values_view(console, values: np.ndarray, logits: np.ndarray, *, kind: str, tiny: float,
                variant: str, temperature: float, source: str | None, class_names=None,
                lead_shape=None, max_rows: int = DEFAULT_MAX_ROWS, top_k: int | None = None,
                digits: int = 6, total_rows: int | None = None) -> Table:
    """The values table that fits ``console``: all classes, or each row's top k.

    All classes when there are at most 12 and they fit; else the largest
    k <= 5 (or <= ``top_k``) whose top-k table fits, with the reason in the
    caption; at k = 1 fewer digits are tried. No cell is ever cut.
    """
    width = values.shape[1]
    title = _title(kind, variant, temperature, source)
    common = dict(kind=kind, tiny=tiny, class_names=class_names, lead_shape=lead_shape,
                  max_rows=max_rows, title=title, total_rows=total_rows)
    # the fit is judged on the first rows only (measuring 20,000 rows of several
    # candidates takes minutes); the chosen layout is then built for every row
    probe = dict(common, max_rows=min(max_rows, FIT_ROWS))
    if top_k is None and width <= DEFAULT_MAX_COLS:
        if needed_width(console, values_table(values, logits, digits=digits, **probe)) \
                <= console.width:
            return never_cut(values_table(values, logits, digits=digits, **common))
        why = f"{width} classes do not fit in {console.width} columns"
    else:
        why = f"{width:,} classes"
    start = DEFAULT_TOP_K if top_k is None else top_k

    def reason(k: int, dg: int) -> str:
        if top_k is None:
            text = f"{why}: showing each row's top {k} (--top-k K to choose)"
        elif k < top_k:
            text = f"top {top_k} does not fit in {console.width} columns: showing the top {k}"
        else:
            return ""
        if dg < digits:
            text += f", {dg} digits"
        return text

    candidates = [((k, digits), None) for k in range(start, 0, -1)]
    candidates += [((1, dg), None) for dg in range(digits - 1, 2, -1)]
    (k, dg), _ = first_fitting(console, (
        (key, (lambda k=key[0], dg=key[1]: topk_table(
            values, logits, k, reason=reason(k, dg) or None, digits=dg, **probe)))
        for key, _ in candidates))
    return never_cut(topk_table(values, logits, k, reason=reason(k, dg) or None, digits=dg,
                                **common))


def summary_line(d: SoftmaxDiagnostics, lead_shape=None) -> str:
    """The diagnostics in one line, for stderr when stdout carries data.

    Examples
    --------
    >>> from smx_cli.core.softmax import compute
    >>> from smx_cli.analysis.diagnostics import diagnose
    >>> x = np.array([[1000.0, 2000.0], [1.0, 2.0]])
    >>> summary_line(diagnose(x, compute(x, "naive")))
    'smx: diagnostics: broken -- 2 rows; exp overflow in 2 entries; sum overflow in 1 row; NaN in 1 row (row 0)'
    """
    verdict, _ = verdict_of(d)
    parts = [plural(d.inputs.rows, "row")]
    if d.exp_overflow:
        parts.append(f"exp overflow in {plural(d.exp_overflow, 'entry')}")
    if d.sum_overflow_rows:
        parts.append(f"sum overflow in {plural(d.sum_overflow_rows, 'row')}")
    if d.output_nan_rows:
        parts.append(f"NaN in {plural(d.output_nan_rows, 'row')} "
                     f"({row_list(d.nan_output_row_index, lead_shape, limit=3)})")
    if d.sum_off_rows:
        parts.append(f"|sum - 1| too large in {plural(d.sum_off_rows, 'row')}")
    if d.underflow_to_zero and d.emulated:
        parts.append(f"underflow in {plural(d.underflow_to_zero, 'entry')}")
    if d.inputs.masked_rows:
        parts.append(f"{plural(d.inputs.masked_rows, 'fully masked row')}")
    return f"smx: diagnostics: {verdict} -- " + "; ".join(parts)
