"""Reading logits and labels, writing results. Raises SmxError; never prints.

Inputs: CSV/TSV text (delimiter sniffed, optional header of class names,
``#`` comments, nan/inf tokens in any case), NPY (never unpickled), NPZ, and
``-`` for standard input (text, or NPY/NPZ bytes told apart by their magic).

Outputs are written atomically: to a temporary file in the target's directory,
then renamed over it, so an interrupted write leaves the old file or nothing.
"""
from __future__ import annotations

import io as _io
import json
import math
import os
import re
import stat
import sys
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.precision import BFLOAT16

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", " ": "whitespace"}
_INF_TOKEN = re.compile(r"^\s*[+-]?(inf|infinity)\s*$", re.IGNORECASE)


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
        ``csv``, ``npy`` or ``npz``.
    """

    values: np.ndarray
    source: str
    class_names: list[str] | None = None
    fmt: str = "csv"
    text_columns: dict[int, list[str]] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# reading


def _read_bytes(path: str) -> tuple[bytes, str]:
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
        For NPZ: which array to read (default: the only one, or ``logits``).

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
    data, source = _read_bytes(path)
    if data.startswith(NPY_MAGIC):
        return Loaded(_load_npy(data, source), source, None, "npy")
    if data.startswith(ZIP_MAGIC):
        values, names = _load_npz(data, source, key)
        return Loaded(values, source, names, "npz")
    values, names = parse_text(data, source, delimiter=delimiter, header=header)
    return Loaded(values, source, names, "csv")


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


def _npy_header(buf, source: str):
    """The (shape, fortran_order, dtype) of the NPY at ``buf``'s position."""
    try:
        with warnings.catch_warnings():
            # numpy warns (on stderr) about Python 2 headers, ast about odd
            # literals: a header is either valid or an error, never a warning
            warnings.simplefilter("ignore")
            return _npy_header_unchecked(buf)
    except Exception as exc:  # noqa: BLE001 - any header fault is bad data
        msg = " ".join(str(exc).split())
        raise SmxError(f"{source}: not a valid NPY header ({msg}); the file is damaged or "
                       "not written by numpy.save") from None


def _npy_header_unchecked(buf):
    version = np.lib.format.read_magic(buf)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(buf)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(buf)
    raise ValueError(f"unknown NPY version {version[0]}.{version[1]}")


def _load_npy(data: bytes, source: str, numeric: bool = True) -> np.ndarray:
    """Decode NPY bytes: the header is checked before any data is touched.

    Object dtypes are refused from the header alone, so a pickle payload is
    never handed to ``pickle``; the data must be exactly as long as the header's
    shape says (shorter: truncated; longer: a damaged or foreign file).
    """
    buf = _io.BytesIO(data)
    shape, fortran, dtype = _npy_header(buf, source)
    if dtype.hasobject:
        raise SmxError(f"{source}: NPY holds Python objects (dtype {dtype}); smx never "
                       "unpickles files -- save a numeric array instead")
    if dtype.subdtype is not None:  # e.g. '(3,)f8': the sub-shape is part of the array's
        dtype, sub = dtype.subdtype
        shape = tuple(shape) + tuple(sub)
    if numeric:
        _check_dtype(dtype, source)
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    available = len(data) - buf.tell()
    if available < expected:
        raise SmxError(f"{source}: truncated NPY: header says shape {tuple(shape)} "
                       f"({expected} bytes) but the file holds {available} bytes of data; "
                       "write the file again")
    if available > expected:
        raise SmxError(f"{source}: damaged NPY: header says shape {tuple(shape)} "
                       f"({expected} bytes) but the file holds {available} bytes of data; "
                       "write the file again")
    try:
        arr = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=buf.tell())
        # a read-only view of the bytes: no second copy of a big file in memory
        arr = arr.reshape(shape, order="F" if fortran else "C")
    except Exception as exc:  # noqa: BLE001 - e.g. a dtype numpy cannot build from bytes
        msg = " ".join(str(exc).split())
        raise SmxError(f"{source}: cannot read NPY data ({msg})") from None
    return _check_numeric(arr, source) if numeric else arr


