"""One softmax variant in one format, measured against an exact reference.

The measurement behind ``smx compare-stability`` (:mod:`smx_cli.analysis.compare`)
and the scale sweep (:mod:`smx_cli.analysis.sweep`); no printing, no click, no rich.

For each format the input is first rounded to that format, so that a
comparison measures the *algorithm*, not the rounding of its input. Each
variant then runs emulated in the format (:func:`smx_cli.core.softmax.compute` with
``dtype=name``: every operation rounded, 16-bit sums left to right as in the
``chop`` scripts of Blanchard, Higham & Higham 2021), and its probabilities are
compared with the exact softmax of the *rounded* input
(:func:`smx_cli.core.reference.exact_softmax`, long double). The ``log`` variant is
measured as ``exp(log-softmax)``. The row ``smx`` is smx's own accurate path
(``dtype=None``, the stable variant) on the same rounded input.

What is measured, per variant x format (see :class:`VariantReport`):

* rows *measured*: rows whose rounded input is in range (no finite logit
  rounded to +-inf), holds no NaN or +inf, and whose reference is finite
  (not fully masked). The others are counted as skipped, not judged;
* *overflow*: measured rows in which exp or the sum of exponentials became
  inf (the engine's own counters, located row by row);
* *failed* rows: overflow rows, plus rows with a NaN or inf probability, plus
  rows whose probabilities are all 0 -- a row that is no longer a
  probability distribution;
* on the rows that did not fail: the error in ulps of the format over the
  entries whose reference probability is a normal number of the format (max
  and median); the paper's row error max_i |p_i - p*_i| / (u max_i p*_i);
  max |sum(p) - 1|; max |log p - log p*| (for ``log`` its log-probabilities
  over every entry with a finite reference, for the others log of the
  probabilities over the normal-reference entries, inf where one is 0);
* *underflow*: probabilities that came out 0 whose reference is a normal
  number of the format; *NaN*: NaN probabilities in measured rows.

Verdict, overflow and NaN first: ``broken`` when any measured row failed;
``inaccurate`` when some entry's error exceeds *that variant's own* known
error bound for the format (:mod:`smx_cli.analysis.bounds`: the shifted
formulas' bound grows with |x_i - max|, the accurate path's is
:data:`ULP_OK` ulps); ``ok`` when every entry is within it -- the variant
behaves as its analysis promises; ``n/a`` when no row could be measured.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import ml_dtypes
import numpy as np

from smx_cli.analysis.bounds import bound_ulps
from smx_cli.analysis.bounds import verdict as bounds_verdict
from smx_cli.core import registry
from smx_cli.core.precision import FORMATS, Format, ulp_error
from smx_cli.core.reference import exact_softmax
from smx_cli.core.softmax import compute

#: the pseudo-variant ``smx``: smx's own accurate path (no --dtype)
ACCURATE = "smx"
# the textbook variants, emulated in each format; the unshifted naive formula first
TEXTBOOK = tuple(sorted(registry.SOFTMAX_VARIANTS, key=lambda v: registry.get(v).shifted))
#: what each comparison row runs: (registry variant, emulated in the format?)
ENGINES = {**{v: (v, True) for v in TEXTBOOK}, ACCURATE: ("stable", False)}
ALL_VARIANTS = tuple(ENGINES)
DEFAULT_DTYPES = ("float16", "bfloat16", "float32", "float64")
VARIANT_LABELS = {**{v: registry.get(v).label for v in TEXTBOOK},
                  ACCURATE: "smx accurate path (no --dtype)"}
#: a variant whose max error exceeds this many ulps is ``inaccurate``
ULP_OK = 4.0
#: the worst row shows at most this many columns
WORST_COLUMNS = 12


def engine(variant: str, dtype: str) -> tuple[str, str | None]:
    """The registry variant and ``dtype`` argument that comparison row ``variant`` runs.

    Examples
    --------
    >>> engine("smx", "float16"), engine("naive", "float16")
    (('stable', None), ('naive', 'float16'))
    """
    name, emulated = ENGINES[variant]
    return name, (dtype if emulated else None)


# ----------------------------------------------------------------------------
# thresholds of a format


@dataclass(frozen=True)
class Thresholds:
    """Where exp and the input leave a format's range.

    Attributes
    ----------
    dtype : str
    max : float
        The largest finite number of the format.
    exp_overflow : float
        log(max): exp(x) overflows for x above it.
    exp_overflow_in_format : float
        The largest number *of the format* whose exp rounds to a finite value
        (float16 11.0859, bfloat16 88.5: below log(max) because the format's
        grid is coarse there).
    exp_underflow : float
        log of the smallest subnormal: exp(x) rounds to 0 below about this.
    unit_roundoff : float
        u = 2**-p.
    smallest_normal : float
    """

    dtype: str
    max: float
    exp_overflow: float
    exp_overflow_in_format: float
    exp_underflow: float
    unit_roundoff: float
    smallest_normal: float


def _next_down(v: float, fmt: Format) -> float:
    """The format's next number below the positive format number ``v``."""
    a = np.array([v], dtype=fmt.dtype)
    bits = a.view(np.dtype(f"u{fmt.dtype.itemsize}"))
    bits -= 1
    return float(a.astype(np.float64)[0])


