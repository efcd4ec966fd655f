"""Reading the true labels for cross-entropy: a file, or a column of the logits CSV.

Labels come as class indices (one integer per line, NPY integers, or class
names from the logits' header such as ``cat``), or as an N x C matrix of
probability targets. Raises SmxError; never prints.
"""
from __future__ import annotations

import numpy as np

from smx_cli import io
from smx_cli.core.result import check_class_weights
from smx_cli.errors import SmxError


def _names_index(class_names: list[str] | None) -> dict[str, int]:
    return {str(n): i for i, n in enumerate(class_names or [])}


def _label_token(tok: str, names: dict[str, int], where: str) -> float:
    if tok in names:
        return float(names[tok])
    try:
        if not io.is_number(tok):  # float() also takes 1_0 (ten) and other forms
            raise ValueError(tok)
        return float(tok)
    except ValueError:
        known = f" (classes: {', '.join(list(names)[:10])}{', ...' if len(names) > 10 else ''})" \
            if names else ""
        raise SmxError(f"{where}: label {tok!r} is neither a number nor a class name{known}") from None


def _is_header_word(tok: str) -> bool:
    """A column name such as ``label`` or ``y_true``: starts with a letter (or ``_``)
    and is not a number (``nan``, ``inf``). ``0x1``, ``1_0`` or ``-`` are bad
    labels, reported as such, never silently skipped as a header."""
    return bool(tok) and (tok[0].isalpha() or tok[0] == "_") and not io.is_number(tok)


def labels_from_tokens(tokens: list[str], lines: list[int], source: str,
                       class_names: list[str] | None) -> np.ndarray:
    """One label per token: integers, integral floats, or class names."""
    names = _names_index(class_names)
    values = np.empty(len(tokens))
    for i, (tok, line) in enumerate(zip(tokens, lines)):
        values[i] = _label_token(tok.strip(), names, f"{source}: line {line}")
    return values


def read_labels(path: str, *, class_names: list[str] | None = None,
                delimiter: str | None = None) -> np.ndarray:
    """Read labels from ``path``: indices (N,) or probability targets (N, C).

    Text with one value per line may hold integers or class names, after an
    optional header line (``label``); text with several columns is a matrix
    of probability targets. NPY/NPZ arrays are used as they are.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "y.csv")
    >>> _ = open(p, "w").write("label\\ncat\\ndog\\n1\\n")
    >>> read_labels(p, class_names=["cat", "dog"]).tolist()
    [0.0, 1.0, 1.0]
    """
    data, source = io.read_bytes(path)
    if data.startswith(io.NPY_MAGIC):
        return io.load_npy(data, source)
    if data.startswith(io.ZIP_MAGIC):
        return io.load_npz(data, source, None)[0]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    entries = io.content_lines(text)  # lines end at \n only, not at \v or \f
    if not entries:
        raise SmxError(f"{source}: no labels (the file is empty or holds only comments)")
    delim = delimiter if delimiter is not None else io.sniff_delimiter([e[1] for e in entries])
    widths = {len(io.split_fields(line, delim)) for _, line in entries[1:] or entries}
    if widths == {1}:
        names = _names_index(class_names)
        first = io.split_fields(entries[0][1], delim)
        if len(first) == 1 and first[0] not in names and _is_header_word(first[0]):
            entries = entries[1:]  # a header such as "label"
        if not entries:
            raise SmxError(f"{source}: only a header, no labels")
        toks = []
        for lineno, line in entries:
            parts = io.split_fields(line, delim)
            if len(parts) != 1:
                raise SmxError(f"{source}: line {lineno} has {len(parts)} values; expected one label")
            toks.append(parts[0])
        return labels_from_tokens(toks, [e[0] for e in entries], source, class_names)
    values, _ = io.parse_text(data, source, delimiter=delimiter)
    return values


def split_label_column(path: str, column: str, *, delimiter: str | None = None,
                       header: bool | None = None, key: str | None = None):
    """Take the label column out of a logits file.

    Returns ``(logits Loaded, label values)``. ``column`` is a header name or
    a 0-based index. For text files the label column may hold class names
    (the other columns' header names).
    """
    return _split_column(path, column, delimiter=delimiter, header=header, key=key)