def _load_npz(data: bytes, source: str, key: str | None) -> tuple[np.ndarray, list[str] | None]:
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
            hbuf = _io.BytesIO(head)
            shape, _, dtype = _npy_header(hbuf, where)
            if dtype.hasobject:
                raise SmxError(f"{where}: array holds Python objects (dtype {dtype}); smx never "
                               "unpickles files -- save a numeric array instead")
            # the header's size must match the member's before decompressing it all
            expected = hbuf.tell() + math.prod(shape) * dtype.itemsize
            if expected != info.file_size:
                what = "truncated" if expected > info.file_size else "damaged"
                raise SmxError(f"{where}: {what} NPZ member: header says shape {tuple(shape)} "
                               f"but the member holds {info.file_size} bytes; write the "
                               "file again")
            body = head + fh.read()
    except SmxError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/zlib fail in many ways on damaged data

        msg = " ".join(str(exc).split())
        raise SmxError(f"{where}: corrupt NPZ member ({msg}); write the file again") from None
    return _load_npy(body, where, numeric=numeric)


def _sniff_delimiter(lines: list[str]) -> str:
    """Tab, semicolon or comma if every one of the first lines holds it (in that
    order: semicolon files use the decimal comma); else whitespace if it splits
    every line into the same number (> 1) of fields; else the first of tab,
    semicolon, comma found on any line, so that a ragged row is reported as
    ragged rather than turning the file into one column; else whitespace.
    """
    sample = lines[:20]
    candidates = ("\t", ";", ",")
    for d in candidates:
        if all(d in line for line in sample):
            return d
    counts = {len(line.split()) for line in sample}
    if len(counts) == 1 and counts.pop() > 1:
        return " "
    for d in candidates:
        if any(d in line for line in sample):
            return d
    return " "


def _split(line: str, delim: str) -> list[str]:
    if delim == " ":
        return line.split()
    tokens = [t.strip() for t in line.split(delim)]
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()  # a trailing delimiter
    return tokens


_NUMBER = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$",
                     re.IGNORECASE | re.ASCII)


def _is_number(token: str) -> bool:
    """A decimal number, or nan/inf/infinity with an optional sign, any case.

    Stricter than ``float()``, which also takes ``1_000`` and other forms no
    CSV writer produces.
    """
    return bool(_NUMBER.match(token))


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name


