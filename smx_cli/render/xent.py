"""Rich renderables for ``smx xent``: per-sample table, summary panel, gradients."""
from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from smx_cli.render.fit import needed_width, never_cut
from smx_cli.render.tables import RowIds, class_label, fmt_value, row_label, row_list
from smx_cli.core.xent import XentResult


def undefined_reason(res: XentResult) -> str:
    """Why the mean loss is 0/0 (``res.denominator == 0``), in PyTorch's terms."""
    if len(res.loss) == 0:
        why = "there are no samples"
    elif res.all_ignored:
        why = "every label is the ignore index"
    else:
        why = "the class weights of the true labels sum to 0"
    return f"{why}, so the mean divides 0 by 0 (PyTorch returns nan)"


def undefined_prediction(res: XentResult) -> np.ndarray:
    """Samples whose prediction is undefined: NaN in their logits (no class ranks first).

    Examples
    --------
    >>> from smx_cli.core.xent import evaluate
    >>> undefined_prediction(evaluate(np.array([[1.0, 0.0], [np.nan, 0.0]]), [0, 1])).tolist()
    [False, True]
    """
    with np.errstate(invalid="ignore"):
        return np.isnan(res.entropy) | (np.isnan(res.p_true) & ~res.ignored)


def nonfinite_rows(res: XentResult) -> np.ndarray:
    """Indices of the counted samples whose loss is NaN or inf (what the panel names)."""
    return np.flatnonzero(~np.isfinite(res.loss) & ~res.ignored)


def _named_rows(res, ids) -> str:
    """``rows 3, 17 and 2 more`` for the samples with a NaN/inf loss.

    A merged (Dask) summary has no per-sample losses, only the first few of
    those rows (``res.part.nonfinite_rows``) and their count.
    """
    lead = RowIds(ids) if ids is not None else None
    if hasattr(res, "loss"):
        return row_list(nonfinite_rows(res).tolist(), lead)
    first = list(getattr(getattr(res, "part", None), "nonfinite_rows", ()))
    text = row_list(first, lead, limit=len(first) or 1)
    more = res.n_nonfinite - len(first)
    return text + (f" and {more:,} more" if more > 0 else "")


def _row_name(i: int, ids) -> str:
    return row_label(i, RowIds(ids)) if ids is not None else str(i)


def _count(k: int, noun: str) -> str:
    return f"{k:,} {noun}{'' if k == 1 else 's'}"


def _num(v: float, digits: int = 6) -> str:
    return fmt_value(float(v), digits)


