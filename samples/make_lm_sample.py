"""Make samples/lm_*: real (B, T, V) logits of a tiny character-level language model.

The model is an interpolated absolute-discounting 5-gram over characters
(Ney, Essen & Kneser 1994), trained on the docstrings of a fixed list of
Python standard-library modules, and it scores text it never saw: "The Zen
of Python" (``import this``), cut into B windows of T characters. Written:

- ``lm_logits.safetensors``: tensor ``logits``, float32 (B, T, V): at
  position t the model's log-probabilities of the character *after* t given
  the characters up to t -- what a causal LM emits, so score it with
  ``--shift-labels``;
- ``lm_ids.safetensors``: tensor ``input_ids``, int64 (B, T), the characters' ids;
- ``lm_vocab.txt``: the V characters, line i is id i (``\\n`` written as the
  two characters backslash n, as ``smx --vocab`` reads it).

Text licence: both the training text (standard-library docstrings) and the
scored text (``this.py``) are part of CPython, under the PSF License
Agreement (see LICENSE-lm-text.txt). Docstrings differ between Python
versions: the files shipped were made with Python 3.11.7; another version
gives slightly different, equally valid, numbers.

Run: ``python samples/make_lm_sample.py`` (numpy only; about a second).
"""
from __future__ import annotations

import codecs
import contextlib
import io
import string
import importlib
import inspect
import os
import sys
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from smx_cli.io import safetensors as st  # noqa: E402
from smx_cli.io.vocab import escape  # noqa: E402

TRAIN_MODULES = ["textwrap", "string", "json", "collections", "functools", "itertools",
                 "pathlib", "argparse", "re", "os", "inspect", "typing", "dataclasses",
                 "statistics", "fractions", "decimal", "random", "csv", "logging", "unittest"]
ORDER = 5
DISCOUNT = 0.75
B, T = 6, 48


def training_text() -> str:
    parts = []
    for name in TRAIN_MODULES:
        mod = importlib.import_module(name)
        for _, obj in sorted(vars(mod).items()):
            doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
            if doc and getattr(obj, "__module__", None) == mod.__name__:
                parts.append(doc)
        if mod.__doc__:
            parts.append(inspect.cleandoc(mod.__doc__))
    return "\n\n".join(parts)


def zen() -> str:
    with contextlib.redirect_stdout(io.StringIO()):  # importing it prints the Zen
        import this  # its text is this.s, rot13-encoded
    return codecs.decode(this.s, "rot13")


class CharNgram:
    """Interpolated absolute discounting: P(c|h) = max(n(h,c) - D, 0)/n(h) + D N1+(h)/n(h) P(c|h')."""

    def __init__(self, text: str, vocab: list[str], order: int, discount: float):
        self.index = {ch: i for i, ch in enumerate(vocab)}
        self.v = len(vocab)
        self.order, self.d = order, discount
        self.counts = defaultdict(lambda: np.zeros(self.v))
        ids = [self.index[ch] for ch in text if ch in self.index]
        for n in range(order):
            for i in range(n, len(ids)):
                self.counts[tuple(ids[i - n:i])][ids[i]] += 1

    def probs(self, history: list[int]) -> np.ndarray:
        p = np.full(self.v, 1.0 / self.v)  # order 0: uniform
        for n in range(0, self.order):
            if n > len(history):
                break
            h = tuple(history[len(history) - n:]) if n else ()
            c = self.counts.get(h)
            if c is None or c.sum() == 0:
                continue
            total = c.sum()
            p = np.maximum(c - self.d, 0) / total + self.d * np.count_nonzero(c) / total * p
        return p


def main() -> None:
    train = training_text()
    text = zen()
    keep = set(string.printable) - set("\r\x0b\x0c")
    train = "".join(ch for ch in train if ch in keep)
    vocab = sorted(set(text) | set(train))
    model = CharNgram(train, vocab, ORDER, DISCOUNT)
    ids = np.array([[model.index[ch] for ch in text[b * T:(b + 1) * T]] for b in range(B)])
    logits = np.empty((B, T, len(vocab)), dtype=np.float32)
    for b in range(B):
        for t in range(T):
            logits[b, t] = np.log(model.probs(list(ids[b, :t + 1])))
    st.write(os.path.join(HERE, "lm_logits.safetensors"), {"logits": logits},
             {"model": f"character {ORDER}-gram, absolute discounting D={DISCOUNT}",
              "train": "docstrings of " + ", ".join(TRAIN_MODULES),
              "text": "The Zen of Python (this.py)", "python": sys.version.split()[0]})
    st.write(os.path.join(HERE, "lm_ids.safetensors"), {"input_ids": ids.astype(np.int64)})
    with open(os.path.join(HERE, "lm_vocab.txt"), "w", encoding="utf-8") as fh:
        fh.writelines(escape(ch) + "\n" for ch in vocab)
    print(f"trained on {len(train):,} characters; logits {logits.shape}, vocabulary {len(vocab)}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
