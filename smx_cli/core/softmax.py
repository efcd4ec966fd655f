"""The softmax family: accurate kernels and emulated textbook algorithms.

Two kinds of computation live here.

*Accurate* (the default, ``dtype=None``): the result in the input's float
format, within a few ulps of the exact value for every entry whose exact value
is a normal number, whatever the spread of the row. 16- and 32-bit inputs are
computed in float64 and rounded once. float64 inputs recover the rounding
error e of d = fl(x - max) exactly (TwoSum, Knuth 1969) and fold it back as
exp(d) * (1 + e): the textbook max-shift loses up to half an ulp of |x - max|,
which exp turns into a relative error of |x - max| * u -- hundreds of ulps on
wide-spread rows (Blanchard, Higham & Higham 2021, the 2(max - min)u term).
The row sum is error-free split (a double-double), and exp(d) + exp(d) * e is
divided by it as a double-double with one final rounding: measured <= 2.5 ulp.

*Emulated* (``dtype="float16"`` etc.): the algorithm as a framework runs it in
that format, each operation rounded to the format (see :mod:`smx_cli.core.precision`)
and sums taken left to right for the 16-bit formats, as in the ``chop``
simulations of Blanchard, Higham & Higham. This is how a user sees the overflow
a float16 run hits.

The variants:

``naive``   exp(x) / sum(exp(x)), unshifted: the teaching baseline. Always
            computed in the working format's arithmetic, never made accurate.
``stable``  max-shifted, divide-by-sum (the default).
``log``     log-softmax, with the dominant entry as -log1p(sum_{i != max} e_i).
``online``  one-pass normaliser (Milakov & Gimelshein 2018) over column blocks.
``lse``     exp(x - logsumexp(x)), the division-free form. Always computed in
            the working format's arithmetic, like ``naive``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smx_cli.core import kernels
from smx_cli.core.kernels import FAST_ULP_NOTE
from smx_cli.core.precision import BFLOAT16, FORMATS, Format, format_of, result_format

VARIANTS = ("stable", "naive", "log", "online", "lse")
VARIANT_HELP = {
    "stable": "max-shifted, divide-by-sum (accurate; default)",
    "naive": "exp(x)/sum(exp(x)), unshifted textbook formula (overflows)",
    "log": "log-softmax: log-probabilities (accurate)",
    "online": "one-pass online normaliser over column blocks (accurate)",
    "lse": "exp(x - logsumexp(x)), division-free textbook form",
}
# variants that are smx's accurate kernels when no --dtype asks for emulation
ACCURATE_VARIANTS = ("stable", "log", "online")
MASKED_POLICIES = ("nan", "zeros")

# rows of about 256k elements (2 MB of float64) keep a block in cache
_BLOCK_ELEMENTS = 1 << 18
# column block width of the online normaliser
ONLINE_BLOCK = 1024
# Veltkamp's splitter for float64: 2**27 + 1
_SPLITTER = 134217729.0
_LONG = np.longdouble if np.finfo(np.longdouble).nmant >= 63 else np.float64


@dataclass
class KernelStats:
    """Events counted while computing, for the diagnostics panel.

    Attributes
    ----------
    exp_overflow : int
        exp of a finite argument that came out as inf in the working format.
    exp_underflow : int
        exp of a finite argument that came out as 0 in the working format.
    sum_overflow_rows : int
        Rows whose sum of exponentials became inf.
    """

    exp_overflow: int = 0
    exp_underflow: int = 0
    sum_overflow_rows: int = 0

    def add(self, other: "KernelStats") -> None:
        self.exp_overflow += other.exp_overflow
        self.exp_underflow += other.exp_underflow
        self.sum_overflow_rows += other.sum_overflow_rows


@dataclass
class SoftmaxResult:
    """What :func:`compute` returns: values plus what happened on the way.

    Attributes
    ----------
    values : ndarray
        (N, C) probabilities, or log-probabilities when ``kind == "logprob"``.
    kind : str
        ``"prob"`` or ``"logprob"``.
    fmt : Format
        The format of ``values``.
    emulated : bool
        True when the variant ran in the format's own arithmetic.
    variant : str
    temperature : float
    stats : KernelStats
    fast : bool
        True when computed by the opt-in fast mode (input-format arithmetic).
    """

    values: np.ndarray
    kind: str
    fmt: Format
    emulated: bool
    variant: str
    temperature: float
    stats: KernelStats = field(default_factory=KernelStats)
    fast: bool = False


# ----------------------------------------------------------------------------
# argument checks shared by the public functions


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return variant


def check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def check_masked(masked: str) -> str:
    if masked not in MASKED_POLICIES:
        raise ValueError(f"masked must be 'nan' or 'zeros', got {masked!r}")
    return masked


def as_rows(x, axis: int = -1) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Move ``axis`` last and flatten the rest: (N, C) rows of classes.

    Returns the 2-D view, the moved shape to restore, and the normalised axis.
    A 0-d input is one row of one class.
    """
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {a.ndim} dimension(s)")
    axis = axis % a.ndim
    moved = np.moveaxis(a, axis, -1)
    # not reshape(-1, C): with C == 0 the row count cannot be inferred
    n = int(np.prod(moved.shape[:-1], dtype=np.int64))
    return moved.reshape(n, moved.shape[-1]), moved.shape, axis


