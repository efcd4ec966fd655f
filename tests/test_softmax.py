"""Numerics of the softmax family against high-precision references.

Two oracles, neither of them the code under test:

* mpmath at 50 significant digits, for a modest number of rows (slow);
* ``smx_cli.core.reference.exact_softmax`` (long double with error-free shifts),
  for large random and adversarial suites -- itself checked against mpmath
  below to far under a float64 ulp.

Accuracy is in ulps of the result format at the exact value, over entries
whose exact value is a normal number of that format.
"""
from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest
import scipy.special

from smx_cli.core.precision import FORMATS, ulp_error
from smx_cli.core.reference import exact_softmax
from smx_cli.core.softmax import ONLINE_BLOCK, _BLOCK_ELEMENTS, compute, log_softmax, logsumexp, softmax

DTYPES = ("float16", "bfloat16", "float32", "float64")
ACCURATE = ("stable", "log", "online")
MAX_ULP = 4.0
DPS = 50


# ----------------------------------------------------------------------------
# oracles


def mp_log_softmax(row, temperature=1.0):
    """Log-probabilities of one finite row at 50 digits, as mpf.

    The log1p form: log p_j = (z_j - z_k) - log1p(sum_{i != k} exp(z_i - z_k)).
    (m + log(s) then v - that would lose the dominant entry's tiny value.)
    """
    with mpmath.workdps(DPS):
        z = [mpmath.mpf(float(v)) / mpmath.mpf(float(temperature)) for v in row]
        k = max(range(len(z)), key=lambda j: z[j])
        rest = mpmath.fsum(mpmath.exp(v - z[k]) for j, v in enumerate(z) if j != k)
        l1 = mpmath.log1p(rest)
        return [(v - z[k]) - l1 for v in z]


def mp_ulp_errors(got, exact, fmt):
    """|got - exact| in ulps of fmt at exact, for exact values that are normal numbers."""
    errs = []
    with mpmath.workdps(DPS):
        for g, e in zip(np.asarray(got, dtype=np.float64).ravel(), exact):
            a = abs(e)
            if not (fmt.smallest_normal <= a <= fmt.max):
                continue
            ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(a, 2)) - fmt.digits + 1)
            errs.append(float(abs(mpmath.mpf(float(g)) - e) / ulp))
    return errs


def to_mpf(v):
    """A long double as an exact mpf (hi + lo in float64 carry all 64 bits)."""
    hi = np.float64(v)
    lo = np.float64(np.longdouble(v) - np.longdouble(hi))
    return mpmath.mpf(float(hi)) + mpmath.mpf(float(lo))


def cast(x, dtype):
    """Logits in a format; values beyond its range are clipped to it."""
    fmt = FORMATS[dtype]
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        x = np.where(np.isfinite(x), np.clip(x, -fmt.max, fmt.max), x)
    return x.astype(fmt.dtype)


def measured_ulps(values, x, dtype, variant, temperature=1.0):
    """Max ulp error of ``values`` against exact_softmax of the same input."""
    fmt = FORMATS[dtype]
    p, lp = exact_softmax(np.asarray(x).astype(np.float64), temperature)
    ref = lp if variant == "log" else p
    mag = np.abs(ref)
    normal = (mag >= fmt.smallest_normal) & (mag <= fmt.max)
    err = ulp_error(values, ref, fmt)[normal]
    assert err.size, "the suite must hold entries with normal exact values"
    return float(err.max())


# ----------------------------------------------------------------------------
# the reference itself


