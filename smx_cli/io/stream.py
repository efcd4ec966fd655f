"""Streaming I/O engine: big NPY and CSV files in row blocks, bounded memory.

No click, no rich: the CLI passes a ``progress`` callback for its bar.

NPY -> NPY (:func:`stream_npy`)
    The input header is parsed with numpy's own reader (``allow_pickle`` is
    never on: object arrays are refused); C-order data is read with
    ``readinto`` into one reusable block buffer, so resident memory does not
    grow with the file (a memory map would count every page it touched). The
    output header is written first, then each block as it is computed, into a
    temporary file in the output's directory that replaces the output only
    once complete (``os.replace``); on any exception, KeyboardInterrupt
    included, the temporary file is removed and the output left untouched.

CSV (:func:`iter_csv_blocks`, :func:`write_csv_blocks`, :func:`stream_csv`)
    Thin wrappers over :mod:`smx_cli.io.csv_engine` (polars for big files,
    the exact parser otherwise; identical values). Output floats are written
    in the shortest form that reads back exactly, as
    :func:`smx_cli.io.shortest_strings`.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import numpy as np

from smx_cli.io import csv_engine, npyheader, overlap
from smx_cli.io.npyheader import check_npy_size

DEFAULT_BLOCK_BYTES = 64 << 20

Progress = Callable[[int, int], None]


class StreamError(ValueError):
    """A file the streaming engine cannot read (bad header, short data, ...)."""


def _read_header(fh, source: str):
    try:
        return npyheader.read_npy_header(fh, source)
    except ValueError as exc:
        raise StreamError(str(exc)) from None


# ----------------------------------------------------------------------------
# NPY


def read_npy_header(fh, source: str | None = None) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of the NPY file open at its start.

    Leaves ``fh`` at the first data byte. The checks are the whole-array
    reader's (:func:`smx_cli.io.npyheader.read_npy_header`): both paths accept
    and refuse the same files.
    """
    head = _read_header(fh, source or str(getattr(fh, "name", "NPY file")))
    return head.shape, head.dtype, head.fortran


def _write_header(fh, shape: tuple[int, ...], dtype: np.dtype) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(fh, header)
    except ValueError:  # header too long for version 1.0
        np.lib.format.write_array_header_2_0(fh, header)


