"""The rest of the softmax family: hardmax, sparsemax, entmax, Gumbel-softmax, masks.

All map a row of scores z to a probability vector, and sit on a line from
sparse to smooth:

``hardmax``    one-hot of the argmax (ties share the mass evenly); no gradient.
``sparsemax``  Euclidean projection onto the simplex (Martins & Astudillo 2016):
               p = [z - tau]_+, exact sort-based threshold tau.
``entmax15``   alpha = 1.5 entmax (Peters, Niculae & Martins 2019):
               p = [z/2 - tau]_+^2, exact sort-based threshold.
``entmax``     general alpha > 1: p = [(alpha - 1) z - tau]_+^(1/(alpha-1)), tau
               by bisection to |sum(p) - 1| <= 2**-40 before a final
               normalisation; alpha = 2 is sparsemax, alpha -> 1 softmax.
``gumbel``     Gumbel-softmax samples (Jang, Gu & Poole 2017):
               softmax((z + g) / tau), g = -log(-log U), optionally hard
               (one-hot of the sample's argmax, the straight-through forward value).

Rows are processed in float64 (rounded to the requested format at the end,
or per step under emulation) after subtracting the row maximum, which all of
these maps are invariant to. Rows with NaN give NaN; +inf entries share the
mass as in softmax; a fully masked row (all -inf) follows ``masked``.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core.precision import result_format
from smx_cli.core.result import floating

BISECT_ITERATIONS = 60


def _prepare(z: np.ndarray):
    """float64 rows shifted by their max; masks of special rows."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        m = z.max(axis=1, keepdims=True) if z.shape[1] else np.zeros((z.shape[0], 1))
    special = ~np.isfinite(m[:, 0])
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore"):
        zs = z - shift
    zs[special] = 0.0
    return zs, special, m


def _fill_special(out: np.ndarray, z: np.ndarray, special: np.ndarray, m: np.ndarray,
                  masked: str) -> None:
    for i in np.flatnonzero(special):
        row = z[i]
        if np.isnan(m[i, 0]) or np.isnan(row).any():
            out[i] = np.nan
        elif m[i, 0] > 0:
            top = row == np.inf
            out[i] = top / np.count_nonzero(top)
        else:
            out[i] = np.nan if masked == "nan" else 0.0


class _Shape:
    """How to give a result back: the input's shape and float format."""

    def __init__(self, z):
        a = floating(np.asarray(z))
        self.shape = a.shape
        self.fmt = result_format(a.dtype)
        self.z = np.asarray(a, dtype=np.float64)


def _as_2d(z) -> tuple[np.ndarray, _Shape]:
    """float64 (N, C) rows of ``z`` and how to give the result back.

    A 1-D input is one row (its result is 1-D again, like :func:`smx_cli.softmax`);
    anything but 1-D or 2-D is refused with a ValueError, not an IndexError.
    The result keeps the input's float type (float64 for integers), as
    softmax does; the map itself runs in float64 and is rounded once.
    """
    back = _Shape(z)
    z = back.z
    if z.ndim == 1:
        return z[None, :], back
    if z.ndim != 2:
        raise ValueError(f"expected a 1-D row or (N, C) rows, got shape {z.shape}")
    return z, back


def _restore(out: np.ndarray, support, back: _Shape, return_support: bool = False):
    out = back.fmt.cast(out.reshape(back.shape))
    if return_support:
        return out, support.reshape(back.shape[:-1])
    return out


def hardmax(z, masked: str = "nan") -> np.ndarray:
    """One-hot of each row's argmax; k tied maxima get 1/k each.

    Examples
    --------
    >>> hardmax(np.array([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]])).tolist()
    [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]
    """
    z, shape = _as_2d(z)
    zs, special, m = _prepare(z)
    top = zs == 0.0
    out = top / top.sum(axis=1, keepdims=True).clip(min=1)
    _fill_special(out, z, special, m, masked)
    return _restore(out, None, shape)


