"""Inputs for the Dask engine: Zarr stores and globs of NPY shards as dask arrays.

A glob (``'shards/*.npy'``) names shards whose rows are concatenated in
sorted path order. Every shard's header is read and checked before anything
is computed (same number of dimensions, same classes, same dtype, the file's
size matching its header, no Python objects): a bad shard is one
:class:`~smx_cli.errors.SmxError` line naming it. The data is read lazily,
chunk by chunk, on the workers: a chunk is a row range that may span shards,
read with ``readinto`` from the files (a task carries paths and offsets,
never the data, so it pickles small to a process or a remote worker).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.io import stream

# bytes per chunk of a sharded NPY array (dask's own default is 128 MiB)
CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class _Shard:
    path: str
    offset: int          # first data byte
    rows: int
    fortran: bool
    dtype: np.dtype      # as stored (byte order may differ between shards)


class NpyShards:
    """The rows of NPY shards concatenated, indexable like an array (for ``da.from_array``).

    ``shape`` is (N, C) or (N,) for 1-D shards (labels). Only the rows asked
    for are read.
    """

    def __init__(self, shards: list[_Shard], tail: tuple[int, ...], dtype: np.dtype):
        self.shards = shards
        self.tail = tail
        self.file_dtype = dtype
        self.dtype = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
        self.shape = (sum(s.rows for s in shards),) + tail
        self.ndim = len(self.shape)
        self.starts = np.cumsum([0] + [s.rows for s in shards])

    def _read(self, shard: _Shard, r0: int, r1: int) -> np.ndarray:
        width = int(np.prod(self.tail, dtype=np.int64)) if self.tail else 1
        if shard.fortran and self.tail:
            mm = np.memmap(shard.path, dtype=shard.dtype, mode="r", offset=shard.offset,
                           shape=(shard.rows,) + self.tail, order="F")
            out = np.array(mm[r0:r1])
            del mm
            return out.astype(self.dtype, copy=False)
        out = np.empty((r1 - r0) * width, dtype=shard.dtype)
        with open(shard.path, "rb") as fh:
            fh.seek(shard.offset + r0 * width * shard.dtype.itemsize)
            got = fh.readinto(memoryview(out).cast("B")) if out.size else 0
        if got != out.nbytes:
            raise SmxError(f"{shard.path}: the data ends early (changed while being read?)")
        return out.reshape((r1 - r0,) + self.tail).astype(self.dtype, copy=False)

    def read_rows(self, r0: int, r1: int, buffer: np.ndarray | None = None) -> np.ndarray:
        """Rows r0:r1 as one array, read into ``buffer`` (flat, reused) when it is big enough
        and every shard is C-ordered: no fresh memory to fault in per block."""
        width = int(np.prod(self.tail, dtype=np.int64)) if self.tail else 1
        need = (r1 - r0) * width
        if buffer is None or buffer.size < need or buffer.dtype != self.file_dtype \
                or any(s.fortran or s.dtype != self.file_dtype for s in self.shards):
            return self[r0:r1]
        out = buffer[:need]
        done = 0
        for i, s in enumerate(self.shards):
            a, b = max(r0, int(self.starts[i])), min(r1, int(self.starts[i + 1]))
            if a >= b:
                continue
            piece = out[done:done + (b - a) * width]
            with open(s.path, "rb") as fh:
                fh.seek(s.offset + (a - int(self.starts[i])) * width * s.dtype.itemsize)
                got = fh.readinto(memoryview(piece).cast("B"))
            if got != piece.nbytes:
                raise SmxError(f"{s.path}: the data ends early (changed while being read?)")
            done += piece.size
        out = out.reshape((r1 - r0,) + self.tail)
        return out if self.dtype == self.file_dtype else out.astype(self.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows = key[0] if key else slice(None)
        r0, r1, step = rows.indices(self.shape[0])
        pieces = []
        for i, s in enumerate(self.shards):
            a, b = max(r0, int(self.starts[i])), min(r1, int(self.starts[i + 1]))
            if a < b:
                pieces.append(self._read(s, a - int(self.starts[i]), b - int(self.starts[i])))
        if len(pieces) == 1:
            out = pieces[0]  # no copy: the common chunk within one shard
        else:
            out = (np.concatenate(pieces) if pieces
                   else np.empty((0,) + self.tail, dtype=self.dtype))
        out = out[::step] if step != 1 else out
        return out[(slice(None),) + tuple(key[1:])] if len(key) > 1 else out


def expand(pattern: str) -> list[str]:
    """The sorted paths a glob names (a plain path is itself); SmxError when none."""
    if os.path.exists(pattern) or not glob.has_magic(pattern):
        return [pattern]
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SmxError(f"{pattern}: no file matches this pattern")
    return paths


def _shard_header(path: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    try:
        with open(path, "rb") as fh:
            shape, dtype, fortran = stream.read_npy_header(fh)
            offset = fh.tell()
        stream.npy_info(path)  # the size must match the header
    except stream.StreamError as exc:
        msg = str(exc)
        raise SmxError(msg if msg.startswith(path) else f"{path}: {msg}") from None
    except OSError as exc:
        raise SmxError(f"{path}: {exc.strerror or exc}") from None
    return shape, dtype, fortran, offset


def npy_shards(pattern: str, ndims: tuple[int, ...] = (2,)) -> NpyShards:
    """Check the shards of ``pattern`` and describe their concatenated rows.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> for i in range(2):
    ...     np.save(os.path.join(d, f"s{i}.npy"), np.full((2, 3), float(i)))
    >>> s = npy_shards(os.path.join(d, "s*.npy"))
    >>> s.shape, s[1:3].tolist()
    ((4, 3), [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    """
    shards = []
    first = None
    for path in expand(pattern):
        if os.path.isdir(path):
            raise SmxError(f"{path}: a directory, not an NPY shard (a Zarr store is read "
                           "when the path itself names it)")
        shape, dtype, fortran, offset = _shard_header(path)
        if dtype.kind not in "fiu" or dtype.itemsize > 8 or dtype.subdtype is not None:
            raise SmxError(f"{path}: dtype {dtype} is not a real number type; shards must hold "
                           "floats or integers")
        if len(shape) not in ndims:
            want = " or ".join(f"{n}-D" for n in ndims)
            raise SmxError(f"{path}: shape {tuple(shape)} is not {want}")
        if first is None:
            first = (path, tuple(shape[1:]), dtype)
        elif tuple(shape[1:]) != first[1]:
            raise SmxError(f"{path}: rows of shape {tuple(shape[1:])} but {first[0]} has rows "
                           f"of shape {first[1]}; every shard needs the same classes")
        elif dtype.newbyteorder("=") != first[2].newbyteorder("="):
            raise SmxError(f"{path}: dtype {dtype} but {first[0]} has {first[2]}; every shard "
                           "needs the same dtype")
        # absolute: a remote worker's working directory is not ours
        shards.append(_Shard(os.path.abspath(path), offset, int(shape[0]), bool(fortran), dtype))
    # one dtype for all: byte orders may differ per shard only in name
    return NpyShards(shards, first[1], first[2])


def is_zarr(path: str) -> bool:
    """Whether ``path`` names a Zarr store (v2 or v3 metadata in a directory)."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup"))