def from_rows(values: np.ndarray, moved_shape: tuple[int, ...], axis: int, ndim: int) -> np.ndarray:
    """Undo :func:`as_rows`."""
    out = values.reshape(moved_shape)
    if ndim == 0:
        return out.reshape(())
    return np.moveaxis(out, -1, axis)


def _floating(x2: np.ndarray) -> np.ndarray:
    if x2.dtype.kind in "biu":
        return x2.astype(np.float64)
    return x2


# ----------------------------------------------------------------------------
# the accurate kernels


def _row_blocks(n_rows: int, n_cols: int):
    step = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _shifted(xb: np.ndarray, shift: np.ndarray, t: float, compensate: bool):
    """(x - shift) / t as q + c, with c the rounding error when ``compensate``.

    q = fl((x - shift) / t). With ``compensate`` the error terms are recovered
    exactly: TwoSum for the subtraction (Knuth), and Dekker's TwoProduct with
    Veltkamp splitting for the division residual d - q*t. Returns (q, c) with c
    None when not compensating.
    """
    d = np.subtract(xb, shift)
    if not compensate:
        if t != 1.0:
            d /= t
        return d, None
    # TwoSum(x, -shift): e = (x - (d - bv)) + (-shift - bv), bv = d - x
    bv = d - xb
    e = xb - (d - bv)
    bv += shift
    e -= bv
    if t != 1.0:
        q = d / t
        p, perr = _two_prod(q, np.float64(t))
        # d - q*t = (d - p) - perr exactly; d - p is exact (Sterbenz)
        r = d - p
        r -= perr
        r += e
        r /= t
        e, d = r, q
    # -inf entries (masked classes) make NaN corrections; they carry no error
    np.copyto(e, 0.0, where=~np.isfinite(e))
    return d, e


def _split_row_sum(e: np.ndarray, extra: np.ndarray | None = None):
    """Row sums of non-negative float64 terms <= 1 as a double-double (hi, lo).

    Error-free splitting (Rump, Ogita & Oishi 2008, ExtractVector): each term
    is cut into a high part on the grid 2**-k, whose sum is exact in any order
    because every partial sum is a multiple of 2**-k below 2**(53-k), and a
    low part below 2**-k whose sum's rounding error is negligible. numpy's
    plain pairwise sum errs by up to ~(C/8)u, which alone would cost 4+ ulps.
    ``extra`` (small terms, e.g. the exp corrections) joins the low sum.
    hi + lo is the sum to about 2**-100 relative; |lo| <= ulp(hi)/2.
    """
    width = e.shape[1]
    k = 52 - int(np.ceil(np.log2(width + 1)))
    sigma = 1.5 * 2.0 ** (52 - k)
    hi = e + sigma
    hi -= sigma
    lo = e - hi
    s_hi = hi.sum(axis=1, keepdims=True)
    s_lo = lo.sum(axis=1, keepdims=True)
    if extra is not None:
        s_lo += extra.sum(axis=1, keepdims=True)
    total = s_hi + s_lo  # Fast2Sum: |s_hi| >= |s_lo| once a term is 1
    s_lo -= total - s_hi
    return total, s_lo


