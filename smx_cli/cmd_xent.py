"""``smx xent``: cross-entropy with PyTorch's semantics, per-sample report, gradients."""
from __future__ import annotations

import math
import os

import click
import numpy as np

from smx_cli import render_xent
from smx_cli.diagnostics import count_inputs
from smx_cli.emit import Payload, check_output_path, stdout_console, write_file, write_stdout
from smx_cli.errors import SmxError
from smx_cli.labels import read_labels, read_weights, split_label_column
from smx_cli.options import input_options
from smx_cli.precision import result_format
from smx_cli.prepare import Rows, load_rows
from smx_cli.softmax_ops import as_rows
from smx_cli.xent import INPUT_KINDS, REDUCTIONS, evaluate


@click.command("xent", epilog="""\b
PyTorch semantics (torch.nn.functional.cross_entropy): --reduction,
--label-smoothing, --weight and --ignore-index mean what they mean there,
including how a weighted, smoothed mean divides by the target classes'
weights. Labels are class indices (integers, or class names from the
logits' header) or an N x C matrix of probability targets.

\b
Examples:
  smx xent samples/mnist_lenet_logits.npy --labels samples/mnist_lenet_labels.npy
  smx xent samples/mnist_lenet_logits.csv --labels samples/mnist_lenet_labels.csv --worst 5
  smx xent logits.csv --label-column label --label-smoothing 0.1 --reduction sum
  smx xent logits.npy --labels y.npy --grad --rows 3 --grad-out grad.npy
  smx xent logits.npy --labels y.npy -o losses.csv""")
@input_options
@click.option("--labels", "labels_path", metavar="FILE",
              help="True labels: one class index or class name per line (CSV/TSV/NPY), or "
                   "an N x C matrix of probability targets")
@click.option("--label-column", metavar="NAME|INDEX",
              help="Take the labels from this column of the logits file instead")
@click.option("--reduction", type=click.Choice(REDUCTIONS), default="mean", show_default=True)
@click.option("--label-smoothing", type=float, default=0.0, show_default=True, metavar="EPS",
              help="Mix the target with the uniform distribution, EPS in [0, 1]")
@click.option("--weight", metavar="W", help="C class weights: a comma list (1,2,0.5) or a file")
@click.option("--ignore-index", type=int, default=-100, show_default=True,
              help="Samples with this label count for nothing")
@click.option("--input-kind", type=click.Choice(INPUT_KINDS), default="logits", show_default=True,
              help="What FILE holds: logits, log-probabilities (gives NLL) or probabilities")
@click.option("--worst", type=click.IntRange(min=1), default=None, metavar="K",
              help="Show the K samples with the highest loss")
@click.option("--rows", "max_rows", type=click.IntRange(min=1), default=20, show_default=True,
              help="Samples shown in the table")
@click.option("--grad", "show_grad", is_flag=True,
              help="Show dL/dlogits for the displayed samples")
@click.option("--grad-out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write dL/dlogits (N x C) to FILE (.npy, .csv, .tsv, .json)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write per-sample losses (and the summary, for .json) to FILE")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "tsv", "json"]), default=None,
              help="Format of stdout (with -o: of FILE) [default: table]")
