"""Calibration metrics and fits against independent references (mpmath, plain loops, torchmetrics).

torchmetrics is used when installed, not required: it is not in the ``test`` extra because on
a fresh machine it pulls in torch (``pip install --dry-run torchmetrics`` here only adds
lightning-utilities, because torch 2.13 is already installed). netcal is not used: it pulls
matplotlib, tensorboard, gpytorch and pyro.
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from smx_cli.analysis import calibration as cal
from smx_cli.analysis import scan as scan_mod
from smx_cli.analysis.calibrate import calibrate, calibration_metrics, fit_temperature
from smx_cli.analysis.scan import Rows
from smx_cli.errors import SmxError


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(p, rng):
    u = rng.random(len(p))
    return (p.cumsum(axis=1) < u[:, None]).sum(axis=1).clip(0, p.shape[1] - 1)


# --------------------------------------------------------------------------
# plain references, written out loop by loop


def plain_bin(members, conf, correct):
    """(count, mean confidence, accuracy) of one bin's members; (0, None, None) if empty."""
    if not members:
        return (0, None, None)
    return (len(members), sum(conf[i] for i in members) / len(members),
            sum(correct[i] for i in members) / len(members))


def plain_width_bins(conf, correct, m):
    """Per bin (lo, hi]: count, mean conf, accuracy; 0 goes to the first bin."""
    out = []
    for b in range(m):
        lo, hi = b / m, (b + 1) / m
        members = [i for i, c in enumerate(conf)
                   if (lo < c <= hi) or (b == 0 and c == 0.0)]
        out.append(plain_bin(members, conf, correct))
    return out


def plain_mass_bins(conf, correct, m):
    order = sorted(range(len(conf)), key=lambda i: (conf[i], i))
    n = len(conf)
    out, start = [], 0
    for b in range(m):
        size = n // m + (1 if b < n % m else 0)
        members = order[start:start + size]
        start += size
        out.append(plain_bin(members, conf, correct))
    return out


def plain_ece(bins, n, norm="l1"):
    full = [(k, c, a) for k, c, a in bins if k]
    if norm == "l1":
        return sum(k / n * abs(a - c) for k, c, a in full)
    if norm == "l2":
        return math.sqrt(sum(k / n * (a - c) ** 2 for k, c, a in full))
    return max(abs(a - c) for k, c, a in full)


def plain_debiased(bins, n):
    total = 0.0
    for k, c, a in bins:
        if k >= 2:
            total += k / n * ((a - c) ** 2 - a * (1 - a) / (k - 1))
    return math.sqrt(max(total, 0.0))


@pytest.fixture
def sample():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(3000, 6)) * 2.5
    y = _draw(_softmax(z / 1.7), rng)
    return z, y


# --------------------------------------------------------------------------
# the temperature fit


def _mp_temperature(z, y):
    """argmin_T of the mean NLL of softmax(z / T), by mpmath (40 digits) on dNLL/dbeta."""
    mpmath.mp.dps = 40
    rows = [[mpmath.mpf(float(v)) for v in r] for r in z]

    def grad(beta):
        g = mpmath.mpf(0)
        for r, yi in zip(rows, y):
            w = [mpmath.exp(beta * v) for v in r]
            s = mpmath.fsum(w)
            g += mpmath.fsum(wi * v for wi, v in zip(w, r)) / s - r[int(yi)]
        return g
    beta = mpmath.findroot(grad, (mpmath.mpf("0.01"), mpmath.mpf(20)), solver="anderson")
    return float(1 / beta)


@pytest.mark.parametrize("scale,seed", [(1.0, 0), (4.0, 1), (0.3, 2)])
def test_temperature_matches_mpmath(scale, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(150, 5)) * 3
    y = _draw(_softmax(z * scale / 3), rng)
    fit = fit_temperature(z, y)
    ref = _mp_temperature(z, y)
    assert fit.temperature == pytest.approx(ref, rel=1e-10)
    assert abs(fit.gradient) < 1e-12
    assert fit.converged


def test_temperature_from_float32_npy_file_streamed(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(400, 7)) * 4).astype(np.float32)
    y = _draw(_softmax(z.astype(np.float64) / 4), rng)
    path = tmp_path / "z.npy"
    np.save(path, z)
    monkeypatch.setattr(scan_mod, "BLOCK_BYTES", 7 * 4 * 33)  # 33 rows a block
    fit = fit_temperature(Rows.npy(str(path)), y)
    assert fit.temperature == pytest.approx(_mp_temperature(z.astype(np.float64), y), rel=1e-10)


