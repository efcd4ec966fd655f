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
* the 3rd and 4th derivatives: the 3rd and 4th cumulants of z under p,

all computed from the same exponentials as the NLL. A pass can take the
metrics at one beta and the derivatives at another (one exp more per
element), so a fit's first pass also gives every "before" number.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from smx_cli.core import kernels
from smx_cli.errors import SmxError

# input bytes per block read from a file or sliced from an array
BLOCK_BYTES = 16 << 20
# elements per work block on a thread (2 MB of float64 per buffer)
SUB_BLOCK = 1 << 18


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
    _take: Callable[[np.ndarray], np.ndarray] | None = None
    ids: tuple | None = None   # row ids (--id-column), named in the error messages

    @classmethod
    def of(cls, x2, source: str = "logits", ids=None) -> "Rows":
        x2 = np.asarray(x2)
        if x2.ndim != 2:
            raise SmxError(f"{source}: calibration takes N x C logits, got shape {x2.shape}")
        if x2.dtype.kind not in "fiu":
            raise SmxError(f"{source}: logits of dtype {x2.dtype} are not numbers")
        step = max(1, BLOCK_BYTES // max(1, x2.shape[1] * x2.itemsize))

        def gen():
            for s in range(0, x2.shape[0], step):
                yield s, x2[s:s + step]
        return cls(x2.shape[0], x2.shape[1], source, x2.dtype, gen, _take=lambda i: x2[i],
                   ids=None if ids is None else tuple(ids))

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
        def take(idx):
            return _read_rows(path, idx)
        return cls(int(shape[0]), int(shape[1]), path, dtype.newbyteorder("="), gen,
                   _take=take)

    def with_select(self, select: np.ndarray | None) -> "Rows":
        return Rows(self.n, self.c, self.source, self.dtype, self._blocks, select, self.probs,
                    self._take, self.ids)

    def as_probs(self) -> "Rows":
        """The same rows read as probabilities: each block's log is the logits."""
        return Rows(self.n, self.c, self.source, self.dtype, self._blocks, self.select, True,
                    self._take, self.ids)

    def sample(self, labels: np.ndarray, max_elements: int) -> tuple[np.ndarray, np.ndarray]:
        """Evenly spaced rows (of the selection) and their labels (at most ``max_elements``)."""
        idx = np.arange(self.n) if self.select is None else np.flatnonzero(self.select)
        k = max(1, min(len(idx), max_elements // max(1, self.c)))
        idx = idx[np.linspace(0, len(idx) - 1, k).round().astype(np.int64)] if len(idx) else idx
        idx = np.unique(idx)
        x = np.asarray(self._take(idx))   # in the input's format: widened block by block
        if self.probs:
            with np.errstate(divide="ignore"):
                x = np.log(np.asarray(x, dtype=np.float64))
        return x, np.asarray(labels)[idx]

    def where(self, i: int) -> str:
        """``SOURCE: row i`` for messages, with the row's id when there are ids.

        Examples
        --------
        >>> Rows.of(np.zeros((2, 3)), "x.csv", ids=["a", "b"]).where(1)
        "x.csv: row 1 (id 'b')"
        """
        name = f"{self.source}: row {i}"
        return name if self.ids is None else f"{name} (id {self.ids[i]!r})"

    @property
    def rows(self) -> int:
        """The rows a pass sees (N, or the selected count)."""
        return self.n if self.select is None else int(self.select.sum())

    def raw_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """All N rows' blocks as stored (no selection, no log of probabilities)."""
        return self._blocks()

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        for s, xb in self._blocks():
            if self.probs:
                xb = np.asarray(xb, dtype=np.float64)
                if xb.size and not (xb.min() >= 0 and xb.max() <= 1):
                    i, j = np.argwhere(~((xb >= 0) & (xb <= 1)))[0]
                    raise SmxError(f"{self.where(s + i)}, class {j} is "
                                   f"{float(xb[i, j])!r}: not a probability in [0, 1]")
                with np.errstate(divide="ignore"):
                    xb = np.log(xb)
            yield s, xb


def _read_rows(path: str, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (sorted) of a 2-D NPY file, read one by one.

    Not a memory map: the kernel maps pages around each one touched, so a
    strided read through a map would count most of the file in the RSS.
    """
    from smx_cli.io import stream

    with open(path, "rb") as fh:
        shape, dtype, fortran = stream.read_npy_header(fh)
        start = fh.tell()
        c = int(shape[1])
        out = np.empty((len(idx), c), dtype=dtype)
        if fortran:  # column-major: gather from a pass over the blocks
            want = np.zeros(int(shape[0]), dtype=bool)
            want[idx] = True
            k = 0
            for s0, _, xb in stream.iter_npy_blocks(path, block_bytes=BLOCK_BYTES):
                sel = xb[want[s0:s0 + len(xb)]]
                out[k:k + len(sel)] = sel
                k += len(sel)
            return out
        row_bytes = c * dtype.itemsize
        for j, i in enumerate(idx):
            fh.seek(start + int(i) * row_bytes)
            if fh.readinto(memoryview(out[j]).cast("B")) != row_bytes:
                raise SmxError(f"{path}: the data ends early (row {int(i)})")
    return out.astype(dtype.newbyteorder("="), copy=False)


@dataclass
class Scan:
    """What one pass over the rows found at inverse temperature ``beta``.

    Sums are over the rows seen; ``conf``/``correct`` hold one entry per row
    (top-label confidence and whether the argmax is the label), ``cw_*``
    the class-wise reliability bins (C x M: counts, sum of p, positives)
    when asked for.
    """

    beta: float
    dbeta: float
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
    k3: float = 0.0       # sums of the NLL's 3rd and 4th derivatives in beta
    k4: float = 0.0
    dnll: float = 0.0     # the NLL sum at dbeta
    passes: int = 1


def _widen(xb: np.ndarray) -> np.ndarray:
    if xb.dtype.kind == "f" and xb.dtype.itemsize >= 2 and xb.dtype.name != "bfloat16":
        return xb
    return xb.astype(np.float64)


def _bad_row(xb, r, where):
    row = np.asarray(xb[r], dtype=np.float64)
    bad = np.flatnonzero(np.isnan(row) | (row == np.inf))
    if bad.size:
        j = int(bad[0])
        what = "NaN" if np.isnan(row[j]) else "inf"
        return SmxError(f"{where(r)}, class {j} is {what}; calibration needs "
                        "finite logits (-inf, a class with probability 0, is allowed)")
    return SmxError(f"{where(r)} is all -inf: no class has any probability")


class _Acc:
    """Thread-shared running sums (a lock per add: called a few times per block)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.parts: dict[str, list[float]] = {k: [] for k in (
            "nll", "dnll", "grad", "hess", "k3", "k4", "brier", "top")}

    def classwise(self, c: int, m_bins: int) -> None:
        self.colsum = np.zeros(c)
        self.count = np.zeros(c * m_bins, dtype=np.int64)
        self.psum = np.zeros(c * m_bins)
        self.pos = np.zeros(c * m_bins)

    def add(self, **sums):
        with self.lock:
            for k, v in sums.items():
                self.parts[k].append(v)

    def total(self, k):
        return math.fsum(self.parts[k]) if self.parts[k] else 0.0


def _moments(e, d, s, dy, sums, order: int) -> None:
    """Sums over rows of the NLL's derivatives in beta, up to ``order`` (2 or 4).

    With p = e / s the row's softmax at beta, the derivatives of
    log sum exp(beta d) are the cumulants of d under p; the NLL subtracts
    beta d_y, so its gradient is E[d] - d_y and its higher derivatives the
    2nd, 3rd and 4th cumulants (from the raw moments about the row's max).
    May zero entries of ``d`` whose weight ``e`` is 0.
    """
    ms = _raw_moments(e, d, order)
    if not all(np.isfinite(m).all() for m in ms):
        # a -inf logit, or |d|^k overflowing where exp(beta d) is 0: 0 * inf is NaN,
        # and those terms are 0
        np.copyto(d, 0.0, where=e == 0)
        ms = _raw_moments(e, d, order)
    inv = 1.0 / s
    m1, m2 = ms[0] * inv, ms[1] * inv
    sums["grad"] = float(np.sum(m1 - dy))
    sums["hess"] = float(np.sum(np.maximum(m2 - m1 * m1, 0.0)))
    if order > 2:
        m3, m4 = ms[2] * inv, ms[3] * inv
        sums["k3"] = float(np.sum(m3 - 3 * m1 * m2 + 2 * m1 ** 3))
        sums["k4"] = float(np.sum(m4 - 4 * m1 * m3 - 3 * m2 * m2 + 12 * m1 * m1 * m2
                                  - 6 * m1 ** 4))


def _raw_moments(e, d, order):
    """Row sums of e d^k, k = 1..order (2 or 4); leaves d unchanged."""
    ed = kernels.work("cal_ed", d.shape)
    np.multiply(e, d, out=ed)
    m1 = ed.sum(axis=1)
    if order <= 2:
        return m1, np.einsum("ij,ij->i", ed, d)
    np.multiply(ed, d, out=ed)                       # e d^2
    m2 = ed.sum(axis=1)
    m3 = np.einsum("ij,ij->i", ed, d)
    np.multiply(ed, d, out=ed)                       # e d^3
    m4 = np.einsum("ij,ij->i", ed, d)
    return m1, m2, m3, m4


def _exp_scaled(d, beta, name):
    e = kernels.work(name, d.shape)
    if beta == 1.0:
        np.exp(d, out=e)
    else:
        np.multiply(d, beta, out=e)
        np.exp(e, out=e)
    return e, e.sum(axis=1)


def _block(xb, y, beta, dbeta, out_conf, out_correct, acc, bins_edges, where, metrics,
           order):
    """The sums of one block of rows (called on worker threads, disjoint rows).

    ``where(r)`` names the block's row r in messages (``SOURCE: row i (id ...)``).

    Metrics and the NLL at ``beta``; derivatives (``order`` 0, 2 or 4) at
    ``dbeta``, from the same shifted logits (one exp more if it differs).
    """
    xb = _widen(xb)
    r, c = xb.shape
    m = xb.max(axis=1)
    if not np.isfinite(m).all():
        raise _bad_row(xb, int(np.flatnonzero(~np.isfinite(m))[0]), where)
    d = kernels.work("cal_d", (r, c))
    np.copyto(d, xb)                                   # exact widening, then
    np.subtract(d, m[:, None], out=d)                  # exact for 32-bit input
    e, s = _exp_scaled(d, beta, "cal_e")
    dy = d[np.arange(r), y]
    if not np.isfinite(dy).all():
        i = int(np.flatnonzero(~np.isfinite(dy))[0])
        raise SmxError(f"{where(i)}: the true class {int(y[i])} has logit -inf "
                       "(probability 0 at every temperature): the NLL is infinite")
    sums = {"nll": float(np.sum(np.log(s) - beta * dy)),
            "top": float(np.count_nonzero(dy == 0))}
    if order:
        if dbeta == beta:
            _moments(e, d, s, dy, sums, order)
        else:
            e2, s2 = _exp_scaled(d, dbeta, "cal_e2")
            sums["dnll"] = float(np.sum(np.log(s2) - dbeta * dy))
            _moments(e2, d, s2, dy, sums, order)
    if metrics:
        inv = 1.0 / s
        out_conf[:] = inv
        out_correct[:] = np.argmax(xb, axis=1) == y
        sq = np.einsum("ij,ij->i", e, e) * inv * inv
        py = np.exp(beta * dy) * inv
        sums["brier"] = float(np.sum(sq - 2.0 * py + 1.0))
        if bins_edges is not None:
            _classwise_block(e, inv, y, bins_edges, acc)
    acc.add(**sums)


def _classwise_block(e, inv, y, edges, acc) -> None:
    """Class-wise bins of one block: the entries above 1/M one by one, and column sums."""
    colsum = inv @ e                     # sum_i p_ij as one matrix-vector product
    m_bins = len(edges) - 1
    c = e.shape[1]
    # entries above the first bin: at most M per row (they sum to 1)
    thr = (edges[1] * (1 - 1e-12)) / inv
    flat = np.flatnonzero(e > thr[:, None])
    ii, kk = np.divmod(flat, c)
    pv = e.ravel()[flat] * inv[ii]
    b = np.clip(np.searchsorted(edges, pv, side="left") - 1, 0, m_bins - 1)
    hi = b > 0
    ii, kk, pv, b = ii[hi], kk[hi], pv[hi], b[hi]
    pos = (y[ii] == kk).astype(np.float64)
    idx = kk * m_bins + b
    with acc.lock:
        acc.colsum += colsum
        acc.count += np.bincount(idx, minlength=c * m_bins)
        acc.psum += np.bincount(idx, weights=pv, minlength=c * m_bins)
        acc.pos += np.bincount(idx, weights=pos, minlength=c * m_bins)


def scan(data: Rows, labels: np.ndarray, beta: float = 1.0, *, metrics: bool = True,
         derivs: bool | int = True, dbeta: float | None = None, bins: int | None = 15,
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
    derivs : bool or int
        Sum the NLL's derivatives in beta: up to the 4th (True or 4), the
        2nd (2), or none (False).
    dbeta : float or None
        The beta of the derivatives (default ``beta``); the pass then also
        gives the NLL at ``dbeta`` (``Scan.dnll``).
    bins : int or None
        Class-wise bins (equal width, edges (lo, hi]); None: none.
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
    order = 4 if derivs is True else int(derivs)
    dbeta = beta if dbeta is None else dbeta
    if edges is not None:
        acc.classwise(data.c, bins)
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
        base = pos

        def fn(s0, s1, xb=xb, yb=yb, base=base, start=start, offsets=offsets):
            def where(r):  # the input's row index of the sub-block's row r (kept rows only)
                return data.where(start + s0 + r if offsets is None else int(offsets[s0 + r]))
            _block(xb[s0:s1], yb[s0:s1], beta, dbeta,
                   conf[base + s0:base + s1] if metrics else None,
                   correct[base + s0:base + s1] if metrics else None,
                   acc, edges, where, metrics, order)
        with np.errstate(all="ignore"):  # 0 * inf where exp underflows: handled per block
            kernels.run_blocks(xb.shape[0], xb.shape[1], fn, threads=threads,
                               block_elements=SUB_BLOCK)
        pos += xb.shape[0]
    if pos != n_seen:
        raise SmxError(f"{data.source}: read {pos} rows, expected {n_seen}")
    if check_probs and looks_like_probs and n_seen:
        raise SmxError(f"{data.source}: every row is >= 0 and sums to 1: these look like "
                       "probabilities, not logits; pass --input-kind probs "
                       "(input_kind='probs')")
    res = Scan(beta, dbeta, n_seen, acc.total("nll"), acc.total("grad"), acc.total("hess"),
               acc.total("brier") if metrics else math.nan, conf, correct,
               top=int(acc.total("top")), k3=acc.total("k3"), k4=acc.total("k4"),
               dnll=acc.total("dnll") if dbeta != beta else acc.total("nll"))
    if edges is not None:
        res.cw_count, res.cw_psum, res.cw_pos = _classwise(acc, labels, data, bins)
    return res


def _all_prob_rows(xb) -> bool:
    x = np.asarray(xb, dtype=np.float64)
    return bool(x.min() >= 0) and bool(np.all(np.abs(x.sum(axis=1) - 1.0) <= 1e-3))


def _classwise(acc: _Acc, labels, data: Rows, m_bins: int):
    """C x M class-wise bins; the first bin (0, 1/M] by difference from the totals.

    Every probability above 1/M was binned entry by entry; those at or
    below 1/M (nearly all of them when C is large) are counted as the
    column totals minus the others.
    """
    c = data.c
    y = labels if data.select is None else labels[data.select]
    count, psum, pos = (a.reshape(c, m_bins).copy() for a in (acc.count, acc.psum, acc.pos))
    n = len(y)
    npos = np.bincount(y, minlength=c).astype(np.float64)
    count[:, 0] = n - count[:, 1:].sum(axis=1)
    psum[:, 0] = np.maximum(acc.colsum - psum[:, 1:].sum(axis=1), 0.0)
    pos[:, 0] = npos - pos[:, 1:].sum(axis=1)
    return count, psum, pos
