"""Delimited numeric text: delimiter sniffing, header detection, strict tokens,
parsing into float64 rows with errors naming the file's line and column, and
block-wise iteration over big files. Raises SmxError; never prints.
"""
from __future__ import annotations

import re

import numpy as np

from smx_cli.errors import SmxError

DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", " ": "whitespace"}
_INF_TOKEN = re.compile(r"^\s*[+-]?(inf|infinity)\s*$", re.IGNORECASE)
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
    counts = {len(line.split()) for line in sample}
    if len(counts) == 1 and counts.pop() > 1:
        return " "
    for d in candidates:
        if any(d in line for line in sample):
            return d
    return " "


def split_fields(line: str, delim: str) -> list[str]:
    if delim == " ":
        return line.split()
    tokens = [t.strip() for t in line.split(delim)]
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()  # a trailing delimiter
    return tokens


_NUMBER = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$",
                     re.IGNORECASE | re.ASCII)


def is_number(token: str) -> bool:
    """A decimal number, or nan/inf/infinity with an optional sign, any case.

    Stricter than ``float()``, which also takes ``1_000`` and other forms no
    CSV writer produces.
    """
    return bool(_NUMBER.match(token))


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name


def parse_text(data: bytes | str, source: str, *, delimiter: str | None = None,
               header: bool | None = None, first_line: int = 1,
               width: int | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Parse delimited numeric text into a float64 (N, C) array.

    Returns the array and the header's column names (None without header).
    A one-column file is N rows of one class. Errors name the line (1-based,
    as an editor shows it) and the column. ``first_line`` is the line number
    of the text's first line and ``width`` the expected number of values per
    row, for a block of a longer file (see :func:`iter_text_blocks`).
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SmxError(f"{source}: not UTF-8 text (bad byte at offset {exc.start}); "
                           "expected CSV/TSV text, NPY or NPZ") from None
    else:
        text = data
    if "\x00" in text:
        raise SmxError(f"{source}: contains NUL bytes; expected CSV/TSV text, NPY or NPZ")
    numbered = []
    for lineno, raw in enumerate(text.splitlines(), start=first_line):
        line = raw.split("#", 1)[0].strip()
        if line:
            numbered.append((lineno, line))
    if not numbered:
        raise SmxError(f"{source}: no data (the file is empty or holds only comments); give rows of "
                       "logits, one row per sample")
    delim = delimiter if delimiter is not None else sniff_delimiter([ln for _, ln in numbered])
    if delimiter is not None and delim not in DELIMITERS:
        raise SmxError(f"delimiter must be one of ',', '\\t', ';', ' ' (got {delimiter!r})")
    first_tokens = split_fields(numbered[0][1], delim)
    auto_header = header is None
    if auto_header:
        # a header has names (words) and no numbers; a first row that mixes
        # numbers and words is data with a bad token, reported as such below
        header = (not any(is_number(t) for t in first_tokens)
                  and any(any(ch.isalpha() for ch in t) for t in first_tokens))
    names = None
    numbered_first = numbered[0][1][:40]
    if header:
        names = [_unquote(t) for t in first_tokens]
        numbered = numbered[1:]
        if not numbered:
            hint = "; pass --no-header if that row is data" if auto_header else ""
            raise SmxError(f"{source}: only a header row ({numbered_first!r}), no data rows{hint}")
    rows = [(lineno, split_fields(line, delim)) for lineno, line in numbered]
    expect = "the header's" if names is not None else f"line {rows[0][0]}'s"
    if width is not None:
        expect = "the earlier rows'"
    else:
        width = len(names) if names is not None else len(rows[0][1])
    for lineno, tokens in rows:
        if len(tokens) != width:
            raise SmxError(f"{source}: line {lineno} has {len(tokens)} values, expected "
                           f"{width} ({expect} count); fix the ragged row")
    flat = [t for _, tokens in rows for t in tokens]
    values = None
    if text.isascii() and "_" not in text:
        # numpy's parser agrees with Python's float() on ASCII tokens without
        # underscores; anything it rejects is located by the loop below
        try:
            values = np.array(flat, dtype=np.float64)
        except ValueError:
            values = None
    for lineno, tokens in rows if values is None else ():
        for col, tok in enumerate(tokens, start=1):
            if not is_number(tok):
                what = "an empty value" if tok == "" else f"{tok!r} is not a number"
                hint = ""
                if re.fullmatch(r"[+-]?\d+,\d+", tok):
                    hint = " (a decimal comma? write 1.5, not 1,5)"
                elif lineno == rows[0][0] and names is None and auto_header:
                    hint = "; pass --header if the first row holds class names"
                if not hint:
                    hint = "; fix or remove it (nan, inf and -inf are allowed)"
                raise SmxError(f"{source}: line {lineno}, column {col}: {what}{hint}")
    if values is None:
        values = np.array(flat, dtype=np.float64)
    values = values.reshape(len(rows), width)
    infs = np.flatnonzero(np.isinf(values.ravel()))
    for idx in infs:
        tok = flat[idx]
        if not _INF_TOKEN.match(tok):
            lineno = rows[idx // width][0]
            raise SmxError(f"{source}: line {lineno}, column {idx % width + 1}: {tok!r} "
                           "overflows float64 (|x| > 1.8e308); write inf if you mean it")
    return values, names


def _content_lines(chunk: bytes) -> int:
    return sum(1 for ln in chunk.splitlines() if ln.split(b"#", 1)[0].strip())


def iter_text_blocks(path: str, *, delimiter: str | None = None, header: bool | None = None,
                     block_bytes: int = 16 << 20):
    """Yield ``(values, class_names)`` blocks of a big CSV/TSV file, in bounded memory.

    The text is cut at line ends into blocks of about ``block_bytes``; the
    first block settles the delimiter, the header and the width, every later
    one is parsed with them, so errors still name the file's own line and
    column. Raises SmxError as :func:`parse_text` does.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("a,b\\n1,2\\n3,4\\n5,6\\n")
    >>> [(v.tolist(), n) for v, n in iter_text_blocks(p, block_bytes=6)]
    [([[1.0, 2.0], [3.0, 4.0]], ['a', 'b']), ([[5.0, 6.0]], ['a', 'b'])]
    """
    names = None
    width = None
    line = 1
    first = True
    with open(path, "rb") as fh:
        rest = b""
        while True:
            data = fh.read(block_bytes)
            chunk = rest + data
            if data:
                cut = chunk.rfind(b"\n") + 1
                # the first block must reach past a header to its first data row
                if cut == 0 or (first and _content_lines(chunk[:cut]) < 2):
                    rest = chunk
                    continue
                chunk, rest = chunk[:cut], chunk[cut:]
            else:
                rest = b""
            if not chunk:
                break
            if first:
                values, names = parse_text(chunk, path, delimiter=delimiter, header=header)
                text = chunk.decode("utf-8-sig", errors="replace")
                if delimiter is None:
                    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
                    delimiter = sniff_delimiter([ln for ln in lines if ln])
                width = values.shape[1]
                first = False
            elif _content_lines(chunk):
                values, _ = parse_text(chunk, path, delimiter=delimiter, header=False,
                                       first_line=line, width=width)
            else:
                values = np.empty((0, width))  # only comments or blank lines
            line += chunk.count(b"\n")
            yield values, names
            if not data:
                break


# ----------------------------------------------------------------------------
