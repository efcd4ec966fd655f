"""Cross-entropy on the compiled core (:func:`native.xent_rows`, :func:`native.xent_prob_rows`).

:func:`smx_cli.core.xent.evaluate` hands a block here when :func:`covers` says
the kernel computes it: logits (``input_kind='logits'``) of float16,
bfloat16, float32 or float64 with class-index targets (any class weights,
``ignore_index`` and label smoothing) or probability targets (any class
weights and label smoothing; :func:`per_sample_prob`), with or without the
gradient (:func:`grad_rows`: A p - a from the logits, one pass per row), and
the native engine selected. The kernel gives each row's loss, log p(true), p(true), argmax,
top-5 flag, margin and entropy in one sweep with no N x C temporary; the
rest of :class:`~smx_cli.core.xent.XentResult` follows from those here
(see :func:`per_sample`). Rows the kernel hands back (a NaN or a non-finite
maximum) are recomputed by the caller's numpy reference, so special rows
are identical on both engines.

Stays on the numpy kernels (``XentResult.engine == 'numpy'``): ``input_kind`` 'log-probs' and 'probs' (the kernel takes logits;
``smx xent --dtype`` emulation feeds torch's log-probabilities as
'log-probs'), integer logits, and the numpy engine itself
(``SMX_ENGINE=numpy``). A temperature is not a kernel option:
callers divide the logits by it in float64 first, which the kernel takes.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core import native
from smx_cli.core.xent_checks import check_target_sums

# elements per block when rows are copied to C order or widened for the residual
_BLOCK = 1 << 20


def covers(kind: str, input_kind: str, want_grad: bool, dtype) -> bool:
    """True when the compiled kernel computes this cross-entropy (see the module docstring);
    ``want_grad`` is covered too (:func:`grad_rows`)."""
    return kind in ("index", "prob") and input_kind == "logits" and native.supports(dtype)


def grad_rows(x2: np.ndarray, t: np.ndarray, w, ignore_index: int, eps: float, out: np.ndarray,
              threads: int | None = None) -> np.ndarray:
    """Each sample's gradient A p - a into ``out`` (N, C) float64 by native.xent_grad_rows
    (class indices ``t`` (N,) or probabilities (N, C)); returns the rows it handed back
    (NaN or a non-finite maximum), whose gradient is the caller's to compute."""
    n, c = x2.shape
    if x2.flags.c_contiguous:
        fb = native.xent_grad_rows(x2, t, out, weight=w, ignore_index=ignore_index,
                                   label_smoothing=eps, threads=threads)
    else:  # C-ordered copies of row blocks
        step = max(1, _BLOCK // max(c, 1))
        fb = np.concatenate([np.zeros(0, dtype=bool)] + [
            native.xent_grad_rows(np.ascontiguousarray(x2[s:s + step]), t[s:s + step],
                                  out[s:s + step], weight=w, ignore_index=ignore_index,
                                  label_smoothing=eps, threads=threads)
            for s in range(0, n, step)])
    return np.flatnonzero(fb)


def per_sample_prob(x2: np.ndarray, t: np.ndarray, w, eps: float,
                    threads: int | None = None, *, validate: bool = False,
                    tolerance: float | None = 1e-6) -> tuple[dict, np.ndarray]:
    """native.xent_prob_rows' arrays for every row of ``x2`` (probability targets ``t``),
    and the rows it handed back (NaN or non-finite maximum, negative or NaN target),
    whose values are the caller's to recompute.

    With ``validate`` the targets (float32 or float64, unchecked:
    ``check_target(..., defer_prob=True)``) are checked from the kernel's own
    row sums (:func:`~smx_cli.core.xent_checks.check_target_sums`: finite,
    >= 0, summing to 1 within ``tolerance``), raising check_target's errors.
    """
    n, c = x2.shape
    if x2.flags.c_contiguous:
        res = native.xent_prob_rows(x2, t, weight=w, label_smoothing=eps, threads=threads)
    else:  # C-ordered copies of row blocks
        step = max(1, _BLOCK // max(c, 1))
        parts = [native.xent_prob_rows(np.ascontiguousarray(x2[s:s + step]), t[s:s + step],
                                       weight=w, label_smoothing=eps, threads=threads)
                 for s in range(0, n, step)]
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sums = res.pop("target_sum")
    if validate:
        check_target_sums(t, sums, tolerance)
    return res, np.flatnonzero(res.pop("fallback"))


def per_sample(x2: np.ndarray, y: np.ndarray, w, ignore_index: int, eps: float,
               threads: int | None = None) -> tuple[dict, np.ndarray]:
    """The kernel's per-sample arrays for every row of ``x2``, and the rows it handed back.

    Returns ``(res, fallback_rows)``: ``res`` holds native.xent_rows' arrays
    (``loss``, ``logp_true``, ``p_true``, ``argmax``, ``top5``, ``margin``,
    ``entropy``) plus ``residual`` (max_c |p_c - a_c / A|, see
    :func:`residual`); the values of ``fallback_rows`` (NaN or non-finite
    maximum, or a -inf logit on the true class) are the caller's to recompute.
    """
    n, c = x2.shape
    if x2.flags.c_contiguous:
        res = native.xent_rows(x2, y, weight=w, ignore_index=ignore_index,
                               label_smoothing=eps, threads=threads)
    else:  # e.g. the class axis moved last: C-ordered copies of row blocks
        step = max(1, _BLOCK // max(c, 1))
        parts = [native.xent_rows(np.ascontiguousarray(x2[s:s + step]), y[s:s + step], weight=w,
                                  ignore_index=ignore_index, label_smoothing=eps,
                                  threads=threads) for s in range(0, n, step)]
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else \
            native.xent_rows(np.zeros((0, c), x2.dtype), y, weight=w, ignore_index=ignore_index,
                             label_smoothing=eps)
    redo = res.pop("fallback")
    # also handed back: a -inf logit on the true class (log p(y) = -inf leaves no log-sum-exp
    # to rebuild the other p_c from, for the residual), and NaN losses of rows with a finite
    # maximum (the kernel's smoothing sum gives inf - inf for a -inf logit on the true class,
    # where PyTorch's loss is inf)
    with np.errstate(invalid="ignore"):
        redo |= (np.isinf(res["logp_true"]) | np.isnan(res["loss"])) & (y != ignore_index)
    res["residual"] = residual(x2, y, w, ignore_index, eps, res)
    return res, np.flatnonzero(redo)


def residual(x2, y, w, ignore_index, eps, res) -> np.ndarray:
    """max_c |p_c - a_c / A| of each row from the kernel's outputs (NaN where A = 0).

    a_c = (1 - eps) w_y [c == y] + (eps / C) w_c are the loss's coefficients
    (loss = -sum_c a_c logp_c) and A = sum_c a_c, so this is the largest
    entry of the sample's gradient A p - a over A (xent.evaluate's
    ``residual``). Without smoothing it is 1 - p_y = -expm1(logp_y). With
    smoothing the true class's entry is (p_y (A - a_y) - a_y (1 - p_y)) / A;
    for the others, p_c = exp((x_c - x_y) + logp_y) (x_c - x_y is exact for
    16/32-bit logits): unweighted, a_c / A is one constant b and p is
    monotone in x, so max_{c != y} |p_c - b| needs only the largest other
    p (exp(logp_y - margin)) and the smallest (from the row's minimum);
    weighted, the rows are swept in float64 blocks.
    """
    n, c = x2.shape
    ign = y == ignore_index
    yy = np.where(ign, 0, y)
    lp_y = res["logp_true"]
    with np.errstate(invalid="ignore", over="ignore"):
        one_minus = -np.expm1(lp_y)
        wy = np.where(ign, 0.0, w[yy] if w is not None else 1.0)
        if eps == 0:
            return np.where(wy > 0, one_minus, np.nan)
        k = eps / c
        a_y = k * wy + (1 - eps) * wy
        big_a = np.where(ign, 0.0, k * (float(np.sum(w)) if w is not None else c)
                         + (1 - eps) * wy)
        p_y = res["p_true"]
        g_y = p_y * (big_a - a_y) - np.where(a_y > 0, a_y * one_minus, 0.0)
        r = np.abs(g_y) / big_a
        if c > 1:
            # |p_c - b_c| <= max(p_c, b_c) <= max(largest other p, largest b): where that is
            # below the true class's term the residual is that term, and the row is done
            p_other = np.exp(lp_y - res["margin"])
            b_max = k * (float(np.max(w)) if w is not None else 1.0) / big_a
            need = np.flatnonzero((big_a > 0) & (np.maximum(p_other, b_max) > r))
            if w is None:
                r[need] = np.maximum(r[need], _others_uniform(x2, yy, lp_y, res["margin"],
                                                             k / big_a, need))
            else:
                r[need] = np.maximum(r[need], _others_weighted(x2, yy, lp_y, k * w,
                                                               big_a, need))
        return np.where(big_a > 0, r, np.nan)


def _wide(xb: np.ndarray) -> np.ndarray:
    """float16/bfloat16 widened to float32 (exact); float32/float64 as they are."""
    return xb if xb.dtype in (np.float32, np.float64) else xb.astype(np.float32)


def _others_uniform(x2, yy, lp_y, margin, b, live) -> np.ndarray:
    """max_{c != y} |p_c - b| of rows ``live`` (or less where the true class has the
    smallest p, whose own term is then larger): max(p_max - b, b - p_min)."""
    out = np.empty(len(live))
    step = max(1, _BLOCK // x2.shape[1])
    for s in range(0, len(live), step):
        rows = live[s:s + step]
        xb = _wide(x2[rows])
        r = np.arange(len(rows))
        x_y = xb[r, yy[rows]]
        # the minimum over all classes will do: where it is the true class's own, b - p_y
        # <= b_y - p_y (b_y = b + 1 - eps), already in the residual
        lo = xb.min(axis=1)
        ly = lp_y[rows]
        p_max = np.exp(ly - margin[rows])
        p_min = np.exp((lo.astype(np.float64) - x_y.astype(np.float64)) + ly)
        bb = b[rows]
        out[s:s + step] = np.maximum(p_max - bb, bb - p_min)
    return out


def _others_weighted(x2, yy, lp_y, kw, big_a, live) -> np.ndarray:
    """max_{c != y} |p_c - k w_c / A| of rows ``live``, swept in float64 blocks."""
    out = np.empty(len(live))
    step = max(1, _BLOCK // (4 * x2.shape[1]))
    for s in range(0, len(live), step):
        rows = live[s:s + step]
        r = np.arange(len(rows))
        xb = np.asarray(x2[rows], dtype=np.float64)
        xb -= xb[r, yy[rows]][:, None]  # exact for 16/32-bit logits
        xb += lp_y[rows][:, None]
        np.exp(xb, out=xb)
        xb -= kw[None, :] / big_a[rows][:, None]
        np.abs(xb, out=xb)
        xb[r, yy[rows]] = 0.0
        out[s:s + step] = xb.max(axis=1)
    return out
