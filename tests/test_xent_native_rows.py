"""native.xent_rows (class indices) on every CPU variant against a 50-digit mpmath reference.

The AVX-512 and AVX2 variants run 16/32-bit rows through their two-pass kernels (a float32
max/argmax/top-5 pass, then a table-driven float64 exp; _smx_xent.h), the baseline variant
and float64 logits through the portable sweep: each is held to the bounds native.xent_rows
states (loss within 6 ulp of float64 for 16/32-bit logits, 2 ulp for float64), with exact
argmax, top-5 and tie handling, on rows chosen to hit the kernel's edges: widths around its
16- and 32-wide blocks, dominant entries (tiny losses), ties for the maximum, huge spreads,
-inf entries, tiny entries beside large ones (where x - m is inexact in float64), signed
zeros, ignored samples, label smoothing with weights.
"""
from __future__ import annotations


import ml_dtypes
import mpmath as mp
import numpy as np
import pytest

from smx_cli.core import native
from native_isa import isa, isas

pytestmark = pytest.mark.skipif(not native.available(), reason="the extension is not built")

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
LOSS_ULPS = {"lowp": 6.0, "f64": 2.0}  # native.xent_rows' docstring
SMOOTH_ULPS = 16.0


def ulps(got, exact) -> float:
    """|got - exact| in ulps of float64 at ``exact`` (mpf)."""
    if exact == 0:
        return 0.0 if got == 0 else np.inf
    ulp = mp.mpf(2) ** (mp.floor(mp.log(abs(exact), 2)) - 52)
    return float(abs(mp.mpf(float(got)) - exact) / ulp)


def reference(row, y, w, eps):
    """loss, log p(y), entropy, margin of one finite row at 50 digits; top-5 and argmax exact."""
    with mp.workdps(50):
        z = [mp.mpf(float(v)) for v in row]
        m = max(z)
        lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in z if v != mp.ninf))
        lp = [v - lse for v in z]
        c = len(z)
        wv = [mp.mpf(float(v)) for v in w] if w is not None else [mp.mpf(1)] * c
        loss = (1 - mp.mpf(eps)) * wv[y] * -lp[y]
        if eps:
            loss += mp.mpf(eps) / c * mp.fsum(wv[j] * -lp[j] for j in range(c) if wv[j] > 0)
        ent = -mp.fsum(mp.exp(v) * v for v in lp if v != mp.ninf)
        others = [lp[j] for j in range(c) if j != y]
        margin = lp[y] - max(others) if others else mp.nan
        above = sum(v > z[y] for v in z)
        k = max(range(c), key=lambda j: (z[j], -j))
        return loss, lp[y], ent, margin, above, k, abs(lp[y]) + (abs(max(others)) if others else 0)