def test_calibrated_model_gives_t_near_1_and_small_ece():
    # labels drawn from the model's own probabilities: calibrated by construction.
    # Tolerances: with N = 20000 and 15 bins the sampling ECE is ~0.005-0.01; T within 5 %.
    rng = np.random.default_rng(11)
    z = rng.normal(size=(20000, 5)) * 2
    y = _draw(_softmax(z), rng)
    r = calibrate(z, y, bootstrap=0, split=0.5, seed=1)
    assert abs(r.temperature - 1) < 0.05
    assert r.before.ece < 0.02
    assert r.before.debiased_l2 < 0.02


def test_overconfident_model_gives_t_near_3():
    rng = np.random.default_rng(12)
    z = rng.normal(size=(20000, 5)) * 2
    y = _draw(_softmax(z), rng)
    r = calibrate(z * 3, y, bootstrap=0, split=0.5, seed=2)
    assert abs(r.temperature - 3) < 0.15
    assert r.before.ece > 0.1 and r.after.ece < 0.02
    assert r.before.over_confidence > 0.9 * r.before.ece


def test_newton_needs_few_passes(sample):
    z, y = sample
    r = calibrate(z, y, bootstrap=0)
    assert r.passes <= 8
    assert r.fit.iterations <= 5


@pytest.mark.parametrize("labels,msg", [
    ("all-correct", "T -> 0"),
    ("anti", "T grows"),
])
def test_no_finite_temperature(labels, msg):
    z = np.array([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0]])
    y = np.argmax(z, axis=1) if labels == "all-correct" else np.argmin(z, axis=1)
    with pytest.raises(SmxError, match=msg):
        fit_temperature(z, y)


# --------------------------------------------------------------------------
# metrics against plain loops


@pytest.mark.parametrize("m", [1, 5, 15, 37])
def test_width_and_mass_ece_against_plain_loops(sample, m):
    z, y = sample
    p = _softmax(z)
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    n = len(y)
    wb, mb = plain_width_bins(conf, correct, m), plain_mass_bins(conf, correct, m)
    rep = calibration_metrics(z, y, bins=m, bootstrap=0)
    assert rep.ece == pytest.approx(plain_ece(wb, n), rel=1e-12, abs=1e-15)
    assert rep.mce == pytest.approx(plain_ece(wb, n, "max"), rel=1e-12)
    assert rep.ace == pytest.approx(plain_ece(mb, n), rel=1e-12, abs=1e-15)
    assert rep.debiased_l2 == pytest.approx(plain_debiased(mb, n), rel=1e-9, abs=1e-15)
    for norm in ("l2", "max"):
        assert calibration_metrics(z, y, bins=m, norm=norm, bootstrap=0).ece == \
            pytest.approx(plain_ece(wb, n, norm), rel=1e-12)
    assert calibration_metrics(z, y, bins=m, binning="mass", bootstrap=0).ece == \
        pytest.approx(plain_ece(mb, n), rel=1e-12)
    assert [k for k, _, _ in wb] == rep.bins.count.tolist()  # empty bins kept
    assert rep.accuracy == correct.mean()
    assert rep.nll == pytest.approx(-np.mean(np.log(p[np.arange(n), y])), rel=1e-12)
    onehot = np.eye(z.shape[1])[y]
    assert rep.brier == pytest.approx(np.mean(np.sum((p - onehot) ** 2, axis=1)), rel=1e-12)
    over = sum(k / n * (c - a) for k, c, a in wb if k and c > a)
    assert rep.over_confidence == pytest.approx(over, rel=1e-12)
    assert rep.over_confidence + rep.under_confidence == pytest.approx(rep.ece, rel=1e-12)


def test_classwise_ece_against_plain_loop(sample):
    z, y = sample
    p = _softmax(z)
    n, c = p.shape
    m = 10
    total = 0.0
    for k in range(c):
        bins = plain_width_bins(p[:, k], (y == k), m)
        total += sum(cnt / n * abs(a - cf) for cnt, cf, a in bins if cnt)
    rep = calibration_metrics(z, y, bins=m, bootstrap=0)
    assert rep.classwise_ece == pytest.approx(total / c, rel=1e-9)


def test_confidence_exactly_one_lands_in_the_last_bin():
    conf = np.array([1.0, 1.0, 0.5, 0.0])
    b = cal.width_bins(conf, [True, False, True, False], m=4)
    assert b.count.tolist() == [1, 1, 0, 2]   # 0 -> first, 0.5 -> (0.25, 0.5], 1.0 -> last
    assert len(b.count) == 4                  # no hidden extra bin
    # a saturated float32 softmax gives exact 1.0; its row must count
    z = np.array([[200.0, 0.0], [0.0, 200.0]], dtype=np.float32)
    rep = calibration_metrics(z, [0, 0], bins=15, bootstrap=0)
    assert rep.bins.count[-1] == 2 and rep.ece == pytest.approx(0.5)


