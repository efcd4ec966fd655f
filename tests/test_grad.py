"""Gradients: Jacobians and VJPs against mpmath, finite differences and torch."""
import mpmath
import numpy as np
import pytest

from smx_cli.core.grad import (check_grad, hint_temperature, log_softmax_vjp, saturation,
                          softmax_jacobian, softmax_vjp)

mpmath.mp.dps = 50


def mp_softmax(row, t=1.0):
    z = [mpmath.mpf(float(v)) / t for v in row]
    m = max(z)
    e = [mpmath.exp(v - m) for v in z]
    s = mpmath.fsum(e)
    return [v / s for v in e]


def mp_jacobian(row, t=1.0, kind="softmax"):
    p = mp_softmax(row, t)
    c = len(p)
    # 1 - p_i as the sum of the others: 1 - p_i itself cancels to 0 at any fixed precision
    rest = [mpmath.fsum(p[k] for k in range(c) if k != i) for i in range(c)]
    if kind == "softmax":
        return [[(p[i] * (rest[i] if i == j else -p[j])) / t for j in range(c)] for i in range(c)]
    return [[((1 if i == j else 0) - p[j]) / t for j in range(c)] for i in range(c)]


def mp_vjp(row, g, t=1.0, kind="softmax"):
    jac = mp_jacobian(row, t, kind)
    c = len(row)
    return [mpmath.fsum(mpmath.mpf(float(g[i])) * jac[i][j] for i in range(c)) for j in range(c)]


ROWS = [
    [1.0, 2.0, 3.0],
    [0.0, 20.0, 40.0],
    [0.0, 200.0],
    [-5.0, 0.0, 5.0, 5.0],
    [3.0],
    [1e-3, -2e-3, 7.5, -30.0, 12.25],
]


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("kind", ["softmax", "log"])
@pytest.mark.parametrize("t", [1.0, 0.5, 3.0])
def test_jacobian_matches_mpmath(row, kind, t):
    got = softmax_jacobian(np.array(row), temperature=t, kind=kind)
    ref = np.array([[float(v) for v in r] for r in mp_jacobian(row, t, kind)])
    scale = np.max(np.abs(ref))
    # entrywise relative accuracy on the entries that matter, absolute on the rest
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15 * max(scale, 1e-300))


def test_saturated_row_largest_entry_is_tiny_but_not_zero():
    jac = softmax_jacobian(np.array([0.0, 20.0, 40.0]))
    ref = float(max(max(abs(v) for v in r) for r in mp_jacobian([0.0, 20.0, 40.0])))
    assert jac.max() == pytest.approx(ref, rel=1e-13)
    assert 1e-9 < jac.max() < 3e-9


@pytest.mark.parametrize("kind", ["softmax", "log"])
def test_vjp_matches_mpmath(kind):
    rng = np.random.default_rng(3)
    fn = softmax_vjp if kind == "softmax" else log_softmax_vjp
    for row in ROWS + [list(rng.normal(0, 10, 12))]:
        g = rng.normal(size=len(row))
        got = fn(np.array(row), g, temperature=1.5)
        ref = np.array([float(v) for v in mp_vjp(row, g, 1.5, kind)])
        scale = np.max(np.abs(ref)) + 1e-300
        assert np.max(np.abs(got - ref)) <= 1e-14 * max(scale, np.max(np.abs(g)))


def test_vjp_float32_input_returns_float32_and_is_accurate():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 5, (4, 9)).astype(np.float32)
    g = rng.normal(size=(4, 9)).astype(np.float32)
    got = softmax_vjp(x, g)
    assert got.dtype == np.float32
    for i in range(4):
        ref = np.array([float(v) for v in mp_vjp(x[i].tolist(), g[i].tolist())])
        np.testing.assert_allclose(got[i], ref, atol=2e-7 * np.max(np.abs(ref)))


def test_vjp_axis_and_shape_mismatch():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4))
    g = rng.normal(size=(3, 4))
    np.testing.assert_allclose(softmax_vjp(x, g, axis=0), softmax_vjp(x.T, g.T).T, rtol=1e-15)
    with pytest.raises(ValueError, match="must match"):
        softmax_vjp(x, g[:, :3])


def test_vjp_of_wide_rows_never_forms_c_by_c():
    # 64 x 40000: a C x C Jacobian per row would be 12.8 GB; the VJP is cheap
    rng = np.random.default_rng(6)
    x = rng.normal(0, 3, (64, 40000))
    g = rng.normal(size=x.shape)
    got = softmax_vjp(x, g)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = p * (g - (g * p).sum(1, keepdims=True))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-18)