def test_exact_softmax_agrees_with_mpmath():
    rng = np.random.default_rng(20)
    worst_p = worst_lp = 0.0
    for temperature in (1.0, 0.7, 3.0):
        for sigma in (1, 10, 100, 1e3, 1e4, 1e5):
            x = rng.normal(0, sigma, (2, 12))
            p, lp = exact_softmax(x, temperature)
            for i in range(len(x)):
                exact = mp_log_softmax(x[i], temperature)
                with mpmath.workdps(DPS):
                    for j, e in enumerate(exact):
                        pe = mpmath.exp(e)
                        if pe >= FORMATS["float64"].smallest_normal:
                            ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(pe, 2)) - 52)
                            worst_p = max(worst_p, float(abs(to_mpf(p[i, j]) - pe) / ulp))
                        if abs(e) < FORMATS["float64"].smallest_normal:
                            continue  # a dominant entry's log p below float64's range
                        ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(abs(e), 2)) - 52)
                        worst_lp = max(worst_lp, float(abs(to_mpf(lp[i, j]) - e) / ulp))
    # far below a float64 ulp: the reference can judge a 4-ulp claim
    assert worst_p < 0.02
    assert worst_lp < 0.02


# ----------------------------------------------------------------------------
# accuracy against mpmath, a few rows per format


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ACCURATE)
def test_accuracy_against_mpmath(dtype, variant):
    fmt = FORMATS[dtype]
    rng = np.random.default_rng(hash((dtype, variant)) % 2**32)
    rows = [rng.normal(0, s, 9) for s in (1, 30, 1e3, 1e5)]
    rows.append(rng.uniform(-fmt.exp_overflow_threshold, fmt.exp_overflow_threshold, 9))
    x = cast(np.array(rows), dtype)
    res = compute(x, variant)
    assert res.values.dtype == fmt.dtype
    errs = []
    for i, row in enumerate(x.astype(np.float64)):
        exact = mp_log_softmax(row)
        if variant != "log":
            with mpmath.workdps(DPS):
                exact = [mpmath.exp(e) for e in exact]
        errs += mp_ulp_errors(res.values[i], exact, fmt)
    assert errs and max(errs) <= MAX_ULP


# ----------------------------------------------------------------------------
# the adversarial suite against exact_softmax


def adversarial_rows(dtype, rng):
    """Rows of every spread, up to the overflow threshold and beyond."""
    fmt = FORMATS[dtype]
    blocks = [rng.normal(0, sigma, (24, 40)) for sigma in (1, 10, 100, 1e3, 1e4, 1e5)]
    thr = fmt.exp_overflow_threshold
    blocks += [rng.uniform(-r, r, (24, 40)) for r in (0.5 * thr, thr, 1.5 * thr)]
    blocks.append(rng.uniform(-thr, thr, (24, 40)) + 1e4)  # large offsets: x - max rounds
    blocks.append(rng.normal(0, 3, (6, 40)) * rng.choice([1, 1e-6], (6, 40)))
    return [cast(b, dtype) for b in blocks]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ACCURATE)
def test_adversarial_suite_within_4_ulp(dtype, variant):
    rng = np.random.default_rng(7)
    worst = max(measured_ulps(compute(x, variant).values, x, dtype, variant)
                for x in adversarial_rows(dtype, rng))
    assert worst <= MAX_ULP


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ACCURATE)
def test_wide_rows_cross_column_and_row_blocks(dtype, variant):
    # C > ONLINE_BLOCK: the online normaliser rescales across column blocks;
    # N * C > _BLOCK_ELEMENTS: the kernels process more than one row block
    width = 3 * ONLINE_BLOCK + 77
    n = _BLOCK_ELEMENTS // width + 5
    rng = np.random.default_rng(3)
    x = rng.normal(0, 4, (n, width))
    x[::3] += np.linspace(0, 60, width)  # the maximum arrives late: S is rescaled
    x[1::3] = np.abs(x[1::3])  # an early maximum, and a late one in other rows
    x = cast(x, dtype)
    assert x.shape[1] > ONLINE_BLOCK and x.size > _BLOCK_ELEMENTS
    assert measured_ulps(compute(x, variant).values, x, dtype, variant) <= MAX_ULP


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ("stable", "online"))
def test_sums_to_one(dtype, variant):
    fmt = FORMATS[dtype]
    rng = np.random.default_rng(5)
    x = cast(rng.normal(0, 5, (200, 300)), dtype)
    p = compute(x, variant).values.astype(np.longdouble)
    # each entry is within 4 ulps, so the sum is within ~4 eps of 1
    assert np.abs(p.sum(axis=1) - 1).max() <= 4 * fmt.eps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ACCURATE)
