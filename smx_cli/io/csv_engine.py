"""CSV/TSV at engine speed, still exact: one text path for every command.

Reading
    The first lines settle the layout (delimiter, header, width: the exact
    parser's rules, :func:`smx_cli.io.text.settle`); the rest is cut at line
    ends into blocks of about ``block_bytes`` (bounded memory whatever the
    file size), each parsed by polars (``read_csv`` with an explicit Float64
    or Float32 schema: correctly rounded, also straight to float32) when the
    file is big enough to repay importing it, else by the exact parser
    (:mod:`smx_cli.io.text`). A block goes to polars only if it is made of
    bytes the exact grammar allows (digits, ``.eE+-``, the letters of
    nan/inf/infinity, blanks, the delimiter, ``\\n``); polars' result is
    kept only if it has no null (polars turns a short row, an empty field or
    a blank line into a silent null), the right shape, and no infinity that
    an inf token did not spell (an overflow). Otherwise the block is parsed
    again by the exact parser, which gives the same values or the error with
    the file's own line and column. Both paths accept exactly the same
    inputs (``tests/test_csv_engine.py`` runs each case through both).

Writing
    :func:`format_rows` writes each value in the shortest form that reads
    back exactly in the array's own format (float16 and bfloat16 as
    themselves, float32 as float32), integers as integers, or rounded to
    ``digits`` significant digits on request. Big blocks are written by
    polars' ``write_csv`` (shortest, exact), small ones by Python's repr and
    numpy's shortest float32 form; the digits are the same, the notation may
    differ (``1e-05`` or ``0.00001``).

The engine is chosen per file: ``SMX_CSV_ENGINE=exact`` or ``fast`` forces
one (``auto``, the default, picks polars from :data:`FAST_MIN_BYTES` up).
Raises SmxError; never prints.
"""
from __future__ import annotations

import io as _io
import os
import sys
from typing import Callable, Iterator

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.io import text as _text

ENGINE_ENV = "SMX_CSV_ENGINE"
#: files from this size up are parsed by polars: importing it costs ~0.2 s, which
#: the exact parser spends on ~3 MB (``python bench/csv.py --threshold``: at 4 MB
#: polars already takes less CPU, at 1 MB the exact parser does)
FAST_MIN_BYTES = 4 << 20
#: results with at least this many values are written by polars
FAST_MIN_VALUES = 500_000
#: bytes of text per block: peak memory is a few times this
BLOCK_BYTES = 8 << 20
#: values formatted at once when writing a stream (bounds the text held in memory)
WRITE_VALUES = 1 << 19
#: from this many columns a block is read as one column (polars is slow with
#: thousands of columns) after checking each line's delimiter count
WIDE_COLUMNS = 500

Progress = Callable[[int, int], None]
_GRAMMAR = b"0123456789.eE+- \t\r\ninfatyINFATY"


def engine_for(size: int) -> str:
    """``'fast'`` (polars) or ``'exact'`` for a text of ``size`` bytes.

    ``SMX_CSV_ENGINE=exact|fast`` forces one; ``fast`` needs polars.

    Examples
    --------
    >>> engine_for(1000) if ENGINE_ENV not in os.environ else "exact"
    'exact'
    """
    forced = os.environ.get(ENGINE_ENV, "auto").strip().lower()
    if forced == "exact":
        return "exact"
    if forced != "fast" and size < FAST_MIN_BYTES:
        return "exact"
    try:
        import polars  # noqa: F401 - imported here, only for big files
    except ImportError:
        return "exact"
    return "fast"


# ----------------------------------------------------------------------------
# reading


class _Bytes:
    """A file or an in-memory buffer read in pieces."""

    def __init__(self, path_or_data, size: int):
        self.data = path_or_data if isinstance(path_or_data, (bytes, bytearray, memoryview)) \
            else None
        self.fh = None if self.data is not None else open(path_or_data, "rb")
        self.pos = 0
        self.size = size

    def read(self, n: int) -> bytes:
        if self.fh is not None:
            return self.fh.read(n)
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += len(out)
        return out

    def close(self):
        if self.fh is not None:
            self.fh.close()


