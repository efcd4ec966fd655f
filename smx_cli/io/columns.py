"""Choosing columns of a logits file: the logits, a label column, an id column.

``--columns`` / ``--drop-columns`` pick the logit columns, ``--label-column``
takes the true labels out, ``--id-column`` the row names (any text; carried
to every output). Columns are named by a header name or a 0-based index
(``START:END`` for a range of indices). Text is split as CSV: a quoted field
may hold the delimiter (``"Smith, J"``) and doubled quotes. Raises SmxError
naming the file, line and column; never prints.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from smx_cli.io import safetensors
from smx_cli.io.arrays import NPY_MAGIC, ZIP_MAGIC, Loaded, load_npy, load_npz, read_bytes
from smx_cli.io.csv_engine import read_text
from smx_cli.io.text import BLANKS, is_number, sniff_delimiter, split_fields
from smx_cli.errors import SmxError


@dataclass
class Split:
    """The logits (``loaded``), and the label values and row ids taken out of them."""

    loaded: Loaded
    labels: np.ndarray | None = None
    ids: list[str] | None = None
    # the tokens of the label column (text files): class names are resolved by the caller
    label_tokens: list[str] | None = None
    label_lines: list[int] | None = None


def parse_column_list(spec: str | None) -> list[str] | None:
    """``a,b,3,5:9`` as a list of column specs (names, indices or ranges).

    Examples
    --------
    >>> parse_column_list("x1, x2 ,0:3")
    ['x1', 'x2', '0:3']
    """
    if spec is None:
        return None
    items = [t.strip() for t in next(csv.reader([spec], skipinitialspace=True))]
    if not items or any(t == "" for t in items):
        raise SmxError(f"column list {spec!r} has an empty entry; give names or 0-based "
                       "indices separated by commas")
    return items


def split_fields_quoted(line: str, delim: str) -> list[str]:
    """:func:`~smx_cli.io.text.split_fields`, and CSV quoting when the line has a quote.

    Examples
    --------
    >>> split_fields_quoted('"Smith, J",1,"a ""b"" c"', ",")
    ['Smith, J', '1', 'a "b" c']
    """
    if '"' not in line or delim == " ":
        return split_fields(line, delim)
    try:
        tokens = next(csv.reader([line], delimiter=delim, strict=True))
    except csv.Error:
        return split_fields(line, delim)
    tokens = [t.strip(BLANKS) for t in tokens]
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()  # a trailing delimiter ends the row, as in split_fields
    return tokens


def _content_lines(text: str) -> list[tuple[int, str]]:
    """:func:`~smx_cli.io.text.content_lines`, with a ``#`` inside quotes kept (an id
    such as ``"run #3"`` is text, not the start of a comment).

    Examples
    --------
    >>> _content_lines('id,a # names\\n"run #3",1\\n')
    [(1, 'id,a'), (2, '"run #3",1')]
    """
    out = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if "#" in raw:
            if '"' in raw:
                quoted = False
                for k, ch in enumerate(raw):
                    if ch == '"':
                        quoted = not quoted
                    elif ch == "#" and not quoted:
                        raw = raw[:k]
                        break
            else:
                raw = raw.split("#", 1)[0]
        line = raw.strip(BLANKS)
        if line:
            out.append((lineno, line))
    return out


def _describe(idx: int, names: list[str] | None) -> str:
    return f"column {idx} ({names[idx]!r})" if names else f"column {idx}"


def _resolve(spec: str, names: list[str] | None, width: int, source: str, what: str
             ) -> list[int]:
    """The 0-based indices ``spec`` names (a header name, an index, or START:END)."""
    if names is not None and spec in names:
        where = [i for i, n in enumerate(names) if n == spec]
        if len(where) > 1:
            raise SmxError(f"{source}: {what} {spec!r}: the header has {len(where)} columns of "
                           f"that name (columns {', '.join(map(str, where))}); name one by "
                           "its 0-based index")
        return where
    have = f" (columns: {', '.join(names)})" if names else " (no header row)"
    noun = {"--label-column": "label column", "--id-column": "id column"}.get(
        what, f"column (in {what})")
    if ":" in spec:
        lo, _, hi = spec.partition(":")
        try:
            lo_i = int(lo) if lo.strip() else 0
            hi_i = int(hi) if hi.strip() else width
        except ValueError:
            raise SmxError(f"{source}: no {noun} {spec!r}{have}") from None
        picked = list(range(width))[lo_i:hi_i]
        if not picked:
            raise SmxError(f"{source}: {what} {spec!r} selects no column of {width}")
        return picked
    try:
        idx = int(spec)
    except ValueError:
        raise SmxError(f"{source}: no {noun} {spec!r}{have}") from None
    if not -width <= idx < width:
        raise SmxError(f"{source}: {what} {idx} is out of range for {width} columns")
    return [idx % width]


def _plan(names, width, source, label_column, id_column, columns, drop_columns):
    """(label index, id index, logit indices), refusing a column given two roles."""
    roles: dict[int, str] = {}

    def take(spec, what):
        if spec is None:
            return None
        idx = _resolve(spec, names, width, source, what)
        if len(idx) != 1:
            raise SmxError(f"{source}: {what} {spec!r} names {len(idx)} columns; give one")
        i = idx[0]
        if i in roles:
            raise SmxError(f"{source}: {what} and {roles[i]} both name {_describe(i, names)}; "
                           "give each its own column")
        roles[i] = what
        return i

    i_label = take(label_column, "--label-column")
    i_id = take(id_column, "--id-column")
    if columns is not None:
        logits: list[int] = []
        for spec in columns:
            for i in _resolve(spec, names, width, source, "--columns"):
                if i in roles:
                    raise SmxError(f"{source}: --columns includes {_describe(i, names)}, which "
                                   f"{roles[i]} takes; leave it out of --columns")
                if i in logits:
                    raise SmxError(f"{source}: --columns lists {_describe(i, names)} twice")
                logits.append(i)
    else:
        dropped = set()
        for spec in drop_columns or ():
            for i in _resolve(spec, names, width, source, "--drop-columns"):
                if i in roles:
                    raise SmxError(f"{source}: --drop-columns names {_describe(i, names)}, "
                                   f"which {roles[i]} takes; it is left out of the logits "
                                   "already")
                dropped.add(i)
        logits = [i for i in range(width) if i not in roles and i not in dropped]
    if not logits:
        raise SmxError(f"{source}: no logit columns left ({width} columns, "
                       f"{width - len(logits)} taken out); check --columns/--drop-columns")
    return i_label, i_id, logits


def _id_text(v: float) -> str:
    """A numeric id as text: integers without ``.0`` (exact up to 2**53), else repr."""
    if np.isfinite(v) and v == int(v) and abs(v) < 2.0**53:
        return str(int(v))
    return repr(float(v))


def split_columns(path: str, *, label_column: str | None = None, id_column: str | None = None,
                  columns: list[str] | None = None, drop_columns: list[str] | None = None,
                  delimiter: str | None = None, header: bool | None = None,
                  key: str | None = None) -> Split:
    """Read ``path`` and split it into logits, labels and ids.

    Parameters
    ----------
    label_column, id_column : str or None
        A header name or 0-based index. The label column is returned as
        numbers (NPY) or tokens (text: integers or class names, resolved by
        :func:`smx_cli.io.labels.labels_from_tokens`); the id column as text.
    columns, drop_columns : list of str or None
        The logit columns to keep (in this order), or to leave out; by
        default every column that is not the label or the id column.

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write('name,y,a,b\\n"Smith, J",1,0.5,2\\n')
    >>> s = split_columns(p, id_column="name", label_column="y")
    >>> s.ids, s.label_tokens, s.loaded.values.tolist(), s.loaded.class_names
    (['Smith, J'], ['1'], [[0.5, 2.0]], ['a', 'b'])
    """
    if columns is not None and drop_columns is not None:
        raise SmxError("give --columns or --drop-columns, not both")
    data, source = read_bytes(path)  # once: standard input cannot be read twice
    safetensors.refuse_pickle(data[:512], source)
    loaded = None
    if data.startswith(NPY_MAGIC):
        loaded = Loaded(load_npy(data, source), source, None, "npy")
    elif data.startswith(ZIP_MAGIC):
        values, names = load_npz(data, source, key)
        loaded = Loaded(values, source, names, "npz")
    elif safetensors.looks_like_safetensors(data[:9], len(data)):
        loaded = Loaded(safetensors.load_bytes(data, source, key), source, None, "safetensors")
    if loaded is not None:
        return _split_array(loaded, label_column, id_column, columns, drop_columns)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    content = _content_lines(text)
    if not content:
        raise SmxError(f"{source}: no data (the file is empty or holds only comments)")
    delim = delimiter if delimiter is not None else sniff_delimiter([c[1] for c in content])
    rows = [(lineno, split_fields_quoted(line, delim)) for lineno, line in content]
    first = rows[0][1]
    width = len(first)
    specs = [s for s in (label_column, id_column, *(columns or ()), *(drop_columns or ()))
             if s is not None]
    if header is None:
        # a header when a column is named by a name in the first row, or when the first
        # row has a token that is no number outside the id and label columns
        by_name = any(s in first and not is_number(s) for s in specs)
        special = set()
        for s in (label_column, id_column):
            try:
                special.add(int(s) % width)
            except (TypeError, ValueError):
                pass
        header = by_name or not all(is_number(t) for j, t in enumerate(first)
                                    if j not in special)
    names = first if header else None
    i_label, i_id, logits = _plan(names, width, source, label_column, id_column, columns,
                                  drop_columns)
    body = rows[1:] if header else rows
    if not body:
        raise SmxError(f"{source}: only a header row, no data rows")
    ids, tokens, lines = [], [], []
    for lineno, parts in body:
        if len(parts) != width:
            raise SmxError(f"{source}: line {lineno} has {len(parts)} values, expected {width}")
        if i_id is not None:
            ids.append(parts[i_id])
        if i_label is not None:
            tokens.append(parts[i_label])
            lines.append(lineno)
    values = _logit_values(body, logits, source)
    class_names = [names[j] for j in logits] if names else None
    split = Split(Loaded(values, source, class_names, "csv"))
    if i_id is not None:
        split.ids = ids
    if i_label is not None:
        split.label_tokens, split.label_lines = tokens, lines
    return split


def _logit_values(body, logits: list[int], source: str) -> np.ndarray:
    """The logit columns of the split rows as float64 (N, len(logits)).

    The tokens go through the project's CSV number parser (strict tokens,
    correctly rounded) as one block; when it refuses one, the rows are
    checked token by token to name the file's own line and column.
    """
    text = "\n".join(",".join(parts[j] for j in logits) for _, parts in body) + "\n"
    try:
        values, _ = read_text(text.encode(), source, delimiter=",", header=False)
        if values.shape == (len(body), len(logits)):
            return values.astype(np.float64, copy=False)
    except SmxError:
        pass
    values = np.empty((len(body), len(logits)))
    for r, (lineno, parts) in enumerate(body):
        for k, j in enumerate(logits):
            tok = parts[j]
            if not is_number(tok):
                what = "an empty value" if tok == "" else f"{tok!r} is not a number"
                raise SmxError(f"{source}: line {lineno}, column {j + 1}: {what}; fix or "
                               "remove it (nan, inf and -inf are allowed), or name the "
                               "column with --id-column, --label-column or --drop-columns")
            values[r, k] = float(tok)
    return values


def _split_array(loaded, label_column, id_column, columns, drop_columns) -> Split:
    arr, source = loaded.values, loaded.source
    if arr.ndim != 2:
        raise SmxError(f"{source}: choosing columns needs a 2-D array, got shape {arr.shape}")
    names = loaded.class_names if loaded.class_names and len(loaded.class_names) == \
        arr.shape[1] else None
    i_label, i_id, logits = _plan(names, arr.shape[1], source, label_column, id_column,
                                  columns, drop_columns)
    split = Split(loaded)
    if i_id is not None:
        split.ids = [_id_text(v) for v in arr[:, i_id].astype(np.float64).tolist()]
    if i_label is not None:
        split.labels = arr[:, i_label]
    loaded.values = np.ascontiguousarray(arr[:, logits])
    if names is not None:
        loaded.class_names = [names[j] for j in logits]
    return split
