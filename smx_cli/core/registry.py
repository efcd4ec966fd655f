"""One entry point for every member of the softmax family, and its gradients.

:func:`run` dispatches a variant name to :mod:`smx_cli.core.softmax` (naive, stable,
log, online, lse) or :mod:`smx_cli.core.sparse` (hardmax, sparsemax, entmax15,
entmax, gumbel), applies an optional mask, and returns a
:class:`~smx_cli.core.softmax.SoftmaxResult` plus what only some variants have
(support sizes, the soft sample behind a hard Gumbel draw).
:func:`vjp` and :func:`jacobian` give each variant's gradient in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smx_cli.core import sparse as family
from smx_cli.core import grad
from smx_cli.core.precision import format_of, result_format
from smx_cli.core.softmax import VARIANTS as SOFTMAX_VARIANTS
from smx_cli.core.softmax import KernelStats, SoftmaxResult, compute

ALL_VARIANTS = SOFTMAX_VARIANTS + family.SPARSE_VARIANTS
# variants whose zeros are exact by design, not underflow
SPARSE_OUTPUT = ("hardmax", "sparsemax", "entmax15", "entmax")


@dataclass
class VariantOptions:
    """Options only some variants read; each is checked where it is used."""

    alpha: float = 1.5     # entmax
    tau: float = 1.0       # gumbel temperature
    hard: bool = False     # gumbel straight-through one-hot
    samples: int = 1       # gumbel draws per row
    seed: int | None = None


@dataclass
class VariantRun:
    """A result and the extras some variants carry.

    Attributes
    ----------
    result : SoftmaxResult
        Values are (N, C), or (K*N, C) for K Gumbel samples (sample-major).
    support : ndarray (rows,) or None
        Non-zero entries per row, for the sparse variants.
    soft : ndarray or None
        For a hard Gumbel draw, the soft sample whose gradient the
        straight-through estimator passes back.
    logits : ndarray
        The (masked, per-sample repeated) logits the values belong to.
    samples : int
    """

    result: SoftmaxResult
    support: np.ndarray | None
    soft: np.ndarray | None
    logits: np.ndarray
    samples: int = 1


def run(x2: np.ndarray, variant: str = "stable", *, temperature: float = 1.0,
        dtype: str | None = None, masked: str = "nan", mask: np.ndarray | None = None,
        options: VariantOptions | None = None, fast: bool = False,
        threads: int | None = None) -> VariantRun:
    """Compute any variant of the family over (N, C) rows.

    With a ``mask`` (True = keep), masked entries get probability 0 and a
    fully masked row gives zeros (JAX's ``where=`` semantics), never NaN.

    Examples
    --------
    >>> r = run(np.array([[1.0, 2.0, 5.0]]), "sparsemax")
    >>> r.result.values.tolist(), r.support.tolist()
    ([[0.0, 0.0, 1.0]], [1])
    >>> m = np.array([[True, True, False]])
    >>> run(np.array([[1.0, 2.0, 5.0]]), mask=m).result.values.round(4).tolist()
    [[0.2689, 0.7311, 0.0]]
    """
    opts = options or VariantOptions()
    if variant not in ALL_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(ALL_VARIANTS)}")
    if mask is not None:
        masked = "zeros"
    x = family.apply_mask(x2, mask) if mask is not None else x2
    if variant in SOFTMAX_VARIANTS:
        res = compute(x, variant, temperature, dtype, masked, fast=fast, threads=threads)
        return VariantRun(res, None, None, x)
    if fast:
        raise ValueError(f"fast mode applies to the stable and log variants, not {variant}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    fmt = format_of(dtype) if dtype else result_format(np.asarray(x).dtype)
    # sparse maps: the input is rounded to the format, the threshold is found in
    # float64, and the output rounded once (no per-operation emulation)
    xr = fmt.cast(np.asarray(x, dtype=np.float64)) if dtype else np.asarray(x)
    z = np.asarray(xr, dtype=np.float64) / temperature
    support = soft = None
    samples = 1
    with np.errstate(invalid="ignore", over="ignore"):
        if variant == "hardmax":
            values = family.hardmax(z, masked)
        elif variant == "sparsemax":
            values, support = family.sparsemax(z, masked, return_support=True)
        elif variant == "entmax15":
            values, support = family.entmax15(z, masked, return_support=True)
        elif variant == "entmax":
            values, support = family.entmax_bisect(z, opts.alpha, masked, return_support=True)
        else:  # gumbel
            if opts.samples < 1:
                raise ValueError(f"samples must be >= 1, got {opts.samples}")
            samples = opts.samples
            draws = family.gumbel_softmax(z, opts.tau, False, samples, opts.seed, masked)
            soft = draws.reshape(samples * z.shape[0], z.shape[1])  # -1 fails for 0 classes
            values = family.hardmax(soft, masked) if opts.hard else soft
            z = np.tile(z, (samples, 1)) if samples > 1 else z
            xr = np.tile(np.asarray(xr), (samples, 1)) if samples > 1 else xr
    out = values.astype(fmt.dtype) if not dtype else fmt.cast(values)
    res = SoftmaxResult(out, "prob", fmt, bool(dtype), variant, float(temperature), KernelStats())
    return VariantRun(res, support, soft if opts.hard else None, np.asarray(xr), samples)


def alpha_of(variant: str, options: VariantOptions | None = None) -> float | None:
    """The entmax alpha of a sparse variant (2 for sparsemax), else None."""
    if variant == "sparsemax":
        return 2.0
    if variant == "entmax15":
        return 1.5
    if variant == "entmax":
        return (options or VariantOptions()).alpha
    return None


def vjp(variant: str, x2: np.ndarray, probs: np.ndarray, g: np.ndarray, *,
        temperature: float = 1.0, options: VariantOptions | None = None,
        soft: np.ndarray | None = None) -> np.ndarray:
    """g^T J of ``variant`` at logits ``x2`` (outputs ``probs``), row by row.

    softmax-like variants use :func:`smx_cli.core.grad.softmax_vjp` (log:
    :func:`~smx_cli.core.grad.log_softmax_vjp`); sparse ones the closed form on
    their support; hardmax has zero gradient; a hard Gumbel draw passes the
    gradient of its soft sample (straight-through).
    """
    opts = options or VariantOptions()
    alpha = alpha_of(variant, opts)
    if variant in ("log", "stable", "naive", "online", "lse"):
        # blocked inside, in float64 per block: g is not widened as a whole
        fn = grad.log_softmax_vjp if variant == "log" else grad.softmax_vjp
        return fn(x2, g, temperature=temperature)
    g = np.asarray(g, dtype=np.float64)
    if alpha is not None:
        return family.sparse_vjp(probs, g, alpha) / temperature
    if variant == "hardmax":
        return np.zeros_like(g)
    # gumbel: the gradient of the (soft) sample, straight-through for a hard one
    p = soft if soft is not None else np.asarray(probs, dtype=np.float64)
    t = temperature * opts.tau
    return p * (g - (g * p).sum(axis=1, keepdims=True)) / t


def jacobian(variant: str, x_row: np.ndarray, p_row: np.ndarray, *, temperature: float = 1.0,
             options: VariantOptions | None = None, soft_row: np.ndarray | None = None) -> np.ndarray:
    """The C x C Jacobian d out_i / d x_j of ``variant`` for one row."""
    opts = options or VariantOptions()
    alpha = alpha_of(variant, opts)
    c = len(p_row)
    if alpha is not None:
        return family.sparse_jacobian(p_row, alpha) / temperature
    if variant == "hardmax":
        return np.zeros((c, c))
    if variant == "gumbel":
        p = np.asarray(soft_row if soft_row is not None else p_row, dtype=np.float64)
        jac = np.diag(p) - np.outer(p, p)
        return jac / (temperature * opts.tau)
    kind = "log" if variant == "log" else "softmax"
    return grad.softmax_jacobian(np.asarray(x_row, dtype=np.float64), temperature=temperature,
                                 kind=kind)


def _jacobian_factors(variant: str, p: np.ndarray, temperature: float,
                      options: VariantOptions | None):
    """J = (diag(a) - b c^T) / scale for the row's outputs ``p``: (a, b, c, scale, log?)."""
    opts = options or VariantOptions()
    p = np.asarray(p, dtype=np.float64)
    alpha = alpha_of(variant, opts)
    if alpha is not None:
        s = (p > 0).astype(np.float64) if alpha == 2 else np.where(p > 0, p ** (2.0 - alpha), 0.0)
        total = s.sum()
        return s, s, (s / total if total > 0 else s * 0), temperature
    if variant == "hardmax":
        return p * 0, p * 0, p * 0, 1.0
    scale = temperature * (opts.tau if variant == "gumbel" else 1.0)
    if variant == "log":
        return np.ones_like(p), np.ones_like(p), p, scale
    return p, p, p, scale


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


def jacobian_block(variant: str, p_row: np.ndarray, idx: np.ndarray, *, temperature: float = 1.0,
                   options: VariantOptions | None = None) -> np.ndarray:
    """The block J[idx, idx] of one row's Jacobian, without forming C x C.

    Every variant's Jacobian has the form (diag(a) - a c^T) / scale with
    sum(c) = 1: softmax a = c = p; log-softmax a = 1, c = p;
    sparsemax/entmax a = s, c = s / sum(s) with s = p^(2 - alpha) on the
    support. The diagonal a_i (1 - c_i) is taken as a_i sum_{j != i} c_j, so
    a saturated row keeps its tiny entries' relative accuracy.

    Examples
    --------
    >>> jacobian_block("stable", np.array([0.5, 0.5]), np.array([0, 1])).tolist()
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    a, b, c, scale = _jacobian_factors(variant, p_row, temperature, options)
    idx = np.asarray(idx)
    block = -np.outer(b[idx], c[idx])
    block[np.arange(len(idx)), np.arange(len(idx))] = _diagonal(a, c)[idx]
    return block / scale


def jacobian_summary(variant: str, p_row: np.ndarray, *, temperature: float = 1.0,
                     options: VariantOptions | None = None) -> tuple[float, float]:
    """(largest |entry|, Frobenius norm) of one row's Jacobian, in O(C).

    ||J||_F^2 = sum_i (a_i sum_{j != i} c_j)^2 + sum_i a_i^2 sum_{j != i} c_j^2;
    the largest entry is on the diagonal or is the largest a_i c_j, i != j.

    Examples
    --------
    >>> [round(v, 6) for v in jacobian_summary("stable", np.array([0.5, 0.5]))]
    [0.25, 0.5]
    """
    a, b, c, scale = _jacobian_factors(variant, p_row, temperature, options)
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


def check_gradients(variant: str, x2: np.ndarray, *, temperature: float = 1.0,
                    options: VariantOptions | None = None, rows: int = 8, seed: int = 0):
    """Finite-difference checks of this variant's gradient (and softmax/log-softmax).

    Returns a list of :class:`~smx_cli.core.grad.GradCheck`. Sparse variants are
    checked with their closed-form VJP against central differences of the
    map itself.
    """
    opts = options or VariantOptions()
    checks = grad.check_grad(x2, temperature=temperature, rows=rows, seed=seed,
                             functions=("softmax", "log"))
    alpha = alpha_of(variant, opts)
    if alpha is not None:
        checks.append(_check_sparse(variant, x2, alpha, temperature, opts, rows, seed))
    return checks


def _check_sparse(variant, x2, alpha, temperature, opts, rows, seed, rtol=1e-5, atol=1e-7):
    rng = np.random.default_rng(seed)
    x2 = np.asarray(x2, dtype=np.float64)
    # rows of at least one class, all finite (a row of 0 classes has nothing to check)
    finite = np.flatnonzero(np.isfinite(x2).all(axis=1)) if x2.shape[1] else np.arange(0)
    pick = rng.choice(finite, size=min(rows, len(finite)), replace=False) if len(finite) else []

    def forward(v):
        return run(v[None], variant, temperature=temperature, options=opts).result.values[0]

    max_abs = max_rel = 0.0
    ok = True
    entries = 0
    for i in pick:
        x = x2[i]
        p = forward(x)
        g = rng.normal(size=len(x))
        analytic = vjp(variant, x[None], p[None], g[None], temperature=temperature, options=opts)[0]
        h = 1e-6 * np.maximum(np.abs(x), 1.0)
        fd = np.empty(len(x))
        for j in range(len(x)):
            xp, xm = x.copy(), x.copy()
            xp[j] += h[j]
            xm[j] -= h[j]
            fd[j] = (g @ forward(xp) - g @ forward(xm)) / (xp[j] - xm[j])
        err = np.abs(analytic - fd)
        scale = max(float(np.max(np.abs(fd))), 1e-300)
        max_abs = max(max_abs, float(err.max()))
        max_rel = max(max_rel, float(err.max() / scale))
        ok &= bool(np.all(err <= atol + rtol * scale))
        entries += len(x)
    return grad.GradCheck(variant, len(pick), entries, max_abs, max_rel, rtol, atol, ok)
