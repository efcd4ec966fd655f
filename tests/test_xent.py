"""Cross-entropy (smx_cli.core.xent) against an independent 50-digit reference and PyTorch.

The reference (``mp_*`` below) is built with mpmath straight from the definitions in
xent.py's module docstring (PyTorch's formulas); it never calls smx.
"""
import doctest
import itertools
import math
import os

import mpmath as mp
import numpy as np
import pytest

from smx_cli.io import labels as labels_mod
from smx_cli.core import xent
from smx_cli.core.softmax import log_softmax
from smx_cli.core.xent import cross_entropy, cross_entropy_grad, evaluate, evaluate_blocks, nll_loss

RNG = np.random.default_rng(20240603)
N, C = 9, 6
X = RNG.normal(size=(N, C)) * 2.5
Y = RNG.integers(0, C, N)
Y_IGN = Y.copy()
Y_IGN[[1, 5]] = -100                      # default ignore_index, two samples ignored
Y_K = Y.copy()
Y_K[[2, 3]] = 4                           # ignore_index=4: a real class used as ignore index
T = RNG.dirichlet(np.ones(C), N)          # probability targets
W = RNG.uniform(0.25, 3.0, C)

TARGETS = {
    "index": (Y, -100),
    "index-ignored": (Y_IGN, -100),
    "index-ignore4": (Y_K, 4),
    "prob": (T, -100),
}
COMBOS = list(itertools.product(["none", "mean", "sum"], [0.0, 0.1, 1.0], [False, True],
                                list(TARGETS)))

# adversarial rows: (logits, label)
ADVERSARIAL = [
    ([30.0, 0.0], 0),                      # confidently right: loss ~9.4e-14, not 0
    ([40.0, 0.0, -5.0], 0),                # loss ~4e-18
    ([0.0, 1000.0], 0),                    # confidently wrong: 1000, not inf
    ([1e300, -1e300, 0.0], 1),             # huge spread: 2e300, finite
    ([-1e300, 1e300, 0.5], 1),
    ([1e6 + 1.0, 1e6, 1e6 - 3.0], 0),      # large offset, x - max exact
    ([5.0, 5.0, 5.0, 5.0], 2),             # ties: log 4
    ([0.0, 1e-10, -1e-10], 1),
    ([700.0, -700.0, 0.0], 2),
    ([-745.0, -746.0, -750.0], 0),         # all very negative
]


# ----------------------------------------------------------------------------
# the independent reference


def mp_logp(row):
    """log softmax of one row, 50 digits: x_c - logsumexp(x)."""
    with mp.workdps(50):
        xs = [mp.mpf(float(v)) for v in row]
        m = max(xs)
        lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in xs))
        return [v - lse for v in xs]


def mp_coeffs(n_classes, target_row, kind, w, eps, ignore_index):
    """a_c with loss_i = -sum_c a_c logp_c, from the docstring's formulas (None: ignored)."""
    e = mp.mpf(eps)
    if kind == "index":
        y = int(target_row)
        if y == ignore_index:
            return None
        # (1 - eps) nll + (eps / C) smooth, nll = -w_y logp_y, smooth = -sum_c w_c logp_c
        return [(1 - e) * w[y] * (c == y) + e / n_classes * w[c] for c in range(n_classes)]
    return [w[c] * ((1 - e) * mp.mpf(float(target_row[c])) + e / n_classes)
            for c in range(n_classes)]


