"""smx_cli.analysis.compare: every variant x format against the exact reference.

The paper's figures (Blanchard, Higham & Higham 2021) on the MNIST logits, and
constructed inputs whose overflow, underflow and error follow from the formats'
thresholds.
"""
import os

import ml_dtypes
import numpy as np
import pytest

from conftest import SAMPLES
from smx_cli.analysis.compare import (ALL_VARIANTS, SEED_ROWS, ULP_OK, WORST_COLUMNS, check_names,
                             compare_stability, normal_sample, paper_row_errors, round_to,
                             scales_up_to, sweep, thresholds)
from smx_cli.core.precision import FORMATS, ulp_error
from smx_cli.core.reference import exact_softmax
from smx_cli.core.softmax import compute

MNIST = os.path.join(SAMPLES, "mnist_lenet_logits.npy")


@pytest.fixture(scope="module")
def mnist():
    return np.load(MNIST)


@pytest.fixture(scope="module")
def mnist_cmp(mnist):
    return compare_stability(mnist)


# ----------------------------------------------------------------------------
# reproducing the paper


def _chop_basic_lse_overflows(x, fmt):
    """Independent of softmax.py: the paper's basic log-sum-exp in chop arithmetic.

    exp of each float16-rounded logit rounded to float16, summed left to right
    with every addition rounded; True where the sum is inf.
    """
    xr = x.astype(fmt.dtype).astype(np.float64)
    s = np.zeros(x.shape[0])
    with np.errstate(over="ignore"):
        for col in xr.T:
            e = np.exp(col).astype(fmt.dtype).astype(np.float64)
            s = (s + e).astype(fmt.dtype).astype(np.float64)
    return np.isinf(s)


def test_paper_float16_naive_overflows_on_475_rows(mnist, mnist_cmp):
    r = mnist_cmp.report("naive", "float16")
    assert r.rows == 2500
    assert r.overflow_rows == 475
    assert r.sum_overflow_rows == 475
    assert r.failed_rows == 475
    assert r.verdict == "broken"
    # the same 475 from an independent chop implementation
    assert _chop_basic_lse_overflows(mnist, FORMATS["float16"]).sum() == 475


@pytest.mark.parametrize("variant", ["stable", "log", "online", "lse", "smx"])
def test_paper_float16_shifted_never_overflows(mnist_cmp, variant):
    r = mnist_cmp.report(variant, "float16")
    assert r.overflow_rows == 0 and r.failed_rows == 0 and r.nan == 0


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_paper_bfloat16_nothing_overflows(mnist, mnist_cmp, variant):
    r = mnist_cmp.report(variant, "bfloat16")
    assert r.overflow_rows == 0 and r.failed_rows == 0
    assert _chop_basic_lse_overflows(mnist, FORMATS["bfloat16"]).sum() == 0


def test_paper_divide_by_sum_beats_exp_x_minus_lse_in_float16(mnist, mnist_cmp):
    stable = paper_row_errors(mnist, "float16", "stable")
    lse = paper_row_errors(mnist, "float16", "lse")
    # the paper: about 2u against 8u at worst (u = 2**-11)
    assert 1.5 < stable.max() < 2.5
    assert 7.0 < lse.max() < 9.5
    assert stable.max() < lse.max()
    # the table's err/u column is the same measure
    assert mnist_cmp.report("stable", "float16").max_row_error_u == pytest.approx(stable.max())
    assert mnist_cmp.report("lse", "float16").max_row_error_u == pytest.approx(lse.max())


def test_paper_row_error_by_hand_on_one_row(mnist):
    x = mnist[:1]
    u = 2.0 ** -11
    x16 = x.astype(np.float16)
    # divide-by-sum with every step in float16, the maximum's term excluded from the sum
    d = (x16 - x16.max()).astype(np.float16)
    e = np.exp(d.astype(np.float32)).astype(np.float16)
    k = int(np.argmax(x16))
    s = np.float16(0)
    for j in range(x.shape[1]):
        if j != k:
            s = np.float16(np.float32(s) + np.float32(e[0, j]))
    e[0, k] = 1
    g = (e.astype(np.float32) / np.float32(np.float16(1 + np.float32(s)))).astype(np.float16)
    p, _ = exact_softmax(x16.astype(np.float64))
    p = p.astype(np.float64)
    want = np.abs(g.astype(np.float64) - p).max() / (u * p.max())
    assert paper_row_errors(x, "float16", "stable")[0] == pytest.approx(want)


# ----------------------------------------------------------------------------
# thresholds


