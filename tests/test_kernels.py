"""Blocked, threaded and transposed kernels agree with the plain kernels."""
import ml_dtypes
import numpy as np
import pytest

from smx_cli.core import kernels, native
from smx_cli.core.precision import FORMATS, format_of, ulp_error
from smx_cli.core.reference import exact_softmax
from smx_cli.core.softmax import _accurate_block, compute, log_softmax, softmax

DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
SHAPES = ((1, 7), (7, 1), (0, 5), (5, 0), (1, 1), (33, 3), (37, 65), (3, 70000), (1001, 10))


def plain(x, variant):
    """The plain (unblocked, unthreaded) accurate kernel, rounded once."""
    fmt = format_of(x.dtype)
    kind = "logprob" if variant == "log" else "prob"
    with np.errstate(all="ignore"):
        res = _accurate_block(x.astype(np.float64), 1.0, kind, "nan", fmt.name == "float64")
    return fmt.cast(res)


def ulps(a, b, fmt):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    normal = np.abs(b) >= fmt.smallest_normal
    err = ulp_error(a, b, fmt)
    return float(err[normal].max()) if normal.any() else 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ("stable", "log"))
@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_threaded_transposed_match_plain(dtype, variant, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 4, shape).astype(dtype)
    fmt = format_of(np.dtype(dtype))
    if x.size == 0:
        assert compute(x, variant, threads=2).values.shape == x.shape
        return
    want = plain(x, variant)
    for threads in (1, 2, 3):
        got = compute(x, variant, threads=threads).values
        assert got.shape == x.shape and got.dtype == fmt.dtype
        # both within 4 ulps of exact: within 8 of each other; 16/32-bit are identical
        limit = 0 if fmt.name != "float64" else 8
        assert ulps(got, want, fmt) <= limit


def test_threads_give_identical_results():
    x = np.random.default_rng(1).normal(0, 5, (300, 700))
    for variant in ("stable", "log", "online"):
        base = compute(x, variant, threads=1).values
        for threads in (2, 5):
            np.testing.assert_array_equal(compute(x, variant, threads=threads).values, base)


def test_small_blocks_and_narrow_rows_within_4_ulp(monkeypatch):
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 64)  # many blocks, C > block
    rng = np.random.default_rng(2)
    for shape in ((13, 200), (101, 5), (5, 1000)):
        for dtype in (np.float32, np.float64):
            x = (rng.normal(0, 20, shape)).astype(dtype)
            p, lp = exact_softmax(x)
            fmt = format_of(np.dtype(dtype))
            assert ulps(compute(x, threads=2).values, p, fmt) <= 4
            assert ulps(compute(x, "log", threads=2).values, lp, fmt) <= 4


def test_special_rows_on_fast_kernels():
    inf = np.inf
    x = np.array([[1.0, inf, inf], [np.nan, 1.0, 2.0], [-inf, -inf, -inf], [-inf, 0.0, -1.0],
                  [-5.0, -inf, -6.0]])
    for dtype in (np.float32, np.float64):
        xx = x.astype(dtype)
        for variant in ("stable", "log"):
            got = compute(xx, variant).values.astype(np.float64)
            want = plain(xx, variant).astype(np.float64)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got, want, rtol=1e-6)
        z = compute(xx, masked="zeros", fast=True).values
        assert (z[2] == 0).all() and (z[0] == [0, 0.5, 0.5]).all() and np.isnan(z[1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_mode_stated_ulp_bound(dtype):
    rng = np.random.default_rng(3)
    fmt = format_of(np.dtype(dtype))
    for scale, shape in ((1, (20, 500)), (10, (20, 2000)), (3, (500, 10))):
        x = rng.normal(0, scale, shape).astype(dtype)
        p, lp = exact_softmax(x.astype(np.float64))
        bound = 2 + (x.astype(np.float64).max(1, keepdims=True) - x.astype(np.float64)) \
            + np.log2(shape[1])
        got = compute(x, fast=True).values
        assert got.dtype == fmt.dtype
        normal = np.abs(p.astype(np.float64)) >= fmt.smallest_normal
        assert (ulp_error(got, p, fmt) <= bound)[normal].all()
        gl = compute(x, "log", fast=True).values.astype(np.float64)
        ref = lp.astype(np.float64)
        assert (np.abs(gl - ref) / np.maximum(np.abs(ref), 1) / fmt.eps <= bound).all()


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_fast_mode_stated_bound_with_temperature_numpy_engine(dtype):
    """FAST_ULP_NOTE: 2 + k|x - max|/T + log2(C) ulps with k = 3 at T != 1 (the shift,
    the rounded 1/T and the product each err by |q| u); k = 2 fails on these rows."""
    rng = np.random.default_rng(3)
    fmt = format_of(np.dtype(dtype))
    for t in (0.3, 0.7, 1 / 3, 0.1, 3.7):
        x = rng.normal(0, 5, (50, 2000)).astype(dtype)
        xd = x.astype(np.float64)
        p, lp = exact_softmax(xd, temperature=t)
        bound = 2 + 3 * (xd.max(1, keepdims=True) - xd) / t + np.log2(x.shape[1])
        with native.numpy_engine():
            got = compute(x, fast=True, temperature=t)
            gl = compute(x, "log", fast=True, temperature=t).values.astype(np.float64)
        assert got.engine == "numpy"
        normal = np.abs(p.astype(np.float64)) >= fmt.smallest_normal
        assert (ulp_error(got.values, p, fmt) <= bound)[normal].all(), t
        ref = lp.astype(np.float64)
        assert (np.abs(gl - ref) / np.maximum(np.abs(ref), 1) / fmt.eps <= bound).all(), t


def test_fast_api_and_arguments():
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(softmax(x, fast=True), softmax(x), rtol=1e-6)
    np.testing.assert_allclose(log_softmax(x, fast=True), log_softmax(x), rtol=1e-6)
    assert compute(x[None], fast=True).fast
    with pytest.raises(ValueError, match="fast"):
        compute(x[None], "online", fast=True)
    with pytest.raises(ValueError, match="fast"):
        compute(x[None], fast=True, dtype="float16")


def test_out_parameter_is_filled_and_checked():
    x = np.random.default_rng(4).normal(0, 3, (50, 40)).astype(np.float32)
    out = np.empty_like(x)
    res = compute(x, out=out)
    assert res.values is out
    np.testing.assert_array_equal(out, compute(x).values)
    with pytest.raises(ValueError, match="out"):
        compute(x, out=np.empty((50, 40)))


def test_temperature_on_fast_kernels_within_4_ulp():
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        x = rng.normal(0, 10, (40, 300)).astype(dtype)
        p, lp = exact_softmax(x, temperature=3.7)
        fmt = FORMATS[np.dtype(dtype).name]
        assert ulps(compute(x, temperature=3.7, threads=2).values, p, fmt) <= 4
        assert ulps(compute(x, "log", temperature=3.7, threads=2).values, lp, fmt) <= 4