def mp_reference(x, target, weight=None, ignore_index=-100, reduction="mean", eps=0.0,
                 kind="index", logps=None):
    """(per-sample losses, reduced loss, gradient of the reduced loss) at 50 digits."""
    n, n_classes = x.shape
    with mp.workdps(50):
        logps = logps or [mp_logp(r) for r in x]
        w = [mp.mpf(float(v)) for v in weight] if weight is not None else [mp.mpf(1)] * n_classes
        losses, grads, den = [], [], mp.mpf(0)
        for i in range(n):
            a = mp_coeffs(n_classes, target[i], kind, w, eps, ignore_index)
            if a is None:
                losses.append(mp.mpf(0))
                grads.append([mp.mpf(0)] * n_classes)
                continue
            lp = logps[i]
            losses.append(-mp.fsum(a[c] * lp[c] for c in range(n_classes)))
            # d/dx_j of -sum_c a_c (x_c - lse) = A p_j - a_j
            big_a = mp.fsum(a)
            grads.append([big_a * mp.exp(lp[j]) - a[j] for j in range(n_classes)])
            den += w[int(target[i])] if kind == "index" else 1
        total = mp.fsum(losses)
        if reduction == "mean":
            reduced = total / den if den else mp.nan
            grads = [[g / den for g in row] for row in grads] if den else grads
        else:
            reduced = total
        return losses, reduced, grads


def rel(got, ref):
    """|got - ref| / |ref| in high precision (0 when both are exactly 0)."""
    with mp.workdps(50):
        got = mp.mpf(float(got))
        if ref == 0:
            return 0.0 if got == 0 else math.inf
        return float(abs(got - ref) / abs(ref))


_LOGP_CACHE = {}


def logps_of(x):
    key = x.tobytes() + str(x.dtype).encode()
    if key not in _LOGP_CACHE:
        _LOGP_CACHE[key] = [mp_logp(r) for r in x]
    return _LOGP_CACHE[key]


# ----------------------------------------------------------------------------
# accuracy against the reference


@pytest.mark.parametrize("reduction,eps,weighted,tkind", COMBOS)
def test_every_option_combination_matches_reference(reduction, eps, weighted, tkind):
    target, ii = TARGETS[tkind]
    kind = "prob" if tkind == "prob" else "index"
    w = W if weighted else None
    r = evaluate(X, target, weight=w, ignore_index=ii, reduction=reduction,
                 label_smoothing=eps, want_grad=True)
    losses, reduced, grads = mp_reference(X, target, w, ii, reduction, eps, kind, logps_of(X))
    errs = [rel(g, ref) for g, ref in zip(r.loss, losses)]
    assert max(errs) <= 1e-12, errs
    if reduction != "none":
        assert rel(r.reduced, reduced) <= 1e-12
    # without the gradient class-index targets may run on the compiled core: the same
    # losses within evaluate's stated 16 ulps (both engines are within it of the exact value)
    if reduction == "none":
        out = cross_entropy(X, target, weight=w, ignore_index=ii, reduction="none",
                            label_smoothing=eps)
        np.testing.assert_allclose(out, r.loss, rtol=16 * 2.0**-52, atol=0)
    else:
        assert cross_entropy(X, target, weight=w, ignore_index=ii, reduction=reduction,
                             label_smoothing=eps) == pytest.approx(r.reduced, rel=32 * 2.0**-52)
    # the gradient, row-wise: every entry within 1e-12 of its row's largest
    for i in range(N):
        gmax = max(abs(v) for v in grads[i])
        for j in range(C):
            if gmax == 0:
                assert r.grad[i, j] == 0
            else:
                assert abs(mp.mpf(float(r.grad[i, j])) - grads[i][j]) <= 1e-12 * gmax, (i, j)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction,eps,weighted", list(itertools.product(
    ["none", "mean", "sum"], [0.0, 0.1, 1.0], [False, True])))