def test_thresholds_are_computed_from_the_formats():
    assert thresholds("float16").exp_overflow == pytest.approx(11.0898664)
    assert thresholds("float32").exp_overflow == pytest.approx(88.7228391)
    assert thresholds("bfloat16").exp_overflow == pytest.approx(88.7189, abs=1e-4)
    assert thresholds("float64").exp_overflow == pytest.approx(709.782712893384)
    assert thresholds("float16").exp_overflow_in_format == 11.0859375
    assert thresholds("bfloat16").exp_overflow_in_format == 88.5
    for name, fmt in FORMATS.items():
        th = thresholds(name)
        v = th.exp_overflow_in_format
        a = np.array([v], dtype=fmt.dtype)
        up = a.copy()
        up.view(np.dtype(f"u{fmt.dtype.itemsize}"))[0] += 1     # the next number of the format
        assert float(up.astype(np.float64)[0]) > v
        with np.errstate(over="ignore"):
            ok = fmt.round(np.exp(a.astype(fmt.compute)))
            bad = fmt.round(np.exp(up.astype(fmt.compute)))
        assert np.isfinite(ok).all() and np.isinf(bad).all(), name
        assert th.max == fmt.max and th.unit_roundoff == fmt.unit_roundoff


# ----------------------------------------------------------------------------
# counts on constructed inputs


def test_entry_overflow_just_above_the_threshold_float16():
    t = thresholds("float16").exp_overflow_in_format       # 11.0859375
    above = 11.1015625                                     # the next float16
    x = np.array([[0.0, t], [0.0, above], [0.0, 12.0], [0.0, 5.0]])
    r = compare_stability(x, ["naive", "stable"], ["float16"]).report("naive", "float16")
    assert r.overflow_rows == 2 and r.exp_overflow == 2
    assert r.failed_rows == 2
    assert r.nan == 2                     # inf/inf in each overflowed row, 1/inf = 0 beside it
    assert r.verdict == "broken"
    assert r.worst.index in (1, 2) and np.isnan(r.worst.output).any()
    s = compare_stability(x, ["stable"], ["float16"]).report("stable", "float16")
    assert s.overflow_rows == s.failed_rows == s.nan == 0


def test_sum_overflow_without_entry_overflow_gives_zeros_and_fails():
    # exp(11) = 59874 fits in float16, but 2 * 59874 does not
    x = np.array([[11.0, 11.0], [1.0, 2.0]])
    r = compare_stability(x, ["naive"], ["float16"]).report("naive", "float16")
    assert r.exp_overflow == 0 and r.sum_overflow_rows == 1
    assert r.overflow_rows == 1 and r.failed_rows == 1 and r.nan == 0
    assert r.worst.index == 0 and r.worst.output == [0.0, 0.0]
    # float32 holds it
    r32 = compare_stability(x, ["naive"], ["float32"]).report("naive", "float32")
    assert r32.overflow_rows == 0 and r32.verdict in ("ok", "inaccurate")


def test_overflow_rows_located_among_many(mnist):
    x = mnist[:300]
    r = compare_stability(x, ["naive"], ["float16"]).report("naive", "float16")
    want = _chop_basic_lse_overflows(x, FORMATS["float16"]).sum()
    assert want > 0
    assert r.overflow_rows == want


def test_underflow_counts_zeros_whose_reference_is_normal():
    # float32: exp(-110) -> 0, exp(-90) subnormal; p = [0, 1], exact p0 = e^-20 (normal)
    x = np.array([[-110.0, -90.0], [1.0, 2.0]])
    r = compare_stability(x, ["naive", "stable"], ["float32"]).report("naive", "float32")
    assert r.underflow == 1 and r.failed_rows == 0 and r.nan == 0
    assert r.max_ulp > 2 ** 20            # a normal number returned as 0
    assert r.verdict == "inaccurate"
    assert r.worst.index == 0
    s = compare_stability(x, ["stable"], ["float32"]).report("stable", "float32")
    assert s.underflow == 0 and s.max_ulp <= ULP_OK and s.verdict == "ok"


def test_all_underflow_gives_nan_row():
    # every exp underflows in float16: 0/0
    x = np.array([[-20.0, -20.5]])
    r = compare_stability(x, ["naive"], ["float16"]).report("naive", "float16")
    assert r.nan == 2 and r.failed_rows == 1 and r.overflow_rows == 0


