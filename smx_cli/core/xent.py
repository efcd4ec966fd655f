"""Cross-entropy with PyTorch's semantics, computed accurately, and its gradient.

``cross_entropy`` matches ``torch.nn.functional.cross_entropy`` option for
option (``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``,
class-index or probability targets). The per-sample loss is taken from smx's
accurate log-softmax, never log(softmax(x)): for class y it is
logsumexp(x) - x_y with the dominant entry in the log1p form, so a confidently
correct sample keeps its tiny true loss and a confidently wrong one a finite
large loss. Reductions are summed exactly (``math.fsum``; a sum past float64's
range is inf, as PyTorch gives, not an exception).

PyTorch's formulas, for class-index targets (aten LossNLL.cpp,
``cross_entropy_loss_label_smoothing``), with w the class weights (1 without
``weight``), eps the smoothing, C the classes and logp the log-softmax:

    nll_i    = -w[y_i] logp[i, y_i]
    smooth_i = -sum_c w[c] logp[i, c]
    loss_i   = (1 - eps) nll_i + (eps / C) smooth_i       (0 where y_i is ignored)
    mean     = sum_i loss_i / sum_{i not ignored} w[y_i]

so the smoothing term is divided by the *target* classes' weights too. For
probability targets t (``cross_entropy_loss_prob_target``):

    t'_i     = (1 - eps) t_i + eps / C
    loss_i   = -sum_c w[c] t'_ic logp[i, c]
    mean     = sum_i loss_i / N
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smx_cli.core import kernels, native, xent_native
from smx_cli.core.result import check_class_weights
from smx_cli.core.softmax import compute
# the checks live in xent_checks.py; importable from here as they always were
from smx_cli.core.xent_checks import (INPUT_KINDS, PROBS_TOLERANCE, REDUCTIONS,  # noqa: F401
                                      NotProbabilities, check_options, check_probs,
                                      check_target)

# rows per block: keeps every temporary far below 64 MB whatever N x C
_BLOCK_ELEMENTS = 1 << 18


def exact_sum(values) -> float:
    """The correctly rounded sum of ``values`` (``math.fsum``), inf where it overflows.

    ``math.fsum`` raises OverflowError when a partial sum leaves float64's
    range, even if the exact sum would not (1e308 + 1e308 - 1e308): the
    values are then summed scaled by 2**-64 (exact for all but subnormal
    parts) and scaled back, which rounds to +-inf only when the exact sum
    really overflows. inf + -inf is NaN, as in PyTorch.

    Examples
    --------
    >>> exact_sum([2.0**1023, 2.0**1023])
    inf
    >>> exact_sum([1e308, 1e308, -1e308])
    1e+308
    >>> exact_sum([float("inf"), float("-inf")])
    nan
    """
    values = np.asarray(values, dtype=np.float64).ravel().tolist()
    try:
        return math.fsum(values)
    except OverflowError:
        return math.fsum(v * 2.0**-64 for v in values) * 2.0**64  # float mul: inf, no raise
    except ValueError:  # -inf + inf
        return math.nan


@dataclass
class XentResult:
    """Everything ``smx xent`` reports, per sample and reduced.

    Attributes
    ----------
    loss : ndarray (N,)
        Per-sample loss as PyTorch's ``reduction='none'`` gives it (0 for
        ignored samples).
    reduced : float
        The loss under ``reduction`` (NaN for mean when every sample is
        ignored, as in PyTorch; see ``all_ignored``).
    reduction : str
    target_kind : str
        ``index`` or ``prob``.
    true_class : ndarray (N,)
        Label (index targets) or argmax of the target distribution; -1 where
        ignored.
    predicted : ndarray (N,)
        Argmax of the predicted distribution.
    p_true : ndarray (N,)
        Predicted probability of the true class (NaN where ignored).
    margin : ndarray (N,)
        logp[true] - max_{c != true} logp[c]: > 0 when correct (NaN with
        one class).
    correct, ignored, top5 : ndarray of bool (N,)
    entropy : ndarray (N,)
        Entropy of the predicted distribution, in nats.
    one_minus_p_true : ndarray (N,)
        1 - p_true computed without cancellation (-expm1(logp[true])).
    grad : ndarray (N, C) or None
        dL/dlogits for the reduced loss (for ``none``: of each sample's own
        loss), when requested.
    denominator : float
        What ``mean`` divides by (sum of target weights, or N for prob targets).
    nll : ndarray (N,)
        The plain cross-entropy -sum_c t_ic logp_ic of each sample, without
        weights or smoothing (-logp[true] for index targets; 0 if ignored):
        what perplexity is the exponential of.
    residual : ndarray (N,)
        max_c |p_c - a_c / A| (the sample's gradient A p - a over A): how far
        the softmax is from the (smoothed, weighted) target; NaN where the
        sample has no weight (ignored, or weight 0). 1 - p_true without
        smoothing.
    engine : str
        What computed the per-sample values: "numpy", or the compiled core
        ("native-avx512", ...; see :func:`smx_cli.core.native.engine` and
        :mod:`smx_cli.core.xent_native` for what it covers).
    """

    loss: np.ndarray
    reduced: float
    reduction: str
    target_kind: str
    true_class: np.ndarray
    predicted: np.ndarray
    p_true: np.ndarray
    margin: np.ndarray
    correct: np.ndarray
    ignored: np.ndarray
    top5: np.ndarray
    entropy: np.ndarray
    one_minus_p_true: np.ndarray
    grad: np.ndarray | None
    denominator: float
    nll: np.ndarray
    residual: np.ndarray
    engine: str = "numpy"

    @property
    def all_ignored(self) -> bool:
        return self.target_kind == "index" and bool(self.ignored.all())

    # the counts a summary shows (smx_cli.dask.xent.XentSummary has the same, merged)
    @property
    def n_samples(self) -> int:
        return len(self.loss)

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    @property
    def n_ignored(self) -> int:
        return int(self.ignored.sum())

    @property
    def n_nonfinite(self) -> int:
        """Counted samples whose loss is NaN or inf."""
        return int((~np.isfinite(self.loss) & ~self.ignored).sum())

    @property
    def counted(self) -> int:
        return int((~self.ignored).sum())

    @property
    def accuracy(self) -> float:
        n = self.counted
        return float(self.correct[~self.ignored].sum() / n) if n else math.nan

    @property
    def top5_accuracy(self) -> float:
        n = self.counted
        return float(self.top5[~self.ignored].sum() / n) if n else math.nan

    @property
    def mean_loss(self) -> float:
        """Unweighted mean of the per-sample losses of counted samples."""
        n = self.counted
        return exact_sum(self.loss[~self.ignored]) / n if n else math.nan

    @property
    def mean_nll(self) -> float:
        """Mean plain cross-entropy (no weights, no smoothing) of counted samples."""
        n = self.counted
        return exact_sum(self.nll[~self.ignored]) / n if n else math.nan

    @property
    def perplexity(self) -> float:
        """exp of the mean plain cross-entropy: exp(mean -log p(true))."""
        m = self.mean_nll
        try:
            return math.exp(m)
        except OverflowError:
            return math.inf

    def vanished(self, eps: float) -> int:
        """Counted samples whose gradient has vanished: softmax within ``eps`` of the target.

        Without smoothing, for index targets: 1 - p(true) <= eps. With label
        smoothing the gradient of a saturated sample does not vanish (it
        pushes p towards the smoothed target), and such a sample is not counted.
        """
        return int(((self.residual <= eps) & ~self.ignored).sum())

    @property
    def mean_entropy(self) -> float:
        n = self.counted
        return exact_sum(self.entropy[~self.ignored]) / n if n else math.nan


def _log_probs(xb: np.ndarray, input_kind: str, threads: int | None = None) -> np.ndarray:
    """float64 log-probabilities of a block, by input kind.

    Logits of any format are widened to float64 first (exactly), so the loss
    is that of the given logits to float64 accuracy, not rounded to float32.
    """
    xb = np.asarray(xb, dtype=np.float64)
    if input_kind == "logits":
        return compute(xb, "log", threads=threads).values
    if input_kind == "log-probs":
        return xb
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(xb)  # an exact 0 gives -inf: an infinite loss, reported


def _coefficients(kind, tb, lp_shape, ign, yy, w, eps, n_classes) -> np.ndarray:
    """a such that loss_i = -sum_c a_ic logp_ic (0 rows for ignored samples).

    index: a_ic = (1 - eps) w_y [c == y] + (eps / C) w_c;
    prob:  a_ic = w_c ((1 - eps) t_ic + eps / C).
    """
    if kind == "index":
        rows = np.arange(lp_shape[0])
        a = np.zeros(lp_shape)
        if eps > 0:
            a += (eps / n_classes) * (w if w is not None else 1.0)
        wy = w[yy] if w is not None else 1.0
        a[rows, yy] += (1 - eps) * wy
        a[ign] = 0.0
        return a
    ts = tb * (1 - eps) + eps / n_classes if eps > 0 else tb
    return ts * w if w is not None else ts.copy()


def evaluate(x2: np.ndarray, target, *, weight=None, ignore_index: int = -100,
             reduction: str = "mean", label_smoothing: float = 0.0,
             input_kind: str = "logits", want_grad: bool = False,
             threads: int | None = None,
             target_tolerance: float | None = 1e-6) -> XentResult:
    """Cross-entropy of (N, C) ``x2`` against ``target``, with every statistic.

    Parameters are those of :func:`cross_entropy`; ``want_grad`` also returns
    dL/dlogits (for ``input_kind='logits'``; for log-probs and probs the
    gradient is with respect to the logits those came from).

    Notes
    -----
    Each loss is -sum_c a_ic logp_ic with the coefficients a of the module
    docstring; a term with a_ic = 0 counts 0 even where logp_ic = -inf (a
    probability of exactly 0 on a class the target gives no mass), where
    PyTorch's 0 * -inf gives NaN. The gradient of that sample's loss is
    A p - a with A = sum_c a_c, evaluated as p_c (A - a_c) - a_c (1 - p_c)
    with 1 - p_c = -expm1(logp_c), so a saturated sample (p_true near 1)
    keeps the relative accuracy of its tiny gradient.

    Engines: class-index and probability targets of logits (with
    ``want_grad`` too) run on the compiled core when it is active (:mod:`smx_cli.core.xent_native` says
    what it covers; ``XentResult.engine`` says what ran), everything else on
    the numpy kernels. On either engine, against the exact values of the
    given logits (eps = 2**-52; asserted by ``tests/test_xent_engines.py``
    against 50-digit mpmath on adversarial rows): loss, nll and entropy
    within 16 eps relative; p(true) and 1 - p(true) within
    16 eps (1 + |log p(true)|) relative; the margin within
    16 eps (|log p(true)| + |max_{c != true} log p_c|) absolute; the residual
    within 16 eps (1 + |log p(true)|) absolute; each plus 16 * 2**-1074
    below the normal range. Argmax, top-5 and correct are exact, and rows
    with NaN or +-inf give the same values on both.

    Examples
    --------
    >>> r = evaluate(np.array([[2.0, 0.0], [0.0, 3.0]]), [0, 0])
    >>> r.correct.tolist(), round(r.reduced, 6)
    ([True, False], 1.587758)
    """
    check_options(reduction, label_smoothing, input_kind)
    x2 = np.asarray(x2)
    if x2.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {x2.shape}")
    n, n_classes = x2.shape
    if n_classes == 0:
        raise ValueError("the logits have no classes (0 columns)")
    if input_kind == "probs":
        check_probs(x2)
    # probability targets the compiled kernel takes are checked inside its sweep
    defer = xent_native.covers("prob", input_kind, want_grad, x2.dtype)
    kind, t = check_target(target, n, n_classes, int(ignore_index), target_tolerance,
                           defer_prob=defer)
    w = None if weight is None else check_class_weights(weight, n_classes)
    eps = float(label_smoothing)

    loss = np.zeros(n)
    nll = np.zeros(n)
    predicted = np.zeros(n, dtype=np.int64)
    p_true = np.zeros(n)
    one_minus = np.zeros(n)
    margin = np.full(n, np.nan)
    entropy = np.zeros(n)
    top5 = np.zeros(n, dtype=bool)
    true_class = np.full(n, -1, dtype=np.int64)
    ignored = np.zeros(n, dtype=bool)
    residual = np.full(n, np.nan)
    has_nan = np.zeros(n, dtype=bool)
    grad = np.empty((n, n_classes)) if want_grad else None
    k5 = min(5, n_classes)

    def general(sl, threads=None):
        """Every statistic of the rows ``sl`` (a slice or index array) from log-probs."""
        lp = _log_probs(x2[sl], input_kind, threads)
        rows = np.arange(lp.shape[0])
        if kind == "index":
            y = t[sl]
            ign = y == ignore_index
            yy = np.where(ign, 0, y)
            tb = None
        else:
            tb = np.asarray(t[sl], dtype=np.float64)  # float32 when the kernel took them
            ign = np.zeros(lp.shape[0], dtype=bool)
            yy = np.argmax(tb, axis=1)
        lp_y = lp[rows, yy]
        # plain class-index NLL: one coefficient per row, no N x C matrix needed
        sparse = kind == "index" and eps == 0 and not want_grad
        if sparse:
            wy = w[yy] if w is not None else np.ones(len(yy))
            wy = np.where(ign, 0.0, wy)
            loss[sl] = np.where(wy > 0, -wy * lp_y, 0.0)
        else:
            a = _coefficients(kind, tb, lp.shape, ign, yy, w, eps, n_classes)
            # a_ic = 0 contributes 0, also where logp_ic = -inf
            # (0 - sum, not -sum: an ignored sample's loss is 0, not -0.0)
            loss[sl] = 0.0 - np.where(a > 0, a * lp, 0.0).sum(axis=1)
        if kind == "index":
            nll[sl] = np.where(ign, 0.0, -lp_y)
        else:
            nll[sl] = -np.where(tb > 0, tb * lp, 0.0).sum(axis=1)
        ignored[sl] = ign
        true_class[sl] = np.where(ign, -1, yy)
        nan_row = np.isnan(lp).any(axis=1)
        pred = np.argmax(np.where(np.isnan(lp), -np.inf, lp), axis=1)
        predicted[sl] = pred
        # undefined for an ignored sample (it has no true class): NaN, not class 0's
        p_true[sl] = np.where(ign, np.nan, np.exp(lp_y))
        one_minus[sl] = np.where(ign, np.nan, -np.expm1(lp_y))
        p = np.exp(lp)
        entropy[sl] = -np.where(p > 0, p * lp, 0.0).sum(axis=1)
        if n_classes > 1:
            others = lp.copy()
            others[rows, yy] = -np.inf
            margin[sl] = np.where(ign, np.nan, lp_y - others.max(axis=1))
        # true class among the k5 largest: fewer than k5 classes beat it
        top5[sl] = ((lp > lp_y[:, None]).sum(axis=1) < k5) & ~nan_row
        if sparse:
            # g / A = p - e_y: its largest entry is 1 - p_y
            residual[sl] = np.where(wy > 0, one_minus[sl], np.nan)
        else:
            # the sample's own gradient A p - a, without cancellation at p ~ 1
            a_sum = a.sum(axis=1)
            g = p * (a_sum[:, None] - a)
            g -= np.where(a > 0, a * -np.expm1(lp), 0.0)
            # how far the softmax is from the target: max |p - a/A| (0: vanished)
            residual[sl] = np.where(a_sum > 0, np.abs(g).max(axis=1) / a_sum, np.nan)
            if grad is not None:
                grad[sl] = g
        top5[sl] &= ~ign
        has_nan[sl] = nan_row

    def fused(s0: int, s1: int) -> None:
        """Class-index loss of 16/32-bit logits rows s0:s1 in one sweep, no log-prob matrix.

        With k the argmax, d = x - x_k (exact in float64), e = exp(d) with
        e_k = 0 and L = log1p(sum e): logp_c = d_c - L (logp_k = -L), the
        entropy L - sum_c e_c d_c / (1 + sum e), and the margin d_y (y != k)
        or -log(max e) (y = k). Rows with a non-finite entry go to ``general``.
        """
        xb = x2[s0:s1]
        b = s1 - s0
        rows = np.arange(b)
        k = np.argmax(xb, axis=1)
        m = xb[rows, k].astype(np.float64)
        y = t[s0:s1]
        ign = y == ignore_index
        yy = np.where(ign, 0, y)
        d = kernels.work("xent_d", (b, n_classes))
        np.subtract(xb, m[:, None], out=d, casting="unsafe")
        e = kernels.work("xent_e", (b, n_classes))
        np.exp(d, out=e)
        e[rows, k] = 0.0
        rest = e.sum(axis=1)
        lse = np.log1p(rest)
        d_y = d[rows, yy]
        lp_y = np.where(yy == k, -lse, d_y - lse)
        top5_row = np.count_nonzero(d > d_y[:, None], axis=1) < k5
        # sum_c e_c d_c by numpy's pairwise sum (error O(log C) u; einsum's running
        # sum drifted by ~C u on flat rows of LM widths), d overwritten: last use
        dot = np.multiply(e, d, out=d).sum(axis=1)
        bad = ~np.isfinite(m) | ~np.isfinite(dot) | ~np.isfinite(rest)
        sl = slice(s0, s1)
        wy = np.where(ign, 0.0, w[yy] if w is not None else 1.0)
        loss[sl] = np.where(wy > 0, -wy * lp_y, 0.0)
        nll[sl] = np.where(ign, 0.0, -lp_y)
        ignored[sl] = ign
        true_class[sl] = np.where(ign, -1, yy)
        predicted[sl] = k
        p_true[sl] = np.where(ign, np.nan, np.exp(lp_y))
        om = np.where(ign, np.nan, -np.expm1(lp_y))
        one_minus[sl] = om
        entropy[sl] = lse - dot / (1.0 + rest)
        if n_classes > 1:
            margin[sl] = np.where(ign, np.nan, np.where(yy == k, -np.log(e.max(axis=1)), d_y))
        top5[sl] = top5_row & ~ign
        residual[sl] = np.where(wy > 0, om, np.nan)
        has_nan[sl] = False
        if bad.any():
            general(s0 + np.flatnonzero(bad), threads=1)

    def kernel_grad(redo):
        """The gradient A p - a on the compiled core (one pass per row from the logits);
        the rows it hands back join ``redo``."""
        if grad is None:
            return redo
        back = xent_native.grad_rows(x2, t, w, int(ignore_index), eps, grad, threads)
        return np.union1d(redo, back) if back.size else redo

    def kernel_prob() -> None:
        """Every statistic of probability targets from the compiled core's one sweep."""
        got, redo = xent_native.per_sample_prob(x2, t, w, eps, threads, validate=defer,
                                                tolerance=target_tolerance)
        redo = kernel_grad(redo)
        nll[:] = got["nll"]
        true_class[:] = got["true_class"]
        take(got, redo)

    def take(got, redo) -> None:
        """The statistics both kernels return, then their special rows on numpy."""
        loss[:] = got["loss"]
        predicted[:] = got["argmax"]
        p_true[:] = got["p_true"]
        one_minus[:] = -np.expm1(got["logp_true"])
        margin[:] = got["margin"]
        entropy[:] = got["entropy"]
        top5[:] = got["top5"]
        residual[:] = got["residual"]
        if redo.size:  # NaN or non-finite maximum: the numpy reference, as on that engine
            general(redo, threads=1)

    def kernel() -> None:
        """Every statistic from the compiled core's one sweep (xent_native covers which)."""
        if kind == "prob":
            return kernel_prob()
        got, redo = xent_native.per_sample(x2, t, w, int(ignore_index), eps, threads)
        redo = kernel_grad(redo)
        ign = t == ignore_index
        nll[:] = np.where(ign, 0.0, -got["logp_true"])  # logp_true is NaN where ignored
        ignored[:] = ign
        true_class[:] = np.where(ign, -1, t)
        take(got, redo)

    engine = native.engine() if xent_native.covers(kind, input_kind, want_grad, x2.dtype) \
        else "numpy"
    use_fused = (kind == "index" and input_kind == "logits" and eps == 0 and not want_grad
                 and x2.dtype.kind == "f" and x2.dtype.itemsize <= 4)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if engine != "numpy":
            kernel()
        elif use_fused:
            kernels.run_blocks(n, n_classes, fused, threads, block_elements=1 << 17)
        else:
            step = max(1, _BLOCK_ELEMENTS // n_classes)
            for start in range(0, n, step):
                general(slice(start, min(start + step, n)))

    denominator, reduced = _reduce(loss, ignored, true_class, kind, w, reduction)
    if grad is not None and reduction == "mean":
        if denominator:
            grad /= denominator
        elif ignored.all():
            grad[:] = 0.0  # every sample ignored: PyTorch's gradient is 0 (the loss NaN)
        else:
            grad[:] = np.nan  # 0/0: the target classes' weights sum to 0
    correct = (predicted == true_class) & ~ignored & ~has_nan
    return XentResult(loss, reduced, reduction, kind, true_class, predicted, p_true, margin,
                      correct, ignored, top5, entropy, one_minus, grad, denominator, nll,
                      residual, engine)


def counted_weights(ignored, true_class, w) -> np.ndarray:
    """The target-class weights of the counted samples (index targets): what the mean
    divides by, summed exactly. All ones without ``w``."""
    counted = ~np.asarray(ignored)
    if w is None:
        return np.ones(int(counted.sum()))
    return w[np.where(counted, true_class, 0)][counted]


def reduce_total(total: float, denominator: float, reduction: str) -> float:
    """The reduced loss from the exact sum of the per-sample losses.

    ``sum``: the total; ``mean``: total / denominator (0/0 or x/0 is NaN, as
    in PyTorch when every sample is ignored); ``none``: NaN (no scalar).
    Shared by :func:`evaluate` and the Dask summary (:mod:`smx_cli.dask.xent`).

    Examples
    --------
    >>> reduce_total(3.0, 2.0, "mean"), reduce_total(3.0, 0.0, "mean"), reduce_total(3.0, 2.0, "sum")
    (1.5, nan, 3.0)
    """
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / denominator if denominator else math.nan
    return math.nan


def _reduce(loss, ignored, true_class, kind, w, reduction) -> tuple[float, float]:
    """(denominator, reduced loss) from the per-sample losses, summed exactly.

    The mean divides by the sum of the counted samples' target-class weights
    (index targets) or by N (probability targets); 0/0 is NaN, as in PyTorch.
    """
    denominator = exact_sum(counted_weights(ignored, true_class, w)) if kind == "index" \
        else float(len(loss))
    return denominator, reduce_total(exact_sum(loss), denominator, reduction)


# The API functions (every layout PyTorch takes, and the LM's) live in xent_kdim.py and the
# row-block evaluation in xent_blocks.py; imported here so smx_cli.core.xent.<name> still works.
from smx_cli.core.xent_blocks import _PER_SAMPLE, evaluate_blocks  # noqa: E402,F401
from smx_cli.core.xent_kdim import (cross_entropy, cross_entropy_grad,  # noqa: E402
                                    nll_loss)

__all__ = ["REDUCTIONS", "INPUT_KINDS", "XentResult", "exact_sum", "check_options", "check_probs",
           "check_target", "evaluate", "evaluate_blocks", "cross_entropy",
           "nll_loss", "cross_entropy_grad"]


#: ``smx_cli.xent``: the library function behind ``smx xent`` (per-sample loss,
#: p(true), prediction, margin, entropy, and the summary), under the command's name
xent = evaluate
