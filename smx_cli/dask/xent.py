"""Cross-entropy over dask arrays: per-block :func:`smx_cli.core.xent.evaluate`, exact merges.

Each row block is evaluated with the single-machine function (PyTorch's
semantics, every option) and reduced to an :class:`XentPart`: counts
(summed exactly, as integers) and the exact sums of the losses, the plain
NLL, the entropies and the mean's denominator as :class:`ExactSum`
expansions, which merge without rounding. So the reduced loss, accuracy,
perplexity and every count of :class:`XentSummary` equal those of
``evaluate`` on the whole array bit for bit, whatever the chunking.
The rows of a chunk must be whole (xent's statistics are row-wise: argmax,
top-5, margin); a split class axis is refused with the fix, not rechunked.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field, fields

import numpy as np

from smx_cli.analysis.diagnostics import InputCounts, count_inputs
from smx_cli.core import xent as core_xent
from smx_cli.core.result import check_class_weights
from smx_cli.dask import run as run_mod
from smx_cli.dask.exact import ExactSum
from smx_cli.dask.sources import npy_reader
from smx_cli.errors import SmxError


@dataclass
class XentPart:
    """The mergeable summary of some rows."""

    samples: int = 0
    counted: int = 0
    correct: int = 0
    top5: int = 0
    ignored: int = 0
    nonfinite: int = 0
    vanished: int = 0
    loss: ExactSum = field(default_factory=ExactSum)
    nll: ExactSum = field(default_factory=ExactSum)
    entropy: ExactSum = field(default_factory=ExactSum)
    denominator: ExactSum = field(default_factory=ExactSum)
    inputs: InputCounts | None = None
    # the first few rows with a NaN/inf loss, in row order (the panel names them)
    nonfinite_rows: tuple = ()
    # what computed the blocks ("numpy", "native-avx512", ...), each named once
    engines: tuple = ()

    def __add__(self, other: "XentPart") -> "XentPart":
        out = XentPart()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "inputs":
                out.inputs = _add_counts(a, b)
            elif f.name == "nonfinite_rows":
                out.nonfinite_rows = tuple(sorted(a + b))[:NAMED_ROWS]
            elif f.name == "engines":
                out.engines = tuple(sorted(set(a) | set(b)))
            else:
                setattr(out, f.name, a + b)
        return out


def _add_counts(a, b):
    if a is None or b is None:
        return a if b is None else b
    return InputCounts(**{f.name: (getattr(a, f.name) + getattr(b, f.name)
                                   if f.name != "classes" else max(a.classes, b.classes))
                          for f in fields(a)})


@dataclass
class XentSummary:
    """The reductions of :class:`smx_cli.core.xent.XentResult`, without per-sample arrays.

    ``n_samples``, ``n_correct``, ``n_ignored``, ``n_nonfinite`` and
    :meth:`vanished` are the counts the summary panel shows.
    """

    reduced: float
    reduction: str
    target_kind: str
    denominator: float
    part: XentPart
    vanished_eps: float

    @property
    def n_samples(self) -> int:
        return self.part.samples

    @property
    def engine(self) -> str:
        """What computed the per-sample numbers (as ``XentResult.engine``)."""
        return "+".join(self.part.engines) or "numpy"

    @property
    def counted(self) -> int:
        return self.part.counted

    @property
    def n_correct(self) -> int:
        return self.part.correct

    @property
    def n_ignored(self) -> int:
        return self.part.ignored

    @property
    def n_nonfinite(self) -> int:
        return self.part.nonfinite

    @property
    def all_ignored(self) -> bool:
        return self.target_kind == "index" and self.part.ignored == self.part.samples

    @property
    def accuracy(self) -> float:
        return self.part.correct / self.counted if self.counted else math.nan

    @property
    def top5_accuracy(self) -> float:
        return self.part.top5 / self.counted if self.counted else math.nan

    @property
    def mean_loss(self) -> float:
        return self.part.loss.value() / self.counted if self.counted else math.nan

    @property
    def mean_nll(self) -> float:
        return self.part.nll.value() / self.counted if self.counted else math.nan

    @property
    def mean_entropy(self) -> float:
        return self.part.entropy.value() / self.counted if self.counted else math.nan

    @property
    def perplexity(self) -> float:
        try:
            return math.exp(self.mean_nll)
        except OverflowError:
            return math.inf

    def vanished(self, eps: float) -> int:
        if eps != self.vanished_eps:
            raise ValueError(f"vanished gradients were counted for eps={self.vanished_eps!r}")
        return self.part.vanished


#: how many rows with a NaN/inf loss a merged summary remembers (what the panel shows)
NAMED_ROWS = 5

_LOCAL_INDEX = re.compile(r"^(label|probability target row) (\d+)")


# the per-sample columns of -o (as ``smx xent -o`` writes them on one machine)
PER_SAMPLE_COLUMNS = ["row", "label", "predicted", "p_true", "loss", "margin", "correct",
                      "ignored"]


def _per_sample(r, start) -> np.ndarray:
    n = len(r.loss)
    # a NaN row ranks no class first: its prediction is -1 (undefined), as smx xent -o writes
    undefined = np.isnan(r.entropy) | (np.isnan(r.p_true) & ~r.ignored)
    return np.column_stack([
        np.arange(start, start + n), r.true_class, np.where(undefined, -1, r.predicted),
        r.p_true, r.loss, r.margin,
        r.correct.astype(float), r.ignored.astype(float)]).astype(np.float64)


_BUFFERS = threading.local()


def _read_block(reader, r0, r1):
    """Rows r0:r1 of an NPY-shards reader, into this thread's reused buffer."""
    width = int(np.prod(reader.tail, dtype=np.int64)) if reader.tail else 1
    need = (r1 - r0) * width
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None or buf.size < need or buf.dtype != reader.file_dtype:
        buf = _BUFFERS.buf = np.empty(need, dtype=reader.file_dtype)
    return reader.read_rows(r0, r1, buf)