def block_rows_for(n_cols: int, itemsize: int, block_bytes: int) -> int:
    """Rows per block so that one input block is about ``block_bytes``."""
    return max(1, block_bytes // max(1, n_cols * itemsize))


def npy_info(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an NPY file's header declares (nothing else is read).

    Raises :class:`StreamError` when the file's size does not match the
    header (truncated, or with trailing bytes).
    """
    with open(path, "rb") as fh:
        head = _read_header(fh, path)
    try:
        check_npy_size(head, os.path.getsize(path) - head.offset, path)
    except ValueError as exc:
        raise StreamError(str(exc)) from None
    shape, dtype = head.shape, head.dtype
    return shape, dtype


def iter_npy_blocks(in_path: str, *, block_bytes: int = DEFAULT_BLOCK_BYTES,
                    prefetch: bool = True) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, total_rows, block)`` over an NPY file's rows, in bounded memory.

    The array is seen as (N, C) rows of its last axis (a 1-D array is one
    row, a 0-d one a single value). ``block`` is a view of a reused buffer,
    in native byte order, valid until the next block is requested: copy what
    you keep. With ``prefetch`` the next block is read on a thread meanwhile
    (two buffers). A (0, C) block is yielded once for an empty array. Raises
    :class:`StreamError` for a truncated file.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(p, np.arange(6.0).reshape(3, 2))
    >>> [(s, b.tolist()) for s, _, b in iter_npy_blocks(p, block_bytes=32)]
    [(0, [[0.0, 1.0], [2.0, 3.0]]), (2, [[4.0, 5.0]])]
    """
    with open(in_path, "rb") as fi:
        shape, dtype, fortran = read_npy_header(fi, in_path)
        data_start = fi.tell()
        if len(shape) == 0:
            shape1 = (1, 1)
        elif len(shape) == 1:
            shape1 = (1, shape[0])
        else:
            shape1 = (math.prod(shape[:-1]), shape[-1])  # Python ints: no overflow
        n, c = shape1
        native = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
        if n == 0 or c == 0:
            # no values: one empty block, however many rows or classes the
            # header claims (the work is bounded by the data, not the header)
            yield 0, n, np.empty((n, c), dtype=native)
            return
        step = block_rows_for(c, dtype.itemsize, block_bytes)
        if fortran and len(shape) >= 2:
            mm = np.memmap(in_path, dtype=dtype, mode="r", offset=data_start,
                           shape=shape, order="F").reshape(shape1, order="F")
            for s0 in range(0, n, step):
                xb = np.ascontiguousarray(mm[s0:s0 + step])
                yield s0, n, (xb.astype(native) if native is not dtype else xb)
            return

        def fill(k, buf):
            s0 = k * step
            rows = min(s0 + step, n) - s0
            view = buf[:rows * c]
            got = fi.readinto(memoryview(view).cast("B"))
            if got != view.nbytes:
                raise StreamError(f"{in_path}: the data ends early "
                                  f"(row {s0 + got // max(1, c * dtype.itemsize)} of {n})")
            xb = view.reshape(rows, c)
            return s0, n, (xb.astype(native) if native is not dtype else xb)

        steps = -(-n // step)
        if steps == 1 or not prefetch:
            buf = np.empty(min(step, n) * c, dtype=dtype)
            for k in range(steps):
                yield fill(k, buf)
            return
        # the next block is read on a thread while this one is used (two buffers)
        yield from overlap.prefetched(fill, steps, [np.empty(step * c, dtype=dtype)
                                                    for _ in range(2)])


def stream_npy(in_path: str, out_path: str, fn: Callable[[np.ndarray], np.ndarray], *,
               block_bytes: int = DEFAULT_BLOCK_BYTES, progress: Progress | None = None
               ) -> tuple[int, ...]:
    """Apply a row-block function to an NPY file, writing an NPY file, streamed.

    Parameters
    ----------
    in_path, out_path : str
        Input and output ``.npy`` paths (they may be the same file: the output
        replaces it only when complete).
    fn : callable
        ``fn(block) -> array``: ``block`` is a (rows, C) view of the input (a
        reused buffer: copy it if you keep it), the result must have as many
        rows; its column count and dtype must be the same for every block.
        Called once on a (0, C) block when the input has no rows.
    block_bytes : int
        Input bytes per block (default 64 MiB). Peak memory is about
        ``block_bytes`` times (1 + what ``fn`` allocates per input byte).
    progress : callable or None
        ``progress(rows_done, rows_total)``, called after each block.

    Returns
    -------
    tuple
        The output's shape: the input's leading axes, then the result's
        columns. A 1-D input is one row.

    Examples
    --------
    >>> import tempfile, os
    >>> from smx_cli.core.softmax import compute
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.array([[1.0, 2.0, 3.0]]))
    >>> stream_npy(os.path.join(d, "x.npy"), os.path.join(d, "p.npy"),
    ...            lambda xb: compute(xb).values)
    (1, 3)
    >>> np.load(os.path.join(d, "p.npy")).round(4)
    array([[0.09  , 0.2447, 0.6652]])
    """
    shape, _ = npy_info(in_path)
    lead = tuple(shape[:-1]) if len(shape) >= 2 else ()
    from smx_cli import io as smx_io  # atomic, Ctrl-C-safe output shared with every command

    with smx_io.atomic_output(out_path, "wb") as fo, \
            overlap.BackgroundWriter(lambda data: smx_io.write_chunks(fo, data)) as writer:
        # the last block is written on a thread while the next is read and computed
        out_shape = None
        out_dtype = None
        for s0, n, xb in iter_npy_blocks(in_path, block_bytes=block_bytes):
            rows = xb.shape[0]
            res = np.asarray(fn(xb))
            if res.ndim == 1:
                res = res.reshape(rows, -1) if rows else res.reshape(0, -1 if res.size else 0)
            if res.shape[0] != rows:
                raise ValueError(f"the block function returned {res.shape[0]} rows for {rows}")
            if out_shape is None:
                out_dtype = res.dtype
                if out_dtype.name == "bfloat16":
                    out_dtype = np.dtype(np.float32)
                out_shape = lead + (res.shape[1],)
                _write_header(fo, out_shape, out_dtype)
            if res.shape[1] != out_shape[-1]:
                raise ValueError("the block function changed its column count")
            if res.size:
                out = np.ascontiguousarray(res, dtype=out_dtype)
                if out is xb or np.shares_memory(out, xb):  # xb's buffer is reused: keep a copy
                    out = out.copy()
                writer.put(memoryview(out).cast("B"))
            if progress is not None:
                progress(s0 + rows, n)
    return out_shape


def blocked_copy(src: str, dst: str, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
    """Copy a file through one reusable buffer: the speed floor of a stream."""
    buf = bytearray(block_bytes)
    mv = memoryview(buf)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while True:
            got = fi.readinto(buf)
            if not got:
                break
            fo.write(mv[:got])


# ----------------------------------------------------------------------------
# CSV: thin wrappers over the text engine (smx_cli.io.csv_engine)

_ENGINES = {None: None, "polars": "fast", "fast": "fast", "numpy": "exact", "exact": "exact"}


def have_polars() -> bool:
    """True when the polars engine can be imported."""
    import importlib.util

    return importlib.util.find_spec("polars") is not None


def iter_csv_blocks(path: str, *, delimiter: str = ",", header: bool = False,
                    block_bytes: int = DEFAULT_BLOCK_BYTES, engine: str | None = None,
                    progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Yield float64 (rows, C) blocks of a numeric CSV, about ``block_bytes`` each.

    ``engine``: ``'polars'`` (fast) or ``'numpy'`` (exact); None picks by
    size. Both give identical values (see :mod:`smx_cli.io.csv_engine`).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("1,2\\n3,4\\n")
    >>> [b.tolist() for b in iter_csv_blocks(p, engine="numpy")]
    [[[1.0, 2.0], [3.0, 4.0]]]
    """
    for values, _ in csv_engine.iter_blocks(path, delimiter=delimiter, header=header,
                                            block_bytes=block_bytes,
                                            engine=_ENGINES[engine], progress=progress):
        yield values


def csv_lines(values: np.ndarray, delimiter: str = ",") -> str:
    """Rows as delimited text, shortest exact values (:func:`smx_cli.io.shortest_strings`).

    Examples
    --------
    >>> csv_lines(np.array([[0.1, 1e-05], [1.0, float("nan")]]))
    '0.1,1e-05\\n1.0,nan\\n'
    """
    return csv_engine.format_rows(values, delimiter, engine="exact").decode()


def write_csv_blocks(out_path: str, blocks, *, delimiter: str = ",",
                     columns: list[str] | None = None, digits: int | None = None,
                     size_hint: int = 0) -> int:
    """Write an iterable of 2-D blocks as one CSV, atomically. Returns the rows.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "p.csv")
    >>> write_csv_blocks(p, [np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])])
    2
    >>> open(p).read()
    '0.5,0.5\\n1.0,0.0\\n'
    """
    from smx_cli import io as smx_io  # atomic, Ctrl-C-safe output shared with every command

    with smx_io.atomic_output(out_path, "wb") as fo:
        writer = csv_engine.TextWriter(fo, delimiter, columns=columns, digits=digits,
                                       size_hint=size_hint)
        for b in blocks:
            writer.write(b)
        if writer.columns is not None:
            writer.write(np.empty((0, len(columns))))
    return writer.rows


def stream_csv(in_path: str, out_path: str, fn: Callable[[np.ndarray], np.ndarray], *,
               delimiter: str = ",", header: bool = False, columns: list[str] | None = None,
               block_bytes: int = 16 << 20, engine: str | None = None,
               progress: Progress | None = None) -> int:
    """CSV in, ``fn`` per row block, CSV out (shortest exact floats), atomically.

    ``fn`` receives float64 blocks; cast inside it if the input format
    should be another. ``progress(bytes_done, bytes_total)`` reports input
    bytes. Returns the number of rows written.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "x.csv"), "w").write("0,0\\n")
    >>> stream_csv(os.path.join(d, "x.csv"), os.path.join(d, "p.csv"), lambda b: b + 1)
    1
    """
    blocks = (fn(b) for b in iter_csv_blocks(in_path, delimiter=delimiter, header=header,
                                             block_bytes=block_bytes, engine=engine,
                                             progress=progress))
    return write_csv_blocks(out_path, blocks, delimiter=delimiter, columns=columns,
                            size_hint=os.path.getsize(in_path))


class NpyRowWriter:
    """Append (rows, C) blocks to an open binary file as one NPY array.

    For inputs whose row count is not known until their end (CSV): the
    header is written first with room for any row count, and rewritten in
    place, same length, by :meth:`finish` once the rows are counted.

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> w = NpyRowWriter(buf)
    >>> w.write(np.ones((2, 3))); w.write(np.zeros((1, 3))); w.finish()
    (3, 3)
    >>> np.load(io.BytesIO(buf.getvalue())).sum().item()
    6.0
    """

    def __init__(self, fh):
        self.fh = fh
        self.start = fh.tell()
        self.shape = None
        self.dtype = None
        self.header_len = 0

    def _header(self, rows: int) -> bytes:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({rows}, {self.shape}), }}"
        return text.encode("latin1")

    def write(self, block: np.ndarray) -> None:
        from smx_cli import io as smx_io

        block = np.atleast_2d(block)
        if block.dtype.name == "bfloat16":
            block = block.astype(np.float32)
        if self.shape is None:
            self.shape, self.dtype, self.rows = block.shape[1], block.dtype, 0
            # room for any row count: the longest header this array can need
            body = self._header(10 ** 20)
            self.header_len = -(-(len(body) + 11) // 64) * 64
            self.fh.write(self._padded(0))
        if block.shape[1] != self.shape:
            raise ValueError("the block function changed its column count")
        smx_io.write_chunks(self.fh, memoryview(np.ascontiguousarray(block, dtype=self.dtype))
                            .cast("B"))
        self.rows += block.shape[0]

    def _padded(self, rows: int) -> bytes:
        body = self._header(rows)
        pad = self.header_len - 10 - len(body) - 1
        return b"\x93NUMPY\x01\x00" + (self.header_len - 10).to_bytes(2, "little") + body \
            + b" " * pad + b"\n"

    def finish(self) -> tuple[int, int]:
        """Write the final header; returns the array's shape."""
        if self.shape is None:  # no block: an empty (0, 0) array
            self.dtype, self.shape, self.rows = np.dtype(np.float64), 0, 0
            self.header_len = 64 * 2
            self.fh.write(self._padded(0))
            return (0, 0)
        end = self.fh.tell()
        self.fh.seek(self.start)
        self.fh.write(self._padded(self.rows))
        self.fh.seek(end)
        return (self.rows, self.shape)


