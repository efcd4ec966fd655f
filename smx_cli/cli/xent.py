"""``smx xent``: cross-entropy with PyTorch's semantics, per-sample report, gradients."""
from __future__ import annotations

import dataclasses
import math
import os

import click
import numpy as np

from smx_cli.core import grad as grad_mod
from smx_cli.render import xent as render_xent
from smx_cli.io import stream
from smx_cli.analysis.diagnostics import InputCounts, count_inputs
from smx_cli.cli.emit import (Messages, Payload, check_outputs, progress_bar, show,
                          stdout_console, write_files, write_stdout)
from smx_cli.errors import SmxError
from smx_cli.io import NPY_MAGIC
from smx_cli.io.labels import read_labels, read_weights
from smx_cli.cli import scale
from smx_cli.cli.options import (OUTPUT_FORMATS, column_options, input_options,
                                 message_options, resolve_formats, scheduler_option, torch_cpu_option,
                                 torch_lanes)
from smx_cli.core.emulate_torch import TORCH_DTYPES, torch_softmax_rows
from smx_cli.core.precision import result_format
from smx_cli.cli.prepare import Rows, load_rows
from smx_cli.core.xent import (INPUT_KINDS, REDUCTIONS, NotProbabilities, evaluate,
                               evaluate_blocks)
from smx_cli.cli import xent_lm


@click.command("xent", epilog="""\b
PyTorch semantics (torch.nn.functional.cross_entropy): --reduction,
--label-smoothing, --weight and --ignore-index mean what they mean there,
including how a weighted, smoothed mean divides by the target classes'
weights. Labels are class indices (integers, or class names from the
logits' header) or an N x C matrix of probability targets.

\b
Examples:
  smx xent logits.npy --labels labels.npy
  smx xent logits.csv --labels labels.csv --worst 5
  smx xent logits.csv --label-column label --label-smoothing 0.1
  smx xent logits.npy --labels y.npy --grad --rows 3 --grad-out grad.npy
  smx xent logits.npy --labels y.npy -o losses.csv
  smx xent samples/scores.csv --label-column label --id-column name \\
      -o losses.npz
  smx xent logits.npy --labels labels.npy --check-grad
  smx xent samples/lm_logits.safetensors --labels samples/lm_ids.safetensors \\
      --shift-labels --vocab samples/lm_vocab.txt

\b
N-d logits: PyTorch's K-dim cross-entropy with the class axis given by
--class-axis (default: the last, as language models write (batch, tokens,
vocab)); labels have the logits' shape without it. With (batch, tokens)
labels a sequence report follows: per sequence tokens, mean NLL,
perplexity, bits per token, accuracy; the worst tokens; and the corpus
perplexity exp(total NLL / total tokens).""")
@input_options
@click.option("--labels", "labels_path", metavar="FILE",
              help="True labels: one class index or class name per line (CSV/TSV/NPY), or "
                   "an N x C matrix of probability targets")
@click.option("--label-column", metavar="NAME|INDEX",
              help="Take the labels from this column of the logits file instead")
@click.option("--id-column", metavar="NAME|INDEX",
              help="A column of FILE that names the samples (any text): shown in the "
                   "tables and panel, and written with every sample")
@column_options
@click.option("--reduction", type=click.Choice(REDUCTIONS), default="mean", show_default=True,
              help="Reduce the per-sample losses: their (weighted) mean, sum, or none")
@click.option("--dtype", "emulate_dtype", type=click.Choice(TORCH_DTYPES), default=None,
              help="Reproduce a framework run: the logits as a tensor of this type through "
                   "PyTorch's CPU log_softmax, bit for bit (a NaN loss stays NaN)")
@torch_cpu_option
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
              help="Write the per-sample records to FILE; its extension decides the format: "
                   ".csv/.tsv (a typed column per field), .json (the summary and a list of "
                   "records), .npz (one array per field), .npy (one structured array)")