def test_saturation_flags_saturated_rows_and_hint_temperature():
    x = np.array([[0.0, 20.0, 40.0], [0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    s = saturation(x)
    assert s.saturated.tolist() == [True, False, False]
    assert np.isnan(s.hint_temperature[1]) and np.isnan(s.hint_temperature[2])
    t = s.hint_temperature[0]
    p = mp_softmax([0.0, 20.0, 40.0], t)
    assert float(max(p)) == pytest.approx(0.99, abs=1e-9)


def test_underflow_share_counts_gradients_lost_in_float16():
    # in float16, p(1-p) ~ 2e-9 underflows (smallest subnormal 6e-8); in float64 it does not
    x = np.array([[0.0, 20.0, 40.0]])
    assert saturation(x, dtype="float64").underflow_share == 0.0
    s16 = saturation(x, dtype="float16")
    assert s16.underflow_share == pytest.approx(3 / 3)  # every entry's diagonal rounds to 0


def test_hint_temperature_is_monotone_answer():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 30, (20, 6))
    t = hint_temperature(x)
    for i in np.flatnonzero(np.isfinite(t)):
        p = mp_softmax(x[i].tolist(), t[i])
        assert float(max(p)) == pytest.approx(0.99, abs=1e-8)


def test_check_grad_passes_on_mnist_and_fails_on_a_wrong_gradient(monkeypatch):
    from conftest import SAMPLES

    x = np.load(f"{SAMPLES}/mnist_lenet_logits.npy")
    y = np.load(f"{SAMPLES}/mnist_lenet_labels.npy")
    checks = check_grad(x, labels=y, rows=16)
    assert {c.function for c in checks} == {"softmax", "log", "xent"}
    assert all(c.passed for c in checks), checks
    # the check can fail: break the VJP and it must notice
    import smx_cli.core.grad as grad_mod

    monkeypatch.setattr(grad_mod, "softmax_vjp", lambda x, g, temperature=1.0: g * 0.5)
    broken = grad_mod.check_grad(x, labels=y, rows=4, functions=("softmax",))
    assert not broken[0].passed


def test_no_nan_for_finite_saturated_rows():
    x = np.array([[0.0, 200.0], [0.0, 800.0], [-1e6, 1e6]])
    g = np.ones_like(x)
    for out in (softmax_jacobian(x), softmax_vjp(x, g), log_softmax_vjp(x, g)):
        assert np.isfinite(out).all()


def test_agrees_with_torch_autograd(torch):
    rng = np.random.default_rng(8)
    x = rng.normal(0, 4, (6, 7))
    g = rng.normal(size=(6, 7))
    for kind, fn, tfn in [("softmax", softmax_vjp, torch.softmax),
                          ("log", log_softmax_vjp, torch.log_softmax)]:
        xt = torch.tensor(x / 2.0, requires_grad=True)
        tfn(xt, dim=-1).backward(torch.tensor(g))
        np.testing.assert_allclose(fn(x, g, temperature=2.0), xt.grad.numpy() / 2.0,
                                   rtol=1e-12, atol=1e-15)
        xj = torch.tensor(x[0])
        jac = torch.autograd.functional.jacobian(lambda v: tfn(v, dim=-1), xj).numpy()
        np.testing.assert_allclose(softmax_jacobian(x[0], kind=kind), jac, rtol=1e-12, atol=1e-15)


def test_check_grad_skips_entries_whose_finite_difference_overflows():
    # [1e308, -1e308]: the log-softmax's central difference is inf - inf; such rows are
    # not counted, instead of failing with a reported error of 0
    checks = check_grad(np.array([[1e308, -1e308], [1.0, 2.0]]), functions=("softmax", "log"))
    by = {c.function: c for c in checks}
    assert all(c.passed for c in checks)
    assert by["log"].rows_checked == 1 and by["softmax"].rows_checked == 2


# ----------------------------------------------------------------------------
# the VJPs on both engines against 50 digits, with the bound grad.py states

try:
    import ml_dtypes
    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    _BF16 = None
_FORMATS = [(np.dtype(np.float64), 52, -1022), (np.dtype(np.float32), 23, -126),
            (np.dtype(np.float16), 10, -14)] + ([(_BF16, 7, -126)] if _BF16 is not None else [])


def _ulp(v, mant, emin):
    a = np.abs(np.asarray(v, dtype=np.float64))
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return np.exp2(np.maximum(e, emin) - mant)


def _vjp_cases(dtype):
    rng = np.random.default_rng(13)
    rows = [[1.0, 2.0, 3.0], [0.0, 20.0, 40.0], [0.0, 200.0], [-5.0, 0.0, 5.0, 5.0], [3.0],
            [0.0, 80.0, -30.0, 80.0], [0.0, 1e4, -1e4, 9999.0], [7.0, 7.0, 7.0, 7.0]]
    out = [np.array(r, dtype=np.float64) for r in rows]
    out += [rng.normal(0, s, 40) for s in (0.1, 3.0, 30.0)] + [rng.normal(0, 5, 300)]
    fin = float((ml_dtypes.finfo if dtype == _BF16 else np.finfo)(dtype).max)
    return [r.astype(dtype) for r in out if np.abs(r).max() < fin]


def _mp_vjp_row(x, g, t, kind):
    with mpmath.workdps(50):
        z = [mpmath.mpf(float(v)) / t for v in x]
        m = max(z)
        e = [mpmath.exp(v - m) for v in z]
        s = mpmath.fsum(e)
        p = [v / s for v in e]
        gg = [mpmath.mpf(float(v)) for v in g]
        if kind == "softmax":
            dot = mpmath.fsum(a * b for a, b in zip(gg, p))
            ref = [p[j] * (gg[j] - dot) / t for j in range(len(p))]
            big_g = mpmath.fsum(abs(a) * b for a, b in zip(gg, p))
        else:
            tot = mpmath.fsum(gg)
            ref = [(gg[j] - p[j] * tot) / t for j in range(len(p))]
            big_g = mpmath.fsum(abs(a) for a in gg)
        scale = [(abs(ref[j]) + p[j] * big_g / t) for j in range(len(p))]
        return np.array([float(v) for v in ref]), np.array([float(v) for v in scale]), ref


@pytest.mark.parametrize("fmt", _FORMATS, ids=lambda f: f[0].name)
@pytest.mark.parametrize("kind", ["softmax", "log"])
@pytest.mark.parametrize("t", [1.0, 0.3, 7.0])
def test_vjp_within_the_stated_bound_on_both_engines(fmt, kind, t):
    from smx_cli.core import native

    dtype, mant, emin = fmt
    rng = np.random.default_rng(int(t * 10) + mant)
    fn = softmax_vjp if kind == "softmax" else log_softmax_vjp
    for x in _vjp_cases(dtype):
        for g in (rng.normal(size=x.size), np.full(x.size, 1.5),
                  rng.normal(size=x.size) * np.exp2(rng.integers(-30, 30, x.size))):
            _, scale, ref = _mp_vjp_row(x, g, t, kind)
            for engine in ("selected", "numpy"):
                if engine == "numpy":
                    with native.numpy_engine():
                        got = fn(x, g, temperature=t)
                else:
                    got = fn(x, g, temperature=t)
                assert got.dtype == dtype
                gd = got.astype(np.float64)
                with mpmath.workdps(50):
                    err = np.array([float(abs(mpmath.mpf(float(a)) - b)) for a, b in zip(gd, ref)])
                if dtype == np.float64:
                    bound = 8 * 2.0**-52 * scale + 8 * 2.0**-1074
                else:
                    refd = np.array([float(v) for v in ref])
                    half = 0.5 * np.maximum(_ulp(refd, mant, emin), _ulp(gd, mant, emin))
                    bound = half + 2.0**-43 * scale
                bad = np.flatnonzero(err > bound)
                assert not bad.size, (engine, kind, t, x.tolist()[:6], bad[:5],
                                      err[bad[:5]], bound[bad[:5]])


def test_vjp_special_rows_match_the_numpy_engine():
    from smx_cli.core import native

    inf, nan = np.inf, np.nan
    x = np.array([[nan, 0.0, 1.0], [inf, 0.0, 1.0], [-inf, -inf, -inf], [0.0, -inf, 1.0],
                  [1.0, 2.0, 3.0]])
    g = np.array([[1.0, 2.0, 3.0]] * 4 + [[inf, 0.0, 1.0]])
    for fn in (softmax_vjp, log_softmax_vjp):
        a = fn(x, g)
        with native.numpy_engine():
            b = fn(x, g)
        special = [0, 1, 2, 4]  # handed back: the numpy path's values exactly
        np.testing.assert_array_equal(a[special], b[special])
        np.testing.assert_allclose(a[3], b[3], rtol=4 * 2.0**-52)  # a -inf entry: p = 0 there
        assert a[3, 1] == b[3, 1] == (0.0 if fn is softmax_vjp else g[3, 1])


@pytest.mark.parametrize("kind", ["softmax", "log"])
def test_vjp_wide_row_with_a_cancelling_inner_product(kind):
    """g ~ 1e8 (1 + noise): <g, p> (or sum g) is a sum of 20000 same-signed terms
    whose result then cancels against g_j (out_j is ~1e-6 of p_j g_j)."""
    rng = np.random.default_rng(21)
    x = rng.normal(0, 1, 20000)
    g = 1e8 * (1 + rng.normal(0, 1e-6, 20000))
    fn = softmax_vjp if kind == "softmax" else log_softmax_vjp
    _, scale, ref = _mp_vjp_row(x, g, 1.0, kind)
    got = fn(x, g)
    with mpmath.workdps(50):
        err = np.array([float(abs(mpmath.mpf(float(a)) - b)) for a, b in zip(got, ref)])
    assert (err <= 8 * 2.0**-52 * scale).all(), err.max() / (2.0**-52 * scale).max()