def _block_part(xb, yb, start, weight, ignore_index, label_smoothing, input_kind, eps,
                per_sample=False, temperature=1.0):
    """Evaluate one row block; errors name the row in the whole array.

    With ``per_sample``: (part, the block's per-sample columns).
    """
    if isinstance(xb, tuple):  # (reader, r0, r1): read here, into a reused buffer
        xb = _read_block(*xb)
    xb = np.asarray(xb)
    yb = np.asarray(yb)
    if temperature != 1.0:  # as smx xent --temperature: logits / T in float64 first
        xb = xb.astype(np.float64) / temperature
    if xb.shape[0] == 0:
        part = XentPart(inputs=count_inputs(xb.reshape(0, xb.shape[1] if xb.ndim == 2 else 0)))
        return (part, np.zeros((0, len(PER_SAMPLE_COLUMNS)))) if per_sample else part
    try:
        r = core_xent.evaluate(xb, yb, weight=weight, ignore_index=ignore_index,
                               reduction="none", label_smoothing=label_smoothing,
                               input_kind=input_kind, threads=1)
    except ValueError as exc:
        msg = _LOCAL_INDEX.sub(lambda m: f"{m.group(1)} {int(m.group(2)) + start}", str(exc))
        raise SmxError(msg) from None
    counted = ~r.ignored
    denominator = ExactSum.of(core_xent.counted_weights(r.ignored, r.true_class, weight)) \
        if r.target_kind == "index" else ExactSum()
    part = XentPart(
        samples=len(r.loss), counted=int(counted.sum()), correct=int(r.correct.sum()),
        top5=int(r.top5.sum()), ignored=int(r.ignored.sum()),
        nonfinite=int((~np.isfinite(r.loss) & counted).sum()), vanished=r.vanished(eps),
        loss=ExactSum.of(r.loss), nll=ExactSum.of(r.nll[counted]),
        entropy=ExactSum.of(r.entropy[counted]), denominator=denominator,
        inputs=_input_counts(xb),
        nonfinite_rows=tuple(int(start + i) for i in
                             np.flatnonzero(~np.isfinite(r.loss) & counted)[:NAMED_ROWS]),
        engines=(r.engine,))
    return (part, _per_sample(r, start)) if per_sample else part


