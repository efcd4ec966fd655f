"""The one-pass compiled diagnostics counts (core/_smx_diag.c) against the numpy counts.

Both paths count the same things (zeros, subnormals, rows whose sum is off,
min/max, argmax histogram, NaN rows); the panel must not depend on the engine.
"""
from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest

from smx_cli.analysis import diagnostics
from smx_cli.analysis.diagnostics import diagnose
from smx_cli.core import native
from smx_cli.core.softmax import compute

pytestmark = pytest.mark.skipif(diagnostics._smx_diag is None, reason="_smx_diag not built")

DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)


def adversarial(dtype, rng) -> np.ndarray:
    x = rng.normal(0, 4, (60, 37))
    x[1] = 5.0                                  # all equal: argmax is the first
    x[2, :] = np.linspace(-1e4, 1e4, 37)        # huge spread: zeros
    x[3, :] = -np.inf                           # fully masked
    x[4, 5] = np.nan
    x[5, 7] = np.inf
    x[6, 3] = -np.inf                           # one masked entry
    x[7, :] = np.linspace(0, -120, 37)          # subnormal probabilities in float32
    x[8, :] = np.linspace(0, -740, 37)          # and in float64
    x[9, [4, 20]] = 30.0                        # a tie for the maximum
    x[10, [17, 6]] = 30.0                       # ... in two vector lanes: the first wins
    x[11, [36, 2]] = 30.0                       # ... in the scalar tail and a lane
    x[12, 36] = 30.0                            # the maximum in the tail only
    x[13, [35, 0]] = 30.0                       # first and last vector element
    return x.astype(dtype)


def fields(d):
    out = dataclasses.asdict(d)
    out.pop("engine")
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["stable", "log", "naive", "sparsemax"])
def test_compiled_counts_equal_the_numpy_counts(dtype, variant):
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced: only the numpy counts run")
    x = adversarial(dtype, np.random.default_rng(3))
    res = compute(x, variant) if variant != "sparsemax" else None
    if res is None:
        from smx_cli.core import registry

        res = registry.run(x, variant).result
    sparse = variant == "sparsemax"
    got = fields(diagnose(x, res, sparse=sparse))
    with native.numpy_engine():
        want = fields(diagnose(x, res, sparse=sparse))
    assert got.pop("max_sum_error") == pytest.approx(want.pop("max_sum_error"), rel=0.05,
                                                     abs=1e-16)
    assert got == want
    # the clean rows were counted by the compiled pass (emulated results never are:
    # their zeros need the careful count)
    acc = diagnostics.Accumulator(res.variant, res.fmt, res.kind, res.emulated, sparse)
    used = acc._add_native(np.ascontiguousarray(x), np.ascontiguousarray(res.values), 0)
    assert used == (not res.emulated)


def test_the_compiled_argmax_is_the_first_maximum_and_sums_are_checked():
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced")
    y = np.array([[0.25, 0.5, 0.25], [0.5, 0.5, 0.0], [0.1, 0.1, 0.1]])
    x = np.log(np.where(y > 0, y, 1e-300))
    res = compute(x)  # only its format and kind are used
    res = dataclasses.replace(res, values=y)
    d = diagnose(x, res)
    assert dict(d.argmax_counts) == {1: 1, 0: 2}
    assert d.sum_off_rows == 1 and d.max_sum_error == pytest.approx(0.7)
    assert d.underflow_to_zero == 1 and d.min_value == 0.0 and d.max_value == 0.5


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_from_finite_logits_is_not_a_clean_row(bad):
    """Values are checked in the counting pass itself: a NaN or inf value (a kernel
    bug, or values handed to diagnose) sends its row to the careful count."""
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced")
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (6, 9))
    res = compute(x)
    y = res.values.copy()
    y[2, 4] = bad
    y[5, 8] = bad  # in the scalar tail (9 = 2 vectors of 4 + 1)
    res = dataclasses.replace(res, values=y)
    got = fields(diagnose(x, res))
    with native.numpy_engine():
        want = fields(diagnose(x, res))
    assert got == want
    if bad != bad:
        assert got["output_nan_rows"] == got["produced_nan_rows"] == 2