def test_adversarial_rows_match_reference(dtype, reduction, eps, weighted):
    # one matrix per width, so every row keeps its own classes
    for cw in sorted({len(r) for r, _ in ADVERSARIAL}):
        sel = [(r, y) for r, y in ADVERSARIAL if len(r) == cw]
        if dtype == np.float32 and max(abs(v) for r, _ in sel for v in r) > 1e38:
            sel = [(r, lab) for r, lab in sel if max(map(abs, r)) < 1e38]  # not float32
        x = np.array([r for r, _ in sel], dtype=dtype)
        y = np.array([lab for _, lab in sel])
        w = np.linspace(0.5, 2.0, cw) if weighted else None
        r = evaluate(x, y, weight=w, reduction=reduction, label_smoothing=eps, want_grad=True)
        losses, reduced, grads = mp_reference(x, y, w, -100, reduction, eps, "index",
                                              logps_of(x))
        assert np.all(np.isfinite(r.loss)) and np.all(np.isfinite(r.grad))
        assert max(rel(g, ref) for g, ref in zip(r.loss, losses)) <= 1e-12
        # without the gradient (a fused path for plain NLL of 16/32-bit logits): the same
        # losses to the last few bits (both are accurate; they round differently)
        np.testing.assert_allclose(cross_entropy(x, y, weight=w, reduction="none",
                                                 label_smoothing=eps), r.loss, rtol=4e-16, atol=0)
        if reduction != "none":
            assert rel(r.reduced, reduced) <= 1e-12
        for i in range(len(y)):
            # without smoothing every entry is a single term (a p_c, or -a (1 - p_y)): accurate
            # to its row's largest; with smoothing g = A p - a is a true difference (a
            # near-uniform row gives 3e-11 from terms of 1/3): accurate to its terms
            scale = max(abs(v) for v in grads[i])
            if eps > 0:
                with mp.workdps(50):
                    lp = logps_of(x)[i]
                    a = mp_coeffs(cw, y[i], "index", [mp.mpf(float(v)) for v in w]
                                  if w is not None else [mp.mpf(1)] * cw, eps, -100)
                    den = 1 if reduction != "mean" else mp.fsum(
                        (w[int(t)] if w is not None else 1) for t in y)
                    scale = max(scale, max(mp.fsum(a) * mp.exp(v) for v in lp) / den)
            # (+ the smallest subnormal: exp(-1e300) is 0 in float64)
            assert max(abs(mp.mpf(float(g)) - ref)
                       for g, ref in zip(r.grad[i], grads[i])) <= 1e-12 * scale + 5e-324


def test_confident_samples_keep_their_true_loss():
    x = np.array([[30.0, 0.0], [0.0, 1000.0]], dtype=np.float32)
    loss = cross_entropy(x, [0, 0], reduction="none")
    # log1p(exp(-30)): what log(softmax) rounds to 0
    assert 9e-14 < loss[0] < 1e-13
    assert rel(loss[0], mp.log1p(mp.exp(-30))) <= 1e-12
    assert loss[1] == 1000.0
    with np.errstate(all="ignore"):
        naive = -np.log(np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))[[0, 1], [0, 0]]
    assert naive[0] == 0 and not np.isfinite(naive[1])  # the failure this avoids


def test_saturated_gradient_keeps_relative_accuracy():
    # d/dx0 of loss([30, 0], 0) = p0 - 1 = -(1 - p0): p0 - 1 in float64 loses ~3 digits
    g = cross_entropy_grad(np.array([[30.0, 0.0]], dtype=np.float32), [0])
    with mp.workdps(50):
        q = 1 / (1 + mp.exp(30))
    assert rel(g[0, 0], -q) <= 1e-13
    assert rel(g[0, 1], q) <= 1e-13


def test_random_finite_logits_never_give_nan_or_inf():
    rng = np.random.default_rng(7)
    scales = 10.0 ** rng.uniform(-3, 300, size=(200, 1))
    x = rng.uniform(-1, 1, size=(200, 12)) * scales
    y = rng.integers(0, 12, 200)
    for eps in (0.0, 0.3):
        r = evaluate(x, y, label_smoothing=eps, weight=np.arange(1.0, 13.0), want_grad=True)
        assert np.all(np.isfinite(r.loss)) and np.all(np.isfinite(r.grad))
        assert math.isfinite(r.reduced)


# ----------------------------------------------------------------------------
# PyTorch


def _torch_loss_grad(F, torch, x, target, w, ii, reduction, eps):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(target)
    wt = torch.tensor(w, dtype=torch.float64) if w is not None else None
    out = F.cross_entropy(xt, tt, weight=wt, ignore_index=ii, reduction=reduction,
                          label_smoothing=eps)
    (out.sum() if reduction == "none" else out).backward()
    return out.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("reduction,eps,weighted,tkind", COMBOS)
