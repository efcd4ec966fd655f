"""``smx calibrate``: calibration metrics, a fitted temperature, reliability diagrams."""
from __future__ import annotations

import json
import os

import click
import numpy as np

from smx_cli.analysis.calibrate import INPUT_KINDS, METHODS, calibrate
from smx_cli.analysis.calibration import BINNINGS, NORMS
from smx_cli.analysis.scan import Rows
from smx_cli.cli.emit import (Payload, check_outputs, note_npy_drops_ids, show, stdout_console,
                              write_file, write_stdout_bytes)
from smx_cli.cli.options import column_options, input_options
from smx_cli.cli.prepare import load_rows
from smx_cli.core.softmax import compute
from smx_cli.errors import SmxError
from smx_cli.io import NPY_MAGIC, atomic_output, stream
from smx_cli.io.labels import read_labels
from smx_cli.render import calibration as render


# -o of an NPY input above this many values is written block by block
STREAM_OUTPUT_ELEMENTS = 1 << 22


@click.command("calibrate", epilog="""\b
Fits one temperature T (logits / T) by Newton's method on 1/T, where the
NLL is convex, and reports accuracy, NLL, Brier, ECE, MCE, ACE, class-wise
ECE and Kumar et al.'s debiased L2 error before and after, with the bins
stated: M bins (lo, hi], a confidence of exactly 1.0 in the last bin, empty
bins kept. Numbers measured on the rows the fit used flatter it: use
--split F or --fit-on FILE --fit-labels Y for honest "after" numbers.

\b
Examples:
  smx calibrate samples/mnist_lenet_logits.npy \\
      --labels samples/mnist_lenet_labels.npy
  smx calibrate val.npy --labels val_y.npy --split 0.5 --seed 1
  smx calibrate test.npy --labels test_y.npy \\
      --fit-on val.npy --fit-labels val_y.npy
  smx calibrate logits.npy --labels y.npy --save-temperature T.txt \\
      -o calibrated.npy
  smx calibrate scores.csv --label-column label --id-column name -o p.csv
  smx softmax logits.npy --temperature "$(cat T.txt)"
  smx calibrate logits.npy --labels y.npy --format json --plot reliability.svg""")
@input_options
@click.option("--labels", "labels_path", metavar="FILE",
              help="True labels: one class index or class name per line (CSV/TSV/NPY)")
@click.option("--label-column", metavar="NAME|INDEX",
              help="Take the labels from this column of the logits file instead")
@click.option("--id-column", metavar="NAME|INDEX",
              help="A column of FILE that names the rows (any text): left out of the fit, "
                   "written with every row of -o")
@column_options
@click.option("--input-kind", type=click.Choice(INPUT_KINDS), default="logits", show_default=True,
              help="What FILE holds (probabilities: their log is used, with a warning)")
@click.option("--method", type=click.Choice(METHODS), default="temperature", show_default=True,
              help="temperature: one T; vector: per-class scale and bias (Guo et al. 2017)")
@click.option("--bins", type=click.IntRange(min=1), default=15, show_default=True, metavar="M",
              help="Reliability bins")
@click.option("--binning", type=click.Choice(BINNINGS), default="width", show_default=True,
              help="width: M equal-width bins; mass: M bins of equal counts (for ECE)")
@click.option("--norm", type=click.Choice(NORMS), default="l1", show_default=True,
              help="ECE norm over bins")
@click.option("--bootstrap", type=click.IntRange(min=0), default=100, show_default=True,
              metavar="B", help="Resamples for the debiased L2 error's 95% interval (0: none)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of --split and --bootstrap")
@click.option("--fit-on", "fit_on", metavar="LOGITS", help="Fit on these logits instead")
@click.option("--fit-labels", metavar="FILE", help="Labels of --fit-on")
@click.option("--split", type=float, default=None, metavar="F",
              help="Fit on a random fraction F in (0, 1) of the rows, report on the rest")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Format of stdout")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the calibrated probabilities (or --output-kind log-probs) of FILE "
                   "(.npy, .csv, .tsv, .json); atomic")
@click.option("--output-kind", type=click.Choice(["probs", "log-probs"]), default="probs",
              show_default=True, help="What -o holds")