def sample_table(res: XentResult, order: np.ndarray, *, class_names=None, title=None,
                 total_note: str | None = None, digits: int = 6, ids=None):
    """One row per sample in ``order``: label, prediction, p(true), loss, margin.

    ``ids`` (from --id-column) name the samples instead of their row indices.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("id" if ids is not None else "row", justify="right", style="dim",
                     overflow="fold")
    table.add_column("true", justify="left", style="cyan")
    table.add_column("pred", justify="left")
    table.add_column("p(true)", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("margin", justify="right")
    table.add_column("ok", justify="center")
    for i in order:
        i = int(i)
        if res.ignored[i]:
            table.add_row(_row_name(i, ids), Text("ignored", style="dim"),
                          class_label(int(res.predicted[i]), class_names),
                          "", _num(res.loss[i], digits), "", Text("-", style="dim"))
            continue
        loss = res.loss[i]
        loss_text = Text(_num(loss, digits), style="bold red" if not np.isfinite(loss) else "")
        ok = Text("yes", style="green") if res.correct[i] else Text("NO", style="bold red")
        # a NaN row ranks no class first: its prediction is undefined, not class 0
        pred = (Text("undefined", style="bold red") if np.isnan(res.p_true[i])
                else class_label(int(res.predicted[i]), class_names))
        table.add_row(_row_name(i, ids), class_label(int(res.true_class[i]), class_names), pred,
                      _num(res.p_true[i], digits), loss_text,
                      _num(res.margin[i], 4) if np.isfinite(res.margin[i]) or np.isinf(res.margin[i]) else "-",
                      ok)
    never_cut(table)
    if total_note is None:
        return table
    # a note under the table, not a caption: a caption wraps to the table's width
    return Group(table, Text(total_note, style="dim"))


def fitted_sample_table(console, res: XentResult, order: np.ndarray, **kw):
    """:func:`sample_table` with the most digits (6 down to 3) that fit ``console``;
    narrower still, cells fold onto a second line -- a number is never cut."""
    for digits in range(kw.pop("digits", 6), 2, -1):
        view = sample_table(res, order, digits=digits, **kw)
        table = view.renderables[0] if isinstance(view, Group) else view
        if needed_width(console, table) <= console.width:
            break
    return view


def summary_panel(res: XentResult, *, eps: float, input_counts=None, source: str | None = None,
                  n_classes: int = 0, options: str = "", smoothed: bool = False,
                  ids=None) -> Panel:
    """Reduced loss, accuracy, entropy, perplexity, ignored and non-finite counts.

    ``eps`` is the input format's machine epsilon: a sample whose softmax is
    within it of the target has a vanished gradient in that format. The
    samples with a NaN/inf loss are named (their ``ids`` when given).
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column(overflow="fold")
    n = res.n_samples
    grid.add_row("input", f"{n:,} samples x {n_classes:,} classes" + (f" from {source}" if source else ""))
    if options:
        grid.add_row("options", options)
    if res.reduction == "none":
        grid.add_row("loss", f"per sample (reduction none); mean {_num(res.mean_loss)}")
    elif res.reduction == "mean" and res.denominator == 0:
        grid.add_row("loss (mean)", Text(f"undefined: {undefined_reason(res)}", style="bold red"))
    else:
        style = "bold red" if not math.isfinite(res.reduced) else "bold"
        grid.add_row(f"loss ({res.reduction})", Text(_num(res.reduced, 10), style=style))
    counted = res.counted
    if counted:
        acc = res.accuracy
        grid.add_row("accuracy", f"{acc * 100:.2f} % ({res.n_correct:,} of {counted:,})")
        if n_classes > 5:
            grid.add_row("top-5 accuracy", f"{res.top5_accuracy * 100:.2f} %")
        grid.add_row("mean entropy", f"{_num(res.mean_entropy)} nats")
        grid.add_row("perplexity", f"{_num(res.perplexity)} (exp of the mean -log p(true), "
                     "without weights or smoothing)")
    grid.add_row("ignored", Text(_count(res.n_ignored, "sample"),
                                 style="yellow" if res.n_ignored else "green"))
    vanished = res.vanished(eps)
    what = "1 - p(true)" if res.target_kind == "index" and not smoothed else "max |softmax - target|"
    grid.add_row("vanished gradient", Text(
        f"{_count(vanished, 'sample')} with {what} <= {eps:.3g}: their gradient is ~0",
        style="yellow" if vanished else "green"))
    inf_loss = res.n_nonfinite
    if inf_loss:
        grid.add_row("non-finite loss", Text(f"{_count(inf_loss, 'sample')} (inf: p(true) is exactly 0; "
                                             "nan: NaN in the input)", style="bold red"))
        grid.add_row("", Text(_named_rows(res, ids), style="red"))
    if input_counts is not None:
        c = input_counts
        text = Text()
        text.append(f"NaN {c.nan:,}", style="red" if c.nan else "green")
        text.append(f"  +inf {c.pos_inf:,}", style="magenta" if c.pos_inf else "green")
        text.append(f"  -inf {c.neg_inf:,}", style="yellow" if c.neg_inf else "green")
        grid.add_row("non-finite input", text)
    bad = (not math.isfinite(res.reduced) and res.reduction != "none") or inf_loss
    title = "summary" + (": check the input" if bad else "")
    return Panel(grid, title=title, title_align="left", border_style="red" if bad else "green",
                 expand=False)


