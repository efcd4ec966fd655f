"""Error-free transforms (core/eft.py) against exact rational arithmetic."""
from fractions import Fraction

import numpy as np
import pytest

from smx_cli.core.eft import (SPLITTER_LONG, fast_two_sum, fast_two_sum_into, split_sum,
                              split_sum_long, two_prod, two_sum, two_sum_into)

RNG = np.random.default_rng(9)


def _pairs(n=2000):
    a = RNG.normal(0, 1, n) * 2.0 ** RNG.integers(-40, 40, n)
    b = RNG.normal(0, 1, n) * 2.0 ** RNG.integers(-40, 40, n)
    return a, b


def F(v):
    return Fraction(*v.as_integer_ratio())


def test_two_sum_is_exact_and_its_in_place_twin_agrees():
    a, b = _pairs()
    s, e = two_sum(a, b)
    assert s.tolist() == (a + b).tolist()
    for ai, bi, si, ei in zip(a, b, s, e):
        assert F(ai) + F(bi) == F(si) + F(ei)
    s2, e2, tmp = np.empty_like(a), np.empty_like(a), np.empty_like(a)
    two_sum_into(a, b, s2, e2, tmp)
    assert s2.tolist() == s.tolist() and e2.tolist() == e.tolist()


def test_fast_two_sum_is_exact_when_the_first_is_larger():
    a, b = _pairs()
    big = np.where(np.abs(a) >= np.abs(b), a, b)
    small = np.where(np.abs(a) >= np.abs(b), b, a)
    s, e = fast_two_sum(big, small)
    for ai, bi, si, ei in zip(big, small, s, e):
        assert F(ai) + F(bi) == F(si) + F(ei)
    s2, e2 = np.empty_like(a), np.empty_like(a)
    fast_two_sum_into(big, small, s2, e2)
    assert e2.tolist() == e.tolist()


def test_two_prod_is_exact_in_float64_and_long_double():
    a, b = _pairs()
    p, e = two_prod(a, b)
    for ai, bi, pi, ei in zip(a, b, p, e):
        assert F(ai) * F(bi) == F(pi) + F(ei)
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("long double is float64 here")
    L = np.longdouble
    al = a.astype(L) * (1 + L(2) ** -60)   # 64-bit significands
    bl = b.astype(L) / 3
    p, e = two_prod(al, bl, L(SPLITTER_LONG))
    for ai, bi, pi, ei in zip(al, bl, p, e):
        assert F(ai) * F(bi) == F(pi) + F(ei)


def test_split_sums_are_exact_to_the_stated_bound():
    n = 3000
    e = RNG.random((50, n)) * np.exp(-RNG.uniform(0, 40, (50, n)))
    e[:10] = RNG.uniform(0.9, 1.0, (10, n))  # sums near C: the grid must keep them exact
    e[:, 0] = 1.0
    hi, lo = split_sum(e)
    bound = Fraction(int(np.ceil(np.log2(n))) * n * (n + 1), 2 ** 105)  # the docstring's
    for i in range(len(e)):
        exact = sum(F(v) for v in e[i])
        assert abs(exact - F(hi[i, 0]) - F(lo[i, 0])) <= bound
        assert abs(F(lo[i, 0])) <= F(np.spacing(hi[i, 0])) / 2
    longsum = split_sum_long(e * 4.0, 1, 3)  # terms below 2**3
    for i in range(len(e)):
        exact = sum(F(v) for v in e[i] * 4.0)
        rel = abs(exact - F(longsum[i, 0])) / exact
        assert rel <= Fraction(1, 2 ** 62)
