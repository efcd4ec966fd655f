"""Reading arrays: CSV/TSV text, NPY (never unpickled), NPZ and safetensors, from files or stdin.

``-`` is standard input (text, or NPY/NPZ bytes told apart by their magic).
Raises :class:`smx_cli.errors.SmxError` (a ValueError); never prints.
"""
from __future__ import annotations

import io as _io
import os
import stat
import sys
import zipfile
from dataclasses import dataclass, field

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.core.precision import BFLOAT16
from smx_cli.io import safetensors
from smx_cli.io.csv_engine import read_text
from smx_cli.io.npyheader import check_npy_size, read_npy_header

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class Loaded:
    """An array read from a file, with what is known about its columns.

    Attributes
    ----------
    values : ndarray
        The data, in the file's dtype (float64 for text).
    source : str
        The file name as the user gave it (``<stdin>`` for ``-``).
    class_names : list of str or None
        Column names from a CSV header (or an NPZ ``classes`` array).
    fmt : str
        ``csv``, ``npy``, ``npz`` or ``safetensors``.
    """

    values: np.ndarray
    source: str
    class_names: list[str] | None = None
    fmt: str = "csv"
    text_columns: dict[int, list[str]] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# reading


def read_bytes(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    if os.path.isdir(path):
        raise SmxError(f"{path}: is a directory, not a file; give a file inside it")
    try:
        if stat.S_ISCHR(os.stat(path).st_mode) or stat.S_ISBLK(os.stat(path).st_mode):
            raise SmxError(f"{path}: is a device, not a file; give a file, or - for stdin")
    except OSError:
        pass  # reported by open() below
    try:
        with open(path, "rb") as fh:
            return fh.read(), path
    except FileNotFoundError:
        raise SmxError(f"{path}: no such file; check the name (or give - for stdin)") from None
    except PermissionError:
        raise SmxError(f"{path}: permission denied; check the file's permissions (ls -l)") from None
    except OSError as exc:
        raise SmxError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_array(path: str, *, delimiter: str | None = None, header: bool | None = None,
               key: str | None = None) -> Loaded:
    """Read logits (or any numeric matrix) from CSV/TSV, NPY, NPZ or stdin.

    Parameters
    ----------
    path : str
        A file name, or ``-`` for standard input.
    delimiter : str, optional
        For text: ``,``, ``\\t``, ``;`` or ``" "`` (any whitespace). Sniffed
        when omitted.
    header : bool, optional
        For text: whether the first row holds column names. Auto-detected
        when omitted (a first row with any non-numeric token is a header).
    key : str, optional
        For NPZ and safetensors: which array to read (default: the only one,
        or ``logits``). A safetensors file is memory-mapped, not read; a
        torch pickle (``.pt``/``.bin``) is refused, never unpickled.

    Returns
    -------
    Loaded

    Raises
    ------
    SmxError
        With a one-line message naming the file and the line/column or index.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("cat,dog\\n1,2\\n3,nan\\n")
    >>> r = read_array(p)
    >>> r.class_names, r.values.tolist()
    (['cat', 'dog'], [[1.0, 2.0], [3.0, nan]])
    """
    mapped = _read_safetensors_file(path, key)
    if mapped is not None:
        return mapped
    data, source = read_bytes(path)
    safetensors.refuse_pickle(data[:512], source)
    if safetensors.looks_like_safetensors(data[:9], len(data)) and not data.startswith(NPY_MAGIC):
        return Loaded(safetensors.load_bytes(data, source, key), source, None, "safetensors")
    if data.startswith(NPY_MAGIC):
        return Loaded(load_npy(data, source), source, None, "npy")
    if data.startswith(ZIP_MAGIC):
        values, names = load_npz(data, source, key)
        return Loaded(values, source, names, "npz")
    values, names = read_text(data, source, delimiter=delimiter, header=header)
    return Loaded(values, source, names, "csv")


def _read_safetensors_file(path: str, key: str | None) -> Loaded | None:
    """A safetensors file (by name or by its header) as a memory map; a pickle refused.

    None for anything else (and for stdin), which read_array then reads as before.
    """
    if path == "-" or not os.path.isfile(path):
        return None
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None  # read_bytes reports it
    safetensors.refuse_pickle(head, path)
    named = path.lower().endswith(safetensors.SUFFIXES)
    if not named and not safetensors.looks_like_safetensors(head[:9], size):
        if path.lower().endswith(safetensors.PICKLE_SUFFIXES) and not head.startswith(
                (NPY_MAGIC, ZIP_MAGIC)):
            raise SmxError(f"{path}: a {os.path.splitext(path)[1]} file that is neither "
                           "safetensors nor NPY; smx never unpickles files -- save the tensor "
                           "with safetensors (safetensors.torch.save_file) or numpy (np.save)")
        return None
    return Loaded(safetensors.load(path, key), path, None, "safetensors")


_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes",
               "O": "Python objects", "V": "raw records", "M": "dates", "m": "time deltas"}


