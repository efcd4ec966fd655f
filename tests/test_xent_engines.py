"""smx_cli.xent (evaluate) on both engines, each against a 50-digit mpmath reference.

Every per-sample output (loss, nll, log p(true), p(true), 1 - p(true), argmax,
top-5, margin, entropy, residual, correct) of the compiled core and of the numpy
kernels is compared with the reference built here from the definitions
(PyTorch's formulas, xent.py's module docstring), on adversarial rows: huge
spreads, ties, near-zero and huge losses, NaN, +-inf, all -inf rows, ignored
samples, weights with zeros, smoothing, 1 class, 0 rows, in the four float
formats. The bounds asserted are those ``evaluate``'s docstring states.

Run under ``SMX_ENGINE=numpy`` (or without the extension) both runs are the numpy
engine; the assertions hold all the same.
"""
from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np
import pytest

from smx_cli.core import native
from smx_cli.core.xent import evaluate, evaluate_blocks

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

DTYPES = [np.float64, np.float32, np.float16] + ([BF16] if BF16 is not None else [])
EPS64 = 2.0 ** -52
# the bounds evaluate's docstring states (float64 results, relative to the exact value
# of the given logits): loss, nll, log p(true), entropy; p(true), 1 - p(true) add
# |log p| eps for exp's argument; margin and residual are absolute
LOSS_ULPS = 16
TINY = LOSS_ULPS * 2.0 ** -1074  # results below the normal range: absolute

INF, NAN = math.inf, math.nan
SPECIAL = [  # (row of 4, label)
    ([NAN, 0.0, 1.0, 2.0], 2),
    ([NAN, 0.0, 1.0, 2.0], -100),
    ([INF, 0.0, 1.0, 2.0], 0),            # +inf takes all the mass
    ([INF, 0.0, 1.0, 2.0], 2),            # -> inf loss
    ([INF, INF, 1.0, -INF], 1),           # shared: log 2
    ([-INF, -INF, -INF, -INF], 0),        # fully masked: NaN
    ([-INF, 3.0, -INF, 0.0], 0),          # -inf on the label: inf loss, finite max
    ([-INF, 3.0, -INF, 0.0], 1),
    ([5.0, 5.0, 5.0, 5.0], 3),            # ties: log 4, argmax 0
    ([30.0, 0.0, 0.0, -2.0], 0),          # tiny loss
    ([0.0, 1000.0, 1.0, 2.0], 0),         # huge loss
    ([1e6 + 1.0, 1e6, 1e6 - 3.0, 1e6 - 5.0], 0),
    ([-745.0, -746.0, -750.0, -800.0], 3),
    ([2.0, 2.0, 1.0, 2.0], 3),            # tie with the label: top-5, margin 0
    ([1e300, -1e300, 0.0, 1.0], 1),       # float64 only
]


# ----------------------------------------------------------------------------
# the reference


def mp_row(row, y, w, eps, ignore_index):
    """Every per-sample output of one row at 50 digits (mpf, or float for exact ones)."""
    c = len(row)
    xs = [float(v) for v in row]
    with mp.workdps(50):
        if any(math.isnan(v) for v in xs) or all(v == -INF for v in xs):
            lp = [mp.nan] * c
        elif any(v == INF for v in xs):
            k = sum(v == INF for v in xs)
            lp = [mp.log(mp.mpf(1) / k) if v == INF else mp.ninf for v in xs]
        else:
            z = [mp.mpf(v) for v in xs]
            m = max(v for v in z)
            lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in z if v != mp.ninf))
            lp = [v - lse for v in z]
        nan_row = mp.isnan(lp[0])
        ign = y == ignore_index
        yy = 0 if ign else y
        wv = [mp.mpf(float(v)) for v in w] if w is not None else [mp.mpf(1)] * c
        e = mp.mpf(eps)
        a = [mp.mpf(0)] * c if ign else \
            [(1 - e) * wv[y] * (j == y) + e / c * wv[j] for j in range(c)]
        # a_c = 0 counts 0 also where logp_c = -inf (or NaN: an ignored NaN row's loss is 0)
        loss = -mp.fsum(a[j] * lp[j] for j in range(c) if a[j] > 0)
        p = [mp.exp(v) for v in lp]
        ent = -mp.fsum(p[j] * lp[j] for j in range(c) if p[j] > 0)  # a NaN p counts nothing
        big_a = mp.fsum(a)
        out = {
            "loss": loss,
            "nll": mp.mpf(0) if ign else -lp[yy],
            "p_true": mp.nan if ign else p[yy],
            "one_minus_p_true": mp.nan if ign else 1 - p[yy],
            "entropy": ent,
            "residual": (max(abs(p[j] - a[j] / big_a) for j in range(c))
                         if big_a > 0 else mp.nan),
            "true_class": -1 if ign else y,
            "ignored": ign,
        }
        if nan_row:
            out["predicted"] = 0
        else:  # the first maximum
            out["predicted"] = max(range(c), key=lambda j: (lp[j], -j))
        others = [lp[j] for j in range(c) if j != yy]
        if ign or c == 1 or nan_row:
            out["margin"] = mp.nan
        elif lp[yy] == max(others) and mp.isinf(lp[yy]):
            out["margin"] = mp.nan if lp[yy] == mp.inf else mp.ninf  # -inf - -inf
        else:
            out["margin"] = lp[yy] - max(others)
        beaten = 0 if nan_row else sum(v > lp[yy] for v in lp)
        out["top5"] = (not ign) and (not nan_row) and beaten < min(5, c)
        out["correct"] = (not ign) and (not nan_row) and out["predicted"] == y
        out["scale_margin"] = (abs(lp[yy]) + abs(max(others))) if others and not nan_row \
            and not ign and mp.isfinite(lp[yy]) and mp.isfinite(max(others)) else mp.mpf(0)
        return out