def open_array(path: str, ndims: tuple[int, ...] = (2,), chunk_bytes: int = CHUNK_BYTES):
    """A dask array of a Zarr store, an NPY file or a glob of NPY shards.

    NPY rows are chunked to about ``chunk_bytes``, whole rows per chunk; a
    Zarr store keeps its own chunks (a class axis split across chunks is
    handled by the two-stage reductions, not rechunked).

    Examples
    --------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(p, np.arange(12.0).reshape(4, 3))
    >>> a = open_array(p, chunk_bytes=48)
    >>> a.chunks, float(a.sum().compute(scheduler="synchronous"))
    (((2, 2), (3,)), 66.0)
    """
    import dask.array as da

    if is_zarr(path):
        try:
            import zarr
            z = zarr.open_array(os.path.abspath(path), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds; one line names the store
            raise SmxError(f"{path}: not a readable Zarr array ({type(exc).__name__}: {exc})") \
                from None
        if z.ndim not in ndims:
            raise SmxError(f"{path}: Zarr array of shape {z.shape}; expected "
                           f"{' or '.join(f'{n}-D' for n in ndims)}")
        if z.dtype.kind not in "fiu" or z.dtype.itemsize > 8:
            raise SmxError(f"{path}: Zarr dtype {z.dtype} is not a real number type")
        rows = ZarrRows(os.path.abspath(path), path, tuple(z.shape), np.dtype(z.dtype))
        return da.from_array(rows, chunks=z.chunks, lock=False, asarray=True, fancy=False,
                             meta=np.empty((0,) * z.ndim, dtype=rows.dtype),
                             name=f"smx-zarr-{_zarr_token(rows)}")
    shards = npy_shards(path, ndims)
    width = int(np.prod(shards.tail, dtype=np.int64)) if shards.tail else 1
    rows = stream.block_rows_for(width, shards.dtype.itemsize, chunk_bytes)
    chunks = (rows,) + tuple(-1 for _ in shards.tail)
    arr = da.from_array(shards, chunks=chunks, lock=False, asarray=True, fancy=False,
                        meta=np.empty((0,) * shards.ndim, dtype=shards.dtype),
                        name=f"smx-npy-{_token(shards)}")
    _READERS[arr.name] = shards
    return arr


# dask arrays made by open_array from NPY shards -> their reader (see npy_reader)
_READERS: dict[str, NpyShards] = {}


def npy_reader(x) -> NpyShards | None:
    """The shards reader behind ``x`` when ``x`` is an untouched :func:`open_array` of NPY
    files (so a task can read its rows into a reused buffer), else None."""
    r = _READERS.get(getattr(x, "name", None))
    return r if r is not None and tuple(x.shape) == r.shape else None


class ZarrRows:
    """A Zarr array read chunk by chunk on the workers; a damaged chunk is one SmxError line.

    Pickles as its path (each worker opens the store itself).
    """

    def __init__(self, path: str, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype
        self.ndim = len(shape)
        self._z = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_z"} | {"_z": None}

    def __getitem__(self, key):
        try:
            if self._z is None:
                import zarr

                self._z = zarr.open_array(self.path, mode="r")
            return np.asarray(self._z[key])
        except Exception as exc:  # noqa: BLE001 - a codec, a short file, a vanished store
            first = key[0] if isinstance(key, tuple) else key
            where = f"rows {first.start}..{first.stop - 1}" if isinstance(first, slice) \
                and first.stop is not None else "a chunk"
            raise SmxError(f"{self.name}: cannot read {where} of the Zarr array "
                           f"({type(exc).__name__}: {exc})") from None


def _zarr_token(rows: ZarrRows) -> str:
    import hashlib

    h = hashlib.sha1(rows.path.encode())
    for root, _, files in os.walk(rows.path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        break  # the metadata level: cheap, and changes when the array is rewritten
    return h.hexdigest()[:16]


def _token(shards: NpyShards) -> str:
    import hashlib

    h = hashlib.sha1()
    for s in shards.shards:
        st = os.stat(s.path)
        h.update(f"{os.path.abspath(s.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def open_labels(path: str, n_classes: int):
    """Labels as a dask array: an NPY file/glob or Zarr (1-D indices or N x C targets),
    else any file ``smx`` reads labels from (read whole: labels are small).

    Examples
    --------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "y.csv")
    >>> with open(p, "w") as fh:
    ...     _ = fh.write("label\\n2\\n0\\n")
    >>> open_labels(p, 3).compute(scheduler="synchronous").tolist()
    [2.0, 0.0]
    """
    import dask.array as da

    if is_zarr(path) or glob.has_magic(path) and not os.path.exists(path):
        return open_array(path, ndims=(1, 2))
    try:
        with open(path, "rb") as fh:
            npy = fh.read(6) == b"\x93NUMPY"
    except OSError as exc:
        raise SmxError(f"{path}: {exc.strerror or exc}") from None
    if npy:
        return open_array(path, ndims=(1, 2))
    from smx_cli.io.labels import read_labels

    return da.from_array(np.asarray(read_labels(path)), chunks=-1)
