"""Writing results: shortest round-trip text, CSV/JSON/NPY bodies, and atomic
output (a temporary file beside the target, renamed over it), so an interrupted
write leaves the old file or nothing.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import os
import re
import secrets
import signal
import stat
import threading
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # not on Windows: no locks, so no sweep of temporary files either
    fcntl = None

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.core.precision import BFLOAT16
from smx_cli.io.csv_engine import csv_field, format_rows, header_line, shortest_strings
# writing


#: temporary files are named ``.smx-<pid>-<16 hex random><8 hex tag>.part`` beside the
#: target; the tag is a hash of the rest, so a user's file is never taken for one
TEMP_PREFIX = ".smx-"
TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"^\.smx-(\d+)-([0-9a-f]{16})([0-9a-f]{8})\.part$")
#: large writes go out in pieces of this size (an interrupt lands between two)
WRITE_CHUNK = 1 << 22
# paths that name a process's standard streams or open files, not files
_STREAM_PATH = re.compile(r"^/(dev/(stdin|stdout|stderr|fd(/.*)?)|proc/[^/]+/fd(/.*)?)$")


def _temp_tag(pid: str, token: str) -> str:
    return hashlib.blake2s(f"smx-temp:{pid}:{token}".encode(), digest_size=4).hexdigest()


def is_temp_name(name: str) -> bool:
    """True for a name :func:`atomic_output` gives its temporary files (tag checked).

    Examples
    --------
    >>> is_temp_name(".smx-999999-notes.part")
    False
    """
    m = _TEMP_NAME.match(name)
    return bool(m) and _temp_tag(m.group(1), m.group(2)) == m.group(3)


def _lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False if someone holds one."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _create_temp(directory: str) -> tuple[int, str]:
    """Create, open and lock a new temporary file in ``directory``: (fd, path).

    The lock is held as long as the file is open: it tells every other
    ``smx`` -- in another PID namespace or on another NFS client too -- that
    the file is being written.
    """
    pid = str(os.getpid())
    while True:
        token = secrets.token_hex(8)
        path = os.path.join(directory, f"{TEMP_PREFIX}{pid}-{token}{_temp_tag(pid, token)}"
                                       f"{TEMP_SUFFIX}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            # a sweep may have locked (and removed) the file between its creation
            # and our lock: then start again with a new name
            if _lock(fd) and os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd, path
        except FileNotFoundError:
            pass
        except BaseException:  # Ctrl-C included: leave nothing behind
            os.close(fd)
            _unlink_quietly(path)
            raise
        os.close(fd)


@contextmanager
def _signals_held():
    """Defer SIGINT and SIGTERM while a file is created and recorded.

    Without this a Ctrl-C between ``open`` and the caller's ``try`` leaves a
    temporary file nobody removes. A signal that arrives meanwhile is handed
    to the previous handler on exit (so Ctrl-C still stops smx, right after).
    Python runs signal handlers in the main thread only, whichever thread the
    kernel delivered to: elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.getsignal(sig) for sig in sigs}
    for sig in sigs:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            handler = old[pending[0]]
            if callable(handler):
                handler(pending[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), pending[0])


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_temps(directory: str) -> list[str]:
    """Delete temporary files that a killed ``smx`` left in ``directory``.

    ``SIGKILL`` (or a power cut) stops ``smx`` before it can remove its
    temporary file. A file is removed only when it is provably such a
    leftover: its name is one :func:`atomic_output` makes (hash tag
    included), it is a regular file, and no process holds the lock every
    writer keeps on its open temporary file (which works across PID
    namespaces and NFS clients, where process ids mean nothing). Returns the
    names removed.
    """
    removed = []
    if fcntl is None:
        return removed
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not is_temp_name(name):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (stat.S_ISREG(st.st_mode) and _lock(fd)
                    and os.stat(path, follow_symlinks=False).st_ino == st.st_ino):
                os.unlink(path)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _new_file_mode(target: str) -> int:
    """The mode the output gets: the replaced file's, else 0666 minus the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def output_target(path: str) -> str:
    """The file that writing to ``path`` replaces: symlinks followed, streams refused.

    ``-o`` naming a symbolic link writes through it: the link stays, the
    file it points to is replaced (atomically, by a temporary file in *that*
    file's directory). ``/dev/stdout``, ``/dev/fd/N`` and ``/proc/PID/fd/N``
    (and links to them) are standard streams, not files: refused. A path
    ending in ``/`` names a directory: refused.

    Examples
    --------
    >>> output_target("/dev/stdout")
    Traceback (most recent call last):
    ...
    smx_cli.errors.SmxError: /dev/stdout: names a standard stream, not a file; to write to stdout drop -o and use --format
    """
    if path.endswith(("/", os.sep)) or os.path.basename(path) in ("", ".", ".."):
        raise SmxError(f"{path}: names a directory (it ends in '/'); give a file name")
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on a chain of links
        # links among the directories are followed too: the rename happens in the real one
        current = os.path.join(os.path.realpath(os.path.dirname(current)),
                               os.path.basename(current))
        if _STREAM_PATH.match(current):  # also reached through a link to /proc/self
            raise SmxError(f"{path}: names a standard stream, not a file; to write to stdout "
                           "drop -o and use --format")
        if not os.path.islink(current):
            return current
        current = os.path.abspath(os.path.join(os.path.dirname(current), os.readlink(current)))
    raise SmxError(f"{path}: too many levels of symbolic links; choose another -o")


def check_output_target(path: str) -> str:
    """Refuse an output path that cannot be written atomically; return the target file.

    Called before any work (so a long computation does not end in "directory
    does not exist" or "permission denied"): the target (symlinks followed,
    see :func:`output_target`) must be a regular file or not exist, in an
    existing directory where a temporary file can be created.
    """
    target = output_target(path)
    directory = os.path.dirname(target)
    shown = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise SmxError(f"{path}: directory {shown} {what}; create it or choose another -o")
    if os.path.isdir(target):
        raise SmxError(f"{path}: is a directory; give a file name")
    if os.path.lexists(target) and not os.path.isfile(target):
        raise SmxError(f"{path}: is not a regular file (a device, pipe or socket); smx writes "
                       "files atomically -- redirect stdout with --format instead")
    try:  # the only sure test of "can I write here" (root, ACLs, read-only mounts)
        with _signals_held():  # a Ctrl-C now would leave the probe behind
            fd, probe = _create_temp(directory)
            os.close(fd)
            _unlink_quietly(probe)
    except OSError as exc:
        raise SmxError(f"{path}: cannot write in {shown} ({exc.strerror or exc}); "
                       "choose another -o") from None
    return target


def output_identity(path: str) -> tuple:
    """What two output paths must not share: the target's real path, and its
    (device, inode) when it exists (hard links)."""
    target = output_target(path)
    try:
        st = os.stat(target)
        return (target, (st.st_dev, st.st_ino))
    except OSError:
        return (target, None)


@contextmanager
def atomic_output(path: str, mode: str = "w"):
    """Open a temporary file beside the target; rename it over the target on success.

    On any exception (including KeyboardInterrupt) the temporary file is
    removed and the target is left untouched: a reader sees the old file or
    the complete new one, never a truncated one. The temporary file is named
    ``.smx-<pid>-<random><tag>.part`` and locked while open; one left by a
    killed process (SIGKILL cannot be caught) is removed by the next write
    into that directory. The new file keeps the mode of the file it replaces
    (else 0666 minus umask). A symlink is written through (see
    :func:`output_target`).
    """
    target = check_output_target(path)
    directory = os.path.dirname(target)
    remove_stale_temps(directory)
    tmp = None
    try:
        try:
            with _signals_held():  # Ctrl-C lands once ``tmp`` is known, to be removed
                fd, tmp = _create_temp(directory)
        except OSError as exc:
            raise SmxError(f"{path}: cannot write in {os.path.dirname(path) or '.'} "
                           f"({exc.strerror or exc}); choose another -o") from None
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.chmod(tmp, _new_file_mode(target))
            # renamed while still open (and locked): no sweep can take it first
            os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            _unlink_quietly(tmp)
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
    by_ext = {".npy": "npy", ".npz": "npz", ".csv": "csv", ".tsv": "tsv", ".txt": "csv",
              ".json": "json"}
    if ext not in by_ext:
        raise SmxError(f"{path}: cannot tell the format from {ext or 'no extension'}; "
                       "use .npy, .npz, .csv, .tsv or .json, or --format")
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


def json_document(meta: dict, arrays: dict[str, np.ndarray],
                  records: dict[str, dict[str, np.ndarray]] | None = None) -> str:
    """A JSON object: ``meta`` fields, then each array as exact number rows, then
    each record table (named columns) as a list of objects (:func:`records_json`)."""
    body = json.dumps(meta, indent=2, allow_nan=False)[:-2]  # drop the closing "\n}"
    parts = [body] if meta else ["{"]
    items = [(name, json_number_rows(arr)) for name, arr in arrays.items()]
    items += [(name, records_json(fields)) for name, fields in (records or {}).items()]
    for name, text in items:
        sep = "," if parts[-1] != "{" else ""
        parts.append(f'{sep}\n  {json.dumps(name)}: {text}')
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


# ----------------------------------------------------------------------------
# record tables: named columns, each of its own type (ints, bools, floats, text)


def _cells(values: np.ndarray, *, floats=None, text=str) -> list[str]:
    """One column's cells: integers as integers, bools as true/false, floats in
    their shortest exact form (``floats`` maps nan/inf/-inf to other spellings),
    anything else through ``text``."""
    v = np.asarray(values)
    if v.dtype.kind == "b":
        return ["true" if b else "false" for b in v.tolist()]
    if v.dtype.kind in "iu":
        return [str(i) for i in v.tolist()]
    if v.dtype.kind == "f":
        cells = shortest_strings(v.astype(np.float64))
        return cells if floats is None else [floats.get(t, t) for t in cells]
    return [text(str(t)) for t in v.tolist()]


def _field_strings(values: np.ndarray, delimiter: str | None) -> list[str]:
    """A column as delimited text: text quoted as CSV needs (``delimiter`` None: unquoted)."""
    return _cells(values, text=str if delimiter is None else lambda t: csv_field(t, delimiter))


def records_text(fields: dict[str, np.ndarray], delimiter: str = ",") -> str:
    """Named columns as delimited text with a header, each cell in its column's type.

    Examples
    --------
    >>> print(records_text({"row": np.array([0, 1]), "id": np.array(["a,b", ""]),
    ...                     "loss": np.array([0.5, np.nan]), "ok": np.array([True, False])}),
    ...       end="")
    row,id,loss,ok
    0,"a,b",0.5,true
    1,,nan,false
    """
    names = list(fields)
    head = delimiter.join(csv_field(n, delimiter) for n in names)
    cols = [_field_strings(fields[n], delimiter) for n in names]
    lines = [head] + [delimiter.join(cells) for cells in zip(*cols)]
    return "\n".join(lines) + "\n"


_JSON_SPECIAL = {"nan": "null", "inf": '"inf"', "-inf": '"-inf"'}


def _json_cells(values: np.ndarray) -> list[str]:
    """A column as JSON values: exact floats (NaN as null, an infinity as
    "inf"/"-inf": JSON has neither), strings escaped."""
    return _cells(values, floats=_JSON_SPECIAL, text=json.dumps)


def records_json(fields: dict[str, np.ndarray]) -> str:
    """Named columns as a JSON list of records (one object per row).

    Integers stay integers, flags are true/false, floats are exact (the
    shortest form that reads back); NaN is null and an infinity "inf"/"-inf".

    Examples
    --------
    >>> records_json({"row": np.array([0]), "loss": np.array([np.inf]), "ok": np.array([True])})
    '[{"row": 0, "loss": "inf", "ok": true}]'
    """
    names = list(fields)
    cols = [_json_cells(fields[n]) for n in names]
    keys = [json.dumps(n) + ": " for n in names]
    rows = ["{" + ", ".join(k + c for k, c in zip(keys, cells)) + "}" for cells in zip(*cols)]
    return "[" + ",\n  ".join(rows) + "]"


def _storable(values: np.ndarray) -> np.ndarray:
    """An array NPY/NPZ can hold without pickle: text as fixed-width unicode."""
    v = np.asarray(values)
    if v.dtype.hasobject:
        v = np.asarray([str(t) for t in v.tolist()], dtype=str)
        if v.dtype.itemsize == 0:  # every string empty
            v = v.astype("U1")
    if v.dtype == BFLOAT16:
        v = v.astype(np.float32)
    return v


def structured_array(fields: dict[str, np.ndarray]) -> np.ndarray:
    """Named 1-D columns as one NPY-ready structured array (``a["loss"]``...).

    Examples
    --------
    >>> a = structured_array({"row": np.array([0, 1]), "loss": np.array([0.5, 2.0])})
    >>> a.dtype.names, a["row"].dtype.kind
    (('row', 'loss'), 'i')
    """
    cols = {n: _storable(v) for n, v in fields.items()}
    n = len(next(iter(cols.values()))) if cols else 0
    out = np.empty(n, dtype=[(name, v.dtype) for name, v in cols.items()])
    for name, v in cols.items():
        out[name] = v
    return out


def write_npz(fh, arrays: dict[str, np.ndarray]) -> None:
    """Named arrays as an (uncompressed) NPZ archive into the binary file ``fh``;
    ``np.load(..., allow_pickle=False)`` reads every one back with its dtype."""
    np.savez(fh, **{name: _storable(v) for name, v in arrays.items()})


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The NPZ encoding of named arrays (see :func:`write_npz`)."""
    buf = _io.BytesIO()
    write_npz(buf, arrays)
    return buf.getvalue()


def same_file(a: str, b: str) -> bool:
    """True when two paths name the same file (links followed; or the same path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)

