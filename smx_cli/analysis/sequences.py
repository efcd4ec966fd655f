"""Language-model reports: per-sequence NLL, perplexity and accuracy; the worst tokens.

The input is the per-token cross-entropy of (B, T, V) logits -- an
:class:`smx_cli.core.xent.XentResult` over the B x T positions in row order
-- plus, per position, how many tokens hold 90 % of the predicted mass.

Corpus perplexity is exp(total NLL / total tokens): every counted token
weighs the same. It is *not* the mean of the per-sequence perplexities,
which over-weighs short and badly predicted sequences (exp is convex, so
that mean is never smaller); the report gives both and says which is which.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smx_cli.analysis.diagnostics import _DIAG_CODES, _smx_diag
from smx_cli.core import kernels, native
from smx_cli.core.xent import XentResult, exact_sum

LN2 = math.log(2.0)


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


@dataclass
class WorstToken:
    """One badly predicted token: where it is, what was true, what was predicted."""

    sequence: int
    position: int
    true_token: int
    predicted_token: int
    p_true: float
    nll: float


@dataclass
class SequenceReport:
    """Per-sequence and corpus statistics of a (B, T) grid of token losses.

    Attributes
    ----------
    tokens : ndarray (B,)
        Counted (not ignored) tokens of each sequence.
    nll_sum : ndarray (B,)
        Total NLL of each sequence (nats, exact sum).
    mean_nll, perplexity, bits_per_token, accuracy : ndarray (B,)
        NaN for a sequence with no counted token.
    corpus_tokens : int
    corpus_nll : float
        Total NLL over every counted token.
    worst : list of WorstToken
        The highest-NLL counted tokens, worst first.
    entropy : ndarray (B, T)
        Entropy of each position's predicted distribution (nats).
    top_p_count : ndarray (B, T) or None
        How many tokens hold ``top_p`` of each position's mass.
    """

    tokens: np.ndarray
    nll_sum: np.ndarray
    correct: np.ndarray
    corpus_tokens: int
    corpus_nll: float
    worst: list
    entropy: np.ndarray
    top_p_count: np.ndarray | None
    top_p: float

    @property
    def mean_nll(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.tokens > 0, self.nll_sum / np.maximum(self.tokens, 1), np.nan)

    @property
    def perplexity(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.exp(self.mean_nll)

    @property
    def bits_per_token(self) -> np.ndarray:
        return self.mean_nll / LN2

    @property
    def accuracy(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.tokens > 0, self.correct / np.maximum(self.tokens, 1), np.nan)

    @property
    def corpus_mean_nll(self) -> float:
        return self.corpus_nll / self.corpus_tokens if self.corpus_tokens else math.nan

    @property
    def corpus_perplexity(self) -> float:
        """exp(total NLL / total tokens) over every counted token of every sequence."""
        return _exp(self.corpus_mean_nll) if self.corpus_tokens else math.nan

    @property
    def corpus_bits_per_token(self) -> float:
        return self.corpus_mean_nll / LN2

    @property
    def corpus_accuracy(self) -> float:
        return float(self.correct.sum() / self.corpus_tokens) if self.corpus_tokens else math.nan

    @property
    def mean_sequence_perplexity(self) -> float:
        """The mean of the per-sequence perplexities: shown only to say it is not the corpus's."""
        ppl = self.perplexity[self.tokens > 0]
        return float(exact_sum(ppl) / len(ppl)) if len(ppl) else math.nan


_TOP_P_BLOCK = 1 << 20  # elements per piece: float work of a few MB


