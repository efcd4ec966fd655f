"""Property-based tests of the Python API (hypothesis): random shapes, dtypes and
values, with +-inf and NaN. What must always hold:

* probabilities are in [0, 1] (or NaN where the row holds a NaN / is masked);
* a finite row of the accurate path sums to 1 within 4 ulps (plus the
  underflowed entries' share), as the README states for every entry;
* log-softmax <= 0, and exp(log-softmax) agrees with softmax;
* logsumexp lies in [max, max + log C];
* cross-entropy >= 0;
* nothing raises except the documented ValueError for a bad argument.

The budget is modest (CI): about 10 s for the file. Raise it with
``HYPOTHESIS_PROFILE=long``.
"""
from __future__ import annotations

import math
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from smx_cli.core.softmax import VARIANTS as ALL_VARIANTS
from smx_cli.core.softmax import compute, log_softmax, logsumexp, softmax
from smx_cli.core.xent import cross_entropy


settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64), BF16]
EMULATED = ["float16", "bfloat16", "float32", "float64"]
VARIANTS = tuple(ALL_VARIANTS)
ACCURATE = ("stable", "log", "online")  # the README's 4-ulp promise (no --dtype)


def _eps(dt: np.dtype) -> float:
    return float(ml_dtypes.finfo(dt).eps)


def _tiny(dt: np.dtype) -> float:
    return float(ml_dtypes.finfo(dt).smallest_normal)


@st.composite
def logits(draw, min_cols=1, max_cols=9, specials=True, dtypes=DTYPES):
    """An (N, C) array of a random float dtype: ordinary values, huge ones,
    and (optionally) +-inf and NaN."""
    dt = draw(st.sampled_from(dtypes))
    n = draw(st.integers(0, 5))
    c = draw(st.integers(min_cols, max_cols))
    big = float(ml_dtypes.finfo(dt).max)
    finite = st.one_of(
        st.floats(-30, 30),
        st.floats(-big, big, allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, -0.0, 1e-40, -1e4, 1e4, 88.7, 709.0, -745.0]),
    )
    elems = st.one_of(finite, st.sampled_from([np.inf, -np.inf, np.nan])) if specials else finite
    vals = draw(hnp.arrays(np.float64, (n, c), elements=elems))
    with np.errstate(over="ignore", invalid="ignore"):
        x = vals.astype(dt)
    if not specials:
        x = np.where(np.isfinite(x.astype(np.float64)), x, np.zeros_like(x))
    return x


def _f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def _finite_rows(x) -> np.ndarray:
    return np.isfinite(_f64(x)).all(axis=-1)


@settings.get_profile(PROFILE)
@given(x=logits(), variant=st.sampled_from(VARIANTS),
       temperature=st.sampled_from([1.0, 0.5, 3.0, 1e-3]))
def test_softmax_probabilities_in_unit_interval(x, variant, temperature):
    p = softmax(x, variant=variant, temperature=temperature)
    assert p.shape == x.shape and p.dtype == x.dtype
    v = _f64(p)
    if variant == "log":  # log-probabilities, as smx softmax --variant log shows
        with np.errstate(over="ignore"):
            v = np.exp(v)
    ok = ~np.isnan(v)
    assert np.all((v[ok] >= 0) & (v[ok] <= 1))
    # a NaN in the input makes its whole row NaN; a row without NaN has no NaN
    # unless it is fully masked (all -inf)
    xf = _f64(x)
    nan_rows = np.isnan(xf).any(axis=-1)
    masked = (xf == -np.inf).all(axis=-1) & (xf.shape[-1] > 0)
    assert np.all(np.isnan(v[nan_rows]))
    if variant in ACCURATE:
        assert not np.isnan(v[~nan_rows & ~masked]).any()


@settings.get_profile(PROFILE)
@given(x=logits(), variant=st.sampled_from(ACCURATE))
def test_accurate_row_sums_within_stated_ulps(x, variant):
    p = softmax(x, variant=variant)
    v = _f64(p)
    if variant == "log":  # log-probabilities: their exp, rounded to the format, sums to 1
        with np.errstate(over="ignore"):
            v = _f64(np.exp(_f64(p)).astype(p.dtype))
    eps, tiny = _eps(p.dtype), _tiny(p.dtype)
    for i in np.flatnonzero(_finite_rows(x)):
        # each entry within 4 ulps (<= 4 eps relative) of its exact value;
        # entries whose exact value is subnormal or underflows may lose all of it
        bound = 4 * eps * (1 + eps) + x.shape[1] * tiny
        if variant == "log":
            # exp of a log-probability rounded to the format: |log p| eps more per entry
            bound += 2 * eps * float(np.sum(v[i] * np.abs(np.log(np.maximum(v[i], 1e-300)))))
        assert abs(math.fsum(v[i]) - 1) <= bound, (x[i], v[i])


@settings.get_profile(PROFILE)
@given(x=logits(), temperature=st.sampled_from([1.0, 0.25, 4.0]))
def test_log_softmax_nonpositive_and_agrees_with_softmax(x, temperature):
    lp = log_softmax(x, temperature=temperature)
    p = softmax(x, temperature=temperature)
    assert lp.dtype == p.dtype and lp.shape == x.shape
    lv, pv = _f64(lp), _f64(p)
    assert np.all(np.isnan(lv) | (lv <= 0))
    assert np.array_equal(np.isnan(lv), np.isnan(pv))
    eps, tiny = _eps(p.dtype), _tiny(p.dtype)
    ok = ~np.isnan(lv)
    with np.errstate(over="ignore"):
        e = np.exp(lv[ok])
    with np.errstate(invalid="ignore"):
        rel = np.where(pv[ok] > 0, np.maximum(1.0, np.abs(lv[ok])) * pv[ok], 0.0)
    tol = 8 * eps * rel + 2 * tiny
    assert np.all(np.abs(e - pv[ok]) <= tol)
    # the log variant of softmax gives the log-probabilities, as the CLI's --variant log
    lv2 = _f64(softmax(x, variant="log", temperature=temperature))
    assert np.array_equal(lv2, lv, equal_nan=True)
    # and compute's log variant returns the same log-probabilities
    if x.shape[0] and x.shape[1]:
        res = compute(x, "log", temperature)
        assert res.kind == "logprob"
        np.testing.assert_array_equal(_f64(res.values), lv)