def test_all_equal_rows(dtype, variant):
    for width in (1, 3, 7, 1000, 2 * ONLINE_BLOCK + 1):
        x = cast(np.full((2, width), 12.5), dtype)
        got = compute(x, variant).values.astype(np.float64)
        want = -math.log(width) if variant == "log" else 1.0 / width
        err = ulp_error(got, np.full(got.shape, want), FORMATS[dtype])
        assert err.max() <= MAX_ULP, width


# ----------------------------------------------------------------------------
# special rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ACCURATE)
def test_special_rows(dtype, variant):
    inf, nan = np.inf, np.nan
    x = cast(np.array([
        [1.0, inf, 2.0, inf, -inf],   # +inf entries share the mass
        [1.0, nan, 2.0, 3.0, 4.0],    # NaN: the row is NaN
        [-inf, -inf, -inf, -inf, -inf],  # fully masked
        [0.0, -inf, 1.0, -inf, 2.0],  # partly masked: ordinary
        [inf, 1.0, nan, 2.0, 3.0],    # NaN wins over +inf
    ]), dtype)
    res = compute(x, variant)
    p = res.values.astype(np.float64)
    if variant == "log":
        with np.errstate(divide="ignore"):
            expected0 = np.log([0, 0.5, 0, 0.5, 0])
    else:
        expected0 = [0, 0.5, 0, 0.5, 0]
    expected0 = FORMATS[dtype].cast(np.asarray(expected0)).astype(np.float64)
    np.testing.assert_array_equal(p[0], expected0)
    assert np.isnan(p[1]).all()
    assert np.isnan(p[2]).all()
    assert np.isnan(p[4]).all()
    want = softmax(np.array([0.0, 1.0, 2.0]))
    got3 = np.exp(p[3]) if variant == "log" else p[3]
    np.testing.assert_allclose(got3[[0, 2, 4]], want, rtol=4 * FORMATS[dtype].eps)
    assert got3[1] == 0 and got3[3] == 0

    zeros = compute(x, variant, masked="zeros").values.astype(np.float64)
    np.testing.assert_array_equal(zeros[2], -inf if variant == "log" else 0.0)
    np.testing.assert_array_equal(zeros[0], p[0])  # only the masked row changes
    assert np.isnan(zeros[1]).all()


def _probs(x, variant):
    """softmax(x, variant=...) as probabilities (``log`` gives log-probabilities, as the CLI)."""
    p = softmax(x, variant=variant)
    return np.exp(p) if variant == "log" else p


def test_one_column_zero_rows_zero_d():
    for variant in ACCURATE + ("naive", "lse"):
        one = _probs(np.array([[3.0], [-700.0], [-1e300]]), variant)
        np.testing.assert_array_equal(one[:2], [[1.0], [1.0]])
        if variant != "naive":  # exp(-1e300) / exp(-1e300) is 0/0 in the textbook form
            assert one[2, 0] == 1.0
        assert log_softmax([[7.0]])[0, 0] == 0.0
        empty = softmax(np.zeros((0, 4)), variant=variant)
        assert empty.shape == (0, 4)
        assert softmax(np.zeros((3, 0)), variant=variant).shape == (3, 0)
        assert softmax(np.zeros(0), variant=variant).shape == (0,)
        scalar = _probs(np.float64(4.5), variant)
        assert scalar.shape == () and scalar == 1.0
    assert softmax(np.zeros((0, 4)), dtype="float16").shape == (0, 4)
    assert log_softmax(np.float32(2.0)).dtype == np.float32
    assert log_softmax(np.float32(2.0)) == 0


