"""``smx softmax``: probabilities (or log-probabilities) with diagnostics.

Parses the options, runs :mod:`smx_cli.analysis.pipeline` (one block for an
array in memory, many for a streamed file), and prints what it returns.
"""
from __future__ import annotations

import textwrap

import click
import numpy as np
from rich.text import Text

from smx_cli.analysis import pipeline
from smx_cli.analysis.gradients import gradient_report, upstream_vjp
from smx_cli.cli.emit import (Messages, Payload, check_outputs, progress_bar, show,
                              stdout_console, write_files, write_stdout)
from smx_cli.cli.options import (OUTPUT_FORMATS, column_options, display_options,
                                 input_options, numerics_options, torch_cpu_option,
                                 torch_lanes,
                                 output_options, resolve_formats, resolve_input)
from smx_cli.cli.prepare import label_like_columns, load_rows
from smx_cli.core import registry as variants
from smx_cli.core.kernels import FAST_ULP_NOTE
from smx_cli.core.softmax import MASKED_POLICIES, from_rows
from smx_cli.errors import SmxError
from smx_cli.io import read_array
from smx_cli.io.masks import read_mask
from smx_cli.render import grad as render_grad
from smx_cli.render import tables as render
from smx_cli.cli import scale
from smx_cli.cli.options import scheduler_option

_VARIANT_LINES = "\n".join(
    textwrap.fill(text, 76, initial_indent=f"  {name:<9} ", subsequent_indent=" " * 12)
    for name, text in variants.HELP.items())


@click.command("softmax", epilog=f"""\b
Variants:
{_VARIANT_LINES}

\b
Without --dtype, stable/log/online are accurate to within 4 ulps of the
exact value in the input's float format (float64 for CSV); naive and lse
run as written in that format. --dtype rounds every step to the format;
add --emulate torch for what PyTorch's CPU kernels do (16-bit storage,
float32 arithmetic: bitwise torch.softmax / torch.log_softmax).
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
  smx softmax samples/seeds.csv --dtype float16 --emulate torch
  smx softmax samples/mnist_lenet_logits.npy --top-k 3 --rows 5
  smx softmax --format csv < logits.csv > probs.csv
  smx softmax logits.npy -o probs.npy
  smx softmax samples/seeds.csv --variant sparsemax
  smx softmax samples/seeds.csv --variant gumbel --samples 3 --seed 0 --hard
  smx softmax samples/seeds.csv --grad --check-grad""")
@input_options(file_required=False)
@click.option("--label-column", metavar="NAME|INDEX",
              help="A column of FILE that holds labels, not logits: left out")
@click.option("--id-column", metavar="NAME|INDEX",
              help="A column of FILE that names the rows (any text): shown and written "
                   "with every row")
@column_options
@click.option("--variant", type=click.Choice(variants.ALL_VARIANTS), default="stable",
              show_default=True, metavar="NAME",
              help="Which member of the softmax family (see Variants below)")
@numerics_options
@click.option("--emulate", type=click.Choice(pipeline.EMULATIONS), default="strict",
              show_default=True,
              help="With --dtype: round every operation (strict), or do what PyTorch's "
                   "CPU kernels do (torch: 16-bit storage, float32 arithmetic)")
@torch_cpu_option
@click.option("--masked", type=click.Choice(MASKED_POLICIES), default="nan", show_default=True,
              help="Result for a fully masked row (all -inf): NaN like PyTorch, or zeros")
