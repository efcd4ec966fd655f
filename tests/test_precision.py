"""Formats, ulps, and the per-operation rounding the emulation relies on.

The oracle for rounding is exact rational arithmetic (fractions.Fraction)
rounded to nearest-even by hand, not numpy or ml_dtypes.
"""
from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from smx_cli.core.precision import BFLOAT16, FORMATS, format_of, result_format, ulp, ulp_error

# (significand bits p, minimum normal exponent emin) with normals in [2**emin, ...)
SPEC = {"float16": (11, -14, 15), "bfloat16": (8, -126, 127),
        "float32": (24, -126, 127), "float64": (53, -1022, 1023)}


def round_exact(q: Fraction, name: str) -> float:
    """q rounded to nearest-even in format ``name``, with subnormals and overflow."""
    p, emin, emax = SPEC[name]
    if q == 0:
        return 0.0
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = math.floor(math.log2(a.numerator) - math.log2(a.denominator))
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    quantum = Fraction(2) ** (max(e, emin) - p + 1)
    m = a / quantum
    n = math.floor(m)
    rem = m - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    r = n * quantum
    largest = (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax
    if r > largest:
        return sign * math.inf
    return sign * float(r)


def test_format_table():
    assert [FORMATS[n].digits for n in ("float16", "bfloat16", "float32", "float64")] == \
        [11, 8, 24, 53]
    assert FORMATS["float16"].max == 65504.0
    assert FORMATS["bfloat16"].smallest_normal == 2.0 ** -126
    assert FORMATS["float16"].eps == 2.0 ** -10
    assert FORMATS["float64"].unit_roundoff == 2.0 ** -53
    assert FORMATS["float16"].exp_overflow_threshold == pytest.approx(math.log(65504))
    assert format_of(np.float32).name == "float32"
    assert format_of(BFLOAT16).name == "bfloat16"
    assert result_format(np.int16).name == "float64"
    assert result_format(np.float16).name == "float16"
    assert result_format(np.longdouble).name == "float64"
    with pytest.raises(ValueError):
        format_of("float8")
    with pytest.raises(ValueError):
        format_of(np.complex64)


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
def test_ulp(name):
    fmt = FORMATS[name]
    p, emin, _ = SPEC[name]
    assert float(ulp(np.array(1.0), fmt)) == 2.0 ** (1 - p)
    below_one = float(np.nextafter(np.float64(1.0), 0))
    assert float(ulp(np.array(below_one), fmt)) == 2.0 ** -p
    assert float(ulp(np.array(-3.0), fmt)) == 2.0 ** (2 - p)
    # subnormals share the spacing at the smallest normal
    sub = 2.0 ** (emin - 3)
    assert float(ulp(np.array(sub), fmt)) == 2.0 ** (emin - p + 1)
    assert float(ulp(np.array(0.0), fmt)) == 2.0 ** (emin - p + 1)
    # the spacing of the real format, where numpy has it
    if name != "bfloat16":
        dt = fmt.dtype
        for v in (1.0, 0.7, 1000.0, 1e-3):
            assert float(ulp(np.array(v), fmt)) == float(np.spacing(dt.type(v)))
    else:
        x = np.array([1.0, 3.5, 1e10, 0.3], dtype=ml_dtypes.bfloat16)
        # the next bfloat16 up, by bit pattern, is one ulp away
        nxt = (x.view(np.uint16) + 1).view(ml_dtypes.bfloat16).astype(np.float64)
        np.testing.assert_array_equal(ulp(x.astype(np.float64), fmt), nxt - x.astype(np.float64))


def test_ulp_of_longdouble_reference_stays_longdouble():
    r = np.array([1.0, 2.0], dtype=np.longdouble)
    assert ulp(r, FORMATS["float64"]).dtype == np.longdouble


def test_ulp_error():
    f64 = FORMATS["float64"]
    one = np.array([1.0, 1.0, 1.0])
    got = np.array([1.0, np.nextafter(1.0, 2), np.nextafter(np.nextafter(1.0, 0), 0)])
    np.testing.assert_array_equal(ulp_error(got, one, f64), [0, 1, 1])
    half = np.longdouble(1) + np.longdouble(2.0 ** -53)  # exactly half an ulp above 1
    assert float(ulp_error(np.array([1.0]), np.array([half]), f64)[0]) == 0.5
    inf, nan = np.inf, np.nan
    err = ulp_error(np.array([inf, -inf, nan, nan, 1.0, inf]),
                    np.array([inf, -inf, nan, 1.0, nan, 1.0]), f64)
    np.testing.assert_array_equal(err, [0, 0, 0, inf, inf, inf])
    f16 = FORMATS["float16"]
    assert float(ulp_error(np.array([np.float16(1.0) + np.float16(2 ** -10)]),
                           np.array([1.0]), f16)[0]) == 1.0
    bf = np.array([1.0078125], dtype=ml_dtypes.bfloat16)  # 1 + 2**-7, one bf16 ulp
    assert float(ulp_error(bf, np.array([1.0]), FORMATS["bfloat16"])[0]) == 1.0


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_round_gives_correctly_rounded_operations(name, op):
    """fmt.round(a op b), computed in float32, is the correctly rounded 16-bit result."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(abs(hash((name, op))) % 2**32)
    a = fmt.round(rng.normal(0, 4, 400).astype(np.float32) * rng.choice([1, 1e-3, 50], 400)
                  .astype(np.float32))
    b = fmt.round(rng.normal(0, 4, 400).astype(np.float32))
    b[b == 0] = 1
    with np.errstate(over="ignore"):
        got = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        got = fmt.round(got)
    assert got.dtype == np.float32  # kept in the compute dtype
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y,
           "*": lambda x, y: x * y, "/": lambda x, y: x / y}
    want = [round_exact(ops[op](Fraction(float(x)), Fraction(float(y))), name)
            for x, y in zip(a, b)]
    np.testing.assert_array_equal(got.astype(np.float64), want)


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
def test_cast_rounds_float64_once(name):
    fmt = FORMATS[name]
    p, emin, _ = SPEC[name]
    # just above the midpoint between 1 and 1 + ulp: a detour through a
    # narrower-than-float64 format lands on the midpoint and rounds to even (1)
    tricky = 1 + 2.0 ** -p + 2.0 ** -40
    rng = np.random.default_rng(3)
    x = np.concatenate([[tricky, -tricky, 2.0 ** (emin - 2) * 1.37, 1e39, -1e39, 0.0],
                        rng.normal(0, 1, 300) * 10.0 ** rng.integers(-8, 8, 300)])
    got = fmt.cast(x)
    assert got.dtype == fmt.dtype
    with np.errstate(over="ignore"):
        want = [round_exact(Fraction(v), name) for v in x]
    np.testing.assert_array_equal(got.astype(np.float64), want)
    assert float(got[0]) == 1 + 2.0 ** (1 - p)


def test_round_keeps_native_formats():
    a = np.array([0.1, 0.2], dtype=np.float32)
    assert FORMATS["float32"].round(a).dtype == np.float32
    np.testing.assert_array_equal(FORMATS["float32"].round(a), a)
    h = FORMATS["float16"].round(np.array([0.1], dtype=np.float32))
    assert h.dtype == np.float32 and float(h[0]) == float(np.float16(0.1))