def _input_counts(xb) -> InputCounts:
    """count_inputs, with the common all-finite block checked in two passes and no copies."""
    if xb.dtype.kind == "f" and xb.size:
        lo, hi = xb.min(), xb.max()   # both propagate NaN
        if np.isfinite(lo) and np.isfinite(hi):
            return InputCounts(xb.shape[0], xb.shape[1], 0, 0, 0, 0, 0, 0)
    return count_inputs(xb)


def align_labels(x, y, labels_name: str = "labels"):
    """Labels chunked like the logits' rows (1-D indices or (N, C) probability targets)."""
    if y.shape[0] != x.shape[0]:
        raise SmxError(f"{labels_name}: {y.shape[0]} labels for {x.shape[0]} rows of logits")
    if y.ndim == 2 and y.shape[1] == 1 and not (x.shape[1] == 1 and y.dtype.kind == "f"):
        y = y[:, 0]
    if y.ndim == 2:
        return y.rechunk((x.chunks[0], -1))
    return y.rechunk((x.chunks[0],))


def xent_summary(x, y, *, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, input_kind: str = "logits",
                 vanished_eps: float | None = None, scheduler=None, progress=None,
                 labels_name: str = "labels", output: str | None = None,
                 temperature: float = 1.0) -> XentSummary:
    """Cross-entropy of (N, C) dask logits ``x`` against labels ``y``, summarised exactly.

    ``y`` is a dask (or numpy) array of N class indices or (N, C)
    probability targets, chunked in any way (it is aligned to ``x``'s rows).
    The options are those of :func:`smx_cli.core.xent.cross_entropy`.
    ``vanished_eps`` (default: the logits' format's epsilon) is the
    threshold of the vanished-gradient count. ``temperature`` divides the
    logits first (in float64), as ``smx xent --temperature``. ``output`` names a Zarr store
    that receives the (N, 8) per-sample columns of :data:`PER_SAMPLE_COLUMNS`,
    written atomically (:mod:`smx_cli.dask.store`) in the same pass.

    Examples
    --------
    >>> import dask.array as da
    >>> x = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    >>> s = xent_summary(da.from_array(x, chunks=(2, -1)), np.array([0, 0, 1]),
    ...                  scheduler="synchronous")
    >>> s.reduced == core_xent.evaluate(x, [0, 0, 1]).reduced, s.n_correct
    (True, 1)
    """
    import dask
    import dask.array as da

    from smx_cli.core.precision import result_format

    core_xent.check_options(reduction, label_smoothing, input_kind)
    if x.ndim != 2:
        raise SmxError(f"xent takes (N, C) logits, got shape {x.shape}")
    if x.shape[1] == 0:
        raise SmxError("the logits have no classes (0 columns)")
    if len(x.chunks[1]) > 1:
        raise SmxError(f"the class axis is split across {len(x.chunks[1])} chunks; xent's "
                       "statistics (argmax, top-5, margin) need whole rows: rechunk the store "
                       "to whole rows (x.rechunk({1: -1}))")
    w = None if weight is None else check_class_weights(weight, x.shape[1])
    eps = result_format(x.dtype).eps if vanished_eps is None else float(vanished_eps)
    y = align_labels(x, da.asarray(y), labels_name)
    starts = np.cumsum((0,) + x.chunks[0][:-1])
    reader = npy_reader(x)
    if reader is not None:
        # NPY shards: each task reads its rows into a reused buffer (the stream path's trick;
        # a fresh 64 MB chunk per task costs as much to fault in as to compute)
        xd = [(reader, int(s), int(s) + n) for s, n in zip(starts, x.chunks[0])]
    else:
        xd = x.to_delayed()[:, 0]
    yd = y.to_delayed().reshape(len(x.chunks[0]), -1)[:, 0]
    part = dask.delayed(_block_part, pure=True, nout=2 if output else None)
    tasks = [part(xd[i], yd[i], int(starts[i]), w, int(ignore_index), float(label_smoothing),
                  input_kind, eps, bool(output), float(temperature)) for i in range(len(xd))]
    with run_mod.client_for(scheduler) as where:
        if output:
            from smx_cli.dask import store as store_mod

            cols = len(PER_SAMPLE_COLUMNS)
            table = da.concatenate([da.from_delayed(t[1], (n, cols), np.float64)
                                    for t, n in zip(tasks, x.chunks[0])])
            table = table.rechunk((max(x.chunks[0]) or 1, cols))
            with store_mod.atomic_store(output) as tmp:
                writer = da.to_zarr(table, tmp, compute=False)
                parts, _ = run_mod.compute([[t[0] for t in tasks], writer], where, progress)
        else:
            parts = run_mod.compute(tasks, where, progress)
    total = XentPart()
    for p in parts:
        total = total + p
    kind = "prob" if y.ndim == 2 else "index"
    denominator = total.denominator.value() if kind == "index" else float(total.samples)
    reduced = core_xent.reduce_total(total.loss.value(), denominator, reduction)
    return XentSummary(reduced, reduction, kind, denominator, total, eps)