@click.option("--mask", "mask_path", metavar="FILE",
              help="Keep-mask (N x C, or one row for all): true keeps a class")
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
def softmax_cmd(file, delimiter, header, key, axis, label_column, id_column, columns,
                drop_columns, variant, dtype, temperature, emulate, torch_cpu, masked,
                mask_path, alpha, tau, hard, samples, seed, show_grad, grad_rows, upstream,
                grad_out, check_grad, fast, threads, output, fmt, strict, summary_only, quiet,
                verbose, max_rows, top_k, digits, scheduler=None):
    """Softmax of each row of logits in FILE (CSV, TSV, NPY, NPZ; - or no FILE: stdin).

    Shows the probabilities (log-probabilities for --variant log) with
    a diagnostics panel: NaN/inf in the input, exp overflow and underflow,
    NaN produced, rows that do not sum to 1.
    """
    file = resolve_input(file)
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
    if emulate == "torch" and dtype is None:
        raise click.UsageError("--emulate torch needs --dtype float16, bfloat16 or float32")
    if torch_cpu != "auto" and emulate != "torch":
        raise click.UsageError("--torch-cpu chooses the kernels --emulate torch reproduces: "
                               "add --emulate torch (and --dtype)")
    # every output checked before any work (places, devices, inputs: exit 1), then
    # their formats (the extension decides; unknown or conflicting: exit 2)
    check_outputs([(output, "npy"), (grad_out, "npy")], (file, mask_path, upstream))
    out_fmt, stdout_fmt = resolve_formats(output, fmt, OUTPUT_FORMATS)
    if grad_out:
        resolve_formats(grad_out, None)
    opts = variants.VariantOptions(alpha=alpha, tau=tau, hard=hard, samples=samples, seed=seed)
    job = pipeline.SoftmaxJob(variant, temperature, dtype, emulate, masked, None, opts, fast,
                              threads, lanes=torch_lanes(torch_cpu))
    try:
        job.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    gradients = bool(show_grad or upstream or check_grad)
    msgs = Messages(quiet, verbose)
    keep = max_rows if max(grad_rows if show_grad else 0, 0) <= max_rows else grad_rows
    how = pipeline.streamable(file, axis=axis, key=key, out_fmt=out_fmt, job=job,
                              whole_array_needed=gradients
                              or bool(label_column or id_column or mask_path)
                              or columns is not None or drop_columns is not None
                              or stdout_fmt not in ("table", "none"))
    rows = None
    if how:
        streamed = pipeline.stream_file(file, how, job, keep, output=output, out_fmt=out_fmt,
                                        delimiter=delimiter, header=header, digits=digits,
                                        progress=lambda total: progress_bar(total, "smx softmax"))
        res, shape, class_names = streamed.result, streamed.shape, streamed.class_names
        lead_shape = tuple(shape[:-1]) if len(shape) > 1 else None
        source = file
    else:
        rows = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis,
                         label_column=label_column, id_column=id_column,
                         columns=columns, drop_columns=drop_columns)
        for name in label_like_columns(rows):
            msgs.note(f"smx: column {name!r} looks like labels, not logits; "
                      f"--label-column {name} leaves it out")
        job.mask = read_mask(mask_path, rows.x2.shape) if mask_path else None
        res = pipeline.whole_array(rows.x2, job, keep)
        run = res.run
        class_names, source = rows.class_names, rows.loaded.source
        lead_shape = rows.lead_shape if run.samples == 1 else (run.samples,) + tuple(rows.lead_shape)
        if rows.ids is not None and run.samples == 1:
            lead_shape = render.RowIds(rows.ids)
        vjp = grad_payload = None
        if upstream:
            g = read_array(upstream)
            vjp = upstream_vjp(g.values, g.source, rows, run, variant, temperature, opts)
            if grad_out:
                grad_payload = Payload(
                    vjp, rows.class_names, {"command": "softmax", "variant": variant,
                                            "gradient": "upstream @ Jacobian"}, {"vjp": vjp},
                    array=from_rows(vjp, rows.moved_shape, rows.axis, rows.ndim),
                    row_ids=rows.ids)
        payload = _payload(rows, res)
        payload.digits = digits
        write_files([(grad_out, grad_payload, None), (output, payload, out_fmt)])  # all or none
        if stdout_fmt not in ("table", "none"):
            write_stdout(payload, stdout_fmt)
    panel = render.diagnostics_panel(res.diagnostics, source, support=res.support,
                                     lead_shape=lead_shape)
    # -o FILE: the data went to FILE, so stdout shows only what was asked for
    # (--grad, --check-grad, --upstream, --summary) and stderr says what happened
    on_screen = stdout_fmt == "table" or (stdout_fmt == "none" and (gradients or summary_only))
    if on_screen:
        console = stdout_console()
        parts = []
        if not summary_only:
            parts.append(render.values_view(
                console, res.head_values, res.head_logits, kind=res.template.kind,
                tiny=res.template.fmt.smallest_normal, variant=variant, temperature=temperature,
                source=source, class_names=class_names, lead_shape=lead_shape,
                max_rows=max_rows, top_k=top_k, digits=digits if digits is not None else 6,
                total_rows=res.rows))
        if res.blocks > 1:
            parts.append(Text("the file was streamed in row blocks", style="dim"))
        parts.append(panel)
        report = None
        if rows is not None and gradients:
            report = gradient_report(run, variant, temperature=temperature, dtype=dtype,
                                     options=opts, jacobian_rows=grad_rows if show_grad else 0,
                                     full_up_to=render_grad.jacobian_fit(console.width),
                                     check=check_grad)
            parts += render_grad.gradients_view(console, report, vjp=vjp,
                                                class_names=class_names, lead_shape=lead_shape,
                                                max_rows=max_rows)
        show(console, *parts)
        if report is not None and report.failed:
            raise SmxError("--check-grad: an analytic gradient disagrees with finite differences")
    failure = pipeline.strict_failure(res.diagnostics) if strict else None
    if failure:  # the files are complete: say so, then the one error line says the rest
        for path in (output, grad_out):
            msgs.wrote(path)
        raise SmxError(failure)
    if not on_screen or stdout_fmt == "none":
        msgs.summary(render.summary_line(res.diagnostics, lead_shape),
                     None if on_screen else panel)
    for path in (output, grad_out):
        msgs.wrote(path)


def _payload(rows, res: pipeline.PipelineResult) -> Payload:
    run = res.run
    result = run.result
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
        "diagnostics": res.diagnostics.to_dict(),
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
    if rows.ids is not None and run.samples == 1:
        meta["ids"] = list(rows.ids)
    return Payload(matrix, columns, meta, {"values": result.values}, array=values,
                   row_ids=rows.ids if run.samples == 1 else None)