def test_agrees_with_torch(reduction, eps, weighted, tkind, torch):
    F = torch.nn.functional
    target, ii = TARGETS[tkind]
    w = W if weighted else None
    ref, gref = _torch_loss_grad(F, torch, X, target, w, ii, reduction, eps)
    r = evaluate(X, target, weight=w, ignore_index=ii, reduction=reduction,
                 label_smoothing=eps, want_grad=True)
    got = r.loss if reduction == "none" else np.array(r.reduced)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(ref == got, 0.0, np.abs(got - ref) / np.abs(ref))
    assert err.max() <= 1e-12
    assert np.abs(r.grad - gref).max() <= 1e-12 * np.abs(gref).max()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_all_ignored_agrees_with_torch(reduction, eps, torch):
    y = np.full(N, -100)
    ref, gref = _torch_loss_grad(torch.nn.functional, torch, X, y, W, -100, reduction, eps)
    r = evaluate(X, y, weight=W, reduction=reduction, label_smoothing=eps, want_grad=True)
    if reduction == "mean":
        assert math.isnan(r.reduced) and np.isnan(ref)
    elif reduction == "sum":
        assert r.reduced == ref == 0
    else:
        assert np.array_equal(r.loss, ref)
    assert np.array_equal(r.grad, gref)  # zeros: every sample is ignored


def test_all_ignored_mean_is_nan():
    r = evaluate(X, np.full(N, 3), ignore_index=3)
    assert math.isnan(r.reduced) and r.all_ignored and r.counted == 0
    assert math.isnan(cross_entropy(X, np.full(N, -100)))
    assert cross_entropy(X, np.full(N, -100), reduction="sum") == 0


def test_torch_float32_logits_and_batch_of_mnist_size(torch):
    x = RNG.normal(size=(500, 10)).astype(np.float32) * 4
    y = RNG.integers(0, 10, 500)
    ref = torch.nn.functional.cross_entropy(torch.tensor(x, dtype=torch.float64),
                                            torch.tensor(y)).item()
    assert rel(cross_entropy(x, y), mp.mpf(ref)) <= 1e-12


# ----------------------------------------------------------------------------
# gradient against finite differences


@pytest.mark.parametrize("reduction,eps,weighted,tkind", [
    ("mean", 0.0, False, "index"), ("mean", 0.1, True, "index-ignored"),
    ("sum", 1.0, True, "index-ignore4"), ("none", 0.1, False, "index"),
    ("mean", 0.1, True, "prob"), ("sum", 0.0, False, "prob"),
])
def test_gradient_matches_central_differences(reduction, eps, weighted, tkind):
    target, ii = TARGETS[tkind]
    w = W if weighted else None
    x = X[:4].copy()
    target = target[:4]

    def f(z):
        out = cross_entropy(z, target, weight=w, ignore_index=ii, reduction=reduction,
                            label_smoothing=eps)
        return float(np.sum(out))

    g = cross_entropy_grad(x, target, weight=w, ignore_index=ii, reduction=reduction,
                           label_smoothing=eps)
    h = 1e-5
    fd = np.empty_like(x)
    for i, j in itertools.product(range(x.shape[0]), range(x.shape[1])):
        xp, xm = x.copy(), x.copy()
        xp[i, j] += h
        xm[i, j] -= h
        fd[i, j] = (f(xp) - f(xm)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


# ----------------------------------------------------------------------------
# nll_loss, input kinds


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_of_log_softmax_is_cross_entropy(reduction, weighted):
    w = W if weighted else None
    lp = log_softmax(X)
    a = nll_loss(lp, Y_IGN, weight=w, reduction=reduction)
    b = cross_entropy(X, Y_IGN, weight=w, reduction=reduction)
    np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)


