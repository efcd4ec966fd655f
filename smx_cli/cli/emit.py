"""Delivering results: to a file (atomically) or to stdout, in one format.

Part of the CLI layer: it writes bytes the io module encodes, and refuses
what would destroy the user's input or flood a terminal with binary.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

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
    # CSV/TSV values rounded to this many significant digits (None: shortest exact)
    digits: int | None = None

    def encode(self, fmt: str) -> bytes:
        if fmt == "npy":
            return io.npy_bytes(self.matrix if self.array is None else self.array)
        if fmt in ("csv", "tsv"):
            return io.csv_text(self.table(), self.columns, "," if fmt == "csv" else "\t",
                               digits=self.digits).encode()
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
                    io.write_npy(fh, payload.matrix if payload.array is None else payload.array)
                else:
                    io.write_chunks(fh, payload.encode(fmt))
            path = None  # the renames happen as the stack closes
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
    data = payload.encode(fmt)
    if fmt == "npy" and sys.stdout.isatty():
        raise SmxError("refusing to write binary NPY to a terminal; redirect stdout or use -o")
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
