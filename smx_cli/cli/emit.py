"""Delivering results: to a file (atomically) or to stdout, in one format.

Part of the CLI layer: it writes bytes the io module encodes, and refuses
what would destroy the user's input or flood a terminal with binary.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import click
import numpy as np
from rich.console import Console
from rich.segment import Segments

from smx_cli import io
from smx_cli.errors import SmxError, StdoutClosed


@dataclass
class Payload:
    """One result in every machine format: a matrix plus metadata.

    ``matrix`` is what CSV/TSV/NPY carry (2-D for text); ``json_meta`` and
    ``json_arrays`` what JSON carries; ``columns`` the CSV header (or None).
    """

    matrix: np.ndarray
    columns: list[str] | None
    json_meta: dict
    json_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # what NPY carries when it differs from ``matrix``: the result in the
    # input's own shape (a 1-D or 0-d input must not come back as (1, C))
    array: np.ndarray | None = None
    # row names (--id-column): the first column of CSV/TSV, ``ids`` in NPZ (NPY: numbers only)
    row_ids: list[str] | None = None
    # CSV/TSV values rounded to this many significant digits (None: shortest exact)
    digits: int | None = None
    # a table of named columns, each of its own type (ints, bools, floats, text):
    # when set, CSV/TSV write these columns, JSON a list of records under
    # ``records_name``, NPY one structured array, NPZ one array per column
    records: dict[str, np.ndarray] | None = None
    records_name: str = "records"

    def npy_array(self) -> np.ndarray:
        """What NPY carries: the structured record array, or the result's values."""
        if self.records is not None:
            return io.structured_array(self.records)
        return self.matrix if self.array is None else self.array

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """What NPZ carries: one array per record column; else ``values`` (and ``ids``)."""
        if self.records is not None:
            return dict(self.records)
        out = {"values": self.matrix if self.array is None else self.array}
        if self.columns is not None:
            out["classes"] = np.asarray([str(c) for c in self.columns], dtype=str)
        if self.row_ids is not None:
            out["ids"] = np.asarray(list(self.row_ids), dtype=str)
        return out

    def encode(self, fmt: str) -> bytes:
        if fmt == "npy":
            return io.npy_bytes(self.npy_array())
        if fmt == "npz":
            return io.npz_bytes(self.npz_arrays())
        if self.records is not None and fmt in ("csv", "tsv"):
            return io.records_text(self.records, "," if fmt == "csv" else "\t").encode()
        if self.records is not None and fmt == "json":
            return io.json_document(self.json_meta, self.json_arrays,
                                    {self.records_name: self.records}).encode()
        if fmt in ("csv", "tsv"):
            delim = "," if fmt == "csv" else "\t"
            text = io.csv_text(self.table(), self.columns, delim, digits=self.digits)
            if self.row_ids is not None:
                text = _with_ids(text, self.row_ids, self.columns is not None, delim)
            return text.encode()
        if fmt == "json":
            arrays = self.json_arrays or {"values": self.matrix.reshape(-1, self.matrix.shape[-1])
                                          if self.matrix.ndim else self.matrix.reshape(1, 1)}
            return io.json_document(self.json_meta, arrays).encode()
        raise SmxError(f"unknown output format {fmt!r}")

    def table(self) -> np.ndarray:
        """``matrix`` as a 2-D table for CSV/TSV.

        An N-d result (N > 2) has its class axis (``json_meta['axis']``, else
        the last) moved last and the other axes flattened into rows, in C
        order: row ``i`` of the table is ``moveaxis(result, axis, -1)
        .reshape(-1, C)[i]``. NPY keeps the shape.
        """
        m = self.matrix
        if m.ndim <= 2:
            return m
        axis = self.json_meta.get("axis", -1)
        if not isinstance(axis, int) or not -m.ndim <= axis < m.ndim:
            axis = -1
        m = np.moveaxis(m, axis, -1)
        return m.reshape(-1, m.shape[-1]) if m.size else m.reshape(0, m.shape[-1])