def top_p_count(logits: np.ndarray, p: float = 0.9, *, input_kind: str = "logits",
                threads: int | None = None) -> np.ndarray:
    """How many of each row's most likely classes it takes to hold mass ``p``.

    The smallest k with p_(1) + ... + p_(k) >= p (probabilities sorted in
    decreasing order). A row with a NaN or no finite entry counts 0.

    Notes
    -----
    Only candidates are sorted. With e = exp(x - max x) and Z = sum(e), the
    entries below t = (1 - p) Z / V hold less than V t = (1 - p) Z between
    them, so the entries >= t hold more than p Z: the top-k set lies among
    them. A peaked row (a language model's usual) has a handful; only a flat
    row sorts most of itself. e is computed in float32 for inputs of 32 bits
    or fewer (exp to a few ulps) and float64 otherwise; the sums in float64.
    16/32-bit logits take the compiled pass (``_smx_diag.top_p``: x compared
    with max + log t, exp only for the candidates, a selection instead of a
    sort); the numpy code is the reference and the fallback
    (``SMX_ENGINE=numpy``, probabilities, float64). The two can differ only on
    a row whose top-k sum lies within their rounding of p Z.

    Examples
    --------
    >>> top_p_count(np.log([[0.5, 0.3, 0.2], [0.95, 0.03, 0.02]])).tolist()
    [3, 1]
    >>> top_p_count(np.zeros((1, 10))).tolist()  # uniform: 9 of 10 hold 90 %
    [9]
    """
    x = np.asarray(logits)
    n, v = x.shape
    out = np.zeros(n, dtype=np.int64)
    if n == 0 or v == 0:
        return out
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    code = _DIAG_CODES.get(x.dtype)
    if (input_kind == "logits" and code is not None and code < 3 and _smx_diag is not None
            and native.engine() != "numpy"):
        xc = np.ascontiguousarray(x)
        kernels.run_blocks(n, v, lambda s0, s1: _smx_diag.top_p(
            xc[s0:s1], code, s1 - s0, v, float(p), out[s0:s1]), threads,
            block_elements=_TOP_P_BLOCK)
        return out
    work = np.float32 if x.dtype.kind == "f" and x.dtype.itemsize <= 4 or \
        x.dtype.name == "bfloat16" else np.float64

    def piece(s0: int, s1: int) -> None:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            xb = np.asarray(x[s0:s1], dtype=work)
            if input_kind == "probs":
                xb = np.log(xb)
            out[s0:s1] = _top_p_rows(xb, p)

    kernels.run_blocks(n, v, piece, threads, block_elements=_TOP_P_BLOCK)
    return out


def _top_p_rows(x: np.ndarray, p: float) -> np.ndarray:
    r, v = x.shape
    m = x.max(axis=1)
    ok = np.isfinite(m)
    e = x - np.where(ok, m, 0)[:, None].astype(x.dtype)
    np.exp(e, out=e)  # in [0, 1], the maximum exactly 1
    z = e.sum(axis=1, dtype=np.float64)
    ok &= np.isfinite(z)
    target = p * z
    t = ((1 - p) * z / v).astype(e.dtype)
    cand = e >= t[:, None]
    vals = e[cand]  # row by row, in order (boolean indexing: far cheaper than nonzero)
    starts = np.zeros(r + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(cand, axis=1), out=starts[1:])
    out = np.zeros(r, dtype=np.int64)
    for i in np.flatnonzero(ok):
        seg = np.sort(vals[starts[i]:starts[i + 1]])[::-1]
        cum = np.cumsum(seg, dtype=np.float64)
        k = int(np.searchsorted(cum, target[i]))  # first index with cum >= target
        out[i] = min(k + 1, len(seg))
    return out


