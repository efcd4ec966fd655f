"""Error-free transformations: the exact rounding error of a sum or a product.

Each function returns the rounded result and its exact error, so that
``a + b == s + err`` (or ``a * b == p + err``) holds exactly in real numbers.
They are written once here and used by the accurate kernels
(:mod:`smx_cli.core.accurate`, :mod:`smx_cli.core.kernels`) and by the
high-precision reference (:mod:`smx_cli.core.reference`, in long double).

``two_sum``       Knuth's TwoSum (TAOCP vol. 2, 4.2.2): any a, b; 6 flops.
``fast_two_sum``  Dekker's Fast2Sum: needs |a| >= |b|; 3 flops.
``two_prod``      Dekker's TwoProduct with Veltkamp splitting (no FMA).
``split_sum``     Rump, Ogita & Oishi's ExtractVector (2008): row sums of
                  non-negative terms as a double-double (hi, lo).

All work elementwise on numpy arrays (float64, or long double for the
reference) and keep their dtype. Overflow makes the error terms NaN or inf:
callers that can meet it mask those errors.
"""
from __future__ import annotations

import numpy as np

# Veltkamp's splitter 2**ceil(p/2) + 1: float64 (p = 53), x87 long double (p = 64)
SPLITTER_F64 = 134217729.0            # 2**27 + 1
SPLITTER_LONG = 4294967297            # 2**32 + 1


def two_sum(a, b):
    """s + err == a + b exactly, s = fl(a + b) (Knuth's TwoSum).

    Examples
    --------
    >>> s, e = two_sum(np.float64(1.0), np.float64(2.0**-60))
    >>> float(s), float(e)
    (1.0, 8.673617379884035e-19)
    """
    s = a + b
    bv = s - a
    err = (a - (s - bv)) + (b - bv)
    return s, err


def fast_two_sum(a, b):
    """s + err == a + b exactly when |a| >= |b| (Dekker's Fast2Sum).

    Examples
    --------
    >>> s, e = fast_two_sum(np.float64(1.0), np.float64(2.0**-60))
    >>> float(e) == 2.0**-60
    True
    """
    s = a + b
    err = b - (s - a)
    return s, err


def two_sum_into(a, b, s, err, tmp):
    """:func:`two_sum` written into preallocated ``s``, ``err`` (and scratch ``tmp``).

    The same operations in the same order, for the blocked kernels that must
    not allocate; ``b`` may broadcast against ``a``.
    """
    np.add(a, b, out=s)             # s = fl(a + b)
    np.subtract(s, a, out=err)      # bv = s - a
    np.subtract(s, err, out=tmp)    # s - bv
    np.subtract(a, tmp, out=tmp)    # a - (s - bv)
    np.subtract(b, err, out=err)    # b - bv
    err += tmp
    return s, err


def fast_two_sum_into(a, b, s, err):
    """:func:`fast_two_sum` (|a| >= |b|) written into preallocated ``s`` and ``err``."""
    np.add(a, b, out=s)
    np.subtract(s, a, out=err)      # s - a
    np.subtract(b, err, out=err)    # b - (s - a)
    return s, err


def _split(a, splitter):
    """Veltkamp's split: a = hi + lo with hi holding the top half of the bits."""
    t = a * splitter
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a, b, splitter=SPLITTER_F64):
    """p + err == a * b exactly, p = fl(a * b) (Dekker's TwoProduct).

    ``splitter`` is Veltkamp's constant for the arithmetic's precision:
    :data:`SPLITTER_F64` for float64, :data:`SPLITTER_LONG` (as a long
    double) for x87 extended precision.

    Examples
    --------
    >>> p, e = two_prod(np.float64(1.0 + 2.0**-30), np.float64(1.0 + 2.0**-30))
    >>> float(e) == 2.0**-60
    True
    """
    p = a * b
    a_hi, a_lo = _split(a, splitter)
    b_hi, b_lo = _split(b, splitter)
    err = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, err


def split_grid(width: int, scale_exp=0) -> np.ndarray:
    """The constant sigma of :func:`split_sum` for rows of ``width`` terms below 2**scale_exp."""
    k = 52 - int(np.ceil(np.log2(width + 1)))
    return np.ldexp(1.5, (52 - k) + np.asarray(scale_exp))


def split_sum(e: np.ndarray, extra: np.ndarray | None = None):
    """Row sums of non-negative float64 terms <= 1 as a double-double (hi, lo).

    Error-free splitting (Rump, Ogita & Oishi 2008, ExtractVector): each term
    is cut into a high part on the grid 2**-k, whose sum is exact in any order
    because every partial sum is a multiple of 2**-k below 2**(53-k), and a
    low part below 2**-k whose sum's rounding error is negligible. numpy's
    plain pairwise sum errs by up to ~(C/8)u, which alone would cost 4+ ulps.
    ``extra`` (small terms, e.g. the exp corrections) joins the low sum.
    With one term equal to 1, hi + lo is the sum to within
    log2(C) C (C + 1) 2**-105 (the rounding of the low sum: about 2**-78 for
    C = 3000), far below float64's 2**-53; |lo| <= ulp(hi)/2.

    Examples
    --------
    >>> hi, lo = split_sum(np.array([[1.0, 2.0**-60, 2.0**-60]]))
    >>> float(hi[0, 0]), float(lo[0, 0]) == 2.0**-59
    (1.0, True)
    """
    sigma = split_grid(e.shape[1])
    hi = e + sigma
    hi -= sigma
    lo = e - hi
    s_hi = hi.sum(axis=1, keepdims=True)
    s_lo = lo.sum(axis=1, keepdims=True)
    if extra is not None:
        s_lo += extra.sum(axis=1, keepdims=True)
    # Fast2Sum: |s_hi| >= |s_lo| once a term is 1
    return fast_two_sum(s_hi, s_lo)


def top_exponent(e: np.ndarray, ax: int) -> np.ndarray:
    """Per row (along ``ax``, keepdims) an exponent g with every term below 2**g.

    The grid of :func:`split_sum_long` relative to the row's largest term, so
    a row of tiny terms (log-softmax's rest beside a dominant maximum) sums to
    a few tenths of an ulp of *its* size, not of 1. Rows of zeros get 0; g
    is at least -1000 (the grid stays a normal number).

    Examples
    --------
    >>> top_exponent(np.array([[0.75, 0.25], [0.0, 0.0], [2.0**-60, 0.0]]), 1).ravel()
    array([  0,   0, -59], dtype=int32)
    """
    return np.maximum(np.frexp(np.max(e, axis=ax, keepdims=True))[1], -1000)


def split_sum_long(e: np.ndarray, ax: int, scale_exp, work=None) -> np.ndarray:
    """Row sums (along ``ax``) of non-negative terms below 2**scale_exp, as long double.

    :func:`split_sum` with the grid scaled per row by 2**scale_exp (terms need
    not be <= 1). ``work`` is an optional scratch array of ``e``'s shape;
    ``e`` is left unchanged.
    """
    sigma = split_grid(e.shape[ax], scale_exp)
    hi = np.empty_like(e) if work is None else work
    np.add(e, sigma, out=hi)
    hi -= sigma
    s_hi = np.sum(hi, axis=ax, keepdims=True)
    np.subtract(e, hi, out=hi)  # the low parts
    s_lo = np.sum(hi, axis=ax, keepdims=True)
    return s_hi.astype(np.longdouble) + s_lo.astype(np.longdouble)