def iter_blocks(path_or_data, source: str | None = None, *, delimiter: str | None = None,
                header: bool | None = None, dtype=np.float64, block_bytes: int = BLOCK_BYTES,
                engine: str | None = None, progress: Progress | None = None
                ) -> Iterator[tuple[np.ndarray, _text.Layout]]:
    """Yield ``(values, layout)`` row blocks of a CSV/TSV file or bytes, in bounded memory.

    Parameters
    ----------
    path_or_data : str or bytes
        A file name, or the text's bytes.
    source : str, optional
        The name errors use (default: the path).
    delimiter, header :
        As for :func:`smx_cli.io.read_array` (sniffed / auto-detected when None).
    dtype : float64 or float32
        float32 is rounded once, from the decimal token.
    block_bytes : int
        Bytes of text per block (cut at line ends).
    engine : {None, 'fast', 'exact'}
        None: :func:`engine_for` the size.
    progress : callable, optional
        ``progress(bytes_done, bytes_total)`` after each block.

    Examples
    --------
    >>> blocks = iter_blocks(b"a,b\\n1,2\\n3,4\\n5,6\\n", "<doc>", block_bytes=8)
    >>> [(v.tolist(), lay.names) for v, lay in blocks]
    [([[1.0, 2.0], [3.0, 4.0]], ['a', 'b']), ([[5.0, 6.0]], ['a', 'b'])]
    """
    if isinstance(path_or_data, (bytes, bytearray, memoryview)):
        size = len(path_or_data)
    else:
        size = os.path.getsize(path_or_data)
    source = source if source is not None else str(path_or_data)
    engine = engine or engine_for(size)
    src = _Bytes(path_or_data, size)
    try:
        yield from _blocks(src, source, delimiter, header, np.dtype(dtype), block_bytes,
                           engine, progress)
    finally:
        src.close()


def _blocks(src: _Bytes, source, delimiter, header, dtype, block_bytes, engine, progress):
    # the first lines settle the layout: read until 21 content lines (the
    # sniffer looks at 20) or the end
    head = b""
    eof = False
    while not eof:
        data = src.read(1 << 20)
        eof = not data
        head += data
        cut = head.rfind(b"\n") + 1
        if eof or len(_text.content_lines(_text.decode(head[:cut], source))) > 21:
            break
    bom = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    cut = len(head) if eof else head.rfind(b"\n") + 1
    numbered = _text.content_lines(_text.decode(head[:cut], source))
    layout = _text.settle(numbered, source, delimiter=delimiter, header=header)
    start, line = bom, 1
    if layout.names is not None:  # data start after the header's line
        for _ in range(layout.header_line):
            start = head.index(b"\n", start) + 1 if b"\n" in head[start:] else len(head)
        line = layout.header_line + 1
    buf = head[start:]
    done = start
    rows = 0
    while buf or not eof:
        while not eof and len(buf) < block_bytes:
            data = src.read(block_bytes)
            eof = not data
            buf += data
        if eof and len(buf) <= block_bytes:
            cut = len(buf)
        else:
            cut = buf.rfind(b"\n", 0, block_bytes) + 1 or buf.find(b"\n", block_bytes) + 1
        if cut == 0 and not eof:  # a line longer than a block: read on
            data = src.read(block_bytes)
            eof = not data
            buf += data
            continue
        chunk, buf = (buf[:cut], buf[cut:]) if cut else (buf, b"")
        if chunk:
            values = _parse_block(chunk, source, layout, dtype, engine, line, done)
            rows += values.shape[0]
            line += chunk.count(b"\n")
            done += len(chunk)
            if values.shape[0]:
                yield values, layout
        if progress is not None:
            progress(done, src.size)
    if rows == 0:
        if layout.names is not None:
            raise _text.no_rows_error(source, layout, header, numbered[0][1])
        raise SmxError(f"{source}: no data (the file is empty or holds only comments); give rows "
                       "of logits, one row per sample")


def _parse_block(chunk: bytes, source, layout, dtype, engine, line: int, offset: int
                 ) -> np.ndarray:
    if engine == "fast":
        values = _fast_block(chunk, layout, dtype)
        if values is not None:
            return values
    text = _text.decode(chunk, source, offset=offset, bom=False)
    numbered = _text.content_lines(text, first_line=line)
    if not numbered:
        return np.empty((0, layout.width), dtype=dtype)
    return _text.parse_rows(numbered, source, layout, dtype)


