"""``--scheduler``: the softmax and xent commands on Dask (see :mod:`smx_cli.dask`).

Each command's first line hands its parameters here when ``--scheduler`` is
given. This module checks which options the Dask engine supports, opens the
input (a Zarr store, an NPY file or a glob of NPY shards), runs the library
function with a progress bar over tasks, and prints the same report as on
one machine: the first rows and the panel over every chunk.
"""
from __future__ import annotations

import json
import math

import click
import numpy as np

from rich.text import Text

from smx_cli.cli.emit import Messages, progress_bar, show, stdout_console, write_stdout_bytes
from smx_cli.errors import SmxError


def _dask():
    try:
        import smx_cli.dask as sd
        import dask.array  # noqa: F401 - fail here, with the fix, when the extra is missing
    except ImportError:
        raise SmxError("--scheduler needs Dask: pip install 'smx-cli[dask]' (dask[array], "
                       "distributed, zarr)") from None
    return sd


def _refuse(params: dict, names: dict) -> None:
    """UsageError for the first option given that the Dask engine does not support."""
    for name, flag in names.items():
        value = params.get(name)
        if value is not None and value is not False and value != ():
            raise click.UsageError(f"{flag} is not supported with --scheduler")


_INPUT_ONLY = {"delimiter": "--delimiter", "header": "--header/--no-header", "key": "--key"}


def _open(sd, file):
    if file == "-":
        raise click.UsageError("--scheduler reads a Zarr store or NPY files, not stdin")
    return sd.open_array(file)


def run(command: str, params: dict):
    """Run ``command`` ('softmax', 'xent', 'compare') on Dask with the click parameters."""
    sd = _dask()
    if command == "softmax":
        return _softmax(sd, params)
    if command == "compare":
        return _compare(sd, params)
    return _xent(sd, params)


def _softmax(sd, p):
    from smx_cli.analysis import pipeline
    from smx_cli.core.registry import VariantOptions
    from smx_cli.render import tables as render

    _refuse(p, {**_INPUT_ONLY, "mask_path": "--mask", "show_grad": "--grad",
                "upstream": "--upstream", "grad_out": "--grad-out", "check_grad": "--check-grad",
                "threads": "--threads", "label_column": "--label-column",
                "id_column": "--id-column", "columns": "--columns",
                "drop_columns": "--drop-columns", "summary_only": "--summary"})
    if p.get("emulate", "strict") != "strict":
        raise click.UsageError("--emulate torch is not supported with --scheduler")
    if p["axis"] not in (-1, 1):
        raise click.UsageError("--axis is not supported with --scheduler (classes are the last axis)")
    if p["fmt"] not in (None, "table"):
        raise click.UsageError("with --scheduler the terminal shows a table; -o writes a Zarr store")
    if p["samples"] != 1:
        raise click.UsageError("--samples is not supported with --scheduler (one draw per row)")
    output = p["output"]
    if output and not output.rstrip("/").endswith(".zarr"):
        raise click.UsageError("with --scheduler, -o writes a Zarr store: name it DIR.zarr")
    x = _open(sd, p["file"])
    opts = VariantOptions(alpha=p["alpha"], tau=p["tau"], hard=p["hard"], samples=1,
                          seed=p["seed"])
    with progress_bar(x.nbytes, "smx (dask tasks)") as advance:
        rep = sd.softmax_report(x, p["variant"], p["temperature"], p["dtype"], p["masked"],
                                fast=p["fast"], options=opts, head_rows=p["max_rows"],
                                output=output, scheduler=p["scheduler"], progress=advance)
    panel = render.diagnostics_panel(rep.diagnostics, p["file"], support=rep.support)
    msgs = Messages(p.get("quiet", False), p.get("verbose", False))
    if output:
        # as on one machine: the data went to the store, stderr says what happened
        msgs.summary(render.summary_line(rep.diagnostics, None), panel)
        msgs.wrote(output)
        failure = pipeline.strict_failure(rep.diagnostics) if p["strict"] else None
        if failure:
            raise SmxError(failure)
        return
    console = stdout_console()
    parts = []  # printed at once: piped, without trailing padding
    n = rep.shape[0]
    if rep.head_result is not None:
        parts.append(render.values_view(
            console, rep.head_values, rep.head_logits, kind=rep.head_result.kind,
            tiny=rep.head_result.fmt.smallest_normal, variant=p["variant"],
            temperature=p["temperature"], source=p["file"], max_rows=p["max_rows"],
            top_k=p["top_k"], digits=p["digits"] if p["digits"] is not None else 6,
            total_rows=n))
    parts.append(Text(f"computed in {len(x.chunks[0]) * len(x.chunks[1]):,} chunks on Dask "
                      "(-o DIR.zarr for all rows)", style="dim"))
    parts.append(panel)
    show(console, *parts)
    failure = pipeline.strict_failure(rep.diagnostics) if p["strict"] else None
    if failure:
        raise SmxError(failure)