def split_id_column(path: str, column: str, *, delimiter: str | None = None,
                    header: bool | None = None, key: str | None = None):
    """Take a column of row ids (any text, or numbers) out of a logits file.

    Returns ``(logits Loaded, list of id strings)``.
    """
    return _split_column(path, column, delimiter=delimiter, header=header, key=key, ids=True,
                         what="--id-column")


def _split_column(path: str, column: str, *, delimiter=None, header=None, key=None,
                  ids: bool = False, what: str = "--label-column"):
    data, source = io.read_bytes(path)
    if data.startswith(io.NPY_MAGIC) or data.startswith(io.ZIP_MAGIC):
        loaded = io.read_array(path, key=key)
        arr = loaded.values
        if arr.ndim != 2:
            raise SmxError(f"{source}: {what} needs a 2-D array, got shape {arr.shape}")
        idx = _column_index(column, None, arr.shape[1], source)
        labels = arr[:, idx]
        loaded.values = np.delete(arr, idx, axis=1)
        if ids:
            return loaded, [f"{v:g}" for v in labels.astype(np.float64)]
        return loaded, labels
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    raw_lines = text.split("\n")  # lines end at \n only, not at \v or \f
    content = io.content_lines(text, first_line=0)
    if not content:
        raise SmxError(f"{source}: no data (the file is empty or holds only comments)")
    delim = delimiter if delimiter is not None else io.sniff_delimiter([c[1] for c in content])
    first = io.split_fields(content[0][1], delim)
    if header is None:
        # a header if the first row has a token that is no number, apart from the label column
        try_idx = _column_index(column, None, len(first), source, quiet=True)
        others = [t for j, t in enumerate(first) if j != try_idx]
        header = column in first or not all(io.is_number(t) for t in others)
    names = first if header else None
    idx = _column_index(column, names, len(first), source)
    out_lines = list(raw_lines)
    tokens, lines = [], []
    for n, (i, line) in enumerate(content):
        parts = io.split_fields(line, delim)
        if len(parts) != len(first):
            raise SmxError(f"{source}: line {i + 1} has {len(parts)} values, expected {len(first)}")
        if n > 0 or not header:
            tokens.append(parts[idx])
            lines.append(i + 1)
        del parts[idx]
        out_lines[i] = (delim if delim != " " else " ").join(parts)
    class_names = [t for j, t in enumerate(first) if j != idx] if header else None
    if not tokens:
        raise SmxError(f"{source}: only a header row, no data rows")
    values, names_out = io.parse_text("\n".join(out_lines), source, delimiter=delim, header=header)
    loaded = io.Loaded(values, source, names_out if header else None, "csv")
    if ids:
        return loaded, [t.strip() for t in tokens]
    labels = labels_from_tokens(tokens, lines, source, class_names)
    return loaded, labels


def _column_index(column: str, names: list[str] | None, width: int, source: str,
                  quiet: bool = False) -> int | None:
    if names is not None and column in names:
        return names.index(column)
    try:
        idx = int(column)
    except ValueError:
        if quiet:
            return None
        have = f" (columns: {', '.join(names)})" if names else " (no header row)"
        raise SmxError(f"{source}: no label column {column!r}{have}") from None
    if not -width <= idx < width:
        if quiet:
            return None
        raise SmxError(f"{source}: label column {idx} is out of range for {width} columns")
    return idx % width


def read_weights(spec: str, n_classes: int) -> np.ndarray:
    """Class weights from a comma list (``1,2,0.5``) or a file (CSV/NPY).

    Examples
    --------
    >>> read_weights("1,2,0.5", 3).tolist()
    [1.0, 2.0, 0.5]
    """
    if "," in spec or _is_float(spec):
        try:
            w = np.array([float(v) for v in spec.split(",") if v.strip() != ""])
        except ValueError:
            raise SmxError(f"--weight {spec!r}: not a comma-separated list of numbers, "
                           "nor a file") from None
        source = "--weight"
    else:
        loaded = io.read_array(spec)
        w = np.asarray(loaded.values, dtype=np.float64).ravel()
        source = spec
    try:
        return check_class_weights(w, n_classes, source)
    except ValueError as exc:
        raise SmxError(str(exc)) from None


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
