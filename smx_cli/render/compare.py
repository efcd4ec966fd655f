"""Pure functions: a :class:`~smx_cli.analysis.compare.Comparison` or
:class:`~smx_cli.analysis.compare.Sweep` -> rich renderables. No printing."""
from __future__ import annotations

import math

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from smx_cli.analysis.compare import ULP_OK, Comparison, Sweep, Thresholds
from smx_cli.render.fit import needed_width, never_cut
from smx_cli.render.tables import RowIds, row_label

VERDICT_STYLE = {"ok": "bold green", "inaccurate": "bold yellow", "broken": "bold red",
                 "n/a": "dim"}
#: at most this many worst rows are listed under the table
MAX_WORST = 12
BAR_WIDTH = 28
#: the numeric columns of the comparison table, in order
COLUMNS = ("ovfl", "unfl", "NaN", "failed", "max ulp", "/bound", "med ulp", "err/u",
           "|sum-1|", "|dlogp|")
#: which numeric columns go first when the table does not fit the terminal
#: (the counts of failures, max ulp and the verdict always stay)
DROP_ORDER = ("med ulp", "|dlogp|", "err/u", "|sum-1|", "unfl", "NaN", "/bound")


def fmt_num(v: float | None, digits: int = 3) -> str:
    """A table number: '-' for None, 'inf'/'nan', else ``digits`` significant digits.

    Numbers below 0.01 or from 1e5 up are written in exponent form with
    ``digits - 1`` significant digits, so every cell stays short.

    Examples
    --------
    >>> fmt_num(None), fmt_num(float("inf")), fmt_num(2.0547), fmt_num(0.00086808)
    ('-', 'inf', '2.05', '8.7e-04')
    """
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) < 0.01 or abs(v) >= 1e5:
        return f"{v:.{max(digits - 2, 0)}e}"
    return f"{v:.{digits}g}"


def fmt_scale(s: float | None) -> str:
    """A sweep scale as 1, 10, 100, 1e3, ...

    Examples
    --------
    >>> fmt_scale(1.0), fmt_scale(100.0), fmt_scale(1e5)
    ('1', '100', '1e5')
    """
    if s is None:
        return "-"
    if s < 1000:
        return f"{s:g}"
    return f"1e{round(math.log10(s))}"


def _count(n: int) -> Text:
    return Text(f"{n:,}", style="bold red" if n else "")


def _value_text(v: float) -> Text:
    text = fmt_num(v, 4)
    if math.isnan(v):
        return Text(text, style="bold red")
    if math.isinf(v):
        return Text(text, style="bold magenta")
    return Text(text)


def variant_name(variant: str) -> str:
    """The label of a variant in tables (``smx`` is the accurate path)."""
    return variant


def comparison_table(c: Comparison, title: str, columns: tuple[str, ...] = COLUMNS) -> Table:
    """One row per variant x format: counts, errors in ulps, verdict (coloured).

    ``columns`` picks the numeric columns shown (a subset of :data:`COLUMNS`,
    for narrow terminals); the caption names the ones left out.
    """
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
              caption=_caption(c, [n for n in COLUMNS if n not in columns]),
              caption_justify="left", padding=(0, 1, 0, 0))
    t.add_column("dtype", no_wrap=True)
    t.add_column("variant", no_wrap=True)
    shown = [n for n in COLUMNS if n in columns]
    for name in shown:
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("verdict", no_wrap=True)
    last = None
    for r in c.reports:
        if last is not None and r.dtype != last:
            t.add_section()
        cells = {
            "ovfl": _count(r.overflow_rows), "unfl": _count(r.underflow), "NaN": _count(r.nan),
            "failed": _count(r.failed_rows), "max ulp": fmt_num(r.max_ulp),
            "/bound": fmt_num(r.max_bound_ratio),
            "med ulp": fmt_num(r.median_ulp), "err/u": fmt_num(r.max_row_error_u),
            "|sum-1|": fmt_num(r.max_sum_error), "|dlogp|": fmt_num(r.max_logp_error),
        }
        t.add_row(
            r.dtype if r.dtype != last else "", variant_name(r.variant),
            *[cells[name] for name in shown],
            Text(r.verdict, style=VERDICT_STYLE[r.verdict]),
        )
        last = r.dtype
    return t