def _xent(sd, p):
    from smx_cli.cli import xent as cmd
    from smx_cli.core.precision import result_format
    from smx_cli.core.xent import evaluate
    from smx_cli.io.labels import read_weights
    from smx_cli.render import xent as render_xent

    _refuse(p, {**_INPUT_ONLY, "label_column": "--label-column", "worst": "--worst",
                "id_column": "--id-column", "columns": "--columns",
                "drop_columns": "--drop-columns",
                "emulate_dtype": "--dtype",
                "show_grad": "--grad", "grad_out": "--grad-out", "check_grad": "--check-grad",
                "threads": "--threads"})
    output = p["output"]
    if output and not output.rstrip("/").endswith(".zarr"):
        raise click.UsageError("with --scheduler, -o writes the per-sample columns to a Zarr "
                               "store: name it DIR.zarr")
    if p["axis"] not in (-1, 1):
        raise click.UsageError("--axis is not supported with --scheduler (classes are the last axis)")
    if p.get("torch_cpu", "auto") != "auto":
        raise click.UsageError("--torch-cpu is not supported with --scheduler")
    if p["fmt"] not in (None, "table", "json"):
        raise click.UsageError("with --scheduler, --format is table or json (the summary)")
    if not 0.0 <= p["label_smoothing"] <= 1.0:
        raise click.BadParameter("must be in [0, 1]", param_hint="'--label-smoothing'")
    if p["labels_path"] is None:
        raise click.UsageError("--scheduler needs --labels FILE (a Zarr store, NPY file or glob)")
    temperature = p.get("temperature", 1.0)
    if not 0.0 < temperature < math.inf:
        raise click.BadParameter("must be a finite number > 0", param_hint="'--temperature'")
    if temperature != 1.0 and p["input_kind"] != "logits":
        raise click.UsageError("--temperature divides logits; it needs --input-kind logits")
    x = _open(sd, p["file"])
    y = sd.open_labels(p["labels_path"], x.shape[1])
    weights = read_weights(p["weight"], x.shape[1]) if p["weight"] else None
    opts = dict(ignore_index=p["ignore_index"], reduction=p["reduction"],
                label_smoothing=p["label_smoothing"], input_kind=p["input_kind"])
    fmt_eps = result_format(x.dtype).eps
    with progress_bar(x.nbytes, "smx xent (dask tasks)") as advance:
        summary = sd.xent_summary(x, y, weight=weights, vanished_eps=fmt_eps,
                                  scheduler=p["scheduler"], progress=advance,
                                  labels_name=p["labels_path"], output=output,
                                  temperature=temperature, **opts)
    n, c = x.shape
    meta = cmd._summary(summary, p["file"], c, None, p["reduction"], p["label_smoothing"],
                        p["ignore_index"], p["input_kind"], weights, fmt_eps)
    meta["temperature"] = temperature
    msgs = Messages(p.get("quiet", False), p.get("verbose", False))
    summary_only = p.get("summary_only", False)
    # as on one machine: with -o the data went to the store, stdout shows only --summary
    on_screen = p["fmt"] != "json" and (not output or summary_only)
    panel = None
    if on_screen or msgs.verbose:
        panel = render_xent.summary_panel(
            summary, eps=fmt_eps, input_counts=summary.part.inputs, source=p["file"],
            n_classes=c, options=cmd._options_text(p["reduction"], p["label_smoothing"],
                                                   p["ignore_index"], p["input_kind"], weights),
            smoothed=p["label_smoothing"] > 0)
    if p["fmt"] == "json":
        write_stdout_bytes((json.dumps(meta, indent=2) + "\n").encode())
    elif on_screen:
        k = 0 if summary_only else min(n, p["max_rows"])
        head = None
        if k:
            # the first rows, evaluated on the client exactly as on one machine
            xh, yh = np.asarray(x[:k].compute(scheduler="synchronous")), \
                np.asarray(y[:k].compute(scheduler="synchronous"))
            if temperature != 1.0:
                xh = xh.astype(np.float64) / temperature
            try:
                head = evaluate(xh, yh, weight=weights, **{**opts, "reduction": "none"})
            except ValueError as exc:
                raise SmxError(f"{p['labels_path']}: {exc}") from None
        console = stdout_console()
        parts = []  # printed at once: piped, without trailing padding
        if head is not None:
            note = (f"{n - k:,} more samples not shown (--rows N); computed on Dask in "
                    f"{len(x.chunks[0]):,} row blocks" if n > k else None)
            parts.append(render_xent.fitted_sample_table(
                console, head, np.arange(k), title=f"cross-entropy of {p['file']}",
                total_note=note))
        parts.append(panel)
        show(console, *parts)
    if p["fmt"] == "json" or output:
        msgs.summary(render_xent.summary_line(meta), None if on_screen else panel)
    msgs.wrote(output)  # as on one machine: beside the report, on stderr
    if p["strict"]:
        if summary.n_nonfinite or (p["reduction"] != "none" and not np.isfinite(summary.reduced)):
            raise SmxError(f"--strict: {summary.n_nonfinite} sample loss(es) are NaN or inf"
                           if summary.n_nonfinite else "--strict: the mean loss is undefined")


