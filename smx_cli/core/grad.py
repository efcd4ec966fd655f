"""Gradients of softmax and log-softmax: Jacobians, vector-Jacobian products, checks.

For p = softmax(x / T) the Jacobian is

    dp_i/dx_j = p_i (delta_ij - p_j) / T

so an entry whose probability is ~0 gets ~no gradient, and a saturated row
(one p near 1) has every entry near 0: it stops learning. The log-softmax
Jacobian is (delta_ij - p_j) / T, and the fused softmax + cross-entropy
gradient p - onehot(y) stays of order 1 (see :mod:`smx_cli.core.xent`).

Vector-Jacobian products never form the C x C matrix:

    g J_softmax     = p * (g - <g, p>) / T
    g J_log_softmax = (g - p * sum(g)) / T

On the numpy engine they are computed in float64 (long double for the inner
products of float64 inputs) in blocks of rows, and returned in the input's
float format. On the compiled core (:func:`smx_cli.core.native.vjp_rows`, float
inputs) in one fused pass per row with compensated inner products: float64
within 8 ulp of (|out_j| + p_j G / T) per entry, G = <|g|, p> (softmax) or
sum |g| (log-softmax); 16/32-bit inputs within 2**-43 of that before the one
rounding to their format. Rows with NaN, +-inf or a non-finite g take the
numpy path on both engines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smx_cli.core import native
from smx_cli.core.gradcheck import GradCheck, Tally, central_difference, pick_rows  # noqa: F401
from smx_cli.core.precision import format_of, result_format
from smx_cli.core.softmax import as_rows, check_temperature, compute, from_rows

_BLOCK_ELEMENTS = 1 << 18
_LONG = np.longdouble
# largest Jacobian entry below which a row counts as saturated (no gradient)
SATURATION_THRESHOLD = 1e-6
# the max probability the temperature hint aims for
HINT_TARGET = 0.99


def _probs64(x2: np.ndarray, temperature: float) -> np.ndarray:
    """Accurate probabilities in float64 (whatever the input format)."""
    return compute(np.asarray(x2, dtype=np.float64), "stable", temperature).values


def _blocks(n: int, width: int):
    step = max(1, _BLOCK_ELEMENTS // max(width, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def softmax_jacobian(x, axis: int = -1, temperature: float = 1.0, kind: str = "softmax") -> np.ndarray:
    """The Jacobian of softmax (or log-softmax) for every row, shape (..., C, C).

    ``J[..., i, j] = d out_i / d x_j``. Forms C x C per row: for wide rows
    use :func:`softmax_vjp` instead.

    Parameters
    ----------
    x : array_like
        Logits.
    kind : {'softmax', 'log'}
        ``softmax``: diag(p) - p p^T; ``log``: I - 1 p^T (divided by T).

    Examples
    --------
    >>> J = softmax_jacobian([0.0, 20.0, 40.0])
    >>> print(f"{J.max():.6e}")  # a saturated row: the largest entry is ~2e-9
    2.061154e-09
    """
    a = np.asarray(x)
    t = check_temperature(temperature)
    x2, shape, ax = as_rows(a, axis)
    p = _probs64(x2, t)
    n, c = p.shape
    if kind == "softmax":
        jac = -p[:, :, None] * p[:, None, :]
        # diagonal p_i (1 - p_i), with 1 - p_i free of cancellation for the largest p
        jac[:, np.arange(c), np.arange(c)] = p * _one_minus(p)
    elif kind == "log":
        jac = np.broadcast_to(-p[:, None, :], (n, c, c)).copy()
        jac[:, np.arange(c), np.arange(c)] = _one_minus(p)
    else:
        raise ValueError(f"kind must be 'softmax' or 'log', got {kind!r}")
    jac /= t
    fmt = result_format(x2.dtype)
    return jac.astype(fmt.dtype).reshape(shape[:-1] + (c, c)) if a.ndim > 1 else \
        jac.astype(fmt.dtype).reshape(c, c)


def _one_minus(p: np.ndarray) -> np.ndarray:
    """1 - p_i per entry; for each row's largest p, the sum of the others."""
    out = 1.0 - p
    if p.shape[1] > 1:
        with np.errstate(invalid="ignore"):
            k = np.argmax(np.where(np.isnan(p), -np.inf, p), axis=1)
            rows = np.arange(p.shape[0])
            rest = p.sum(axis=1) - p[rows, k]
            others = np.where(np.isnan(p), 0.0, p)
            others[rows, k] = 0.0
            out[rows, k] = np.where(np.isnan(rest), np.nan, others.sum(axis=1))
    return out


