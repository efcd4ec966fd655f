"""Where each softmax variant breaks as the logits grow, and the paper's row error.

:func:`sweep` scales the logits by 1, 10, 100, ... and records, per variant and
format, the first scale at which the variant's result is no longer a
probability distribution (:func:`smx_cli.analysis.measure.measure`);
:func:`paper_row_errors` is the per-row error measure of Blanchard, Higham &
Higham (2021). No printing, no click, no rich.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from smx_cli.analysis.measure import (ALL_VARIANTS, DEFAULT_DTYPES, Thresholds, VariantReport,
                                      check_names, engine, measure, prepare, round_to,
                                      thresholds)
from smx_cli.core.precision import FORMATS
from smx_cli.core.reference import exact_softmax
from smx_cli.core.softmax import compute

#: the sweep's default largest scale
MAX_SCALE = 1e6


def scales_up_to(max_scale: float = MAX_SCALE) -> list[float]:
    """1, 10, 100, ... up to ``max_scale``.

    Examples
    --------
    >>> scales_up_to(1000)
    [1.0, 10.0, 100.0, 1000.0]
    """
    out, s = [], 1.0
    while s <= max_scale * (1 + 1e-12):
        out.append(s)
        s *= 10.0
    return out


def normal_sample(rows: int = 256, cols: int = 10, seed: int = 0) -> np.ndarray:
    """A seeded standard-normal (rows, cols) sample, the sweep's default input.

    Examples
    --------
    >>> normal_sample(2, 3, seed=1).shape
    (2, 3)
    """
    return np.random.default_rng(seed).standard_normal((rows, cols))


@dataclass
class SweepEntry:
    """Where one variant first breaks in one format.

    Attributes
    ----------
    variant, dtype : str
    break_scale : float or None
        The first scale whose verdict is ``broken``; None if none did.
    cause : str or None
        ``overflow``, ``NaN`` or ``all-zero row`` at that scale.
    failed_rows : int
        Rows failed at ``break_scale``.
    max_logit : float or None
        The largest scaled, rounded logit at ``break_scale``.
    """

    variant: str
    dtype: str
    break_scale: float | None = None
    cause: str | None = None
    failed_rows: int = 0
    max_logit: float | None = None


@dataclass
class Sweep:
    """The result of :func:`sweep`.

    Attributes
    ----------
    scales : list of float
        The scales tried (the sweep stops once every variant broke).
    max_scale : float
        The cap.
    entries : list of SweepEntry
    thresholds : dict of str -> Thresholds
    out_of_range_scale : dict of str -> float or None
        Per format, the first scale at which some scaled logit no longer fits
        the format (those rows are not measured from there on).
    max_logit : list of float
        max |x| over the (unrounded) scaled input, per scale tried.
    """

    scales: list[float]
    max_scale: float
    entries: list[SweepEntry]
    thresholds: dict[str, Thresholds]
    out_of_range_scale: dict[str, float | None]
    max_logit: list[float]

    def entry(self, variant: str, dtype: str) -> SweepEntry:
        found = {(e.variant, e.dtype): e for e in self.entries}
        return found[(variant, dtype)]

    def to_dict(self) -> dict:
        return {
            "scales": self.scales, "max_scale": self.max_scale,
            "thresholds": {k: asdict(v) for k, v in self.thresholds.items()},
            "out_of_range_scale": self.out_of_range_scale, "max_logit": self.max_logit,
            "entries": [asdict(e) for e in self.entries],
        }


def _cause(r: VariantReport) -> str:
    if r.overflow_rows or r.exp_overflow or r.sum_overflow_rows:
        return "overflow"
    if r.nan:
        return "NaN"
    return "all-zero row"


def sweep(x2, variants=ALL_VARIANTS, dtypes=DEFAULT_DTYPES, temperature: float = 1.0,
          max_scale: float = MAX_SCALE) -> Sweep:
    """Scale the logits by 1, 10, 100, ... and find where each variant first breaks.

    Stops at ``max_scale`` or once every variant has broken in every format.

    Examples
    --------
    >>> s = sweep([[0.0, 2.0]], ["naive", "stable"], ["float16"], max_scale=1e3)
    >>> s.entry("naive", "float16").break_scale   # 20 > 11.09 = log(65504)
    10.0
    >>> s.entry("stable", "float16").break_scale is None
    True
    """
    variants = check_names(variants, ALL_VARIANTS, "variants")
    dtypes = check_names(dtypes, tuple(FORMATS), "dtypes")
    x = np.asarray(x2, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"sweep takes (N, C) rows, got shape {x.shape}")
    entries = {(v, d): SweepEntry(v, d) for d in dtypes for v in variants}
    out_of_range: dict[str, float | None] = {d: None for d in dtypes}
    tried, max_logit = [], []
    for s in scales_up_to(max_scale):
        if all(e.break_scale is not None for e in entries.values()):
            break
        xs = x * s
        tried.append(s)
        finite = xs[np.isfinite(xs)]
        max_logit.append(float(np.max(np.abs(finite))) if finite.size else 0.0)
        for d in dtypes:
            todo = [v for v in variants if entries[(v, d)].break_scale is None]
            if not todo:
                continue
            prep = prepare(xs, d, temperature)
            if prep.out_of_range and out_of_range[d] is None:
                out_of_range[d] = s
            for v in todo:
                r = measure(prep, v, temperature, locate=False)
                if r.verdict == "broken":
                    e = entries[(v, d)]
                    e.break_scale, e.cause, e.failed_rows = s, _cause(r), r.failed_rows
                    e.max_logit = float(np.max(prep.x.astype(np.float64), initial=-np.inf))
    return Sweep(tried, float(max_scale), list(entries.values()),
                 {d: thresholds(d) for d in dtypes}, out_of_range, max_logit)


# ----------------------------------------------------------------------------
# the paper's measure


def paper_row_errors(x2, dtype: str = "float16", variant: str = "stable",
                     temperature: float = 1.0) -> np.ndarray:
    """Per row, max_i |g_i - g*_i| / (u max_i g*_i), as Blanchard, Higham & Higham measure.

    ``g`` is the variant emulated in ``dtype`` on the input rounded to
    ``dtype``, ``g*`` the exact softmax of that rounded input, u the unit
    roundoff. Rows that are not finite give inf.

    Examples
    --------
    >>> e = paper_row_errors([[1.0, 2.0, 3.0]], "float16", "stable")
    >>> bool(e[0] < 2)
    True
    """
    fmt = FORMATS[dtype]
    xr = round_to(np.asarray(x2, dtype=np.float64), dtype)
    p, _ = exact_softmax(xr.astype(np.float64), temperature)
    name, dt = engine(variant, dtype)
    res = compute(xr, name, temperature, dt)
    g = res.values.astype(np.float64)
    with np.errstate(all="ignore"):
        if res.kind == "logprob":
            g = np.exp(g)
        ref = p.astype(np.float64)
        e = np.abs(g - ref).max(axis=1) / (fmt.unit_roundoff * ref.max(axis=1))
    return np.where(np.isfinite(e), e, np.inf)