def parse_text(data: bytes | str, source: str, *, delimiter: str | None = None,
               header: bool | None = None, first_line: int = 1,
               width: int | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Parse delimited numeric text into a float64 (N, C) array.

    Returns the array and the header's column names (None without header).
    A one-column file is N rows of one class. Errors name the line (1-based,
    as an editor shows it) and the column. ``first_line`` is the line number
    of the text's first line and ``width`` the expected number of values per
    row, for a block of a longer file (see :func:`iter_text_blocks`).
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {exc.start}); "
                           "expected CSV/TSV text, NPY or NPZ") from None
    else:
        text = data
    if "\x00" in text:
        raise SmxError(f"{source}: contains NUL bytes; expected CSV/TSV text, NPY or NPZ")
    numbered = []
    for lineno, raw in enumerate(text.splitlines(), start=first_line):
        line = raw.split("#", 1)[0].strip()
        if line:
            numbered.append((lineno, line))
    if not numbered:
        raise SmxError(f"{source}: no data (the file is empty or holds only comments); give rows of "
                       "logits, one row per sample")
    delim = delimiter if delimiter is not None else _sniff_delimiter([ln for _, ln in numbered])
    if delimiter is not None and delim not in DELIMITERS:
        raise SmxError(f"delimiter must be one of ',', '\\t', ';', ' ' (got {delimiter!r})")
    first_tokens = _split(numbered[0][1], delim)
    auto_header = header is None
    if auto_header:
        # a header has names (words) and no numbers; a first row that mixes
        # numbers and words is data with a bad token, reported as such below
        header = (not any(_is_number(t) for t in first_tokens)
                  and any(any(ch.isalpha() for ch in t) for t in first_tokens))
    names = None
    numbered_first = numbered[0][1][:40]
    if header:
        names = [_unquote(t) for t in first_tokens]
        numbered = numbered[1:]
        if not numbered:
            hint = "; pass --no-header if that row is data" if auto_header else ""
            raise SmxError(f"{source}: only a header row ({numbered_first!r}), no data rows{hint}")
    rows = [(lineno, _split(line, delim)) for lineno, line in numbered]
    expect = "the header's" if names is not None else f"line {rows[0][0]}'s"
    if width is not None:
        expect = "the earlier rows'"
    else:
        width = len(names) if names is not None else len(rows[0][1])
    for lineno, tokens in rows:
        if len(tokens) != width:
            raise SmxError(f"{source}: line {lineno} has {len(tokens)} values, expected "
                           f"{width} ({expect} count); fix the ragged row")
    flat = [t for _, tokens in rows for t in tokens]
    values = None
    if text.isascii() and "_" not in text:
        # numpy's parser agrees with Python's float() on ASCII tokens without
        # underscores; anything it rejects is located by the loop below
        try:
            values = np.array(flat, dtype=np.float64)
        except ValueError:
            values = None
    for lineno, tokens in rows if values is None else ():
        for col, tok in enumerate(tokens, start=1):
            if not _is_number(tok):
                what = "an empty value" if tok == "" else f"{tok!r} is not a number"
                hint = ""
                if re.fullmatch(r"[+-]?\d+,\d+", tok):
                    hint = " (a decimal comma? write 1.5, not 1,5)"
                elif lineno == rows[0][0] and names is None and auto_header:
                    hint = "; pass --header if the first row holds class names"
                if not hint:
                    hint = "; fix or remove it (nan, inf and -inf are allowed)"
                raise SmxError(f"{source}: line {lineno}, column {col}: {what}{hint}")
    if values is None:
        values = np.array(flat, dtype=np.float64)
    values = values.reshape(len(rows), width)
    infs = np.flatnonzero(np.isinf(values.ravel()))
    for idx in infs:
        tok = flat[idx]
        if not _INF_TOKEN.match(tok):
            lineno = rows[idx // width][0]
            raise SmxError(f"{source}: line {lineno}, column {idx % width + 1}: {tok!r} "
                           "overflows float64 (|x| > 1.8e308); write inf if you mean it")
    return values, names


def _content_lines(chunk: bytes) -> int:
    return sum(1 for ln in chunk.splitlines() if ln.split(b"#", 1)[0].strip())


def iter_text_blocks(path: str, *, delimiter: str | None = None, header: bool | None = None,
                     block_bytes: int = 16 << 20):
    """Yield ``(values, class_names)`` blocks of a big CSV/TSV file, in bounded memory.

    The text is cut at line ends into blocks of about ``block_bytes``; the
    first block settles the delimiter, the header and the width, every later
    one is parsed with them, so errors still name the file's own line and
    column. Raises SmxError as :func:`parse_text` does.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("a,b\\n1,2\\n3,4\\n5,6\\n")
    >>> [(v.tolist(), n) for v, n in iter_text_blocks(p, block_bytes=6)]
    [([[1.0, 2.0], [3.0, 4.0]], ['a', 'b']), ([[5.0, 6.0]], ['a', 'b'])]
    """
    names = None
    width = None
    line = 1
    first = True
    with open(path, "rb") as fh:
        rest = b""
        while True:
            data = fh.read(block_bytes)
            chunk = rest + data
            if data:
                cut = chunk.rfind(b"\n") + 1
                # the first block must reach past a header to its first data row
                if cut == 0 or (first and _content_lines(chunk[:cut]) < 2):
                    rest = chunk
                    continue
                chunk, rest = chunk[:cut], chunk[cut:]
            else:
                rest = b""
            if not chunk:
                break
            if first:
                values, names = parse_text(chunk, path, delimiter=delimiter, header=header)
                text = chunk.decode("utf-8-sig", errors="replace")
                if delimiter is None:
                    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
                    delimiter = _sniff_delimiter([ln for ln in lines if ln])
                width = values.shape[1]
                first = False
            elif _content_lines(chunk):
                values, _ = parse_text(chunk, path, delimiter=delimiter, header=False,
                                       first_line=line, width=width)
            else:
                values = np.empty((0, width))  # only comments or blank lines
            line += chunk.count(b"\n")
            yield values, names
            if not data:
                break


# ----------------------------------------------------------------------------
# writing


def shortest_strings(values: np.ndarray) -> list[str]:
    """Each float in the shortest decimal form that reads back exactly.

    float64 uses Python's repr; float32/float16 numpy's scalar repr (the
    shortest string that round-trips in that format); bfloat16 the float32
    form, which round-trips through float32. Non-finite values are written
    ``nan``, ``inf``, ``-inf``.

    Examples
    --------
    >>> shortest_strings(np.array([0.1, 1/3], dtype=np.float32))
    ['0.1', '0.33333334']
    """
    flat = np.asarray(values).ravel()
    if flat.dtype == np.float64 or flat.dtype.kind in "iub":
        return [repr(v) for v in flat.tolist()]
    if flat.dtype == BFLOAT16:
        flat = flat.astype(np.float32)
    return [str(v) for v in flat]


#: temporary files are named ``.smx-<pid>-<random>.part`` beside the target
TEMP_PREFIX = ".smx-"
TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"^\.smx-(\d+)-[A-Za-z0-9_]+\.part$")
#: large writes go out in pieces of this size (an interrupt lands between two)
WRITE_CHUNK = 1 << 22


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: leave its file alone
    return True