def test_nll_loss_is_minus_weighted_input_at_label():
    lp = -RNG.uniform(0.1, 5, size=(5, 4))   # not normalised: NLL just reads it
    y = np.array([0, 3, 1, 1, 2])
    w = np.array([1.0, 2.0, 0.5, 4.0])
    per = nll_loss(lp, y, weight=w, reduction="none")
    assert np.array_equal(per, -w[y] * lp[np.arange(5), y])
    assert nll_loss(lp, y, weight=w) == pytest.approx(
        math.fsum(-w[y] * lp[np.arange(5), y]) / w[y].sum(), rel=1e-15)


def test_input_kinds():
    p = np.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    r = evaluate(p, [1, 2], input_kind="probs", reduction="none")
    assert np.isinf(r.loss[0]) and r.loss[0] > 0          # exact 0 on the true class
    assert r.loss[1] == pytest.approx(-math.log(0.5), rel=1e-15)
    # an exact 0 on a class the target gives no mass costs nothing (PyTorch: 0 * -inf = nan)
    r2 = evaluate(p, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), input_kind="probs",
                  reduction="none")
    assert r2.loss.tolist() == pytest.approx([-math.log(0.5), -math.log(0.5)], rel=1e-15)
    lp = np.log(p[1:])
    assert evaluate(lp, [0], input_kind="log-probs").reduced == -lp[0, 0]


# ----------------------------------------------------------------------------
# summary statistics


def test_summary_statistics_against_independent_computation():
    rng = np.random.default_rng(3)
    n, c = 400, 8
    x = rng.normal(size=(n, c)) * 3
    x[:5, 0] = 60.0                      # 5 saturated samples of class 0 (float64: 1-p < eps)
    x[5:8, 2] = 20.0                     # confident, not saturated in float64
    y = rng.integers(0, c, n)
    y[:8] = [0, 0, 0, 0, 0, 2, 2, 2]
    y[[10, 20, 30]] = -100
    r = evaluate(x, y)
    keep = y != -100
    xs, ys = x[keep], y[keep]
    lse = np.array([float(mp.log(mp.fsum(mp.exp(mp.mpf(v)) for v in row))) for row in xs])
    nll = lse - xs[np.arange(len(ys)), ys]
    p = np.exp(xs - lse[:, None])
    assert r.ignored.sum() == 3 and r.counted == n - 3
    assert r.accuracy == np.mean(np.argmax(xs, axis=1) == ys)
    rank = np.array([np.sum(row > row[t]) for row, t in zip(xs, ys)])
    assert r.top5_accuracy == np.mean(rank < 5)
    assert 0 < r.top5_accuracy < 1 and r.top5_accuracy > r.accuracy
    assert r.perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-12)
    assert r.mean_entropy == pytest.approx(np.mean(-(p * np.log(p)).sum(axis=1)), rel=1e-10)
    # vanished: 1 - p(true) <= eps; the 5 rows at 60 are, the 3 at 20 are not
    others = np.ones_like(p, dtype=bool)
    others[np.arange(len(ys)), ys] = False
    one_minus = np.where(others, p, 0.0).sum(axis=1)   # 1 - p(true), no cancellation
    assert r.vanished(2.2e-16) == int(np.sum(one_minus <= 2.2e-16)) == 5
    assert r.vanished(1e-6) == int(np.sum(one_minus <= 1e-6)) == 8
    # smoothing keeps the gradient alive at p(true) = 1: nothing has vanished
    assert evaluate(x, y, label_smoothing=0.1).vanished(1e-6) == 0


def test_perplexity_ignores_weights_and_smoothing():
    a = evaluate(X, Y, weight=W, label_smoothing=0.3)
    b = evaluate(X, Y)
    assert a.perplexity == b.perplexity
    assert a.mean_loss != b.mean_loss


def test_nan_rows_are_not_counted_correct():
    x = np.array([[np.nan, 0.0, 1.0], [3.0, 0.0, 1.0]])
    r = evaluate(x, [0, 0])
    assert r.correct.tolist() == [False, True]
    assert r.top5.tolist() == [False, True]
    assert np.isnan(r.loss[0])