def _vjp(x, g, axis: int, temperature: float, kind: str) -> np.ndarray:
    a = np.asarray(x)
    t = check_temperature(temperature)
    x2, shape, ax = as_rows(a, axis)
    g2, gshape, _ = as_rows(np.asarray(g), axis)
    if g2.shape != x2.shape:
        raise ValueError(f"upstream gradient has shape {np.asarray(g).shape}, the logits "
                         f"{a.shape}: they must match")
    fmt = result_format(x2.dtype)
    wide = _LONG if fmt.name == "float64" else np.float64
    n, c = x2.shape
    out = np.empty((n, c), dtype=fmt.dtype)
    if native.supports(x2.dtype) and fmt.dtype == x2.dtype:
        # the compiled core (native.vjp_rows); rows it hands back (NaN, +-inf, a
        # non-finite g) take the numpy path below
        xc = np.ascontiguousarray(x2)
        todo = [np.flatnonzero(native.vjp_rows(xc, g2, out, kind=kind, temperature=t))]
    else:
        todo = [slice(r.start, r.stop) for r in _blocks(n, c)]
    with np.errstate(invalid="ignore", over="ignore"):
        for rows in todo:
            p = _probs64(x2[rows], t)
            gb = np.asarray(g2[rows], dtype=np.float64)
            if kind == "softmax":
                dot = np.einsum("ij,ij->i", gb.astype(wide), p.astype(wide))[:, None]
                res = p * (gb - dot)
            else:
                total = gb.astype(wide).sum(axis=1, keepdims=True)
                res = gb - p * total
            out[rows] = (res / t).astype(fmt.dtype)
    return from_rows(out, shape, ax, a.ndim)


def softmax_vjp(x, g, axis: int = -1, temperature: float = 1.0) -> np.ndarray:
    """g^T J of softmax at ``x``, without forming J: p * (g - <g, p>) / T.

    This is what a framework's backward pass returns for the logits given the
    upstream gradient ``g`` = dL/dp.

    Examples
    --------
    >>> softmax_vjp([0.0, 0.0], [1.0, 0.0]).tolist()
    [0.25, -0.25]
    """
    return _vjp(x, g, axis, temperature, "softmax")


def log_softmax_vjp(x, g, axis: int = -1, temperature: float = 1.0) -> np.ndarray:
    """g^T J of log-softmax at ``x``: (g - p * sum(g)) / T.

    Examples
    --------
    >>> log_softmax_vjp([0.0, 0.0], [1.0, 0.0]).tolist()
    [0.5, -0.5]
    """
    return _vjp(x, g, axis, temperature, "log")


# ----------------------------------------------------------------------------
# saturation diagnostics


@dataclass
class Saturation:
    """How much gradient each row can still pass, and what would restore it.

    Attributes
    ----------
    max_jacobian : ndarray (N,)
        The largest |dp_i/dx_j| of the row: max_i p_i (1 - p_i) / T.
    saturated : ndarray of bool (N,)
        max_jacobian below ``threshold``.
    underflow_share : float
        Share of the finite logits whose Jacobian diagonal p_i (1 - p_i) is
        positive but rounds to 0 in ``dtype``: their gradient is lost there.
    hint_temperature : ndarray (N,)
        The temperature that brings the row's max probability to 0.99
        (NaN where it is already at most 0.99, or the row is not finite).
    threshold : float
    dtype : str
    """

    max_jacobian: np.ndarray
    saturated: np.ndarray
    underflow_share: float
    hint_temperature: np.ndarray
    threshold: float
    dtype: str