def _sorted_threshold(zs: np.ndarray, alpha15: bool):
    """tau and the support size k of sparsemax (or 1.5-entmax on zs/2)."""
    n, d = zs.shape
    srt = -np.sort(-zs, axis=1)
    k = np.arange(1, d + 1, dtype=np.float64)
    csum = np.cumsum(srt, axis=1)
    if not alpha15:
        # support: 1 + k z_(k) > sum_{j<=k} z_(j)  (Martins & Astudillo 2016, eq. 3)
        with np.errstate(invalid="ignore"):
            cond = 1 + k * srt > csum
        size = cond.sum(axis=1)
        tau = (csum[np.arange(n), size - 1] - 1) / size
        return tau, size
    # 1.5-entmax (Peters et al. 2019, Algorithm 2): for each k, the tau solving
    # sum_{j<=k} (z_(j) - tau)^2 = 1, i.e. tau = mean_k - sqrt(delta_k)
    with np.errstate(invalid="ignore"):
        mean = csum / k
        mean_sq = np.cumsum(srt * srt, axis=1) / k
        ss = k * (mean_sq - mean * mean)
        delta = np.clip((1 - ss) / k, 0, None)
        tau_k = mean - np.sqrt(delta)
        size = (tau_k <= srt).sum(axis=1)
    size = np.maximum(size, 1)
    tau = tau_k[np.arange(n), size - 1]
    return tau, size


def sparsemax(z, masked: str = "nan", return_support: bool = False):
    """Sparsemax: the Euclidean projection of each row onto the simplex.

    Returns exact zeros where softmax would give small probabilities.

    Examples
    --------
    >>> sparsemax(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0]])).tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    >>> sparsemax(np.array([[0.0, 0.5, 0.6]])).round(6).tolist()
    [[0.0, 0.45, 0.55]]
    """
    z, shape = _as_2d(z)
    zs, special, m = _prepare(z)
    tau, size = _sorted_threshold(zs, alpha15=False) if z.shape[1] else (np.zeros(len(z)), np.zeros(len(z), int))
    with np.errstate(invalid="ignore"):
        out = np.clip(zs - tau[:, None], 0, None)
    _fill_special(out, z, special, m, masked)
    support = np.count_nonzero(out > 0, axis=1)
    return _restore(out, support, shape, return_support)


def entmax15(z, masked: str = "nan", return_support: bool = False):
    """1.5-entmax: p = [z/2 - tau]_+^2 with the exact sort-based tau.

    Examples
    --------
    >>> entmax15(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    >>> float(entmax15(np.array([[0.0, 10.0]]))[0, 0])
    0.0
    """
    z, shape = _as_2d(z)
    zs, special, m = _prepare(z)
    half = zs / 2
    tau, size = _sorted_threshold(half, alpha15=True) if z.shape[1] else (np.zeros(len(z)), None)
    with np.errstate(invalid="ignore"):
        out = np.clip(half - tau[:, None], 0, None) ** 2
        out /= out.sum(axis=1, keepdims=True)  # remove the last rounding drift
    _fill_special(out, z, special, m, masked)
    support = np.count_nonzero(out > 0, axis=1)
    return _restore(out, support, shape, return_support)


def entmax_bisect(z, alpha: float = 1.5, masked: str = "nan", iterations: int = BISECT_ITERATIONS,
                  return_support: bool = False):
    """alpha-entmax for any alpha > 1 by bisection on the threshold tau.

    p_i = [(alpha - 1) z_i - tau]_+^(1/(alpha-1)). With the row max shifted to
    0, tau lies in [-1, -(1/d)^(alpha-1)]; 60 halvings leave an interval of
    2**-60, then p is normalised to sum to 1.

    Examples
    --------
    >>> np.allclose(entmax_bisect(np.array([[0.0, 0.5, 0.6]]), alpha=2.0), [[0, 0.45, 0.55]])
    True
    """
    if not (np.isfinite(alpha) and alpha > 1):
        raise ValueError(f"alpha must be a finite number > 1, got {alpha!r}")
    z, shape = _as_2d(z)
    zs, special, m = _prepare(z)
    n, d = zs.shape
    am1 = alpha - 1.0
    power = 1.0 / am1
    x = zs * am1
    lo = np.full((n, 1), -1.0)
    hi = np.full((n, 1), -(1.0 / max(d, 1)) ** am1)
    with np.errstate(invalid="ignore", over="ignore"):
        for _ in range(iterations):
            mid = (lo + hi) / 2
            total = (np.clip(x - mid, 0, None) ** power).sum(axis=1, keepdims=True)
            # total decreases as tau grows: too much mass means tau is too small
            big = total >= 1
            lo = np.where(big, mid, lo)
            hi = np.where(big, hi, mid)
        out = np.clip(x - lo, 0, None) ** power
        out /= out.sum(axis=1, keepdims=True)
    _fill_special(out, z, special, m, masked)
    support = np.count_nonzero(out > 0, axis=1)
    return _restore(out, support, shape, return_support)