# the float64 rounding threshold to infinity: DBL_MAX + half its ulp, 2**1024 - 2**970
OVERFLOW = mp.mpf(2) ** 1024 - mp.mpf(2) ** 970


def check(res, x, y, w, eps, ignore_index):
    """Every per-sample output of ``res`` within the stated bounds of the reference."""
    for i in range(x.shape[0]):
        ref = mp_row(x[i].astype(np.float64), int(y[i]), w, eps, ignore_index)
        where = f"row {i} {x[i].tolist()} y={int(y[i])} ({res.engine})"
        for f in ("true_class", "predicted", "ignored", "top5", "correct"):
            assert getattr(res, f)[i] == ref[f], (f, where)
        for f in ("loss", "nll", "entropy"):
            close(getattr(res, f)[i], ref[f], LOSS_ULPS * EPS64, TINY, f, where)
        close_probabilities(res, i, ref, abs(ref["nll"]) if mp.isfinite(ref["nll"]) else 0,
                            where)


def close(got, ref, rtol, atol, what, where):
    got = float(got)
    if mp.isfinite(ref) and abs(ref) >= OVERFLOW:   # rounds to +-inf in float64
        ref = mp.inf if ref > 0 else -mp.inf
    if mp.isnan(ref) or not mp.isfinite(ref):
        want = float(ref)
        assert (math.isnan(got) and math.isnan(want)) or got == want, (what, got, want, where)
        return
    with mp.workdps(50):
        err = abs(mp.mpf(got) - ref)
        assert err <= rtol * abs(ref) + atol, (what, got, float(ref), float(err), where)


def close_probabilities(res, i, ref, lp_scale, where):
    """p(true), 1 - p(true), margin and residual of row i against the reference.

    p = exp(logp): logp's relative error times |logp| (``lp_scale``) becomes p's
    relative error; with smoothing the kernel's residual takes the other
    classes' p from log p(y), so it carries the same factor.
    """
    close(res.p_true[i], ref["p_true"], LOSS_ULPS * EPS64 * (1 + lp_scale), TINY,
          "p_true", where)
    close(res.one_minus_p_true[i], ref["one_minus_p_true"],
          LOSS_ULPS * EPS64 * (1 + lp_scale), TINY, "one_minus_p_true", where)
    close(res.margin[i], ref["margin"], 0.0, LOSS_ULPS * EPS64 * ref["scale_margin"],
          "margin", where)
    close(res.residual[i], ref["residual"], 0.0, LOSS_ULPS * EPS64 * (1 + lp_scale),
          "residual", where)


def both_engines(fn):
    """fn() on the engine selected (native when built) and inside native.numpy_engine()."""
    first = fn()
    with native.numpy_engine():
        second = fn()
    assert second.engine == "numpy"
    return first, second


# ----------------------------------------------------------------------------
# inputs