def thresholds(dtype: str) -> Thresholds:
    """The overflow thresholds of format ``dtype``, computed from the format.

    Examples
    --------
    >>> th = thresholds("float16")
    >>> round(th.exp_overflow, 2), th.exp_overflow_in_format
    (11.09, 11.0859375)
    >>> thresholds("bfloat16").exp_overflow_in_format
    88.5
    """
    fmt = FORMATS[dtype]
    top = fmt.exp_overflow_threshold
    v = float(fmt.round(np.array([top], dtype=np.float64).astype(fmt.compute))[0])
    with np.errstate(over="ignore"):
        while not np.isfinite(fmt.round(np.exp(np.array([v], dtype=fmt.compute))))[0]:
            v = _next_down(v, fmt)
    tiny = float(ml_dtypes.finfo(fmt.dtype).smallest_subnormal)
    return Thresholds(dtype, fmt.max, top, v, float(np.log(tiny)), fmt.unit_roundoff,
                      fmt.smallest_normal)


# ----------------------------------------------------------------------------
# one variant in one format


@dataclass
class WorstRow:
    """The row that shows a variant's failure (or its largest error).

    Attributes
    ----------
    index : int
        Row index into the (N, C) input.
    columns : list of int
        The columns shown (all when C <= :data:`WORST_COLUMNS`).
    input, output, reference : list of float
        The rounded logits, the variant's probabilities and the exact ones,
        at ``columns``.
    failed : bool
        True when the row failed, False when it is just the least accurate.
    """

    index: int
    columns: list[int]
    input: list[float]
    output: list[float]
    reference: list[float]
    failed: bool


