"""From a file name to (N, C) rows: read, check, move the class axis last.

Shared by every command, so the axis is normalised once, where input enters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smx_cli.errors import SmxError
from smx_cli.io import Loaded, read_array
from smx_cli.core.softmax import as_rows


@dataclass
class Rows:
    """Logits as (N, C) rows, and how to put results back in the input's layout."""

    x2: np.ndarray
    loaded: Loaded
    axis: int
    ndim: int
    moved_shape: tuple[int, ...]
    labels: np.ndarray | None = None
    ids: list[str] | None = None

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """The input's shape without the class axis (for row labels)."""
        return self.moved_shape[:-1]

    @property
    def class_names(self) -> list[str] | None:
        names = self.loaded.class_names
        if names is None or self.ndim != 2 or self.axis != 1:
            return None
        return names

    @property
    def row_names(self) -> list[str] | None:
        """With --axis 0 on a table with a header, the rows are its columns."""
        names = self.loaded.class_names
        if names is not None and self.ndim == 2 and self.axis == 0:
            return names
        return None


#: header names that say a column holds labels, not logits
LABEL_NAMES = ("label", "labels", "target", "targets", "y", "class")


def load_rows(path: str, *, delimiter=None, header=None, key=None, axis: int = -1,
              label_column: str | None = None, id_column: str | None = None) -> Rows:
    """Read ``path`` and return its rows of classes along ``axis``.

    ``label_column`` (a header name or 0-based index) is taken out of the
    logits first; its values are in ``Rows.labels``.

    Raises
    ------
    SmxError
        For unreadable input or an axis the array does not have.
    """
    labels = ids = None
    if label_column is not None and id_column is not None:
        raise SmxError("--label-column and --id-column: give one of them (for now)")
    if id_column is not None:
        from smx_cli.io.labels import split_id_column
        loaded, ids = split_id_column(path, id_column, delimiter=delimiter, header=header,
                                      key=key)
        if axis not in (-1, 1):
            raise SmxError("--id-column names rows: it takes the class axis last (--axis -1)")
    elif label_column is not None:
        from smx_cli.io.labels import split_label_column
        loaded, labels = split_label_column(path, label_column, delimiter=delimiter,
                                            header=header, key=key)
    else:
        loaded = read_array(path, delimiter=delimiter, header=header, key=key)
    arr = loaded.values
    try:
        x2, moved_shape, ax = as_rows(arr, axis)
    except ValueError as exc:
        nd = max(arr.ndim, 1)
        raise SmxError(f"{loaded.source}: {exc} (shape {arr.shape}); give --axis between "
                       f"{-nd} and {nd - 1} (the class axis; the other axes are rows)") from None
    rows = Rows(x2, loaded, ax, arr.ndim, moved_shape)
    rows.labels = labels
    rows.ids = ids
    return rows


def label_like_columns(rows: Rows) -> list[str]:
    """Header names of the logits that look like a label column (``label``, ``target``...)."""
    names = rows.class_names or []
    return [n for n in names if str(n).strip().lower() in LABEL_NAMES]
