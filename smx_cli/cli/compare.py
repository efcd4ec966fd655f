"""``smx compare-stability``: every softmax variant x format against the exact result."""
from __future__ import annotations

import json
import math

import click
import numpy as np

from smx_cli import io
from smx_cli.analysis.compare import (ALL_VARIANTS, DEFAULT_DTYPES, MAX_SCALE, SEED_LABEL, SEED_ROWS,
                             VARIANT_LABELS, check_names, compare_stability, normal_sample,
                             sweep)
from smx_cli.cli.emit import Messages, check_outputs, show, stdout_console, write_stdout_bytes
from smx_cli.errors import SmxError
from smx_cli.cli import scale
from smx_cli.cli.options import (column_options, input_options, resolve_formats,
                                 scheduler_option)
from smx_cli.core.precision import FORMATS
from smx_cli.cli.prepare import load_rows
from smx_cli.render.compare import fitted_comparison_view, sweep_view

_VARIANT_LINES = "\n".join(f"  {name:<7} {text}" for name, text in VARIANT_LABELS.items())


def _names(allowed, what):
    def parse(ctx, param, value):
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        try:
            return check_names(names, allowed, what)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return parse


def _jsonable(obj):
    """Floats to JSON: NaN and infinities as the strings smx reads back."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


@click.command("compare-stability", epilog=f"""\b
Variants (--variants, default all):
{_VARIANT_LINES}

\b
Each dtype's row first rounds the input to that dtype; the variant then
runs with every operation rounded to it, and is compared with the exact
softmax of the rounded input. Errors are in ulps of the dtype, over the
entries whose exact value is a normal number, on the rows that did not
fail. Verdict, overflow and NaN first: broken = some row overflowed or
gave NaN/inf/all zeros; inaccurate = an entry is outside the variant's
own known error bound for the dtype (it does worse than its analysis
promises); ok = within it. --fail-on broken|inaccurate exits 1 for CI.