def test_seed_story():
    c = compare_stability(SEED_ROWS)
    for dt in ("float16", "bfloat16", "float32", "float64"):
        r = c.report("naive", dt)
        # [1000,2000,3000] and [-1000,1,10000] overflow in every format
        assert r.overflow_rows == 2 and r.failed_rows == 2 and r.verdict == "broken"
        assert r.worst.index == 2 and all(np.isnan(r.worst.output))
        assert r.worst.reference == [0.0, 0.0, 1.0]
        for v in ("stable", "log", "online", "smx"):
            assert c.report(v, dt).failed_rows == 0
            assert c.report(v, dt).verdict == "ok"
    # [-1000, 1, 10000]: exp(10000) and exp(1) overflow/not: 4 overflowed entries
    assert c.report("naive", "float16").exp_overflow == 4
    assert c.report("naive", "float16").nan == 4


def test_known_bad_algorithm_exceeds_threshold():
    # exp(x - lse): lse ~ 1000 carries an absolute error of ~1000u, which exp
    # turns into a relative error of hundreds of ulps; x - max is exact
    x = np.array([[1000.0, 1000.5, 999.0, 997.25]])
    c = compare_stability(x, ["lse", "stable", "smx"], ["float32"])
    assert c.report("lse", "float32").max_ulp > 50
    # ... which its own error bound predicts (the |f| u term): within it, so "ok",
    # and the /bound ratio says how close it came
    assert c.report("lse", "float32").verdict == "ok"
    assert 0.1 < c.report("lse", "float32").max_bound_ratio <= 1
    assert c.report("stable", "float32").max_ulp <= ULP_OK
    assert c.report("smx", "float32").max_ulp <= ULP_OK


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_accurate_row_within_4_ulp(dtype):
    rng = np.random.default_rng(7)
    x = np.vstack([rng.standard_normal((40, 16)) * 3, rng.standard_normal((20, 16)) * 30])
    r = compare_stability(x, ["smx"], [dtype]).report("smx", dtype)
    assert r.failed_rows == 0 and r.max_ulp <= ULP_OK and r.verdict == "ok"
    assert r.median_ulp <= r.max_ulp


def _by_hand(x, variant, dtype):
    """The table's numbers recomputed directly (no failed rows in x)."""
    fmt = FORMATS[dtype]
    xr = x.astype(fmt.dtype)
    p, lp = exact_softmax(xr.astype(np.float64))
    res = compute(xr, variant, 1.0, dtype)
    v = res.values.astype(np.float64)
    g = np.exp(v) if variant == "log" else v
    normal = p >= fmt.smallest_normal
    e = ulp_error(g, p, fmt)[normal]
    pf = p.astype(np.float64)
    if variant == "log":
        dl = np.abs(v - lp.astype(np.float64)).max()
    else:
        with np.errstate(divide="ignore"):
            dl = np.abs(np.log(g) - lp.astype(np.float64))[normal].max()
    return dict(max_ulp=e.max(), median_ulp=np.median(e),
                max_sum_error=np.abs(g.sum(axis=1) - 1).max(),
                max_row_error_u=(np.abs(g - pf).max(1) / (fmt.unit_roundoff * pf.max(1))).max(),
                max_logp_error=dl)


@pytest.mark.parametrize("variant,dtype", [("stable", "float16"), ("log", "bfloat16"),
                                           ("lse", "float32"), ("online", "float64")])
def test_error_columns_match_direct_computation(mnist, variant, dtype):
    x = mnist[:200]
    r = compare_stability(x, [variant], [dtype]).report(variant, dtype)
    want = _by_hand(x, variant, dtype)
    for key, val in want.items():
        assert getattr(r, key) == pytest.approx(val, rel=1e-12), key


def test_log_variant_compares_log_probabilities_of_the_tail():
    # float16: p = e^-30 is far below the normal range, but log p = -30 is fine
    x = np.array([[0.0, -30.0, -0.5]])
    c = compare_stability(x, ["log", "stable"], ["float16"])
    lg, st = c.report("log", "float16"), c.report("stable", "float16")
    _, lp = exact_softmax(x.astype(np.float16).astype(np.float64))
    got = compute(x.astype(np.float16), "log", 1.0, "float16").values.astype(np.float64)
    assert lg.max_logp_error == pytest.approx(np.abs(got - lp.astype(np.float64)).max())
    assert lg.max_logp_error < 0.02          # the tail entry's log is kept
    assert st.underflow == 0                 # its exact p is subnormal: not counted