@click.option("--strict", is_flag=True, help="Exit 1 when a loss is NaN or inf")
def xent_cmd(file, delimiter, header, key, axis, labels_path, label_column, reduction,
             label_smoothing, weight, ignore_index, input_kind, worst, max_rows, show_grad,
             grad_out, output, fmt, strict):
    """Cross-entropy of the logits in FILE against the true labels.

    Reports each sample's loss, predicted class, p(true) and margin, and a
    summary: the reduced loss, accuracy, top-5 accuracy, mean entropy,
    perplexity and ignored samples. Never log(softmax(x)): a confidently
    correct sample keeps its tiny true loss, a confidently wrong one a finite
    large loss.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise click.BadParameter("must be in [0, 1]", param_hint="'--label-smoothing'")
    if (labels_path is None) == (label_column is None):
        raise click.UsageError("give exactly one of --labels FILE or --label-column NAME|INDEX")
    if file == "-" and labels_path == "-":
        raise click.UsageError("FILE and --labels cannot both be - (standard input)")
    weight_file = weight if weight and os.path.exists(weight) else None
    check_output_path(output, file, labels_path, weight_file)
    check_output_path(grad_out, file, labels_path, weight_file)
    if output and grad_out and output == grad_out:
        raise SmxError(f"{output}: -o and --grad-out name the same file")

    if label_column is not None:
        loaded, labels = split_label_column(file, label_column, delimiter=delimiter,
                                            header=header, key=key)
        try:
            x2, moved, ax = as_rows(loaded.values, axis)
        except ValueError as exc:
            raise SmxError(f"{loaded.source}: {exc}") from None
        rows = Rows(x2, loaded, ax, loaded.values.ndim, moved)
    else:
        rows = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis)
    if rows.ndim > 2:
        raise SmxError(f"{rows.loaded.source}: xent takes a 2-D N x C array, got shape "
                       f"{rows.loaded.values.shape}; reshape it to rows of classes")
    x2 = rows.x2
    class_names = rows.class_names
    if label_column is None:
        labels = read_labels(labels_path, class_names=class_names)
    labels_source = labels_path or f"{rows.loaded.source} column {label_column}"
    weights = read_weights(weight, x2.shape[1]) if weight else None
    try:
        res = evaluate(x2, labels, weight=weights, ignore_index=ignore_index,
                       reduction=reduction, label_smoothing=label_smoothing,
                       input_kind=input_kind, want_grad=bool(show_grad or grad_out))
    except ValueError as exc:
        raise SmxError(f"{labels_source}: {exc}") from None

    fmt_eps = result_format(x2.dtype).eps
    meta = _summary(res, rows, reduction, label_smoothing, ignore_index, input_kind, weights,
                    fmt_eps)
    per_sample = _per_sample_matrix(res)
    meta["columns"] = PER_SAMPLE_COLUMNS
    payload = Payload(per_sample, PER_SAMPLE_COLUMNS, meta, {"per_sample": per_sample})
    if grad_out:
        write_file(grad_out, Payload(res.grad, class_names, {"command": "xent", "gradient":
                                     "dL/dlogits", "reduction": reduction}, {"grad": res.grad}),
                   None)
    if output:
        write_file(output, payload, fmt)
    if fmt and fmt != "table" and not output:
        write_stdout(payload, fmt)
        if meta["loss_undefined"] and not strict:
            click.echo(f"Warning: {_undefined_reason(res)}", err=True)
    else:
        console = stdout_console()
        n = len(res.loss)
        if worst:
            order = _worst(res, worst)
            note = f"the {len(order)} highest-loss samples of {n:,}"
            title = f"worst {len(order)} samples of {rows.loaded.source}"
        else:
            order = np.arange(min(n, max_rows))
            note = (f"{n - len(order):,} more samples not shown (--rows N, --worst K, or -o FILE)"
                    if n > len(order) else None)
            title = f"cross-entropy of {rows.loaded.source}"
        console.print(render_xent.sample_table(res, order, class_names=class_names, title=title,
                                               total_note=note))
        if show_grad:
            fit = max(2, (console.width - 8) // 11)
            console.print(render_xent.grad_table(res.grad, order, class_names=class_names,
                                                 max_cols=fit,
                                                 top_k=max(1, min(5, (console.width - 18) // 20)),
                                                 title=f"dL/dlogits (reduction {reduction})"))
        console.print(render_xent.summary_panel(
            res, eps=fmt_eps, input_counts=count_inputs(x2), source=rows.loaded.source,
            n_classes=x2.shape[1], options=_options_text(reduction, label_smoothing, ignore_index,
                                                         input_kind, weights),
            smoothed=label_smoothing > 0))
        for path in (output, grad_out):
            if path:
                console.print(f"wrote {path}", style="dim")
    if strict:
        bad = int((~np.isfinite(res.loss) & ~res.ignored).sum())
        if bad or (reduction != "none" and not math.isfinite(res.reduced)):
            raise SmxError(f"--strict: {bad} sample loss(es) are NaN or inf"
                           if bad else f"--strict: {_undefined_reason(res)}")


PER_SAMPLE_COLUMNS = ["row", "label", "predicted", "p_true", "loss", "margin", "correct",
                      "ignored"]


def _undefined_reason(res) -> str:
    return f"the mean loss is undefined: {render_xent.undefined_reason(res)}"


def _worst(res, k: int) -> np.ndarray:
    key = np.where(res.ignored, -np.inf, np.where(np.isnan(res.loss), np.inf, res.loss))
    order = np.argsort(-key, kind="stable")
    counted = int((~res.ignored).sum())
    return order[:min(k, counted)]


def _options_text(reduction, eps, ignore_index, input_kind, weights) -> str:
    parts = [f"reduction {reduction}"]
    if eps:
        parts.append(f"label smoothing {eps:g}")
    if weights is not None:
        parts.append("class weights")
    if ignore_index != -100:
        parts.append(f"ignore index {ignore_index}")
    if input_kind != "logits":
        parts.append(f"input {input_kind}")
    return ", ".join(parts)


def _per_sample_matrix(res) -> np.ndarray:
    n = len(res.loss)
    return np.column_stack([
        np.arange(n), res.true_class, res.predicted, res.p_true, res.loss, res.margin,
        res.correct.astype(float), res.ignored.astype(float),
    ]).astype(np.float64)


def _finite_or_none(v: float):
    return v if math.isfinite(v) else None


def _summary(res, rows, reduction, eps, ignore_index, input_kind, weights, fmt_eps) -> dict:
    return {
        "command": "xent",
        "source": rows.loaded.source,
        "samples": int(len(res.loss)),
        "classes": int(rows.x2.shape[1]),
        "class_names": rows.class_names,
        "target_kind": res.target_kind,
        "reduction": reduction,
        "label_smoothing": eps,
        "ignore_index": ignore_index,
        "input_kind": input_kind,
        "weight": weights.tolist() if weights is not None else None,
        "loss": _finite_or_none(res.reduced) if reduction != "none" else None,
        "loss_undefined": bool(reduction == "mean" and res.denominator == 0),
        "mean_sample_loss": _finite_or_none(res.mean_loss),
        "accuracy": _finite_or_none(res.accuracy),
        "top5_accuracy": _finite_or_none(res.top5_accuracy) if rows.x2.shape[1] > 5 else None,
        "mean_entropy": _finite_or_none(res.mean_entropy),
        "perplexity": _finite_or_none(res.perplexity),
        "ignored": int(res.ignored.sum()),
        "vanished_gradients": res.vanished(fmt_eps),
        "vanished_eps": fmt_eps,
        "nonfinite_losses": int((~np.isfinite(res.loss) & ~res.ignored).sum()),
    }
