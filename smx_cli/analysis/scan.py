"""One pass over (N, C) logits at a temperature: the sums calibration needs.

Everything :mod:`smx_cli.analysis.temperature` and
:mod:`smx_cli.analysis.calibration` need from the data comes from
:func:`scan`, one read of the rows in blocks (an in-memory array or an NPY
file, see :class:`Rows`), so memory does not grow with C and the number of
passes is counted. At inverse temperature ``beta`` a row's log-probabilities
are ``beta (z - m) - log s`` with ``m = max z`` and
``s = sum exp(beta (z - m))`` (so the top-label confidence is exactly
``1 / s``), and the NLL's derivatives in ``beta`` are

* ``d/dbeta  NLL_i = E_p[z] - z_y``       (the gradient),
* ``d2/dbeta2 NLL_i = Var_p[z]``           (the Hessian, >= 0: convex in beta),

both computed from the same exponentials as the NLL.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from smx_cli.core import kernels
from smx_cli.errors import SmxError

# input bytes per block read from a file or sliced from an array
BLOCK_BYTES = 16 << 20


@dataclass
class Rows:
    """(N, C) logits to read in row blocks: an array, or an NPY file's rows.

    ``blocks()`` yields ``(start, block)``; a block may be a reused buffer.
    ``select`` (a boolean mask of N rows, or None) keeps only some rows, as
    for ``--split``: every pass sees the kept rows in order.

    Examples
    --------
    >>> r = Rows.of(np.zeros((5, 2)))
    >>> [(s, b.shape) for s, b in r.blocks()]
    [(0, (5, 2))]
    """

    n: int
    c: int
    source: str
    dtype: np.dtype
    _blocks: Callable[[], Iterator[tuple[int, np.ndarray]]]
    select: np.ndarray | None = None
    probs: bool = False

    @classmethod
    def of(cls, x2, source: str = "logits") -> "Rows":
        x2 = np.asarray(x2)
        if x2.ndim != 2:
            raise SmxError(f"{source}: calibration takes N x C logits, got shape {x2.shape}")
        if x2.dtype.kind not in "fiu":
            raise SmxError(f"{source}: logits of dtype {x2.dtype} are not numbers")
        step = max(1, BLOCK_BYTES // max(1, x2.shape[1] * x2.itemsize))

        def gen():
            for s in range(0, x2.shape[0], step):
                yield s, x2[s:s + step]
        return cls(x2.shape[0], x2.shape[1], source, x2.dtype, gen)

    @classmethod
    def npy(cls, path: str) -> "Rows":
        from smx_cli.io import stream

        try:
            shape, dtype = stream.npy_info(path)
        except (stream.StreamError, OSError) as exc:
            raise SmxError(f"{path}: {exc}") from None
        if len(shape) != 2:
            raise SmxError(f"{path}: calibration takes N x C logits, got shape {tuple(shape)}")
        if dtype.kind not in "fiu" or dtype.itemsize > 8:
            raise SmxError(f"{path}: logits of dtype {dtype} are not numbers smx can read")

        def gen():
            try:
                for s, _, xb in stream.iter_npy_blocks(path, block_bytes=BLOCK_BYTES):
                    if xb.shape[0]:
                        yield s, xb
            except stream.StreamError as exc:
                raise SmxError(str(exc)) from None
        return cls(int(shape[0]), int(shape[1]), path, dtype.newbyteorder("="), gen)

    def with_select(self, select: np.ndarray | None) -> "Rows":
        return Rows(self.n, self.c, self.source, self.dtype, self._blocks, select, self.probs)

    def as_probs(self) -> "Rows":
        """The same rows read as probabilities: each block's log is the logits."""
        return Rows(self.n, self.c, self.source, self.dtype, self._blocks, self.select, True)

    @property
    def rows(self) -> int:
        """The rows a pass sees (N, or the selected count)."""
        return self.n if self.select is None else int(self.select.sum())

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        for s, xb in self._blocks():
            if self.probs:
                xb = np.asarray(xb, dtype=np.float64)
                if xb.size and not (xb.min() >= 0 and xb.max() <= 1):
                    i, j = np.argwhere(~((xb >= 0) & (xb <= 1)))[0]
                    raise SmxError(f"{self.source}: row {s + i}, class {j} is "
                                   f"{float(xb[i, j])!r}: not a probability in [0, 1]")
                with np.errstate(divide="ignore"):
                    xb = np.log(xb)
            yield s, xb


@dataclass
class Scan:
    """What one pass over the rows found at inverse temperature ``beta``.

    Sums are over the rows seen; ``conf``/``correct`` hold one entry per row
    (top-label confidence and whether the argmax is the label), ``cw_*``
    the class-wise reliability bins (C x M: counts, sum of p, positives)
    when asked for.
    """

    beta: float
    rows: int
    nll: float
    grad: float
    hess: float
    brier: float = math.nan
    conf: np.ndarray | None = None
    correct: np.ndarray | None = None
    cw_count: np.ndarray | None = None
    cw_psum: np.ndarray | None = None
    cw_pos: np.ndarray | None = None
    top: int = 0          # rows whose label has the largest logit (ties included)
    passes: int = 1
    sample: np.ndarray | None = field(default=None, repr=False)
    sample_labels: np.ndarray | None = field(default=None, repr=False)