def sequence_report(res: XentResult, shape: tuple[int, int], *, top_p_counts=None,
                    top_p: float = 0.9, worst: int = 10) -> SequenceReport:
    """The sequence report of per-token results laid out as ``shape`` = (B, T).

    ``res`` holds B x T positions in row order (sequence b, position t is
    row b * T + t); ignored positions (padding, the shifted-out last token)
    count nowhere. Uses the plain NLL (-log p(true), no weights or
    smoothing), as perplexity is defined.

    Examples
    --------
    >>> from smx_cli.core.xent import evaluate
    >>> x = np.log([[0.5, 0.5], [0.9, 0.1], [0.25, 0.75], [0.5, 0.5]])
    >>> r = sequence_report(evaluate(x, [0, 0, 1, -100]), (2, 2))
    >>> r.tokens.tolist(), [round(v, 4) for v in r.perplexity.tolist()]
    ([2, 1], [1.4907, 1.3333])
    >>> round(r.corpus_perplexity, 4)  # exp((ln 2 + ln(1/0.9) + ln(4/3)) / 3)
    1.4363
    """
    b, t = shape
    if b * t != len(res.nll):
        raise ValueError(f"{len(res.nll)} positions do not make {b} sequences of {t} tokens")
    counted = ~res.ignored.reshape(b, t)
    nll = np.where(counted, res.nll.reshape(b, t), 0.0)
    nll_sum = np.array([exact_sum(row) for row in nll]) if b else np.zeros(0)
    correct = (res.correct.reshape(b, t) & counted).sum(axis=1)
    tokens = counted.sum(axis=1)
    key = np.where(counted.ravel(), np.where(np.isnan(res.nll), np.inf, res.nll), -np.inf)
    k = min(worst, int(counted.sum()))
    top = np.argsort(-key, kind="stable")[:k] if k else np.zeros(0, dtype=np.int64)
    worst_tokens = [WorstToken(int(i // t), int(i % t), int(res.true_class[i]),
                               int(res.predicted[i]), float(res.p_true[i]), float(res.nll[i]))
                    for i in top]
    entropy = np.where(counted, res.entropy.reshape(b, t), np.nan)
    tpc = None
    if top_p_counts is not None:
        tpc = np.asarray(top_p_counts).reshape(b, t)
    return SequenceReport(tokens.astype(np.int64), nll_sum, correct.astype(np.int64),
                          int(tokens.sum()), exact_sum(nll_sum), worst_tokens, entropy, tpc,
                          top_p)


def shift_labels(ids: np.ndarray, ignore_index: int = -100) -> np.ndarray:
    """Causal-LM targets: position t is scored against token t + 1 (as Hugging Face does).

    Hugging Face scores logits[:, :-1] against ids[:, 1:]; here the labels
    keep the logits' (B, T) shape with the last position ignored, which
    gives the same loss, mean and counts.

    Examples
    --------
    >>> shift_labels(np.array([[5, 6, 7]])).tolist()
    [[6, 7, -100]]
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"--shift-labels needs (batch, tokens) ids, got shape {ids.shape}")
    if ids.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(ids) | (ids != np.round(ids)))
        if len(bad):
            i = tuple(int(v) for v in bad[0])
            raise ValueError(f"token id at {i} is {float(ids[i])!r}, not an integer")
    out = np.empty(ids.shape, dtype=np.int64)
    out[:, :-1] = ids[:, 1:]
    out[:, -1:] = ignore_index
    return out


def pad_to_ignore(ids: np.ndarray, pad_id: int, ignore_index: int = -100) -> np.ndarray:
    """Labels with every ``pad_id`` replaced by ``ignore_index`` (padding counts nowhere).

    Examples
    --------
    >>> pad_to_ignore(np.array([3, 0, 0]), 0).tolist()
    [3, -100, -100]
    """
    ids = np.asarray(ids)
    return np.where(ids == pad_id, ignore_index, ids)


def evaluate_tokens(blocks, n_rows: int, n_classes: int, labels, *, top_p: float = 0.9,
                    threads: int | None = None, on_block=None, **options):
    """Per-token cross-entropy of (M, V) logits given in row blocks, and each row's top-p size.

    ``blocks`` yields ``(start, block)`` as for
    :func:`smx_cli.core.xent.evaluate_blocks` (which this runs, with
    ``options``; on the numpy engine 16-bit blocks are widened to float32 first, exactly); on
    each block the number of tokens holding ``top_p`` of
    the predicted mass is counted too (for ``input_kind='logits'``).
    Returns ``(XentResult, top_p_counts)``.

    Examples
    --------
    >>> x = np.log([[0.5, 0.3, 0.2], [0.95, 0.03, 0.02]])
    >>> res, cover = evaluate_tokens([(0, x)], 2, 3, [0, 0])
    >>> cover.tolist(), res.correct.tolist()
    ([3, 1], [True, True])
    """
    from smx_cli.core.xent import evaluate_blocks

    counts = np.zeros(n_rows, dtype=np.int64)
    kind = options.get("input_kind", "logits")

    def each(start, xb):
        if on_block is not None:
            on_block(start, xb)
        counts[start:start + len(xb)] = top_p_count(xb, top_p, input_kind=kind, threads=threads)

    res = evaluate_blocks(((s, _widened(b)) for s, b in blocks), n_rows, n_classes, labels,
                          threads=threads, on_block=each, **options)
    return res, counts


def _widened(block: np.ndarray) -> np.ndarray:
    """On the numpy engine, bfloat16/float16 blocks as float32 (exact): numpy's
    ufuncs on them are several times slower. The compiled core reads them as
    they are."""
    b = np.asarray(block)
    if native.engine() != "numpy":
        return b
    if b.dtype.kind == "f" and b.dtype.itemsize < 4 or b.dtype.name == "bfloat16":
        return b.astype(np.float32)
    return b
