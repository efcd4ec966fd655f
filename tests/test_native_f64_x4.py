"""The AVX-512 float64 row kernel of the compiled core (smx_cli/core/_smx_f64x4.h).

float64 softmax and log-softmax rows that do not take the narrow path run, on
the AVX-512 variant, an intrinsics kernel with its own exp (a 16-entry
2**(j/16) table as hi + lo words, a degree-7 Taylor polynomial, the result as
an unevaluated pair). Held here to the README's float64 bound (1.5 ulp,
softmax and log-softmax; the dominant log-probability relative to its own
size) against mpmath at 50 digits -- never against smx -- at every width 1..40
(the narrow path switched off by its test hook, so the kernel sees them) and
64, 65, 1000, 4097 around the vector tails, with temperatures 0.3 and 7, and
on adversarial rows (spreads of 1e300, values near exp's overflow and the
largest float, ties, -inf entries, dominant rows with rests down to below
e^-745). Special rows (NaN, +inf, all -inf with masked on and off) follow the
documented semantics; the counts and argmax equal the portable per-row path's
(the AVX2 variant, set_isa) and numpy's argmax.

Errors are in ulps of the exact value, in units of the subnormal spacing
2**-1074 below the normal range; an exact value beyond the largest float must
come out as the infinity it rounds to.
"""
from __future__ import annotations

import os
import re
import numpy as np
import pytest
from native_isa import isa as _isa

from smx_cli.core import native

if not native.available():  # pragma: no cover - depends on the build
    pytest.skip(f"native extension not built ({native.why_unavailable()})", allow_module_level=True)
if native._ext.isa() != "avx512":  # pragma: no cover - depends on the CPU
    pytest.skip("the AVX-512 float64 rows need an AVX-512 CPU", allow_module_level=True)

import mpmath  # noqa: E402
from f64_rows import (  # noqa: E402
    check_output, expected_argmax, mp_softmax, run, special)

F64_BOUND = 1.5  # README "Accuracy": float64 softmax and log-softmax on the compiled core
HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "smx_cli", "core", "_smx_f64x4.h")
WIDTHS = list(range(1, 41)) + [64, 65, 1000, 4097]


@pytest.fixture(autouse=True)
def _narrow_off():
    """The narrow float64 path off (its own tests cover it): every width reaches
    the row kernels."""
    old = native._ext.set_narrow64(False)
    try:
        yield
    finally:
        native._ext.set_narrow64(old)


# the exact reference (mpmath, 50 digits), ulps and special-row semantics: tests/f64_rows.py

def check_rows(x: np.ndarray, t: float = 1.0, masked: str = "nan",
               kinds=("prob", "logprob")) -> dict:
    """x through the AVX-512 kernel: the bound on every ordinary row against
    mpmath, the special rows' semantics, the counts recounted from the output
    and equal to the portable path's (AVX2 variant), argmax equal to it and to
    numpy's. Returns the worst ulps per kind."""
    ref = {i: mp_softmax(row, t) for i, row in enumerate(x) if not special(row)}
    worst = {}
    for kind in kinds:
        with _isa("avx512"):
            out, stats, am = run(x, kind, t, masked)
        with _isa("avx2"):
            out_p, stats_p, am_p = run(x, kind, t, masked)
        assert stats == stats_p, (kind, x.shape, t, stats, stats_p)
        np.testing.assert_array_equal(am, am_p)
        np.testing.assert_array_equal(am, expected_argmax(x))
        worst[kind] = check_output(x, out, stats, kind, t, masked, ref, F64_BOUND)
    return worst


def random_rows(rng, n: int, C: int) -> np.ndarray:
    scale = rng.choice([0.1, 1.0, 10.0, 300.0, 1e4], (n, 1))
    x = rng.standard_normal((n, C)) * scale
    if C > 1:
        x[rng.random((n, C)) < 0.05] = -np.inf
        x[::3] = np.round(x[::3])               # ties
    x[(x == -np.inf).all(axis=1), 0] = 0.0
    return x


