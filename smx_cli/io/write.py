"""Writing results: shortest round-trip text, CSV/JSON/NPY bodies, and atomic
output (a temporary file beside the target, renamed over it), so an interrupted
write leaves the old file or nothing.
"""
from __future__ import annotations

import io as _io
import json
import os
import re
import tempfile
from contextlib import contextmanager

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.core.precision import BFLOAT16
from smx_cli.io.csv_engine import csv_field, format_rows, header_line, shortest_strings
# writing


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


def csv_text(values: np.ndarray, columns: list[str] | None = None, delimiter: str = ",",
             digits: int | None = None) -> str:
    """A 2-D array as delimited text: shortest exact values (or ``digits`` digits).

    Examples
    --------
    >>> csv_text(np.array([[0.5, 1e-300]]), ["a,b", "c"])
    '"a,b",c\\n0.5,1e-300\\n'
    """
    values = np.atleast_2d(values)
    head = header_line(columns, delimiter) if columns is not None else b""
    return (head + format_rows(values, delimiter, digits=digits)).decode()


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

