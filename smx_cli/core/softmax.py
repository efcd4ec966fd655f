"""The softmax family's API: softmax, log_softmax, logsumexp, and the compute engine.

Two kinds of computation sit behind these functions.

*Accurate* (the default, ``dtype=None``): the result in the input's float
format, within a few ulps of the exact value for every entry whose exact value
is a normal number, whatever the spread of the row
(:mod:`smx_cli.core.accurate`, made fast by :mod:`smx_cli.core.kernels`).

*Emulated* (``dtype="float16"`` etc.): the algorithm as a framework runs it in
that format, each operation rounded to the format and sums taken left to right
for the 16-bit formats (:mod:`smx_cli.core.emulate`). This is how a user sees
the overflow a float16 run hits.

The variants (declared once in :mod:`smx_cli.core.registry`):

``naive``   exp(x) / sum(exp(x)), unshifted: the teaching baseline. Always
            computed in the working format's arithmetic, never made accurate.
``stable``  max-shifted, divide-by-sum (the default).
``log``     log-softmax, with the dominant entry as -log1p(sum_{i != max} e_i).
``online``  one-pass normaliser (Milakov & Gimelshein 2018) over column blocks.
``lse``     exp(x - logsumexp(x)), the division-free form. Always computed in
            the working format's arithmetic, like ``naive``.

:func:`softmax` also takes the rest of the family (``hardmax``, ``sparsemax``,
``entmax15``, ``entmax``, ``gumbel``), as ``smx softmax --variant`` does.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core import registry
from smx_cli.core.accurate import BLOCK_ELEMENTS as _BLOCK_ELEMENTS  # noqa: F401
from smx_cli.core.accurate import ONLINE_BLOCK, accurate, fast as _fast_path, shifted
from smx_cli.core.accurate import _accurate_block  # noqa: F401  (tests)
from smx_cli.core.emulate import emulate
from smx_cli.core.kernels import FAST_ULP_NOTE
from smx_cli.core.precision import FORMATS, format_of, result_format
from smx_cli.core.result import (MASKED_POLICIES, KernelStats, SoftmaxResult, as_rows,  # noqa: F401
                                 check_masked, check_temperature, floating, from_rows)

#: the variants :func:`compute` runs (the rest of the family: :func:`softmax`)
VARIANTS = registry.SOFTMAX_VARIANTS
#: every ``--variant``, as :func:`softmax` takes them
ALL_VARIANTS = registry.ALL_VARIANTS


def check_variant(variant: str) -> str:
    registry.get(variant, VARIANTS)
    return variant


def compute(x2: np.ndarray, variant: str = "stable", temperature: float = 1.0,
            dtype: str | None = None, masked: str = "nan", *, fast: bool = False,
            threads: int | None = None, out: np.ndarray | None = None) -> SoftmaxResult:
    """Run one variant over (N, C) rows; the engine behind every command.

    Parameters
    ----------
    x2 : ndarray, shape (N, C)
        Logits, one row per sample, classes along the last axis.
    variant : str
        One of :data:`VARIANTS` (the softmax variants of the registry,
        :mod:`smx_cli.core.registry`).
    temperature : float
        The logits are divided by this (> 0) before normalising.
    dtype : str or None
        ``None`` for the accurate result in the input's format (naive and lse
        run in that format's arithmetic); a format name to emulate it.
    masked : {'nan', 'zeros'}
        What a fully masked row (every entry -inf) gives.
    fast : bool
        Opt-in fast mode for ``stable`` and ``log``: computed in the input's
        format (float16/bfloat16 in float32) with the plain max-shift, not
        within 4 ulps. Measured accuracy: see Notes. Not combinable with
        ``dtype``.
    threads : int or None
        Threads for the row blocks (default: the machine's cores).
    out : ndarray or None
        A preallocated (N, C) array of the result's dtype to write into (accurate
        and fast paths only; not with ``dtype`` emulation).
        Reusing one saves the page faults of a fresh allocation, which cost
        more than the kernel itself on big inputs.

    Returns
    -------
    SoftmaxResult

    Notes
    -----
    The accurate paths are blocked (about 256 KB of float64 per block),
    threaded and, for rows of at most 64 classes, transposed; every path gives
    the same result to within the 4-ulp contract whatever ``threads``.

    Fast mode's accuracy, measured against
    :func:`smx_cli.core.reference.exact_softmax` (``bench/ulps.py``; worst measured 0.9 of the bound): softmax
    entries within 2 + |x_i - max| / T + log2(C) ulps of the input format
    (the rounding of x - max in the format is amplified by exp), log-softmax
    entries within the same bound in ulps of max(|logp_i|, 1) (the dominant
    entry's log is only absolutely accurate).

    Examples
    --------
    >>> r = compute(np.array([[1.0, 2.0, 3.0]]))
    >>> np.round(r.values, 4)
    array([[0.09  , 0.2447, 0.6652]])
    """
    spec = registry.get(variant, VARIANTS)
    t = check_temperature(temperature)
    check_masked(masked)
    x2 = floating(np.asarray(x2))
    if x2.ndim != 2:
        raise ValueError(f"compute takes (N, C) rows, got shape {x2.shape}")
    if fast:
        if dtype is not None or not spec.fast:
            raise ValueError("fast mode computes stable or log in the input's format; "
                             "it does not combine with dtype emulation or other variants")
        return _fast_path(x2, spec, t, masked, threads, out)
    if dtype is None and spec.accurate is not None:
        return accurate(x2, spec, t, masked, threads, out)
    if out is not None:
        raise ValueError("out is supported by the accurate and fast paths, not by emulation")
    fmt = format_of(dtype) if dtype is not None else result_format(x2.dtype)
    return emulate(x2, spec, t, fmt, masked)


def _variant_options(spec, alpha, tau, hard, samples, seed) -> registry.VariantOptions:
    """The options of ``spec``; one it does not read is an error, not ignored."""
    given = {"alpha": alpha is not None, "tau": tau is not None, "hard": bool(hard),
             "samples": samples != 1, "seed": seed is not None}
    reads = {"alpha": spec.needs_alpha, "tau": spec.needs_tau, "hard": spec.stochastic,
             "samples": spec.stochastic, "seed": spec.stochastic}
    for name, is_given in given.items():
        if is_given and not reads[name]:
            raise ValueError(f"{name}= does not apply to variant {spec.name!r}")
    if spec.needs_alpha and alpha is not None and not (np.isfinite(alpha) and alpha > 1):
        raise ValueError(f"alpha must be a finite number > 1, got {alpha!r}")
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    return registry.VariantOptions(alpha=1.5 if alpha is None else float(alpha),
                                   tau=1.0 if tau is None else float(tau), hard=bool(hard),
                                   samples=int(samples), seed=seed)


def softmax(x, axis: int = -1, variant: str = "stable", temperature: float = 1.0,
            dtype: str | None = None, masked: str = "nan", *, fast: bool = False,
            threads: int | None = None, mask=None, alpha: float | None = None,
            tau: float | None = None, hard: bool = False, samples: int = 1,
            seed: int | None = None) -> np.ndarray:
    """Softmax (or any ``smx softmax --variant``) of ``x`` along ``axis``.

    Parameters
    ----------
    x : array_like
        Logits. Integers are converted to float64; complex input is refused.
    axis : int
        The class axis (default: the last).
    variant : str
        Any ``--variant`` of ``smx softmax``: ``stable`` (default), ``naive``,
        ``log``, ``online``, ``lse``, ``hardmax``, ``sparsemax``,
        ``entmax15``, ``entmax``, ``gumbel``. As in the CLI, ``log`` gives
        *log*-probabilities (the same as :func:`log_softmax`); every other
        variant gives probabilities.
    temperature : float
        Softmax of ``x / temperature``.
    dtype : {None, 'float16', 'bfloat16', 'float32', 'float64'}
        ``None``: the accurate result in the input's float format.
        A name: emulate computing in that format (input rounded to it; the
        sparse maps and Gumbel round their input and output only).
    masked : {'nan', 'zeros'}
        Result for a row whose entries are all -inf (PyTorch gives NaN).
    fast : bool
        Opt-in fast mode (``stable`` and ``log``): the input's own arithmetic
        with the plain max-shift, within 2 + |x_i - max|/T + log2(C) ulps
        (measured) instead of 4. See :func:`compute`.
    threads : int or None
        Threads (default: the machine's cores).
    mask : array_like of bool, optional
        Keep-mask of ``x``'s shape (``--mask``): False entries get probability
        0 and a fully masked row gives zeros, never NaN.
    alpha : float, optional
        ``entmax`` only: alpha > 1 (default 1.5; 2 is sparsemax).
    tau, hard, samples, seed
        ``gumbel`` only: the Gumbel-softmax temperature (default 1), one-hot
        samples, samples per row (the result then has a leading axis of
        ``samples``), and the random seed.

    Returns
    -------
    ndarray
        Probabilities (log-probabilities for ``log``), the shape of ``x``
        (with a leading ``samples`` axis for several Gumbel samples), in
        ``x``'s float type (float64 for integers) or in ``dtype``.

    Notes
    -----
    +inf entries share the row's mass equally; a NaN makes its row NaN.
    Accuracy: within 4 ulps of the exact value for every entry whose exact
    value is a normal number of the result format (stable, log, online).

    Examples
    --------
    >>> softmax([1.0, 2.0, 3.0]).round(4)
    array([0.09  , 0.2447, 0.6652])
    >>> softmax([1000.0, 2000.0, 3000.0])
    array([0., 0., 1.])
    >>> softmax([1000.0, 2000.0, 3000.0], variant="naive")
    array([nan, nan, nan])
    >>> softmax(np.array([1.0, 2.0, 3.0], dtype=np.float32), fast=True).round(4)
    array([0.09  , 0.2447, 0.6652], dtype=float32)
    >>> float(softmax([0.0, -40.0], variant="log")[1])
    -40.0
    >>> softmax(np.array([1.0, 2.0, 5.0], dtype=np.float32), variant="sparsemax")
    array([0., 0., 1.], dtype=float32)
    >>> softmax([1.0, 2.0, 3.0], mask=[True, False, True]).round(4)
    array([0.1192, 0.    , 0.8808])
    """
    a = np.asarray(x)
    spec = registry.get(variant)
    options = _variant_options(spec, alpha, tau, hard, samples, seed)
    x2, shape, ax = as_rows(floating(a), axis)
    m2 = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != a.shape:
            raise ValueError(f"mask has shape {m.shape}, the logits {a.shape}: they must match")
        m2, _, _ = as_rows(m, axis)
    run = registry.run(x2, variant, temperature=temperature, dtype=dtype, masked=masked, mask=m2,
                       options=options, fast=fast, threads=threads)
    values = run.result.values
    if run.samples > 1:
        per = values.reshape((run.samples,) + x2.shape)
        return np.stack([from_rows(v, shape, ax, a.ndim) for v in per])
    return from_rows(values, shape, ax, a.ndim)


def log_softmax(x, axis: int = -1, temperature: float = 1.0, dtype: str | None = None,
                masked: str = "nan", *, fast: bool = False,
                threads: int | None = None) -> np.ndarray:
    """Log-softmax of ``x`` along ``axis``; the dominant entry stays accurate.

    ``log(softmax(x))`` loses everything for a dominant entry: its
    probability rounds to 1 and the log to 0. Here log p_max is computed as
    -log1p(sum_{i != max} exp(x_i - max)), so it keeps its relative accuracy.

    Parameters are those of :func:`softmax`; ``fast=True`` computes
    x - max - log(sum(exp(x - max))) in the input's format (the dominant
    entry then only to absolute accuracy).

    Examples
    --------
    >>> float(np.log(softmax([0.0, -40.0]))[0])
    0.0
    >>> float(log_softmax([0.0, -40.0])[0])
    -4.248354255291589e-18
    >>> float(log_softmax([0.0, -40.0], fast=True)[0])
    0.0
    """
    a = np.asarray(x)
    x2, shape, ax = as_rows(floating(a), axis)
    res = compute(x2, "log", temperature, dtype, masked, fast=fast, threads=threads)
    return from_rows(res.values, shape, ax, a.ndim)


def logsumexp(x, axis: int | None = -1, temperature: float = 1.0, *,
              keepdims: bool = False) -> np.ndarray:
    """log(sum(exp(x / temperature))) along ``axis``, in the log1p form.

    lse = m + log1p(sum_{i != k} exp(x_i - m)), m = x_k the maximum. NaN
    propagates, a +inf entry gives +inf, an all -inf (or empty) row -inf.

    ``axis=None`` reduces over every entry; ``keepdims=True`` keeps the
    reduced axis with length one, so the result broadcasts against ``x``
    (as in :func:`scipy.special.logsumexp`). Complex input is refused.

    Examples
    --------
    >>> float(logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    >>> float(logsumexp([-np.inf, -np.inf]))
    -inf
    >>> logsumexp(np.zeros((2, 3)), axis=0, keepdims=True).shape
    (1, 3)
    >>> x = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> bool(np.allclose(x - logsumexp(x, keepdims=True), log_softmax(x)))
    True
    """
    a = floating(np.asarray(x))
    t = check_temperature(temperature)
    if axis is None:
        out = logsumexp(a.reshape(-1), -1, t)
        return out.reshape((1,) * a.ndim) if keepdims else out
    x2, shape, ax = as_rows(a, axis)
    fmt = result_format(x2.dtype)
    xb = x2.astype(np.float64)
    n, width = xb.shape
    if width == 0:
        out = np.full(n, -np.inf)
    else:
        with np.errstate(all="ignore"):
            m = xb.max(axis=1, keepdims=True)
            shift = np.where(np.isfinite(m), m, 0.0)
            q, c = shifted(xb, shift, t, fmt.name == "float64")
            e = np.exp(q)
            if c is not None:
                e += e * c
            rows = np.arange(n)
            e[rows, np.argmax(q, axis=1)] = 0.0
            out = (shift[:, 0] / t) + np.log1p(e.sum(axis=1))
            out = np.where(np.isfinite(m[:, 0]), out, m[:, 0])
    out = fmt.cast(out)
    out = out.reshape(shape[:-1]) if a.ndim > 1 else out.reshape(())
    if keepdims and a.ndim:
        out = np.expand_dims(out, ax)
    return out


__all__ = [
    "VARIANTS", "ALL_VARIANTS", "softmax", "log_softmax", "logsumexp", "compute",
    "SoftmaxResult", "KernelStats", "as_rows", "from_rows", "FORMATS", "FAST_ULP_NOTE",
    "ONLINE_BLOCK",
]
