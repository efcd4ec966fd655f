"""Option bundles shared by the commands: one decorator adds one family of flags."""
from __future__ import annotations

import os
import sys

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


#: file extensions -o understands, and the format each one means
EXTENSIONS = {".npy": "npy", ".npz": "npz", ".csv": "csv", ".tsv": "tsv", ".txt": "csv",
              ".json": "json"}


def resolve_formats(output: str | None, fmt: str | None,
                    file_formats=("npy", "csv", "tsv", "json")) -> tuple[str | None, str]:
    """(format of -o FILE or None, format of stdout) -- or a usage error (exit 2).

    The extension of FILE decides its format; ``--format`` naming another is a
    conflict, an unknown or missing extension names the choices, and binary
    NPY is never written to a terminal. With -o, stdout carries no data
    (``"none"``).
    """
    if output is not None:
        ext = os.path.splitext(output)[1].lower()
        choices = ", ".join(e for e in EXTENSIONS if EXTENSIONS[e] in file_formats
                            and e != ".txt")
        if ext not in EXTENSIONS or EXTENSIONS[ext] not in file_formats:
            raise click.BadParameter(
                f"cannot tell the format of {output!r} from "
                f"{repr(ext) if ext else 'no extension'}: use {choices}", param_hint="'-o'")
        by_ext = EXTENSIONS[ext]
        if fmt is not None and fmt != by_ext:
            raise click.UsageError(f"-o {output} is {by_ext} by its extension but --format "
                                   f"says {fmt}: drop --format or change the extension")
        return by_ext, "none"
    out = fmt or "table"
    if out in ("npy", "npz") and sys.stdout.isatty():
        raise click.UsageError(f"--format {out} writes binary data: redirect stdout "
                               f"(> out.{out}) or use -o FILE.{out}")
    return None, out


def resolve_input(file: str | None) -> str:
    """FILE, or ``-`` (stdin) when FILE is omitted and stdin is not a terminal."""
    if file is not None:
        return file
    if sys.stdin is None or sys.stdin.isatty():
        raise click.UsageError("missing FILE: give a file of logits, or pipe them to stdin")
    return "-"


#: the file formats -o and --format can name (the commands' data formats)
OUTPUT_FORMATS = ("npy", "npz", "csv", "tsv", "json")


def _column_list(ctx, param, value):
    if value is None:
        return None
    from smx_cli.io.columns import parse_column_list
    from smx_cli.errors import SmxError

    try:
        return parse_column_list(value)
    except SmxError as exc:
        raise click.BadParameter(str(exc)) from None


def column_options(fn):
    """--columns / --drop-columns: which columns of FILE hold the logits."""
    return _compose(
        click.option("--columns", callback=_column_list, metavar="LIST",
                     help="The logit columns of FILE, in this order: header names or 0-based "
                          "indices, comma-separated (START:END for a range) [default: all "
                          "but the label and id columns]"),
        click.option("--drop-columns", callback=_column_list, metavar="LIST",
                     help="Columns of FILE that are not logits: left out (names or indices)"),
    )(fn)


def torch_cpu_option(fn):
    """--torch-cpu: which of PyTorch's CPU kernels the torch emulation reproduces."""
    return click.option(
        "--torch-cpu", type=click.Choice(["auto", "avx512", "avx2"]), default="auto",
        show_default=True,
        help="PyTorch emulation: reproduce torch's AVX-512 kernels (16 float32 lanes) or "
             "AVX2/default ones (8); auto: what torch runs on this machine "
             "(torch.backends.cpu.get_cpu_capability(), else ATEN_CPU_CAPABILITY, else "
             "the CPU flags)")(fn)


def torch_lanes(torch_cpu: str) -> int | None:
    """The lanes --torch-cpu names (None: this machine's, found when needed)."""
    from smx_cli.core.emulate_torch import TORCH_CPUS

    return None if torch_cpu == "auto" else TORCH_CPUS[torch_cpu]


def message_options(fn=None, *, panel: str = "diagnostics", table: str = "values"):
    """--summary, -q/--quiet, -v/--verbose: what is said beside the data.

    The contract of every command that writes data: with data on stdout or
    ``-o FILE``, stdout carries only the data (or nothing), and stderr a
    one-line summary and ``wrote FILE`` (--quiet: neither; --verbose: the
    full panel instead of the line).
    """
    if fn is None:
        return lambda f: message_options(f, panel=panel, table=table)
    return _compose(
        click.option("--summary", "summary_only", is_flag=True,
                     help=f"Show only the {panel} panel, not the {table} table"),
        click.option("-q", "--quiet", is_flag=True,
                     help="No messages on stderr (the one-line summary, 'wrote FILE')"),
        click.option("-v", "--verbose", is_flag=True,
                     help=f"With data on stdout or -o: the full {panel} panel on stderr"),
    )(fn)


def output_options(fn):
    """Where results go: -o FILE, the stdout format, and how much is said on stderr."""
    return _compose(
        click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Write the result to FILE, atomically; its extension (.npy, "
                          ".npz, .csv, .tsv, .json) decides the format"),
        click.option("--format", "fmt",
                     type=click.Choice(["table", "csv", "tsv", "json", "npy", "npz"]),
                     default=None,
                     help="Format of stdout [default: table]; with -o it must match "
                          "FILE's extension"),
        click.option("--strict", is_flag=True,
                     help="Exit 1 when the result holds NaN or inf (for CI checks)"),
        message_options,
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
                     help="Emulate computing in this format: the input is rounded to it, "
                          "then every operation (--emulate strict) or PyTorch's kernel "
                          "(--emulate torch) [default: the accurate result in the input's "
                          "float format]"),
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