def cases(dtype, c):
    rng = np.random.default_rng(c * 31 + np.dtype(dtype).itemsize)
    finite = float((ml_dtypes.finfo if dtype == BF16 else np.finfo)(dtype).max)
    fits = [max((abs(v) for v in r if math.isfinite(v)), default=0.0) < finite for r, _ in SPECIAL]
    rows = [r for (r, _), ok in zip(SPECIAL, fits) if ok]
    labels = [lab for (_, lab), ok in zip(SPECIAL, fits) if ok]
    if c != 4:
        rows = [np.resize(r, c).tolist() for r in rows]
        labels = [lab if lab < c else c - 1 for lab in labels]
        labels = [lab if lab != -100 else -100 for lab in labels]
    rand = rng.normal(0, 1, (8, c)) * rng.choice([0.1, 3.0, 40.0], (8, 1))
    x = np.vstack([np.array(rows, dtype=np.float64), rand]).astype(dtype)
    y = np.r_[labels, rng.integers(0, c, 8)]
    y[-1] = -100
    return x, y


WEIGHTS = {"none": None, "zeros": "zeros"}


def weights_for(name, c):
    if name is None or name == "none":
        return None
    w = np.linspace(0.5, 2.0, c)
    w[::3] = 0.0  # class 0 (and every third) weighs nothing
    return w


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("eps,weights", list(itertools.product([0.0, 0.1, 1.0],
                                                                ["none", "zeros"])))
def test_both_engines_match_the_reference(dtype, eps, weights):
    x, y = cases(dtype, 4)
    w = weights_for(weights, 4)
    a, b = both_engines(lambda: evaluate(x, y, weight=w, label_smoothing=eps, reduction="sum"))
    assert a.engine == (native.engine() if native.supports(dtype) else "numpy")
    for res in (a, b):
        check(res, x, y, w, eps, -100)


@pytest.mark.parametrize("c", [1, 2, 7, 300])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_widths_and_ignore_index_a_real_class(c, eps):
    x, y = cases(np.float32, c)
    ii = min(1, c - 1)  # a real class as the ignore index
    y = np.where(y == -100, ii, y)
    w = weights_for("zeros", c) if c > 2 else None
    for res in both_engines(lambda: evaluate(x, y, weight=w, ignore_index=ii,
                                             label_smoothing=eps, reduction="none")):
        check(res, x, y, w, eps, ii)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_reductions_agree_across_engines_within_the_loss_bound(eps):
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 4, (500, 40))).astype(np.float32)
    y = rng.integers(0, 40, 500)
    y[::11] = -100
    w = rng.uniform(0, 2, 40)
    for red in ("mean", "sum"):
        a, b = both_engines(lambda: evaluate(x, y, weight=w, label_smoothing=eps,
                                             reduction=red))
        # exact sums of per-sample losses each within LOSS_ULPS: the reductions are too
        assert a.reduced == pytest.approx(b.reduced, rel=2 * LOSS_ULPS * EPS64, abs=0)
        assert a.denominator == b.denominator


def test_zero_rows_on_both_engines():
    for dtype in DTYPES:
        x = np.zeros((0, 5), dtype=dtype)
        for res in both_engines(lambda: evaluate(x, np.zeros(0, int), reduction="mean")):
            assert res.loss.shape == (0,) and math.isnan(res.reduced) and res.all_ignored


def test_non_contiguous_rows_and_blocks_take_the_same_path():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 3, (64, 9)).astype(np.float32)
    y = rng.integers(0, 9, 64)
    whole = evaluate(x, y, label_smoothing=0.1)
    strided = evaluate(np.asfortranarray(x), y, label_smoothing=0.1)
    blocks = evaluate_blocks(((s, x[s:s + 10]) for s in range(0, 64, 10)), 64, 9, y,
                             label_smoothing=0.1)
    assert strided.engine == whole.engine == blocks.engine
    for f in ("loss", "p_true", "margin", "entropy", "residual", "top5", "predicted"):
        np.testing.assert_array_equal(getattr(strided, f), getattr(whole, f))
        np.testing.assert_array_equal(getattr(blocks, f), getattr(whole, f))
    assert blocks.reduced == whole.reduced


