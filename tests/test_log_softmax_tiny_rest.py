"""float64 log-softmax of rows with a dominant maximum and a tiny rest.

The dominant entry's log-probability is -L, L = log1p(sum of the other
exp(z_j)); when those terms are tiny, L is tiny and must keep its relative
accuracy (README "Accuracy": float64 log-softmax 1.5 ulp on the compiled core,
2.7 on the numpy engine). Rows here put the rest between e^-1 and below
e^-745 (exp underflows; C such terms still make L many subnormal spacings),
with and without a temperature, at widths taking every path: the compiled
core's narrow rows (<= 32) and per-row path, the numpy engine's transposed
(<= 64) and row-block kernels. The reference is mpmath at 40 digits (never
smx); errors are in ulps of the exact value, subnormal spacing below the
normal range.
"""
from __future__ import annotations

import contextlib

import mpmath
import numpy as np
import pytest

import smx_cli
from smx_cli.core import native

BOUNDS = {"native": 1.5, "numpy": 2.7}  # README "Accuracy", float64 log
ENGINES = ["numpy"] + (["native"] if native.available() else [])
WIDTHS = (2, 17, 33, 65, 400)


def _engine(name):
    return native.numpy_engine() if name == "numpy" else contextlib.nullcontext()


def _exact_log_softmax(row: np.ndarray, t: float) -> list:
    """mpmath log-softmax of a float64 row (z = (x - max)/t exact), as mpf or -inf."""
    with mpmath.workdps(40):
        m = max(row)
        k = int(np.argmax(row))
        z = [(mpmath.mpf(float(v)) - mpmath.mpf(float(m))) / t if v > -np.inf else None
             for v in row]
        rest = mpmath.fsum(mpmath.exp(zj) for j, zj in enumerate(z) if j != k and zj is not None)
        L = mpmath.log1p(rest)
        return [-L if j == k else (zj - L if zj is not None else -mpmath.inf)
                for j, zj in enumerate(z)]


def _ulps(got: float, exact) -> float:
    if exact == -mpmath.inf:
        return 0.0 if got == -np.inf else np.inf
    with mpmath.workdps(40):
        a = abs(exact)
        e = max(int(mpmath.floor(mpmath.log(a, 2))) if a > 0 else -1074, -1022)
        return float(abs(mpmath.mpf(float(got)) - exact) / mpmath.ldexp(1, e - 52))


def _rows(C: int, rng) -> np.ndarray:
    depths = (-1.0, -40.1, -300.7, -620.1, -700.3, -740.0, -745.5, -760.0, -999.0)
    rows = []
    for d in depths:
        rows.append(np.r_[0.0, np.full(C - 1, d)])                       # all equal
        rows.append(np.r_[0.0, d + rng.uniform(-1.0, 0.0, C - 1)])       # spread below d
    # a huge entry next to tiny ones (with a temperature its rounding error is ~1e284)
    rows.append(np.r_[0.0, -210.0, -1e300, np.full(C - 3, -np.inf)] if C >= 3
                else np.array([0.0, -1e300]))
    return np.array(rows)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("C", WIDTHS)
@pytest.mark.parametrize("t", [1.0, 0.3])
def test_dominant_rows_against_mpmath(engine, C, t):
    rng = np.random.default_rng(C)
    x = _rows(C, rng)
    if t != 1.0:
        x[:-1] *= t   # the same z = x / t depths
    with _engine(engine):
        got = smx_cli.log_softmax(x, temperature=t)
    worst = 0.0
    for i, row in enumerate(x):
        ref = _exact_log_softmax(row, t)
        for j in range(C):
            err = _ulps(got[i, j], ref[j])
            assert err <= BOUNDS[engine], (engine, C, t, i, j, float(got[i, j]), ref[j], err)
            worst = max(worst, err)
    assert worst > 0.0 or C == 2   # the check saw inexact values


@pytest.mark.parametrize("engine", ENGINES)
def test_subnormal_rest_is_not_dropped(engine):
    # 999 terms of e^-745.5 (each below half the smallest subnormal): L is 341 spacings
    x = np.r_[0.0, np.full(999, -745.5)][None, :]
    with _engine(engine):
        got = smx_cli.log_softmax(x)[0, 0]
    with mpmath.workdps(40):
        exact = -mpmath.log1p(999 * mpmath.exp(-745.5))
    assert got < 0.0 and _ulps(got, exact) <= 1.0