def _caption(c: Comparison, dropped: list[str] | None = None) -> str:
    skipped = {r.dtype: (r.skipped_rows, r.out_of_range_rows) for r in c.reports}
    lines = [
        "smx: smx's accurate path. ovfl: rows where exp or the sum became inf; unfl: "
        "p = 0 where the exact p is normal; NaN: entries; failed: rows with NaN/inf or all 0. On the rows that did not fail: max/median error in ulps of the dtype "
        "(entries whose exact value is normal); /bound: max ulp error over the variant's bound; err/u = max|p - p*| / (u max p*) per row, the "
        "paper's measure; |sum-1|; |dlogp| = max |log p - log p*| (log: its log-probabilities).",
        "verdict, overflow and NaN first: broken = a row failed (pick another variant); "
        "inaccurate = some entry is outside the variant's own known error bound for the "
        "dtype (/bound > 1: worse than its analysis promises); ok = within it (the bound of "
        "the shifted formulas grows with |x - max|; smx's is "
        f"{ULP_OK:g} ulp). The input is rounded to each dtype first; the reference is exact "
        "for that rounded input.",
    ]
    if dropped:
        lines.append(f"Not shown to fit the terminal: {', '.join(dropped)} (a wider terminal, "
                     "COLUMNS=N, or --format json shows them).")
    for dt, (n, oor) in skipped.items():
        if n:
            why = f", {oor:,} with logits beyond the {dt} range" if oor else ""
            lines.append(f"{dt}: {n:,} row(s) not measured (NaN/+inf/fully masked{why}).")
    return "\n".join(lines)


def thresholds_line(ths: dict[str, Thresholds]) -> Text:
    """One line: where exp(x) overflows in each format."""
    parts = []
    for th in ths.values():
        extra = ""
        if f"{th.exp_overflow_in_format:.2f}" != f"{th.exp_overflow:.2f}":
            extra = f" ({th.exp_overflow_in_format:g} after rounding)"
        parts.append(f"{th.exp_overflow:.2f} in {th.dtype}{extra}")
    return Text("exp(x) overflows above x = " + ", ".join(parts), style="italic")


def worst_rows_table(c: Comparison, ids: list[str] | None = None) -> Table | None:
    """The worst row of each broken variant: input, output (NaN/inf visible), exact.

    With ``ids`` (--id-column) the row is named by its id, not its index.
    """
    broken = [r for r in c.reports if r.verdict == "broken" and r.worst is not None]
    if not broken:
        return None
    t = Table(title="worst row of each broken variant", box=box.SIMPLE_HEAD,
              title_justify="left", pad_edge=False)
    lead = RowIds(ids) if ids is not None else None
    for name in ("dtype", "variant", "id" if ids is not None else "row", "x (rounded)",
                 "p computed", "p exact"):
        t.add_column(name, justify="right" if name == "row" else "left")
    for r in broken[:MAX_WORST]:
        w = r.worst
        cols = w.columns
        shown = len(cols) < c.n_cols
        t.add_row(r.dtype, variant_name(r.variant), row_label(w.index, lead),
                  _vector(w.input, cols if shown else None, style=False),
                  _vector(w.output, cols if shown else None),
                  _vector(w.reference, cols if shown else None, style=False))
    if len(broken) > MAX_WORST:
        t.caption = f"{len(broken) - MAX_WORST} more broken variant(s) not shown (--format json)"
    return t


def _vector(vals: list[float], cols: list[int] | None, style: bool = True) -> Text:
    out = Text("[")
    for k, v in enumerate(vals):
        if k:
            out.append(", ")
        if cols is not None:
            out.append(f"{cols[k]}:")
        out.append_text(_value_text(v) if style else Text(fmt_num(v, 4)))
    out.append("]")
    return out