@click.option("--format", "fmt", type=click.Choice(["table", *OUTPUT_FORMATS]), default=None,
              help="Format of stdout [default: table]; with -o it must match FILE's "
                   "extension")
@click.option("--strict", is_flag=True, help="Exit 1 when a loss is NaN or inf")
@message_options(panel="summary", table="per-sample")
@click.option("--check-grad", is_flag=True,
              help="Check dL/dlogits (with these options) against central finite differences "
                   "in float64 on a sample of rows; exit 1 if they disagree")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Worker threads [default: the machine's cores]")
@click.option("-t", "--temperature", type=float, default=1.0, show_default=True,
              help="Divide the logits by T > 0 first (e.g. the T of smx calibrate "
                   "--save-temperature FILE: --temperature \"$(cat FILE)\")")
@xent_lm.lm_options
@scheduler_option
def xent_cmd(file, delimiter, header, key, axis, labels_path, label_column, id_column, columns,
             drop_columns, reduction,
             emulate_dtype, torch_cpu, label_smoothing, weight, ignore_index, input_kind, worst, max_rows, show_grad,
             grad_out, output, fmt, strict, summary_only, quiet, verbose, check_grad, threads, temperature, class_axis,
             shift_labels, pad_id, vocab_path, scheduler=None):
    """Cross-entropy of the logits in FILE against the true labels.

    Reports each sample's loss, predicted class, p(true) and margin, and a
    summary: the reduced loss, accuracy, top-5 accuracy, mean entropy,
    perplexity and ignored samples. Never log(softmax(x)): a confidently
    correct sample keeps its tiny true loss, a confidently wrong one a finite
    large loss. A 2-D NPY file is read in row blocks (memory does not grow
    with it) unless --grad, --grad-out or --check-grad need the whole array.
    """
    if scheduler:
        xent_lm.refuse_with_scheduler(class_axis, shift_labels, pad_id, vocab_path)
        return scale.run("xent", locals())
    if not 0.0 <= label_smoothing <= 1.0:
        raise click.BadParameter("must be in [0, 1]", param_hint="'--label-smoothing'")
    if not 0.0 < temperature < math.inf:
        raise click.BadParameter("must be a finite number > 0", param_hint="'--temperature'")
    if temperature != 1.0 and input_kind != "logits":
        raise click.UsageError("--temperature divides logits; it needs --input-kind logits")
    if (labels_path is None) == (label_column is None):
        raise click.UsageError("give exactly one of --labels FILE or --label-column NAME|INDEX")
    if file == "-" and labels_path == "-":
        raise click.UsageError("FILE and --labels cannot both be - (standard input)")
    weight_file = weight if weight and os.path.exists(weight) else None
    # every output checked before any work (places, devices, inputs: exit 1), then
    # their formats (the extension decides; unknown or conflicting: exit 2)
    check_outputs([(output, "npy"), (grad_out, None)], (file, labels_path, weight_file))
    out_fmt, stdout_fmt = resolve_formats(output, fmt, OUTPUT_FORMATS)
    data_on_stdout = stdout_fmt not in ("table", "none")
    picked = id_column is not None or columns is not None or drop_columns is not None
    want_grad = bool(show_grad or grad_out)
    if torch_cpu != "auto" and not emulate_dtype:
        raise click.UsageError("--torch-cpu chooses the kernels --dtype reproduces: add --dtype")
    if emulate_dtype and (want_grad or check_grad or input_kind != "logits"):
        raise click.UsageError("--dtype reproduces the forward loss of logits: drop --grad, "
                               "--grad-out, --check-grad and --input-kind")
    opts = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
                input_kind=input_kind)
    msgs = Messages(quiet, verbose)  # messages beside the data go to stderr
    if xent_lm.wants_nd(file, key, label_column, class_axis, shift_labels, pad_id, vocab_path,
                        picked):
        return xent_lm.run_nd(file=file, key=key, axis=axis, class_axis=class_axis,
                              labels_path=labels_path, weight=weight, opts=opts, worst=worst,
                              max_rows=max_rows, output=output,
                              fmt=out_fmt or (stdout_fmt if data_on_stdout else None),
                              strict=strict,
                              threads=threads, shift=shift_labels, pad_id=pad_id,
                              vocab_path=vocab_path, want_grad=want_grad or check_grad,
                              temperature=temperature, msgs=msgs, summary_only=summary_only)

    shape = _streamable(file, axis, key, label_column,
                        want_grad or check_grad or bool(emulate_dtype) or picked)
    ids = None
    if shape is not None:
        res, source, dtype, counts, weights = _streamed(file, shape, labels_path, weight, opts,
                                                        threads, temperature)
        class_names = None
        checks = None
    else:
        rows = _load(file, delimiter, header, key, axis, label_column, id_column, columns,
                     drop_columns)
        labels, ids = rows.labels, rows.ids
        x2 = rows.x2
        source = rows.loaded.source
        class_names = rows.class_names
        dtype = x2.dtype
        if temperature != 1.0:
            x2 = np.asarray(x2, dtype=np.float64) / temperature
        if emulate_dtype:
            x2, opts["input_kind"] = (_torch_log_probs(x2, emulate_dtype, torch_lanes(torch_cpu)),
                                      "log-probs")
        if label_column is None:
            labels = read_labels(labels_path, class_names=class_names)
        labels_source = labels_path or f"{source} column {label_column}"
        weights = read_weights(weight, x2.shape[1]) if weight else None
        try:
            res = evaluate(x2, labels, weight=weights, want_grad=want_grad, threads=threads,
                           **opts)
        except NotProbabilities as exc:  # the logits file is at fault, not the labels
            raise SmxError(f"{source}: {exc}") from None
        except ValueError as exc:
            raise SmxError(f"{labels_source}: {exc}") from None
        counts = _count_inputs(x2)
        checks = _check_gradient(x2, labels, res, weights, opts) if check_grad else None
        if grad_out:
            grad_payload = Payload(res.grad, class_names, {
                "command": "xent", "gradient": "dL/dlogits", "reduction": reduction,
                **({"ids": list(ids)} if ids is not None else {})},
                {"grad": res.grad}, row_ids=ids)
    n_classes = int(shape[1]) if shape is not None else int(x2.shape[1])

    fmt_eps = result_format(dtype).eps
    meta = _summary(res, source, n_classes, class_names, reduction, label_smoothing, ignore_index,
                    input_kind, weights, fmt_eps)
    meta["temperature"] = temperature
    if checks is not None:
        meta["grad_check"] = [dataclasses.asdict(c) for c in checks]
    records = per_sample_records(res, ids)
    meta["columns"] = list(records)
    meta["nonfinite_loss_rows"] = render_xent.nonfinite_rows(res).tolist()
    payload = Payload(np.zeros((0, 0)), None, meta, records=records, records_name="per_sample")
    write_files([(grad_out, grad_payload if grad_out else None, None),
                 (output, payload, out_fmt)])  # all or none
    if data_on_stdout:
        write_stdout(payload, stdout_fmt)
    # -o FILE: the data went to FILE, so stdout shows only what was asked for
    # (--worst, --grad, --check-grad, --summary) and stderr says what happened
    asked = bool(worst or show_grad or checks is not None or summary_only)
    on_screen = stdout_fmt == "table" or (stdout_fmt == "none" and asked)
    panel = None
    if on_screen or (verbose and not quiet):
        panel = render_xent.summary_panel(
            res, eps=fmt_eps, input_counts=counts, source=source,
            n_classes=n_classes, options=_options_text(reduction, label_smoothing, ignore_index,
                                                       input_kind, weights),
            smoothed=label_smoothing > 0, ids=ids)
    if on_screen:
        console = stdout_console()
        parts = []  # printed at once: piped, without trailing padding
        n = len(res.loss)
        if worst:
            order = _worst(res, worst)
            note = f"the {len(order)} highest-loss samples of {n:,}"
            title = f"worst {len(order)} samples of {source}"
        else:
            order = np.arange(min(n, max_rows))
            note = (f"{n - len(order):,} more samples not shown (--rows N, --worst K, or -o FILE)"
                    if n > len(order) else None)
            title = f"cross-entropy of {source}"
        if not summary_only:
            parts.append(render_xent.fitted_sample_table(console, res, order,
                                                          class_names=class_names, title=title,
                                                          total_note=note, ids=ids))
        if show_grad:
            fit = max(2, (console.width - 8) // 11)
            parts.append(render_xent.grad_table(res.grad, order, class_names=class_names,
                                                ids=ids, max_cols=fit,
                                                top_k=max(1, min(5, (console.width - 18) // 20)),
                                                title=f"dL/dlogits (reduction {reduction})"))
        parts.append(panel)
        if checks is not None:
            parts.append(render_xent.grad_check_panel(checks, reduction=reduction,
                                                      input_kind=input_kind))
        show(console, *parts)
    elif meta["loss_undefined"] and not strict:
        click.echo(f"Warning: {_undefined_reason(res)}", err=True)
    if checks is not None and not all(c.passed for c in checks):
        c = checks[0]
        raise SmxError(f"--check-grad: the cross-entropy gradient disagrees with finite "
                       f"differences (max |error| {c.max_abs_error:.3g}, relative "
                       f"{c.max_rel_error:.3g}; tolerance {c.atol:.3g} + {c.rtol:g} |fd|)")
    if strict:
        bad = int((~np.isfinite(res.loss) & ~res.ignored).sum())
        if bad or (reduction != "none" and not math.isfinite(res.reduced)):
            for path in (output, grad_out):  # the files are complete: say so first
                msgs.wrote(path)
            raise SmxError(f"--strict: {bad} sample loss(es) are NaN or inf"
                           if bad else f"--strict: {_undefined_reason(res)}")
    if not on_screen or stdout_fmt == "none":
        msgs.summary(render_xent.summary_line(meta), None if on_screen else panel)
    for path in (output, grad_out):
        msgs.wrote(path)


def _torch_log_probs(x2: np.ndarray, dtype: str, lanes: int | None = None) -> np.ndarray:
    """``torch.log_softmax(x.to(dtype), 1)`` as float64: what cross_entropy feeds nll_loss."""
    return torch_softmax_rows(x2, dtype, log=True, lanes=lanes).astype(np.float64)


# input bytes per streamed block: with float64 work on it, peak memory is a few times this
_STREAM_BLOCK = 16 << 20
# elements per block when counting non-finite inputs of a whole array
_COUNT_BLOCK = 1 << 20


def _load(file, delimiter, header, key, axis, label_column, id_column=None, columns=None,
          drop_columns=None) -> Rows:
    """The whole logits array as (N, C) rows; ``Rows.labels`` from --label-column (else
    None), ``Rows.ids`` from --id-column."""
    rows = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis,
                     label_column=label_column, id_column=id_column, columns=columns,
                     drop_columns=drop_columns)
    if rows.ndim > 2:
        raise SmxError(f"{rows.loaded.source}: xent takes a 2-D N x C array, got shape "
                       f"{rows.loaded.values.shape}; reshape it to rows of classes")
    return rows


def _streamable(file, axis, key, label_column, whole) -> tuple[int, int] | None:
    """The (N, C) shape when this run can read FILE in row blocks; else None.

    A 2-D NPY file (not stdin, not NPZ) with rows along its last axis, of
    integers or floats of at most 64 bits, with the labels in their own
    file, and no option that needs the whole array (``whole``: --grad,
    --grad-out, --check-grad). Anything odd (a damaged header, 0 rows or 0
    classes) takes the whole-array path, which reports it as it always has.
    """
    if file == "-" or key or label_column is not None or whole:
        return None
    try:
        if not os.path.isfile(file):
            return None
        with open(file, "rb") as fh:
            if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
                return None
        shape, dtype = stream.npy_info(file)
    except (OSError, ValueError):
        return None
    if len(shape) != 2 or axis not in (-1, 1) or 0 in shape:
        return None
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.itemsize > 8 or dtype.subdtype:
        return None
    return int(shape[0]), int(shape[1])


def _streamed(file, shape, labels_path, weight, opts, threads, temperature=1.0):
    """Cross-entropy of an NPY file read block by block: (result, source, dtype, counts, weights)."""
    n, c = shape
    labels = read_labels(labels_path)
    weights = read_weights(weight, c) if weight else None
    _, in_dtype = stream.npy_info(file)
    tally = _InputTally()
    with progress_bar(n * c * in_dtype.itemsize, "smx xent") as advance:
        def on_block(start, xb):
            tally.add(xb)
            advance(start + len(xb), n)

        blocks = ((s0, xb if temperature == 1.0 else np.asarray(xb, np.float64) / temperature)
                  for s0, _, xb in stream.iter_npy_blocks(file, block_bytes=_STREAM_BLOCK))
        try:
            res = evaluate_blocks(blocks, n, c, labels, weight=weights, threads=threads,
                                  on_block=on_block, **opts)
        except stream.StreamError as exc:
            raise SmxError(str(exc)) from None
        except NotProbabilities as exc:
            raise SmxError(f"{file}: {exc}") from None
        except ValueError as exc:
            raise SmxError(f"{labels_path}: {exc}") from None
        except OSError as exc:
            raise SmxError(f"{file}: {exc.strerror or exc}") from None
    return res, file, in_dtype.newbyteorder("="), tally.counts, weights


class _InputTally:
    """Non-finite input counts summed over row blocks (equal to one count_inputs call)."""

    def __init__(self):
        self.counts = None

    def add(self, xb) -> None:
        c = None
        if _all_finite(xb):  # the common case, without count_inputs' float64 copies
            c = InputCounts(xb.shape[0], xb.shape[1], 0, 0, 0, 0, 0, 0)
        if c is None:
            c = count_inputs(xb)
        if self.counts is None:
            self.counts = c
            return
        summed = {f.name: getattr(self.counts, f.name) + getattr(c, f.name)
                  for f in dataclasses.fields(c) if f.name != "classes"}
        self.counts = dataclasses.replace(c, **summed)


# exponent bits of the 16-bit float formats: all ones is inf or NaN
_EXP16 = {"float16": 0x7C00, "bfloat16": 0x7F80}


def _all_finite(xb) -> bool:
    """True when a float block holds no NaN or inf, checked in its own format
    (no float64 copy); False when unsure: count_inputs then counts."""
    if not xb.size:
        return False
    mask = _EXP16.get(xb.dtype.name)
    if mask is not None and xb.flags.c_contiguous:
        bits = xb.view(np.uint16)  # a 16-bit float is finite iff its exponent is not all ones
        return not np.any(np.bitwise_and(bits, mask, dtype=np.uint16) == mask)
    if xb.dtype.kind != "f":
        return False
    lo, hi = xb.min(), xb.max()  # min/max propagate NaN: both finite means all finite
    return bool(np.isfinite(lo) and np.isfinite(hi))


def _count_inputs(x2):
    """count_inputs over row blocks: no float64 copy of a big array."""
    n, c = x2.shape
    step = max(1, _COUNT_BLOCK // max(1, c))
    tally = _InputTally()
    for s in range(0, max(n, 1), step):
        tally.add(x2[s:s + step])
    return tally.counts


def _check_gradient(x2, labels, res, weights, opts):
    """--check-grad: the gradient with the user's options against finite differences.

    The gradient is with respect to the logits; for --input-kind log-probs
    those are the log-probabilities themselves, for probs their logarithm.
    A mean divides each row's loss by the batch's denominator.
    """
    z = np.asarray(x2, dtype=np.float64)
    if opts["input_kind"] == "probs":
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(z)
    mean = opts["reduction"] == "mean" and res.denominator > 0
    return grad_mod.check_grad(
        z, labels=labels, functions=("xent",),
        xent_options={"weight": weights, "ignore_index": opts["ignore_index"],
                      "label_smoothing": opts["label_smoothing"]},
        xent_divisor=res.denominator if mean else 1.0)


#: the per-sample record's fields (``id`` follows ``row`` with --id-column): row index,
#: true class (-1: ignored), predicted class (-1: undefined, a NaN row), p(true), loss,
#: margin, entropy (nats), and the flags correct, top5 and ignored
PER_SAMPLE_COLUMNS = ["row", "label", "predicted", "p_true", "loss", "margin", "correct",
                      "ignored", "top5", "entropy"]


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


def per_sample_records(res, ids=None) -> dict[str, np.ndarray]:
    """Each sample's record as named columns, each in its own type.

    Integers (row, label, predicted) are int64, flags (correct, ignored,
    top5) bool, the rest float64; ``id`` (text) follows ``row`` when given.
    A label of -1 marks an ignored sample, a predicted class of -1 a row
    whose prediction is undefined (NaN in its logits).

    Examples
    --------
    >>> from smx_cli.core.xent import evaluate
    >>> r = per_sample_records(evaluate(np.array([[2.0, 0.0], [np.nan, 1.0]]), [0, 1]))
    >>> r["predicted"].tolist(), r["correct"].tolist(), r["label"].dtype.name
    ([0, -1], [True, False], 'int64')
    """
    n = len(res.loss)
    undefined = render_xent.undefined_prediction(res)
    out = {"row": np.arange(n, dtype=np.int64)}
    if ids is not None:
        out["id"] = np.asarray([str(t) for t in ids], dtype=str) if n else np.zeros(0, "U1")
    out.update({
        "label": np.asarray(res.true_class, dtype=np.int64),
        "predicted": np.where(undefined, -1, res.predicted).astype(np.int64),
        "p_true": np.asarray(res.p_true, dtype=np.float64),
        "loss": np.asarray(res.loss, dtype=np.float64),
        "margin": np.asarray(res.margin, dtype=np.float64),
        "correct": np.asarray(res.correct, dtype=bool),
        "ignored": np.asarray(res.ignored, dtype=bool),
        "top5": np.asarray(res.top5, dtype=bool),
        # a NaN row has no distribution, so no entropy (the kernels leave 0 there)
        "entropy": np.where(undefined, np.nan, np.asarray(res.entropy, dtype=np.float64)),
    })
    return out


def _finite_or_none(v: float):
    """A JSON value: the number; an infinity as "inf"/"-inf" (as in the arrays); NaN as null."""
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _summary(res, source, n_classes, class_names, reduction, eps, ignore_index, input_kind,
             weights, fmt_eps) -> dict:
    return {
        "command": "xent",
        "source": source,
        "samples": res.n_samples,
        "classes": int(n_classes),
        "class_names": class_names,
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
        "top5_accuracy": _finite_or_none(res.top5_accuracy) if n_classes > 5 else None,
        "mean_entropy": _finite_or_none(res.mean_entropy),
        "perplexity": _finite_or_none(res.perplexity),
        "ignored": res.n_ignored,
        "vanished_gradients": res.vanished(fmt_eps),
        "vanished_eps": fmt_eps,
        "nonfinite_losses": res.n_nonfinite,
        # what computed the per-sample numbers: "numpy" or the compiled core
        "engine": getattr(res, "engine", "numpy"),
    }