def test_debiased_against_definition_small():
    conf = [0.9, 0.8, 0.7, 0.95, 0.6, 0.65]
    correct = [1, 1, 0, 1, 0, 1]
    b = cal.mass_bins(conf, correct, m=2)
    # bins by sorted confidence: {0.6, 0.65, 0.7} acc 1/3 conf 0.65; {0.8, 0.9, 0.95} acc 1
    want = 0.5 * ((1 / 3 - 0.65) ** 2 - (1 / 3) * (2 / 3) / 2) + 0.5 * ((1 - 2.65 / 3) ** 2 - 0)
    assert cal.debiased_l2(b) == pytest.approx(math.sqrt(max(want, 0)), rel=1e-12)


def test_bootstrap_against_plain_resampling():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.3, 1.0, size=500)        # continuous: no ties
    correct = rng.random(500) < conf ** 1.5
    lo, hi = cal.bootstrap_debiased(conf, correct, 8, 50, seed=9)
    draws = np.random.default_rng(9)
    order = np.argsort(conf, kind="stable")   # resamples index the rows sorted by confidence
    vals = []
    for _ in range(50):
        idx = order[draws.integers(0, 500, size=500)]
        c, a = list(conf[idx]), list(correct[idx])
        vals.append(plain_debiased(plain_mass_bins(c, a, 8), 500))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(vals, [2.5, 97.5])), rel=1e-9)
    assert cal.bootstrap_debiased(conf, correct, 8, 50, seed=9) == (lo, hi)  # seeded


def test_streamed_npy_equals_in_memory(sample, tmp_path, monkeypatch):
    z, y = sample
    path = tmp_path / "z.npy"
    np.save(path, z)
    whole = calibrate(z, y, bootstrap=20)
    monkeypatch.setattr(scan_mod, "BLOCK_BYTES", 6 * 8 * 100)
    streamed = calibrate(Rows.npy(str(path)), y, bootstrap=20)
    for k in ("ece", "mce", "ace", "classwise_ece", "debiased_l2", "nll", "brier"):
        assert getattr(streamed.after, k) == pytest.approx(getattr(whole.after, k), rel=1e-12)
    assert streamed.temperature == pytest.approx(whole.temperature, rel=1e-13)


def test_vector_scaling_against_scipy(sample):
    optimize = pytest.importorskip("scipy.optimize")
    z, y = sample
    z = z * np.array([1.0, 2.0, 0.5, 1.5, 1.0, 3.0]) + np.arange(6) * 0.3
    r = calibrate(z, y, method="vector", bootstrap=0)
    n, c = z.shape

    def nll(theta):
        u = z * theta[:c] + theta[c:]
        u = u - u.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(u).sum(axis=1)) - u[np.arange(n), y])
    best = optimize.minimize(nll, np.r_[np.ones(c), np.zeros(c)], method="BFGS",
                             options={"gtol": 1e-10})
    assert r.fit.nll_after <= best.fun + 1e-10
    assert r.fit.nll_after == pytest.approx(best.fun, rel=1e-7)
    assert r.after.nll == pytest.approx(r.fit.nll_after, rel=1e-12)


# --------------------------------------------------------------------------
# torchmetrics, when installed: same numbers where the conventions agree


def test_against_torchmetrics_where_conventions_agree(sample):
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    z, y = sample
    p = torch.tensor(_softmax(z))
    for norm in ("l1", "l2", "max"):
        theirs = float(tmf.multiclass_calibration_error(p, torch.tensor(y), num_classes=6,
                                                        n_bins=15, norm=norm))
        ours = calibration_metrics(z, y, bins=15, norm=norm, bootstrap=0).ece
        # continuous confidences: no value on an edge, none exactly 1.0, so torchmetrics'
        # [lo, hi) bins hold the same samples as our (lo, hi] bins
        # (torchmetrics works in float32 here: agreement to float32 accuracy)
        assert ours == pytest.approx(theirs, rel=1e-5)


def test_torchmetrics_exact_one_differs_as_documented():
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    # confidences exactly 1.0 (saturated) and 0.6: torchmetrics' bucketize(right=True) puts
    # 1.0 into an extra bin M (its issue #3510); we put it into the last bin (0.933, 1]
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.95, 0.05], [0.95, 0.05]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0])
    theirs = float(tmf.multiclass_calibration_error(p, y, num_classes=2, n_bins=15, norm="max"))
    ours = cal.ece(p.numpy(), y.numpy(), bins=15, norm="max")
    assert ours == pytest.approx(abs(0.75 - 0.975))   # one bin: acc 3/4, conf 0.975
    assert theirs == pytest.approx(0.5)                 # their extra bin: acc 1/2, conf 1