def comparison_view(c: Comparison, title: str, columns: tuple[str, ...] = COLUMNS,
                    ids: list[str] | None = None) -> Group:
    """The whole compare-stability screen: table, thresholds, worst rows (by ``ids``)."""
    parts = [never_cut(comparison_table(c, title, columns)), thresholds_line(c.thresholds)]
    worst = worst_rows_table(c, ids)
    if worst is not None:
        parts += [Text(""), never_cut(worst)]
    return Group(*parts)


# ----------------------------------------------------------------------------
# the sweep


def sweep_table(s: Sweep, title: str) -> Table:
    """Variants down, formats across: the scale at which each first breaks."""
    dtypes = list(s.thresholds)
    variants = list(dict.fromkeys(e.variant for e in s.entries))
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("breaks at scale")
    for d in dtypes:
        t.add_column(d, justify="right", no_wrap=True)
    for v in variants:
        cells = []
        for d in dtypes:
            e = s.entry(v, d)
            if e.break_scale is None:
                cells.append(Text(f"never (<= {fmt_scale(_measured_to(s, d))})", style="green"))
            else:
                cells.append(Text(f"{fmt_scale(e.break_scale)} {e.cause}", style="bold red"))
        t.add_row(variant_name(v), *cells)
    t.add_section()
    t.add_row("exp overflows above",
              *[f"{s.thresholds[d].exp_overflow:.2f}" for d in dtypes])
    t.add_row("largest x with finite exp",
              *[f"{s.thresholds[d].exp_overflow_in_format:g}" for d in dtypes])
    t.add_row("format max", *[f"{s.thresholds[d].max:.4g}" for d in dtypes])
    t.add_row("input out of range at", *[fmt_scale(s.out_of_range_scale[d]) for d in dtypes])
    t.caption = ("max |x| per scale: " + ", ".join(
        f"{fmt_scale(sc)}: {m:.3g}" for sc, m in zip(s.scales, s.max_logit))
        + ". Rows whose logits leave the format's range are not measured.")
    t.caption_justify = "left"
    return t


def _measured_to(s: Sweep, dtype: str) -> float:
    """The last scale at which every row of ``dtype`` was in range and measured."""
    oor = s.out_of_range_scale.get(dtype)
    return s.scales[-1] if oor is None else max(oor / 10, 1.0)


def sweep_chart(s: Sweep) -> Text:
    """Unicode bars: the length is log10 of the scale each variant survives."""
    top = max(math.log10(s.max_scale), 1.0)
    out = Text()
    out.append("log10 of the scale where each variant breaks (full bar: never, up to "
               + fmt_scale(s.max_scale) + ")\n", style="bold")
    label_w = max(len(f"{variant_name(e.variant)} {e.dtype}") for e in s.entries)
    for e in s.entries:
        label = f"{variant_name(e.variant)} {e.dtype}".ljust(label_w)
        if e.break_scale is None:
            n = BAR_WIDTH
            bar, style = "█" * n + "▶", "green"
            note = f" never (<= {fmt_scale(_measured_to(s, e.dtype))})"
        else:
            # the last scale that survived: one decade below the break
            n = round(BAR_WIDTH * max(math.log10(e.break_scale), 0) / (top + 1))
            bar, style, note = "█" * n + "✗", "red", f" breaks at {fmt_scale(e.break_scale)}"
        out.append(label + " ")
        out.append(bar.ljust(BAR_WIDTH + 1), style=style)
        out.append(note + "\n")
    return out


def sweep_view(s: Sweep, title: str) -> Group:
    return Group(never_cut(sweep_table(s, title)), sweep_chart(s))


def fitted_comparison_view(console, c: Comparison, title: str,
                           ids: list[str] | None = None) -> Group:
    """:func:`comparison_view` with the numeric columns that fit ``console``.

    rich would squeeze every cell of a table wider than the terminal to
    "0.…"; instead whole columns go, least important first
    (:data:`DROP_ORDER`), until the rest fits, and the caption names them.
    """
    columns = COLUMNS
    for name in (None, *DROP_ORDER):
        if name is not None:
            columns = tuple(col for col in columns if col != name)
        if needed_width(console, comparison_table(c, title, columns)) <= console.width:
            break
    return comparison_view(c, title, columns, ids)