# ----------------------------------------------------------------------------
# temperature, axis, shapes, integers


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ACCURATE)
@pytest.mark.parametrize("temperature", (0.3, 2.5, 1e3))
def test_temperature_against_mpmath(dtype, variant, temperature):
    fmt = FORMATS[dtype]
    rng = np.random.default_rng(11)
    x = cast(np.vstack([rng.normal(0, s, 8) for s in (1, 50, 3e3)]), dtype)
    res = compute(x, variant, temperature=temperature)
    errs = []
    for i, row in enumerate(x.astype(np.float64)):
        exact = mp_log_softmax(row, temperature)  # x / T computed exactly
        if variant != "log":
            with mpmath.workdps(DPS):
                exact = [mpmath.exp(e) for e in exact]
        errs += mp_ulp_errors(res.values[i], exact, fmt)
    assert errs and max(errs) <= MAX_ULP
    # and it is not the T = 1 answer
    assert not np.array_equal(res.values, compute(x, variant).values)


def test_temperature_wide_rows_float64():
    rng = np.random.default_rng(12)
    x = rng.normal(0, 300, (40, 2 * ONLINE_BLOCK + 5))
    for variant in ACCURATE:
        got = compute(x, variant, temperature=7.3).values
        assert measured_ulps(got, x, "float64", variant, temperature=7.3) <= MAX_ULP


def test_axis_and_3d_inputs():
    rng = np.random.default_rng(13)
    x = rng.normal(0, 20, (3, 5, 4))
    for axis in (0, 1, 2, -1, -2, -3):
        got = softmax(x, axis=axis)
        assert got.shape == x.shape
        moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
        p, _ = exact_softmax(moved)
        want = p.reshape(np.moveaxis(x, axis, -1).shape)
        err = ulp_error(np.moveaxis(got, axis, -1), want, FORMATS["float64"])
        assert err.max() <= MAX_ULP, axis
        np.testing.assert_allclose(got.sum(axis=axis), 1.0, rtol=1e-15)
    m = rng.normal(0, 3, (4, 6))
    np.testing.assert_array_equal(softmax(m, axis=0), softmax(m.T).T)
    np.testing.assert_array_equal(log_softmax(m, axis=0), log_softmax(m.T).T)
    with pytest.raises(ValueError):
        softmax(m, axis=2)
    with pytest.raises(ValueError):
        softmax(m, axis=-3)


@pytest.mark.parametrize("int_dtype", (np.int8, np.int32, np.int64, np.uint16))
def test_integer_inputs(int_dtype):
    x = np.array([[1, 2, 3], [100, 0, 5], [7, 7, 7]], dtype=int_dtype)
    for variant in ACCURATE:
        got = compute(x, variant).values
        assert got.dtype == np.float64
        assert measured_ulps(got, x, "float64", variant) <= MAX_ULP


def test_shift_invariance():
    rng = np.random.default_rng(14)
    x = np.round(rng.normal(0, 30, (50, 20)) * 1024) / 1024
    for variant in ACCURATE:
        base = compute(x, variant).values
        # a power-of-two shift of numbers on a coarse grid is exact: the same answer
        np.testing.assert_array_equal(compute(x + 2.0 ** 20, variant).values, base)
        # an inexact shift changes the input; the result still matches its own exact value
        y = x + 1234.5678
        assert measured_ulps(compute(y, variant).values, y, "float64", variant) <= MAX_ULP
        close = np.exp(base) if variant == "log" else base
        other = compute(y, variant).values
        other = np.exp(other) if variant == "log" else other
        np.testing.assert_allclose(other, close, rtol=1e-9, atol=1e-300)


# ----------------------------------------------------------------------------
# the tutorial's examples