@settings.get_profile(PROFILE)
@given(x=logits())
def test_fast_mode_is_a_probability(x):
    p = _f64(softmax(x, fast=True))
    ok = ~np.isnan(p)
    assert np.all((p[ok] >= 0) & (p[ok] <= 1))
    assert np.all(np.isnan(p[np.isnan(_f64(x)).any(axis=-1)]))


@settings.get_profile(PROFILE)
@given(x=logits(min_cols=1))
def test_logsumexp_between_max_and_max_plus_log_c(x):
    lse = _f64(logsumexp(x))
    xf = _f64(x)
    for i in np.flatnonzero(_finite_rows(x)):
        m = xf[i].max()
        slack = 8 * np.finfo(np.float64).eps * max(1.0, abs(m)) + 8 * _eps(x.dtype) * max(1, abs(m))
        assert m - slack <= lse[i] <= m + math.log(x.shape[1]) + slack


@settings.get_profile(PROFILE)
@given(x=logits(max_cols=6), variant=st.sampled_from(VARIANTS),
       dtype=st.sampled_from(EMULATED), masked=st.sampled_from(["nan", "zeros"]))
def test_emulated_compute_stays_a_probability_or_nan(x, variant, dtype, masked):
    """Under --dtype a framework's arithmetic may overflow to NaN; it never
    leaves [0, 1], never raises."""
    assume(x.shape[1] > 0)
    res = compute(x.reshape(-1, x.shape[1]), variant, 1.0, dtype, masked)
    v = _f64(res.values)
    if res.kind == "logprob":
        assert np.all(np.isnan(v) | (v <= 0))
        v = np.exp(v)
    ok = ~np.isnan(v)
    assert np.all((v[ok] >= 0) & (v[ok] <= 1 + 1e-12))
    # a finite row of a shifted variant in range of the format sums to 1 loosely
    # (lse and log may not: in float16, logsumexp([1e4, 1e4]) rounds to 1e4 and
    # both entries come out 1 -- what a framework computing so really gets)
    if variant in ("stable", "online"):
        eps = float(ml_dtypes.finfo(np.dtype(getattr(ml_dtypes, dtype, None) or dtype)).eps)
        for i in np.flatnonzero(_finite_rows(x) & ~np.isnan(v).any(axis=-1)):
            assert abs(math.fsum(v[i]) - 1) <= (x.shape[1] + 8) * eps * 4


@settings.get_profile(PROFILE)
@given(x=logits(specials=False, min_cols=1, max_cols=6, dtypes=[np.dtype(np.float32)]),
       data=st.data(), smoothing=st.sampled_from([0.0, 0.1, 1.0]),
       reduction=st.sampled_from(["none", "mean", "sum"]))
def test_cross_entropy_nonnegative(x, data, smoothing, reduction):
    n, c = x.shape
    assume(n > 0)
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    loss = np.atleast_1d(_f64(cross_entropy(x, labels, reduction=reduction,
                                            label_smoothing=smoothing)))
    assert np.all(np.isnan(loss) | (loss >= 0))
    if reduction == "none":
        assert loss.shape == (n,) and not np.isnan(loss).any()
    # probability targets: H(t, p) >= 0 as well (C > 1: an (N, 1) target is
    # read as a column of class indices)
    if c == 1:
        return
    t = np.abs(_f64(data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0, 1)))))
    t[t.sum(axis=1) == 0, 0] = 1
    t /= t.sum(axis=1, keepdims=True)
    loss = np.atleast_1d(_f64(cross_entropy(x, t, reduction="none", label_smoothing=smoothing)))
    assert np.all(loss >= -1e-12)


@settings.get_profile(PROFILE)
@given(x=logits(max_cols=5, dtypes=[np.dtype(np.float64)]), data=st.data())
def test_cross_entropy_with_specials_is_nonnegative_or_nan(x, data):
    n, c = x.shape
    assume(n > 0)
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    loss = _f64(cross_entropy(x, labels, reduction="none"))
    assert np.all(np.isnan(loss) | (loss >= 0))


@settings.get_profile(PROFILE)
@given(x=logits(max_cols=4), variant=st.text(max_size=6), temperature=st.floats(),
       masked=st.text(max_size=5), dtype=st.one_of(st.none(), st.text(max_size=8)))
def test_only_documented_exceptions(x, variant, temperature, masked, dtype):
    """Arbitrary option values: a result, or ValueError naming the bad one."""
    try:
        softmax(x, variant=variant, temperature=temperature, dtype=dtype, masked=masked)
    except ValueError as exc:
        assert str(exc)
    try:
        cross_entropy(x, np.zeros(x.shape[0], dtype=int), reduction=variant,
                      label_smoothing=temperature)
    except ValueError as exc:
        assert str(exc)


@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_result_dtype_follows_input(dt):
    x = np.array([[1.0, 2.0, 3.0]]).astype(dt)
    assert softmax(x).dtype == dt
    assert log_softmax(x).dtype == dt


def test_cross_entropy_sum_beyond_float64_range_is_inf():
    x = np.array([[0.0, 2.0**1023], [0.0, 2.0**1023]])
    assert cross_entropy(x, np.array([0, 0]), reduction="sum") == np.inf