def _fast_block(chunk: bytes, layout, dtype) -> np.ndarray | None:
    """The block parsed by polars, or None when the exact parser must look."""
    import polars as pl

    delim = layout.delimiter.encode()
    if delim == b" " or chunk.translate(None, _GRAMMAR + delim):
        return None
    if not chunk.endswith(b"\n"):
        chunk += b"\n"
    if b"\r" in chunk:
        if chunk.count(b"\r") != chunk.count(b"\r\n"):
            return None  # a lone \r: polars would end a line there
        chunk = chunk.replace(b"\r\n", b"\n")
    raw = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    if (raw[ends - 1] == delim[0]).any():  # trailing delimiters end rows
        chunk = chunk.replace(delim + b"\n", b"\n")
        raw = np.frombuffer(chunk, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
    n_rows = len(ends)
    width = layout.width
    kind = pl.Float32 if dtype == np.float32 else pl.Float64
    try:
        if width >= WIDE_COLUMNS:
            seps = np.flatnonzero(raw == delim[0])
            if not (np.diff(np.searchsorted(seps, ends), prepend=0) == width - 1).all():
                return None
            df = pl.read_csv(chunk.replace(delim, b"\n"), has_header=False, quote_char=None,
                             schema={"v": kind})
            if df.height != n_rows * width or df.null_count().item():
                return None
            values = df.to_series().to_numpy().reshape(n_rows, width)
        else:
            df = pl.read_csv(chunk, has_header=False, quote_char=None, separator=layout.delimiter,
                             schema={f"c{i}": kind for i in range(width)})
            if df.height != n_rows or df.width != width or \
                    df.null_count().sum_horizontal().item():
                return None
            values = df.to_numpy(order="c")
    except Exception:  # noqa: BLE001 - any complaint: the exact parser names it
        return None
    values = np.require(values, dtype=dtype, requirements=["C", "W"])
    infs = np.isinf(values)
    if infs.any() and int(infs.sum()) != chunk.lower().count(b"inf"):
        return None  # an overflow, not an inf token
    return _text.canonical_nan(values)


def iter_text_blocks(path: str, *, delimiter: str | None = None, header: bool | None = None,
                     block_bytes: int = BLOCK_BYTES, dtype=np.float64, progress=None):
    """Yield ``(values, class_names)`` row blocks of a CSV/TSV file (see :func:`iter_blocks`).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("a,b\\n1,2\\n3,4\\n5,6\\n")
    >>> [(v.tolist(), n) for v, n in iter_text_blocks(p, block_bytes=8)]
    [([[1.0, 2.0], [3.0, 4.0]], ['a', 'b']), ([[5.0, 6.0]], ['a', 'b'])]
    """
    for values, layout in iter_blocks(path, delimiter=delimiter, header=header, dtype=dtype,
                                      block_bytes=block_bytes, progress=progress):
        yield values, layout.names


def read_text(path_or_data, source: str | None = None, *, delimiter: str | None = None,
              header: bool | None = None, dtype=np.float64, engine: str | None = None,
              block_bytes: int = BLOCK_BYTES) -> tuple[np.ndarray, list[str] | None]:
    """The whole text as one (N, C) array and its column names (or None).

    Examples
    --------
    >>> values, names = read_text(b"\\xef\\xbb\\xbfx;y\\r\\n1;2\\r\\n", "<doc>")
    >>> values.tolist(), names
    ([[1.0, 2.0]], ['x', 'y'])
    """
    blocks, layout = [], None
    for values, layout in iter_blocks(path_or_data, source, delimiter=delimiter, header=header,
                                      dtype=dtype, engine=engine, block_bytes=block_bytes):
        blocks.append(values)
    values = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return values, layout.names


# ----------------------------------------------------------------------------
# writing


def _sixteen_bit_strings(flat: np.ndarray) -> list[str]:
    """Shortest strings of float16/bfloat16 values that read back to the same value."""
    kind = flat.dtype
    bits = flat.view(np.uint16)
    uniq, inverse = np.unique(bits, return_inverse=True)
    table = []
    for b in uniq.tolist():
        v = np.array([b], dtype=np.uint16).view(kind)[0]
        f = float(v)
        if f != f or f in (float("inf"), float("-inf")):
            table.append(repr(f))
            continue
        for digits in range(1, 10):
            s = f"{f:.{digits}g}"
            with np.errstate(over="ignore"):
                back = np.array([float(s)]).astype(kind)[0]
            if back == v:
                break
        table.append(repr(float(s)) if "e" not in s and "." not in s else s)
    table = np.array(table, dtype=object)
    return table[inverse.reshape(-1)].tolist()


def shortest_strings(values: np.ndarray) -> list[str]:
    """Each value in the shortest decimal form that reads back exactly, in its format.

    float64 uses Python's repr, float32 numpy's shortest float32 form,
    float16 and bfloat16 the shortest form that rounds back to the same
    16-bit value; integers are written as integers. Non-finite values are
    ``nan``, ``inf``, ``-inf``.

    Examples
    --------
    >>> shortest_strings(np.array([0.1, 1/3], dtype=np.float32))
    ['0.1', '0.33333334']
    >>> shortest_strings(np.array([1/3, 65504], dtype=np.float16))
    ['0.3333', '6.55e+04']
    """
    flat = np.asarray(values).ravel()
    if flat.dtype == np.float64 or flat.dtype.kind in "iub":
        return [repr(v) for v in flat.tolist()]
    if flat.dtype.itemsize == 2 and flat.dtype.kind in "fV" or flat.dtype.name == "bfloat16":
        return _sixteen_bit_strings(flat)
    return [str(v) for v in flat]


def format_rows(values: np.ndarray, delimiter: str = ",", *, digits: int | None = None,
                engine: str | None = None) -> bytes:
    """Rows of a 2-D array as delimited text, one line each.

    Shortest exact form in the array's own format (:func:`shortest_strings`),
    or ``digits`` significant digits. ``engine``: ``'fast'`` writes float32
    and float64 with polars, ``'exact'`` with Python; None picks by size.

    Examples
    --------
    >>> format_rows(np.array([[0.1, 1e-05], [1.0, float("nan")]]))
    b'0.1,1e-05\\n1.0,nan\\n'
    >>> format_rows(np.array([[1/3, 2/3]]), digits=3)
    b'0.333,0.667\\n'
    """
    a = np.atleast_2d(np.asarray(values))
    if a.ndim > 2:
        a = a.reshape(-1, a.shape[-1])
    n, width = a.shape
    if n == 0:
        return b""
    if width == 0:
        return b"\n" * n
    if digits is not None and (a.dtype.kind == "f" or a.dtype.name == "bfloat16"):
        strings = [f"{v:.{digits}g}" for v in a.astype(np.float64).ravel().tolist()]
        return _join(strings, n, width, delimiter)
    if engine is None:
        engine = engine_for(0) if a.size < FAST_MIN_VALUES else engine_for(FAST_MIN_BYTES)
        if a.size < FAST_MIN_VALUES and "polars" not in sys.modules:
            engine = "exact"
    if engine == "fast" and a.dtype in (np.float32, np.float64):
        return _polars_rows(a, delimiter)
    return _join(shortest_strings(a), n, width, delimiter)


def _join(strings: list[str], n: int, width: int, delimiter: str) -> bytes:
    lines = [delimiter.join(strings[i * width:(i + 1) * width]) for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def _polars_rows(a: np.ndarray, delimiter: str) -> bytes:
    import polars as pl

    n, width = a.shape
    buf = _io.BytesIO()
    if width >= WIDE_COLUMNS:
        # one column, then every width-th line end turned back into a row end
        pl.DataFrame({"v": a.reshape(-1)}).write_csv(buf, include_header=False)
        lines = buf.getvalue().split(b"\n")
        body = b"\n".join(delimiter.encode().join(lines[i * width:(i + 1) * width])
                          for i in range(n)) + b"\n"
    else:
        df = pl.from_numpy(np.ascontiguousarray(a), orient="row")
        df.write_csv(buf, include_header=False, separator=delimiter, quote_style="never")
        body = buf.getvalue()
    if np.isnan(a).any():
        body = body.replace(b"NaN", b"nan")
    return body


def header_line(columns: list[str], delimiter: str = ",") -> bytes:
    """The header row: names quoted when they hold the delimiter, a quote or a newline."""
    return (delimiter.join(csv_field(c, delimiter) for c in columns) + "\n").encode()


def csv_field(name: str, delimiter: str) -> str:
    name = str(name)
    if delimiter in name or '"' in name or "\n" in name:
        return '"' + name.replace('"', '""') + '"'
    return name


class TextWriter:
    """Rows written to a binary file block by block, one engine for the whole file.

    Examples
    --------
    >>> buf = _io.BytesIO()
    >>> w = TextWriter(buf, ",", columns=["a", "b"])
    >>> w.write(np.array([[0.5, 0.25]], dtype=np.float32)); w.write(np.array([[1.0, 0.0]]))
    >>> buf.getvalue()
    b'a,b\\n0.5,0.25\\n1.0,0.0\\n'
    """

    def __init__(self, fh, delimiter: str = ",", *, columns: list[str] | None = None,
                 digits: int | None = None, size_hint: int = 0):
        self.fh = fh
        self.delimiter = delimiter
        self.digits = digits
        self.engine = engine_for(size_hint)
        self.columns = columns
        self.rows = 0

    def write(self, values: np.ndarray) -> None:
        from smx_cli.io.write import write_chunks

        if self.columns is not None:
            write_chunks(self.fh, header_line(self.columns, self.delimiter))
            self.columns = None
        a = np.atleast_2d(values)
        step = max(1, WRITE_VALUES // max(1, a.shape[1]))
        for s in range(0, a.shape[0], step):
            write_chunks(self.fh, format_rows(a[s:s + step], self.delimiter, digits=self.digits,
                                              engine=self.engine))
        self.rows += a.shape[0]
