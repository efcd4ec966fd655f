"""Delimited numeric text, the exact parser: lines, delimiter sniffing, header
detection, strict tokens, and float64 (or correctly rounded float32) rows
with errors naming the file's line and column. Raises SmxError; never prints.

This is the reference the fast engine (:mod:`smx_cli.io.csv_engine`) is
checked against, and what it falls back on to name a bad line: both accept
the same inputs and give the same values.

Lines end at ``\\n`` only (a ``\\r`` before it is dropped): unlike
``str.splitlines``, a ``\\v``, ``\\f`` or ``\\x1c``-``\\x1e`` inside a line is
not a line break but a bad token. Blanks around lines and tokens are
spaces, tabs and that ``\\r``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from smx_cli.errors import SmxError

DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", " ": "whitespace"}
#: what is stripped around lines and tokens: \v, \f and the like are not blanks
BLANKS = " \t\r"
_INF_TOKEN = re.compile(r"^[+-]?(inf|infinity)$", re.IGNORECASE)
_RUN_OF_BLANKS = re.compile(r"[ \t\r]+")
# one way to match each token: a failed match of a whole block backtracks in linear time
_NUM = r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)"
_NUMBER = re.compile(rf"^{_NUM}$", re.IGNORECASE | re.ASCII)
# every token of a block at once, one per line: one C-speed pass for the common case
_NUMBERS = re.compile(rf"(?:{_NUM}\n)*{_NUM}", re.IGNORECASE | re.ASCII)


def content_lines(text: str, first_line: int = 1) -> list[tuple[int, str]]:
    """``(line number, content)`` of each line with content, comments removed.

    Lines end at ``\\n`` only; ``#`` starts a comment; blanks (space, tab,
    ``\\r``) around the content are dropped, and lines left empty skipped.

    Examples
    --------
    >>> content_lines("a,b # names\\r\\n\\n1,2\\x0b3\\n")
    [(1, 'a,b'), (3, '1,2\\x0b3')]
    """
    out = []
    for lineno, raw in enumerate(text.split("\n"), start=first_line):
        if "#" in raw:
            raw = raw.split("#", 1)[0]
        line = raw.strip(BLANKS)
        if line:
            out.append((lineno, line))
    return out


def sniff_delimiter(lines: list[str]) -> str:
    """Tab, semicolon or comma if every one of the first lines holds it (in that
    order: semicolon files use the decimal comma); else whitespace if it splits
    every line into the same number (> 1) of fields; else the first of tab,
    semicolon, comma found on any line, so that a ragged row is reported as
    ragged rather than turning the file into one column; else whitespace.
    """
    sample = lines[:20]
    candidates = ("\t", ";", ",")
    for d in candidates:
        if all(d in line for line in sample):
            return d
    counts = {len(split_fields(line, " ")) for line in sample}
    if len(counts) == 1 and counts.pop() > 1:
        return " "
    for d in candidates:
        if any(d in line for line in sample):
            return d
    return " "


def split_fields(line: str, delim: str) -> list[str]:
    """The tokens of one content line (blanks around each removed).

    A trailing delimiter ends the row; it does not add an empty value.

    Examples
    --------
    >>> split_fields(" 1, 2 ,3,", ",")
    ['1', '2', '3']
    >>> split_fields("1 \\t 2\\x0b3", " ")  # \\v is no blank
    ['1', '2\\x0b3']
    """
    if delim == " ":
        return [t for t in _RUN_OF_BLANKS.split(line.strip(BLANKS)) if t]
    tokens = [t.strip(BLANKS) for t in line.split(delim)]
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()  # a trailing delimiter
    return tokens


def is_number(token: str) -> bool:
    """A decimal number, or nan/inf/infinity with an optional sign, any case.

    Stricter than ``float()``, which also takes ``1_000``, `` 1.5`` and
    non-ASCII digits, forms no CSV writer produces.

    Examples
    --------
    >>> [is_number(t) for t in ("-1.5e3", ".5", "-Infinity", "1_000", "0x1", "1e")]
    [True, True, True, False, False, False]
    """
    return bool(_NUMBER.match(token))


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name


def decode(data: bytes | str, source: str, offset: int = 0, bom: bool = True) -> str:
    """Bytes of a text file as str; a bad byte or a NUL is an error naming the offset."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig" if bom else "utf-8")
        except UnicodeDecodeError as exc:
            raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {offset + exc.start}); "
                           "expected CSV/TSV text, NPY or NPZ") from None
    else:
        text = data
    if "\x00" in text:
        raise SmxError(f"{source}: contains NUL bytes; expected CSV/TSV text, NPY or NPZ")
    return text