def _exact_row_sum(e: np.ndarray) -> np.ndarray:
    """Row sums of non-negative float64 terms <= 1, correctly rounded to ~0.5 ulp."""
    hi, lo = _split_row_sum(e)
    return hi + lo


def _two_prod(a: np.ndarray, b: np.ndarray):
    """Dekker's TwoProduct with Veltkamp splitting: a*b = p + err exactly."""
    p = a * b
    a_s = a * _SPLITTER
    a_hi = a_s - (a_s - a)
    a_lo = a - a_hi
    b_s = b * _SPLITTER
    b_hi = b_s - (b_s - b)
    b_lo = b - b_hi
    err = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, err


def _dd_divide(num_hi: np.ndarray, num_lo: np.ndarray, den_hi: np.ndarray,
               den_lo: np.ndarray) -> np.ndarray:
    """(num_hi + num_lo) / (den_hi + den_lo), rounded about once.

    q = fl(num_hi / den_hi) is corrected by the exact residual
    num_hi - q * den_hi (TwoProduct), so the only error left is the last
    rounding: dividing twice in float64 (the sum, then the quotient) costs
    a full ulp more, which the 4-ulp budget cannot afford.
    """
    q = num_hi / den_hi
    p, perr = _two_prod(q, den_hi)
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
    q, c = _shifted(xb, shift, t, compensate)
    e = np.exp(q)
    total = _exact_row_sum if compensate else (lambda a: a.sum(axis=1, keepdims=True))
    if kind == "prob":
        if c is None:
            e /= e.sum(axis=1, keepdims=True)
            out = e
        else:
            # exp(q + c) = exp(q) (1 + c) to O(c^2): keep exp(q) * c apart as
            # the low word and divide the double-double by the sum once
            e_lo = e * c
            s_hi, s_lo = _split_row_sum(e, e_lo)
            out = _dd_divide(e, e_lo, s_hi, s_lo)
    else:
        if c is not None:
            e += e * c
        # log p_i = (q_i - L) + c_i with L = log1p(sum_{j != k} e_j), k the argmax;
        # log p_k = -L keeps the dominant entry's relative accuracy
        k = np.argmax(q, axis=1)
        rows = np.arange(len(k))
        e[rows, k] = 0.0
        lse = np.log1p(total(e))
        q -= lse
        if c is not None:
            q += c
        q[rows, k] = -lse[:, 0]
        out = q
    if bad.any():
        _special_rows(out, xb, m, bad, kind, masked)
    return out


def _online_block(xb: np.ndarray, t: float, masked: str, compensate: bool) -> np.ndarray:
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
        q, c = _shifted(blk, shift, t, compensate)
        e = np.exp(q)
        if c is None:
            s += e.sum(axis=1, keepdims=True)
        else:
            b_hi, b_lo = _split_row_sum(e, e * c)
            s += b_hi.astype(_LONG)
            s += b_lo.astype(_LONG)
        m = m_new
    bad = ~np.isfinite(m[:, 0])
    shift = np.where(np.isfinite(m), m, 0.0)
    q, c = _shifted(xb, shift, t, compensate)
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


def _plain_rows(x2: np.ndarray, out: np.ndarray, rows: np.ndarray, variant: str, t: float,
                masked: str, fmt: Format) -> None:
    """Recompute ``rows`` of ``out`` with the plain accurate kernel (special rows)."""
    xb = np.asarray(x2[rows], dtype=np.float64)
    compensate = fmt.name == "float64"
    if variant == "online":
        res = _online_block(xb, t, masked, compensate)
    else:
        res = _accurate_block(xb, t, "logprob" if variant == "log" else "prob", masked, compensate)
    out[rows] = fmt.cast(res)


def _output(out: np.ndarray | None, shape: tuple[int, int], fmt: Format) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=fmt.dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != fmt.dtype:
        raise ValueError(f"out must be an array of shape {shape} and dtype {fmt.dtype}")
    return out


