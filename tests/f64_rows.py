"""The float64 softmax rows' exact reference and documented special-row semantics.

Shared by the tests of the compiled core's float64 paths (tests/test_native_narrow64.py,
tests/test_native_f64_x4.py). Not a test module: the test files import it.
"""
from __future__ import annotations

import mpmath
import numpy as np

from smx_cli.core import native

DPS = 50


def mp_softmax(row, t: float):
    """Exact probabilities and log-probabilities (mpf) of a row with no NaN, no
    +inf and at least one finite entry; -inf entries give 0 / -inf.
    The dominant entry's log-probability is -log1p(sum of the others' terms),
    so it is relative-accurate however small."""
    with mpmath.workdps(DPS):
        z = [None if v == -np.inf else mpmath.mpf(float(v)) / mpmath.mpf(t) for v in row]
        m = max(v for v in z if v is not None)
        k = next(j for j, v in enumerate(z) if v is not None and v == m)
        rest = mpmath.fsum(mpmath.exp(v - m) for j, v in enumerate(z) if v is not None and j != k)
        L = mpmath.log1p(rest)
        lp = [mpmath.mpf("-inf") if v is None else (v - m) - L for v in z]
        p = [mpmath.mpf(0) if v is None else mpmath.exp(v) for v in lp]
    return p, lp


def ulps(got: float, ex) -> float:
    """|got - ex| in ulps of ex (subnormal spacing below 2**-1022); an exact value
    that rounds to +-inf (or is 0 / -inf) must be matched exactly."""
    with mpmath.workdps(DPS):
        if ex == 0 or mpmath.isinf(ex):
            return 0.0 if float(ex) == got else float("inf")
        rounded = float(ex)   # correctly rounded (inf beyond the largest float)
        if not np.isfinite(rounded):
            return 0.0 if got == rounded else float("inf")
        if not np.isfinite(got):
            return float("inf")
        e = max(int(mpmath.floor(mpmath.log(abs(ex), 2))), -1022)
        return float(abs(mpmath.mpf(got) - ex) / mpmath.mpf(2) ** (e - 52))


def run(x: np.ndarray, kind: str, t: float = 1.0, masked: str = "nan", threads: int = 1):
    """native.softmax_rows of x: (output, stats, argmax)."""
    out = np.empty_like(x)
    am = np.full(len(x), -7, np.int64)
    stats = native.softmax_rows(x, out, kind=kind, temperature=t, masked=masked,
                                threads=threads, argmax=am)
    return out, stats, am


def special(row) -> bool:
    return bool(np.isnan(row).any() or (row == np.inf).any() or (row == -np.inf).all())


def expected_special(row, kind: str, masked: str) -> np.ndarray:
    """The documented semantics (native.py): NaN anywhere -> NaN row; +inf entries
    share the mass equally (others 0 / -inf); all -inf -> NaN, or 0 / -inf with
    masked='zeros'."""
    C = len(row)
    if np.isnan(row).any():
        return np.full(C, np.nan)
    if (row == np.inf).any():
        n = int((row == np.inf).sum())
        if kind == "prob":
            return np.where(row == np.inf, 1.0 / n, 0.0)
        return np.where(row == np.inf, -np.log(n) if n > 1 else 0.0, -np.inf)
    if masked == "zeros":
        return np.full(C, 0.0 if kind == "prob" else -np.inf)
    return np.full(C, np.nan)


def expected_argmax(x: np.ndarray) -> np.ndarray:
    """numpy's argmax; the first NaN for a NaN row (documented), 0 for all -inf."""
    nan = np.isnan(x).any(axis=1)
    am = np.argmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    am[nan] = np.argmax(np.isnan(x[nan]), axis=1)
    return am


# ln 2**-1075: float64 log-probabilities below it are exp underflows (LOG_UNDER in the C core)
LOG_UNDER = -744.44007192138126


def check_output(x: np.ndarray, out: np.ndarray, stats: dict, kind: str, t: float, masked: str,
                 ref: dict, bound: float) -> float:
    """Assert one kind's float64 output of x: every entry of an ordinary row within
    ``bound`` ulps of ``ref`` (row index -> mp_softmax(row, t)), the special rows'
    documented values, and the kernel's counts recounted from x and the output.
    Returns the worst error in ulps."""
    w = 0.0
    for i, row in enumerate(x):
        if special(row):
            np.testing.assert_array_equal(out[i], expected_special(row, kind, masked))
            continue
        exact = ref[i][0 if kind == "prob" else 1]
        for j in range(len(row)):
            e = ulps(float(out[i, j]), exact[j])
            assert e <= bound, (
                f"{kind} C={x.shape[1]} t={t}: {e:.3g} ulp at ({i}, {j}): row "
                f"{row.tolist()[:6]}..., got {out[i, j]!r}, exact {mpmath.nstr(exact[j], 20)}")
            w = max(w, e)
    # the counts the kernel documents, recounted from its own output
    fin = np.isfinite(x) & ~np.array([special(r) for r in x], dtype=bool)[:, None]
    under = (out == 0.0) if kind == "prob" else (out < LOG_UNDER)
    assert stats["exp_underflow"] == int(np.count_nonzero(under & fin))
    assert stats["exp_overflow"] == 0
    nan_rows = np.isnan(x).any(axis=1)
    masked_rows = (x == -np.inf).all(axis=1)
    assert stats["masked_rows"] == int(masked_rows.sum())
    assert stats["posinf_rows"] == int(((x == np.inf).any(axis=1) & ~nan_rows).sum())
    bad = nan_rows | (masked_rows if masked == "nan" else False)
    assert stats["nan_rows"] == int(bad.sum())
    assert stats["nan_entries"] == int(bad.sum()) * x.shape[1]
    return w