\b
Examples:
  smx compare-stability
  smx compare-stability logits.npy --dtypes float16,bfloat16
  smx compare-stability logits.npy --variants naive,stable,lse
  smx compare-stability logits.csv --rows 100 --format json -o report.json
  smx compare-stability logits.npy --dtypes float16 --fail-on broken
  smx compare-stability scores.csv --label-column label --id-column name
  smx compare-stability --sweep
  smx compare-stability samples/seeds.csv --sweep --max-scale 1e4""")
@input_options(file_required=False)
@click.option("--label-column", metavar="NAME|INDEX",
              help="A column of FILE that holds labels, not logits: left out")
@click.option("--id-column", metavar="NAME|INDEX",
              help="A column of FILE that names the rows (any text): left out, and names "
                   "the worst rows (table and JSON)")
@column_options
@click.option("--variants", default=",".join(ALL_VARIANTS), show_default=True,
              callback=_names(ALL_VARIANTS, "variants"), metavar="LIST",
              help="Comma-separated variants to compare (smx = the accurate path)")
@click.option("--dtypes", default=",".join(DEFAULT_DTYPES), show_default=True,
              callback=_names(tuple(FORMATS), "dtypes"), metavar="LIST",
              help="Comma-separated formats to emulate")
@click.option("-t", "--temperature", type=float, default=1.0, show_default=True,
              help="Divide the logits by T > 0 first")
@click.option("--rows", "max_rows", type=click.IntRange(min=1), default=None,
              help="Check only the first N rows [default: all]")
@click.option("--sweep", "do_sweep", is_flag=True,
              help="Scale the input (default: a seeded standard-normal sample) by 1, 10, "
                   "100, ... and show where each variant first breaks")
@click.option("--max-scale", type=click.FloatRange(min=1, max=1e300), default=MAX_SCALE,
              show_default=True, help="--sweep: the largest scale tried")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="--sweep without FILE: seed of the 256 x 10 standard-normal sample")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="table for people, json for scripts (the same data)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the JSON report to FILE.json (atomically)")
@click.option("--fail-on", type=click.Choice(["broken", "inaccurate"]), default=None,
              help="Exit 1 when a verdict is broken (or, with inaccurate, broken or "
                   "inaccurate): for CI")
@click.option("-q", "--quiet", is_flag=True, help="No 'wrote FILE' on stderr")
@scheduler_option
def compare_cmd(file, delimiter, header, key, axis, label_column, id_column, columns,
                drop_columns, variants, dtypes, temperature, max_rows, do_sweep, max_scale,
                seed, fmt, output, fail_on, quiet, scheduler=None):
    """Compare every softmax variant in every precision against an exact reference.

    Runs each variant (naive, stable, log, online, lse, and smx's own
    accurate path) emulated in float16, bfloat16, float32 and float64 on the
    logits in FILE (CSV, TSV, NPY, NPZ, or - for stdin) and reports, per
    variant and dtype: rows that overflowed, probabilities that underflowed,
    NaNs, failed rows, max and median error in ulps, max |sum - 1|, max
    log-probability error, and a verdict. Without FILE: the four seed
    examples [1,2,3], [1,2,5], [1000,2000,3000], [-1000,1,10000].
    """
    picked = {"--label-column": label_column, "--id-column": id_column,
              "--columns": columns, "--drop-columns": drop_columns}
    picked = [flag for flag, value in picked.items() if value is not None]
    if scheduler:
        if picked:
            raise click.UsageError(f"{picked[0]} is not supported with --scheduler")
        if fail_on:
            raise click.UsageError("--fail-on is not supported with --scheduler")
        if output is not None:
            resolve_formats(output, "json" if fmt == "json" else None, file_formats=("json",))
        return scale.run("compare", locals())
    if not (temperature > 0 and math.isfinite(temperature)):
        raise click.BadParameter("must be a finite number > 0", param_hint="'--temperature'")
    if file is None and (delimiter or header is not None or key or axis != -1 or picked):
        raise click.UsageError("--delimiter, --header, --key, --axis and the column options "
                               "need a FILE")
    check_outputs([(output, "json")], (file,))
    if output is not None:
        resolve_formats(output, "json" if fmt == "json" else None, file_formats=("json",))
    ids = None
    if file is not None:
        rows = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis,
                         label_column=label_column, id_column=id_column, columns=columns,
                         drop_columns=drop_columns)
        x2, source, ids = rows.x2, rows.loaded.source, rows.ids
    elif do_sweep:
        x2, source = normal_sample(256, 10, seed), f"a standard-normal sample (seed {seed})"
    else:
        x2, source = SEED_ROWS, SEED_LABEL
    if x2.dtype.kind not in "fiub" and x2.dtype != FORMATS["bfloat16"].dtype:
        raise SmxError(f"{source}: logits must be numbers, got dtype {x2.dtype}")
    if max_rows is not None:
        x2 = x2[:max_rows]
        ids = ids[:max_rows] if ids is not None else None
    if x2.shape[0] == 0 or x2.shape[1] == 0:
        raise SmxError(f"{source}: nothing to compare (shape {x2.shape[0]} x {x2.shape[1]})")

    t = f", T={temperature:g}" if temperature != 1 else ""
    meta = {"command": "compare-stability", "source": source, "variants": list(variants),
            "dtypes": list(dtypes)}
    try:
        if do_sweep:
            result = sweep(x2, variants, dtypes, temperature, max_scale)
            meta.update({"rows": int(x2.shape[0]), "classes": int(x2.shape[1]),
                         "temperature": temperature, "sweep": result.to_dict()})
            title = f"compare-stability --sweep: {source} ({x2.shape[0]:,} x {x2.shape[1]:,}{t})"
            view = sweep_view(result, title)
        else:
            result = compare_stability(x2, variants, dtypes, temperature)
            meta.update(result.to_dict())
            if ids is not None:  # the worst rows named by their ids, beside their index
                for rep in meta["results"]:
                    if rep.get("worst") is not None:
                        rep["worst"]["id"] = ids[rep["worst"]["index"]]
            title = f"compare-stability: {source} ({x2.shape[0]:,} x {x2.shape[1]:,}{t})"
            view = None
    except ValueError as exc:
        raise SmxError(str(exc)) from None
    doc = json.dumps(_jsonable(meta), indent=2, allow_nan=False) + "\n"

    if output:
        try:
            with io.atomic_output(output, "w") as fh:
                fh.write(doc)
        except OSError as exc:
            raise SmxError(f"{output}: cannot write ({exc.strerror or exc}); nothing was "
                           "written -- free space or choose another -o") from None
    if fmt == "json":
        write_stdout_bytes(doc.encode())
    else:
        console = stdout_console()
        if view is None:
            view = fitted_comparison_view(console, result, title, ids)
        show(console, view)
    Messages(quiet).wrote(output)
    if fail_on and not do_sweep:
        bad = ("broken",) if fail_on == "broken" else ("broken", "inaccurate")
        hits = [f"{r.variant} in {r.dtype}" for r in result.reports if r.verdict in bad]
        if hits:
            raise SmxError(f"--fail-on {fail_on}: {len(hits)} verdict(s) {' or '.join(bad)}: "
                           + ", ".join(hits[:6]) + (", ..." if len(hits) > 6 else ""))
    elif fail_on:
        broke = [e for e in result.entries if e.break_scale is not None]
        if broke:
            raise SmxError(f"--fail-on {fail_on}: {len(broke)} variant(s) break within the "
                           "sweep: " + ", ".join(f"{e.variant} in {e.dtype}" for e in broke[:6]))