def _with_ids(text: str, ids: list[str], header: bool, delim: str) -> str:
    """CSV/TSV ``text`` with an ``id`` column in front."""
    lines = text.split("\n")
    out = []
    k = 0
    for n, line in enumerate(lines):
        if not line:
            out.append(line)
        elif header and n == 0:
            out.append(f"id{delim}{line}")
        else:
            out.append(f"{io.csv_field(str(ids[k]), delim)}{delim}{line}")
            k += 1
    return "\n".join(out)


def check_outputs(outputs, inputs=()) -> None:
    """Validate every output target before anything is computed or written.

    ``outputs`` holds ``(path, fmt)`` pairs (path None: not asked for; fmt
    None or "table": from the extension). Each must be writable (see
    :func:`smx_cli.io.check_output_target`: a file in an existing directory
    we can write in, not a device, stream or directory; symlinks written
    through), have a format, not be one of ``inputs`` (it would be destroyed
    before being read), and no two may name one file (however spelled, hard
    links included): all outputs are written, or none.
    """
    seen = {}
    for path, fmt in outputs:
        if path is None:
            continue
        io.check_output_target(path)
        io.output_format(path, fmt if fmt != "table" else None)
        for src in inputs:
            if src and src != "-" and io.same_file(path, src):
                raise SmxError(f"{path}: refusing to overwrite the input file {src}; "
                               "choose another output")
        target, inode = io.output_identity(path)
        for key in (target, inode):
            if key is not None and key in seen:
                raise SmxError(f"{path} and {seen[key]} name the same file; give each output "
                               "its own file")
        seen[target] = path
        if inode is not None:
            seen[inode] = path


def check_output_path(output: str | None, input_path: str, *others: str | None) -> None:
    """Refuse -o pointing at an input file, into a missing directory, or at a
    directory or device -- before any work. (One output; see check_outputs.)"""
    if output is None:
        return
    io.check_output_target(output)
    for src in (input_path, *others):
        if src and src != "-" and io.same_file(output, src):
            raise SmxError(f"{output}: refusing to overwrite the input file; choose another -o")


def note_npy_drops_ids(path: str) -> None:
    """Say on stderr that an NPY output cannot carry the --id-column ids."""
    click.echo(f"note: {path}: NPY holds numbers only, not the ids of --id-column; "
               "use .npz, .csv or .json to keep them", err=True)


def write_file(path: str, payload: Payload, fmt: str | None) -> str:
    """Write ``payload`` to ``path`` atomically; returns the format used."""
    return write_files([(path, payload, fmt)])[0]


def write_files(items) -> list[str]:
    """Write each ``(path, payload, fmt)`` atomically, all or none; the formats used.

    Every file is written to its temporary file first; they are renamed into
    place only when all are complete, so an error (a full disk, Ctrl-C) in
    the second leaves the first's old file untouched too.
    """
    items = [(path, payload, io.output_format(path, fmt if fmt != "table" else None))
             for path, payload, fmt in items if path is not None]
    path = None
    try:
        with ExitStack() as stack:
            for path, payload, fmt in items:
                fh = stack.enter_context(io.atomic_output(path, "wb"))
                if fmt == "npy":
                    # header, then the array's own memory in chunks: no encoded copy
                    io.write_npy(fh, payload.npy_array())
                elif fmt == "npz":
                    io.write_npz(fh, payload.npz_arrays())
                else:
                    io.write_chunks(fh, payload.encode(fmt))
            path = None  # the renames happen as the stack closes
        for path, payload, fmt in items:
            if fmt == "npy" and payload.row_ids is not None and payload.records is None:
                note_npy_drops_ids(path)
        path = None
    except OSError as exc:
        where = path or ", ".join(p for p, _, _ in items)
        raise SmxError(f"{where}: cannot write ({exc.strerror or exc}); nothing was written -- "
                       "free space or choose another -o") from None
    return [fmt for _, _, fmt in items]