def test_paths_the_kernel_does_not_cover_report_numpy():
    x = np.random.default_rng(5).normal(0, 1, (6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    t = np.full((6, 4), 0.25)
    assert evaluate(x, y, input_kind="log-probs").engine == "numpy"
    assert evaluate(np.round(x * 3).astype(np.int32), y).engine == "numpy"
    on_core = native.engine() if native.supports(x.dtype) else "numpy"
    assert evaluate(x, y).engine == on_core
    assert evaluate(x, t).engine == on_core
    # the gradient runs on the compiled core too (native.xent_grad_rows)
    assert evaluate(x, y, want_grad=True).engine == on_core
    assert evaluate(x, t, want_grad=True).engine == on_core


# ----------------------------------------------------------------------------
# probability targets (native.xent_prob_rows on the compiled core)


def mp_row_prob(row, trow, w, eps):
    """Every per-sample output of one row with probability targets, at 50 digits.

    Finite rows keep the log1p form: logp_j = (x_j - m) - L with L = log1p(sum of
    the terms other than the first maximum's), so a tiny loss (p(true) ~ 1) is
    resolved; 1 - p(true) is -expm1(logp_true)."""
    c = len(row)
    y = int(np.argmax(trow))  # the first maximum of the target
    base = mp_row(row, y, None, 0.0, -100)  # argmax, top-5, special rows
    xs = [float(v) for v in row]
    with mp.workdps(50):
        if any(math.isnan(v) for v in xs) or all(v == -INF for v in xs) \
                or any(v == INF for v in xs):
            lp = None
        else:
            z = [mp.mpf(v) for v in xs]
            m = max(z)
            k = z.index(m)
            big_l = mp.log1p(mp.fsum(mp.exp(z[j] - m) for j in range(c)
                                     if j != k and z[j] != mp.ninf))
            lp = [(v - m) - big_l for v in z]
        e = mp.mpf(eps)
        tv = [mp.mpf(float(v)) for v in trow]
        wv = [mp.mpf(float(v)) for v in w] if w is not None else [mp.mpf(1)] * c
        a = [wv[j] * ((1 - e) * tv[j] + e / c) for j in range(c)]
        big_a = mp.fsum(a)
        if lp is None:  # NaN / +-inf rows: the loss and nll from mp_row's special log-probs
            if any(math.isnan(v) for v in xs) or all(v == -INF for v in xs):
                lps = [mp.nan] * c
            else:
                k = sum(v == INF for v in xs)
                lps = [mp.log(mp.mpf(1) / k) if v == INF else mp.ninf for v in xs]
            return base | {"special": True,
                           "loss": -mp.fsum(a[j] * lps[j] for j in range(c) if a[j] > 0),
                           "nll": -mp.fsum(tv[j] * lps[j] for j in range(c) if tv[j] > 0)}
        p = [mp.exp(v) for v in lp]
        others = [lp[j] for j in range(c) if j != y]
        base.update({
            "loss": -mp.fsum(a[j] * lp[j] for j in range(c) if a[j] > 0),
            "nll": -mp.fsum(tv[j] * lp[j] for j in range(c) if tv[j] > 0),
            "residual": (max(abs(p[j] - a[j] / big_a) for j in range(c)) if big_a > 0
                         else mp.nan),
            "p_true": p[y],
            "one_minus_p_true": -mp.expm1(lp[y]),
            "entropy": -mp.fsum(p[j] * lp[j] for j in range(c) if p[j] > 0),
            "lp_true": lp[y],
            "special": False,
        })
        if c > 1 and mp.isfinite(lp[y]):
            base["margin"] = lp[y] - max(others)
            base["scale_margin"] = abs(lp[y]) + abs(max(others))
        elif c > 1:
            base["margin"] = mp.ninf
        return base


def check_prob(res, x, t, w, eps, entropy=True):
    for i in range(x.shape[0]):
        ref = mp_row_prob(x[i].astype(np.float64), t[i], w, eps)
        where = f"row {i} {x[i].tolist()} t={t[i].tolist()} ({res.engine})"
        for f in ("true_class", "predicted", "top5", "correct"):
            assert getattr(res, f)[i] == ref[f], (f, where)
        assert not res.ignored[i]
        if ref["special"]:  # NaN / +-inf rows: the numpy reference on both engines
            for f in ("loss", "nll"):
                close(getattr(res, f)[i], ref[f], 0.0, 0.0, f, where)
            continue
        for f in ("loss", "nll", "entropy") if entropy else ("loss", "nll"):
            close(getattr(res, f)[i], ref[f], LOSS_ULPS * EPS64, TINY, f, where)
        close_probabilities(res, i, ref,
                            abs(ref["lp_true"]) if mp.isfinite(ref["lp_true"]) else 0, where)


def prob_targets(x, seed):
    """Adversarial targets for the rows of ``x``: one-hot on the max, on the min, uniform,
    ties (argmax the first), all mass on a -inf logit, tiny masses, random Dirichlet."""
    rng = np.random.default_rng(seed)
    n, c = x.shape
    t = rng.dirichlet(np.full(c, 0.3), n)
    xf = x.astype(np.float64)
    for i in range(n):
        kind = i % 6
        row = np.where(np.isnan(xf[i]), 0.0, xf[i])
        if kind == 0:
            t[i] = 0.0
            t[i, int(np.argmax(row))] = 1.0
        elif kind == 1:
            t[i] = 0.0
            t[i, int(np.argmin(row))] = 1.0   # a -inf logit here: inf loss
        elif kind == 2:
            t[i] = 1.0 / c
        elif kind == 3 and c > 1:
            t[i] = 0.0
            t[i, [0, c - 1]] = 0.5            # a tie: the first is the true class
        elif kind == 4:
            t[i] = 1e-300
            t[i, 0] = 1.0 - (c - 1) * 1e-300
    return t


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("eps,weights", list(itertools.product([0.0, 0.1, 1.0],
                                                                ["none", "zeros"])))
def test_probability_targets_match_the_reference_on_both_engines(dtype, eps, weights):
    x, _ = cases(dtype, 4)
    t = prob_targets(x, 7)
    w = weights_for(weights, 4)
    a, b = both_engines(lambda: evaluate(x, t, weight=w, label_smoothing=eps, reduction="sum"))
    assert a.engine == (native.engine() if native.supports(dtype) else "numpy")
    for res in (a, b):
        check_prob(res, x, t, w, eps)


@pytest.mark.parametrize("c", [1, 2, 7, 300, 1000])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16],
                         ids=lambda d: np.dtype(d).name)
