"""Reading safetensors files without torch: checked header, memory map, row blocks.

The format (huggingface/safetensors): 8 bytes little-endian u64 ``n``, then
``n`` bytes of JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the byte after the
header; an optional ``__metadata__`` map of strings), then the data,
little-endian and C-ordered. Nothing is executed or unpickled.

Every promise of the header is checked against the file before any data is
touched, and a broken one is refused in one line that names the file, the
tensor and the byte offset: a header length past the file, JSON that is not
an object, an unknown dtype, a shape whose size does not match its byte
range, data offsets outside the data or overlapping another tensor's, and
a file shorter than its last tensor (truncated).

A torch ``.pt``/``.bin`` checkpoint is a pickle (a zip holding
``data.pkl``, or a bare pickle stream): it is refused, never unpickled,
with a message to save the tensors with safetensors instead.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from smx_cli.core.precision import BFLOAT16
from smx_cli.errors import SmxError

# numpy dtypes of the safetensors dtype names smx reads (all little-endian)
DTYPES = {
    "BF16": BFLOAT16, "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"),
}
# names the format defines that smx does not read (a clear refusal, not "unknown")
_UNSUPPORTED = ("BOOL", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3",
                "F6_E3M2", "C64")
# the reference implementation refuses headers above 100 MB; so does smx
MAX_HEADER = 100_000_000
SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file, as its (checked) header describes it.

    ``offset`` is the absolute byte offset of its data in the file.
    """

    name: str
    dtype: np.dtype
    dtype_name: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _fail(source: str, msg: str) -> SmxError:
    return SmxError(f"{source}: {msg}")


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether the first bytes of a file of ``size`` bytes start a safetensors header.

    The format has no magic: an 8-byte length that fits the file, followed
    by ``{``. A ``.safetensors`` name is trusted without this test (so a
    damaged one is reported as such, not read as CSV).

    Examples
    --------
    >>> looks_like_safetensors((2).to_bytes(8, "little") + b"{}", 10)
    True
    >>> looks_like_safetensors(b"1,2,3\\n4,5,6\\n", 12)
    False
    """
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def refuse_pickle(head: bytes, source: str) -> None:
    """Refuse a torch checkpoint (a pickle) by its first bytes; never unpickle it.

    A torch.save zip names ``data.pkl`` in its first local file header; a
    legacy torch file or a bare pickle starts with the PROTO opcode 0x80, a
    protocol number 2..5 and another opcode (never a 0 byte, which tells it
    from a safetensors header length such as 0x0280).
    """
    bare = len(head) >= 3 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] != 0
    pickled = bare or (head.startswith(b"PK\x03\x04") and b"data.pkl" in head[:512])
    if pickled:
        raise _fail(source, "is a pickle (a torch.save checkpoint?); smx never unpickles files "
                            "-- save the tensor with safetensors (safetensors.torch.save_file"
                            "({'logits': t}, 'x.safetensors')) or numpy (np.save)")


def parse_header(head: bytes, size: int, source: str) -> tuple[dict[str, TensorInfo], dict]:
    """Check a safetensors header against a file of ``size`` bytes.

    ``head`` holds (at least) the file's first 8 + n bytes. Returns the
    tensors by name (in file order) and the ``__metadata__`` map. Raises
    :class:`SmxError` naming the tensor and byte offset of the first lie.
    """
    if size < 8 or len(head) < 8:
        raise _fail(source, f"not a safetensors file: {size} bytes, shorter than the 8-byte "
                            "header length at offset 0")
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER or 8 + n > size:
        raise _fail(source, f"bad safetensors header length {n} at offset 0 (the file has "
                            f"{size} bytes{'; the limit is 100 MB' if n > MAX_HEADER else ''}); "
                            "the file is damaged or not safetensors")
    if len(head) < 8 + n:
        raise _fail(source, f"truncated safetensors header at offset {len(head)} "
                            f"(the header length says {n} bytes)")
    try:
        doc = json.loads(head[8:8 + n].decode("utf-8"))
    except RecursionError:
        raise _fail(source, "safetensors header at offset 8 nests JSON too deeply; the file "
                            "is damaged") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pos = getattr(exc, "pos", getattr(exc, "start", 0))
        raise _fail(source, f"safetensors header is not valid JSON at offset {8 + pos} "
                            f"({str(exc).split(':')[0]}); the file is damaged") from None
    if not isinstance(doc, dict):
        raise _fail(source, "safetensors header at offset 8 is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise _fail(source, "safetensors __metadata__ at offset 8 is not a JSON object")
    data_start = 8 + n
    data_len = size - data_start
    tensors = {}
    for name, spec in doc.items():
        tensors[name] = _tensor_info(name, spec, data_start, data_len, source)
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values() if t.nbytes)
    for (b0, e0, a), (b1, _, b) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _fail(source, f"tensor {b!r}: data at offset {b1} overlaps tensor {a!r} "
                                f"(offsets {b0}..{e0}); the header is damaged")
    return tensors, meta


def _tensor_info(name, spec, data_start, data_len, source) -> TensorInfo:
    where = f"tensor {name!r}"
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= set(spec):
        raise _fail(source, f"{where}: header entry at offset 8 lacks dtype, shape or "
                            "data_offsets; the header is damaged")
    dname = spec["dtype"]
    if not isinstance(dname, str):
        raise _fail(source, f"{where}: dtype {dname!r} is not a name such as 'F32'")
    if dname not in DTYPES:
        known = "supported by safetensors but not by smx" if dname in _UNSUPPORTED else "unknown"
        raise _fail(source, f"{where}: dtype {dname!r} is {known} (smx reads "
                            f"{', '.join(DTYPES)}); convert it, e.g. to F32")
    shape, offs = spec["shape"], spec["data_offsets"]
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _fail(source, f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)):
        raise _fail(source, f"{where}: data_offsets {offs!r} are not two integers")
    begin, end = offs
    dtype = DTYPES[dname]
    if not 0 <= begin <= end:
        raise _fail(source, f"{where}: data_offsets {begin}..{end} at offset {data_start + begin} "
                            "run backwards or start before the data; the header is damaged")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a huge shape cannot overflow
    if end - begin != nbytes:
        raise _fail(source, f"{where}: shape {tuple(shape)} ({dname}) needs {nbytes} bytes but "
                            f"data_offsets {begin}..{end} at offset {data_start + begin} hold "
                            f"{end - begin}; the header lies about the shape or offsets")
    if end > data_len:
        raise _fail(source, f"{where}: truncated: its data ends at offset {data_start + end} "
                            f"but the file has {data_start + data_len} bytes; write it again")
    return TensorInfo(name, dtype, dname, tuple(shape), data_start + begin, nbytes)


def read_info(path: str) -> tuple[dict[str, TensorInfo], dict]:
    """The checked header of the safetensors file at ``path`` (no data is read).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
    >>> write(p, {"logits": np.zeros((2, 3), np.float32)})
    >>> t, _ = read_info(p)
    >>> t["logits"].shape, t["logits"].dtype_name, t["logits"].offset
    ((2, 3), 'F32', 72)
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) == 8:
            n = int.from_bytes(head, "little")
            if n <= MAX_HEADER and 8 + n <= size:
                head += fh.read(n)
    return parse_header(head, size, path)