def _compare(sd, p):
    from smx_cli import io
    from smx_cli.cli import compare as cmd
    from smx_cli.cli.emit import check_output_path
    from smx_cli.dask.compare import compare_stability
    from smx_cli.render.compare import fitted_comparison_view

    _refuse(p, {**_INPUT_ONLY, "do_sweep": "--sweep"})
    if p["axis"] not in (-1, 1):
        raise click.UsageError("--axis is not supported with --scheduler (classes are the last axis)")
    if p["file"] is None:
        raise click.UsageError("--scheduler needs FILE (a Zarr store, NPY file or glob)")
    if not (p["temperature"] > 0 and np.isfinite(p["temperature"])):
        raise click.BadParameter("must be a finite number > 0", param_hint="'--temperature'")
    check_output_path(p["output"], p["file"])
    x = _open(sd, p["file"])
    if p["max_rows"] is not None:
        x = x[:p["max_rows"]]
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise SmxError(f"{p['file']}: nothing to compare (shape {x.shape[0]} x {x.shape[1]})")
    with progress_bar(x.nbytes * len(p["variants"]) * len(p["dtypes"]),
                      "smx compare (dask tasks)") as advance:
        try:
            result = compare_stability(x, p["variants"], p["dtypes"], p["temperature"],
                                       scheduler=p["scheduler"], progress=advance)
        except ValueError as exc:
            raise SmxError(str(exc)) from None
    t = f", T={p['temperature']:g}" if p["temperature"] != 1 else ""
    meta = {"command": "compare-stability", "source": p["file"], "variants": list(p["variants"]),
            "dtypes": list(p["dtypes"]), **result.to_dict()}
    doc = json.dumps(cmd._jsonable(meta), indent=2, allow_nan=False) + "\n"
    if p["output"]:
        try:
            with io.atomic_output(p["output"], "w") as fh:
                fh.write(doc)
        except OSError as exc:
            raise SmxError(f"{p['output']}: cannot write ({exc.strerror or exc}); nothing was "
                           "written") from None
    if p["fmt"] == "json":
        write_stdout_bytes(doc.encode())
        return
    console = stdout_console()
    title = f"compare-stability: {p['file']} ({x.shape[0]:,} x {x.shape[1]:,}{t})"
    show(console, fitted_comparison_view(console, result, title))
    Messages(p.get("quiet", False)).wrote(p["output"])  # as on one machine: stderr
