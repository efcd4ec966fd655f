"""Floating-point formats: names, emulated arithmetic, and ulp measurements.

smx works in four formats. float32 and float64 are numpy's own; float16 is
numpy's storage type; bfloat16 comes from the ``ml_dtypes`` package.

*Emulation* (``--dtype``) reproduces a framework that computes in a format:
every value is held in a wider type (float32 for the 16-bit formats) but is
rounded to the format after each operation, as the ``chop`` function of
Higham & Pranesh (2019) does. Rounding a float32 result of ``+ - * /`` to a
16-bit format gives the correctly rounded 16-bit result, because float32 has
24 >= 2p + 2 significand bits for p = 11 (float16) and p = 8 (bfloat16), so
double rounding is innocuous.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


@dataclass(frozen=True)
class Format:
    """A floating-point format smx can compute in.

    Attributes
    ----------
    name : str
        ``float16``, ``bfloat16``, ``float32`` or ``float64``.
    dtype : numpy.dtype
        The storage dtype.
    compute : numpy.dtype
        The dtype operations are carried out in before rounding to ``dtype``.
    digits : int
        Significand bits p, counting the implicit bit (11, 8, 24, 53).
    """

    name: str
    dtype: np.dtype
    compute: np.dtype
    digits: int

    @property
    def eps(self) -> float:
        """Machine epsilon 2**(1-p): the ulp of 1."""
        return 2.0 ** (1 - self.digits)

    @property
    def unit_roundoff(self) -> float:
        """u = 2**-p, half an ulp of 1."""
        return 2.0 ** -self.digits

    @property
    def max(self) -> float:
        return float(ml_dtypes.finfo(self.dtype).max)

    @property
    def smallest_normal(self) -> float:
        return float(ml_dtypes.finfo(self.dtype).smallest_normal)

    @property
    def exp_overflow_threshold(self) -> float:
        """The largest x whose exp(x) is finite in this format, log(max)."""
        return float(np.log(self.max))

    @property
    def native(self) -> bool:
        """True when numpy's arithmetic in ``dtype`` is already per-op rounded."""
        return self.compute == self.dtype

    def round(self, a: np.ndarray) -> np.ndarray:
        """Round ``a`` to this format, keeping it in the compute dtype (chop)."""
        if self.native:
            return a.astype(self.dtype, copy=False)
        return a.astype(self.dtype).astype(self.compute)

    def store(self, a: np.ndarray) -> np.ndarray:
        """Return ``a`` (already rounded) in the storage dtype."""
        return a.astype(self.dtype, copy=False)

    def cast(self, a: np.ndarray) -> np.ndarray:
        """Round ``a`` of any float dtype correctly to this format, in ``dtype``.

        Unlike ``a.astype(dtype)`` for bfloat16 (ml_dtypes goes through
        float32, rounding twice) or a detour through the compute dtype for
        float16, this rounds a float64 value once, to nearest-even.
        """
        a = np.asarray(a)
        if self.dtype == BFLOAT16 and a.dtype.itemsize > 4 and a.dtype.kind == "f":
            return _float64_to_bfloat16(a)
        with np.errstate(over="ignore"):  # beyond the range: inf, as intended
            return a.astype(self.dtype)


def _float64_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float64 -> bfloat16 rounded once: round to odd in float32, then RNE.

    Rounding to odd into a format with at least p + 2 bits makes the second
    rounding (float32 -> bfloat16, p = 8) correct (Boldo & Melquiond 2008).
    """
    x = a.astype(np.float64)
    with np.errstate(all="ignore"):
        f = x.astype(np.float32)
        wide = f.astype(np.float64)
        inexact = (wide != x) & np.isfinite(x)
        if inexact.any():
            # truncate toward zero, then set the last bit: round to odd
            away = inexact & (np.abs(wide) > np.abs(x))
            f = np.where(away, np.nextafter(f, np.float32(0)), f).astype(np.float32)
            f = (f.view(np.uint32) | inexact.astype(np.uint32)).view(np.float32)
    return f.astype(BFLOAT16)


FORMATS: dict[str, Format] = {
    "float16": Format("float16", np.dtype(np.float16), np.dtype(np.float32), 11),
    "bfloat16": Format("bfloat16", BFLOAT16, np.dtype(np.float32), 8),
    "float32": Format("float32", np.dtype(np.float32), np.dtype(np.float32), 24),
    "float64": Format("float64", np.dtype(np.float64), np.dtype(np.float64), 53),
}
DTYPE_NAMES = tuple(FORMATS)


def format_of(dtype) -> Format:
    """The :class:`Format` of a numpy dtype or a format name.

    Examples
    --------
    >>> format_of("bfloat16").digits
    8
    >>> format_of(np.float32).name
    'float32'
    """
    if isinstance(dtype, str) and dtype in FORMATS:
        return FORMATS[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"unknown format {dtype!r}; choose one of {', '.join(FORMATS)}") from None
    for fmt in FORMATS.values():
        if fmt.dtype == dt:
            return fmt
    raise ValueError(f"unsupported floating-point dtype {dt}")


def result_format(dtype) -> Format:
    """The format results come back in for an input of ``dtype``.

    Floating inputs keep their format; integers and booleans give float64.
    """
    dt = np.dtype(dtype)
    if dt == BFLOAT16 or dt.kind == "f":
        try:
            return format_of(dt)
        except ValueError:  # longdouble and friends: report in float64
            return FORMATS["float64"]
    return FORMATS["float64"]


def ulp(reference: np.ndarray, fmt: Format) -> np.ndarray:
    """The ulp of ``fmt`` at each (exact) ``reference`` value.

    For a normal number r = f * 2**e with f in [0.5, 1), ulp(r) = 2**(e - p).
    Values below the smallest normal get the subnormal spacing. ``reference``
    may be float64 or longdouble; the ulp is returned in the same dtype.

    Examples
    --------
    >>> float(ulp(np.array(1.0), FORMATS["float32"]))
    1.1920928955078125e-07
    """
    r = np.abs(np.asarray(reference))
    floor = np.asarray(fmt.smallest_normal, dtype=r.dtype)
    _, e = np.frexp(np.maximum(r, floor))
    return np.ldexp(np.ones_like(r), e - fmt.digits)


def ulp_error(computed: np.ndarray, reference: np.ndarray, fmt: Format) -> np.ndarray:
    """|computed - reference| in ulps of ``fmt`` at the reference.

    ``reference`` should be more accurate than ``fmt`` (float64 for 16/32-bit
    formats, longdouble or better for float64). Entries where both are equal
    infinities count as 0; any other non-finite mismatch is ``inf``; NaN in
    ``computed`` where the reference is a number is ``inf``.
    """
    ref = np.asarray(reference)
    wide = ref.dtype if ref.dtype.itemsize >= 8 else np.dtype(np.float64)
    ref = ref.astype(wide)
    got = np.asarray(computed).astype(np.float64).astype(wide)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - ref) / ulp(ref, fmt)
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    err = np.where(same, 0, err)
    return np.where(np.isnan(err), np.inf, err)
