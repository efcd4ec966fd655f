"""Exact sums that merge across blocks: the per-block partials of ``math.fsum``.

A block's values are summed exactly into a short *expansion*: floats
s_1, s_2, ... whose exact sum is the exact sum of the block (s_1 = fsum of
the block, s_2 = fsum of the block minus s_1, ... until nothing is left).
Expansions of any number of blocks merge by concatenation, with no rounding
at all, and :meth:`ExactSum.value` rounds once: the result is the correctly
rounded sum of every value of every block, which is what
:func:`smx_cli.core.xent.exact_sum` gives on the whole array, bit for bit.
(The one exception: a sum whose exact partials pass float64's range while
subnormal terms matter; both paths then fall back to summing scaled by
2**-64.) Non-finite values are tallied apart: NaN, or +inf with -inf, give
NaN; +inf alone inf; as in ``exact_sum``.

No dask here: the blocks' sums are plain objects that pickle small.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_SCALE = 2.0 ** -64
# an expansion of float64 values spans at most ~2100 bits: 53 bits per term
_MAX_TERMS = 48


def _expansion(values: list[float]) -> tuple[float, ...]:
    """Floats whose exact sum is exactly the sum of ``values`` (may raise OverflowError)."""
    parts: list[float] = []
    for _ in range(_MAX_TERMS):
        s = math.fsum(values + [-p for p in parts])
        if s == 0.0:
            break
        parts.append(s)
    return tuple(parts)


@dataclass(frozen=True)
class ExactSum:
    """The exact sum of some float64 values, kept unrounded so that it merges.

    Examples
    --------
    >>> a = ExactSum.of([1e16, 1.0])
    >>> b = ExactSum.of([-1e16, 1.0])
    >>> (a + b).value()          # a plain float sum of the blocks' sums gives 0.0 or 4.0
    2.0
    >>> (ExactSum.of([np.inf]) + ExactSum.of([1.0])).value()
    inf
    """

    parts: tuple[float, ...] = ()
    scaled: tuple[float, ...] = ()   # parts of values * 2**-64, once a block overflowed
    nan: bool = False
    pos_inf: bool = False
    neg_inf: bool = False

    @classmethod
    def of(cls, values) -> "ExactSum":
        v = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(v)
        if finite.all():
            special = {}
        else:
            special = dict(nan=bool(np.isnan(v).any()), pos_inf=bool(np.isposinf(v).any()),
                           neg_inf=bool(np.isneginf(v).any()))
            v = v[finite]
        vals = v.tolist()
        try:
            return cls(parts=_expansion(vals), **special)
        except OverflowError:
            return cls(scaled=_expansion([x * _SCALE for x in vals]), **special)

    def __add__(self, other: "ExactSum") -> "ExactSum":
        return ExactSum(self.parts + other.parts, self.scaled + other.scaled,
                        self.nan or other.nan, self.pos_inf or other.pos_inf,
                        self.neg_inf or other.neg_inf)

    def value(self) -> float:
        """The correctly rounded total (inf where it overflows, NaN for inf - inf)."""
        if self.nan or (self.pos_inf and self.neg_inf):
            return math.nan
        if self.pos_inf:
            return math.inf
        if self.neg_inf:
            return -math.inf
        if not self.scaled:
            try:
                return math.fsum(self.parts)
            except OverflowError:
                pass
        terms = list(self.scaled) + [p * _SCALE for p in self.parts]
        return math.fsum(terms) / _SCALE  # float division: inf on overflow, no raise


def total(sums) -> float:
    """The correctly rounded total of an iterable of :class:`ExactSum`.

    Examples
    --------
    >>> total(ExactSum.of(b) for b in ([0.1, 0.2], [0.3], []))
    0.6
    """
    merged = ExactSum()
    for s in sums:
        merged = merged + s
    return merged.value()
