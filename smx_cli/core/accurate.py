"""The accurate softmax and log-softmax kernels (and the opt-in fast mode).

The result in the input's float format, within a few ulps of the exact value
for every entry whose exact value is a normal number, whatever the spread of
the row. 16- and 32-bit inputs are computed in float64 and rounded once.
float64 inputs recover the rounding error e of d = fl(x - max) exactly
(:func:`~smx_cli.core.eft.two_sum`) and fold it back as exp(d) * (1 + e): the
textbook max-shift loses up to half an ulp of |x - max|, which exp turns into
a relative error of |x - max| * u -- hundreds of ulps on wide-spread rows
(Blanchard, Higham & Higham 2021, the 2(max - min)u term). The row sum is
error-free split (a double-double, :func:`~smx_cli.core.eft.split_sum`), and
exp(d) + exp(d) * e is divided by it as a double-double with one final
rounding: measured <= 2.5 ulp.

The plain kernels here (:func:`accurate_block`, :func:`online_block`) say
*what* is computed; :mod:`smx_cli.core.kernels` computes the same numbers with
few passes over memory, and hands its special rows back to them.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core import kernels, native, native_fast
from smx_cli.core.eft import split_sum, split_sum_long, top_exponent, two_prod, two_sum
from smx_cli.core.precision import BFLOAT16, Format, result_format
from smx_cli.core.result import KernelStats, SoftmaxResult

# rows of about 256k elements (2 MB of float64) keep a block in cache
BLOCK_ELEMENTS = 1 << 18
# column block width of the online normaliser
ONLINE_BLOCK = 1024
# fdlibm's ln 2 = LN2HI + LN2LO, LN2HI with 32 significant bits (K * LN2HI exact)
_LN2HI = 6.93147180369123816490e-01
_LN2LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_LONG = np.longdouble if np.finfo(np.longdouble).nmant >= 63 else np.float64

def row_blocks(n_rows: int, n_cols: int):
    step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def shifted(xb: np.ndarray, shift: np.ndarray, t: float, compensate: bool):
    """(x - shift) / t as q + c, with c the rounding error when ``compensate``.

    q = fl((x - shift) / t). With ``compensate`` the error terms are recovered
    exactly: TwoSum for the subtraction (Knuth), and Dekker's TwoProduct with
    Veltkamp splitting for the division residual d - q*t. Returns (q, c) with c
    None when not compensating.
    """
    if not compensate:
        d = np.subtract(xb, shift)
        if t != 1.0:
            d /= t
        return d, None
    d, e = two_sum(xb, -shift)
    if t != 1.0:
        q = d / t
        p, perr = two_prod(q, np.float64(t))
        # d - q*t = (d - p) - perr exactly; d - p is exact (Sterbenz)
        r = d - p
        r -= perr
        r += e
        r /= t
        e, d = r, q
    # -inf entries (masked classes) make NaN corrections; they carry no error
    np.copyto(e, 0.0, where=~np.isfinite(e))
    return d, e


def exact_row_sum(e: np.ndarray) -> np.ndarray:
    """Row sums of non-negative float64 terms <= 1, correctly rounded to ~0.5 ulp."""
    hi, lo = split_sum(e)
    return hi + lo


def _dd_divide(num_hi: np.ndarray, num_lo: np.ndarray, den_hi: np.ndarray,
               den_lo: np.ndarray) -> np.ndarray:
    """(num_hi + num_lo) / (den_hi + den_lo), rounded about once.

    q = fl(num_hi / den_hi) is corrected by the exact residual
    num_hi - q * den_hi (TwoProduct), so the only error left is the last
    rounding: dividing twice in float64 (the sum, then the quotient) costs
    a full ulp more, which the 4-ulp budget cannot afford.
    """
    q = num_hi / den_hi
    p, perr = two_prod(q, den_hi)
    r = num_hi - p  # exact (Sterbenz): p is within a few ulps of num_hi
    r -= perr
    r += num_lo
    r -= q * den_lo
    r /= den_hi
    # underflowed or masked terms (num_hi == 0) and special rows give 0/NaN
    # residuals that must not spoil q; special rows are refilled later
    np.copyto(r, 0.0, where=~np.isfinite(r))
    return q + r


def _special_rows(out: np.ndarray, xb: np.ndarray, m: np.ndarray, bad: np.ndarray,
                  kind: str, masked: str) -> None:
    """Fill rows whose maximum is not finite, in place.

    NaN anywhere: the row is NaN. +inf entries: they share the mass equally,
    the rest get 0. All -inf (fully masked): NaN, or zeros when masked='zeros'.
    """
    for i in np.flatnonzero(bad):
        mi = m[i, 0]
        row = xb[i]
        if np.isnan(mi):
            out[i] = np.nan
        elif mi > 0:  # +inf
            top = row == np.inf
            p = top / np.count_nonzero(top)
            with np.errstate(divide="ignore"):
                out[i] = np.log(p) if kind == "logprob" else p
        else:  # all -inf: a fully masked row
            if masked == "nan":
                out[i] = np.nan
            else:
                out[i] = -np.inf if kind == "logprob" else 0.0


def _accurate_block(xb: np.ndarray, t: float, kind: str, masked: str, compensate: bool) -> np.ndarray:
    """Accurate softmax or log-softmax of a float64 block of rows."""
    m = xb.max(axis=1, keepdims=True)
    bad = ~np.isfinite(m[:, 0])
    shift = np.where(np.isfinite(m), m, 0.0) if bad.any() else m
    q, c = shifted(xb, shift, t, compensate)
    e = np.exp(q)
    total = exact_row_sum if compensate else (lambda a: a.sum(axis=1, keepdims=True))
    if kind == "prob":
        if c is None:
            e /= e.sum(axis=1, keepdims=True)
            out = e
        else:
            # exp(q + c) = exp(q) (1 + c) to O(c^2): keep exp(q) * c apart as
            # the low word and divide the double-double by the sum once
            e_lo = e * c
            s_hi, s_lo = split_sum(e, e_lo)
            out = _dd_divide(e, e_lo, s_hi, s_lo)
    else:
        if c is not None:
            e += e * c
        # log p_i = (q_i - L) + c_i with L = log1p(sum_{j != k} e_j), k the argmax;
        # log p_k = -L keeps the dominant entry's relative accuracy
        k = np.argmax(q, axis=1)
        rows = np.arange(len(k))
        e[rows, k] = 0.0
        if c is None:
            s = total(e)
        else:
            # the grid of the split sum relative to the largest non-max term:
            # with a dominant maximum the rest is tiny, and -L = -log1p(rest)
            # is the dominant entry's log-probability, relative-accurate
            s = split_sum_long(e, 1, top_exponent(e, 1)).astype(np.float64)
            _rescale_tiny_rows(s, q, c, k)
        lse = np.log1p(s)
        q -= lse
        if c is not None:
            q += c
        q[rows, k] = -lse[:, 0]
        out = q
    if bad.any():
        _special_rows(out, xb, m, bad, kind, masked)
    return out


def _rescale_tiny_rows(s: np.ndarray, q: np.ndarray, c: np.ndarray, k: np.ndarray) -> None:
    """Re-sum, in place in ``s``, the rows whose non-max terms sum below 2**-900.

    exp(q) loses bits below -708 and underflows to 0 below -745.13, yet C such
    terms make L = log1p(S) ~ S worth many subnormal spacings (and -L is the
    dominant log-probability). Those rows are summed again as
    exp(q + K ln 2) (1 + err + c), K = floor(-q2 log2 e) - 1 from the largest
    non-max term q2, so the largest term is in [1/4, 1/2]; q + K LN2HI + K LN2LO
    is formed with two TwoSums (K LN2HI is exact, fdlibm's split of ln 2; the
    product K LN2LO errs by ~2**-75), err their errors, and the sum
    is scaled back by an exact 2**-K, rounded once (ldexp). Terms below
    e^-1000 are negligible against e^q2 and rows with q2 < -1000 keep L = 0
    (exact L < C e^-1000 rounds to 0).
    """
    tiny = np.flatnonzero(s[:, 0] < 2.0 ** -900)
    if tiny.size == 0:
        return
    qi = q[tiny]
    qi[np.arange(tiny.size), k[tiny]] = -np.inf
    q2 = qi.max(axis=1)
    keep = q2 >= -1000.0          # drops rows of no other finite term (and NaN rows)
    if not keep.any():
        return
    tiny, qi = tiny[keep], qi[keep]
    K = np.floor(-q2[keep] * _LOG2E)[:, None] - 1.0
    hi, err = two_sum(qi, K * _LN2HI)
    hi, err2 = two_sum(hi, K * _LN2LO)   # K LN2LO ~ 2e-7: first order, not a correction
    err += err2
    err += c[tiny]
    e = np.exp(hi)
    np.copyto(err, 0.0, where=~np.isfinite(err))   # -inf entries
    e += e * err
    s[tiny, 0] = np.ldexp(exact_row_sum(e)[:, 0], -K[:, 0].astype(np.int64))


def online_block(xb: np.ndarray, t: float, masked: str, compensate: bool) -> np.ndarray:
    """Accurate one-pass normaliser over column blocks, then one output pass.

    The running maximum m and sum S are updated block by block,
    S <- S * exp(m_old - m_new) + sum(exp(x_block - m_new)) (Milakov &
    Gimelshein 2018, Algorithm 3). The rescale factors and S are kept in long
    double so the per-block rescaling adds no error visible in float64.
    """
    n, width = xb.shape
    m = np.full((n, 1), -np.inf)
    s = np.zeros((n, 1), dtype=_LONG)
    for start in range(0, width, ONLINE_BLOCK):
        blk = xb[:, start:start + ONLINE_BLOCK]
        m_new = np.maximum(m, blk.max(axis=1, keepdims=True))
        grow = (m_new != m) & np.isfinite(m_new) & np.isfinite(m)
        if grow.any():
            delta = (m[grow].astype(_LONG) - m_new[grow].astype(_LONG)) / t
            s[grow] *= np.exp(delta)
        shift = np.where(np.isfinite(m_new), m_new, 0.0)
        q, c = shifted(blk, shift, t, compensate)
        e = np.exp(q)
        if c is None:
            s += e.sum(axis=1, keepdims=True)
        else:
            b_hi, b_lo = split_sum(e, e * c)
            s += b_hi.astype(_LONG)
            s += b_lo.astype(_LONG)
        m = m_new
    bad = ~np.isfinite(m[:, 0])
    shift = np.where(np.isfinite(m), m, 0.0)
    q, c = shifted(xb, shift, t, compensate)
    out = np.exp(q)
    if c is None:
        out /= s.astype(np.float64)
    else:
        s_hi = s.astype(np.float64)
        s_lo = (s - s_hi.astype(_LONG)).astype(np.float64)
        out = _dd_divide(out, out * c, s_hi, s_lo)
    if bad.any():
        _special_rows(out, xb, m, bad, "prob", masked)
    return out


def softmax_block(xb: np.ndarray, t: float, masked: str, compensate: bool) -> np.ndarray:
    """The plain accurate softmax of a float64 block of rows."""
    return _accurate_block(xb, t, "prob", masked, compensate)


def log_softmax_block(xb: np.ndarray, t: float, masked: str, compensate: bool) -> np.ndarray:
    """The plain accurate log-softmax of a float64 block of rows."""
    return _accurate_block(xb, t, "logprob", masked, compensate)


def _plain_rows(x2: np.ndarray, out: np.ndarray, rows: np.ndarray, plain, t: float,
                masked: str, fmt: Format) -> None:
    """Recompute ``rows`` of ``out`` with the plain accurate kernel (special rows)."""
    xb = np.asarray(x2[rows], dtype=np.float64)
    out[rows] = fmt.cast(plain(xb, t, masked, fmt.name == "float64"))


def _output(out: np.ndarray | None, shape: tuple[int, int], fmt: Format) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=fmt.dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != fmt.dtype:
        raise ValueError(f"out must be an array of shape {shape} and dtype {fmt.dtype}")
    return out


#: formats the compiled core computes when it is built. Chosen by measurement
#: (bench/native.py; 1-thread CPU time, AVX-512 EPYC): float64 is 2.4-3.7x faster
#: than the numpy kernels and within 1.5 ulp instead of 2.5-2.7. The 16/32-bit
#: formats take the compiled single-word path (still 0.5 + 2**-20 ulp, like the
#: numpy kernels): native / numpy 0.5-0.6x for float32 1024 x 32000, 0.03-0.3x for
#: float16 and bfloat16, 0.2-0.5x at 1000 x 1000 and 20000 x 64, 0.23-0.7x at
#: 100000 x 10.
NATIVE_FORMATS = ("float16", "bfloat16", "float32", "float64")


def accurate(x2: np.ndarray, spec, t: float, masked: str, threads: int | None = None,
             out: np.ndarray | None = None) -> SoftmaxResult:
    """The accurate result of variant ``spec`` (a registry entry) in the input's format.

    ``spec.accurate`` is the plain kernel (:func:`softmax_block`,
    :func:`log_softmax_block`, :func:`online_block`); variants with
    ``spec.fast`` also have the fast blocked kernels of
    :mod:`smx_cli.core.kernels`, which hand their special rows back to it.
    """
    fmt = result_format(x2.dtype)
    kind = spec.kind
    n, width = x2.shape
    out = _output(out, (n, width), fmt)
    contiguous_out = out.flags.c_contiguous and not np.shares_memory(out, x2)
    use_online = (spec.accurate is online_block and native_fast.supports(x2.dtype)
                  and contiguous_out)
    use_native = (spec.fast and fmt.name in NATIVE_FORMATS and native.supports(x2.dtype)
                  and contiguous_out)
    engine = (native.engine() if use_native else native_fast.engine() if use_online
              else "numpy")
    if width == 0 or n == 0:  # rows of no classes: an empty result, like 0 rows
        return SoftmaxResult(out, kind, fmt, False, spec.name, t, engine=engine)
    if use_online:
        # the compiled one-pass online normaliser (bounds of native.py; see native_fast.py)
        native_fast.online_rows(np.ascontiguousarray(x2), out, temperature=t, masked=masked,
                                block=ONLINE_BLOCK, threads=threads)
        return SoftmaxResult(out, kind, fmt, False, spec.name, t, engine=engine)
    if use_native:
        # the compiled core: the same special rows, tighter bounds (see native.py)
        st = native.softmax_rows(np.ascontiguousarray(x2), out, kind=kind, temperature=t,
                                 masked=masked, threads=threads)
        # rows with a NaN logit (or a masked row given NaN) and rows with a +inf one
        stats = KernelStats(nonfinite_input_rows=st["nan_rows"] + st["posinf_rows"])
        return SoftmaxResult(out, kind, fmt, False, spec.name, t, stats, engine=engine)

    def fix(rows):
        _plain_rows(x2, out, rows, spec.accurate, t, masked, fmt)

    with np.errstate(all="ignore"):
        if not spec.fast or (fmt.name == "float64" and t != 1.0):
            # the plain kernels, blocked and threaded
            kernels.run_blocks(n, width, lambda s0, s1: fix(slice(s0, s1)), threads,
                               BLOCK_ELEMENTS // 4)
        elif fmt.name == "float64":
            kernels.run(x2, out, lambda xb, ob, ax: kernels.f64_block(xb, ob, ax, kind),
                        fix, threads, np.float64)
        else:
            src = _Bf16AsF32(x2) if x2.dtype == BFLOAT16 else x2
            kernels.run(src, out, lambda xb, ob, ax: kernels.lowp_block(xb, ob, ax, t, kind, fmt),
                        fix, threads, np.float64, kernels.BLOCK_ELEMENTS * 2)
    return SoftmaxResult(out, kind, fmt, False, spec.name, t)


def fast(x2: np.ndarray, spec, t: float, masked: str,
         threads: int | None = None, out: np.ndarray | None = None) -> SoftmaxResult:
    """Opt-in fast mode: the input's own arithmetic with the plain max-shift.

    Runs the compiled kernels of :mod:`smx_cli.core.native_fast` when they are
    built (and the output is a separate C-contiguous array), else the numpy
    fast kernels; ``SoftmaxResult.engine`` says which. Bounds: see
    :data:`smx_cli.core.kernels.FAST_ULP_NOTE` and native_fast's docstring.
    """
    fmt = result_format(x2.dtype)
    kind = spec.kind
    n, width = x2.shape
    out = _output(out, (n, width), fmt)
    use_native = (native_fast.supports(x2.dtype) and out.flags.c_contiguous
                  and not np.shares_memory(out, x2))
    engine = native_fast.engine() if use_native else "numpy"
    if width == 0 or n == 0:
        return SoftmaxResult(out, kind, fmt, False, spec.name, t, fast=True, engine=engine)
    if use_native:
        native_fast.fast_rows(np.ascontiguousarray(x2), out, kind=kind, temperature=t,
                              masked=masked, threads=threads)
        return SoftmaxResult(out, kind, fmt, False, spec.name, t, fast=True, engine=engine)

    def fix(rows):
        _plain_rows(x2, out, rows, spec.accurate, t, masked, fmt)

    src = _Bf16AsF32(x2) if x2.dtype == BFLOAT16 else x2
    wdt = np.float64 if fmt.name == "float64" else np.float32
    with np.errstate(all="ignore"):
        kernels.run(src, out, lambda xb, ob, ax: kernels.fast_block(xb, ob, ax, t, kind, fmt),
                    fix, threads, wdt, kernels.BLOCK_ELEMENTS * 4)
    return SoftmaxResult(out, kind, fmt, False, spec.name, t, fast=True)


class _Bf16AsF32:
    """A bfloat16 (N, C) array whose row slices come back as float32 (exact)."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.shape = a.shape
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key):
        return np.asarray(self.a[key], dtype=np.float32)

