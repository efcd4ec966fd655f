"""What ``smx softmax`` reports, computed over every chunk of a dask array.

One task per row block computes the variant with smx's kernels, counts its
diagnostics in an :class:`~smx_cli.analysis.diagnostics.Accumulator` and
keeps the first rows for the table; the client merges the accumulators
(counts and argmax histograms summed, bit-exact; extrema and the largest
|sum - 1| by max) into the same :class:`SoftmaxDiagnostics` one
:func:`~smx_cli.analysis.diagnostics.diagnose` call on the whole array gives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smx_cli.analysis.diagnostics import Accumulator, SoftmaxDiagnostics
from smx_cli.core import registry
from smx_cli.core.result import KernelStats, SoftmaxResult
from smx_cli.dask import ops, run as run_mod, store as store_mod


def merge_accumulators(parts) -> Accumulator:
    """One Accumulator holding every part's counts (the parts in row order).

    Examples
    --------
    >>> from smx_cli.core.softmax import compute
    >>> from smx_cli.analysis.diagnostics import diagnose
    >>> x = np.array([[1.0, 2.0], [np.nan, 0.0], [5.0, -np.inf]])
    >>> parts = []
    >>> r = compute(x)
    >>> for i in range(3):
    ...     acc = Accumulator("stable", r.fmt, "prob", False, engine=r.engine)
    ...     acc.add(x[i:i + 1], compute(x[i:i + 1]).values)
    ...     parts.append(acc)
    >>> merge_accumulators(parts).result() == diagnose(x, compute(x))
    True
    """
    parts = list(parts)
    out = Accumulator(parts[0].variant, parts[0].fmt, parts[0].kind, parts[0].emulated,
                      parts[0].sparse, getattr(parts[0], "temperature", 1.0), parts[0].engine)
    for p in parts:
        # the named rows (NaN outputs, NaN/+inf inputs) are indices into the part
        out.nan_index.extend(out.rows + i for i in p.nan_index)
        out.bad_input_index.extend(out.rows + i for i in p.bad_input_index)
        out.rows += p.rows
        out.classes = max(out.classes, p.classes)
        for k, v in p.counts.items():
            out.counts[k] += v
        out.max_err = max(out.max_err, p.max_err)
        out.vmin = min(out.vmin, p.vmin)
        out.vmax = max(out.vmax, p.vmax)
        if p.argmax is not None:
            out.argmax = p.argmax.copy() if out.argmax is None else out.argmax + p.argmax
        out.stats.add(p.stats)
    return out


@dataclass
class SoftmaxReport:
    """The merged diagnostics and the first rows, for the terminal report."""

    diagnostics: SoftmaxDiagnostics
    head_logits: np.ndarray
    head_values: np.ndarray
    head_result: SoftmaxResult
    support: np.ndarray | None
    shape: tuple[int, int]


def _block_part(xb, variant, temperature, dtype, masked, fast, options, start, head_rows,
                values=None):
    """Diagnostics of one row block (and its first rows when it starts the array)."""
    xb = np.asarray(xb)
    sparse = registry.exact_zeros(variant, options)
    if values is None:
        vr = ops.run_block(xb, variant, temperature, dtype, masked, fast, options, (start,))
        res, logits, support = vr.result, vr.logits, vr.support
    else:
        fmt = ops.result_format(values.dtype)
        res = SoftmaxResult(np.asarray(values), ops._kind(variant), fmt, False, variant,
                            float(temperature), KernelStats())
        logits, support = xb, None
    acc = Accumulator(variant, res.fmt, res.kind, res.emulated, sparse, engine=res.engine)
    acc.add(logits, res.values, res.stats)
    take = max(0, min(head_rows - start, len(xb)))
    head = (np.array(logits[:take]), np.array(res.values[:take]), res) if take else None
    return acc, head, support, res.values


def softmax_report(x, variant: str = "stable", temperature: float = 1.0,
                   dtype: str | None = None, masked: str = "nan", *, fast: bool = False,
                   options=None, head_rows: int = 20, output: str | None = None,
                   scheduler=None, progress=None) -> SoftmaxReport:
    """Compute a variant over every chunk of ``x``: diagnostics, first rows, optional Zarr output.

    ``output`` names a Zarr store written atomically (see :mod:`smx_cli.dask.store`).

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.array([[1000.0, 2000.0, 3000.0], [1.0, 2.0, 3.0]]), chunks=(1, -1))
    >>> r = softmax_report(x, "naive", scheduler="synchronous")
    >>> r.diagnostics.exp_overflow, r.head_values.shape
    (3, (2, 3))
    """
    import dask
    import dask.array as da

    ops._check(x, variant, temperature, masked, options)
    split = not ops.rows_whole(x)
    values = ops.compute(x, variant, temperature, dtype, masked, fast=fast, options=options) \
        if split else None
    xd = x.to_delayed() if not split else x.rechunk({1: -1}).to_delayed()
    yd = values.rechunk({1: -1}).to_delayed() if split else None
    starts = np.cumsum((0,) + x.chunks[0][:-1])
    part = dask.delayed(_block_part, pure=True, nout=4)
    parts = [part(xd[i, 0], variant, temperature, dtype, masked, fast, options, int(starts[i]),
                  head_rows, yd[i, 0] if split else None) for i in range(len(x.chunks[0]))]
    tasks = [[p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts]]
    out_dtype = ops.output_dtype(x.dtype, dtype)
    with run_mod.client_for(scheduler) as where:
        if output:
            if values is None:
                values = da.concatenate([da.from_delayed(p[3], (n, x.shape[1]), out_dtype)
                                         for p, n in zip(parts, x.chunks[0])])
                values = values.rechunk((x.chunks[0][0] if x.chunks[0] else 1, -1))
            with store_mod.atomic_store(output) as tmp:
                writer = da.to_zarr(store_mod.storable(values), tmp, compute=False)
                accs, heads, supports, _ = run_mod.compute(tasks + [writer], where, progress)
        else:
            accs, heads, supports = run_mod.compute(tasks, where, progress)
    diag = merge_accumulators(accs).result() if accs else None
    heads = [h for h in heads if h is not None]
    if heads:
        head_x = np.concatenate([h[0] for h in heads])
        head_y = np.concatenate([h[1] for h in heads])
        head_res = heads[0][2]
    else:
        head_x = head_y = np.zeros((0, x.shape[1]))
        head_res = None
    sup = [s for s in supports if s is not None]
    return SoftmaxReport(diag, head_x, head_y, head_res, np.concatenate(sup) if sup else None,
                         tuple(x.shape))