def _widen(xb: np.ndarray) -> np.ndarray:
    if xb.dtype.kind == "f" and xb.dtype.itemsize >= 2 and xb.dtype.name != "bfloat16":
        return xb
    return xb.astype(np.float64)


def _bad_row(xb, r, start, source):
    row = np.asarray(xb[r], dtype=np.float64)
    bad = np.flatnonzero(np.isnan(row) | (row == np.inf))
    if bad.size:
        j = int(bad[0])
        what = "NaN" if np.isnan(row[j]) else "inf"
        return SmxError(f"{source}: row {start + r}, class {j} is {what}; calibration needs "
                        "finite logits (-inf, a class with probability 0, is allowed)")
    return SmxError(f"{source}: row {start + r} is all -inf: no class has any probability")


class _Acc:
    """Thread-shared running sums (a lock per add: called a few times per block)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.parts: dict[str, list[float]] = {"nll": [], "grad": [], "hess": [], "brier": [],
                                              "top": []}
        self.cw: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, **sums):
        with self.lock:
            for k, v in sums.items():
                self.parts[k].append(v)

    def total(self, k):
        return math.fsum(self.parts[k]) if self.parts[k] else 0.0


def _block(xb, y, beta, out_conf, out_correct, acc, bins_edges, start, source, metrics,
           derivs):
    """The sums of one block of rows (called on worker threads, disjoint rows)."""
    xb = _widen(xb)
    r, c = xb.shape
    m = xb.max(axis=1)
    if not np.isfinite(m).all():
        raise _bad_row(xb, int(np.flatnonzero(~np.isfinite(m))[0]), start, source)
    d = kernels.work("cal_d", (r, c))
    np.subtract(xb, m[:, None], out=d, dtype=np.float64)  # exact for 32-bit input
    e = kernels.work("cal_e", (r, c))
    if beta == 1.0:
        np.exp(d, out=e)
    else:
        np.multiply(d, beta, out=e)
        np.exp(e, out=e)
    s = e.sum(axis=1)
    rows = np.arange(r)
    dy = d[rows, y]
    if not np.isfinite(dy).all():
        i = int(np.flatnonzero(~np.isfinite(dy))[0])
        raise SmxError(f"{source}: row {start + i}: the true class {int(y[i])} has logit -inf "
                       "(probability 0 at every temperature): the NLL is infinite")
    logs = np.log(s)
    sums = {"nll": float(np.sum(logs - beta * dy)), "top": float(np.count_nonzero(dy == 0))}
    if derivs:
        ed = kernels.work("cal_ed", (r, c))
        np.multiply(e, d, out=ed)
        e1 = ed.sum(axis=1)
        e2 = np.einsum("ij,ij->i", ed, d)
        if not (np.isfinite(e1).all() and np.isfinite(e2).all()):
            # a -inf logit: exp gives 0 but 0 * -inf is NaN; those terms are 0
            dd = np.where(e == 0, 0.0, d)
            np.multiply(e, dd, out=ed)
            e1 = ed.sum(axis=1)
            e2 = np.einsum("ij,ij->i", ed, dd)
        mu = e1 / s
        var = np.maximum(e2 / s - mu * mu, 0.0)
        sums["grad"] = float(np.sum(mu - dy))
        sums["hess"] = float(np.sum(var))
    if metrics:
        inv = 1.0 / s
        out_conf[:] = inv
        out_correct[:] = np.argmax(xb, axis=1) == y
        sq = np.einsum("ij,ij->i", e, e) * inv * inv
        py = np.exp(beta * dy) * inv
        sums["brier"] = float(np.sum(sq - 2.0 * py + 1.0))
        if bins_edges is not None:
            np.multiply(e, inv[:, None], out=e)  # e is now p
            colsum = e.sum(axis=0)
            m_bins = len(bins_edges) - 1
            # entries above the first bin: at most M per row (they sum to 1)
            ii, kk = np.nonzero(e > bins_edges[1] * (1 - 1e-12))
            pv = e[ii, kk]
            b = np.clip(np.searchsorted(bins_edges, pv, side="left") - 1, 0, m_bins - 1)
            hi = b > 0
            ii, kk, pv, b = ii[hi], kk[hi], pv[hi], b[hi]
            pos = (y[ii] == kk).astype(np.float64)
            acc_cw = (colsum, kk * m_bins + b, pv, pos)
            with acc.lock:
                acc.cw.append(acc_cw)
    acc.add(**sums)


def scan(data: Rows, labels: np.ndarray, beta: float = 1.0, *, metrics: bool = True,
         derivs: bool = True, bins: int | None = 15, sample_rows: int = 0,
         transform: Callable[[np.ndarray], np.ndarray] | None = None,
         threads: int | None = None, check_probs: bool = False) -> Scan:
    """One pass over ``data`` at inverse temperature ``beta``.

    Parameters
    ----------
    data : Rows
        The logits (N, C), in blocks; ``data.select`` keeps some rows.
    labels : ndarray of int64, shape (N,)
        Validated class indices (all N rows, also with a selection).
    beta : float
        Inverse temperature, > 0.
    metrics : bool
        Keep each row's confidence and correctness, the Brier sum and (with
        ``bins``) the class-wise bins.
    derivs : bool
        Sum the NLL's first and second derivatives in beta.
    bins : int or None
        Class-wise bins (equal width, edges (lo, hi]); None: none.
    sample_rows : int
        Also keep about this many evenly spaced rows (float64) and their
        labels, e.g. to start a fit in memory.
    transform : callable or None
        Applied to each float64 block first (vector scaling's a z + b).
    check_probs : bool
        Refuse input whose every row is non-negative and sums to 1 (it
        looks like probabilities given as logits).

    Examples
    --------
    >>> x = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> s = scan(Rows.of(x), np.array([0, 0]))
    >>> round(s.nll, 6), s.correct.tolist()
    (1.44019, [True, False])
    """
    n_seen = data.rows
    labels = np.asarray(labels)
    conf = np.empty(n_seen) if metrics else None
    correct = np.empty(n_seen, dtype=bool) if metrics else None
    edges = np.linspace(0.0, 1.0, bins + 1) if (metrics and bins) else None
    acc = _Acc()
    stride = max(1, n_seen // sample_rows) if sample_rows else 0
    samples, sample_y = [], []
    looks_like_probs = check_probs
    pos = 0  # rows seen so far
    for start, xb in data.blocks():
        yb = labels[start:start + xb.shape[0]]
        if data.select is not None:
            keep = data.select[start:start + xb.shape[0]]
            xb, yb = xb[keep], yb[keep]
            offsets = start + np.flatnonzero(keep)
        else:
            offsets = None
        if not xb.shape[0]:
            continue
        if looks_like_probs:
            looks_like_probs = _all_prob_rows(xb)
        if transform is not None:
            xb = transform(np.asarray(xb, dtype=np.float64))
        if stride:
            take = np.arange((-pos) % stride, xb.shape[0], stride)
            samples.append(np.asarray(xb[take], dtype=np.float64))
            sample_y.append(yb[take])
        base = pos

        def fn(s0, s1, xb=xb, yb=yb, base=base, start=start, offsets=offsets):
            first = start + s0 if offsets is None else int(offsets[s0])
            _block(xb[s0:s1], yb[s0:s1], beta,
                   conf[base + s0:base + s1] if metrics else None,
                   correct[base + s0:base + s1] if metrics else None,
                   acc, edges, first, data.source, metrics, derivs)
        kernels.run_blocks(xb.shape[0], xb.shape[1], fn, threads=threads)
        pos += xb.shape[0]
    if pos != n_seen:
        raise SmxError(f"{data.source}: read {pos} rows, expected {n_seen}")
    if check_probs and looks_like_probs and n_seen:
        raise SmxError(f"{data.source}: every row is >= 0 and sums to 1: these look like "
                       "probabilities, not logits; pass --input-kind probs "
                       "(input_kind='probs')")
    res = Scan(beta, n_seen, acc.total("nll"), acc.total("grad"), acc.total("hess"),
               acc.total("brier") if metrics else math.nan, conf, correct,
               top=int(acc.total("top")))
    if edges is not None:
        res.cw_count, res.cw_psum, res.cw_pos = _classwise(acc.cw, labels, data, bins)
    if stride:
        res.sample = np.concatenate(samples) if samples else np.zeros((0, data.c))
        res.sample_labels = np.concatenate(sample_y) if sample_y else np.zeros(0, np.int64)
    return res


def _all_prob_rows(xb) -> bool:
    x = np.asarray(xb, dtype=np.float64)
    return bool(x.min() >= 0) and bool(np.all(np.abs(x.sum(axis=1) - 1.0) <= 1e-3))


def _classwise(parts, labels, data: Rows, m_bins: int):
    """C x M class-wise bins; the first bin (0, 1/M] by difference from the totals.

    Every probability above 1/M was binned entry by entry; those at or
    below 1/M (nearly all of them when C is large) are counted as the
    column totals minus the others.
    """
    c = data.c
    y = labels if data.select is None else labels[data.select]
    colsum = np.zeros(c)
    count = np.zeros(c * m_bins)
    psum = np.zeros(c * m_bins)
    pos = np.zeros(c * m_bins)
    for cs, idx, pv, pz in parts:
        colsum += cs
        count += np.bincount(idx, minlength=c * m_bins)
        psum += np.bincount(idx, weights=pv, minlength=c * m_bins)
        pos += np.bincount(idx, weights=pz, minlength=c * m_bins)
    count, psum, pos = (a.reshape(c, m_bins) for a in (count, psum, pos))
    n = len(y)
    npos = np.bincount(y, minlength=c).astype(np.float64)
    count[:, 0] = n - count[:, 1:].sum(axis=1)
    psum[:, 0] = np.maximum(colsum - psum[:, 1:].sum(axis=1), 0.0)
    pos[:, 0] = npos - pos[:, 1:].sum(axis=1)
    return count.astype(np.int64), psum, pos