def gumbel_softmax(z, tau: float = 1.0, hard: bool = False, samples: int = 1,
                   seed: int | None = None, masked: str = "nan") -> np.ndarray:
    """Gumbel-softmax samples: softmax((z + g) / tau), g ~ Gumbel(0, 1).

    Returns shape (samples, N, C), in the input's float type. With ``hard``
    each sample is the one-hot of its argmax (the forward value of the
    straight-through estimator); the argmax frequencies then follow
    softmax(z) (the Gumbel-max trick).

    Examples
    --------
    >>> s = gumbel_softmax(np.array([[0.0, 1.0]]), samples=3, seed=1)
    >>> s.shape, bool(np.allclose(s.sum(axis=-1), 1))
    ((3, 1, 2), True)
    """
    from smx_cli.core.softmax import compute

    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    fmt = result_format(floating(np.asarray(z)).dtype)
    z = np.asarray(z, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((samples,) + z.shape)
    for s in range(samples):
        u = rng.random(z.shape)
        # -log(-log U) with U in (0, 1): U = 0 is excluded by nudging to the smallest positive
        g = -np.log(-np.log(np.maximum(u, np.finfo(np.float64).tiny)))
        with np.errstate(invalid="ignore"):
            y = z + g
        if hard:
            out[s] = hardmax(y, masked=masked)
        else:
            out[s] = compute(y, "stable", tau, None, masked).values
    return fmt.cast(out)


# ----------------------------------------------------------------------------
# gradients: closed forms on the support


def support_weights(p: np.ndarray, alpha: float) -> np.ndarray:
    """s = p^(2 - alpha) on the support (p > 0) and 0 off it; the indicator for alpha = 2.

    The Jacobian of alpha-entmax at output p is diag(s) - s s^T / sum(s)
    (Peters, Niculae & Martins 2019, Prop. 1).

    Examples
    --------
    >>> support_weights(np.array([0.0, 0.25, 1.0]), 1.5).tolist()
    [0.0, 0.5, 1.0]
    """
    p = np.asarray(p, dtype=np.float64)
    if alpha == 2:
        return (p > 0).astype(np.float64)
    with np.errstate(divide="ignore"):  # 0 ** negative off the support, discarded
        return np.where(p > 0, p ** (2.0 - alpha), 0.0)


def sparse_vjp(p: np.ndarray, g: np.ndarray, alpha: float) -> np.ndarray:
    """g^T J of sparsemax (alpha = 2) or alpha-entmax at output ``p``.

    With s_i = p_i^(2 - alpha) on the support and 0 off it (s = the support
    indicator for sparsemax), J = diag(s) - s s^T / sum(s) (Peters et al.
    2019, Prop. 1), so g^T J = s * (g - <s, g> / sum(s)).

    Examples
    --------
    >>> sparse_vjp(np.array([[0.0, 0.45, 0.55]]), np.array([[1.0, 1.0, 0.0]]), 2.0).tolist()
    [[0.0, 0.5, -0.5]]
    """
    g = np.asarray(g, dtype=np.float64)
    s = support_weights(p, alpha)
    total = s.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = (s * g).sum(axis=1, keepdims=True) / total
    return s * (g - q)


def sparse_jacobian(p_row: np.ndarray, alpha: float) -> np.ndarray:
    """The C x C Jacobian of sparsemax / entmax at one output row ``p_row``."""
    p = np.asarray(p_row, dtype=np.float64)
    s = support_weights(p, alpha)
    total = s.sum()
    return np.diag(s) - np.outer(s, s) / total if total > 0 else np.zeros((len(p), len(p)))


def apply_mask(x2: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits with masked-out entries (mask False) set to -inf.

    A float input keeps its dtype; integers become float64.

    Examples
    --------
    >>> apply_mask(np.array([[1.0, 2.0]]), np.array([[True, False]])).tolist()
    [[1.0, -inf]]
    """
    x = np.asarray(x2)
    mask = np.asarray(mask)
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {mask.shape}, the logits {x.shape}: they must match")
    if mask.dtype.kind == "f" and not np.isin(mask, (0.0, 1.0)).all():
        raise ValueError("mask must hold booleans (true/false or 1/0)")
    out = x.astype(np.float64) if x.dtype.kind in "biu" else np.array(x, copy=True)
    out[~mask.astype(bool)] = -np.inf
    return out