def test_skipped_rows_are_counted_not_judged():
    x = np.array([[1.0, 2.0], [np.nan, 1.0], [np.inf, 1.0], [70000.0, 1.0],
                  [-np.inf, -np.inf]])
    c = compare_stability(x, ["naive", "stable"], ["float16", "float32"])
    r16, r32 = c.report("stable", "float16"), c.report("stable", "float32")
    assert (r16.rows, r16.skipped_rows, r16.out_of_range_rows) == (1, 4, 1)
    assert (r32.rows, r32.skipped_rows, r32.out_of_range_rows) == (2, 3, 0)
    assert r16.failed_rows == 0
    # 70000 is in float32 range, and naive overflows on it there
    assert c.report("naive", "float32").overflow_rows == 1


def test_temperature_reaches_the_computation():
    x = np.array([[0.0, 20.0]])
    hot = compare_stability(x, ["naive"], ["float16"], temperature=1.0).report("naive", "float16")
    cool = compare_stability(x, ["naive"], ["float16"], temperature=2.0).report("naive", "float16")
    assert hot.overflow_rows == 1 and cool.overflow_rows == 0
    c = compare_stability(x, ["smx"], ["float64"], temperature=2.0)
    assert c.temperature == 2.0
    assert c.report("smx", "float64").max_ulp <= ULP_OK   # against softmax(x / 2)


def test_worst_row_of_a_wide_row_keeps_the_nan_columns():
    x = np.zeros((2, 40))
    x[1, 5] = 12.0          # overflows in float16
    x[1, 30] = 11.9
    r = compare_stability(x, ["naive"], ["float16"]).report("naive", "float16")
    w = r.worst
    assert w.index == 1 and len(w.columns) == WORST_COLUMNS
    assert 5 in w.columns and 30 in w.columns
    assert np.isnan(w.output[w.columns.index(5)])


def test_round_to_and_names():
    assert round_to(np.array([[3000.0]]), "bfloat16").astype(float)[0, 0] == 3008.0
    assert round_to(np.array([[3000.0]]), "bfloat16").dtype == ml_dtypes.bfloat16
    with pytest.raises(ValueError, match="unknown variant 'fast'"):
        check_names(["fast"], ALL_VARIANTS, "variants")
    with pytest.raises(ValueError, match="no dtypes"):
        check_names([], ("float16",), "dtypes")
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        compare_stability(np.ones(3))


# ----------------------------------------------------------------------------
# the sweep


def test_scales():
    assert scales_up_to(1e6) == [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]
    assert scales_up_to(1) == [1.0]


def test_sweep_break_scales_on_a_constructed_row():
    s = sweep([[0.0, 2.0]], dtypes=["float16", "bfloat16", "float32", "float64"])
    # 2 * scale crosses 11.09 at 10, 88.5 at 100, 709.78 at 1000
    assert s.entry("naive", "float16").break_scale == 10
    assert s.entry("naive", "bfloat16").break_scale == 100
    assert s.entry("naive", "float32").break_scale == 100
    assert s.entry("naive", "float64").break_scale == 1000
    assert s.entry("naive", "float16").cause == "overflow"
    for v in ("stable", "log", "online", "lse", "smx"):
        for d in FORMATS:
            assert s.entry(v, d).break_scale is None
    # 2e5 does not fit float16 (max 65504)
    assert s.out_of_range_scale == {"float16": 1e5, "bfloat16": None, "float32": None,
                                    "float64": None}


def test_sweep_break_scales_follow_the_thresholds():
    x = normal_sample(64, 10, seed=3)
    s = sweep(x, ["naive", "stable"])
    for d in FORMATS:
        th = thresholds(d)
        e = s.entry("naive", d)
        assert e.break_scale is not None
        before = e.break_scale / 10
        # nothing overflows one decade earlier, something can at the break
        assert (x * before).max() < th.exp_overflow_in_format
        assert e.max_logit > th.exp_overflow - np.log(x.shape[1])
        assert s.entry("stable", d).break_scale is None
    # the first scale where a logit leaves float16's range
    first = next(sc for sc in s.scales if np.abs(x * sc).max() >= 65520)
    assert s.out_of_range_scale["float16"] == first
    assert s.max_logit[0] == pytest.approx(np.abs(x).max())


def test_sweep_stops_when_everything_broke():
    s = sweep([[0.0, 2.0]], ["naive"], ["float16"], max_scale=1e6)
    assert s.scales == [1.0, 10.0]
    s = sweep([[0.0, 2.0]], ["naive", "stable"], ["float16"], max_scale=1e3)
    assert s.scales[-1] == 1e3 and s.max_scale == 1e3


def test_sweep_temperature():
    s = sweep([[0.0, 2.0]], ["naive"], ["float16"], temperature=10.0)
    assert s.entry("naive", "float16").break_scale == 100