def grad_table(grad: np.ndarray, order: np.ndarray, *, class_names=None, top_k: int = 5,
               max_cols: int = 12, title: str | None = None, digits: int = 3,
               ids=None) -> Table:
    """dL/dlogits rows; all classes when C <= max_cols, else the top-k by |g|."""
    n_classes = grad.shape[1]
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("id" if ids is not None else "row", justify="right", style="dim",
                     overflow="fold")
    if n_classes <= max_cols:
        for j in range(n_classes):
            table.add_column(class_label(j, class_names), justify="right")
        for i in order:
            table.add_row(_row_name(int(i), ids), *[_num(v, digits) for v in grad[int(i)]])
    else:
        k = min(top_k, n_classes)
        for r in range(k):
            table.add_column(f"#{r + 1} (class: grad)", justify="right")
        table.add_column("|g| max", justify="right")
        for i in order:
            g = grad[int(i)]
            idx = np.argsort(-np.abs(g), kind="stable")[:k]
            cells = [f"{class_label(int(j), class_names)}: {_num(g[j], digits)}" for j in idx]
            table.add_row(_row_name(int(i), ids), *cells, _num(np.max(np.abs(g)), digits))
        table.caption = f"{n_classes} classes: each row's {k} largest |gradient| entries"
    return never_cut(table)


def grad_check_panel(checks, *, reduction: str, input_kind: str = "logits") -> Panel:
    """--check-grad: dL/dlogits against central finite differences, pass or FAIL."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column(overflow="fold")
    for c in checks:
        line = Text()
        line.append(Text("pass", style="green") if c.passed else Text("FAIL", style="bold red"))
        line.append(f": {c.rows_checked} rows, {c.entries_checked} entries, max |error| "
                    f"{c.max_abs_error:.2g}, max relative {c.max_rel_error:.2g}")
        grid.add_row("dL/dlogits", line)
        grid.add_row("tolerance", f"|analytic - fd| <= {c.atol:.3g} + {c.rtol:g} |fd| "
                     "(|fd|: at least its row's largest)")
    wrt = {"log-probs": " (logits = the log-probabilities)",
           "probs": " (logits = log of the probabilities)"}.get(input_kind, "")
    grid.add_row("against", f"central finite differences in float64 of the {reduction} loss"
                 f"{wrt}")
    bad = not all(c.passed for c in checks)
    return Panel(grid, title="gradient check" + (": FAILED" if bad else ""), title_align="left",
                 border_style="red" if bad else "green", expand=False)


def summary_line(meta: dict) -> str:
    """The xent summary in one line, for stderr when stdout carries data.

    Examples
    --------
    >>> summary_line({"samples": 3, "loss": 0.25, "loss_undefined": False, "reduction": "mean",
    ...               "accuracy": 2 / 3, "nonfinite_losses": 1})
    'smx: xent: 3 samples; loss (mean) 0.25; accuracy 66.67 %; 1 NaN/inf loss'
    """
    n = meta.get("samples", 0)
    parts = [f"{n:,} sample{'' if n == 1 else 's'}"]
    if meta.get("loss_undefined"):
        parts.append("loss undefined (0/0)")
    elif meta.get("reduction") != "none":
        loss = meta.get("loss")
        loss = {None: math.nan, "inf": math.inf, "-inf": -math.inf}.get(loss, loss)
        parts.append(f"loss ({meta['reduction']}) {_num(loss)}")
    if meta.get("accuracy") is not None:
        parts.append(f"accuracy {100 * meta['accuracy']:.2f} %")
    bad = meta.get("nonfinite_losses", 0)
    if bad:
        parts.append(f"{bad:,} NaN/inf loss{'' if bad == 1 else 'es'}")
    return "smx: xent: " + "; ".join(parts)
