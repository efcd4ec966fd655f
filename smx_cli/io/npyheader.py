"""The one NPY header reader: what a file claims, checked before any data is read.

Both the whole-array reader (:mod:`smx_cli.io.arrays`) and the block
streamer (:mod:`smx_cli.io.stream`) call :func:`read_npy_header`, so a file
is accepted or refused the same way on both paths.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from smx_cli.errors import SmxError

#: the NPY format versions numpy writes (1.0; 2.0 for long headers; 3.0 for UTF-8 names)
NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
#: numpy's own limit on array dimensions (NPY_MAXDIMS in numpy 2)
MAX_DIMS = 64
#: an array with no values may claim at most this many rows (or classes) of nothing:
#: per-row bookkeeping for a (10**15, 0) header would otherwise run for ever
MAX_EMPTY_EXTENT = 1 << 24
_INTP_MAX = int(np.iinfo(np.intp).max)


@dataclass(frozen=True)
class NpyHeader:
    """What an NPY header declares.

    ``shape`` includes a sub-array dtype's shape (``'(3,)f8'`` adds an axis
    of 3); ``dtype`` is then the base dtype. ``offset`` is the first data
    byte (from the start of the NPY bytes).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def size(self) -> int:
        """Number of values (a Python int: no overflow)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of data the header promises."""
        return self.size * self.dtype.itemsize


def read_npy_header(fh, source: str) -> NpyHeader:
    """Read and check the NPY header of ``fh`` (positioned at the magic string).

    Refused (one-line :class:`SmxError` naming ``source``): a damaged header,
    an unknown format version, negative or non-integer dimensions, more than
    64 dimensions, an array with no values claiming more than 2**24 rows or
    classes of nothing (``(10**15, 0)``), and object dtypes (they would need
    unpickling). Leaves
    ``fh`` at the first data byte.

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> np.save(buf, np.zeros((2, 3), dtype=np.float32))
    >>> _ = buf.seek(0)
    >>> h = read_npy_header(buf, "x.npy")
    >>> h.shape, h.dtype, h.nbytes
    ((2, 3), dtype('float32'), 24)
    """
    start = fh.tell()
    try:
        with warnings.catch_warnings():
            # numpy warns (on stderr) about Python 2 headers, ast about odd
            # literals: a header is either valid or an error, never a warning
            warnings.simplefilter("ignore")
            version = np.lib.format.read_magic(fh)
            if version not in NPY_VERSIONS:
                raise ValueError(f"unknown NPY format version {version[0]}.{version[1]}; "
                                 "smx reads versions 1.0, 2.0 and 3.0")
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except Exception as exc:  # noqa: BLE001 - any header fault is bad data
        msg = " ".join(str(exc).split())
        raise SmxError(f"{source}: not a valid NPY header ({msg}); the file is damaged or "
                       "not written by numpy.save") from None
    if dtype.hasobject:
        raise SmxError(f"{source}: NPY holds Python objects (dtype {dtype}); smx never "
                       "unpickles files -- save a numeric array instead")
    shape = tuple(shape)
    if dtype.subdtype is not None:  # e.g. '(3,)f8': the sub-shape is part of the array's
        dtype, sub = dtype.subdtype
        shape = shape + tuple(sub)
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise SmxError(f"{source}: damaged NPY header: shape {_short(shape)} has a negative "
                       "or non-integer dimension; write the file again")
    if math.prod(d for d in shape if d) > _INTP_MAX:
        raise SmxError(f"{source}: NPY header claims shape {_short(shape)}, more elements than "
                       "any array can index; the file is damaged")
    if math.prod(shape) == 0 and math.prod(d for d in shape if d) > MAX_EMPTY_EXTENT:
        raise SmxError(f"{source}: NPY header claims shape {_short(shape)}: no values, but "
                       f"more than {MAX_EMPTY_EXTENT:,} rows or classes of nothing; smx bounds "
                       "its work by the data, not the header -- the file is damaged")
    if len(shape) > MAX_DIMS:
        raise SmxError(f"{source}: NPY header claims {len(shape)} dimensions; numpy arrays have "
                       f"at most {MAX_DIMS} -- the file is damaged")
    return NpyHeader(shape, dtype, bool(fortran), fh.tell() - start)


def check_npy_size(header: NpyHeader, available: int, source: str, what: str = "NPY") -> None:
    """Refuse data shorter (truncated) or longer (damaged) than the header says."""
    expected = header.nbytes
    if available == expected:
        return
    kind = "truncated" if available < expected else "damaged"
    raise SmxError(f"{source}: {kind} {what}: header says shape {_short(header.shape)} "
                   f"({expected} bytes) but the file holds {available} bytes of data; "
                   "write the file again")


def _short(shape: tuple) -> str:
    """A shape for a message: at most 8 dimensions shown."""
    if len(shape) <= 8:
        return str(tuple(shape))
    return "(" + ", ".join(map(str, shape[:8])) + f", ... {len(shape)} dimensions)"
