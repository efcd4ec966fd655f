"""``smx softmax``: probabilities (or log-probabilities) with diagnostics."""
from __future__ import annotations

import os

import click
import numpy as np
from rich.console import Console
from rich.measure import Measurement

from smx_cli.core import grad as grad_mod
from smx_cli import io as io_mod
from smx_cli.render import tables as render
from smx_cli.render import grad as render_grad
from smx_cli.io import stream
from smx_cli.core import registry as variants
from smx_cli.analysis.diagnostics import Accumulator, diagnose
from smx_cli.cli.emit import (Payload, check_outputs, print_progressively, progress_bar,
                          stdout_console, write_files, write_stdout)
from smx_cli.errors import SmxError
from smx_cli.io import NPY_MAGIC, ZIP_MAGIC, output_format, read_array
from smx_cli.core.kernels import FAST_ULP_NOTE
from smx_cli.io.masks import read_mask
from smx_cli.cli import scale
from smx_cli.cli.options import (display_options, input_options, numerics_options, output_options,
                                 scheduler_option)
from smx_cli.cli.prepare import load_rows
from smx_cli.core.softmax import MASKED_POLICIES, as_rows, from_rows

_VARIANT_LINES = "\n".join(f"  {name:<9} {text}"
                           for name, text in variants.HELP.items())


@click.command("softmax", epilog=f"""\b
Variants:
{_VARIANT_LINES}

\b
Without --dtype, stable/log/online are accurate to within 4 ulps of the
exact value in the input's float format (float64 for CSV); naive and lse
run as written in that format. --dtype rounds every step to the format.
A row with +inf shares its mass among the +inf entries; a NaN makes its
row NaN; a fully masked row (all -inf) gives NaN, or 0 with --masked zeros.
With --mask FILE (true = keep), masked classes get 0 and a fully masked row
gives zeros, never NaN. hardmax splits ties evenly. The sparse maps under
--dtype round their input and output to the format (thresholds in float64).

\b
Gradients: --grad shows each displayed row's Jacobian (the top-k block when
wide) and a saturation panel; --upstream G gives the vector-Jacobian product
g J without forming J (--grad-out writes it); --check-grad compares the
gradients with central finite differences in float64.

\b
Examples:
  smx softmax samples/seeds.csv
  smx softmax samples/seeds.csv --dtype float16 --variant naive
  smx softmax samples/mnist_lenet_logits.npy --top-k 3 --rows 5
  smx softmax - --format csv < logits.csv > probs.csv
  smx softmax logits.npy -o probs.npy
  smx softmax samples/seeds.csv --variant sparsemax
  smx softmax samples/seeds.csv --variant gumbel --samples 3 --seed 0 --hard
  smx softmax samples/seeds.csv --grad --check-grad""")
@input_options
@click.option("--variant", type=click.Choice(variants.ALL_VARIANTS), default="stable",
              show_default=True, help="Which member of the softmax family (see below)")
@numerics_options
@click.option("--masked", type=click.Choice(MASKED_POLICIES), default="nan", show_default=True,
              help="Result for a fully masked row (all -inf): NaN like PyTorch, or zeros")
@click.option("--mask", "mask_path", metavar="FILE",
              help="Keep-mask (N x C, or one row for all): true keeps a class, false masks it")
@click.option("--alpha", type=float, default=1.5, show_default=True,
              help="entmax: alpha > 1 (2 = sparsemax, -> 1 = softmax)")
@click.option("--tau", type=float, default=1.0, show_default=True,
              help="gumbel: the Gumbel-softmax temperature")
@click.option("--hard", is_flag=True, help="gumbel: one-hot samples (straight-through)")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="gumbel: samples per row")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="gumbel: random seed (an integer >= 0) for reproducible draws")
@click.option("--grad", "show_grad", is_flag=True,
              help="Show Jacobians of the displayed rows and the saturation panel")