def _accurate(x2: np.ndarray, variant: str, t: float, masked: str,
              threads: int | None = None, out: np.ndarray | None = None) -> SoftmaxResult:
    fmt = result_format(x2.dtype)
    kind = "logprob" if variant == "log" else "prob"
    n, width = x2.shape
    out = _output(out, (n, width), fmt)
    if width == 0 or n == 0:  # rows of no classes: an empty result, like 0 rows
        return SoftmaxResult(out, kind, fmt, False, variant, t)

    def fix(rows):
        _plain_rows(x2, out, rows, variant, t, masked, fmt)

    with np.errstate(all="ignore"):
        if variant == "online" or (fmt.name == "float64" and t != 1.0):
            # the plain kernels, blocked and threaded
            kernels.run_blocks(n, width, lambda s0, s1: fix(slice(s0, s1)), threads,
                               _BLOCK_ELEMENTS // 4)
        elif fmt.name == "float64":
            kernels.run(x2, out, lambda xb, ob, ax: kernels.f64_block(xb, ob, ax, kind),
                        fix, threads, np.float64)
        else:
            src = _Bf16AsF32(x2) if x2.dtype == BFLOAT16 else x2
            kernels.run(src, out, lambda xb, ob, ax: kernels.lowp_block(xb, ob, ax, t, kind, fmt),
                        fix, threads, np.float64, kernels.BLOCK_ELEMENTS * 2)
    return SoftmaxResult(out, kind, fmt, False, variant, t)


def _fast(x2: np.ndarray, variant: str, t: float, masked: str,
          threads: int | None = None, out: np.ndarray | None = None) -> SoftmaxResult:
    fmt = result_format(x2.dtype)
    kind = "logprob" if variant == "log" else "prob"
    n, width = x2.shape
    out = _output(out, (n, width), fmt)
    if width == 0 or n == 0:
        return SoftmaxResult(out, kind, fmt, False, variant, t, fast=True)

    def fix(rows):
        _plain_rows(x2, out, rows, variant, t, masked, fmt)

    src = _Bf16AsF32(x2) if x2.dtype == BFLOAT16 else x2
    wdt = np.float64 if fmt.name == "float64" else np.float32
    with np.errstate(all="ignore"):
        kernels.run(src, out, lambda xb, ob, ax: kernels.fast_block(xb, ob, ax, t, kind, fmt),
                    fix, threads, wdt, kernels.BLOCK_ELEMENTS * 4)
    return SoftmaxResult(out, kind, fmt, False, variant, t, fast=True)


class _Bf16AsF32:
    """A bfloat16 (N, C) array whose row slices come back as float32 (exact)."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.shape = a.shape
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key):
        return np.asarray(self.a[key], dtype=np.float32)


# ----------------------------------------------------------------------------
# the emulated algorithms: every operation rounded to the format


def _rsum(a: np.ndarray, fmt: Format) -> np.ndarray:
    """Row sums of ``a`` in ``fmt``'s arithmetic, shape (N, 1).

    16-bit formats: left-to-right recursive summation, each addition rounded
    (as chop does). float32/float64: numpy's pairwise sum, which already
    rounds every addition to the format.
    """
    if fmt.native:
        return a.sum(axis=1, keepdims=True)
    cols = np.ascontiguousarray(a.T)
    s = np.zeros(a.shape[0], dtype=fmt.compute)
    for col in cols:
        s = fmt.round(s + col)
    return s[:, None]


def _count_exp(stats: KernelStats, arg: np.ndarray, e: np.ndarray) -> None:
    finite = np.isfinite(arg)
    stats.exp_overflow += int(np.count_nonzero(np.isinf(e) & finite))
    stats.exp_underflow += int(np.count_nonzero((e == 0) & finite))


def _emulated_block(xb: np.ndarray, variant: str, t: float, fmt: Format,
                    stats: KernelStats) -> np.ndarray:
    """One block of rows through ``variant`` in ``fmt``'s arithmetic.

    Mirrors the algorithms of Blanchard, Higham & Higham (2021): naive is
    their Algorithm 3.1 (basic), stable/log/lse their shifted Algorithm 4.1
    (the sum skips the maximum, log1p of it gives the log-sum-exp).
    """
    r = fmt.round
    x = fmt.cast(xb).astype(fmt.compute)  # the input, rounded once to the format
    if t != 1.0:
        x = r(x / fmt.compute.type(t))
    if variant == "naive":
        e = r(np.exp(x))
        _count_exp(stats, x, e)
        s = _rsum(e, fmt)
        stats.sum_overflow_rows += int(np.count_nonzero(np.isinf(s) & np.isfinite(x).all(axis=1, keepdims=True)))
        return r(e / s)
    if variant == "online":
        return _emulated_online(x, fmt, stats)
    a = x.max(axis=1, keepdims=True)
    d = r(x - a)
    e = r(np.exp(d))
    _count_exp(stats, d, e)
    rows = np.arange(x.shape[0])
    k = np.argmax(x, axis=1)
    # exp(x_k - max) is 1 for a finite maximum, but NaN for +inf (inf - inf):
    # a framework computes it, so the NaN must reach the row as it does there
    ek = e[rows, k].copy()
    e[rows, k] = 0
    s = _rsum(e, fmt)  # sum over i != k
    s[np.isnan(ek)] = np.nan
    stats.sum_overflow_rows += int(np.count_nonzero(np.isinf(s)))
    if variant == "stable":
        e[rows, k] = ek
        return r(e / r(1 + s))
    b = r(np.log1p(s))
    if variant == "log":
        return r(d - b)
    # lse: exp(x - f), f = a + log1p(s)
    f = r(a + b)
    return r(np.exp(r(x - f)))


def _emulated_online(x: np.ndarray, fmt: Format, stats: KernelStats) -> np.ndarray:
    """Milakov & Gimelshein's online normaliser in ``fmt``'s arithmetic."""
    r = fmt.round
    n, width = x.shape
    m = np.full((n, 1), -np.inf, dtype=fmt.compute)
    s = np.zeros((n, 1), dtype=fmt.compute)
    step = ONLINE_BLOCK if fmt.native else 1
    for start in range(0, width, step):
        blk = x[:, start:start + step]
        m_new = np.maximum(m, blk.max(axis=1, keepdims=True))
        scale = np.where(m == m_new, 1, r(np.exp(r(m - m_new))))
        d = r(blk - m_new)
        e = r(np.exp(d))
        _count_exp(stats, d, e)
        s = r(r(s * scale) + _rsum(e, fmt))
        m = m_new
    stats.sum_overflow_rows += int(np.count_nonzero(np.isinf(s)))
    return r(r(np.exp(r(x - m))) / s)


def _emulated(x2: np.ndarray, variant: str, t: float, fmt: Format, masked: str) -> SoftmaxResult:
    kind = "logprob" if variant == "log" else "prob"
    n, width = x2.shape
    out = np.empty((n, width), dtype=fmt.dtype)
    stats = KernelStats()
    if width == 0:  # rows of no classes: an empty result, like 0 rows
        return SoftmaxResult(out, kind, fmt, True, variant, t, stats)
    with np.errstate(all="ignore"):
        for rows in _row_blocks(n, width):
            xb = np.asarray(x2[rows])
            res = _emulated_block(xb, variant, t, fmt, stats)
            if masked == "zeros":
                # a fully masked row (all -inf) gives zeros instead of NaN
                full = np.all(np.isneginf(xb.astype(np.float64)), axis=1) & (width > 0)
                res[full] = -np.inf if kind == "logprob" else 0
            out[rows] = fmt.store(res)
    return SoftmaxResult(out, kind, fmt, True, variant, t, stats)


# ----------------------------------------------------------------------------
# entry points


def compute(x2: np.ndarray, variant: str = "stable", temperature: float = 1.0,
            dtype: str | None = None, masked: str = "nan", *, fast: bool = False,
            threads: int | None = None, out: np.ndarray | None = None) -> SoftmaxResult:
    """Run one variant over (N, C) rows; the engine behind every command.

    Parameters
    ----------
    x2 : ndarray, shape (N, C)
        Logits, one row per sample, classes along the last axis.
    variant : str
        One of :data:`VARIANTS`.
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
    check_variant(variant)
    t = check_temperature(temperature)
    check_masked(masked)
    x2 = _floating(np.asarray(x2))
    if x2.ndim != 2:
        raise ValueError(f"compute takes (N, C) rows, got shape {x2.shape}")
    if fast:
        if dtype is not None or variant not in ("stable", "log"):
            raise ValueError("fast mode computes stable or log in the input's format; "
                             "it does not combine with dtype emulation or other variants")
        return _fast(x2, variant, t, masked, threads, out)
    if dtype is None and variant in ACCURATE_VARIANTS:
        return _accurate(x2, variant, t, masked, threads, out)
    if out is not None:
        raise ValueError("out is supported by the accurate and fast paths, not by emulation")
    fmt = format_of(dtype) if dtype is not None else result_format(x2.dtype)
    return _emulated(x2, variant, t, fmt, masked)


def softmax(x, axis: int = -1, variant: str = "stable", temperature: float = 1.0,
            dtype: str | None = None, masked: str = "nan", *, fast: bool = False,
            threads: int | None = None) -> np.ndarray:
    """Softmax of ``x`` along ``axis``, accurate to a few ulps by default.

    Parameters
    ----------
    x : array_like
        Logits. Integers are converted to float64.
    axis : int
        The class axis (default: the last).
    variant : str
        ``stable`` (default), ``naive``, ``log`` (exp of the accurate
        log-softmax), ``online`` or ``lse``; see the module notes.
    temperature : float
        Softmax of ``x / temperature``.
    dtype : {None, 'float16', 'bfloat16', 'float32', 'float64'}
        ``None``: the accurate result in the input's float format.
        A name: emulate computing in that format (input rounded to it).
    masked : {'nan', 'zeros'}
        Result for a row whose entries are all -inf (PyTorch gives NaN).
    fast : bool
        Opt-in fast mode (``stable`` only): the input's own arithmetic with
        the plain max-shift, within 2 + |x_i - max|/T + log2(C) ulps
        (measured) instead of 4. See :func:`compute`.
    threads : int or None
        Threads (default: the machine's cores).

    Returns
    -------
    ndarray
        Probabilities, the shape of ``x``.

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
    """
    a = np.asarray(x)
    if variant == "log":
        with np.errstate(over="ignore"):
            return np.exp(log_softmax(a, axis, temperature, dtype, masked, fast=fast,
                                      threads=threads))
    x2, shape, ax = as_rows(a, axis)
    res = compute(x2, variant, temperature, dtype, masked, fast=fast, threads=threads)
    return from_rows(res.values, shape, ax, a.ndim)


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
    x2, shape, ax = as_rows(a, axis)
    res = compute(x2, "log", temperature, dtype, masked, fast=fast, threads=threads)
    return from_rows(res.values, shape, ax, a.ndim)


def logsumexp(x, axis: int = -1, temperature: float = 1.0) -> np.ndarray:
    """log(sum(exp(x / temperature))) along ``axis``, in the log1p form.

    lse = m + log1p(sum_{i != k} exp(x_i - m)), m = x_k the maximum. NaN
    propagates, a +inf entry gives +inf, an all -inf (or empty) row -inf.

    Examples
    --------
    >>> float(logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    >>> float(logsumexp([-np.inf, -np.inf]))
    -inf
    """
    a = np.asarray(x)
    t = check_temperature(temperature)
    x2, shape, ax = as_rows(a, axis)
    x2 = _floating(x2)
    fmt = result_format(x2.dtype)
    xb = x2.astype(np.float64)
    n, width = xb.shape
    if width == 0:
        out = np.full(n, -np.inf)
    else:
        with np.errstate(all="ignore"):
            m = xb.max(axis=1, keepdims=True)
            shift = np.where(np.isfinite(m), m, 0.0)
            q, c = _shifted(xb, shift, t, fmt.name == "float64")
            e = np.exp(q)
            if c is not None:
                e += e * c
            rows = np.arange(n)
            e[rows, np.argmax(q, axis=1)] = 0.0
            out = (shift[:, 0] / t) + np.log1p(e.sum(axis=1))
            out = np.where(np.isfinite(m[:, 0]), out, m[:, 0])
    out = fmt.cast(out)
    return out.reshape(shape[:-1]) if a.ndim > 1 else out.reshape(())


__all__ = [
    "VARIANTS", "softmax", "log_softmax", "logsumexp", "compute", "SoftmaxResult",
    "KernelStats", "as_rows", "from_rows", "FORMATS", "FAST_ULP_NOTE",
]