def test_seed_examples():
    np.testing.assert_allclose(softmax([1.0, 2.0, 3.0]), [0.0900306, 0.244728, 0.665241],
                               rtol=5e-6)
    exact = mp_log_softmax([1.0, 2.0, 5.0])
    with mpmath.workdps(DPS):
        want = [float(mpmath.exp(e)) for e in exact]
    np.testing.assert_allclose(softmax([1.0, 2.0, 5.0]), want, rtol=4e-16)
    np.testing.assert_allclose(softmax([1.0, 2.0, 5.0]), [0.0171478, 0.0466126, 0.93624],
                               rtol=5e-6)
    np.testing.assert_array_equal(softmax([1000.0, 2000.0, 3000.0]), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(softmax([-1000.0, 1.0, 10000.0]), [0.0, 0.0, 1.0])
    for variant in ACCURATE:
        assert not np.isnan(softmax([1000.0, 2000.0, 3000.0], variant=variant)).any()


def test_dominant_log_probability_keeps_relative_accuracy():
    exact = float(mp_log_softmax([0.0, -40.0])[0])
    assert exact == pytest.approx(-4.248354255291589e-18, rel=1e-15)
    got = log_softmax([0.0, -40.0])
    assert got[0] != 0.0
    assert abs(got[0] - exact) <= 4 * np.spacing(abs(exact))
    with np.errstate(divide="ignore"):
        assert np.log(softmax([0.0, -40.0]))[0] == 0.0  # what log(softmax) gives
    assert scipy.special.log_softmax([0.0, -40.0])[0] == 0.0  # and the textbook form
    got32 = log_softmax(np.array([0.0, -20.0], dtype=np.float32))
    assert got32.dtype == np.float32 and got32[0] < 0


def test_textbook_max_shift_errs_where_smx_does_not():
    """Regression guard for our edge: fl(x - max) costs numpy/scipy hundreds of ulps."""
    rng = np.random.default_rng(15)
    x = rng.uniform(-350, 350, (400, 16))  # x and max of different binades: x - max rounds
    p, _ = exact_softmax(x)
    fmt = FORMATS["float64"]
    normal = p >= fmt.smallest_normal
    d = x - x.max(axis=1, keepdims=True)
    e = np.exp(d)
    numpy_way = e / e.sum(axis=1, keepdims=True)
    textbook = {
        "numpy": ulp_error(numpy_way, p, fmt)[normal].max(),
        "scipy": ulp_error(scipy.special.softmax(x, axis=1), p, fmt)[normal].max(),
    }
    ours = ulp_error(softmax(x), p, fmt)[normal].max()
    assert textbook["numpy"] > 50 and textbook["scipy"] > 50, textbook
    assert ours <= MAX_ULP


# ----------------------------------------------------------------------------
# emulation


def test_emulated_float16_naive_overflows():
    x = np.array([[1000.0, 2000.0, 3000.0]])
    res = compute(x, "naive", dtype="float16")
    assert res.emulated and res.values.dtype == np.float16
    assert res.stats.exp_overflow > 0
    assert np.isnan(res.values).all()
    # float16's exp overflows above log(65504) ~ 11.09 even unshifted small rows
    small = compute(np.array([[10.0, 12.0]]), "naive", dtype="float16")
    assert small.stats.exp_overflow == 1 and np.isnan(small.values[0, 1])


def test_emulated_bfloat16_works():
    x = np.array([[1000.0, 2000.0, 3000.0], [1.0, 2.0, 3.0]])
    res = compute(x, "stable", dtype="bfloat16")
    assert res.values.dtype == np.dtype(ml_dtypes.bfloat16)
    assert res.stats.exp_overflow == 0
    np.testing.assert_array_equal(res.values[0].astype(np.float64), [0, 0, 1])
    # bfloat16 keeps 8 bits: right to ~2**-8, not to float64 accuracy
    np.testing.assert_allclose(res.values[1].astype(np.float64), softmax([1.0, 2.0, 3.0]),
                               rtol=2 ** -7)
    assert not np.array_equal(res.values[1].astype(np.float64), softmax([1.0, 2.0, 3.0]))
    # naive bfloat16 has float32's range: exp(88) is finite, exp(89) is not
    assert compute(np.array([[80.0, 88.0]]), "naive", dtype="bfloat16").stats.exp_overflow == 0


def test_emulated_float16_rounds_every_operation():
    """The chop simulation, written out by hand in numpy's float16."""
    x = np.array([0.1, 1.3, 2.7, 3.3])
    h = x.astype(np.float16)
    e = np.exp(h.astype(np.float32)).astype(np.float16)
    s = np.float16(0)
    for v in e:
        s = np.float16(np.float32(s) + np.float32(v))
    want = (e.astype(np.float32) / np.float32(s)).astype(np.float16)
    got = compute(x[None, :], "naive", dtype="float16").values[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", ("stable", "naive", "online", "log", "lse"))
def test_emulated_variants_are_close_in_their_precision(variant):
    rng = np.random.default_rng(16)
    x = rng.normal(0, 2, (20, 30))
    for dtype, tol in (("float16", 2 ** -7), ("bfloat16", 2 ** -4), ("float32", 1e-5)):
        got = compute(x, variant, dtype=dtype).values.astype(np.float64)
        want = log_softmax(x) if variant == "log" else softmax(x)
        if variant == "log":
            np.testing.assert_allclose(got, want, atol=tol * 20)
        else:
            np.testing.assert_allclose(got, want, rtol=tol * 8, atol=1e-3 * tol)


def test_emulated_inf_row_is_nan_and_masked_zeros():
    x = np.array([[1.0, np.inf], [-np.inf, -np.inf]])
    res = compute(x, "stable", dtype="float16")
    assert np.isnan(res.values[0]).all()  # inf - inf, as a framework does
    assert np.isnan(res.values[1]).all()
    z = compute(x, "stable", dtype="float16", masked="zeros").values
    np.testing.assert_array_equal(z[1], [0, 0])


# ----------------------------------------------------------------------------
# logsumexp


def test_logsumexp_against_mpmath():
    rng = np.random.default_rng(17)
    x = np.vstack([rng.normal(0, s, 10) for s in (1, 100, 1e4)])
    got = logsumexp(x)
    for i, row in enumerate(x):
        with mpmath.workdps(DPS):
            exact = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in row))
            ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(abs(exact), 2)) - 52)
            assert float(abs(mpmath.mpf(float(got[i])) - exact) / ulp) <= MAX_ULP
    assert float(logsumexp([1000.0, 1000.0])) == pytest.approx(1000 + math.log(2), rel=1e-16)
    t = logsumexp(np.array([2.0, 4.0]), temperature=2.0)
    assert float(t) == pytest.approx(math.log(math.e + math.e ** 2), rel=1e-15)