@dataclass
class Layout:
    """What the first lines of a text file settle for all of it.

    Attributes
    ----------
    delimiter : str
    width : int
        Values per row.
    names : list of str or None
        The header's column names.
    header_line : int
        The header's line number (0 without a header): data starts after it.
    expect : str
        Whose count a ragged row is compared with, for the message.
    hint_line : int or None
        The first data line when the header was auto-detected as absent (a
        bad token there may be a class name: the message says --header).
    """

    delimiter: str
    width: int
    names: list[str] | None
    header_line: int
    expect: str
    hint_line: int | None = None


def settle(numbered: list[tuple[int, str]], source: str, *, delimiter: str | None = None,
           header: bool | None = None) -> Layout:
    """The layout of a file from its first content lines (see :class:`Layout`)."""
    if not numbered:
        raise SmxError(f"{source}: no data (the file is empty or holds only comments); give rows of "
                       "logits, one row per sample")
    if delimiter is not None and delimiter not in DELIMITERS:
        raise SmxError(f"delimiter must be one of ',', '\\t', ';', ' ' (got {delimiter!r})")
    delim = delimiter if delimiter is not None else sniff_delimiter([ln for _, ln in numbered])
    first_line, first = numbered[0]
    first_tokens = split_fields(first, delim)
    auto_header = header is None
    if auto_header:
        # a header has names (words) and no numbers; a first row that mixes
        # numbers and words is data with a bad token, reported as such
        header = (not any(is_number(t) for t in first_tokens)
                  and any(any(ch.isalpha() for ch in t) for t in first_tokens))
    if header:
        names = [_unquote(t) for t in first_tokens]
        return Layout(delim, len(names), names, first_line, "the header's")
    return Layout(delim, len(first_tokens), None, 0, f"line {first_line}'s",
                  first_line if auto_header else None)


def no_rows_error(source: str, layout: Layout, header_given: bool | None, first: str) -> SmxError:
    hint = "; pass --no-header if that row is data" if header_given is None else ""
    return SmxError(f"{source}: only a header row ({first[:40]!r}), no data rows{hint}")