def _check_dtype(dtype: np.dtype, source: str) -> None:
    """Refuse what is not a real number (from the header, before reading data)."""
    if dtype == BFLOAT16 or dtype.kind in "fiu":
        return
    raise SmxError(f"{source}: holds {_KIND_NAMES.get(dtype.kind, dtype.kind)} (dtype {dtype}); "
                   "smx needs a real-valued (float or integer) array -- convert it, e.g. "
                   "x.astype('float64'), and save it again")


def _check_numeric(arr: np.ndarray, source: str) -> np.ndarray:
    """A real-valued array in native byte order (long double becomes float64)."""
    _check_dtype(arr.dtype, source)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        return arr.astype(np.float64)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def load_npy(data: bytes, source: str, numeric: bool = True) -> np.ndarray:
    """Decode NPY bytes: the header is checked before any data is touched.

    Object dtypes are refused from the header alone, so a pickle payload is
    never handed to ``pickle``; the data must be exactly as long as the header's
    shape says (shorter: truncated; longer: a damaged or foreign file).
    """
    buf = _io.BytesIO(data)
    head = read_npy_header(buf, source)
    shape, fortran, dtype = head.shape, head.fortran, head.dtype
    if numeric:
        _check_dtype(dtype, source)
    check_npy_size(head, len(data) - head.offset, source)
    try:
        arr = np.frombuffer(data, dtype=dtype, count=head.size, offset=head.offset)
        # a read-only view of the bytes: no second copy of a big file in memory
        arr = arr.reshape(shape, order="F" if fortran else "C")
    except Exception as exc:  # noqa: BLE001 - e.g. a dtype numpy cannot build from bytes
        msg = " ".join(str(exc).split())
        raise SmxError(f"{source}: cannot read NPY data ({msg})") from None
    return _check_numeric(arr, source) if numeric else arr


def load_npz(data: bytes, source: str, key: str | None) -> tuple[np.ndarray, list[str] | None]:
    """Read one array (and optional class names) from NPZ bytes.

    Members are read with :mod:`zipfile`, their NPY header checked against
    the member's size before its data is decompressed, so a damaged archive
    or a header claiming a huge shape fails fast instead of allocating.
    """
    try:
        archive = zipfile.ZipFile(_io.BytesIO(data))
        members = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i
                   for i in archive.infolist() if not i.is_dir()}
    except Exception as exc:  # noqa: BLE001 - zipfile trips over damaged archives in many ways

        msg = " ".join(str(exc).split())
        raise SmxError(f"{source}: not a valid NPZ archive ({msg}); the file is damaged or "
                       "not written by numpy.savez") from None
    keys = list(members)
    names = None
    name_keys = [k for k in ("classes", "class_names") if k in keys]
    arrays = [k for k in keys if k not in name_keys]
    if key is None:
        if len(arrays) == 1:
            key = arrays[0]
        elif "logits" in arrays:
            key = "logits"
        else:
            raise SmxError(f"{source}: NPZ holds {len(arrays)} arrays "
                           f"({', '.join(arrays) or 'none'}); choose one with --key")
    if key not in keys:
        raise SmxError(f"{source}: NPZ has no array {key!r} (it has: {', '.join(keys) or 'none'}); "
                       "choose one with --key")
    arr = _npz_member(archive, members[key], f"{source}[{key}]")
    if name_keys:
        try:
            cls = _npz_member(archive, members[name_keys[0]], f"{source}[{name_keys[0]}]",
                              numeric=False)
        except SmxError:
            cls = None  # class names are a nicety: a bad names array is ignored
        if (cls is not None and cls.dtype.kind in "US" and cls.ndim == 1 and arr.ndim >= 1
                and cls.shape[0] == arr.shape[-1]):
            try:
                names = [str(c) for c in cls.tolist()]
            except Exception:  # noqa: BLE001 - e.g. code points beyond U+10FFFF
                names = None
    return arr, names


def _npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str,
                numeric: bool = True) -> np.ndarray:
    try:
        with archive.open(info) as fh:
            head = fh.read(min(info.file_size, 65536 + 16))
            if not head.startswith(NPY_MAGIC):
                raise SmxError(f"{where}: NPZ member is not an NPY array; the archive was not "
                               "written by numpy.savez")
            header = read_npy_header(_io.BytesIO(head), where)
            # the header's size must match the member's before decompressing it all
            check_npy_size(header, info.file_size - header.offset, where, "NPZ member")
            body = head + fh.read()
    except SmxError:
        raise
    except MemoryError:
        raise SmxError(f"{where}: the NPZ member holds {info.file_size:,} bytes uncompressed, "
                       "more than fits in memory; save it as a plain .npy file (smx streams "
                       "those in row blocks) or free memory") from None
    except Exception as exc:  # noqa: BLE001 - zipfile/zlib fail in many ways on damaged data

        msg = " ".join(str(exc).split())
        raise SmxError(f"{where}: corrupt NPZ member ({msg}); write the file again") from None
    return load_npy(body, where, numeric=numeric)


