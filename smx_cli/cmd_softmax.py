"""``smx softmax``: probabilities (or log-probabilities) with diagnostics."""
from __future__ import annotations

import click
from rich.console import Console
from rich.measure import Measurement

from smx_cli import render
from smx_cli.diagnostics import diagnose
from smx_cli.emit import Payload, check_output_path, stdout_console, write_file, write_stdout
from smx_cli.errors import SmxError
from smx_cli.options import display_options, input_options, numerics_options, output_options
from smx_cli.prepare import load_rows
from smx_cli.softmax import MASKED_POLICIES, VARIANT_HELP, VARIANTS, compute, from_rows

_VARIANT_LINES = "\n".join(f"  {name:<7} {text}" for name, text in VARIANT_HELP.items())


@click.command("softmax", epilog=f"""\b
Variants:
{_VARIANT_LINES}

\b
Without --dtype, stable/log/online are accurate to within 4 ulps of the
exact value in the input's float format (float64 for CSV); naive and lse
run as written in that format. --dtype rounds every step to the format.
A row with +inf shares its mass among the +inf entries; a NaN makes its
row NaN; a fully masked row (all -inf) gives NaN, or 0 with --masked zeros.

\b
Examples:
  smx softmax samples/seeds.csv
  smx softmax samples/seeds.csv --dtype float16 --variant naive
  smx softmax samples/mnist_lenet_logits.npy --top-k 3 --rows 5
  smx softmax - --format csv < logits.csv > probs.csv
  smx softmax logits.npy -o probs.npy""")
@input_options
@click.option("--variant", type=click.Choice(VARIANTS), default="stable", show_default=True,
              help="Which softmax algorithm (see below)")
@numerics_options
@click.option("--masked", type=click.Choice(MASKED_POLICIES), default="nan", show_default=True,
              help="Result for a fully masked row (all -inf): NaN like PyTorch, or zeros")
@output_options
@display_options
def softmax_cmd(file, delimiter, header, key, axis, variant, dtype, temperature, masked,
                output, fmt, strict, max_rows, top_k, digits):
    """Softmax of each row of logits in FILE (CSV, TSV, NPY, NPZ, or - for stdin).

    Shows the probabilities (log-probabilities for --variant log) with
    a diagnostics panel: NaN/inf in the input, exp overflow and underflow,
    NaN produced, rows that do not sum to 1.
    """
    if not temperature > 0 or temperature == float("inf"):
        raise click.BadParameter("must be a finite number > 0", param_hint="'--temperature'")
    check_output_path(output, file)
    rows = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis)
    try:
        result = compute(rows.x2, variant, temperature, dtype, masked)
    except ValueError as exc:
        raise SmxError(str(exc)) from None
    diag = diagnose(rows.x2, result)
    payload = _payload(rows, result, diag, file)

    if output:
        write_file(output, payload, fmt)
    if fmt and fmt != "table" and not output:
        write_stdout(payload, fmt)
    else:
        console = stdout_console()
        kind = result.kind
        what = "log_softmax" if kind == "logprob" else "softmax"
        t = f"x/{temperature:g}" if temperature != 1 else "x"
        title = f"{what}({t}) of {rows.loaded.source}"
        width = rows.x2.shape[1]
        tiny = result.fmt.smallest_normal
        common = dict(kind=kind, tiny=tiny, class_names=rows.class_names,
                      lead_shape=rows.lead_shape, max_rows=max_rows, title=title, digits=digits)
        table = None
        if top_k is None and width <= render.DEFAULT_MAX_COLS:
            table = render.values_table(result.values, rows.x2, **common)
            if _needed_width(console, table) > console.width:
                # rich would squeeze every cell to "0.9…": show fewer columns instead
                table = None
                why = f"{width} classes do not fit in {console.width} columns"
        elif top_k is None:
            why = f"{width} classes"
        if table is None and top_k is not None:
            table = render.topk_table(result.values, rows.x2, top_k, **common)
        elif table is None:
            # the largest k <= DEFAULT_TOP_K whose table fits the terminal
            for k in range(render.DEFAULT_TOP_K, 0, -1):
                reason = f"{why}: showing each row's top {k} (--top-k K to choose)"
                table = render.topk_table(result.values, rows.x2, k, reason=reason, **common)
                if _needed_width(console, table) <= console.width:
                    break
        console.print(table)
        console.print(render.diagnostics_panel(diag, rows.loaded.source))
        if output:
            console.print(f"wrote {output}", style="dim")
    if strict and diag.output_nan:
        raise SmxError(f"--strict: the result holds NaN in {diag.output_nan_rows} row(s)")
    if strict and (diag.exp_overflow or diag.sum_overflow_rows):
        raise SmxError("--strict: exp overflowed to inf while computing")


def _needed_width(console: Console, table) -> int:
    """Columns ``table`` takes unsqueezed (rich clamps measures to the terminal)."""
    return Measurement.get(console, console.options.update_width(10**5), table).maximum


def _payload(rows, result, diag, source) -> Payload:
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
    }
    matrix = values if values.ndim >= 1 else values.reshape(1)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    columns = rows.class_names if rows.axis == rows.ndim - 1 or rows.ndim < 2 else rows.row_names
    if rows.ndim == 2 and rows.axis == 0:
        columns = None
    return Payload(matrix, columns, meta, {"values": result.values}, array=values)
