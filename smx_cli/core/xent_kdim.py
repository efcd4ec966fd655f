"""K-dimensional cross-entropy: PyTorch's (N, C, d1, ..., dK) layout and the LM's (B, T, V).

``torch.nn.functional.cross_entropy`` takes input (C,), (N, C) or
(N, C, d1, ..., dK) -- the class axis is 1 (0 for a single row) -- with
class-index targets of the input's shape without the class axis ((), (N,),
(N, d1, ..., dK)), or probability targets of the input's own shape. Every
position is a sample: the loss of each is that of its row of C classes,
'mean' divides by the sum of the counted positions' target weights (index
targets) or by the number of positions (probability targets), 'none' gives
the losses in the targets' shape (a 0-d array for a single row).

That is exactly the 2-D computation on the rows obtained by moving the class
axis last and flattening the rest, which is how it is done here: the
reductions are exact sums, so the order of the positions does not matter.
Language models lay logits out as (batch, tokens, vocab): ``class_axis=-1``.

The public API functions (``cross_entropy``, ``nll_loss``,
``cross_entropy_grad``) are defined here and re-exported by
:mod:`smx_cli.core.xent`.
"""
from __future__ import annotations

import re

import numpy as np

from smx_cli.core import xent


def class_axis_of(ndim: int, class_axis: int | None) -> int:
    """The class axis, normalised: PyTorch's (1; 0 for a 1-D row) when None.

    Examples
    --------
    >>> class_axis_of(3, None), class_axis_of(3, -1), class_axis_of(1, None)
    (1, 2, 0)
    """
    if ndim == 0:
        raise ValueError("the logits are a single number (0-d); they need a class axis")
    if class_axis is None:
        return 1 if ndim >= 2 else 0
    if not -ndim <= class_axis < ndim:
        raise ValueError(f"class axis {class_axis} is out of range for {ndim}-d logits")
    return class_axis % ndim


def _position(i: int, lead: tuple[int, ...]) -> str:
    return str(tuple(int(v) for v in np.unravel_index(i, lead))) if len(lead) > 1 else str(i)


def relocate(exc: ValueError, lead: tuple[int, ...]) -> ValueError:
    """The 2-D error with its flat row index turned into the position in ``lead``."""
    msg = re.sub(r"^(label|probability target row) (\d+)",
                 lambda m: f"{m.group(1).replace(' row', '')} at {_position(int(m.group(2)), lead)}",
                 str(exc))
    return ValueError(msg) if len(lead) > 1 else exc


def to_rows(logits, target, class_axis: int | None = None):
    """(x2, t2, lead_shape, axis): logits as (M, C) rows and the targets to match.

    Probability targets (a floating array of the logits' shape) get the same
    move; index targets must have the logits' shape without the class axis.

    Examples
    --------
    >>> x2, t2, lead, ax = to_rows(np.zeros((2, 3, 4)), np.zeros((2, 4), int))
    >>> x2.shape, t2.shape, lead, ax
    ((8, 3), (8,), (2, 4), 1)
    """
    x = np.asarray(logits)
    t = np.asarray(target)
    ax = class_axis_of(x.ndim, class_axis)
    moved = np.moveaxis(x, ax, -1)
    lead = moved.shape[:-1]
    c = moved.shape[-1]
    x2 = moved.reshape(-1, c)
    if t.shape == x.shape and t.dtype.kind == "f":
        return x2, np.moveaxis(t, ax, -1).reshape(-1, c), lead, ax
    if t.shape != lead:
        want = f"{lead}" if lead else "() (a single class index)"
        raise ValueError(f"labels have shape {t.shape}: expected class indices of shape {want} "
                         f"(the logits' shape {x.shape} without class axis {ax}), or "
                         "probability targets of the logits' shape")
    return x2, t.reshape(-1), lead, ax


def cross_entropy_nd(logits, target, *, class_axis: int | None = None, target_tolerance=1e-6,
                     **options):
    """:func:`smx_cli.core.xent.cross_entropy` on any K-dim layout (see the module docstring).

    Examples
    --------
    >>> x = np.zeros((1, 2, 3))  # N=1, C=2, d1=3: PyTorch's layout
    >>> cross_entropy_nd(x, [[0, 1, 1]], reduction="none").round(4).tolist()
    [[0.6931, 0.6931, 0.6931]]
    >>> round(cross_entropy_nd(np.zeros((1, 3, 2)), [[0, 1, 1]], class_axis=-1), 4)
    0.6931
    """
    x2, t2, lead, _ = to_rows(logits, target, class_axis)
    try:
        res = xent.evaluate(x2, t2, target_tolerance=target_tolerance, **options)
    except ValueError as exc:
        raise relocate(exc, lead) from None
    if options.get("reduction", "mean") == "none":
        return res.loss.reshape(lead)
    return res.reduced