def saturation(x2: np.ndarray, temperature: float = 1.0, dtype: str | None = None,
               threshold: float = SATURATION_THRESHOLD) -> Saturation:
    """Vanishing-gradient diagnostics of (N, C) logits.

    Examples
    --------
    >>> s = saturation(np.array([[0.0, 20.0, 40.0], [0.0, 1.0, 2.0]]))
    >>> s.saturated.tolist()
    [True, False]
    >>> round(float(s.hint_temperature[0]), 3)  # T that brings max p to 0.99
    4.343
    """
    x2 = np.asarray(x2)
    t = check_temperature(temperature)
    fmt = format_of(dtype) if dtype else result_format(x2.dtype)
    n, c = x2.shape
    max_j = np.full(n, np.nan)
    lost = 0
    live_total = 0
    with np.errstate(all="ignore"):
        for rows in _blocks(n, c):
            p = _probs64(x2[rows], t)
            diag = p * _one_minus(p) / t
            max_j[rows] = np.max(diag, axis=1) if c else np.nan
            live = np.isfinite(np.asarray(x2[rows], dtype=np.float64)) & np.isfinite(p)
            rounded = diag.astype(fmt.dtype).astype(np.float64)
            lost += int(np.count_nonzero((rounded == 0) & (diag > 0) & live))
            # exact diagonal is > 0 for every finite logit of a finite row even when
            # float64 itself underflowed: count those as lost too
            lost += int(np.count_nonzero((diag == 0) & live & (c > 1)))
            live_total += int(np.count_nonzero(live))
    saturated = np.isfinite(max_j) & (max_j < threshold)
    hint = hint_temperature(x2, t)
    share = lost / live_total if live_total else 0.0
    return Saturation(max_j, saturated, share, hint, threshold, fmt.name)


def hint_temperature(x2: np.ndarray, temperature: float = 1.0, target: float = HINT_TARGET,
                     iterations: int = 80) -> np.ndarray:
    """Per row, the temperature T' (replacing ``temperature``) with max p = ``target``.

    max softmax(x / T) falls monotonically from 1 (T -> 0) to 1/k (T -> inf,
    k the number of tied maxima), so bisection on log T finds it. NaN where
    the row already has max p <= target at ``temperature``, or is not finite.
    """
    x2 = np.asarray(x2)
    n, c = x2.shape
    out = np.full(n, np.nan)
    if c < 2:
        return out
    for rows in _blocks(n, c):  # bounded memory: float64 copies of one block at a time
        out[rows] = _hint_block(np.asarray(x2[rows], dtype=np.float64), temperature, target,
                                iterations)
    return out


def _hint_block(x2: np.ndarray, temperature: float, target: float, iterations: int) -> np.ndarray:
    n = x2.shape[0]
    out = np.full(n, np.nan)
    with np.errstate(all="ignore"):
        finite = np.isfinite(x2).all(axis=1)
        pmax = np.full(n, np.nan)
        pmax[finite] = _probs64(x2[finite], temperature).max(axis=1)
        todo = np.flatnonzero(finite & (pmax > target))
        if not todo.size:
            return out
        xs = x2[todo]
        spread = xs.max(axis=1) - xs.min(axis=1)
        lo = np.full(len(todo), np.log(temperature))
        hi = np.log(np.maximum(spread, 1e-300)) + 10.0  # at T = spread * e^10, p_max ~ 1/k
        hi = np.maximum(hi, lo + 1.0)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            p = compute(xs / np.exp(mid)[:, None], "stable").values.max(axis=1)
            above = p > target
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        out[todo] = np.exp(hi)
    return out


# ----------------------------------------------------------------------------
# finite-difference checks