@dataclass
class VariantReport:
    """One variant in one format against the reference; see the module notes.

    Attributes
    ----------
    variant, dtype : str
    rows : int
        Rows measured; ``skipped_rows`` were not (NaN/+inf/fully masked, or
        ``out_of_range_rows`` whose finite logits round to +-inf in ``dtype``).
    overflow_rows : int
        Measured rows in which exp or the sum became inf.
    exp_overflow, sum_overflow_rows : int
        The engine's own counters (entries; rows) over the measured rows.
    underflow : int
        Entries that came out 0 whose exact value is a normal number.
    nan : int
        NaN probabilities in measured rows.
    failed_rows : int
        Rows that overflowed, hold NaN/inf, or are all 0.
    max_ulp, median_ulp : float or None
        Error in ulps of ``dtype``, entries with a normal exact value, rows
        that did not fail.
    max_row_error_u : float or None
        max over rows of max_i |p_i - p*_i| / (u max_i p*_i) (the paper's).
    max_sum_error : float or None
        max |sum(p) - 1|.
    max_logp_error : float or None
        max |log p - log p*| (``log``: its own log-probabilities, every
        entry with a finite exact value).
    verdict : str
        ``ok``, ``inaccurate``, ``broken`` or ``n/a``.
    worst : WorstRow or None

    Error fields are ``None`` when no entry qualified (e.g. every row failed).
    """

    variant: str
    dtype: str
    rows: int
    skipped_rows: int
    out_of_range_rows: int
    overflow_rows: int
    exp_overflow: int
    sum_overflow_rows: int
    underflow: int
    nan: int
    failed_rows: int
    max_ulp: float | None
    median_ulp: float | None
    max_row_error_u: float | None
    max_sum_error: float | None
    max_logp_error: float | None
    verdict: str
    worst: WorstRow | None = None
    #: max over entries of (error in ulps) / (the variant's bound in ulps)
    max_bound_ratio: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def round_to(x2: np.ndarray, dtype: str) -> np.ndarray:
    """``x2`` rounded to format ``dtype``, stored in that format.

    Examples
    --------
    >>> r = round_to(np.array([[0.1, 70000.0]]), "float16")
    >>> float(r[0, 0]), float(r[0, 1])
    (0.0999755859375, inf)
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x2, dtype=np.float64).astype(FORMATS[dtype].dtype)


def _overflow_rows(x: np.ndarray, variant: str, t: float, dtype: str, stats) -> np.ndarray:
    """Rows in which the engine counted exp or sum overflow, found by halving.

    :func:`compute` counts events over all the rows it is given; rows are
    independent, so running it on halves locates them. A block whose every
    row overflowed in the sum, or a single row, is settled without splitting.
    """
    n = x.shape[0]
    mask = np.zeros(n, dtype=bool)
    pending = [(np.arange(n), stats)]
    while pending:
        idx, st = pending.pop()
        if st is None:
            st = compute(x[idx], variant, t, dtype).stats
        if st.exp_overflow == 0 and st.sum_overflow_rows == 0:
            continue
        if len(idx) == 1 or st.sum_overflow_rows == len(idx):
            mask[idx] = True
            continue
        half = len(idx) // 2
        pending += [(idx[:half], None), (idx[half:], None)]
    return mask


def _pick_columns(out: np.ndarray, ref: np.ndarray, err: np.ndarray) -> list[int]:
    width = out.shape[0]
    if width <= WORST_COLUMNS:
        return list(range(width))
    order = [int(np.argmax(ref))]
    order += [int(j) for j in np.flatnonzero(~np.isfinite(out))]
    order += [int(j) for j in np.argsort(-np.nan_to_num(err, nan=np.inf, posinf=np.inf))]
    seen: list[int] = []
    for j in order:
        if j not in seen:
            seen.append(j)
        if len(seen) == WORST_COLUMNS:
            break
    return sorted(seen)


@dataclass
class _Prepared:
    """A format's rounded input and reference, shared by all variants."""

    dtype: str
    x: np.ndarray          # (M, C) rounded input of the measured rows, in the format
    rows: np.ndarray       # their indices in the input
    p: np.ndarray          # reference probabilities (long double)
    logp: np.ndarray       # reference log-probabilities
    skipped: int
    out_of_range: int


def prepare(x2: np.ndarray, dtype: str, t: float) -> _Prepared:
    xf = np.asarray(x2, dtype=np.float64)
    xr = round_to(xf, dtype)
    xr64 = xr.astype(np.float64)
    with np.errstate(all="ignore"):
        p, logp = exact_softmax(xr64, t)
    out_of_range = (np.isfinite(xf) & ~np.isfinite(xr64)).any(axis=1)
    special = (np.isnan(xr64) | np.isposinf(xr64)).any(axis=1) | ~np.isfinite(p).all(axis=1)
    keep = ~(out_of_range | special)
    if xf.shape[1] == 0:
        keep[:] = False
    rows = np.flatnonzero(keep)
    return _Prepared(dtype, xr[rows], rows, p[rows], logp[rows], int(np.count_nonzero(~keep)),
                     int(np.count_nonzero(out_of_range)))


def _finite_max(a: np.ndarray) -> float | None:
    if a.size == 0:
        return None
    return float(np.max(a))


