"""Option bundles shared by the commands: one decorator adds one family of flags."""
from __future__ import annotations

import click

from smx_cli.core.precision import DTYPE_NAMES

DELIMITER_NAMES = {"comma": ",", ",": ",", "tab": "\t", "\\t": "\t", "\t": "\t",
                   "semicolon": ";", ";": ";", "space": " ", "whitespace": " ", " ": " "}


def _delimiter(ctx, param, value):
    if value is None:
        return None
    if value not in DELIMITER_NAMES:
        raise click.BadParameter("use comma, tab, semicolon or whitespace (or , ; \\t)")
    return DELIMITER_NAMES[value]


def _compose(*decorators):
    def wrap(fn):
        for dec in reversed(decorators):
            fn = dec(fn)
        return fn
    return wrap


def input_options(fn=None, *, file_required: bool = True):
    """FILE argument plus the text/NPZ reading options (FILE optional when asked)."""
    if fn is None:
        return lambda f: input_options(f, file_required=file_required)
    return _compose(
        click.argument("file", metavar="FILE" if file_required else "[FILE]",
                       required=file_required),
        click.option("--delimiter", callback=_delimiter, metavar="D",
                     help="CSV/TSV delimiter: comma, tab, semicolon or whitespace "
                          "[default: sniffed]"),
        click.option("--header/--no-header", default=None,
                     help="First row holds class names [default: auto-detected]"),
        click.option("--key", metavar="NAME", help="NPZ/safetensors: the array to read [default: the only one, or logits]"),
        click.option("--axis", type=int, default=-1, show_default=True,
                     help="The class axis of the input array"),
    )(fn)


def output_options(fn):
    """Where results go: -o FILE and the stdout format."""
    return _compose(
        click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Write the result to FILE (.npy, .csv, .tsv, .json by extension); "
                          "written atomically"),
        click.option("--format", "fmt", type=click.Choice(["table", "csv", "tsv", "json", "npy"]),
                     default=None,
                     help="Format of stdout (with -o: of FILE) [default: table on stdout]"),
        click.option("--strict", is_flag=True,
                     help="Exit 1 when the result holds NaN or inf (for CI checks)"),
        click.option("--digits", type=click.IntRange(1, 17), default=None,
                     help="Significant digits shown in the table [default: 6]; with CSV/TSV "
                          "output, values rounded to N digits [default: the shortest form "
                          "that reads back exactly]"),
    )(fn)


def display_options(fn):
    """How much of the result the terminal table shows."""
    return _compose(
        click.option("--rows", "max_rows", type=click.IntRange(min=1), default=20, show_default=True,
                     help="Rows shown in the table (the rest are counted, not shown)"),
        click.option("--top-k", "top_k", type=click.IntRange(min=1), default=None,
                     help="Show each row's K most likely classes [default: all classes when "
                          "C <= 12, else the top 5]"),
    )(fn)


def numerics_options(fn):
    """Precision and temperature, shared by every command that computes."""
    return _compose(
        click.option("--dtype", type=click.Choice(DTYPE_NAMES), default=None,
                     help="Emulate computing in this format: the input is rounded to it and "
                          "every operation of the variant rounded as a framework would "
                          "[default: the accurate result in the input's float format]"),
        click.option("-t", "--temperature", type=float, default=1.0, show_default=True,
                     help="Divide the logits by T > 0 first"),
    )(fn)


def _scheduler(ctx, param, value):
    if value is None:
        return None
    from smx_cli.dask.run import check_scheduler  # no dask import: a name check

    try:
        return check_scheduler(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def scheduler_option(fn):
    """--scheduler: run on Dask (local threads/processes, or a distributed scheduler)."""
    return click.option(
        "--scheduler", metavar="threads|processes|synchronous|ADDRESS", callback=_scheduler,
        help="Run on Dask over a Zarr store or NPY shards ('shards/*.npy'): a local scheduler, "
             "or the ADDRESS of a running dask.distributed scheduler (tcp://host:8786); "
             "needs pip install 'smx-cli[dask]'")(fn)
