"""Fast blocked, threaded kernels behind :func:`smx_cli.core.softmax.compute`.

The plain kernels in :mod:`smx_cli.core.softmax` say *what* is computed; this
module computes the same numbers with few passes over memory:

* rows are cut into blocks of about :data:`BLOCK_ELEMENTS` elements (256 KB of
  float64), small enough that every pass after the first hits the core's
  cache;
* each thread owns its float64 work buffers (allocated once per thread and
  reused), every ufunc writes with ``out=`` and mixed-dtype ufuncs cast on the
  fly (a float32 block is widened inside ``np.subtract`` and the float64
  result is rounded once while being written into the float32 output);
* blocks run on a thread pool (numpy releases the GIL inside ufunc loops);
  each task takes a contiguous run of rows so the Python overhead per task is
  paid a handful of times, not once per block;
* narrow rows (C <= :data:`NARROW`) are processed transposed, classes along
  the slow axis, so each ufunc runs over a long contiguous vector instead of
  N tiny rows.

Accurate paths (the default):

16/32-bit inputs
    d = x - m is exact in float64; exp, sum and one division (as a multiply
    by a per-row reciprocal) in float64, then one rounding to the format.
float64 inputs, temperature 1
    rows are sorted into cases by their maximum m. For 0 <= m <= 600 the
    shift is 0: exp(x) has an exact argument (no TwoSum needed) and the sum
    S >= exp(m) >= 1 cannot overflow. For m < 0 every |x| >= |m|, so
    Fast2Sum recovers the rounding error e of d = fl(x - m) in two passes and
    exp(x - m) = exp(d)(1 + e). The row sum is split error-free (a
    double-double, as :func:`smx_cli.core.eft.split_sum`), and the
    per-row reciprocal is formed in long double. Log-softmax is computed as
    (x - M_hi) - M_lo with M = m + lse a double-double, so the output needs
    no compensation at all. Rows outside these cases (m > 600, NaN, +/-inf
    maxima) and float64 with a temperature go through the plain kernels.

Fast mode (``fast=True``) computes in the input's own format (float16 and
bfloat16 in float32, as frameworks do) with the plain max-shift; see
:data:`FAST_ULP_NOTE` for its measured accuracy.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from smx_cli.core.eft import fast_two_sum_into, split_sum_long, top_exponent, two_sum_into

# elements per block: 256 KB of float64 per work buffer
BLOCK_ELEMENTS = 1 << 15
# rows of at most this many classes are processed transposed
NARROW = 64
# float64 rows with a maximum in [0, _SHIFT0_MAX] are shifted by 0
_SHIFT0_MAX = 600.0

FAST_ULP_NOTE = (
    "fast mode: max-shifted exp and sum in the input format (float16/bfloat16 "
    "in float32, rounded once); error <= 2 + k|x - max|/T + log2(C) ulps on the "
    "numpy engine (measured), <= 4 + k|x - max|/T on the compiled one (float32; "
    "float64 8 + k|x - max|/T; derived); k = 1, or 3 with a temperature, the "
    "shift's rounding growing with the distance from the row's maximum; the log "
    "of the dominant entry only to absolute accuracy")

_local = threading.local()
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def default_threads() -> int:
    """The thread count used when ``threads=None``: the machine's cores."""
    return os.cpu_count() or 1


def _pool(n: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(n)
        if pool is None:
            pool = _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="smx")
        return pool


