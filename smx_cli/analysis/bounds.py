"""Each softmax variant's known rounding-error bound, entry by entry.

``compare-stability`` judges a variant against *its own* bound for the
format, not against one number for all: the shifted formula's error grows
with ``|x_i - max|`` (the rounding of ``x - max`` is amplified by exp), the
unshifted one's does not, so a fixed threshold calls the overflow-prone
``naive`` "ok" and the safe ``stable`` "inaccurate" on the same data.

Bounds (first order, in units of u = 2**-p, on the relative error of p_i;
d_i = (x_i - max)/T, n classes; after Blanchard, Higham & Higham 2021,
sections 3-4, with one u of slack for the temperature division and the
final rounding):

=========  ===========================================================
naive      (n + 3) u                  exp, n - 1 additions, divide
stable     (|d_i| + n + 4) u          + the rounding of x - max
online     (|d_i| + 2n + 5) u         + one rescaling per block
log        (2 |d_i| + |log p_i| + n + 4) u    its log-probabilities' absolute error
lse        (|d_i| + |f| + log n + n + 5) u    f = max + log(sum): its rounding
smx        8 u (4 ulps)               the accurate path's own promise
=========  ===========================================================

A relative error of r u is at most r ulps (an ulp of p is more than u p),
so a variant is within its bound when every entry's error in ulps is at
most its r.
"""
from __future__ import annotations

import numpy as np

#: the accurate path's documented accuracy, in ulps
SMX_ULPS = 4.0


def bound_ulps(variant: str, x: np.ndarray, logp: np.ndarray, temperature: float = 1.0
               ) -> np.ndarray:
    """Per-entry error bound, in ulps, of ``variant`` on rows ``x`` (any format).

    ``logp`` is the exact log-softmax (for the log variant's bound).

    Examples
    --------
    >>> x = np.array([[0.0, -10.0, -20.0]])
    >>> lp = x - np.log(np.exp(x).sum())
    >>> bound_ulps("naive", x, lp).tolist()
    [[6.0, 6.0, 6.0]]
    >>> bound_ulps("stable", x, lp).tolist()
    [[7.0, 17.0, 27.0]]
    """
    xs = np.asarray(x, dtype=np.float64) / temperature
    n = xs.shape[1] if xs.ndim == 2 else 1
    with np.errstate(invalid="ignore"):
        d = np.abs(xs - xs.max(axis=1, keepdims=True)) if xs.size else xs
    if variant not in _BOUNDS:
        raise ValueError(f"no error bound for variant {variant!r}")
    return np.broadcast_to(_BOUNDS[variant](xs, d, np.asarray(logp, dtype=np.float64), n),
                           xs.shape)


def verdict(rows: int, failed_rows: int, bound_ratio: float | None) -> str:
    """A variant's verdict: overflow/NaN first, then its error against its own bound.

    Examples
    --------
    >>> verdict(10, 0, 0.4), verdict(10, 2, 0.4), verdict(10, 0, 1.7), verdict(0, 0, None)
    ('ok', 'broken', 'inaccurate', 'n/a')
    """
    if rows == 0:
        return "n/a"
    if failed_rows:
        return "broken"
    if bound_ratio is not None and bound_ratio > 1:
        return "inaccurate"
    return "ok"


def _lse(xs, d, logp, n):
    f = np.abs(xs.max(axis=1, keepdims=True)) + np.log(max(n, 1))
    return d + f + np.log(max(n, 1)) + n + 5


# one bound per algorithm (in units of u, i.e. at most that many ulps)
_BOUNDS = {
    "naive": lambda xs, d, logp, n: np.full(xs.shape, n + 3.0),
    "stable": lambda xs, d, logp, n: d + n + 4,
    "online": lambda xs, d, logp, n: d + 2 * n + 5,
    "log": lambda xs, d, logp, n: 2 * d + np.abs(logp) + n + 4,
    "lse": _lse,
    "smx": lambda xs, d, logp, n: np.full(xs.shape, SMX_ULPS),
}
