"""The cross-entropy gradient on the compiled core (native.xent_grad_rows) against 50-digit mpmath.

Each sample's gradient A p - a (a the loss's coefficients, A their sum) is checked entry
by entry against the exact value of the given logits and targets, within the bound
native.xent_grad_rows states: 16 * 2**-53 of |p_c (A - a_c)| + |a_c (1 - p_c)| (the two
terms the kernel subtracts), plus 2**-1070 below the normal range; in the four float
formats, class indices (weights, ignore_index, smoothing) and probability targets
(float32 and float64), on adversarial rows (saturated samples, ties, -inf entries, huge
spreads), on every CPU variant; then through ``evaluate(want_grad=True)`` with each
reduction, and the rows handed back (NaN, +-inf) identical on both engines.
"""
from __future__ import annotations


import ml_dtypes
import mpmath as mp
import numpy as np
import pytest

from smx_cli.core import native
from native_isa import isa, isas
from smx_cli.core.xent import evaluate

pytestmark = pytest.mark.skipif(not native.available(), reason="the extension is not built")

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
U = 2.0**-53
BOUND = 16 * U
TINY = 2.0**-1070


def coefficients(c, y=None, t=None, w=None, eps=0.0, ignore_index=-100):
    """a_c as mpf (index targets y or probability row t)."""
    e = mp.mpf(eps)
    wv = [mp.mpf(float(v)) for v in w] if w is not None else [mp.mpf(1)] * c
    if t is not None:
        return [wv[j] * ((1 - e) * mp.mpf(float(t[j])) + e / c) for j in range(c)]
    if y == ignore_index:
        return [mp.mpf(0)] * c
    return [e / c * wv[j] + ((1 - e) * wv[y] if j == y else 0) for j in range(c)]


def exact_grad(row, a):
    """(A p - a, the scale |p (A - a)| + |a (1 - p)|) of one finite row at 50 digits."""
    with mp.workdps(50):
        z = [mp.mpf(float(v)) for v in row]
        m = max(z)
        s = mp.fsum(mp.exp(v - m) for v in z if v != mp.ninf)
        p = [mp.exp(v - m) / s if v != mp.ninf else mp.mpf(0) for v in z]
        big_a = mp.fsum(a)
        g = [big_a * p[j] - a[j] for j in range(len(z))]
        scale = [abs(p[j] * (big_a - a[j])) + abs(a[j] * (1 - p[j])) for j in range(len(z))]
        return g, scale


def assert_close(got, g, scale, where):
    with mp.workdps(50):
        for j in range(len(g)):
            err = abs(mp.mpf(float(got[j])) - g[j])
            assert err <= BOUND * scale[j] + TINY, (j, float(got[j]), float(g[j]), where)


def rows(dt, c, rng):
    x = rng.standard_normal((10, c)) * rng.choice([0.1, 3.0, 30.0], (10, 1))
    x[0] = 0.0
    x[0, 0] = 40.0                      # saturated: p_0 ~ 1, tiny gradient
    if c > 2:
        x[1, :] = 1.5                   # ties
        x[2, ::2] = -np.inf             # masked entries
        x[2, 1] = 0.0
        x[3, 1] = 700.0                 # huge spread
    finfo = ml_dtypes.finfo(dt) if dt == BF16 else np.finfo(dt)
    return np.clip(x, -float(finfo.max), float(finfo.max)).astype(dt)


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("eps,weighted", [(0.0, False), (0.0, True), (0.2, True), (1.0, False)])
def test_index_targets_against_the_reference(dt, eps, weighted):
    rng = np.random.default_rng(3 + dt.itemsize)
    c = 9
    x = rows(dt, c, rng)
    y = rng.integers(0, c, len(x))
    y[0] = 0        # the saturated class
    y[3] = 0        # against a huge winner
    y[-1] = -100
    w = rng.uniform(0, 2, c) if weighted else None
    if w is not None:
        w[2] = 0.0
    g = np.full(x.shape, np.nan)
    fb = native.xent_grad_rows(x, y, g, weight=w, label_smoothing=eps)
    assert not fb.any()
    for i in range(len(x)):
        if y[i] != -100 and eps > 0 and np.isneginf(x[i].astype(np.float64)).any():
            continue  # smoothing puts mass on a -inf logit: an infinite loss (numpy's NaN)
        a = coefficients(c, y=int(y[i]), w=w, eps=eps)
        ref, scale = exact_grad(x[i].astype(np.float64), a)
        assert_close(g[i], ref, scale, (i, int(y[i])))
    assert (g[-1] == 0).all()