def work(name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """A per-thread scratch array of ``shape`` (C-contiguous), reused across calls.

    The buffer grows to the largest size asked for under ``name`` in this
    thread and is never shared between threads.
    """
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    dt = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    key = (name, dt.str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(max(size, 1), dtype=dt)
    return buf[:size].reshape(shape)


def map_threads(fn, items, threads: int | None = None) -> list:
    """``[fn(item) for item in items]``, on ``threads`` threads (in order).

    Worth it when ``fn`` releases the GIL (numpy, the compiled core).

    Examples
    --------
    >>> map_threads(lambda v: v * v, [1, 2, 3], threads=2)
    [1, 4, 9]
    """
    items = list(items)
    n_threads = default_threads() if threads is None else max(1, int(threads))
    if n_threads == 1 or len(items) <= 1:
        return [fn(item) for item in items]
    return list(_pool(n_threads).map(fn, items))


def run_blocks(n_rows: int, n_cols: int, fn, threads: int | None = None,
               block_elements: int = BLOCK_ELEMENTS) -> None:
    """Call ``fn(start, stop)`` over row blocks, on ``threads`` threads.

    Rows are dealt out as a few contiguous runs per thread; inside a run,
    ``fn`` is called on blocks of about ``block_elements`` elements. Small
    inputs run inline. Exceptions from ``fn`` propagate.
    """
    step = max(1, block_elements // max(n_cols, 1))
    n_threads = default_threads() if threads is None else max(1, int(threads))
    n_blocks = -(-n_rows // step)
    if n_threads == 1 or n_blocks <= 1:
        for s in range(0, n_rows, step):
            fn(s, min(s + step, n_rows))
        return
    n_tasks = min(n_blocks, n_threads * 4)
    per = -(-n_blocks // n_tasks) * step

    def task(lo: int) -> None:
        hi = min(lo + per, n_rows)
        with np.errstate(all="ignore"):
            for s in range(lo, hi, step):
                fn(s, min(s + step, hi))

    for f in [_pool(n_threads).submit(task, lo) for lo in range(0, n_rows, per)]:
        f.result()


def _cast_into(dst: np.ndarray, src: np.ndarray, fmt) -> None:
    """dst[...] = src rounded once to ``fmt`` (bfloat16 needs the careful cast)."""
    if fmt.name == "bfloat16":
        dst[...] = fmt.cast(src)
    else:
        np.copyto(dst, src, casting="unsafe")


def _row_max(xb: np.ndarray, ax: int, kind: str):
    """Each row's maximum m (keepdims) and, for log-softmax, its index k (else None).

    Log-softmax needs the index: the dominant entry's sum skips it (log1p form).
    """
    if kind == "prob":
        return np.max(xb, axis=ax, keepdims=True), None
    k = np.expand_dims(np.argmax(xb, axis=ax), ax)
    return np.take_along_axis(xb, k, ax), k


# ----------------------------------------------------------------------------
# accurate: 16- and 32-bit inputs, computed in float64


def lowp_block(xb: np.ndarray, ob: np.ndarray, ax: int, t: float, kind: str, fmt) -> np.ndarray:
    """Accurate (log-)softmax of a 16/32-bit block, computed in float64.

    ``xb`` holds classes along ``ax`` (1: rows, 0: transposed); the result,
    rounded once to ``fmt``, is written to ``ob`` (same shape and layout).
    Returns a bool mask of the rows whose maximum is not finite: the caller
    recomputes them with the plain kernel (special rows).
    """
    shape = xb.shape
    m, k = _row_max(xb, ax, kind)
    m = m.astype(np.float64)
    bad = ~np.isfinite(m)
    if bad.any():
        m[bad] = 0.0
    d = work("d", shape)
    np.subtract(xb, m, out=d, casting="unsafe")  # exact in float64
    if t != 1.0:
        d *= 1.0 / t
    direct = fmt.name != "bfloat16"
    if kind == "prob":
        np.exp(d, out=d)
        inv = np.sum(d, axis=ax, keepdims=True)
        np.divide(1.0, inv, out=inv)
        if direct:
            np.multiply(d, inv, out=ob, casting="unsafe")
        else:
            d *= inv
            _cast_into(ob, d, fmt)
    else:
        e = work("e", shape)
        np.exp(d, out=e)
        np.put_along_axis(e, k, 0.0, ax)
        lse = np.log1p(np.sum(e, axis=ax, keepdims=True))
        if direct:
            np.subtract(d, lse, out=ob, casting="unsafe")
        else:
            d -= lse
            _cast_into(ob, d, fmt)
        np.put_along_axis(ob, k, fmt.cast(-lse), ax)
    return bad.reshape(-1)


# ----------------------------------------------------------------------------
# accurate: float64 inputs, temperature 1


def f64_block(xb: np.ndarray, ob: np.ndarray, ax: int, kind: str) -> np.ndarray:
    """Accurate (log-)softmax of a float64 block (temperature 1), into ``ob``.

    d = fl(x - m) and its exact rounding error err (Fast2Sum when every row's
    maximum is <= 0, so that |x| >= |m|; TwoSum otherwise -- both give the
    same, unique, err); exp(x - m) = exp(d)(1 + err) rounded once. The result
    depends only on x - m, so it is bitwise invariant under exact shifts.
    Returns the mask of rows the caller must recompute with the plain kernel:
    a non-finite maximum, or a NaN met on the way (an -inf entry).
    """
    shape = xb.shape
    m, k = _row_max(xb, ax, kind)
    bad = ~np.isfinite(m)
    if bad.any():
        m = np.where(bad, 0.0, m)
    # log keeps d in the (float64) output until the end
    d = ob if kind != "prob" else work("E", shape)
    c = work("c", shape)
    h = work("hi", shape)
    if (m <= 0).all():                      # |x| >= |m|: Fast2Sum(x, -m)
        fast_two_sum_into(xb, -m, d, c)     # d = fl(x - m), c its error
    else:
        two_sum_into(xb, -m, d, c, h)       # TwoSum(x, -m) (Knuth)
    e = d if kind == "prob" else work("E", shape)
    np.exp(d, out=e)
    if kind != "prob":
        np.put_along_axis(e, k, 0.0, ax)    # the sum skips the maximum
    np.multiply(e, c, out=h)                # exp(d) * err: exp(x - m) = e + h
    # sum of e split error-free (every term <= 1: the grid of 2**1), plus
    # the tiny corrections' plain sum, in long double
    h_sum = np.sum(h, axis=ax, keepdims=True).astype(np.longdouble)
    # log-softmax: the grid relative to the largest non-max term (a dominant
    # maximum leaves a tiny rest, whose log1p is the maximum's log-probability)
    grid = 1 if kind == "prob" else top_exponent(e, ax)
    total = split_sum_long(e, ax, grid, work('hi', shape)) + h_sum
    if kind == "prob":
        # p = e(1 + err) / (S_hi (1 + rho)) = q + q (err - rho), q = fl(e / S_hi):
        # a division, not a multiply by 1/S, so one column gives exactly 1 and
        # ties exactly 1/k; the correction costs three cheap passes
        s_hi = total.astype(np.float64)
        rho = ((total - s_hi.astype(np.longdouble)) / total).astype(np.float64)
        np.divide(e, s_hi, out=ob)
        c -= rho
        c *= ob
        ob += c
    else:
        # log p = d + err - lse, lse = log1p(sum_{i != k} ...) in long double;
        # the dominant entry is -lse
        lse = np.log1p(total).astype(np.float64)
        c -= lse
        ob += c
        np.put_along_axis(ob, k, -lse, ax)
        # rows of a tiny rest (their terms below ~e^-620, where exp loses
        # bits) go to the plain kernel, which sums them scaled
        bad = bad | (total < 2.0 ** -900)
    return (bad | ~np.isfinite(total)).reshape(-1)


# ----------------------------------------------------------------------------
# fast mode: the input's own format, plain max-shift


def fast_block(xb: np.ndarray, ob: np.ndarray, ax: int, t: float, kind: str, fmt) -> np.ndarray:
    """Plain max-shifted (log-)softmax computed in ``ob``'s arithmetic.

    float32/float64 work in place in ``ob``; float16/bfloat16 work in a
    float32 buffer and are rounded once. Returns the rows whose maximum is
    not finite (filled by the caller with the defined special-row results).
    """
    native = fmt.name in ("float32", "float64")
    w = ob if native else work("f32", xb.shape, np.float32)
    m = np.max(xb, axis=ax, keepdims=True)
    bad = ~np.isfinite(m)
    if bad.any():
        m = np.where(bad, 0, m)
    np.subtract(xb, m.astype(w.dtype), out=w, casting="unsafe")
    if t != 1.0:
        w *= w.dtype.type(1.0 / t)
    if kind == "prob":
        np.exp(w, out=w)
        s = np.sum(w, axis=ax, keepdims=True)
        w *= 1 / s
    else:
        e = work("fe", xb.shape, w.dtype)
        np.exp(w, out=e)
        w -= np.log(np.sum(e, axis=ax, keepdims=True))
    if not native:
        _cast_into(ob, w, fmt)
    return bad.reshape(-1)


def run(x2: np.ndarray, out: np.ndarray, block_fn, fix_rows, threads: int | None,
        work_dtype=None, block_elements: int | None = None) -> None:
    """Apply ``block_fn(xb, ob, ax)`` over row blocks of ``x2`` into ``out``.

    Wide rows are cut into row blocks (``ax=1``). Narrow rows (C <=
    :data:`NARROW`) are copied transposed into a contiguous (C, B) work
    buffer of ``work_dtype`` (default: the input's dtype), computed with
    ``ax=0`` into a transposed buffer of the output dtype, and copied back.
    ``fix_rows(rows)`` recomputes the rows (absolute indices) that a block
    reports as needing the plain kernel.
    """
    n, width = x2.shape
    narrow = width <= NARROW and n > 1

    def block(s0: int, s1: int) -> None:
        xb = x2[s0:s1]
        if narrow:
            b = s1 - s0
            xt = work("xt", (width, b), work_dtype or x2.dtype)
            np.copyto(xt, xb.T, casting="unsafe")
            ot = work("ot", (width, b), out.dtype)
            bad = block_fn(xt, ot, 0)
            out[s0:s1] = ot.T
        else:
            bad = block_fn(xb, out[s0:s1], 1)
        if bad.any():
            fix_rows(s0 + np.flatnonzero(bad))

    if block_elements is None:
        block_elements = BLOCK_ELEMENTS
    if narrow:
        block_elements *= 4
    run_blocks(n, width, block, threads, block_elements)