@click.option("--save-temperature", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the fitted T (one number) to FILE, for smx softmax/xent --temperature")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.svg",
              help="Write the reliability diagrams (before, after) as an SVG image")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Worker threads [default: the machine's cores]")
def calibrate_cmd(file, delimiter, header, key, axis, labels_path, label_column, id_column,
                  columns, drop_columns, input_kind, method, bins, binning, norm, bootstrap, seed, fit_on, fit_labels, split, fmt,
                  output, output_kind, save_temperature, plot, threads):
    """Calibration of the logits in FILE against the true labels, before and after a fit.

    Is a reported 90% confidence right 90% of the time? Shows the metric
    table with its binning, the fitted temperature and the reliability
    diagrams before and after (per-bin accuracy against confidence, the
    diagonal, the gap shaded, counts per bin). A 2-D NPY file is read in
    row blocks: memory does not grow with it.
    """
    if (labels_path is None) == (label_column is None):
        raise click.UsageError("give exactly one of --labels FILE or --label-column NAME|INDEX")
    if file == "-" and labels_path == "-":
        raise click.UsageError("FILE and --labels cannot both be - (standard input)")
    if (fit_on is None) != (fit_labels is None) and label_column is None:
        raise click.UsageError("give --fit-on LOGITS together with --fit-labels FILE")
    if fit_labels is not None and fit_on is None:
        raise click.UsageError("--fit-labels needs --fit-on LOGITS")
    if fit_labels is not None and label_column is not None:
        raise click.UsageError("with --label-column the labels of --fit-on come from its own "
                               "column: drop --fit-labels")
    if split is not None and not 0.0 < split < 1.0:
        raise click.BadParameter("must be in (0, 1), the fraction of rows to fit on",
                                 param_hint="'--split'")
    if split is not None and fit_on is not None:
        raise click.UsageError("--split and --fit-on exclude each other")
    if save_temperature and method != "temperature":
        raise click.UsageError("--save-temperature needs --method temperature")
    if plot and not plot.lower().endswith(".svg"):
        raise click.UsageError(f"--plot {plot}: smx writes SVG only; name the file .svg")
    if len({p for p in (output, save_temperature, plot) if p}) < \
            len([p for p in (output, save_temperature, plot) if p]):
        raise click.UsageError("-o, --save-temperature and --plot must name different files")
    # every output, before any work: format, place, inputs, one file by two names
    check_outputs([(output, None), (save_temperature, "text"), (plot, "svg")],
                  (file, labels_path, fit_on, fit_labels))

    picks = _Picks(label_column, id_column, columns, drop_columns)
    rows, labels, names, ids = _load(file, labels_path, picks, delimiter, header, key, axis)
    fit_rows = fit_y = None
    if fit_on is not None:  # the same layout: the same columns are taken out
        fit_rows, fit_y, _, _ = _load(fit_on, fit_labels, picks, delimiter, header, key,
                                      axis, names)
    report = calibrate(rows, labels, method=method, bins=bins, binning=binning, norm=norm,
                       bootstrap=bootstrap, seed=seed, fit_logits=fit_rows, fit_labels=fit_y,
                       split=split, input_kind=input_kind, threads=threads)

    if output:
        _write_calibrated(output, file if rows.source == file and not picks
                          and _npy2d(file, key, axis) else None, rows, report.fit,
                          input_kind, output_kind, names, ids)
    if save_temperature:
        with atomic_output(save_temperature, "w") as fh:
            fh.write(f"{report.fit.temperature!r}\n")
    if plot:
        from smx_cli.render.svg import reliability_svg

        svg = reliability_svg(report.before.bins, report.after.bins,
                              title=f"{report.source}: " + render.binning_note(report.before).replace("\n", " "))
        with atomic_output(plot, "w") as fh:
            fh.write(svg)

    if fmt == "json":
        doc = report.to_dict()
        doc["class_names"] = names
        write_stdout_bytes((json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
    elif fmt == "csv":
        keys, mat = render.rows_of_metrics(report.before, report.after, report.fit)
        table = np.column_stack([np.arange(len(keys)), mat])
        text = "metric,before,after\n" + "".join(
            f"{k},{_csv_num(a, k)},{_csv_num(b, k)}\n" for k, (_, a, b) in zip(keys, table))
        write_stdout_bytes(text.encode())
    else:
        _show(report)
    for w in report.warnings:  # messages go to stderr, in every format
        click.echo(f"warning: {w}", err=True)
    for path in (output, save_temperature, plot):
        if path:
            click.echo(f"wrote {path}", err=True)


def _csv_num(v: float, key: str = "") -> str:
    if key == "rows":
        return str(int(v))
    return repr(float(v)) if np.isfinite(v) else ("nan" if np.isnan(v) else str(v))


def _show(report) -> None:
    """The report on stdout; piped, without trailing padding (see emit.show)."""
    from rich.text import Text

    console = stdout_console()
    b, a = report.before, report.after
    show(console,
         render.metric_table(b, a, title=f"calibration of {report.source} "
                                         f"({b.rows:,} x {b.classes:,})"),
         Text(render.binning_note(b), style="dim"),
         render.fit_panel(report.fit, report.fit_on, report.fit_source),
         render.diagrams(b.bins, a.bins, width=console.width),
         render.bin_table(b.bins, a.bins, title="bins (equal-width)"))


class _Picks:
    """--label-column, --id-column, --columns, --drop-columns: the columns taken out."""

    def __init__(self, label_column=None, id_column=None, columns=None, drop_columns=None):
        self.label_column, self.id_column = label_column, id_column
        self.columns, self.drop_columns = columns, drop_columns

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.label_column, self.id_column, self.columns,
                                           self.drop_columns))


def _load(file, labels_path, picks: _Picks, delimiter, header, key, axis, names=None):
    """(Rows, labels, class names, row ids) of FILE: a 2-D NPY file streamed (when no
    column is taken out of it), else read whole with the label and id columns split off."""
    if not picks and _npy2d(file, key, axis):
        rows = Rows.npy(file)
        labels = read_labels(labels_path, class_names=names) if labels_path else None
        return rows, labels, names, None
    r = load_rows(file, delimiter=delimiter, header=header, key=key, axis=axis,
                  label_column=picks.label_column, id_column=picks.id_column,
                  columns=picks.columns, drop_columns=picks.drop_columns)
    if r.ndim != 2:
        raise SmxError(f"{r.loaded.source}: calibrate takes a 2-D N x C array, got shape "
                       f"{r.loaded.values.shape}")
    cls = r.class_names or names
    if picks.label_column is not None:
        labels = r.labels
    else:
        labels = read_labels(labels_path, class_names=cls)
    return Rows.of(r.x2, r.loaded.source, ids=r.ids), labels, cls, r.ids


def _npy2d(file, key, axis) -> bool:
    if file == "-" or key or axis not in (-1, 1):
        return False
    try:
        with open(file, "rb") as fh:
            if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
                return False
        shape, _ = stream.npy_info(file)
    except (OSError, ValueError):
        return False
    return len(shape) == 2


def _write_calibrated(output, npy_file, rows: Rows, fit, input_kind, output_kind,
                      names=None, ids=None) -> None:
    """-o: the calibrated probabilities (or log-probabilities), block by block for NPY.

    ``npy_file``: the 2-D NPY file the rows are (streamed to an NPY output), or None.
    ``names`` head the CSV/TSV columns (and are ``classes`` in NPZ/JSON); ``ids``
    (--id-column) lead each CSV/TSV row, and are ``ids`` in NPZ and JSON, as in
    smx softmax.
    """
    variant = "stable" if output_kind == "probs" else "log"

    def fn(xb):
        z = np.asarray(xb)
        if input_kind == "probs":
            with np.errstate(divide="ignore"):
                z = np.log(np.asarray(z, dtype=np.float64))
        if fit.method == "temperature":
            return compute(z, variant, temperature=fit.temperature).values
        out = compute(fit.apply(np.asarray(z, dtype=np.float64)), variant).values
        return out.astype(z.dtype) if z.dtype.kind == "f" else out

    fmt = os.path.splitext(output)[1].lower()
    if ids is not None and fmt == ".npy":
        note_npy_drops_ids(output)
    if fmt == ".npy" and npy_file is not None and rows.n * rows.c > STREAM_OUTPUT_ELEMENTS:
        stream.stream_npy(npy_file, output, fn)
        return
    blocks = [fn(xb) for _, xb in rows.raw_blocks()]
    values = np.concatenate(blocks) if blocks else np.zeros((0, rows.c))
    meta = {"command": "calibrate", "output": output_kind, "method": fit.method,
            "temperature": fit.temperature if fit.method == "temperature" else None,
            "classes": names}
    if ids is not None:
        meta["ids"] = list(ids)
    write_file(output, Payload(values, names, meta, {output_kind.replace("-", "_"): values},
                               row_ids=ids), None)