@click.option("--grad-rows", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many rows' Jacobians --grad shows")
@click.option("--upstream", metavar="FILE",
              help="dL/d(output), shaped like the logits: show the vector-Jacobian product")
@click.option("--grad-out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the vector-Jacobian product of --upstream to FILE")
@click.option("--check-grad", is_flag=True,
              help="Check the gradients against central finite differences (float64)")
@click.option("--fast", is_flag=True,
              help="Opt-in speed over accuracy (stable and log): " + FAST_ULP_NOTE)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Worker threads [default: the machine's cores]")
@output_options
@display_options
@scheduler_option
def softmax_cmd(file, delimiter, header, key, axis, variant, dtype, temperature, masked,
                mask_path, alpha, tau, hard, samples, seed, show_grad, grad_rows, upstream,
                grad_out, check_grad, fast, threads, output, fmt, strict, max_rows, top_k, digits,
                scheduler=None):
    """Softmax of each row of logits in FILE (CSV, TSV, NPY, NPZ, or - for stdin).

    Shows the probabilities (log-probabilities for --variant log) with
    a diagnostics panel: NaN/inf in the input, exp overflow and underflow,
    NaN produced, rows that do not sum to 1.
    """
    if scheduler:
        return scale.run("softmax", locals())
    if not temperature > 0 or temperature == float("inf"):
        raise click.BadParameter("must be a finite number > 0", param_hint="'--temperature'")
    if grad_out and not upstream:
        raise click.UsageError("--grad-out writes the vector-Jacobian product: give --upstream FILE")
    if variants.get(variant).needs_alpha and not (alpha > 1 and alpha != float("inf")):
        raise click.BadParameter("must be a finite number > 1", param_hint="'--alpha'")
    if not (tau > 0 and tau != float("inf")):
        raise click.BadParameter("must be a finite number > 0", param_hint="'--tau'")
    check_outputs([(output, fmt), (grad_out, None)], (file, mask_path, upstream))
    opts = variants.VariantOptions(alpha=alpha, tau=tau, hard=hard, samples=samples, seed=seed)
    source_kind = _streamable(file, axis, key, output, fmt, variant, mask_path,
                              show_grad or upstream or check_grad)
    if source_kind:
        return _streamed(file, source_kind, variant, temperature, dtype, masked, opts, fast,
                         threads, output, fmt, strict, max_rows, top_k, digits, delimiter, header)
    rows = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis)
    mask = read_mask(mask_path, rows.x2.shape) if mask_path else None
    try:
        run = variants.run(rows.x2, variant, temperature=temperature, dtype=dtype, masked=masked,
                           mask=mask, options=opts, fast=fast, threads=threads)
    except ValueError as exc:
        raise SmxError(str(exc)) from None
    result = run.result
    lead_shape = rows.lead_shape if run.samples == 1 else (run.samples,) + tuple(rows.lead_shape)
    diag = diagnose(run.logits, result, sparse=variants.exact_zeros(variant, opts))
    payload = _payload(rows, result, diag, run)
    payload.digits = digits
    vjp = grad_payload = None
    if upstream:
        vjp = _vjp(upstream, rows, run, variant, temperature, opts)
        if grad_out:
            grad_payload = Payload(vjp, rows.class_names,
                                   {"command": "softmax", "gradient": "upstream @ Jacobian",
                                    "variant": variant}, {"vjp": vjp},
                                   array=from_rows(vjp, rows.moved_shape, rows.axis, rows.ndim))
    write_files([(grad_out, grad_payload, None), (output, payload, fmt)])  # all or none
    if fmt and fmt != "table" and not output:
        write_stdout(payload, fmt)
    else:
        console = stdout_console()
        _show_values(console, result.values, run.logits, result, variant, temperature,
                     rows.loaded.source, rows.class_names, lead_shape, max_rows, top_k, digits)
        console.print(render.diagnostics_panel(diag, rows.loaded.source, support=run.support))
        if show_grad or upstream or check_grad:
            _show_gradients(console, rows, run, variant, temperature, dtype, opts, lead_shape,
                            show_grad, grad_rows, vjp, check_grad, max_rows)
        for path in (output, grad_out):
            if path:
                console.print(f"wrote {path}", style="dim")
    if strict:
        _check_strict(diag)


def _check_strict(diag) -> None:
    if diag.output_nan:
        raise SmxError(f"--strict: the result holds NaN in {diag.output_nan_rows} row(s)")
    if diag.exp_overflow or diag.sum_overflow_rows:
        raise SmxError("--strict: exp overflowed to inf while computing")


def _show_values(console, values, logits, result, variant, temperature, source, class_names,
                 lead_shape, max_rows, top_k, digits) -> None:
    """The values table (all classes when they fit, else each row's top k)."""
    kind = result.kind
    what = "log_softmax" if kind == "logprob" else variants.get(variant).title
    t = f"x/{temperature:g}" if temperature != 1 else "x"
    title = f"{what}({t}) of {source}"
    width = values.shape[1]
    common = dict(kind=kind, tiny=result.fmt.smallest_normal, class_names=class_names,
                  lead_shape=lead_shape, max_rows=max_rows, title=title,
                  digits=digits if digits is not None else 6)
    # the fit is judged on the first rows only: measuring every shown row of up
    # to six candidate tables took minutes for --rows 20000
    probe = dict(common, max_rows=min(max_rows, _FIT_ROWS))
    table = None
    why = f"{width} classes"
    if top_k is None and width <= render.DEFAULT_MAX_COLS:
        table = render.values_table(values, logits, **probe)
        if _needed_width(console, table) > console.width:
            # rich would squeeze every cell to "0.9…": show fewer columns instead
            table = None
            why = f"{width} classes do not fit in {console.width} columns"
    if table is not None:
        table = render.values_table(values, logits, **common)
    elif top_k is not None:
        table = render.topk_table(values, logits, top_k, **common)
    else:
        # the largest k <= DEFAULT_TOP_K whose table fits the terminal
        for k in range(render.DEFAULT_TOP_K, 0, -1):
            reason = f"{why}: showing each row's top {k} (--top-k K to choose)"
            table = render.topk_table(values, logits, k, reason=reason, **probe)
            if _needed_width(console, table) <= console.width:
                break
        table = render.topk_table(values, logits, k, reason=reason, **common)
    print_progressively(console, table)  # | head stops the rendering early


# rows of a candidate table measured to see whether it fits the terminal
_FIT_ROWS = 64
# input bytes per streamed block: peak memory is a few times this
_STREAM_BLOCK = 32 << 20
# CSV/TSV inputs at least this big are parsed and written in row blocks
_TEXT_STREAM_BYTES = 16 << 20
_TEXT_BLOCK = 8 << 20


def _streamable(file, axis, key, output, fmt, variant, mask_path, gradients) -> str | None:
    """Whether this run can stream its input in row blocks (bounded memory): how.

    Row-local work only (no mask or gradients, no Gumbel draws, whose random
    stream is per call) along the last axis, from a file (not stdin):
    ``"npy"`` for an NPY file with output to .npy or none; ``"text"`` for a
    CSV/TSV file of at least 16 MB with output to .csv/.tsv/.npy or none.
    Anything else returns None and takes the whole-array path.
    """
    if file == "-" or mask_path or gradients or variants.get(variant).stochastic or key:
        return None
    if fmt not in (None, "table") and not output:
        return None
    out_fmt = output_format(output, fmt if fmt != "table" else None) if output else None
    try:
        if not os.path.isfile(file):
            return None
        with open(file, "rb") as fh:
            magic = fh.read(6)
        if magic == NPY_MAGIC:
            shape, dtype = stream.npy_info(file)
        elif magic.startswith(ZIP_MAGIC[:4]):
            return None
        else:
            big = os.path.getsize(file) >= _TEXT_STREAM_BYTES
            ok = big and out_fmt in (None, "csv", "tsv", "npy") and axis in (-1, 1)
            return "text" if ok else None
    except (OSError, ValueError):
        return None  # the whole-array reader reports it properly
    if out_fmt not in (None, "npy", "csv", "tsv"):
        return None
    if dtype.hasobject or dtype.kind not in "fiu" or len(shape) < 1:
        return None
    return "npy" if axis in (-1, len(shape) - 1) else None


def _streamed(file, source_kind, variant, temperature, dtype, masked, opts, fast, threads,
              output, fmt, strict, max_rows, top_k, digits, delimiter, header) -> None:
    """Softmax of a file block by block: output, diagnostics and the shown rows."""
    if source_kind == "npy":
        shape, in_dtype = stream.npy_info(file)
    acc = None
    head_x, head_y = [], []
    kept = [0]
    state = {}

    def block(xb):
        nonlocal acc
        try:
            run = variants.run(xb, variant, temperature=temperature, dtype=dtype, masked=masked,
                               options=opts, fast=fast, threads=threads)
        except ValueError as exc:
            raise SmxError(str(exc)) from None
        res = run.result
        if acc is None:
            acc = Accumulator(variant, res.fmt, res.kind, res.emulated,
                              sparse=variants.exact_zeros(variant, opts))
            state["result"] = res
        acc.add(run.logits, res.values, res.stats)
        if kept[0] < max_rows:
            take = min(max_rows - kept[0], len(xb))
            head_x.append(np.array(run.logits[:take]))
            head_y.append(np.array(res.values[:take]))
            kept[0] += take
        support = run.support
        if support is not None:
            state.setdefault("support", []).append(support)
        return res.values

    if source_kind == "text":
        names = _stream_text(file, output, fmt, block, delimiter, header, digits)
        shape = (acc.rows if acc else 0, acc.classes if acc else 1)
        return _show_streamed(file, acc, state, head_x, head_y, shape, names, variant,
                              temperature, output, strict, max_rows, top_k, digits)
    total_bytes = int(np.prod(shape, dtype=np.int64)) * in_dtype.itemsize
    with progress_bar(total_bytes, "smx") as advance:
        try:
            if output and output_format(output, fmt if fmt != "table" else None) != "npy":
                # NPY -> CSV/TSV: the rows of the last axis, as the whole-array path writes them
                results = (block(xb) for _, _, xb in stream.iter_npy_blocks(
                    file, block_bytes=_STREAM_BLOCK))
                _write_blocks(output, fmt, results, None, digits, total_bytes * 2)
            elif output:
                stream.stream_npy(file, output, block, progress=advance, block_bytes=_STREAM_BLOCK)
            else:
                for s0, n, xb in stream.iter_npy_blocks(file, block_bytes=_STREAM_BLOCK):
                    block(xb)
                    advance(s0 + len(xb), n)
        except stream.StreamError as exc:
            raise SmxError(str(exc)) from None
        except OSError as exc:
            raise SmxError(f"{output or file}: {exc.strerror or exc}") from None
    return _show_streamed(file, acc, state, head_x, head_y, shape, None, variant, temperature,
                          output, strict, max_rows, top_k, digits)


def _stream_text(file, output, fmt, block, delimiter, header, digits):
    """Feed a big CSV/TSV file to ``block`` in row blocks; write the output as it comes."""
    state = {"names": None}

    def results():
        for values, names in io_mod.iter_text_blocks(file, delimiter=delimiter, header=header,
                                                     block_bytes=_TEXT_BLOCK):
            state["names"] = names
            yield block(values)

    if not output:
        for _ in results():
            pass
        return state["names"]
    _write_blocks(output, fmt, results(), lambda: state["names"], digits, os.path.getsize(file))
    return state["names"]


def _write_blocks(output, fmt, results, columns, digits, size_hint):
    out_fmt = output_format(output, fmt if fmt != "table" else None)
    try:
        stream.write_row_blocks(output, out_fmt, results, columns=columns, digits=digits,
                                size_hint=size_hint)
    except OSError as exc:
        raise SmxError(f"{output}: {exc.strerror or exc}; nothing was written") from None


def _show_streamed(file, acc, state, head_x, head_y, shape, names, variant, temperature, output,
                   strict, max_rows, top_k, digits) -> None:
    diag = acc.result()
    console = stdout_console()
    res = state["result"]
    values = np.concatenate(head_y) if head_y else np.zeros((0, shape[-1] if shape else 1))
    logits = np.concatenate(head_x) if head_x else values
    n_rows = diag.inputs.rows
    lead = tuple(shape[:-1]) if len(shape) > 1 else None
    _show_values(console, values, logits, res, variant, temperature, file, names, lead,
                 max_rows, top_k, digits)
    if n_rows > len(values):
        console.print(f"{n_rows - len(values):,} more rows not shown (--rows N to see more, "
                      "-o FILE for all); the file was streamed in row blocks", style="dim")
    support = np.concatenate(state["support"]) if "support" in state else None
    console.print(render.diagnostics_panel(diag, file, support=support))
    if output:
        console.print(f"wrote {output}", style="dim")
    if strict:
        _check_strict(diag)


def _needed_width(console: Console, table) -> int:
    """Columns ``table`` takes unsqueezed (rich clamps measures to the terminal)."""
    return Measurement.get(console, console.options.update_width(10**5), table).maximum


def _vjp(upstream, rows, run, variant, temperature, opts):
    """The VJP of --upstream, validated against the logits' layout."""
    g_loaded = read_array(upstream)
    try:
        g2, _, _ = as_rows(g_loaded.values, rows.axis if rows.ndim > 1 else -1)
    except ValueError as exc:
        raise SmxError(f"{g_loaded.source}: {exc}") from None
    if g2.shape != rows.x2.shape or g_loaded.values.ndim != max(rows.ndim, 1) and rows.ndim > 0:
        raise SmxError(f"{g_loaded.source}: upstream gradient has shape {g_loaded.values.shape}, "
                       f"the logits {rows.loaded.values.shape}: they must match")
    if run.samples > 1:
        raise SmxError("--upstream takes one Gumbel sample per row: drop --samples")
    return variants.vjp(variant, run.logits, run.result.values, g2, temperature=temperature,
                        options=opts, soft=run.soft)


def _show_gradients(console, rows, run, variant, temperature, dtype, opts, lead_shape,
                    show_grad, grad_rows, vjp, check_grad, max_rows):
    values = run.result.values
    x = run.logits
    n, c = values.shape
    if show_grad:
        kind = "log" if variants.get(variant).log_output else "softmax"
        fit = max(2, min(12, (console.width - 10) // 10))
        for i in range(min(n, grad_rows)):
            p_row = np.asarray(values[i], dtype=np.float64)
            if kind == "log":
                p_row = np.exp(p_row)
            if run.soft is not None:
                p_row = run.soft[i]
            idx = np.arange(c) if c <= fit else np.sort(np.argsort(-p_row, kind="stable")[:min(fit, 5)])
            jac = variants.jacobian_block(variant, p_row, idx, temperature=temperature, options=opts)
            largest, fro = variants.jacobian_summary(variant, p_row, temperature=temperature,
                                                     options=opts)
            console.print(render_grad.jacobian_table(
                jac, idx, row=i, lead_shape=lead_shape, class_names=rows.class_names, kind=kind,
                largest=largest, frobenius=fro, total_classes=c))
        if n > grad_rows:
            console.print(f"Jacobians shown for the first {grad_rows} of {n:,} rows "
                          "(--grad-rows N for more)", style="dim")
    if vjp is not None:
        console.print(render_grad.matrix_table(
            vjp, title="vector-Jacobian product: upstream @ J", class_names=rows.class_names,
            lead_shape=lead_shape, max_rows=max_rows))
    sat = None
    if not variants.get(variant).sparse_output:
        sat = grad_mod.saturation(x, variants.get(variant).gradient_scale(temperature, opts), dtype)
    checks = variants.check_gradients(variant, x, temperature=temperature, options=opts) \
        if check_grad else None
    if sat is not None:
        console.print(render_grad.gradient_panel(sat, checks, lead_shape=lead_shape))
    elif checks:
        console.print(render_grad.gradient_panel(
            grad_mod.saturation(x, temperature, dtype), checks, lead_shape=lead_shape))
    if checks and not all(ch.passed for ch in checks):
        raise SmxError("--check-grad: an analytic gradient disagrees with finite differences")


def _payload(rows, result, diag, run) -> Payload:
    if run.samples > 1:
        per = result.values.reshape((run.samples,) + rows.x2.shape)
        values = np.stack([from_rows(v, rows.moved_shape, rows.axis, rows.ndim) for v in per])
    else:
        values = from_rows(result.values, rows.moved_shape, rows.axis, rows.ndim)
    meta = {
        "command": "softmax",
        "source": rows.loaded.source,
        "variant": result.variant,
        "kind": result.kind,
        "dtype": result.fmt.name,
        "emulated": result.emulated,
        "temperature": result.temperature,
        "shape": list(values.shape),
        "axis": rows.axis,
        "classes": rows.class_names,
        "diagnostics": diag.to_dict(),
        "support": run.support.tolist() if run.support is not None else None,
        "samples": run.samples,
    }
    matrix = values if values.ndim >= 1 else values.reshape(1)
    if run.samples > 1:
        matrix = result.values  # sample-major rows for the text formats
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    columns = rows.class_names if rows.axis == rows.ndim - 1 or rows.ndim < 2 else rows.row_names
    if rows.ndim == 2 and rows.axis == 0:
        columns = None
    return Payload(matrix, columns, meta, {"values": result.values}, array=values)
