"""``compare-stability`` over a dask array: every variant x format, merged exactly.

Each row block is measured by the single-machine code
(:mod:`smx_cli.analysis.measure`); the blocks' reports merge into one
:class:`~smx_cli.analysis.compare.Comparison` equal to that of the whole
array: counts are summed, maxima taken, the verdict recomputed, and the
worst row is the one with the largest error (for a broken variant: the
worst failed row of the first block where it broke). The median ulp error
is exact: pass 1 merges histograms of the errors (bins of 2**-12 relative
width on the float64 bit pattern, with each bin's min and max); when the
median's bin holds more than one value, pass 2 fetches that bin's values
from every block (recomputing the measurement for the affected variants).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from smx_cli.analysis import compare as cmp
from smx_cli.analysis import measure as meas
from smx_cli.analysis.bounds import verdict as bounds_verdict
from smx_cli.dask import run as run_mod
from smx_cli.errors import SmxError

_SHIFT = np.uint64(40)   # sign + exponent + 12 mantissa bits per bin


def _keys(sorted_errs):
    return sorted_errs.astype(np.float64).view(np.uint64) >> _SHIFT


def _measure_block(xb, start, variants, dtypes, t, want_bins=None):
    """Pass 1: {(variant, dtype): (report, histogram)}; pass 2 (``want_bins``): bin values."""
    xb = np.asarray(xb)
    out = {}
    for dt in dtypes:
        if want_bins is not None and not any(d == dt for _, d in want_bins):
            continue
        prep = meas.prepare(xb, dt, t)
        for v in variants:
            if want_bins is not None and (v, dt) not in want_bins:
                continue
            errs = []
            rep = meas.measure(prep, v, t, errors=errs)
            se = np.sort(errs[0]) if errs else np.zeros(0, dtype=np.longdouble)
            keys = _keys(se)
            if want_bins is not None:
                out[(v, dt)] = se[np.isin(keys, list(want_bins[(v, dt)]))]
                continue
            if rep.worst is not None:
                rep.worst = dataclasses.replace(rep.worst, index=rep.worst.index + start)
            uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
            out[(v, dt)] = (rep, (uniq, counts, se[first], se[first + counts - 1]))
    return out


def _max(values):
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _merge_reports(reps) -> cmp.VariantReport:
    first = reps[0]
    rows = sum(r.rows for r in reps)
    failed = sum(r.failed_rows for r in reps)
    max_ulp = _max(r.max_ulp for r in reps)
    ratio = _max(r.max_bound_ratio for r in reps)  # each variant against its own bound
    verdict = bounds_verdict(rows, failed, ratio)
    if failed:
        worst = next(r.worst for r in reps if r.failed_rows)
    else:
        live = [r for r in reps if r.max_ulp is not None and r.max_ulp == max_ulp]
        worst = live[0].worst if live else next((r.worst for r in reps if r.worst), None)
    summed = {f: sum(getattr(r, f) for r in reps) for f in (
        "skipped_rows", "out_of_range_rows", "overflow_rows", "exp_overflow",
        "sum_overflow_rows", "underflow", "nan")}
    return cmp.VariantReport(
        variant=first.variant, dtype=first.dtype, rows=rows, failed_rows=failed,
        max_ulp=max_ulp, median_ulp=None,
        max_row_error_u=_max(r.max_row_error_u for r in reps),
        max_sum_error=_max(r.max_sum_error for r in reps),
        max_logp_error=_max(r.max_logp_error for r in reps), verdict=verdict, worst=worst,
        max_bound_ratio=ratio, **summed)


def _median_plan(hists):
    """(total, [(rank, bin key, value or None)]) from the blocks' histograms."""
    uniq = np.concatenate([h[0] for h in hists])
    if uniq.size == 0:
        return 0, []
    counts = np.concatenate([h[1] for h in hists])
    lo = np.concatenate([h[2] for h in hists])
    hi = np.concatenate([h[3] for h in hists])
    keys, inv = np.unique(uniq, return_inverse=True)
    n = np.bincount(inv, weights=counts).astype(np.int64)
    # the errors are long double: keep them so (the median of two is taken in it)
    bmin = np.full(len(keys), np.inf, dtype=lo.dtype)
    bmax = np.full(len(keys), -np.inf, dtype=hi.dtype)
    np.minimum.at(bmin, inv, lo)
    np.maximum.at(bmax, inv, hi)
    total = int(n.sum())
    ranks = [total // 2] if total % 2 else [total // 2 - 1, total // 2]
    cum = np.cumsum(n)
    plan = []
    for r in ranks:
        b = int(np.searchsorted(cum, r, side="right"))
        below = int(cum[b - 1]) if b else 0
        value = bmin[b] if bmin[b] == bmax[b] else None
        plan.append((r - below, int(keys[b]), value))
    return total, plan


def compare_stability(x, variants=cmp.ALL_VARIANTS, dtypes=cmp.DEFAULT_DTYPES,
                      temperature: float = 1.0, *, scheduler=None,
                      progress=None) -> cmp.Comparison:
    """:func:`smx_cli.analysis.compare.compare_stability` over the row blocks of dask ``x``.

    Examples
    --------
    >>> import dask.array as da
    >>> x = np.array([[1.0, 2.0, 3.0], [1000.0, 2000.0, 3000.0], [0.5, 0.25, 4.0]])
    >>> c = compare_stability(da.from_array(x, chunks=(1, -1)), ["naive", "stable"],
    ...                       ["float16"], scheduler="synchronous")
    >>> one = cmp.compare_stability(x, ["naive", "stable"], ["float16"])
    >>> import json  # NaN == NaN in the worst row's output
    >>> json.dumps(c.to_dict()) == json.dumps(one.to_dict())
    True
    """
    import dask

    variants = cmp.check_names(variants, cmp.ALL_VARIANTS, "variants")
    dtypes = cmp.check_names(dtypes, tuple(cmp.FORMATS), "dtypes")
    if x.ndim != 2:
        raise SmxError(f"compare-stability takes (N, C) rows, got shape {x.shape}")
    if len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})  # each variant x format needs whole rows (emulated kernels)
    xd = x.to_delayed()[:, 0]
    starts = [int(s) for s in np.cumsum((0,) + x.chunks[0][:-1])]
    task = dask.delayed(_measure_block, pure=True)
    t = float(temperature)
    with run_mod.client_for(scheduler) as where:
        parts = run_mod.compute([task(xd[i], starts[i], variants, dtypes, t)
                                 for i in range(len(xd))], where, progress)
        reports, need = [], {}
        plans = {}
        for dt in dtypes:
            for v in variants:
                got = [p[(v, dt)] for p in parts]
                rep = _merge_reports([g[0] for g in got])
                total, plan = _median_plan([g[1] for g in got])
                plans[(v, dt)] = plan
                for _, key, value in plan:
                    if value is None:
                        need.setdefault((v, dt), set()).add(key)
                reports.append(rep)
        values = {}
        if need:
            second = run_mod.compute([task(xd[i], starts[i], variants, dtypes, t, need)
                                      for i in range(len(xd))], where)
            values = {k: np.sort(np.concatenate([s[k] for s in second])) for k in need}
    for rep in reports:
        plan = plans[(rep.variant, rep.dtype)]
        if not plan:
            continue
        picked = []
        for offset, key, value in plan:
            if value is None:
                vals = values[(rep.variant, rep.dtype)]
                value = vals[_keys(vals) == np.uint64(key)][offset]
            picked.append(value)
        rep.median_ulp = float(np.median(np.array(picked)))
    return cmp.Comparison(int(x.shape[0]), int(x.shape[1]), t, reports,
                          {dt: cmp.thresholds(dt) for dt in dtypes})