def check_grad(x2: np.ndarray, *, labels=None, temperature: float = 1.0, rows: int = 8,
               cols: int = 32, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-8,
               functions=("softmax", "log", "xent"), xent_options: dict | None = None,
               xent_divisor: float = 1.0) -> list[GradCheck]:
    """Check analytic gradients against central finite differences in float64.

    For a sample of ``rows`` rows and up to ``cols`` columns of each, with a
    random upstream vector g, compares the VJP g^T J of softmax and
    log-softmax with the finite difference of <g, f(x)>, and the
    cross-entropy gradient (when ``labels`` are given) with the finite
    difference of the per-sample loss. An entry passes when
    |analytic - fd| <= atol + rtol * max(|fd|, max |fd| of its row).

    ``xent_options`` (``weight``, ``ignore_index``, ``label_smoothing``)
    reach both the analytic gradient and the loss differenced; the loss is
    divided by ``xent_divisor`` (what a mean reduction divides by: the loss
    of the whole batch is sum_i loss_i / divisor, so row i's gradient is
    that of loss_i / divisor), and ``atol`` with it, so the check keeps its
    strength at the mean's scale. Rows whose sample is ignored are not drawn
    (their gradient is 0) unless every row is.

    Examples
    --------
    >>> checks = check_grad(np.array([[1.0, 2.0, 3.0]]))
    >>> all(c.passed for c in checks)
    True
    """
    from smx_cli.core.xent import evaluate

    x2 = np.asarray(x2, dtype=np.float64)
    t = check_temperature(temperature)
    rng = np.random.default_rng(seed)
    n, c = x2.shape
    xopts = dict(xent_options or {})
    eligible = None
    if labels is not None and "xent" in functions and np.ndim(labels) == 1:
        eligible = np.asarray(labels) != xopts.get("ignore_index", -100)
    pick = pick_rows(x2, rows, rng, eligible)
    results = []
    for name in functions:
        if name == "xent" and labels is None:
            continue
        tally = Tally(name, rtol, atol / xent_divisor if name == "xent" else atol)
        for i in pick:
            x = x2[i].copy()
            cidx = np.sort(rng.choice(c, size=min(cols, c), replace=False))
            if name == "xent":
                # d loss(x / T) / dx = grad_xent(x / T) / T
                y = np.asarray(labels)[i:i + 1]
                analytic = evaluate(x[None] / t, y, want_grad=True, reduction="sum",
                                    **xopts).grad[0] / t / xent_divisor
                fd_fn = lambda v, y=y: evaluate(v[None] / t, y, reduction="sum",  # noqa: E731
                                                **xopts).reduced / xent_divisor
            else:
                g = rng.normal(size=c)
                vjp = softmax_vjp if name == "softmax" else log_softmax_vjp
                analytic = vjp(x, g, temperature=t)
                kind = "stable" if name == "softmax" else "log"
                fd_fn = lambda v, g=g, kind=kind: float(  # noqa: E731
                    np.dot(g, compute(v[None], kind, t).values[0]))
            tally.add(analytic[cidx], central_difference(fd_fn, x, cidx))
        results.append(tally.result())
    return results


# ----------------------------------------------------------------------------
# Jacobians in factored form: J = (diag(a) - b c^T) / scale, sum(c) = 1


def _others(c: np.ndarray) -> np.ndarray:
    """sum_{j != i} c_j for weights c summing to 1, free of cancellation at the max."""
    out = 1.0 - c
    if len(c) > 1:
        k = int(np.argmax(c))
        out[k] = np.delete(c, k).sum()
    return out


def _diagonal(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a_i - a_i c_i = a_i sum_{j != i} c_j (every family Jacobian has a = b, sum c = 1)."""
    if not c.any():
        return np.zeros_like(a)
    return a * _others(c)


def factored_block(a: np.ndarray, b: np.ndarray, c: np.ndarray, scale: float,
                   idx: np.ndarray) -> np.ndarray:
    """The block J[idx, idx] of J = (diag(a) - b c^T) / scale, without forming C x C.

    Every family Jacobian has this form with a = b and sum(c) = 1 (see
    :func:`smx_cli.core.registry.jacobian_factors`). The diagonal a_i (1 - c_i)
    is taken as a_i sum_{j != i} c_j, so a saturated row keeps its tiny
    entries' relative accuracy.

    Examples
    --------
    >>> p = np.array([0.5, 0.5])
    >>> factored_block(p, p, p, 1.0, np.array([0, 1])).tolist()
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    idx = np.asarray(idx)
    block = -np.outer(b[idx], c[idx])
    block[np.arange(len(idx)), np.arange(len(idx))] = _diagonal(a, c)[idx]
    return block / scale


def factored_summary(a: np.ndarray, b: np.ndarray, c: np.ndarray,
                     scale: float) -> tuple[float, float]:
    """(largest |entry|, Frobenius norm) of J = (diag(a) - b c^T) / scale, in O(C).

    ||J||_F^2 = sum_i (a_i sum_{j != i} c_j)^2 + sum_i a_i^2 sum_{j != i} c_j^2;
    the largest entry is on the diagonal or is the largest a_i c_j, i != j.
    """
    diag = np.abs(_diagonal(a, c))
    sq = c * c
    rest_sq = sq.sum() - sq
    if len(c) > 1:
        k = int(np.argmax(sq))
        rest_sq[k] = np.delete(sq, k).sum()
    fro2 = (diag * diag).sum() + (b * b * rest_sq).sum()
    off = 0.0
    if len(a) > 1:
        ib, ic = np.argsort(-np.abs(b))[:2], np.argsort(-np.abs(c))[:2]
        off = max(abs(b[i] * c[j]) for i in ib for j in ic if i != j)
    return float(max(diag.max(initial=0.0), off) / scale), float(np.sqrt(fro2) / scale)