# ----------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("kwargs,target,match", [
    ({}, [0, 1, 2], r"3 labels for 9 rows"),
    ({}, np.r_[Y[:4], 6, Y[5:]], r"label 4 is 6, outside \[0, 6\)"),
    ({}, np.r_[Y[:4], -1, Y[5:7], 9, 0], r"label 4 is -1.*2 label\(s\)"),
    ({}, np.r_[Y[:3].astype(float), 1.5, Y[4:]], r"label 3 is 1.5, not an integer"),
    ({}, np.r_[Y[:3].astype(float), 1e20, Y[4:]], r"label 3 is 1e\+20"),
    ({}, np.r_[Y[:3].astype(float), np.nan, Y[4:]], r"label 3 is nan"),
    ({}, np.array(["a"] * N), r"dtype"),
    ({"weight": W[:4]}, Y, r"weight: 4 class weights for 6 classes"),
    ({"weight": np.r_[W[:2], -1.0, W[3:]]}, Y, r"weight 2 is -1.0"),
    ({"label_smoothing": 1.5}, Y, r"label smoothing must be in \[0, 1\], got 1.5"),
    ({"label_smoothing": -0.1}, Y, r"label smoothing"),
    ({"ignore_index": 0}, T, r"ignore_index=0 is not supported with probability"),
    ({}, np.r_[T[:2], [T[2] * 1.01], T[3:]], r"probability target row 2 sums to"),
    ({}, np.r_[T[:6], [np.r_[-0.5, 1.5, 0, 0, 0, 0]], T[7:]],
     r"probability target row 6, class 0 is -0.5"),
    ({}, T[:5], r"shape \(5, 6\)"),
    ({"reduction": "avg"}, Y, r"reduction must be one of"),
])
def test_validation_errors_name_index_and_value(kwargs, target, match):
    with pytest.raises(ValueError, match=match):
        evaluate(X, target, **kwargs)


def test_docstring_examples_hold():
    for mod in (xent, labels_mod):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0 and res.attempted > 0, mod.__name__


# ----------------------------------------------------------------------------
# reviewer's bugs: sums past float64's range, the error's article, same-shape targets


HUGE = np.array([[0.0, 2.0**1023], [0.0, 2.0**1023]])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_sum_beyond_float64_range_is_inf_not_an_exception(reduction):
    # each loss is 2**1023 (finite); their exact sum 2**1024 overflows, as in torch
    assert cross_entropy(HUGE, [0, 0], reduction=reduction) == math.inf
    assert math.isinf(nll_loss(-HUGE, [1, 1], reduction=reduction))


def test_mean_properties_beyond_float64_range_are_inf():
    r = evaluate(HUGE, [0, 0], reduction="none")
    assert np.all(r.loss == 2.0**1023)
    assert r.mean_loss == math.inf and r.mean_nll == math.inf and r.perplexity == math.inf
    # entropy: a sum the reviewer named too, through the same exact sum
    r.entropy[:] = 2.0**1023
    assert r.mean_entropy == math.inf


def test_exact_sum_is_exact_where_fsum_overflows_midway():
    # math.fsum raises on 1e308 + 1e308 - 1e308 although the sum is 1e308
    with pytest.raises(OverflowError):
        math.fsum([1e308, 1e308, -1e308])
    assert xent.exact_sum([1e308, 1e308, -1e308]) == 1e308
    assert xent.exact_sum([-(2.0**1023)] * 2) == -math.inf
    assert math.isnan(xent.exact_sum([math.inf, -math.inf]))
    assert xent.exact_sum([0.1] * 10) == 1.0


def test_bad_target_shape_message_reads_well():
    with pytest.raises(ValueError) as exc:
        evaluate(np.zeros((2, 3)), np.zeros((2, 2)))
    msg = str(exc.value)
    assert "an 2" not in msg
    assert msg == ("labels have shape (2, 2): expected 2 class indices, or probability targets "
                   "of the logits' shape (2, 3)")


