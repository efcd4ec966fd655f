"""High-precision reference softmax, for measuring errors in ulps.

The reference is computed from the input exactly as given (so a comparison
measures the algorithm, not the rounding of its input) to well below one ulp
of float64, independently of the kernels in :mod:`smx_cli.core.softmax`:

* d = x - max is carried as an unevaluated sum d + e of two float64 numbers
  (TwoSum), so the shift is exact;
* z = (d + e) / T is carried as q + c in x87 extended precision
  (``numpy.longdouble``, 64-bit significand), q = fl(d / T) and c the exact
  residual (Dekker's TwoProduct) plus e / T, so rounding z never costs
  |z| * 2**-64 of absolute error;
* exp(z) = exp(q) * (1 + c) with exp in long double; sums in long double.

The relative error is a few units of 2**-64, about 1/500 of a float64 ulp,
for any spread of the row (checked against mpmath at 50 digits in the tests).
On platforms whose long double is just float64 the reference falls back to
mpmath at 40 digits (slow, but correct).
"""
from __future__ import annotations

import numpy as np

from smx_cli.core.eft import SPLITTER_LONG, two_prod, two_sum

HAVE_EXTENDED = np.finfo(np.longdouble).nmant >= 63


def exact_softmax(x2: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Reference probabilities and log-probabilities of (N, C) rows.

    Rows with NaN, +inf or all -inf follow smx's defined behaviour (NaN
    row; +inf entries share the mass; NaN for a fully masked row).

    Returns
    -------
    p, logp : ndarray of longdouble (or float64 on the mpmath fallback)

    Examples
    --------
    >>> p, lp = exact_softmax(np.array([[0.0, -800.0]]))
    >>> float(lp[0, 1])
    -800.0
    """
    xb = np.asarray(x2, dtype=np.float64)
    if not HAVE_EXTENDED:
        return _mpmath_softmax(xb, temperature)
    L = np.longdouble
    n, width = xb.shape
    t = L(float(temperature))
    with np.errstate(all="ignore"):
        m = xb.max(axis=1, keepdims=True) if width else np.zeros((n, 1))
        finite = np.isfinite(m)
        shift = np.where(finite, m, 0.0)
        # TwoSum: x - shift = d + e exactly
        d, e = two_sum(xb, -shift)
        e = np.where(np.isfinite(e), e, 0.0)
        dl = d.astype(L)
        if temperature == 1.0:
            q = dl
            c = e.astype(L)
        else:
            q = dl / t
            p_hi, p_lo = two_prod(q, t, L(SPLITTER_LONG))
            # d - q*t = (d - p_hi) - p_lo, the first difference exact (Sterbenz)
            c = (((dl - p_hi) - p_lo) + e.astype(L)) / t
        c = np.where(np.isfinite(c), c, L(0))
        ez = np.exp(q) * (1 + c)
        # the maximum's term is exactly 1 (z = 0): keep the others' sum apart
        # so log p = z - log1p(rest) stays relatively accurate when rest is tiny
        k = np.argmax(q, axis=1) if width else np.zeros(n, dtype=int)
        rows = np.arange(n)
        rest = ez.copy()
        if width:
            rest[rows, k] = 0
        rest = rest.sum(axis=1, keepdims=True)
        p = ez / (1 + rest)
        logp = (q - np.log1p(rest)) + c
    for i in np.flatnonzero(~finite[:, 0]):
        mi = m[i, 0]
        if np.isnan(mi):
            p[i] = logp[i] = np.nan
        elif mi > 0:
            top = xb[i] == np.inf
            p[i] = top / L(np.count_nonzero(top))
            with np.errstate(divide="ignore"):
                logp[i] = np.log(p[i])
        else:
            p[i] = logp[i] = np.nan
    return p, logp


def _mpmath_softmax(xb: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    import mpmath

    with mpmath.workdps(40):
        p = np.empty(xb.shape)
        logp = np.empty(xb.shape)
        for i, row in enumerate(xb):
            if np.isnan(row).any() or not row.size or (np.isinf(row) & (row > 0)).any() \
                    or np.all(np.isneginf(row)):
                top = row == np.inf
                ok = top.any() and not np.isnan(row).any()
                p[i] = top / top.sum() if ok else np.nan
                with np.errstate(divide="ignore"):
                    logp[i] = np.log(p[i])
                continue
            z = [mpmath.mpf(float(v)) / temperature if np.isfinite(v) else None for v in row]
            zmax = max(v for v in z if v is not None)
            lse = zmax + mpmath.log(mpmath.fsum(mpmath.exp(v - zmax) for v in z if v is not None))
            for j, v in enumerate(z):
                logp[i, j] = float(v - lse) if v is not None else -np.inf
                p[i, j] = float(mpmath.exp(v - lse)) if v is not None else 0.0
    return p, logp