@pytest.mark.parametrize("variant", ["stable", "log"])
def test_a_block_counted_in_parallel_pieces_equals_the_numpy_counts(variant):
    # 600 x 4000: three pieces of the diagnostics block, summarised on threads
    x = np.random.default_rng(8).normal(0, 30, (600, 4000)).astype(np.float32)
    x[17, 5] = np.nan
    x[420, :] = -np.inf
    x[599, 3] = np.inf
    res = compute(x, variant)
    got = fields(diagnose(x, res))
    with native.numpy_engine():
        want = fields(diagnose(x, res))
    assert got.pop("max_sum_error") == pytest.approx(want.pop("max_sum_error"), rel=0.05,
                                                     abs=1e-16)
    assert got == want
    # rows named by their index in the whole block, whichever piece held them
    assert got["nan_output_row_index"] == [17, 420]
    assert got["nonfinite_input_row_index"] == [17, 599]


WIDTHS = (*range(1, 41), 64, 65, 1000)


def _diag_isas():
    from native_isa import isas
    return isas(diagnostics._smx_diag) if diagnostics._smx_diag is not None else []


def hostile_rows(dtype, width, rng) -> np.ndarray:
    """Rows that reach every count of the panel at this width (12 rows + spares)."""
    fmt_tiny = float(np.finfo(np.float32 if dtype == ml_dtypes.bfloat16 else dtype).tiny)
    # a spread from 0 down past the smallest subnormal probability of the format
    deep = np.log(fmt_tiny) * 1.6
    x = rng.normal(0, 3, (14, width))
    x[1] = 2.0                                          # all equal
    x[2] = np.linspace(0, deep, width)                  # subnormal probabilities, zeros
    x[3] = -np.inf                                      # fully masked
    x[4, width // 2] = np.nan
    x[5, width - 1] = np.inf
    x[6, width // 3] = -np.inf                          # one masked entry
    x[7] = np.linspace(-1e4, 1e4, width)                # huge spread
    if width > 1:
        # logits a hair apart: their probabilities round to the same value, so the
        # output's first maximum (index 0) is not the logits' (the last index)
        x[8] = 0.0
        x[8, width - 1] = float(np.finfo(np.float32 if dtype == ml_dtypes.bfloat16
                                         else dtype).eps) * 2.0 ** -10
        x[9, [width - 1, 0]] = 40.0                     # a tie: first and last
    x[10, rng.integers(0, width)] = 50.0                # one dominant entry
    return x.astype(dtype)


def _compare(x, res):
    """The compiled counts equal numpy's; max |sum - 1| to the compiled pass's
    stated accuracy: 2^-30 absolute for 16/32-bit results (exp_small's 2^-31
    relative error per term of a sum near 1), 2^-50 for float64 ones (each
    path's exp within ~1 u per term: 2^-52 of the sum, and numpy's split sum)."""
    got = fields(diagnose(x, res))
    with native.numpy_engine():
        want = fields(diagnose(x, res))
    tol = 2.0 ** -50 if res.fmt.name == "float64" else 2.0 ** -30
    assert got.pop("max_sum_error") == pytest.approx(want.pop("max_sum_error"), rel=1e-3,
                                                     abs=tol)
    assert got == want
    return got


@pytest.mark.parametrize("isa", _diag_isas())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["stable", "log"])
def test_every_width_and_copy_counts_as_numpy_does(isa, dtype, variant):
    """Widths around every vector tail (4, 8, 16 lanes), on each CPU copy of the
    pass; the kernel's own values, then values pushed off by 10 eps in some rows
    (the accurate kernels never are), negative / above-0 values, zeros."""
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced: only the numpy counts run")
    from native_isa import isa as pin
    rng = np.random.default_rng(11)
    ties = 0
    with pin(isa, diagnostics._smx_diag):
        for width in WIDTHS:
            x = hostile_rows(dtype, width, rng)
            res = compute(x, variant)
            got = _compare(x, res)
            assert got["inputs"]["rows"] == 14 and got["sum_off_rows"] == 0
            if width > 1:
                # the tie after rounding: counted at the output's first maximum
                y = res.values[8]
                assert np.argmax(np.asarray(x[8], np.float64)) == width - 1
                ties += bool(y[0] == y[-1])
            y = np.asarray(res.values, dtype=np.float64).copy()
            eps = res.fmt.eps
            if variant == "stable":
                y[0] *= 1 + 10 * eps                     # off by ~10 eps
                y[10] *= 1 - 10 * eps
                y[11, 0] = -y[11, 0]                     # a negative value
                y[12, width // 2] = 0.0                  # a zero
            else:
                y[0] += 10 * eps
                y[10] -= 10 * eps
                y[11, 0] = 0.5                           # a log-probability above 0
            off = dataclasses.replace(res, values=y.astype(dtype))
            got = _compare(x, off)
            if width >= 4:
                assert got["sum_off_rows"] >= 2
    assert ties >= 0.9 * (len(WIDTHS) - 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["stable", "log"])
def test_zero_rows_and_one_column(dtype, variant):
    for shape in ((0, 5), (0, 1), (3, 1), (1, 1)):
        x = np.random.default_rng(2).normal(0, 1, shape).astype(dtype)
        _compare(x, compute(x, variant))


def test_the_argmax_histogram_is_taken_once_per_row_across_threads():
    """Pieces summarised on two threads add into per-thread histograms: every clean
    row is counted exactly once (the total is the number of rows not NaN/masked)."""
    x = np.random.default_rng(9).normal(0, 3, (700, 3000)).astype(np.float32)
    x[5] = -np.inf
    d = diagnose(x, compute(x), top_classes=3000)
    assert sum(n for _, n in d.argmax_counts) == 699


@pytest.mark.parametrize("isa", _diag_isas())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["stable", "log"])
def test_logits_read_only_where_needed_when_the_kernel_saw_no_nan(isa, dtype, variant):
    """No NaN / +inf logit in the block (the kernel's count is 0): the pass reads
    the logits only of rows with a 0 probability. -inf entries, fully masked rows
    given zeros, underflowed entries and a temperature still count as numpy does."""
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced: only the numpy counts run")
    from native_isa import isa as pin
    rng = np.random.default_rng(12)
    with pin(isa, diagnostics._smx_diag):
        for width in WIDTHS:
            x = hostile_rows(dtype, width, rng)
            x[4, width // 2] = -np.inf                   # no NaN / +inf rows now
            x[5, width - 1] = -np.inf
            for masked, t in (("zeros", 1.0), ("nan", 0.7)):
                res = compute(x, variant, temperature=t, masked=masked)
                want_trusted = masked == "zeros"  # under "nan" the masked row is NaN
                assert (res.stats.nonfinite_input_rows == 0) == want_trusted
                got = _compare(x, res)
                assert got["inputs"]["neg_inf"] == int(np.isneginf(
                    np.asarray(x, np.float64)).sum())


@pytest.mark.parametrize("isa", _diag_isas())
def test_float64_log_probability_sums_against_mpmath(isa):
    """|sum(exp(y)) - 1| of float64 log-probabilities, one row at a time, against
    mpmath: within 2^-55 on the AVX-512 copy (x4_exp_lo: <= 0.06 u per term, the
    lanes' TwoSum), 2^-52 on the others (exp_acc_v: ~1 u per term)."""
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced")
    import mpmath
    from native_isa import isa as pin
    rng = np.random.default_rng(21)
    bound = 2.0 ** -55 if isa == "avx512" else 2.0 ** -52
    mpmath.mp.prec = 200
    with pin(isa, diagnostics._smx_diag):
        for width in (1, 7, 8, 9, 17, 1000):
            for scale in (1.0, 6.0, 300.0):
                x = rng.normal(0, scale, (1, width))
                res = compute(x, "log")
                y = res.values
                if width > 8:   # values pushed off a little, and one far below -708
                    y = y + rng.normal(0, 1e-15, y.shape)
                    y[0, 3] = -800.0
                    res = dataclasses.replace(res, values=y)
                exact = abs(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in y[0]) - 1)
                got = diagnose(x, res).max_sum_error
                assert abs(got - float(exact)) <= bound, (width, scale, got, float(exact))


@pytest.mark.parametrize("isa", _diag_isas())
@pytest.mark.parametrize("width", [31744, 1000, 37])
def test_every_float16_value_is_loaded_exactly(isa, width):
    """All 31744 non-negative finite float16 values as probabilities (rows of
    ``width``): their float64 sums are exact (multiples of 2^-24 below 2^29), so
    max |sum - 1|, min, max, zeros and subnormals equal numpy's exactly."""
    if native.engine() == "numpy":
        pytest.skip("the numpy engine is forced")
    from native_isa import isa as pin
    v = np.arange(0x7c00, dtype=np.uint16).view(np.float16)
    v = np.concatenate([v, np.zeros(-len(v) % width, np.float16)]).reshape(-1, width)
    x = np.zeros(v.shape, np.float16)
    res = dataclasses.replace(compute(x), values=v)
    with pin(isa, diagnostics._smx_diag):
        got = fields(diagnose(x, res))
    with native.numpy_engine():
        want = fields(diagnose(x, res))
    assert got == want and got["subnormal"] == 1023