def test_same_shape_float_target_with_one_class_is_probabilities():
    """(N, 1) float target for (N, 1) logits: probabilities, as PyTorch reads it."""
    x = np.array([[3.0], [-2.0]])
    r = evaluate(x, np.array([[1.0], [1.0]]), reduction="none")
    assert r.target_kind == "prob"
    assert r.loss.tolist() == [0.0, 0.0]
    # as indices a 0.0 column would be class 0 (loss 0); as probabilities it sums to 0
    with pytest.raises(ValueError, match="probability target row 0 sums to 0.0"):
        evaluate(x, np.array([[0.0], [0.0]]))
    # a 1-D float row for 1-D logits of one class too
    assert cross_entropy(np.array([5.0]), np.array([1.0])) == 0.0
    # integer (N, 1) columns and (N,) floats stay class indices
    assert evaluate(x, np.array([[0], [0]])).target_kind == "index"
    assert evaluate(x, np.array([0.0, 0.0])).target_kind == "index"


def test_same_shape_float_target_with_one_class_agrees_with_torch(torch):
    x = np.array([[3.0], [-2.0], [0.5]])
    t = np.array([[1.0], [1.0], [1.0]])
    for reduction in ("none", "sum", "mean"):
        ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(t),
                                                reduction=reduction).numpy()
        np.testing.assert_array_equal(cross_entropy(x, t, reduction=reduction), ref)


# ----------------------------------------------------------------------------
# block-wise evaluation (streaming) equals the whole-array one


def _assert_same_result(a, b):
    for f in xent._PER_SAMPLE:
        va, vb = getattr(a, f), getattr(b, f)
        assert va.dtype == vb.dtype and np.array_equal(va, vb, equal_nan=va.dtype.kind == "f"), f
    for f in ("reduction", "target_kind"):
        assert getattr(a, f) == getattr(b, f)
    for f in ("reduced", "denominator", "mean_loss", "mean_nll", "mean_entropy", "accuracy",
              "top5_accuracy", "perplexity"):
        va, vb = getattr(a, f), getattr(b, f)
        assert va == vb or (math.isnan(va) and math.isnan(vb)), f
    assert a.vanished(1e-7) == b.vanished(1e-7)


def _blocks(x, sizes):
    out, s = [], 0
    for k in itertools.cycle(sizes):
        if s >= len(x):
            return out
        out.append((s, x[s:s + k].copy()))
        s += k


def test_blocks_equal_whole_array_on_mnist():
    from conftest import SAMPLES
    x = np.load(os.path.join(SAMPLES, "mnist_lenet_logits.npy"))
    y = np.load(os.path.join(SAMPLES, "mnist_lenet_labels.npy"))
    whole = evaluate(x, y)
    for sizes in ([1], [7, 13], [1000], [len(x)]):
        _assert_same_result(evaluate_blocks(_blocks(x, sizes), len(x), x.shape[1], y), whole)
    # float64 logits take the general (not the fused) path
    x64 = x.astype(np.float64)
    _assert_same_result(evaluate_blocks(_blocks(x64, [333]), len(x), 10, y), evaluate(x64, y))


@pytest.mark.parametrize("reduction,eps,weighted,tkind", COMBOS)
def test_blocks_equal_whole_array_for_every_option(reduction, eps, weighted, tkind):
    target, ii = TARGETS[tkind]
    w = W if weighted else None
    opts = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=eps)
    for x in (X, X.astype(np.float32)):
        whole = evaluate(x, target, **opts)
        for sizes in ([1], [2, 3], [4]):
            part = evaluate_blocks(_blocks(x, sizes), N, C, target, **opts)
            _assert_same_result(part, whole)


def test_blocks_with_special_rows_and_input_kinds():
    x = np.array([[0.0, np.inf, 1.0], [np.nan, 0.0, 0.0], [-np.inf] * 3, [1.0, 2.0, 3.0],
                  [1e30, -1e30, 0.0]], dtype=np.float32)
    y = np.array([0, 1, 2, -100, 0])
    for kind in ("logits", "log-probs"):
        whole = evaluate(x, y, input_kind=kind)
        _assert_same_result(evaluate_blocks(_blocks(x, [2]), 5, 3, y, input_kind=kind), whole)
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    _assert_same_result(evaluate_blocks(_blocks(p, [1]), 2, 3, [2, 1], input_kind="probs"),
                        evaluate(p, [2, 1], input_kind="probs"))


