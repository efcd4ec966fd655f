"""Wrapper of the compiled core ``smx_cli.core._smx_native`` (fused accurate kernels).

The extension is optional: :func:`available` says whether it was built, and
:func:`engine` names what runs ("numpy" when it is missing or ``SMX_ENGINE=numpy``
is set, else "native-avx512" / "native-avx2" / "native-baseline", the
instruction set of the clone gcc's run-time dispatcher picked).

Every function takes C-contiguous (N, C) rows of float16, bfloat16
(``ml_dtypes.bfloat16``), float32 or float64 and writes into caller-provided
outputs. Rows are split into contiguous blocks run on Python threads (the
kernels release the GIL). The counts :func:`softmax_rows` returns are only the
kernel's own (overflow, underflow, NaN and masked rows); the diagnostics
panel's (zeros, subnormals, |sum - 1|, argmax of the outputs) are taken by a
separate compiled pass over x and y (``_smx_diag``, called by
:mod:`smx_cli.analysis.diagnostics`), not fused into these kernels.

Accuracy (documented bounds, asserted by ``tests/test_native.py`` against
mpmath / the long double reference on adversarial rows -- spreads of
[-1e4, 1e4], ties, dominant rows, rows around the formats' underflow limits,
+-inf, temperatures 0.3, 0.7 and 7, 100000 x 10, 64 x 32000 -- on every
instruction-set variant the CPU runs):

* float16, bfloat16, float32: computed in float64 and rounded once, so within
  0.5 ulp + 2**-20 ulp (correctly rounded except within a 2**-20-ulp band
  around rounding midpoints); softmax and log-softmax. The float64 value
  before the rounding needs only a relative error below 2**-44, so these
  formats take a single-word path (error budget in _smx_lowp.h): x - m in
  float64 (error <= |x - m| 2**-53), a Cody-Waite exp with one 2**k scale
  (portable variants: degree-10 minimax, <= 2**-50.2; AVX-512: a 16-entry
  2**(j/16) table and a degree-5 minimax, <= 2**-46.9), row sums in lane
  accumulators restarted every 32 (AVX-512: 4) terms with double-double block
  totals, one reciprocal and one product (2 roundings); log-softmax is
  (x - m) - log1p(R), R the sum of the non-max terms plus the number of other
  maxima, two non-positive terms that never cancel. Total below 2**-44.34.
  Measured: 0.5000.
* float64 softmax and log-softmax: <= 1.5 ulp for every entry whose exact
  value is a normal number (log-softmax: the dominant entry keeps its
  relative accuracy, computed as -log1p(sum_{i != max} e_i)). Measured:
  softmax 1.02 ulp, log-softmax 0.84 ulp. On AVX-512 CPUs the rows wider
  than the narrow path's take an intrinsics kernel (_smx_f64x4.h: exp from a
  16-entry 2**(j/16) table held as hi + lo words, the pair within 0.07 u;
  log-softmax's maximum, argmax and second maximum in one pass); the same
  bound, measured 0.97 / 0.58 ulp.
* cross-entropy per-row loss (float64, class indices): float64 logits within
  2 ulp (measured 0.50) without smoothing; 16/32-bit logits within 6 ulp
  (their single-word sweep: exp <= 1.1 ulp with FMA, x - m's rounding error
  kept by TwoSum, lane sums restarted every 4 terms; the bound is asserted on
  every instruction set, the baseline one evaluating exp without FMA);
  with weights and smoothing <= 16 ulp; entropy within 8 ulp (the smoothing
  sum and the entropy's dot sum over classes are summed like R, in lanes
  restarted every 4 terms with double-double totals, so their error does not
  grow with C: tested at C = 131072).
* VJPs of softmax and log-softmax (:func:`vjp_rows`): float64 within 8 ulp
  of (|out_j| + p_j G / T), G = <|g|, p> or sum |g|; 16/32-bit within 2**-43
  of that, rounded once.
* cross-entropy with probability targets (:func:`xent_prob_rows`, every
  format, weights, label smoothing): loss = sum_c a_c (m - x_c) + L sum_c a_c
  with a = w ((1 - eps) t + eps / C), two sums of non-negative terms summed
  in lanes restarted every 4 terms with double-double totals; loss and the
  plain nll within 16 ulp of float64 (budget <= 8 ulp in _smx_xent.h; rows
  with a negative or NaN target go to the numpy reference); the residual
  max_c |p_c - a_c / A| within 16 ulp absolute.

The results do not depend on the thread count. They may differ in the last
bits of float64 between the instruction sets (the FMA variants evaluate the
exp polynomial with fused multiply-adds, the SSE2 baseline without); each
meets the bounds above.

Special rows follow :mod:`smx_cli.core.accurate` exactly: a NaN anywhere makes
the row NaN; +inf entries share the mass equally (the rest get 0, log -inf);
a row of all -inf ("masked") is NaN (``masked="zeros"``: 0, log -inf);
0 rows or 0 columns give an empty result.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

try:
    from smx_cli.core import _smx_native as _ext
    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # not built: the numpy engine runs
    _ext = None
    _IMPORT_ERROR = str(exc)

try:
    import ml_dtypes
    _BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    _BF16 = None

_DT = {np.dtype(np.float16): 0, np.dtype(np.float32): 2, np.dtype(np.float64): 3}
if _BF16 is not None:
    _DT[_BF16] = 1
_KINDS = {"prob": 0, "logprob": 1}
# below this many elements one thread does it all
_MIN_PARALLEL = 1 << 15
_pools: dict[int, ThreadPoolExecutor] = {}


def available() -> bool:
    """True when the extension is built and importable (whatever SMX_ENGINE says)."""
    return _ext is not None


def why_unavailable() -> str | None:
    """The import error when the extension is missing, else None."""
    return _IMPORT_ERROR


_forced = threading.local()


def engine() -> str:
    """'numpy' (extension missing, SMX_ENGINE=numpy, or inside :func:`numpy_engine`),
    else 'native-<isa>'."""
    if (_ext is None or getattr(_forced, "numpy", False)
            or os.environ.get("SMX_ENGINE", "").strip().lower() == "numpy"):
        return "numpy"
    return "native-" + _ext.isa()


@contextmanager
def numpy_engine():
    """Run the numpy reference kernels in this thread, whatever is built.

    Examples
    --------
    >>> with numpy_engine():
    ...     engine()
    'numpy'
    """
    before = getattr(_forced, "numpy", False)
    _forced.numpy = True
    try:
        yield
    finally:
        _forced.numpy = before


def supports(dtype) -> bool:
    """True when the compiled kernels take rows of this dtype (float16, bfloat16,
    float32, float64) and the native engine is selected."""
    return engine() != "numpy" and np.dtype(dtype) in _DT


def default_threads() -> int:
    return min(os.cpu_count() or 1, 2)


def _pool(n: int) -> ThreadPoolExecutor:
    pool = _pools.get(n)
    if pool is None:
        pool = _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="smx-native")
    return pool


def _need_ext():
    if _ext is None:
        raise RuntimeError(f"the smx native extension is not built ({_IMPORT_ERROR})")
    return _ext


def _dt(a: np.ndarray) -> int:
    try:
        return _DT[a.dtype]
    except KeyError:
        raise TypeError(f"unsupported dtype {a.dtype}; float16, bfloat16, float32 or float64") from None


def _check_rows(x2: np.ndarray) -> np.ndarray:
    if not isinstance(x2, np.ndarray) or x2.ndim != 2:
        raise ValueError("expected a 2-D (N, C) numpy array")
    if not x2.flags.c_contiguous:
        raise ValueError("rows must be C-contiguous")
    return x2


def _raw(a: np.ndarray) -> np.ndarray:
    """A byte-compatible view the buffer protocol accepts (bfloat16 as uint16)."""
    return a.view(np.uint16) if a.dtype == _BF16 else a


def _blocks(n: int, c: int, threads: int | None):
    nt = default_threads() if threads is None else max(1, int(threads))
    if nt == 1 or n * max(c, 1) < _MIN_PARALLEL or n < 2:
        return [(0, n)], 1
    nt = min(nt, n)
    step = -(-n // nt)
    return [(s, min(s + step, n)) for s in range(0, n, step)], nt


def _run(fn, n: int, c: int, threads: int | None):
    blocks, nt = _blocks(n, c, threads)
    if nt == 1:
        return [fn(r0, r1) for r0, r1 in blocks]
    futs = [_pool(nt).submit(fn, r0, r1) for r0, r1 in blocks]
    return [f.result() for f in futs]


def _temperature(t) -> float:
    t = float(t)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")
    return t


def softmax_rows(x2: np.ndarray, out: np.ndarray, *, kind: str = "prob", temperature: float = 1.0,
                 masked: str = "nan", threads: int | None = None,
                 argmax: np.ndarray | None = None) -> dict:
    """Accurate softmax (``kind="prob"``) or log-softmax (``"logprob"``) of rows, into ``out``.

    Parameters
    ----------
    x2 : ndarray (N, C), C-contiguous, float16 / bfloat16 / float32 / float64
    out : ndarray (N, C), C-contiguous, same dtype as ``x2`` (may not alias it)
    kind : {'prob', 'logprob'}
    temperature : float > 0
        Softmax of x / temperature.
    masked : {'nan', 'zeros'}
        What a row of all -inf gives (NaN like PyTorch; zeros: 0 / log -inf).
    threads : int or None
        Python threads over contiguous row blocks (default min(cpu_count, 2)).
    argmax : ndarray (N,) int64 or None
        When given, filled with each row's first maximum (numpy's argmax:
        the first NaN for a NaN row, 0 for an all -inf row).

    Returns
    -------
    dict of int counts, taken in the same passes:
        ``exp_overflow``  exp of a finite argument that became inf (always 0:
                          the accurate kernel only takes exp of x - max <= 0);
        ``exp_underflow`` finite entries whose probability is 0 in the output
                          format (prob: the stored value is 0; logprob: the
                          log-probability is below log of half the format's
                          smallest subnormal, so exp of it would round to 0);
        ``nan_entries``   NaN entries written to ``out``;
        ``nan_rows``      rows containing NaN in ``out`` (NaN input rows, and
                          fully masked rows under masked='nan');
        ``masked_rows``   rows of all -inf;
        ``posinf_rows``   rows with a +inf entry (and no NaN).
    """
    ext = _need_ext()
    x2 = _check_rows(x2)
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'prob' or 'logprob', got {kind!r}")
    if masked not in ("nan", "zeros"):
        raise ValueError(f"masked must be 'nan' or 'zeros', got {masked!r}")
    t = _temperature(temperature)
    dt = _dt(x2)
    if not isinstance(out, np.ndarray) or out.shape != x2.shape or out.dtype != x2.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {x2.shape} and dtype {x2.dtype}")
    if np.shares_memory(out, x2):
        raise ValueError("out must not overlap x2")
    n, c = x2.shape
    if argmax is not None and (argmax.shape != (n,) or argmax.dtype != np.int64
                               or not argmax.flags.c_contiguous):
        raise ValueError(f"argmax must be a C-contiguous int64 array of shape ({n},)")
    names = ("exp_overflow", "exp_underflow", "nan_entries", "nan_rows", "masked_rows",
             "posinf_rows")
    stats = dict.fromkeys(names, 0)
    if n == 0 or c == 0:
        if argmax is not None:
            argmax[:] = 0
        return stats
    xr, orr = _raw(x2), _raw(out)
    mz = 1 if masked == "zeros" else 0

    def one(r0, r1):
        return ext.softmax(xr, orr, dt, n, c, _KINDS[kind], t, mz, r0, r1, argmax)

    for part in _run(one, n, c, threads):
        for name, v in zip(names, part):
            stats[name] += v
    return stats


def logsumexp_rows(x2: np.ndarray, out: np.ndarray, temperature: float = 1.0,
                   threads: int | None = None) -> np.ndarray:
    """log(sum(exp(x / temperature))) of each row into ``out`` (shape (N,)).

    ``out`` is float64 (the value rounded once from a double-double) or the
    input's dtype (rounded once to it). NaN in a row gives NaN, a +inf entry
    +inf, an all -inf row (or 0 columns) -inf. Returns ``out``.
    """
    ext = _need_ext()
    x2 = _check_rows(x2)
    t = _temperature(temperature)
    dt = _dt(x2)
    n, c = x2.shape
    if not isinstance(out, np.ndarray) or out.shape != (n,) or not out.flags.c_contiguous \
            or out.dtype not in (np.dtype(np.float64), x2.dtype):
        raise ValueError(f"out must be a C-contiguous ({n},) array of float64 or {x2.dtype}")
    odt = 3 if out.dtype == np.float64 else dt
    if n == 0:
        return out
    xr, orr = _raw(x2), _raw(out)
    _run(lambda r0, r1: ext.logsumexp(xr, orr, dt, odt, n, c, t, r0, r1), n, c, threads)
    return out


def _reference_logsoftmax(xb: np.ndarray) -> np.ndarray:
    """float64 log-softmax of a few rows by the numpy reference kernels (lazy import)."""
    from smx_cli.core.softmax import compute

    with numpy_engine():
        return compute(np.asarray(xb, dtype=np.float64), "log").values


def _xent_args(x2: np.ndarray, label_smoothing: float):
    """The checks both cross-entropy kernels share: (ext, rows, dtype code, n, c, eps)."""
    ext = _need_ext()
    x2 = _check_rows(x2)
    n, c = x2.shape
    if c == 0:
        raise ValueError("the logits have no classes (0 columns)")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label smoothing must be in [0, 1], got {eps!r}")
    return ext, x2, _dt(x2), n, c, eps


def xent_rows(x2: np.ndarray, target: np.ndarray, *, weight=None, ignore_index: int = -100,
              label_smoothing: float = 0.0, threads: int | None = None) -> dict:
    """Per-sample cross-entropy with class-index targets, one sweep per row.

    PyTorch's ``F.cross_entropy(x, y, weight, ignore_index=..., reduction='none',
    label_smoothing=eps)`` for the loss: loss_i = (1 - eps) w[y] (-logp_y)
    + (eps / C) sum_c w[c] (-logp_c), 0.0 where y_i == ignore_index; no N x C
    log-probability array is built (the row's exp pass gives everything).
    Reductions are left to the caller.

    Parameters
    ----------
    x2 : ndarray (N, C), C >= 1, C-contiguous, any of the four float formats
    target : int array (N,), each in [0, C) or equal to ``ignore_index``
    weight : array (C,) of float or None
    label_smoothing : float in [0, 1]

    Returns
    -------
    dict of arrays of length N:
        ``loss`` float64; ``logp_true`` float64 log p(y) (NaN if ignored);
        ``p_true`` float64 (NaN if ignored); ``argmax`` int64 (first maximum;
        0 for a NaN row); ``top5`` bool (fewer than min(5, C) classes strictly
        above the true one; False if ignored or NaN row); ``margin`` float64
        (logp_y - max_{c != y} logp_c; NaN if ignored or C == 1);
        ``entropy`` float64 (-sum p log p); ``fallback`` bool (rows with a NaN
        or a non-finite maximum, computed by the numpy reference instead).

    Accuracy: the loss of a finite row without smoothing is -w[y] logp_y with
    logp_y within 2 ulp of float64 for float64 logits (measured 0.50 ulp against
    mpmath) and within 6 ulp for 16/32-bit logits (one vectorised sweep per
    row after the max pass; on AVX-512 and AVX2 CPUs a float32 max/argmax/top-5
    pass and a table-driven float64 exp, budget <= 3.6 u (AVX2: 3.7 u) in
    _smx_xent.h); with
    smoothing the sum over classes is a plain (SIMD) sum of non-negative
    terms (<= 16 ulp, measured 1.36 ulp). Asserted on every CPU variant by
    ``tests/test_xent_native_rows.py``. Memory: the eight (N,) result arrays
    and a row of scratch (no N x C temporary).
    """
    ext, x2, dt, n, c, eps = _xent_args(x2, label_smoothing)
    tg = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    if tg.shape != (n,):
        raise ValueError(f"target must have {n} entries, got {tg.shape}")
    w = None
    wsum = float(c)
    if weight is not None:
        w = np.ascontiguousarray(weight, dtype=np.float64).reshape(-1)
        if w.shape != (c,):
            raise ValueError(f"weight must have {c} entries, got {w.shape}")
        wsum = float(np.sum(w[w > 0])) if eps > 0 else 0.0
    res = {
        "loss": np.empty(n), "logp_true": np.empty(n), "p_true": np.empty(n),
        "argmax": np.empty(n, dtype=np.int64), "top5": np.zeros(n, dtype=np.bool_),
        "margin": np.empty(n), "entropy": np.empty(n), "fallback": np.zeros(n, dtype=np.bool_),
    }
    if n == 0:
        return res
    xr = _raw(x2)
    order = ("loss", "logp_true", "p_true", "argmax", "top5", "margin", "entropy", "fallback")
    outs = [res[k].view(np.uint8) if res[k].dtype == np.bool_ else res[k] for k in order]

    def one(r0, r1):
        return ext.xent(xr, dt, n, c, tg, w, wsum, int(ignore_index), eps, r0, r1, *outs)

    nfb = sum(_run(one, n, c, threads))
    if nfb:
        _xent_fallback(x2, tg, w, int(ignore_index), eps, res)
    return res


def xent_prob_rows(x2: np.ndarray, target: np.ndarray, *, weight=None,
                   label_smoothing: float = 0.0, threads: int | None = None) -> dict:
    """Per-sample cross-entropy with probability targets, one sweep per row.

    PyTorch's ``F.cross_entropy(x, t, weight, reduction='none', label_smoothing=eps)``
    for (N, C) probability targets t: loss_i = -sum_c w_c t'_ic logp_ic with
    t' = (1 - eps) t + eps / C, computed as sum_c a_c (m - x_c) + L sum_c a_c
    (a = w t', m the row's maximum, L = log sum_c exp(x_c - m)): two sums of
    non-negative terms, nothing cancels, no N x C temporary.

    Parameters
    ----------
    x2 : ndarray (N, C), C >= 1, C-contiguous, any of the four float formats
    target : ndarray (N, C) of float32 or float64 (other dtypes are converted)
    weight : array (C,) of float or None
    label_smoothing : float in [0, 1]

    Returns
    -------
    dict of arrays of length N, all float64 unless said:
        ``loss``; ``nll`` (-sum_c t_c logp_c: no weights, no smoothing);
        ``true_class`` int64 (first argmax of the target row); ``logp_true``,
        ``p_true``, ``margin`` of that class (margin NaN if C == 1);
        ``argmax`` int64 (first maximum of the logits); ``top5`` bool;
        ``entropy``; ``residual`` (max_c |p_c - a_c / A|, A = sum_c a_c; NaN
        where A = 0); ``fallback`` bool: rows with a NaN or a non-finite
        maximum, or a negative or NaN target, computed by the numpy reference
        instead (:func:`smx_cli.core.xent.evaluate` recomputes them);
        ``target_sum`` (sum_c t_c of every row, a double-double rounded once;
        NaN where a target is negative or NaN): the target checks
        (:func:`smx_cli.core.xent_checks.check_target_sums`) take it from the
        same sweep instead of passing over the targets again.

    Accuracy (asserted by ``tests/test_xent_engines.py`` against 50-digit
    mpmath in the four formats): loss and nll within 16 ulp of float64
    relative to the exact loss of the given logits and targets (error budget
    in _smx_xent.h, before xp_sweep: <= 8 ulp); residual within 16 ulp
    absolute; the log p(true), p(true), margin and entropy bounds of
    :func:`xent_rows`.

    Examples
    --------
    >>> r = xent_prob_rows(np.array([[0.0, 0.0]]), np.array([[0.5, 0.5]]))  # doctest: +SKIP
    >>> round(float(r["loss"][0]), 12)  # doctest: +SKIP
    0.693147180560
    """
    ext, x2, dt, n, c, eps = _xent_args(x2, label_smoothing)
    t = np.asarray(target)
    if t.dtype not in (np.float32, np.float64):
        t = t.astype(np.float64)
    t = np.ascontiguousarray(t)
    if t.shape != (n, c):
        raise ValueError(f"target must have shape {(n, c)}, got {t.shape}")
    w = None
    if weight is not None:
        w = np.ascontiguousarray(weight, dtype=np.float64).reshape(-1)
        if w.shape != (c,):
            raise ValueError(f"weight must have {c} entries, got {w.shape}")
        if not (w >= 0).all():
            raise ValueError("class weights must be >= 0 for the compiled kernel")
    f8 = ("loss", "nll", "logp_true", "p_true", "margin", "entropy", "residual")
    res = {k: np.empty(n) for k in f8}
    res["argmax"] = np.empty(n, dtype=np.int64)
    res["true_class"] = np.empty(n, dtype=np.int64)
    res["top5"] = np.zeros(n, dtype=np.bool_)
    res["fallback"] = np.zeros(n, dtype=np.bool_)
    res["target_sum"] = np.empty(n)
    if n == 0:
        return res
    order = f8 + ("argmax", "true_class", "top5", "fallback", "target_sum")
    outs = [res[k].view(np.uint8) if res[k].dtype == np.bool_ else res[k] for k in order]
    xr = _raw(x2)
    t64 = 1 if t.dtype == np.float64 else 0

    def one(r0, r1):
        return ext.xent_prob(xr, dt, n, c, t, t64, w, eps, r0, r1, *outs)

    sum(_run(one, n, c, threads))
    return res


def xent_grad_rows(x2: np.ndarray, target: np.ndarray, out: np.ndarray, *, weight=None,
                   ignore_index: int = -100, label_smoothing: float = 0.0,
                   threads: int | None = None) -> np.ndarray:
    """Each sample's cross-entropy gradient A p - a with respect to its logits, into ``out``.

    The loss of row i is -sum_c a_ic logp_ic (PyTorch's ``F.cross_entropy``
    with ``reduction='none'``): class indices ``target`` (N,) give a_c =
    (eps / C) w_c + (1 - eps) w_y [c == y] (0 for ``ignore_index``: a zero
    row); probability targets (N, C) give a_c = w_c ((1 - eps) t_c + eps / C).
    The gradient is A p - a with A = sum_c a_c, computed from the logits in
    one pass per row as p_c (A - a_c) - a_c (1 - p_c) (no log-probability
    array; a saturated sample keeps a relatively accurate tiny gradient).
    Reductions are the caller's (divide by the mean's denominator).

    Parameters
    ----------
    x2 : ndarray (N, C), C >= 1, C-contiguous, any of the four float formats
    target : int array (N,) or float32/float64 array (N, C)
    out : C-contiguous float64 (N, C)
    weight : array (C,) of float >= 0 or None
    label_smoothing : float in [0, 1]

    Returns
    -------
    bool (N,): rows handed back (a NaN or a non-finite maximum), whose ``out``
    rows are not written (the caller uses the numpy reference).

    Accuracy (asserted by ``tests/test_xent_native_grad.py`` against 50-digit
    mpmath): each entry within 16 * 2**-53 of |p_c (A - a_c)| + |a_c (1 - p_c)|
    (plus 2**-1070 below the normal range); error budget in _smx_xent.h before
    xg_rows_tt.

    Examples
    --------
    >>> g = np.empty((1, 2))
    >>> xent_grad_rows(np.array([[0.0, 0.0]]), np.array([0]), g).tolist()  # doctest: +SKIP
    [False]
    >>> g.tolist()  # doctest: +SKIP
    [[-0.5, 0.5]]
    """
    ext, x2, dt, n, c, eps = _xent_args(x2, label_smoothing)
    t = np.asarray(target)
    prob = t.ndim == 2
    if prob:
        if t.dtype not in (np.float32, np.float64):
            t = t.astype(np.float64)
        t = np.ascontiguousarray(t)
        if t.shape != (n, c):
            raise ValueError(f"target must have shape {(n, c)}, got {t.shape}")
    else:
        t = np.ascontiguousarray(t, dtype=np.int64).reshape(-1)
        if t.shape != (n,):
            raise ValueError(f"target must have {n} entries, got {t.shape}")
    if not isinstance(out, np.ndarray) or out.shape != (n, c) or out.dtype != np.float64 \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {(n, c)}")
    w = None
    wsum = float(c)
    if weight is not None:
        w = np.ascontiguousarray(weight, dtype=np.float64).reshape(-1)
        if w.shape != (c,):
            raise ValueError(f"weight must have {c} entries, got {w.shape}")
        wsum = float(np.sum(w))
    fb = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return fb
    xr, fr = _raw(x2), fb.view(np.uint8)
    t64 = 1 if prob and t.dtype == np.float64 else 0

    def one(r0, r1):
        return ext.xent_grad(xr, dt, n, c, t, int(prob), t64, w, wsum, int(ignore_index), eps,
                             r0, r1, out, fr)

    _run(one, n, c, threads)
    return fb


def vjp_rows(x2: np.ndarray, g2: np.ndarray, out: np.ndarray, *, kind: str = "softmax",
             temperature: float = 1.0, threads: int | None = None) -> np.ndarray:
    """g^T J of softmax (``kind="softmax"``: p (g - <g, p>) / T) or log-softmax
    (``"log"``: (g - p sum(g)) / T) of rows ``x2``, into ``out``.

    ``x2`` and ``out`` (N, C), C-contiguous, of one of the four formats; ``g2`` is
    converted to C-contiguous float64. Returns a bool (N,) array of the rows handed
    back (NaN, a non-finite maximum or a non-finite g), whose ``out`` rows are
    not written: the caller computes them with the numpy reference.

    Accuracy (asserted by ``tests/test_grad.py`` against 50-digit mpmath): float64
    inputs within 8 ulp of float64 of (|out_j| + p_j G / T) per entry, G = <|g|, p>
    (softmax) or sum |g| (log-softmax); 16/32-bit inputs within 2**-43 of that in
    float64, then rounded once to the format (+0.5 ulp). Error budget in
    _smx_vjp.h before vjp_rows_t.
    """
    ext = _need_ext()
    x2 = _check_rows(x2)
    dt = _dt(x2)
    if kind not in ("softmax", "log"):
        raise ValueError(f"kind must be 'softmax' or 'log', got {kind!r}")
    t = _temperature(temperature)
    n, c = x2.shape
    g = np.ascontiguousarray(g2, dtype=np.float64)
    if g.shape != (n, c):
        raise ValueError(f"g must have shape {(n, c)}, got {g.shape}")
    if not isinstance(out, np.ndarray) or out.shape != x2.shape or out.dtype != x2.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {x2.shape} and dtype {x2.dtype}")
    fb = np.zeros(n, dtype=np.bool_)
    if n == 0 or c == 0:
        return fb
    xr, orr, fr = _raw(x2), _raw(out), fb.view(np.uint8)
    k = 0 if kind == "softmax" else 1
    _run(lambda r0, r1: ext.vjp(xr, g, orr, dt, n, c, k, t, r0, r1, fr), n, c, threads)
    return fb


def _xent_fallback(x2, tg, w, ignore_index, eps, res) -> None:
    """Rows with a NaN or a non-finite maximum, from the reference log-softmax."""
    rows = np.flatnonzero(res["fallback"])
    lp = _reference_logsoftmax(x2[rows])
    n_rows, c = lp.shape
    y = tg[rows]
    ign = y == ignore_index
    yy = np.where(ign, 0, y)
    r = np.arange(n_rows)
    with np.errstate(all="ignore"):
        lp_y = lp[r, yy]
        wy = np.where(ign, 0.0, w[yy] if w is not None else 1.0)
        if eps > 0:
            a = np.broadcast_to((eps / c) * (w if w is not None else 1.0), lp.shape).copy()
            a[r, yy] += (1 - eps) * np.where(ign, 0.0, wy)
            a[ign] = 0.0
            loss = 0.0 - np.where(a > 0, a * lp, 0.0).sum(axis=1)
        else:
            loss = np.where(wy > 0, -wy * lp_y, 0.0)
        nan_row = np.isnan(lp).any(axis=1)
        res["loss"][rows] = loss
        res["logp_true"][rows] = np.where(ign, np.nan, lp_y)
        res["p_true"][rows] = np.where(ign, np.nan, np.exp(lp_y))
        res["argmax"][rows] = np.argmax(np.where(np.isnan(lp), -np.inf, lp), axis=1)
        p = np.exp(lp)
        res["entropy"][rows] = -np.where(p > 0, p * lp, 0.0).sum(axis=1)
        if c > 1:
            others = lp.copy()
            others[r, yy] = -np.inf
            res["margin"][rows] = np.where(ign, np.nan, lp_y - others.max(axis=1))
        else:
            res["margin"][rows] = np.nan
        k5 = min(5, c)
        res["top5"][rows] = ((lp > lp_y[:, None]).sum(axis=1) < k5) & ~nan_row & ~ign


__all__ = ["available", "engine", "softmax_rows", "logsumexp_rows", "xent_rows", "xent_prob_rows",
           "xent_grad_rows", "vjp_rows",
           "default_threads", "why_unavailable"]