def remove_stale_temps(directory: str) -> list[str]:
    """Delete temporary files a killed ``smx`` left in ``directory``.

    ``SIGKILL`` (or a power cut) stops ``smx`` before it can remove its
    ``.smx-<pid>-*.part`` file. The next write into the same directory
    removes every such file whose process no longer runs; a file of a
    running ``smx`` (a concurrent write) is left alone. Returns the names
    removed.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _new_file_mode(target: str) -> int:
    """The mode the output gets: the replaced file's, else 0666 minus the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_output_target(path: str) -> str:
    """Refuse an output path that cannot be written atomically; return its directory.

    Called before any work (so a long computation does not end in "directory
    does not exist") and again when writing.
    """
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        shown = os.path.dirname(path) or "."
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise SmxError(f"{path}: directory {shown} {what}; create it or choose another -o")
    if os.path.isdir(target):
        raise SmxError(f"{path}: is a directory; give a file name")
    if os.path.exists(target) and not os.path.isfile(target):
        raise SmxError(f"{path}: is not a regular file (a device or pipe); smx writes files "
                       "atomically -- redirect stdout with --format instead")
    return directory


@contextmanager
def atomic_output(path: str, mode: str = "w"):
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    On any exception (including KeyboardInterrupt) the temporary file is
    removed and ``path`` is left untouched: a reader sees the old file or the
    complete new one, never a truncated one. The temporary file is named
    ``.smx-<pid>-<random>.part``; one left by a killed process (SIGKILL
    cannot be caught) is removed by the next write into that directory. The
    new file keeps the mode of the file it replaces (else 0666 minus umask).
    """
    directory = check_output_target(path)
    target = os.path.join(directory, os.path.basename(os.path.abspath(path)))
    remove_stale_temps(directory)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TEMP_SUFFIX,
                                   dir=directory)
    except OSError as exc:
        raise SmxError(f"{path}: cannot write in {os.path.dirname(path) or '.'} "
                       f"({exc.strerror or exc}); choose another -o") from None
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_chunks(fh, data: bytes, chunk: int = WRITE_CHUNK) -> None:
    """Write ``data`` in pieces, so that Ctrl-C is handled during a large write."""
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        fh.write(view[start:start + chunk])


def output_format(path: str, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else from the file extension."""
    if fmt:
        return fmt
    ext = os.path.splitext(path)[1].lower()
    by_ext = {".npy": "npy", ".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".json": "json"}
    if ext not in by_ext:
        raise SmxError(f"{path}: cannot tell the format from {ext or 'no extension'}; "
                       "use .npy, .csv, .tsv or .json, or --format")
    return by_ext[ext]


def csv_text(values: np.ndarray, columns: list[str] | None = None, delimiter: str = ",") -> str:
    """A 2-D array as delimited text, floats in shortest exact form."""
    values = np.atleast_2d(values)
    strings = shortest_strings(values)
    width = values.shape[1]
    lines = []
    if columns is not None:
        lines.append(delimiter.join(_csv_field(c, delimiter) for c in columns))
    for i in range(values.shape[0]):
        lines.append(delimiter.join(strings[i * width:(i + 1) * width]))
    return "\n".join(lines) + "\n" if lines else ""


def _csv_field(name: str, delimiter: str) -> str:
    name = str(name)
    if delimiter in name or '"' in name or "\n" in name:
        return '"' + name.replace('"', '""') + '"'
    return name


def json_number_rows(values: np.ndarray) -> str:
    """A 2-D float array as a JSON list of lists, exact shortest numbers.

    JSON has no NaN or infinity: those are written as the strings "nan",
    "inf" and "-inf" (which smx reads back).
    """
    values = np.atleast_2d(values)
    strings = shortest_strings(values)
    width = values.shape[1]
    fixed = [s if s not in ("nan", "inf", "-inf") else f'"{s}"' for s in strings]
    rows = ["[" + ", ".join(fixed[i * width:(i + 1) * width]) + "]" for i in range(values.shape[0])]
    return "[" + ",\n  ".join(rows) + "]"


def json_document(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """A JSON object: ``meta`` fields, then each array as exact number rows."""
    body = json.dumps(meta, indent=2, allow_nan=False)[:-2]  # drop the closing "\n}"
    parts = [body] if meta else ["{"]
    for name, arr in arrays.items():
        sep = "," if parts[-1] != "{" else ""
        parts.append(f'{sep}\n  {json.dumps(name)}: {json_number_rows(arr)}')
    return "".join(parts) + "\n}\n"


def write_npy(fh, values: np.ndarray) -> None:
    """Write ``values`` as NPY to the binary file ``fh`` without an encoded copy.

    Same bytes as :func:`npy_bytes` (bfloat16 stored as float32); the data
    goes out in chunks straight from the array's memory.
    """
    if values.dtype == BFLOAT16:
        values = values.astype(np.float32)
    arr = np.asarray(values, order="C")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    header = np.lib.format.header_data_from_array_1_0(arr)
    try:
        np.lib.format.write_array_header_1_0(fh, header)
    except ValueError:  # a header too long for version 1.0
        np.lib.format.write_array_header_2_0(fh, header)
    if arr.size:
        write_chunks(fh, memoryview(arr.reshape(-1)).cast("B"))


def npy_bytes(values: np.ndarray) -> bytes:
    """The NPY encoding of ``values`` (bfloat16 stored as float32)."""
    if values.dtype == BFLOAT16:
        values = values.astype(np.float32)
    buf = _io.BytesIO()
    # not ascontiguousarray: it turns a 0-d result into shape (1,)
    np.save(buf, np.asarray(values, order="C"), allow_pickle=False)
    return buf.getvalue()


def same_file(a: str, b: str) -> bool:
    """True when two paths name the same existing file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