def test_probability_targets_wide_rows_and_huge_spreads(c, dtype):
    rng = np.random.default_rng(c)
    x = rng.normal(0, 1, (12, c)) * rng.choice([0.01, 3.0, 300.0, 3e4], (12, 1))
    if c > 1:
        x[::4, 0] += 80.0  # a dominant entry: p(true) ~ 1, tiny losses
    x = np.clip(x, -6e4, 6e4).astype(dtype)
    t = prob_targets(x, c)
    w = rng.uniform(0, 3, c)
    for eps in (0.0, 0.05):
        for res in both_engines(lambda: evaluate(x, t, weight=w, label_smoothing=eps,
                                                 reduction="none")):
            # the numpy engine's float64 entropy takes p = exp(logp): logp's absolute error
            # u |logp| becomes p's relative error, 17.6 ulp at a spread of 80 (a known gap
            # of that engine); the compiled core folds x - m's rounding error into p
            check_prob(res, x, t, w, eps, entropy=res.engine != "numpy" or dtype != np.float64)


@pytest.mark.skipif(not native.available() or native.engine() == "numpy",
                    reason="the compiled core is not selected")
def test_probability_kernel_hands_back_negative_targets_and_ignores_the_thread_count():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 5, (300, 130)).astype(np.float32)
    t = rng.dirichlet(np.ones(130), 300).astype(np.float32)
    t[7, 3] = -0.25          # evaluate rejects these; the kernel hands the row back
    t[9, 0] = np.nan
    w = rng.uniform(0, 2, 130)
    one = native.xent_prob_rows(x, t, weight=w, label_smoothing=0.1, threads=1)
    two = native.xent_prob_rows(x, t, weight=w, label_smoothing=0.1, threads=2)
    assert np.flatnonzero(one["fallback"]).tolist() == [7, 9]
    ok = ~one["fallback"]
    for k in one:
        np.testing.assert_array_equal(one[k][ok], two[k][ok])
    # float32 targets are read as they are: the same as their float64 widening
    wide = native.xent_prob_rows(x, t.astype(np.float64), weight=w, label_smoothing=0.1)
    for k in ("loss", "nll", "residual", "entropy", "true_class"):
        np.testing.assert_array_equal(one[k][ok], wide[k][ok])


@pytest.mark.parametrize("c", [2, 3, 9, 40])
def test_probability_targets_near_the_largest_float(c):
    # a (m - x) overflows float64 for a > 1 at m - x ~ DBL_MAX: the loss is +inf (as
    # torch's), not the NaN of inf - inf in a compensated sum; the same rows with
    # a < 1 stay finite. (Spreads m - x beyond DBL_MAX are infinite losses by
    # definition of the kernels, not held to the reference here.)
    big = np.finfo(np.float64).max
    rng = np.random.default_rng(c)
    x = rng.choice([big, big / 2, big / 4, 0.0, 5.0, -1e290], (16, c))
    x[:, 0] = big
    t = prob_targets(x, c)
    for w in (rng.uniform(1.5, 3.0, c), rng.uniform(0.1, 0.4, c)):
        for eps in (0.0, 0.1):
            for res in both_engines(lambda: evaluate(x, t, weight=w, label_smoothing=eps,
                                                     reduction="none")):
                check_prob(res, x, t, w, eps)
