"""Cross-entropy with PyTorch's semantics, computed accurately, and its gradient.

``cross_entropy`` matches ``torch.nn.functional.cross_entropy`` option for
option (``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``,
class-index or probability targets). The per-sample loss is taken from smx's
accurate log-softmax, never log(softmax(x)): for class y it is
logsumexp(x) - x_y with the dominant entry in the log1p form, so a confidently
correct sample keeps its tiny true loss and a confidently wrong one a finite
large loss. Reductions are summed exactly (``math.fsum``).

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

from smx_cli.softmax import compute

REDUCTIONS = ("mean", "sum", "none")
INPUT_KINDS = ("logits", "log-probs", "probs")
# rows per block: keeps every temporary far below 64 MB whatever N x C
_BLOCK_ELEMENTS = 1 << 18


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
        Predicted probability of the true class.
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

    @property
    def all_ignored(self) -> bool:
        return self.target_kind == "index" and bool(self.ignored.all())

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
        return math.fsum(self.loss[~self.ignored].tolist()) / n if n else math.nan

    @property
    def perplexity(self) -> float:
        m = self.mean_loss
        try:
            return math.exp(m)
        except OverflowError:
            return math.inf

    @property
    def mean_entropy(self) -> float:
        n = self.counted
        return math.fsum(self.entropy[~self.ignored].tolist()) / n if n else math.nan


# ----------------------------------------------------------------------------
# validation: ValueError with the index and value at fault


def check_options(reduction: str, label_smoothing: float, input_kind: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not (0.0 <= float(label_smoothing) <= 1.0):
        raise ValueError(f"label smoothing must be in [0, 1], got {label_smoothing!r}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")


def check_weight(weight, n_classes: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64).ravel()
    if w.size != n_classes:
        raise ValueError(f"weight has {w.size} values but the logits have {n_classes} classes")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"weight[{i}] = {w[i]!r} is negative or not finite; class weights "
                         "must be finite and >= 0")
    return w


def check_target(target, n_rows: int, n_classes: int, ignore_index: int,
                 tolerance: float = 1e-6) -> tuple[str, np.ndarray]:
    """Tell index targets from probability targets and validate them.

    Returns ``("index", int64 labels)`` or ``("prob", float64 (N, C))``.
    Index targets: N integers (integral floats are accepted), each in
    [0, C) or equal to ``ignore_index``. Probability targets: an N x C
    matrix whose rows are non-negative and sum to 1 within ``tolerance``.
    """
    t = np.asarray(target)
    if t.ndim == 2 and t.shape == (n_rows, n_classes) and t.dtype.kind == "f" \
            and not (n_classes == 1 and _integral(t)):
        if ignore_index >= 0:
            raise ValueError(f"ignore_index={ignore_index} is not supported with probability "
                             "targets (as in PyTorch); leave it at -100")
        t = t.astype(np.float64)
        bad = ~np.isfinite(t) | (t < 0)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"probability target row {i}, class {j} is {t[i, j]!r}: "
                             "targets must be finite and >= 0")
        sums = t.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > tolerance)
        if off.size:
            i = int(off[0])
            raise ValueError(f"probability target row {i} sums to {sums[i]!r}, not 1 "
                             f"(tolerance {tolerance:g}); {off.size} row(s) are off")
        return "prob", t
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"labels have shape {t.shape}: expected {n_rows} class indices or an "
                         f"{n_rows} x {n_classes} matrix of probabilities")
    if t.shape[0] != n_rows:
        raise ValueError(f"{t.shape[0]} labels for {n_rows} rows of logits")
    if t.dtype.kind == "f":
        frac = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
        if frac.size:
            i = int(frac[0])
            raise ValueError(f"label {i} is {t[i]!r}, not an integer class index")
    elif t.dtype.kind not in "iub":
        raise ValueError(f"labels have dtype {t.dtype}: expected integer class indices")
    labels = t.astype(np.int64)
    bad = np.flatnonzero(((labels < 0) | (labels >= n_classes)) & (labels != ignore_index))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"label {i} is {labels[i]}, outside [0, {n_classes}) and not the "
                         f"ignore index {ignore_index}; {bad.size} label(s) out of range")
    return "index", labels


def _integral(t: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(t) & (t == np.round(t))))


# ----------------------------------------------------------------------------
# the computation


def _log_probs(xb: np.ndarray, input_kind: str) -> np.ndarray:
    """float64 log-probabilities of a block, by input kind."""
    if input_kind == "logits":
        return compute(xb, "log").values.astype(np.float64, copy=False)
    xb = xb.astype(np.float64)
    if input_kind == "log-probs":
        return xb
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(xb)  # an exact 0 gives -inf: an infinite loss, reported


def evaluate(x2: np.ndarray, target, *, weight=None, ignore_index: int = -100,
             reduction: str = "mean", label_smoothing: float = 0.0,
             input_kind: str = "logits", want_grad: bool = False) -> XentResult:
    """Cross-entropy of (N, C) ``x2`` against ``target``, with every statistic.

    Parameters are those of :func:`cross_entropy`; ``want_grad`` also returns
    dL/dlogits (for ``input_kind='logits'``; for log-probs and probs the
    gradient is with respect to the logits those came from).

    Examples
    --------
    >>> r = evaluate(np.array([[2.0, 0.0], [0.0, 3.0]]), [0, 0])
    >>> r.correct.tolist(), round(r.reduced, 6)
    ([True, False], 1.59019)
    """
    check_options(reduction, label_smoothing, input_kind)
    x2 = np.asarray(x2)
    if x2.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {x2.shape}")
    n, n_classes = x2.shape
    if n_classes == 0:
        raise ValueError("the logits have no classes (0 columns)")
    kind, t = check_target(target, n, n_classes, int(ignore_index))
    w = check_weight(weight, n_classes)
    eps = float(label_smoothing)

    loss = np.zeros(n)
    predicted = np.zeros(n, dtype=np.int64)
    p_true = np.zeros(n)
    one_minus = np.zeros(n)
    margin = np.full(n, np.nan)
    entropy = np.zeros(n)
    top5 = np.zeros(n, dtype=bool)
    true_class = np.full(n, -1, dtype=np.int64)
    ignored = np.zeros(n, dtype=bool)
    grad = np.empty((n, n_classes)) if want_grad else None
    w_all = float(w.sum()) if w is not None else float(n_classes)
    k5 = min(5, n_classes)

    step = max(1, _BLOCK_ELEMENTS // n_classes)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for start in range(0, n, step):
            sl = slice(start, min(start + step, n))
            lp = _log_probs(np.asarray(x2[sl]), input_kind)
            rows = np.arange(lp.shape[0])
            if kind == "index":
                y = t[sl]
                ign = y == ignore_index
                yy = np.where(ign, 0, y)
                lp_y = lp[rows, yy]
                wy = w[yy] if w is not None else np.ones(len(yy))
                nll = -wy * lp_y
                if eps > 0:
                    smooth = -(lp @ w if w is not None else lp.sum(axis=1))
                    li = (1 - eps) * nll + (eps / n_classes) * smooth
                else:
                    li = nll
                li = np.where(ign, 0.0, li)
            else:
                tb = t[sl]
                ign = np.zeros(lp.shape[0], dtype=bool)
                yy = np.argmax(tb, axis=1)
                ts = tb * (1 - eps) + eps / n_classes if eps > 0 else tb
                wt = ts * w if w is not None else ts
                li = -(wt * lp).sum(axis=1)
                lp_y = lp[rows, yy]
            loss[sl] = li
            ignored[sl] = ign
            true_class[sl] = np.where(ign, -1, yy)
            pred = np.argmax(np.where(np.isnan(lp), -np.inf, lp), axis=1)
            predicted[sl] = pred
            p_true[sl] = np.exp(lp_y)
            one_minus[sl] = -np.expm1(lp_y)
            p = np.exp(lp)
            entropy[sl] = -np.where(p > 0, p * lp, 0.0).sum(axis=1)
            if n_classes > 1:
                others = lp.copy()
                others[rows, yy] = -np.inf
                margin[sl] = lp_y - others.max(axis=1)
            # true class among the k5 largest: fewer than k5 classes beat it
            top5[sl] = (lp > lp_y[:, None]).sum(axis=1) < k5
            if grad is not None:
                g = grad[sl]
                if kind == "index":
                    # (1-eps) w_y (p - e_y) + (eps/C) (W p - w)
                    np.multiply(p, ((1 - eps) * wy + (eps / n_classes) * w_all)[:, None], out=g)
                    g[rows, yy] -= (1 - eps) * wy
                    if eps > 0:
                        g -= (eps / n_classes) * (w if w is not None else 1.0)
                    g[ign] = 0.0
                else:
                    # sum_c w_c t'_c (p - e_c) = (sum_c w_c t'_c) p - w * t'
                    np.multiply(p, wt.sum(axis=1)[:, None], out=g)
                    g -= wt

    if kind == "index":
        counted = ~ignored
        wy_all = w[np.where(ignored, 0, true_class)] if w is not None else np.ones(n)
        denominator = math.fsum(wy_all[counted].tolist())
    else:
        denominator = float(n)
    total = math.fsum(loss.tolist())
    if reduction == "sum":
        reduced = total
    elif reduction == "mean":
        reduced = total / denominator if denominator else math.nan
    else:
        reduced = math.nan
    if grad is not None and reduction == "mean":
        if denominator:
            grad /= denominator
        else:
            grad[:] = np.nan
    correct = (predicted == true_class) & ~ignored
    return XentResult(loss, reduced, reduction, kind, true_class, predicted, p_true, margin,
                      correct, ignored, top5, entropy, one_minus, grad, denominator)


def cross_entropy(logits, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, input_kind: str = "logits"):
    """Cross-entropy loss with ``torch.nn.functional.cross_entropy``'s semantics.

    Parameters
    ----------
    logits : array_like, shape (N, C) or (C,)
        Unnormalised scores (or log-probabilities / probabilities with
        ``input_kind``).
    target : array_like
        N class indices, or an N x C matrix of class probabilities.
    weight : array_like of C floats, optional
        Per-class weights (>= 0).
    ignore_index : int
        Class-index targets equal to this are ignored (default -100).
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]
    input_kind : {'logits', 'log-probs', 'probs'}

    Returns
    -------
    float or ndarray
        The reduced loss, or the per-sample losses for ``reduction='none'``.
        Mean over all-ignored targets is NaN, as in PyTorch.

    Examples
    --------
    A confidently correct sample keeps its tiny loss (log(softmax) gives 0):

    >>> float(cross_entropy([[30.0, 0.0]], [0]))
    9.357622968839737e-14
    >>> float(cross_entropy([[0.0, 1000.0]], [0]))
    1000.0
    """
    x = np.asarray(logits)
    t = np.asarray(target)
    if x.ndim == 1:
        x = x[None, :]
        t = t.reshape(1, -1) if t.ndim == 1 and t.dtype.kind == "f" and t.size == x.shape[1] \
            and x.shape[1] > 1 else t.reshape(1)
    res = evaluate(x, t, weight=weight, ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, input_kind=input_kind)
    return res.loss if reduction == "none" else res.reduced


def nll_loss(log_probs, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of log-probabilities, as ``torch.nn.functional.nll_loss``.

    CrossEntropy = LogSoftmax + NLL: ``nll_loss(log_softmax(x), y)`` equals
    ``cross_entropy(x, y)``.

    Examples
    --------
    >>> float(nll_loss([[-0.1, -2.4]], [1]))
    2.4
    """
    return cross_entropy(log_probs, target, weight=weight, ignore_index=ignore_index,
                         reduction=reduction, input_kind="log-probs")


def cross_entropy_grad(logits, target, weight=None, ignore_index: int = -100,
                       reduction: str = "mean", label_smoothing: float = 0.0) -> np.ndarray:
    """dL/dlogits of :func:`cross_entropy`: softmax minus the (smoothed, weighted) target.

    For ``reduction='none'`` row i is the gradient of sample i's own loss.

    Examples
    --------
    >>> cross_entropy_grad([[0.0, 0.0]], [0]).tolist()
    [[-0.5, 0.5]]
    """
    x = np.atleast_2d(np.asarray(logits))
    res = evaluate(x, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, want_grad=True)
    return res.grad