def test_api_is_exported():
    import smx_cli

    for name in ("calibrate", "fit_temperature", "ece", "calibration_metrics"):
        assert callable(getattr(smx_cli, name))


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_bins(bad, sample):
    z, y = sample
    with pytest.raises(SmxError, match="bins"):
        calibrate(z, y, bins=bad)


@pytest.mark.parametrize("z,y,msg", [
    (np.array([[1.0, np.nan]]), [0], "row 0, class 1 is NaN"),
    (np.array([[1.0, 2.0], [np.inf, 0.0]]), [0, 1], "row 1, class 0 is inf"),
    (np.array([[1.0, 2.0]]), [2], "outside"),
    (np.array([[1.0, 2.0]]), [0, 1], "2 labels for 1 rows"),
    (np.array([[1.0, 2.0]]), [0.5], "not an integer"),
    (np.zeros((0, 3)), [], "no data"),
    (np.array([[0.2, 0.8], [0.5, 0.5]]), [1, 0], "look like probabilities"),
    (np.array([[-np.inf, 0.0]]), [0], "true class 0 has logit -inf"),
])
def test_hostile_inputs(z, y, msg):
    with pytest.raises(SmxError, match=msg):
        calibrate(z, y)


def test_scan_derivatives_against_mpmath():
    # the pass's four derivatives of the NLL sum in beta (gradient, Hessian, 3rd, 4th)
    # against mpmath's numerical differentiation of the NLL written from its definition
    rng = np.random.default_rng(4)
    z = rng.normal(size=(40, 4)) * 2
    y = rng.integers(0, 4, size=40)
    mpmath.mp.dps = 40

    def nll(beta):
        tot = mpmath.mpf(0)
        for r, yi in zip(z, y):
            tot += mpmath.log(mpmath.fsum(mpmath.exp(beta * mpmath.mpf(float(v))) for v in r)) \
                - beta * mpmath.mpf(float(r[yi]))
        return tot
    beta = 0.7
    s = scan_mod.scan(Rows.of(z), y, beta, metrics=False)
    want = [float(mpmath.diff(nll, mpmath.mpf(beta), k)) for k in (0, 1, 2, 3, 4)]
    got = [s.nll, s.grad, s.hess, s.k3, s.k4]
    for k, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-11, abs=1e-11), k


def test_fit_from_a_subsample_start_takes_few_passes(monkeypatch):
    # a subsample of ~1/10 of the rows starts the Newton iteration off the optimum: the
    # cubic step (4 derivatives) lands within 1e-9 in one step, so 2-3 passes in all
    from smx_cli.analysis import temperature

    monkeypatch.setattr(temperature, "SAMPLE_ELEMENTS", 2000 * 5)
    rng = np.random.default_rng(8)
    z = rng.normal(size=(20000, 5)) * 2
    y = _draw(_softmax(z / 2), rng)
    fit = fit_temperature(z, y)
    assert fit.start_temperature != pytest.approx(fit.temperature, rel=1e-4)
    assert fit.converged and fit.passes <= 3
    optimize = pytest.importorskip("scipy.optimize")

    def grad(beta):  # dNLL/dbeta, plainly in float64
        p = _softmax(z * beta)
        return np.mean((p * z).sum(axis=1) - z[np.arange(len(y)), y])
    ref = 1 / optimize.brentq(grad, 0.05, 5.0, xtol=1e-15, rtol=1e-15)
    assert fit.temperature == pytest.approx(ref, rel=1e-9)


def test_huge_and_minus_inf_logits_keep_finite_derivatives():
    # |d|^4 overflows where exp(beta d) is 0, and -inf logits: those terms are 0, not NaN
    z = np.array([[1e200, 0.0, -1e200], [3.0, -np.inf, 1.0], [0.0, 2.0, 1.0], [1.0, 0.5, 0.0]])
    y = np.array([0, 2, 1, 1])
    s = scan_mod.scan(Rows.of(z), y, 0.8, metrics=False)
    assert all(np.isfinite(v) for v in (s.nll, s.grad, s.hess, s.k3, s.k4))
    zf = z[1:].copy()
    zf[0, 1] = -1e300  # a finite stand-in for -inf: exp gives exactly 0 either way
    s2 = scan_mod.scan(Rows.of(zf), y[1:], 0.8, metrics=False)
    assert (s.grad, s.hess) == pytest.approx((s2.grad, s2.hess), rel=1e-14)
