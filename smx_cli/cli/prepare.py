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
              label_column: str | None = None, id_column: str | None = None,
              columns: list[str] | None = None, drop_columns: list[str] | None = None) -> Rows:
    """Read ``path`` and return its rows of classes along ``axis``.

    ``label_column`` and ``id_column`` (a header name or 0-based index) are
    taken out of the logits first (their values in ``Rows.labels`` and
    ``Rows.ids``); ``columns`` / ``drop_columns`` choose the logit columns
    (see :func:`smx_cli.io.columns.split_columns`).

    Raises
    ------
    SmxError
        For unreadable input or an axis the array does not have.
    """
    labels = ids = None
    if any(v is not None for v in (label_column, id_column, columns, drop_columns)):
        from smx_cli.io.columns import split_columns
        from smx_cli.io.labels import labels_from_tokens
        if axis not in (-1, 1):
            raise SmxError("--id-column, --label-column, --columns and --drop-columns name "
                           "columns: they take the class axis last (--axis -1)")
        split = split_columns(path, label_column=label_column, id_column=id_column,
                              columns=columns, drop_columns=drop_columns,
                              delimiter=delimiter, header=header, key=key)
        loaded, ids, labels = split.loaded, split.ids, split.labels
        if split.label_tokens is not None:
            labels = labels_from_tokens(split.label_tokens, split.label_lines, loaded.source,
                                        loaded.class_names)
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