def write_row_blocks(out_path: str, out_fmt: str, blocks, *, columns=None,
                     digits: int | None = None, size_hint: int = 0) -> tuple[int, int]:
    """Write result blocks as one NPY, CSV or TSV file, atomically, in bounded memory.

    ``columns`` is a list of names, or a callable returning them (or None),
    called when the first block has arrived (for CSV/TSV headers). Returns
    the (rows, columns) written.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "p.tsv")
    >>> write_row_blocks(p, "tsv", iter([np.array([[0.5, 0.25]])]), columns=["a", "b"])
    (1, 2)
    >>> open(p).read()
    'a\\tb\\n0.5\\t0.25\\n'
    """
    from smx_cli import io as smx_io  # atomic, Ctrl-C-safe output shared with every command

    width = 0
    with smx_io.atomic_output(out_path, "wb") as fo:
        if out_fmt == "npy":
            writer = NpyRowWriter(fo)
            for b in blocks:
                writer.write(b)
            return writer.finish()
        delim = "\t" if out_fmt == "tsv" else ","
        writer = csv_engine.TextWriter(fo, delim, digits=digits, size_hint=size_hint)
        for b in blocks:
            if writer.rows == 0 and width == 0:
                names = columns() if callable(columns) else columns
                writer.columns = names
            b = np.atleast_2d(b)
            width = b.shape[1]
            writer.write(b)
    return writer.rows, width