def test_logsumexp_special_rows():
    inf, nan = np.inf, np.nan
    got = logsumexp(np.array([[1.0, inf], [nan, 1.0], [-inf, -inf], [-inf, 2.0]]))
    assert got[0] == inf
    assert np.isnan(got[1])
    assert got[2] == -inf
    assert got[3] == 2.0
    np.testing.assert_array_equal(logsumexp(np.zeros((3, 0))), [-inf, -inf, -inf])
    assert logsumexp(np.zeros((0, 3))).shape == (0,)
    assert logsumexp(np.array([], dtype=np.float64)) == -inf
    assert logsumexp(np.zeros((2, 3, 4)), axis=1).shape == (2, 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        softmax([1.0], variant="fast")
    with pytest.raises(ValueError, match="temperature"):
        softmax([1.0], temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        softmax([1.0], temperature=np.inf)
    with pytest.raises(ValueError, match="masked"):
        softmax([1.0], masked="ones")
    with pytest.raises(ValueError):
        softmax([1.0], dtype="float8")


@pytest.mark.parametrize("variant", ("stable", "online"))
def test_float64_error_budget_has_margin(variant):
    """Regression: dividing by a rounded sum (two roundings) reached 4.1 ulp on
    wide online rows; one double-double division keeps float64 under 3 ulp."""
    rng = np.random.default_rng(21)
    for x in (rng.normal(0, 3, (3000, 40)), rng.normal(0, 10, (60, 3000)),
              rng.normal(0, 30, (60, 3000))):
        assert measured_ulps(compute(x, variant).values, x, "float64", variant) <= 3.0
