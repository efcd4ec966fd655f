"""Cross-entropy of (N, C) logits given in row blocks, in bounded memory.

Re-exported by :mod:`smx_cli.core.xent`; the streamed ``smx xent`` runs (big
NPY and safetensors files) go through it.
"""
from __future__ import annotations

import numpy as np

from smx_cli.core.result import check_class_weights
from smx_cli.core import xent as _xent  # evaluate looked up at call time (one patch point)
from smx_cli.core.xent import (XentResult, _reduce, check_options, check_probs, check_target,
                               evaluate)

_PER_SAMPLE = ("loss", "true_class", "predicted", "p_true", "margin", "correct", "ignored",
               "top5", "entropy", "one_minus_p_true", "nll", "residual")


def evaluate_blocks(blocks, n_rows: int, n_classes: int, target, *, weight=None,
                    ignore_index: int = -100, reduction: str = "mean",
                    label_smoothing: float = 0.0, input_kind: str = "logits",
                    threads: int | None = None, on_block=None) -> XentResult:
    """:func:`evaluate` over (N, C) logits given in row blocks, in bounded memory.

    ``blocks`` yields ``(start, block)`` with consecutive (rows, C) blocks
    covering rows 0..N-1 (e.g. from :func:`smx_cli.io.stream.iter_npy_blocks`;
    a block may be a reused buffer: nothing of it is kept). The target, the
    weights and the options are validated once, for all N rows, so errors
    name the row in the whole array. Every per-sample statistic is row-local,
    and the reduction and the mean's denominator are taken exactly over all
    N losses (:func:`exact_sum`), so the result equals ``evaluate`` on the
    whole array, value for value. Memory: the per-sample arrays (a few
    hundred bytes per row, O(N)), plus one block's work. No gradient.
    ``on_block(start, block)``, if given, is called with each block too
    (e.g. to count non-finite inputs).

    Examples
    --------
    >>> x = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    >>> r = evaluate_blocks(((s, x[s:s + 2]) for s in (0, 2)), 3, 2, [0, 0, 1])
    >>> r.reduced == evaluate(x, [0, 0, 1]).reduced
    True
    """
    check_options(reduction, label_smoothing, input_kind)
    if n_classes == 0:
        raise ValueError("the logits have no classes (0 columns)")
    kind, t = check_target(target, n_rows, n_classes, int(ignore_index))
    w = None if weight is None else check_class_weights(weight, n_classes)
    out = None
    done = 0
    for start, xb in blocks:
        xb = np.asarray(xb)
        if start != done or xb.ndim != 2 or xb.shape[1] != n_classes \
                or start + xb.shape[0] > n_rows:
            raise ValueError(f"block at row {start} of shape {xb.shape} does not continue "
                             f"rows 0..{done - 1} of an ({n_rows}, {n_classes}) array")
        if on_block is not None:
            on_block(start, xb)
        if input_kind == "probs":
            check_probs(xb, start)  # here: the error names the row in the whole array
        stop = start + xb.shape[0]
        part = _xent.evaluate(xb, t[start:stop], weight=w, ignore_index=ignore_index,
                        reduction="none", label_smoothing=label_smoothing,
                        input_kind=input_kind, threads=threads)
        if out is None:
            out = {f: np.empty(n_rows, dtype=getattr(part, f).dtype) for f in _PER_SAMPLE}
            engines = set()
        engines.add(part.engine)
        for f in _PER_SAMPLE:
            out[f][start:stop] = getattr(part, f)
        done = stop
    if done != n_rows:
        raise ValueError(f"the blocks covered {done} of {n_rows} rows")
    if out is None:  # no rows: the whole-array path's empty result
        return evaluate(np.zeros((0, n_classes)), t, weight=w, ignore_index=ignore_index,
                        reduction=reduction, label_smoothing=label_smoothing,
                        input_kind=input_kind)
    denominator, reduced = _reduce(out["loss"], out["ignored"], out["true_class"], kind, w,
                                   reduction)
    # one engine per run (blocks share a dtype); if they differ, say so
    engine = engines.pop() if len(engines) == 1 else "+".join(sorted(engines))
    return XentResult(reduction=reduction, target_kind=kind, reduced=reduced, grad=None,
                      denominator=denominator, engine=engine, **out)