def measure(prep: _Prepared, variant: str, t: float, locate: bool = True,
            errors: list | None = None) -> VariantReport:
    """One variant in one format; ``errors``, if given, receives the ulp errors measured
    (:mod:`smx_cli.dask.compare` merges their histograms for an exact median)."""
    fmt = FORMATS[prep.dtype]
    kind_variant, dtype = engine(variant, prep.dtype)
    m = prep.x.shape[0]
    res = compute(prep.x, kind_variant, t, dtype)
    vals = res.values.astype(np.float64)
    with np.errstate(all="ignore"):
        g = np.exp(vals) if res.kind == "logprob" else vals
        ref = prep.p.astype(np.float64)
        if locate and (res.stats.exp_overflow or res.stats.sum_overflow_rows):
            ovf = _overflow_rows(prep.x, kind_variant, t, dtype, res.stats)
        else:
            ovf = np.zeros(m, dtype=bool)
        nonfinite = ~np.isfinite(g)
        failed = ovf | nonfinite.any(axis=1) | (g == 0).all(axis=1)
        good = ~failed
        normal = (ref >= fmt.smallest_normal) & good[:, None]
        err = ulp_error(g, prep.p, fmt)
        errs = err[normal]
        if errors is not None:
            errors.append(errs)
        denom = fmt.unit_roundoff * np.abs(ref).max(axis=1)
        row_err = np.abs(g - ref).max(axis=1) / denom
        sums = np.abs(g.sum(axis=1) - 1.0)
        if res.kind == "logprob":
            lmask = np.isfinite(prep.logp) & good[:, None]
            lerr = np.abs(vals - prep.logp.astype(np.float64))[lmask]
        else:
            lerr = np.abs(np.log(g) - prep.logp.astype(np.float64))[normal]
        lerr = np.where(np.isnan(lerr), np.inf, lerr)
    n_failed = int(np.count_nonzero(failed))
    max_ulp = _finite_max(errs)
    with np.errstate(all="ignore"):
        bound = bound_ulps(variant, prep.x, prep.logp, t)
        ratio = _finite_max((err / bound)[normal]) if m else None
    verdict = bounds_verdict(m, n_failed, ratio)
    worst = None
    if m:
        if n_failed:
            bad = np.count_nonzero(nonfinite, axis=1) + ovf
            cand = np.flatnonzero(failed)
            i = int(cand[np.argmax(bad[cand])])
        else:
            row_max = np.where(normal, err, 0).max(axis=1)
            i = int(np.argmax(row_max))
        cols = _pick_columns(g[i], ref[i], err[i])
        worst = WorstRow(int(prep.rows[i]), cols,
                         [float(v) for v in prep.x[i, cols].astype(np.float64)],
                         [float(v) for v in g[i, cols]],
                         [float(v) for v in ref[i, cols]], bool(failed[i]))
    return VariantReport(
        variant=variant, dtype=prep.dtype, rows=m, skipped_rows=prep.skipped,
        out_of_range_rows=prep.out_of_range, overflow_rows=int(np.count_nonzero(ovf)),
        exp_overflow=int(res.stats.exp_overflow),
        sum_overflow_rows=int(res.stats.sum_overflow_rows),
        underflow=int(np.count_nonzero((g == 0) & normal)),
        nan=int(np.count_nonzero(np.isnan(g))), failed_rows=n_failed,
        max_ulp=max_ulp, median_ulp=float(np.median(errs)) if errs.size else None,
        max_row_error_u=_finite_max(row_err[good]), max_sum_error=_finite_max(sums[good]),
        max_logp_error=_finite_max(lerr), verdict=verdict, worst=worst,
        max_bound_ratio=ratio)


def check_names(names, allowed, what: str) -> tuple[str, ...]:
    """Validate a list of variant or format names; raise ValueError naming the bad one."""
    names = tuple(names)
    if not names:
        raise ValueError(f"no {what} given; choose from {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown {what[:-1]} {name!r}; choose from {', '.join(allowed)}")
    return names