@pytest.mark.parametrize("tdt", [np.float32, np.float64])
@pytest.mark.parametrize("dt", [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)],
                         ids=str)
def test_probability_targets_against_the_reference(dt, tdt):
    rng = np.random.default_rng(7)
    c = 12
    x = rows(dt, c, rng)
    x = np.where(np.isneginf(x.astype(np.float64)), -30.0, x.astype(np.float64)).astype(dt)
    t = rng.dirichlet(np.full(c, 0.5), len(x)).astype(tdt)
    t[0] = 0.0
    t[0, 0] = 1.0   # saturated and right
    w = rng.uniform(0, 2, c)
    for eps in (0.0, 0.1):
        g = np.empty(x.shape)
        assert not native.xent_grad_rows(x, t, g, weight=w, label_smoothing=eps).any()
        for i in range(len(x)):
            ref, scale = exact_grad(x[i].astype(np.float64),
                                    coefficients(c, t=t[i], w=w, eps=eps))
            assert_close(g[i], ref, scale, (i, eps))


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
def test_every_variant_within_the_bound(name):
    if name not in isas():
        pytest.skip(f"this CPU has no {name}")
    rng = np.random.default_rng(11)
    c = 301
    x = (rng.standard_normal((6, c)) * [[0.1], [1], [3], [10], [30], [100]]).astype(np.float32)
    y = rng.integers(0, c, 6)
    y[3] = int(np.argmax(x[3]))
    g = np.empty(x.shape)
    with isa(name):
        native.xent_grad_rows(x, y, g, label_smoothing=0.05)
    for i in range(6):
        ref, scale = exact_grad(x[i].astype(np.float64), coefficients(c, y=int(y[i]), eps=0.05))
        assert_close(g[i], ref, scale, (name, i))


def test_saturated_gradient_is_relatively_accurate():
    """p(true) = 1 - 2e-26: the gradient -(1 - p) keeps its digits (not 1 - 1 = 0)."""
    x = np.array([[60.0, 0.0, 1.0]])
    g = np.empty((1, 3))
    native.xent_grad_rows(x, np.array([0]), g)
    ref, _ = exact_grad(x[0], coefficients(3, y=0))
    for j in range(3):
        assert abs(mp.mpf(g[0, j]) - ref[j]) <= 4 * U * abs(ref[j])


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_evaluate_runs_the_gradient_on_the_core_and_hands_special_rows_back(reduction):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, (40, 7)).astype(np.float32)
    x[3, 2] = np.nan
    x[4, 0] = np.inf
    x[5] = -np.inf
    x[6, 1] = -np.inf   # on the true class: inf loss
    y = rng.integers(0, 7, 40)
    y[6] = 1
    y[9] = -100
    w = rng.uniform(0.5, 2, 7)
    got = evaluate(x, y, weight=w, label_smoothing=0.1, reduction=reduction, want_grad=True)
    with native.numpy_engine():
        ref = evaluate(x, y, weight=w, label_smoothing=0.1, reduction=reduction, want_grad=True)
    assert got.engine == native.engine() and ref.engine == "numpy"
    special = [3, 4, 5, 6]
    np.testing.assert_array_equal(got.grad[special], ref.grad[special])
    rest = np.setdiff1d(np.arange(40), special)
    scale = np.abs(ref.grad[rest]).max(axis=1, keepdims=True)
    assert (np.abs(got.grad[rest] - ref.grad[rest]) <= 1e-14 * scale).all()
    # probability targets (float32, checked in the kernel's sweep) as well
    t = rng.dirichlet(np.ones(7), 40).astype(np.float32)
    xf = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
    got = evaluate(xf, t, reduction=reduction, want_grad=True, target_tolerance=None)
    with native.numpy_engine():
        ref = evaluate(xf, t, reduction=reduction, want_grad=True, target_tolerance=None)
    scale = np.abs(ref.grad).max(axis=1, keepdims=True)
    assert (np.abs(got.grad - ref.grad) <= 1e-14 * scale).all()
