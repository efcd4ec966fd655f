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
    The file is cut into chunks of whole lines (about ``block_bytes``), each
    parsed to float64 by polars when installed (``pip install smx-cli[fast]``,
    imported only when a CSV is big enough to need it) or else by numpy;
    both parse every token to the correctly rounded float64, so the results
    are identical. Output floats are written in the shortest form that reads
    back exactly, as :func:`smx_cli.io.shortest_strings`.
"""
from __future__ import annotations

import io
import math
import os
from typing import Callable, Iterator

import numpy as np

from smx_cli.io import npyheader
from smx_cli.io.npyheader import check_npy_size

DEFAULT_BLOCK_BYTES = 64 << 20
# CSV chunks below this size are parsed by numpy even when polars is there
POLARS_MIN_BYTES = 4 << 20

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


def iter_npy_blocks(in_path: str, *, block_bytes: int = DEFAULT_BLOCK_BYTES
                    ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, total_rows, block)`` over an NPY file's rows, in bounded memory.

    The array is seen as (N, C) rows of its last axis (a 1-D array is one
    row, a 0-d one a single value). ``block`` is a view of one reused buffer,
    in native byte order: copy what you keep. A (0, C) block is yielded once
    for an empty array. Raises :class:`StreamError` for a truncated file.

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
        mm = None
        if fortran and len(shape) >= 2 and n and c:
            mm = np.memmap(in_path, dtype=dtype, mode="r", offset=data_start,
                           shape=shape, order="F").reshape(shape1, order="F")
        buf = np.empty(min(step, n) * c, dtype=dtype)
        for s0 in range(0, n, step):
            s1 = min(s0 + step, n)
            rows = s1 - s0
            if mm is not None:
                xb = np.ascontiguousarray(mm[s0:s1])
            else:
                view = buf[:rows * c]
                got = fi.readinto(memoryview(view).cast("B")) if rows * c else 0
                if got != view.nbytes:
                    raise StreamError(f"{in_path}: the data ends early "
                                      f"(row {s0 + got // max(1, c * dtype.itemsize)} of {n})")
                xb = view.reshape(rows, c)
            if native is not dtype:
                xb = xb.astype(native)
            yield s0, n, xb


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

    with smx_io.atomic_output(out_path, "wb") as fo:
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
                smx_io.write_chunks(fo, memoryview(np.ascontiguousarray(res, dtype=out_dtype)).cast("B"))
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
# CSV


def have_polars() -> bool:
    """True when the optional polars engine can be imported."""
    import importlib.util

    return importlib.util.find_spec("polars") is not None


def _parse_numpy(chunk: bytes, delimiter: str, n_cols: int | None) -> np.ndarray:
    lines = chunk.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return np.empty((0, n_cols or 0))
    tokens = chunk.replace(delimiter.encode(), b" ").split()
    # float(bytes) is Python's correctly rounded parser, also for nan/inf
    vals = np.array([float(t) for t in tokens], dtype=np.float64)
    width = len(lines[0].split(delimiter.encode()))
    if vals.size != width * len(lines):
        raise StreamError("rows of different lengths in the CSV")
    return vals.reshape(len(lines), width)


def _parse_polars(chunk: bytes, delimiter: str, n_cols: int | None) -> np.ndarray:
    import polars as pl

    df = pl.read_csv(io.BytesIO(chunk), has_header=False, separator=delimiter,
                     infer_schema=False, truncate_ragged_lines=False)
    if df.width == 0:
        return np.empty((0, n_cols or 0))
    # parse as text, then to float64 by polars' correctly rounded parser
    out = df.select(pl.all().str.strip_chars().cast(pl.Float64, strict=True)).to_numpy()
    return np.ascontiguousarray(out, dtype=np.float64)


def iter_csv_blocks(path: str, *, delimiter: str = ",", header: bool = False,
                    block_bytes: int = DEFAULT_BLOCK_BYTES, engine: str | None = None,
                    progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Yield float64 (rows, C) blocks of a numeric CSV, about ``block_bytes`` each.

    Parameters
    ----------
    path : str
    delimiter : str
    header : bool
        Skip the first line.
    block_bytes : int
        Bytes of text per block (cut at line ends).
    engine : {None, 'polars', 'numpy'}
        ``None``: polars when installed and the file is big enough, else numpy.
        Both give identical float64 values.
    progress : callable or None
        ``progress(bytes_done, bytes_total)`` after each block.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("1,2\\n3,4\\n")
    >>> [b.tolist() for b in iter_csv_blocks(p, engine="numpy")]
    [[[1.0, 2.0], [3.0, 4.0]]]
    """
    size = os.path.getsize(path)
    if engine is None:
        engine = "polars" if size >= POLARS_MIN_BYTES and have_polars() else "numpy"
    parse = _parse_polars if engine == "polars" else _parse_numpy
    n_cols = None
    done = 0
    with open(path, "rb") as fh:
        if header:
            done += len(fh.readline())
        rest = b""
        while True:
            data = fh.read(block_bytes)
            if not data and not rest:
                break
            chunk = rest + data
            if data:
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:  # one line longer than a block: read on
                    rest = chunk
                    continue
                chunk, rest = chunk[:cut], chunk[cut:]
            else:
                rest = b""
            done += len(chunk)
            if chunk.strip():
                block = parse(chunk.replace(b"\r\n", b"\n"), delimiter, n_cols)
                if n_cols is not None and block.shape[1] != n_cols and block.shape[0]:
                    raise StreamError("rows of different lengths in the CSV")
                n_cols = block.shape[1]
                yield block
            if progress is not None:
                progress(done, size)


def csv_lines(values: np.ndarray, delimiter: str = ",") -> str:
    """Rows as delimited text, floats in shortest exact form, one per line.

    The same strings as :func:`smx_cli.io.shortest_strings`: ``repr`` for
    float64, numpy's shortest round-trip form for float32/float16, the
    float32 form for bfloat16.

    Examples
    --------
    >>> csv_lines(np.array([[0.1, 1e-05], [1.0, float("nan")]]))
    '0.1,1e-05\\n1.0,nan\\n'
    """
    a = np.atleast_2d(values)
    if a.dtype.name == "bfloat16":
        a = a.astype(np.float32)
    if a.dtype == np.float64 or a.dtype.kind in "iub":
        rows = a.tolist()
        text = "\n".join(delimiter.join(map(repr, r)) for r in rows)
    else:
        text = "\n".join(delimiter.join(map(str, r)) for r in a)
    return text + "\n" if a.shape[0] else ""


def write_csv_blocks(out_path: str, blocks, *, delimiter: str = ",",
                     columns: list[str] | None = None) -> int:
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
    rows = 0
    from smx_cli import io as smx_io  # atomic, Ctrl-C-safe output shared with every command

    with smx_io.atomic_output(out_path, "w") as fo:
        if columns is not None:
            fo.write(delimiter.join(columns) + "\n")
        for b in blocks:
            fo.write(csv_lines(b, delimiter))
            rows += np.atleast_2d(b).shape[0]
    return rows


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
    return write_csv_blocks(out_path, blocks, delimiter=delimiter, columns=columns)