def cross_entropy(x, y, *, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, input_kind: str = "logits", scheduler=None):
    """The loss of :func:`smx_cli.core.xent.cross_entropy` over dask arrays.

    ``reduction='none'`` returns the lazy (N,) dask array of per-sample
    losses (labels paired with the logits' rows by ``da.blockwise``); mean
    and sum return the float, merged exactly across blocks.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.from_array(np.array([[30.0, 0.0], [0.0, 1000.0]]), chunks=(1, -1))
    >>> cross_entropy(x, np.array([0, 0]), reduction="none").compute(scheduler="sync").tolist()
    [9.357622968839737e-14, 1000.0]
    """
    import dask.array as da

    if reduction != "none":
        return xent_summary(x, y, weight=weight, ignore_index=ignore_index, reduction=reduction,
                            label_smoothing=label_smoothing, input_kind=input_kind,
                            scheduler=scheduler).reduced
    core_xent.check_options(reduction, label_smoothing, input_kind)
    if len(x.chunks[1]) > 1:
        raise SmxError("the class axis is split across chunks; cross-entropy needs whole rows "
                       "(x.rechunk({1: -1}))")
    w = None if weight is None else check_class_weights(weight, x.shape[1])
    y = align_labels(x, da.asarray(y))
    if y.ndim == 2:
        return da.blockwise(_loss_block, "i", x, "ij", y, "ij", dtype=np.float64,
                            meta=np.empty((0,)), weight=w, ignore_index=int(ignore_index),
                            label_smoothing=float(label_smoothing), input_kind=input_kind,
                            concatenate=True)
    return da.blockwise(_loss_block, "i", x, "ij", y, "i", dtype=np.float64,
                        meta=np.empty((0,)), weight=w, ignore_index=int(ignore_index),
                        label_smoothing=float(label_smoothing), input_kind=input_kind,
                        concatenate=True)


def _loss_block(xb, yb, weight, ignore_index, label_smoothing, input_kind):
    if xb.size == 0 or xb.ndim != 2:
        return np.zeros(xb.shape[0] if xb.ndim else 0)
    try:
        return core_xent.evaluate(xb, yb, weight=weight, ignore_index=ignore_index,
                                  reduction="none", label_smoothing=label_smoothing,
                                  input_kind=input_kind, threads=1).loss
    except ValueError as exc:
        raise SmxError(str(exc)) from None