def rows(dt, c, rng):
    """Adversarial rows of width c in format dt (all finite maxima), and labels."""
    x = rng.standard_normal((14, c)) * rng.choice([0.01, 1.0, 3.0, 30.0], (14, 1))
    x[0] = 0.0
    x[0, -1] = 40.0                     # dominant last entry: tiny loss when it is the label
    if c > 1:
        x[1, :] = 2.0                   # every entry tied
        x[2, c // 2] = x[2, 0] = x[2].max() + 1.0  # a tie for the max, first at 0
        x[3, ::2] = -np.inf             # masked entries
        x[3, 1] = 0.5
        x[4, 1] = 1e4                   # huge spread: the other terms underflow
        x[5, :] = 0.0                   # zeros of both signs
        x[5, ::3] = -0.0
        x[6, 0] = 1e-30 if dt != np.float16 else 1e-7  # a tiny entry beside large ones
        x[6, 1:] = 60.0 + rng.standard_normal(c - 1)
    y = rng.integers(0, c, len(x))
    y[0] = c - 1
    if c > 2:
        y[2] = c // 2                   # the label tied with the max, not the first
        y[3] = 1
    y[-1] = -100                        # ignored
    finfo = ml_dtypes.finfo(dt) if dt == BF16 else np.finfo(dt)
    x = np.clip(x, -float(finfo.max), float(finfo.max))
    return x.astype(dt), y


def check(res, x, y, w, eps, bound):
    for i in range(len(x)):
        row = x[i].astype(np.float64)
        if y[i] == -100:
            assert res["loss"][i] == 0.0 and np.isnan(res["p_true"][i]) and not res["top5"][i]
            continue
        loss, lpy, ent, margin, above, k, scale = reference(row, int(y[i]), w, eps)
        where = (i, x[i][:8].tolist(), int(y[i]))
        assert not res["fallback"][i], where
        assert ulps(res["loss"][i], loss) <= bound, (ulps(res["loss"][i], loss), where)
        assert ulps(res["logp_true"][i], lpy) <= LOSS_ULPS["lowp"], where
        assert res["argmax"][i] == k, where
        assert res["top5"][i] == (above < min(5, len(row))), where
        with mp.workdps(50):
            assert abs(mp.mpf(float(res["entropy"][i])) - ent) <= 8 * 2.0**-52 * max(ent, 1e-300) \
                + 2.0**-1074 * 16, where
            if len(row) > 1:
                assert abs(mp.mpf(float(res["margin"][i])) - margin) <= 16 * 2.0**-52 * scale, where


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("c", [1, 2, 15, 16, 17, 33, 100])
def test_loss_and_outputs_on_every_variant(name, dt, c):
    if name not in isas():
        pytest.skip(f"this CPU has no {name}")
    rng = np.random.default_rng(c * 7 + dt.itemsize)
    x, y = rows(dt, c, rng)
    bound = LOSS_ULPS["f64" if dt == np.float64 else "lowp"]
    with isa(name):
        check(native.xent_rows(x, y), x, y, None, 0.0, bound)


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", [np.dtype(np.float32), np.dtype(np.float16)], ids=str)
def test_smoothing_and_weights_on_every_variant(name, dt):
    if name not in isas():
        pytest.skip(f"this CPU has no {name}")
    rng = np.random.default_rng(21)
    c = 37
    x, y = rows(dt, c, rng)
    keep = np.isfinite(x.astype(np.float64)).all(axis=1)  # -inf with smoothing: infinite loss
    x, y = x[keep], y[keep]
    w = rng.uniform(0, 2, c)
    w[::4] = 0.0
    with isa(name):
        res = native.xent_rows(x, y, weight=w, label_smoothing=0.1)
    check(res, x, y, w, 0.1, SMOOTH_ULPS)


def lane_ties(dt, c, rng):
    """Rows with a tie for the maximum in two different lanes (8-lane AVX2 and 16-lane AVX-512
    pass 1: the later position in the lower lane), and their labels on the later tie."""
    x = rng.standard_normal((4, c)) * 3.0
    y = np.zeros(4, dtype=np.int64)
    for i, (a, b) in enumerate([(7, 9), (15, 17), (6, 13), (c - 1, 1)]):
        a, b = min(a, c - 1), min(b, c - 1)
        x[i, a] = x[i, b] = x[i].max() + 2.0
        y[i] = max(a, b)
    return x.astype(dt), y


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", [np.dtype(np.float32), BF16], ids=str)
def test_every_width_to_40_on_every_variant(name, dt):
    """Widths 1..40: every tail of the two-pass kernels' blocks (pass 1: 8 or 16 float32 lanes;
    pass 2: 4 or 8 float64 lanes, 16 or 32 terms per step), plain and with smoothing + weights,
    ties for the maximum across lanes."""
    if name not in isas():
        pytest.skip(f"this CPU has no {name}")
    for c in range(1, 41):
        rng = np.random.default_rng(1000 + c)
        x, y = rows(dt, c, rng)
        xt, yt = lane_ties(dt, c, rng)
        x, y = np.concatenate([x, xt]), np.concatenate([y, yt])
        with isa(name):
            check(native.xent_rows(x, y), x, y, None, 0.0, LOSS_ULPS["lowp"])
        keep = np.isfinite(x.astype(np.float64)).all(axis=1)
        x, y = x[keep], y[keep]
        w = rng.uniform(0, 2, c)
        w[::3] = 0.0
        with isa(name):
            res = native.xent_rows(x, y, weight=w, label_smoothing=0.1)
        check(res, x, y, w, 0.1, SMOOTH_ULPS)


def test_wide_random_rows_against_the_reference():
    """Random float32 rows of 3000 classes (every block length), a few checked at 50 digits."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 3000)) * [[0.1], [1], [3], [10], [30], [100]]).astype(np.float32)
    y = rng.integers(0, 3000, 6)
    y[2] = int(np.argmax(x[2]))
    for name in isas():
        with isa(name):
            res = native.xent_rows(x, y)
        for i in range(6):
            loss, lpy, *_ , k, _ = reference(x[i].astype(np.float64), int(y[i]), None, 0.0)
            assert ulps(res["loss"][i], loss) <= LOSS_ULPS["lowp"], (name, i)
            assert res["argmax"][i] == k


def test_variants_agree_on_the_exact_outputs():
    """argmax, top-5 and the special-row hand-back are identical on every variant."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((300, 70)) * 4).astype(np.float32)
    x[::17, 5] = x[::17].max(axis=1) + 0.0  # ties
    x[3, 2] = np.nan
    x[4, 0] = np.inf
    x[5] = -np.inf
    y = rng.integers(0, 70, 300)
    got = {}
    for name in isas():
        with isa(name):
            got[name] = native.xent_rows(x, y)
    base = got[isas()[0]]
    for name, res in got.items():
        for k in ("argmax", "top5", "fallback"):
            np.testing.assert_array_equal(res[k], base[k], err_msg=f"{name} {k}")
        np.testing.assert_allclose(res["loss"], base["loss"], rtol=8 * 2.0**-52, atol=0)
    assert base["fallback"][[3, 4, 5]].all() and base["fallback"].sum() == 3


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("tdt", [np.float32, np.float64])
def test_probability_targets_on_every_variant(name, dt, tdt):
    """xent_prob_rows: loss and nll within 16 ulp of float64 (native.xent_prob_rows' bound),
    exact true class, argmax and top-5, on the same adversarial rows (block tails too)."""
    if name not in isas():
        pytest.skip(f"this CPU has no {name}")
    rng = np.random.default_rng(dt.itemsize + 3)
    # 16/32-bit rows: block tails of the 4- and 8-lane sweeps too
    for c in (3, 17, 40) if dt == np.float64 else (1, 3, 5, 16, 17, 40):
        x, _ = rows(dt, c, rng)
        t = rng.dirichlet(np.full(c, 0.4), len(x)).astype(tdt)
        t[0] = 0.0
        t[0, -1] = 1.0                   # all mass on the dominant entry
        w = rng.uniform(0, 2, c)
        if c in (5, 17):                 # no weights: the kernels' own w = 1 path, tails included
            w = None
        with isa(name):
            res = native.xent_prob_rows(x, t, weight=w, label_smoothing=0.1)
        if w is None:
            w = np.ones(c)
        assert not res["fallback"].any()
        for i in range(len(x)):
            row = x[i].astype(np.float64)
            with mp.workdps(50):
                z = [mp.mpf(float(v)) for v in row]
                m = max(z)
                lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in z if v != mp.ninf))
                a = [mp.mpf(float(w[j])) * (mp.mpf(0.9) * mp.mpf(float(t[i, j])) + mp.mpf(0.1) / c)
                     for j in range(c)]
                loss = mp.fsum(a[j] * (lse - z[j]) for j in range(c))
                nll = mp.fsum(mp.mpf(float(t[i, j])) * (lse - z[j]) for j in range(c)
                              if t[i, j] > 0)
            y = int(np.argmax(t[i]))
            where = (name, c, i)
            assert res["true_class"][i] == y, where
            assert res["argmax"][i] == max(range(c), key=lambda j: (z[j], -j)), where
            assert res["top5"][i] == (sum(v > z[y] for v in z) < min(5, c)), where
            if mp.isinf(loss):
                assert res["loss"][i] == np.inf, where
                continue
            assert ulps(res["loss"][i], loss) <= SMOOTH_ULPS, (ulps(res["loss"][i], loss), where)
            if mp.isfinite(nll):
                assert ulps(res["nll"][i], nll) <= SMOOTH_ULPS, where
        assert np.allclose(res["target_sum"], t.astype(np.float64).sum(axis=1), rtol=1e-15)