def test_blocks_errors_name_the_row_in_the_whole_array():
    y = np.array([0, 1, 2, 7, 0, 1])
    with pytest.raises(ValueError, match=r"label 3 is 7, outside \[0, 4\)"):
        evaluate_blocks(_blocks(np.zeros((6, 4)), [2]), 6, 4, y)
    with pytest.raises(ValueError, match="5 labels for 6 rows"):
        evaluate_blocks(_blocks(np.zeros((6, 4)), [2]), 6, 4, y[:5])
    with pytest.raises(ValueError, match="covered 4 of 6 rows"):
        evaluate_blocks(_blocks(np.zeros((4, 4)), [2]), 6, 4, y % 4)
    with pytest.raises(ValueError, match="does not continue"):
        evaluate_blocks([(0, np.zeros((2, 4))), (3, np.zeros((3, 4)))], 6, 4, y % 4)


def test_blocks_of_no_rows_equal_the_empty_result():
    empty = np.zeros((0, 3))
    for reduction in ("mean", "sum"):
        a = evaluate_blocks([(0, empty)], 0, 3, np.zeros(0, dtype=int), reduction=reduction)
        b = evaluate(empty, np.zeros(0, dtype=int), reduction=reduction)
        _assert_same_result(a, b)


# ----------------------------------------------------------------------------
# gradient check with the user's options (grad.check_grad's "xent")


@pytest.mark.parametrize("reduction,eps,weighted,tkind", COMBOS)
def test_check_grad_passes_with_every_option(reduction, eps, weighted, tkind):
    from smx_cli.core.grad import check_grad
    target, ii = TARGETS[tkind]
    opts = dict(weight=W if weighted else None, ignore_index=ii, label_smoothing=eps)
    res = evaluate(X, target, reduction=reduction, **opts)
    div = res.denominator if reduction == "mean" else 1.0
    (c,) = check_grad(X, labels=target, functions=("xent",), xent_options=opts, xent_divisor=div)
    counted = N if tkind == "prob" else int((target != ii).sum())
    assert c.passed and c.rows_checked == min(8, counted), c  # ignored rows are not drawn
    assert c.atol == pytest.approx(1e-8 / div)
    assert c.max_rel_error < 1e-6


def test_check_grad_fails_when_an_option_is_dropped_from_the_gradient(monkeypatch):
    """The check sees the options: a gradient that forgets the smoothing fails it."""
    from smx_cli.core.grad import check_grad
    real = xent.evaluate

    def forgetful(x2, target, **kw):
        if kw.get("want_grad"):
            kw["label_smoothing"] = 0.0
        return real(x2, target, **kw)

    opts = dict(weight=W, ignore_index=-100, label_smoothing=0.1)
    (ok,) = check_grad(X, labels=Y, functions=("xent",), xent_options=opts)
    assert ok.passed
    monkeypatch.setattr(xent, "evaluate", forgetful)
    (bad,) = check_grad(X, labels=Y, functions=("xent",), xent_options=opts)
    assert not bad.passed and bad.max_rel_error > 1e-3


def test_check_grad_draws_counted_rows_only():
    from smx_cli.core.grad import check_grad
    y = np.full(N, -100)
    y[[2, 6]] = [1, 3]
    (c,) = check_grad(X, labels=y, functions=("xent",))
    assert c.rows_checked == 2 and c.passed


def test_ignored_sample_loss_is_plus_zero():
    """An ignored sample's loss is 0.0 (as PyTorch gives), not -0.0, on every path."""
    x = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])
    for kw in ({}, {"label_smoothing": 0.1}, {"weight": [1.0, 2.0, 0.5]}):
        for grad in (False, True):
            r = evaluate(x, [0, -100], reduction="none", want_grad=grad, **kw)
            assert r.loss[1] == 0.0 and not np.signbit(r.loss[1])
