"""The textbook softmax algorithms as a framework runs them in a narrow format.

``dtype="float16"`` etc.: every operation rounded to the format (see
:mod:`smx_cli.core.precision`) and sums taken left to right for the 16-bit
formats, as in the ``chop`` simulations of Blanchard, Higham & Higham (2021).
This is how a user sees the overflow a float16 run hits.

One function per algorithm (:func:`naive`, :func:`stable`, :func:`log`,
:func:`lse`, :func:`online`), each taking the input already rounded to the
format (and divided by the temperature) and returning its result in the
format's compute type; :func:`emulate` runs one over row blocks. The variant
registry (:mod:`smx_cli.core.registry`) names which algorithm each variant uses.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core.accurate import ONLINE_BLOCK, row_blocks
from smx_cli.core.precision import Format
from smx_cli.core.result import KernelStats, SoftmaxResult


def _rsum(a: np.ndarray, fmt: Format) -> np.ndarray:
    """Row sums of ``a`` in ``fmt``'s arithmetic, shape (N, 1).

    16-bit formats: left-to-right recursive summation, each addition rounded
    (as chop does). float32/float64: numpy's pairwise sum, which already
    rounds every addition to the format.
    """
    if fmt.native:
        return a.sum(axis=1, keepdims=True)
    cols = np.ascontiguousarray(a.T)
    s = np.zeros(a.shape[0], dtype=fmt.compute)
    for col in cols:
        s = fmt.round(s + col)
    return s[:, None]


def _count_exp(stats: KernelStats, arg: np.ndarray, e: np.ndarray) -> None:
    finite = np.isfinite(arg)
    stats.exp_overflow += int(np.count_nonzero(np.isinf(e) & finite))
    stats.exp_underflow += int(np.count_nonzero((e == 0) & finite))


def naive(x: np.ndarray, fmt: Format, stats: KernelStats) -> np.ndarray:
    """exp(x) / sum(exp(x)), unshifted (Blanchard, Higham & Higham 2021, Algorithm 3.1)."""
    r = fmt.round
    e = r(np.exp(x))
    _count_exp(stats, x, e)
    s = _rsum(e, fmt)
    stats.sum_overflow_rows += int(np.count_nonzero(np.isinf(s) & np.isfinite(x).all(axis=1, keepdims=True)))
    return r(e / s)


def _shifted_sum(x: np.ndarray, fmt: Format, stats: KernelStats):
    """The shifted algorithm's common part (their Algorithm 4.1).

    d = x - max, e = exp(d), and s = sum_{i != k} e_i (k the argmax): the
    sum skips the maximum so that 1 + s and log1p(s) keep their accuracy.
    Returns (a, d, e with e_k = 0, e_k, k, s).
    """
    r = fmt.round
    a = x.max(axis=1, keepdims=True)
    d = r(x - a)
    e = r(np.exp(d))
    _count_exp(stats, d, e)
    rows = np.arange(x.shape[0])
    k = np.argmax(x, axis=1)
    # exp(x_k - max) is 1 for a finite maximum, but NaN for +inf (inf - inf):
    # a framework computes it, so the NaN must reach the row as it does there
    ek = e[rows, k].copy()
    e[rows, k] = 0
    s = _rsum(e, fmt)  # sum over i != k
    s[np.isnan(ek)] = np.nan
    stats.sum_overflow_rows += int(np.count_nonzero(np.isinf(s)))
    return a, d, e, ek, k, s


def stable(x: np.ndarray, fmt: Format, stats: KernelStats) -> np.ndarray:
    """exp(x - max) / (1 + sum_{i != k} exp(x_i - max))."""
    r = fmt.round
    _, _, e, ek, k, s = _shifted_sum(x, fmt, stats)
    e[np.arange(x.shape[0]), k] = ek
    return r(e / r(1 + s))


def log(x: np.ndarray, fmt: Format, stats: KernelStats) -> np.ndarray:
    """Log-softmax: (x - max) - log1p(sum_{i != k} exp(x_i - max))."""
    r = fmt.round
    _, d, _, _, _, s = _shifted_sum(x, fmt, stats)
    return r(d - r(np.log1p(s)))


def lse(x: np.ndarray, fmt: Format, stats: KernelStats) -> np.ndarray:
    """exp(x - f), f = max + log1p(sum_{i != k} exp(x_i - max)): no division."""
    r = fmt.round
    a, _, _, _, _, s = _shifted_sum(x, fmt, stats)
    f = r(a + r(np.log1p(s)))
    return r(np.exp(r(x - f)))


def online(x: np.ndarray, fmt: Format, stats: KernelStats) -> np.ndarray:
    """Milakov & Gimelshein's online normaliser in ``fmt``'s arithmetic.

    16-bit formats take one column at a time (the running sum then adds left
    to right, like :func:`_rsum`); float32/float64 take blocks of
    :data:`~smx_cli.core.accurate.ONLINE_BLOCK` columns.
    """
    r = fmt.round
    n, width = x.shape
    m = np.full((n, 1), -np.inf, dtype=fmt.compute)
    s = np.zeros((n, 1), dtype=fmt.compute)
    step = ONLINE_BLOCK if fmt.native else 1
    for start in range(0, width, step):
        blk = x[:, start:start + step]
        m_new = np.maximum(m, blk.max(axis=1, keepdims=True))
        scale = np.where(m == m_new, 1, r(np.exp(r(m - m_new))))
        d = r(blk - m_new)
        e = r(np.exp(d))
        _count_exp(stats, d, e)
        s = r(r(s * scale) + _rsum(e, fmt))
        m = m_new
    stats.sum_overflow_rows += int(np.count_nonzero(np.isinf(s)))
    return r(r(np.exp(r(x - m))) / s)


def emulate(x2: np.ndarray, spec, t: float, fmt: Format, masked: str) -> SoftmaxResult:
    """Variant ``spec`` (a registry entry) over (N, C) rows in ``fmt``'s arithmetic.

    The input is rounded once to the format, divided by the temperature in
    the format, and handed to ``spec.emulate`` (one of the algorithms above)
    block by block.
    """
    kind = spec.kind
    n, width = x2.shape
    out = np.empty((n, width), dtype=fmt.dtype)
    stats = KernelStats()
    if width == 0:  # rows of no classes: an empty result, like 0 rows
        return SoftmaxResult(out, kind, fmt, True, spec.name, t, stats)
    with np.errstate(all="ignore"):
        for rows in row_blocks(n, width):
            xb = np.asarray(x2[rows])
            x = fmt.cast(xb).astype(fmt.compute)  # the input, rounded once to the format
            if t != 1.0:
                x = fmt.round(x / fmt.compute.type(t))
            res = spec.emulate(x, fmt, stats)
            if masked == "zeros":
                # a fully masked row (all -inf) gives zeros instead of NaN
                full = np.all(np.isneginf(xb.astype(np.float64)), axis=1) & (width > 0)
                res[full] = -np.inf if kind == "logprob" else 0
            out[rows] = fmt.store(res)
    return SoftmaxResult(out, kind, fmt, True, spec.name, t, stats)
