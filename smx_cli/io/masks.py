"""Reading a keep-mask for ``--mask``: True keeps a class, False masks it out.

Formats: NPY/NPZ (bool, or integers/floats that are 0 or 1), or text with one
row per logits row and tokens true/false, t/f, yes/no, 1/0 (any case), with
an optional header row. A single row (or a 1-D array) applies to every row.
Raises SmxError; never prints.
"""
from __future__ import annotations

import io as _io

import numpy as np

from smx_cli import io
from smx_cli.errors import SmxError

_TRUE = {"true", "t", "yes", "y", "1", "1.0", "keep"}
_FALSE = {"false", "f", "no", "n", "0", "0.0", "mask"}


def _from_array(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf":
        ok = np.isin(arr, (0, 1))
        if not ok.all():
            idx = tuple(int(i) for i in np.argwhere(~ok)[0])
            # .item(): a Python number in the message, not numpy's repr (np.int64(2))
            raise SmxError(f"{source}: mask value {arr[idx].item()!r} at index {idx} is not 0/1 "
                           "or true/false")
        return arr.astype(bool)
    raise SmxError(f"{source}: a mask holds booleans (or 0/1), not dtype {arr.dtype}")


def read_mask(path: str, shape: tuple[int, int], *, delimiter: str | None = None) -> np.ndarray:
    """A boolean (N, C) keep-mask for logits of ``shape``.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = open(p, "w").write("true,false,true\\n")
    >>> read_mask(p, (2, 3)).tolist()
    [[True, False, True], [True, False, True]]
    """
    data, source = io.read_bytes(path)
    if data.startswith(io.NPY_MAGIC) or data.startswith(io.ZIP_MAGIC):
        try:
            loaded = np.load(_io.BytesIO(data), allow_pickle=False)
            if not isinstance(loaded, np.ndarray):
                keys = list(loaded.files)
                if len(keys) != 1:
                    raise SmxError(f"{source}: mask NPZ holds {len(keys)} arrays; save just one")
                loaded = loaded[keys[0]]
        except SmxError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load fault is bad data
            raise SmxError(f"{source}: cannot read the mask ({exc})") from None
        mask = _from_array(np.asarray(loaded), source)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
        lines = io.content_lines(text)  # lines end at \n only, not at \v or \f
        if not lines:
            raise SmxError(f"{source}: empty mask file")
        delim = delimiter or io.sniff_delimiter([ln for _, ln in lines])
        rows = []
        for k, (n, ln) in enumerate(lines):
            toks = [t.lower() for t in io.split_fields(ln, delim)]
            if k == 0 and len(lines) > 1 and not any(t in _TRUE or t in _FALSE for t in toks):
                continue  # a header row of class names
            row = []
            for col, t in enumerate(toks, 1):
                if t in _TRUE:
                    row.append(True)
                elif t in _FALSE:
                    row.append(False)
                else:
                    raise SmxError(f"{source}: line {n}, column {col}: {t!r} is not true/false or 1/0")
            rows.append((n, row))
        widths = {len(r) for _, r in rows}
        if len(widths) > 1:
            n = next(n for n, r in rows if len(r) != len(rows[0][1]))
            raise SmxError(f"{source}: line {n} has a different number of values than line {rows[0][0]}")
        mask = np.array([r for _, r in rows], dtype=bool)
    if mask.ndim == 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim == 1 and mask.shape[0] == shape[1]:
        return np.broadcast_to(mask, shape).copy()
    if mask.shape != tuple(shape):
        raise SmxError(f"{source}: mask has shape {tuple(int(d) for d in mask.shape)}, the logits "
                       f"{tuple(int(d) for d in shape)}; give one "
                       "row per logits row, or a single row for all")
    return mask