def cross_entropy_grad_nd(logits, target, *, class_axis: int | None = None,
                          target_tolerance=1e-6, **options) -> np.ndarray:
    """dL/dlogits of :func:`cross_entropy_nd`, in the logits' own shape and layout.

    Examples
    --------
    >>> cross_entropy_grad_nd([0.0, 0.0], 1).tolist()  # a single row, a 0-d target
    [0.5, -0.5]
    """
    x = np.asarray(logits)
    x2, t2, lead, ax = to_rows(x, target, class_axis)
    try:
        res = xent.evaluate(x2, t2, want_grad=True, target_tolerance=target_tolerance, **options)
    except ValueError as exc:
        raise relocate(exc, lead) from None
    return np.moveaxis(res.grad.reshape(*lead, x2.shape[1]), -1, ax)


# ----------------------------------------------------------------------------
# the public API (smx_cli.cross_entropy, ...)


def cross_entropy(logits, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, input_kind: str = "logits",
                  class_axis: int | None = None, target_tolerance: float | None = 1e-6):
    """Cross-entropy loss with ``torch.nn.functional.cross_entropy``'s semantics.

    Parameters
    ----------
    logits : array_like, shape (C,), (N, C) or (N, C, d1, ..., dK)
        Unnormalised scores (or log-probabilities / probabilities with
        ``input_kind``). The class axis is PyTorch's (1; 0 for a single row)
        unless ``class_axis`` says otherwise: -1 for a language model's
        (batch, tokens, vocab).
    target : array_like
        Class indices of the logits' shape without the class axis ((), (N,),
        (N, d1, ..., dK)), or class probabilities of the logits' own shape.
    weight : array_like of C floats, optional
        Per-class weights (>= 0).
    ignore_index : int
        Class-index targets equal to this are ignored (default -100).
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float in [0, 1]
    input_kind : {'logits', 'log-probs', 'probs'}
    class_axis : int, optional
        The axis of the classes (default: PyTorch's).
    target_tolerance : float or None
        Probability targets must sum to 1 within this (default 1e-6); None
        takes any non-negative targets, as PyTorch does.

    Returns
    -------
    float or ndarray
        The reduced loss, or the per-position losses for ``reduction='none'``
        in the targets' shape (a 0-d array for a single (C,) row, as in
        PyTorch). Mean over all-ignored targets is NaN, as in PyTorch.

    Examples
    --------
    A confidently correct sample keeps its tiny loss (log(softmax) gives 0):

    >>> float(cross_entropy([[30.0, 0.0]], [0]))
    9.357622968839737e-14
    >>> float(cross_entropy([[0.0, 1000.0]], [0]))
    1000.0
    >>> cross_entropy([0.0, 0.0], 1, reduction="none").shape
    ()
    """
    x, t = _legacy_target(logits, target)
    return cross_entropy_nd(x, t, class_axis=class_axis, target_tolerance=target_tolerance,
                            weight=weight, ignore_index=ignore_index, reduction=reduction,
                            label_smoothing=label_smoothing, input_kind=input_kind)


def _legacy_target(logits, target):
    """Targets smx took before the K-dim API: an (N, 1) column, a (1,) target of a row."""
    x, t = np.asarray(logits), np.asarray(target)
    if x.ndim == 2 and t.shape == (x.shape[0], 1) and not (t.dtype.kind == "f"
                                                          and x.shape[1] == 1):
        t = t[:, 0]
    elif x.ndim == 1 and t.shape == (1,) and not (t.dtype.kind == "f" and x.shape[0] == 1):
        t = t.reshape(())
    return x, t


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
                       reduction: str = "mean", label_smoothing: float = 0.0,
                       class_axis: int | None = None,
                       target_tolerance: float | None = 1e-6) -> np.ndarray:
    """dL/dlogits of :func:`cross_entropy`: softmax minus the (smoothed, weighted) target.

    Takes the shapes :func:`cross_entropy` takes and returns the logits'
    shape. For ``reduction='none'`` each position's row is the gradient of
    that position's own loss.

    Examples
    --------
    >>> cross_entropy_grad([[0.0, 0.0]], [0]).tolist()
    [[-0.5, 0.5]]
    >>> cross_entropy_grad([0.0, 0.0], 0).tolist()
    [-0.5, 0.5]
    """
    x, t = _legacy_target(logits, target)
    return cross_entropy_grad_nd(x, t, class_axis=class_axis, target_tolerance=target_tolerance,
                                 weight=weight, ignore_index=ignore_index, reduction=reduction,
                                 label_smoothing=label_smoothing)