def choose(tensors: dict[str, TensorInfo], key: str | None, source: str) -> TensorInfo:
    """The tensor ``key`` names, else the only one, else ``logits`` (as for NPZ)."""
    names = [repr(k)[1:-1] for k in tensors]  # a newline in a name stays on one line
    if key is None:
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        if "logits" in tensors:
            return tensors["logits"]
        raise _fail(source, f"safetensors file holds {len(names)} tensors "
                            f"({', '.join(names[:10]) or 'none'}{', ...' if len(names) > 10 else ''})"
                            "; choose one with --key")
    if key not in tensors:
        raise _fail(source, f"safetensors file has no tensor {key!r} (it has: "
                            f"{', '.join(names[:10]) or 'none'}); choose one with --key")
    return tensors[key]


def load(path: str, key: str | None = None) -> np.ndarray:
    """One tensor of a safetensors file as a read-only memory map (no copy).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
    >>> write(p, {"ids": np.array([[1, 2]], np.int64), "logits": np.ones((1, 2, 3), np.float32)})
    >>> load(p).shape, load(p, "ids").tolist()
    ((1, 2, 3), [[1, 2]])
    """
    tensors, _ = read_info(path)
    info = choose(tensors, key, path)
    return _map(path, info)


read_safetensors = load  # the public API's name for it (smx_cli.read_safetensors)