def adversarial_rows(C: int, t: float) -> np.ndarray:
    """Rows of the issue's kinds cut or padded to C columns (padding: -inf for
    the 'values vs the rest' rows, repeats for the all-equal ones), and each
    rolled so that the maximum moves."""
    big = np.finfo(np.float64).max
    rows = [
        [1e300, -1e300, 0.0, 1e300 - 1e284, -5e299],            # huge spreads
        [-1e300, 1e300, 1e299, -1e299],
        [709.0, 708.5, 700.0, 705.0, 0.0, 709.7],                # near exp's overflow
        [big, 1.6e308, 1e308, 0.0, 1e300],                        # near the largest float
        [big, big, big - 2.0 ** 970],
        [5.0] * 3, [-0.0, 0.0, -0.0], [-745.0] * 2,               # ties, signed zeros
        [0.0, -np.inf, 1.0, -np.inf, 2.0],                        # -inf entries
        [-np.inf, -np.inf, 3.0],
        [0.0, -40.0, -41.0, -39.1],                               # dominant: log p ~ -1e-17
        [0.0, -37.0, -80.0, -700.0],
        [0.0, -707.9, -708.1, -744.4, -744.5, -745.2, -750.0],   # underflow edges
        [0.0, -745.0, -745.05, -745.1],                           # rests below e^-745
        [0.0, -745.3, -745.4, -745.5], [0.0, -760.0, -900.0, -999.0],
        [20.0, 1e-8, -1e-9, 19.0, 20.0],                          # inexact x - m
        [0.1, 0.1 + 2e-16, 0.1 - 3e-16, -0.3],
        [1e-300, -1e-300, 0.0, 5e-324],
    ]
    if t <= 1.0:  # x - m overflows to -inf
        rows += [[big, 1.6e308, -big, 1e308, 0.0], [1e308, -1e308, -big]]
    out = []
    for r in rows:
        r = np.array(r, dtype=np.float64)
        if len(r) >= C:
            out.append(r[:C])
        else:
            pad = np.full(C - len(r), -np.inf) if len(set(r.tolist())) > 1 else np.full(
                C - len(r), r[0])
            out.append(np.concatenate([r, pad]))
    out += [np.roll(r, (C * 5) // 8) for r in out]
    x = np.array(out)
    x[(x == -np.inf).all(axis=1), 0] = 0.0
    return np.ascontiguousarray(x)


def dominant_rows(C: int) -> np.ndarray:
    """One maximum and C - 1 equal terms e^d, d from e^-1 to below e^-745 (exp
    underflows; the log-softmax's L = (C - 1) e^d is still many subnormal
    spacings), maximum first, last and in the middle."""
    rows = []
    for d in (-1.0, -40.1, -300.7, -700.3, -740.0, -745.5, -760.0, -999.0):
        r = np.full(C, d)
        for k in {0, C // 2, C - 1}:
            rr = r.copy()
            rr[k] = 0.0
            rows.append(rr)
    return np.array(rows)


# ---------------------------------------------------------------------------
# the constants


def test_table_and_ln2_split_are_the_exact_values_rounded():
    """X4_EXP16_HI[j] = 2^(j/16) rounded, X4_EXP16_LO[j] the remainder rounded
    (the table in _smx_x4exp.h), and LN2H + LN2L = ln 2 to 2^-107, re-derived here
    from mpmath (the budget in the header assumes these)."""
    src = open(HEADER).read()
    table = open(os.path.join(os.path.dirname(HEADER), "_smx_x4exp.h")).read()

    def arr(name):
        body = re.search(name + r"\[16\] = \{([^}]*)\}", table).group(1)
        return [float.fromhex(v.strip()) if "0x" in v else float(v) for v in body.split(",")]

    th, tl = arr("X4_EXP16_HI"), arr("X4_EXP16_LO")
    with mpmath.workdps(60):
        for j in range(16):
            v = mpmath.mpf(2) ** (mpmath.mpf(j) / 16)
            assert th[j] == float(v), j
            assert tl[j] == float(v - mpmath.mpf(th[j])), j
        ln2h = float.fromhex(re.search(r"#define F64X4_LN2H (\S+)", src).group(1))
        ln2l = float.fromhex(re.search(r"#define F64X4_LN2L (\S+)", src).group(1))
        assert ln2h == float(mpmath.log(2))
        assert abs(mpmath.mpf(ln2h) + mpmath.mpf(ln2l) - mpmath.log(2)) < mpmath.mpf(2) ** -107


# ---------------------------------------------------------------------------
# accuracy, counts, argmax


@pytest.mark.parametrize("C", WIDTHS)
def test_random_rows_against_mpmath(C):
    """Rows of mixed scales, -inf entries and ties at every tail length, t = 1,
    0.3, 7: within 1.5 ulp; counts and argmax as the portable path."""
    rng = np.random.default_rng(C)
    n = 6 if C < 1000 else 2
    for t in (1.0, 0.3, 7.0):
        x = random_rows(rng, n, C)
        check_rows(x, t)


@pytest.mark.parametrize("C", [1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 64, 65, 1000])
@pytest.mark.parametrize("t", [1.0, 0.3, 7.0])
def test_adversarial_rows_against_mpmath(C, t):
    check_rows(adversarial_rows(C, t), t)


@pytest.mark.parametrize("C", [2, 9, 40, 65, 1000])
def test_dominant_rows_with_tiny_rests(C):
    """The dominant log-probability -L, L = log1p(rest), keeps its relative
    accuracy for rests from e^-1 down to below e^-745 (the kernel scales such
    rows' terms by an exact 2^K); the probabilities too."""
    check_rows(dominant_rows(C), 1.0)
    check_rows(dominant_rows(C) * 0.3, 0.3)


@pytest.mark.parametrize("C", [1, 5, 8, 17, 64, 65, 1000])
@pytest.mark.parametrize("masked", ["nan", "zeros"])
def test_special_rows(C, masked):
    """NaN, +inf (one and several, with -inf), all -inf rows among ordinary
    ones: the documented outputs, the counts and argmax of the portable path."""
    rng = np.random.default_rng(C)
    x = random_rows(rng, 8, C)
    r = np.linspace(-3.0, 3.0, C)
    specials = [np.full(C, -np.inf), np.full(C, np.nan), np.full(C, np.inf)]
    r1 = r.copy()
    r1[C // 2] = np.nan
    r2 = r.copy()
    r2[C - 1] = np.inf
    r3 = np.full(C, -np.inf)
    r3[::2] = np.inf
    x = np.vstack([specials[0], x[:4], specials[1], r1, r2, r3, x[4:], specials[2]])
    check_rows(x, 1.0, masked)
    check_rows(x, 7.0, masked)


def test_zero_rows_and_one_column():
    for shape in [(0, 5), (0, 1000), (3, 1)]:
        x = np.zeros(shape)
        for kind in ("prob", "logprob"):
            out, stats, am = run(x, kind)
            np.testing.assert_array_equal(out, np.ones(shape) if kind == "prob" else np.zeros(shape))
            assert stats["exp_underflow"] == 0
            np.testing.assert_array_equal(am, np.zeros(shape[0], np.int64))


def test_wide_rows_threads_agree():
    """4 x 32000 rows split over threads give the same bits as one thread."""
    x = np.random.default_rng(1).standard_normal((4, 32000)) * 10
    with _isa("avx512"):
        for kind in ("prob", "logprob"):
            a, b = np.empty_like(x), np.empty_like(x)
            native.softmax_rows(x, a, kind=kind, threads=1)
            native.softmax_rows(x, b, kind=kind, threads=2)
            np.testing.assert_array_equal(a, b)