def parse_rows(numbered: list[tuple[int, str]], source: str, layout: Layout,
               dtype=np.float64) -> np.ndarray:
    """Content lines (data rows only) to a (rows, width) array of ``dtype``.

    Every token must be a number (:func:`is_number`); float32 is rounded
    once, from the decimal token (see :func:`to_float32`).
    """
    width = layout.width
    rows = [(lineno, split_fields(line, layout.delimiter)) for lineno, line in numbered]
    # the first problem in file order is reported, however the file is cut into blocks
    ragged = next((i for i, (_, tokens) in enumerate(rows) if len(tokens) != width), len(rows))
    end, bad = ragged, None
    flat = [t for _, tokens in rows[:ragged] for t in tokens]
    if flat and not _NUMBERS.fullmatch("\n".join(flat)):
        bad = _first_bad_token(rows[:ragged])
        end = bad[0]
        flat = flat[:end * width]
    try:
        # numpy's parser is correctly rounded, as float() is, on these tokens
        values = np.array(flat, dtype=np.float64)
    except ValueError:  # pragma: no cover - a token numpy refuses though it matched
        values = np.array([float(t) for t in flat], dtype=np.float64)
    values = values.reshape(end, width)
    where = lambda i: (rows[i // width][0], i % width + 1)  # noqa: E731
    check_overflow(values, lambda i: flat[i], where, source, np.float64)
    if np.dtype(dtype) == np.float32:
        values = to_float32(values, lambda i: flat[i])
        check_overflow(values, lambda i: flat[i], where, source, np.float32)
    if bad is not None:
        raise _bad_token_error(source, layout, *bad[1:])
    if ragged < len(rows):
        lineno, tokens = rows[ragged]
        hint = "fix the ragged row"
        if any('"' in t for t in tokens):  # a quoted field holding the delimiter, split here
            hint = ("a quoted field holds the delimiter: name that column with --id-column "
                    "(quoted ids may hold commas) or leave it out with --drop-columns")
        raise SmxError(f"{source}: line {lineno} has {len(tokens)} values, expected "
                       f"{width} ({layout.expect} count); {hint}")
    return canonical_nan(values)


def _first_bad_token(rows) -> tuple[int, int, int, str]:
    for i, (lineno, tokens) in enumerate(rows):
        for col, tok in enumerate(tokens, start=1):
            if not is_number(tok):
                return i, lineno, col, tok
    raise AssertionError("no bad token")  # pragma: no cover


def _bad_token_error(source: str, layout: Layout, lineno: int, col: int, tok: str) -> SmxError:
    shown = tok if len(tok) <= 40 else tok[:37] + "..."
    what = "an empty value" if tok == "" else f"{shown!r} is not a number"
    hint = ""
    if re.fullmatch(r"[+-]?\d+,\d+", tok):
        hint = " (a decimal comma? write 1.5, not 1,5)"
    elif lineno == layout.hint_line:
        hint = "; pass --header if the first row holds class names"
    if not hint:
        hint = "; fix or remove it (nan, inf and -inf are allowed)"
    return SmxError(f"{source}: line {lineno}, column {col}: {what}{hint}")


def check_overflow(values: np.ndarray, token, where, source: str, dtype) -> None:
    """Refuse an infinity that no inf token spelled: a number too big for ``dtype``.

    ``token(i)`` is the i-th token of the flattened block and ``where(i)`` its
    (line, column).
    """
    flat = values.reshape(-1)
    for idx in np.flatnonzero(np.isinf(flat)):
        tok = token(int(idx))
        if not _INF_TOKEN.match(tok):
            lineno, col = where(int(idx))
            shown = tok if len(tok) <= 40 else tok[:37] + "..."
            limit = "float64 (|x| > 1.8e308)" if np.dtype(dtype) == np.float64 else \
                "float32 (|x| > 3.4e38)"
            raise SmxError(f"{source}: line {lineno}, column {col}: {shown!r} "
                           f"overflows {limit}; write inf if you mean it")


def canonical_nan(values: np.ndarray) -> np.ndarray:
    """Every NaN as the one quiet NaN numpy writes (``-nan`` has no sign)."""
    nan = np.isnan(values)
    if nan.any():
        values[nan] = np.nan
    return values


def to_float32(values64: np.ndarray, token) -> np.ndarray:
    """Correctly rounded float32 values of decimal tokens already parsed to float64.

    Rounding the float64 to float32 is right except when the float64 lies
    exactly halfway between two float32s while the token does not (the first
    rounding moved it onto the midpoint): those few are settled against the
    exact decimal value of the token.

    Examples
    --------
    >>> tok = "1.4937277436256408691406250000000000000001"  # just above a float32 midpoint
    >>> v64 = np.array([float(tok)])
    >>> bool(v64.astype(np.float32)[0] < to_float32(v64, lambda i: tok)[0])  # twice: down
    True
    """
    import decimal

    with np.errstate(over="ignore"):  # an overflow is reported by the caller
        v32 = values64.astype(np.float32)
    flat64 = values64.reshape(-1)
    flat32 = v32.reshape(-1)
    back = flat32.astype(np.float64)
    cand = np.flatnonzero(np.isfinite(flat64) & (back != flat64))
    if cand.size:
        # the float32 neighbour on the other side of the float64 value
        up = flat64[cand] > back[cand]
        with np.errstate(over="ignore"):
            other = np.where(up, np.nextafter(flat32[cand], np.float32(np.inf)),
                             np.nextafter(flat32[cand], np.float32(-np.inf))).astype(np.float64)
        other = np.where(np.isinf(other), np.sign(other) * 2.0 ** 128, other)
        tie = (back[cand] + other) / 2 == flat64[cand]
        ctx = decimal.Context(prec=1000, Emax=10**6, Emin=-10**6)
        for k in np.flatnonzero(tie):
            i = int(cand[k])
            exact = ctx.create_decimal(token(i).strip(BLANKS))
            mid = decimal.Decimal(float(flat64[i]))
            if exact == mid:
                continue  # a true tie: float32's rounding (to even) is right
            lo, hi = sorted((float(back[i]), float(other[k])))
            pick = hi if exact > mid else lo
            if abs(pick) >= 2.0 ** 128:  # the neighbour past the largest float32
                pick = np.copysign(np.inf, pick)
            flat32[i] = np.float32(pick)
    return v32


def parse_text(data: bytes | str, source: str, *, delimiter: str | None = None,
               header: bool | None = None, dtype=np.float64
               ) -> tuple[np.ndarray, list[str] | None]:
    """Parse delimited numeric text into a float64 (N, C) array, exactly.

    Returns the array and the header's column names (None without header).
    A one-column file is N rows of one class. Errors name the line (1-based,
    as an editor shows it) and the column.

    Examples
    --------
    >>> values, names = parse_text("cat,dog\\n1,2\\n3,-inf\\n", "<doc>")
    >>> names, values.tolist()
    (['cat', 'dog'], [[1.0, 2.0], [3.0, -inf]])
    >>> parse_text("1,2\\n3,4\\x0b5\\n", "<doc>")  # \\v ends no line
    Traceback (most recent call last):
    ...
    smx_cli.errors.SmxError: <doc>: line 2, column 2: '4\\x0b5' is not a number; fix or remove it (nan, inf and -inf are allowed)
    """
    numbered = content_lines(decode(data, source))
    layout = settle(numbered, source, delimiter=delimiter, header=header)
    rows = numbered[1:] if layout.names is not None else numbered
    if not rows:
        raise no_rows_error(source, layout, header, numbered[0][1])
    return parse_rows(rows, source, layout, dtype), layout.names