def _map(path: str, info: TensorInfo) -> np.ndarray:
    if info.nbytes == 0:
        return np.zeros(info.shape, dtype=info.dtype.newbyteorder("="))
    arr = np.memmap(path, dtype=info.dtype, mode="r", offset=info.offset, shape=info.shape)
    arr = arr.view(np.ndarray)  # a plain array over the map (it stays open while referenced)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def load_bytes(data: bytes, source: str, key: str | None = None) -> np.ndarray:
    """One tensor of safetensors bytes (e.g. from standard input), as a view of them."""
    tensors, _ = parse_header(data, len(data), source)
    info = choose(tensors, key, source)
    arr = np.frombuffer(data, dtype=info.dtype, count=math.prod(info.shape),
                        offset=info.offset).reshape(info.shape)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def iter_blocks(path: str, info: TensorInfo, *, block_bytes: int = 16 << 20
                ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, total_rows, block)`` over a tensor's rows of its last axis.

    Like :func:`smx_cli.io.stream.iter_npy_blocks`: the data is read with
    ``readinto`` into one reused buffer (``block`` is a view of it: copy what
    you keep), so resident memory stays at one block whatever the file's
    size -- a memory map would count every page it touched.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
    >>> write(p, {"x": np.arange(12.0).reshape(2, 3, 2)})
    >>> info = read_info(p)[0]["x"]
    >>> [(s, b.shape) for s, _, b in iter_blocks(p, info, block_bytes=40)]
    [(0, (2, 2)), (2, (2, 2)), (4, (2, 2))]
    """
    shape = info.shape
    c = shape[-1] if shape else 1
    n = math.prod(shape[:-1]) if len(shape) > 1 else 1
    step = max(1, block_bytes // max(1, c * info.dtype.itemsize))
    buf = np.empty(min(step, max(n, 1)) * c, dtype=info.dtype)
    with open(path, "rb") as fh:
        fh.seek(info.offset)
        for s0 in range(0, max(n, 1), step):
            rows = min(s0 + step, n) - s0
            view = buf[:rows * c]
            got = fh.readinto(view.view(np.uint8)) if rows * c else 0
            if got != view.nbytes:
                raise _fail(path, f"tensor {info.name!r}: the data ends early at offset "
                                  f"{info.offset + s0 * c * info.dtype.itemsize + got} (row "
                                  f"{s0 + got // max(1, c * info.dtype.itemsize)} of {n})")
            xb = view.reshape(rows, c)
            yield s0, n, xb if xb.dtype.isnative else xb.astype(xb.dtype.newbyteorder("="))
            if n == 0:
                break


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write arrays as a safetensors file (for samples and tests; C order, little-endian).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
    >>> write(p, {"x": np.array([1.5], np.float32)}, {"by": "smx"})
    >>> read_info(p)[1]
    {'by': 'smx'}
    """
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header, blobs, pos = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        dname = names.get(a.dtype.newbyteorder("<")) or names.get(a.dtype)
        if dname is None:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} has no safetensors name smx writes")
        header[name] = {"dtype": dname, "shape": list(a.shape),
                        "data_offsets": [pos, pos + a.nbytes]}
        blobs.append(a)
        pos += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data aligned to 8 bytes, as the reference writer does
    with open(path, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        for a in blobs:
            fh.write(a.reshape(-1).view(np.uint8).data if a.size else b"")
