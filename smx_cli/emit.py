"""Delivering results: to a file (atomically) or to stdout, in one format.

Part of the CLI layer: it writes bytes the io module encodes, and refuses
what would destroy the user's input or flood a terminal with binary.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import click
import numpy as np
from rich.console import Console

from smx_cli import io
from smx_cli.errors import SmxError


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

    def encode(self, fmt: str) -> bytes:
        if fmt == "npy":
            return io.npy_bytes(self.matrix if self.array is None else self.array)
        if fmt in ("csv", "tsv"):
            if self.matrix.ndim > 2:
                raise SmxError(f"{fmt.upper()} holds 2-D tables; this result has shape "
                               f"{self.matrix.shape}: write .npy instead")
            return io.csv_text(self.matrix, self.columns, "," if fmt == "csv" else "\t").encode()
        if fmt == "json":
            arrays = self.json_arrays or {"values": self.matrix.reshape(-1, self.matrix.shape[-1])
                                          if self.matrix.ndim else self.matrix.reshape(1, 1)}
            return io.json_document(self.json_meta, arrays).encode()
        raise SmxError(f"unknown output format {fmt!r}")


def check_output_path(output: str | None, input_path: str, *others: str | None) -> None:
    """Refuse -o pointing at an input file: it would be destroyed before being read."""
    if output is None:
        return
    for src in (input_path, *others):
        if src and src != "-" and io.same_file(output, src):
            raise SmxError(f"{output}: refusing to overwrite the input file; choose another -o")


def write_file(path: str, payload: Payload, fmt: str | None) -> str:
    """Write ``payload`` to ``path`` atomically; returns the format used."""
    fmt = io.output_format(path, fmt if fmt != "table" else None)
    data = payload.encode(fmt)
    try:
        with io.atomic_output(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise SmxError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return fmt


class _PipeConsole(Console):
    """A stdout console that lets a closed pipe reach ``cli.main``.

    rich's default exits with status 1 when the reader goes away
    (``smx softmax x.csv | head -1``); smx stops quietly with status 0,
    the same as for the machine formats.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def stdout_console() -> Console:
    """The console tables and panels are printed on."""
    return _PipeConsole(highlight=False)


def write_stdout(payload: Payload, fmt: str) -> None:
    data = payload.encode(fmt)
    if fmt == "npy" and sys.stdout.isatty():
        raise SmxError("refusing to write binary NPY to a terminal; redirect stdout or use -o")
    click.get_binary_stream("stdout").write(data)
