"""Token strings for ids: a one-token-per-line file, or a tokenizer.json's ``model.vocab``.

Raises :class:`smx_cli.errors.SmxError` naming the file and line; never prints.
"""
from __future__ import annotations

import json

from smx_cli.errors import SmxError
from smx_cli.io.arrays import read_bytes


# ids above this are refused: a vocabulary list that long would take ~100 MB
MAX_ID = 10**7


def read_vocab(path: str) -> list[str]:
    """The token of each id: line i (from 0) of a text file, or tokenizer.json's map.

    A tokenizer.json (Hugging Face tokenizers) is a JSON object whose
    ``model.vocab`` maps token -> id (a list of [token, score] pairs for
    unigram models: the id is the position). Ids no token claims read as
    ``<id N>``. A text file's lines are the tokens as they are, escapes
    ``\\n``, ``\\t`` and ``\\\\`` decoded (so a newline token fits on a line);
    only the final line break is dropped.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "v.txt"), "w").write("the\\n\\\\n\\ncat\\n")
    >>> read_vocab(os.path.join(d, "v.txt"))
    ['the', '\\n', 'cat']
    >>> _ = open(os.path.join(d, "t.json"), "w").write('{"model": {"vocab": {"a": 1, "b": 0}}}')
    >>> read_vocab(os.path.join(d, "t.json"))
    ['b', 'a']
    """
    data, source = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SmxError(f"{source}: vocabulary is not UTF-8 text (bad byte at offset "
                       f"{exc.start})") from None
    if text.lstrip().startswith("{"):
        return _tokenizer_json(text, source)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SmxError(f"{source}: the vocabulary is empty (one token per line)")
    return [_unescape(line.rstrip("\r")) for line in lines]


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[s[i + 1]])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def escape(token: str) -> str:
    """The line a token takes in a vocabulary file (inverse of the reader's unescape)."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def _tokenizer_json(text: str, source: str) -> list[str]:
    try:
        doc = json.loads(text)
    except RecursionError:
        raise SmxError(f"{source}: JSON nested too deeply to be a tokenizer.json") from None
    except json.JSONDecodeError as exc:
        raise SmxError(f"{source}: line {exc.lineno}, column {exc.colno}: not valid JSON "
                       f"({exc.msg})") from None
    vocab = doc.get("model", {}).get("vocab") if isinstance(doc, dict) and isinstance(
        doc.get("model"), dict) else None
    if isinstance(vocab, list):  # unigram: [[token, score], ...]
        if not all(isinstance(e, list) and e and isinstance(e[0], str) for e in vocab):
            raise SmxError(f"{source}: model.vocab is a list but not of [token, score] pairs")
        return [e[0] for e in vocab]
    if not isinstance(vocab, dict) or not vocab:
        raise SmxError(f"{source}: no model.vocab map (token -> id) in this JSON; give a "
                       "tokenizer.json or a file with one token per line")
    bad = [(k, v) for k, v in vocab.items() if type(v) is not int or not 0 <= v < MAX_ID]
    if bad:
        k, v = bad[0]
        raise SmxError(f"{source}: model.vocab[{k!r}] = {v!r} is not a token id "
                       f"(an integer in [0, {MAX_ID:.0e}))")
    tokens = [None] * (max(vocab.values()) + 1)
    for k, v in vocab.items():
        tokens[v] = k
    for extra in doc.get("added_tokens") or []:
        if isinstance(extra, dict) and type(extra.get("id")) is int and isinstance(
                extra.get("content"), str) and 0 <= extra["id"] < MAX_ID:
            if extra["id"] >= len(tokens):
                tokens.extend([None] * (extra["id"] + 1 - len(tokens)))
            tokens[extra["id"]] = extra["content"]
    return [t if t is not None else f"<id {i}>" for i, t in enumerate(tokens)]


def token_text(i: int, vocab: list[str] | None) -> str:
    """How a token shows in a table: its string quoted (whitespace visible), else its id.

    Examples
    --------
    >>> token_text(1, ["a", " b\\n"]), token_text(5, None), token_text(-1, ["a"])
    ("' b\\\\n'", '5', '-')
    """
    if i < 0:
        return "-"
    if vocab is None:
        return str(i)
    if i >= len(vocab):
        return f"<id {i}>"
    return repr(vocab[i])
