"""Zarr output written chunk by chunk into a temporary store, renamed into place.

The store is created as ``.smx-<pid>-<random>.zarr.part`` next to the
destination; the workers write its chunks; only when every chunk is
written is it renamed to the destination (an existing store there is moved
aside first and removed after). Any failure removes the temporary store and
leaves the destination as it was: nothing half-written is ever at the
destination path.
"""
from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager

import numpy as np

from smx_cli.core.precision import BFLOAT16
from smx_cli.errors import SmxError


def check_destination(path: str) -> None:
    """Refuse a destination that cannot become a Zarr store, before computing."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise SmxError(f"{path}: the directory {parent} does not exist")
    if os.path.exists(path) and not os.path.isdir(path):
        raise SmxError(f"{path}: a file is there; a Zarr output is a directory (choose another "
                       "-o or remove it)")
    if not os.access(parent, os.W_OK):
        raise SmxError(f"{path}: cannot write in {parent}")


def storable(values):
    """``values`` in a dtype Zarr stores: bfloat16 is widened to float32 (exactly)."""
    return values.astype(np.float32) if values.dtype == BFLOAT16 else values


@contextmanager
def atomic_store(path: str):
    """Yield a temporary store path; rename it to ``path`` when the block succeeds.

    Examples
    --------
    >>> import tempfile, zarr
    >>> out = os.path.join(tempfile.mkdtemp(), "p.zarr")
    >>> with atomic_store(out) as tmp:
    ...     z = zarr.open_array(tmp, mode="w", shape=(2,), dtype="f8")
    ...     z[:] = [0.25, 0.75]
    >>> zarr.open_array(out, mode="r")[:].tolist()
    [0.25, 0.75]
    """
    check_destination(path)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".smx-{os.getpid()}-{secrets.token_hex(4)}.zarr.part")
    try:
        yield tmp
        if not os.path.isdir(tmp):
            raise SmxError(f"{path}: nothing was written")
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f".smx-{os.getpid()}-{secrets.token_hex(4)}.zarr.old")
            os.rename(path, old)
        os.rename(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