class _PipeConsole(Console):
    """A stdout console that reports a closed pipe to ``cli.main``.

    rich's default exits with status 1 when the reader goes away
    (``smx softmax x.csv | head -1``); smx stops quietly with status 0,
    the same as for the machine formats.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise StdoutClosed


def print_progressively(console: Console, renderable, batch_lines: int = 256) -> None:
    """Print ``renderable`` a batch of lines at a time, not all at the end.

    rich renders a table row by row but ``Console.print`` writes only when
    all is rendered: ``smx ... --rows 100000 | head`` would render every row
    before ``head`` saw the first. Here each batch is written as it is
    rendered, so a closed pipe (:class:`StdoutClosed`) stops the work after
    at most one more batch.
    """
    batch, lines = [], 0
    for seg in console.render(renderable, console.options):
        batch.append(seg)
        if "\n" in seg.text:
            lines += 1
            if lines >= batch_lines:
                console.print(Segments(batch), end="")
                batch, lines = [], 0
    if batch:
        console.print(Segments(batch), end="")


def stdout_console() -> Console:
    """The console tables and panels are printed on."""
    return _PipeConsole(highlight=False)


def stderr_console() -> Console:
    """The console for messages: the diagnostics summary, ``wrote FILE``."""
    return Console(stderr=True, highlight=False)


def show(console: Console, *renderables, batch_lines: int = 256) -> None:
    """Print ``renderables`` on stdout as they render; piped, without trailing padding.

    On a terminal this is :func:`print_progressively`. In a pipe rich would
    pad every table line to the width it laid out -- noise for ``diff`` and
    ``grep`` -- so each line is written stripped, a batch at a time (a closed
    pipe stops the rendering early, as on a terminal).
    """
    parts = [r for r in renderables if r is not None]
    if console.is_terminal:
        for r in parts:
            print_progressively(console, r, batch_lines)
        return
    pending, out, lines = "", [], 0
    for r in parts:
        for seg in console.render(r, console.options):
            if seg.control:
                continue
            pending += seg.text
            if "\n" in pending:
                *done, pending = pending.split("\n")
                out += [ln.rstrip() + "\n" for ln in done]
                lines += len(done)
                if lines >= batch_lines:
                    write_stdout_bytes("".join(out).encode())
                    out, lines = [], 0
    if pending.rstrip():
        out.append(pending.rstrip() + "\n")
    if out:
        write_stdout_bytes("".join(out).encode())


class Messages:
    """What goes to stderr beside the data: ``wrote FILE``, the diagnostics summary.

    ``quiet`` silences both; ``verbose`` adds the full diagnostics panel.
    """

    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet, self.verbose = quiet, verbose
        self._console = None

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = stderr_console()
        return self._console

    def wrote(self, path: str | None) -> None:
        if path and not self.quiet:
            self.console.print(f"wrote {path}", style="dim", soft_wrap=True)

    def note(self, line: str) -> None:
        """A one-line remark on stderr (silenced by --quiet)."""
        if not self.quiet:
            self.console.print(line, style="yellow", soft_wrap=True, markup=False)

    def summary(self, line: str, panel=None) -> None:
        """The one-line summary (and, with --verbose, the panel) on stderr."""
        if self.quiet:
            return
        if self.verbose and panel is not None:
            self.console.print(panel)
        else:
            self.console.print(line, soft_wrap=True, markup=False)


def write_stdout_bytes(data: bytes) -> None:
    """Write ``data`` to stdout; a closed pipe raises :class:`StdoutClosed`."""
    out = sys.stdout.buffer
    try:
        io.write_chunks(out, data)
        out.flush()
    except BrokenPipeError:
        raise StdoutClosed from None
    except OSError as exc:
        raise SmxError(f"cannot write to standard output ({exc.strerror or exc}); "
                       "free space or redirect it elsewhere") from None


def write_stdout(payload: Payload, fmt: str) -> None:
    if fmt in ("npy", "npz") and sys.stdout.isatty():
        raise SmxError(f"refusing to write binary {fmt.upper()} to a terminal; redirect "
                       "stdout or use -o")
    data = payload.encode(fmt)
    write_stdout_bytes(data)


# jobs over this many input bytes get a progress bar (when stderr is a terminal)
PROGRESS_BYTES = 64 << 20


@contextmanager
def progress_bar(total_bytes: int, label: str = "smx"):
    """A rich progress bar on stderr for big jobs on a terminal; else a no-op.

    Yields ``advance(done, total)`` to call after each block.
    """
    if total_bytes < PROGRESS_BYTES or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("rows", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
