"""What went right and wrong in a softmax: pure functions from arrays to counts.

No printing here: :mod:`smx_cli.render.tables` turns these dataclasses into tables.

With the compiled core built (and not ``SMX_ENGINE=numpy``), the rows whose
logits and values are all finite are counted by one compiled pass over them
(``_smx_diag.summarize``: zeros, subnormals, |sum - 1|, min, max, argmax; the
CPU time of reading x and y once, about 0.2-0.8x the kernel's that made y, see
``bench/native.py --diag``); the others, and every row on the numpy engine, by
the numpy counts here, the reference the compiled counts are tested against.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

import numpy as np

from smx_cli.core import kernels, native
from smx_cli.core.eft import split_sum
from smx_cli.core.result import KernelStats, SoftmaxResult

try:  # the one-pass counts (optional, built with the compiled core)
    from smx_cli.core import _smx_diag
except ImportError:  # pragma: no cover - no compiler at install time
    _smx_diag = None

_DIAG_CODES = {np.dtype(np.float16): 0, np.dtype(np.float32): 2, np.dtype(np.float64): 3}
try:
    import ml_dtypes

    _DIAG_CODES[np.dtype(ml_dtypes.bfloat16)] = 1
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    pass


@dataclass
class InputCounts:
    """Non-finite entries and special rows of the input logits."""

    rows: int
    classes: int
    nan: int
    pos_inf: int
    neg_inf: int
    nan_rows: int
    inf_rows: int
    masked_rows: int


@dataclass
class SoftmaxDiagnostics:
    """Everything the diagnostics panel shows for one softmax run.

    Counts of entries unless the name says rows. ``sum_tolerance`` is the
    allowed |sum - 1| in units of the result format's epsilon.
    """

    inputs: InputCounts
    variant: str
    dtype: str
    emulated: bool
    kind: str
    exp_overflow: int
    exp_underflow: int
    sum_overflow_rows: int
    underflow_to_zero: int
    subnormal: int
    output_nan: int
    output_nan_rows: int
    produced_nan_rows: int
    sum_off_rows: int
    max_sum_error: float
    sum_tolerance: float
    min_value: float | None
    max_value: float | None
    argmax_counts: list[tuple[int, int]] = field(default_factory=list)
    exact_zeros: int = 0
    masked_nan_rows: int = 0
    # row indices (into the flattened (N, C) rows), every one of them
    nan_output_row_index: list[int] = field(default_factory=list)
    #: zeros whose exact value is below half the format's smallest subnormal:
    #: 0 is the correctly rounded result (counted apart from ``underflow_to_zero``)
    zero_below_range: int = 0
    nonfinite_input_row_index: list[int] = field(default_factory=list)
    #: what computed it: "numpy" or the compiled core ("native-avx512", ...)
    engine: str = "numpy"

    @property
    def clean(self) -> bool:
        """True when nothing was lost: no overflow, NaN, or bad sums."""
        return (self.exp_overflow == 0 and self.sum_overflow_rows == 0
                and self.output_nan == 0 and self.sum_off_rows == 0)

    @property
    def nonfinite_output(self) -> bool:
        return self.output_nan > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["argmax_counts"] = [{"class": int(c), "rows": int(n)} for c, n in self.argmax_counts]
        return d


def count_inputs(x2: np.ndarray) -> InputCounts:
    """Count NaN, +inf, -inf and special rows of (N, C) logits.

    Examples
    --------
    >>> c = count_inputs(np.array([[1.0, np.nan], [-np.inf, -np.inf]]))
    >>> (c.nan, c.neg_inf, c.nan_rows, c.masked_rows)
    (1, 2, 1, 1)
    """
    x = np.asarray(x2)
    n, width = x.shape
    if x.dtype.kind in "biu":
        return InputCounts(n, width, 0, 0, 0, 0, 0, 0)
    x = x.astype(np.float64, copy=False)
    isnan = np.isnan(x)
    posinf = np.isposinf(x)
    neginf = np.isneginf(x)
    return InputCounts(
        rows=n, classes=width,
        nan=int(isnan.sum()), pos_inf=int(posinf.sum()), neg_inf=int(neginf.sum()),
        nan_rows=int(isnan.any(axis=1).sum()),
        inf_rows=int(posinf.any(axis=1).sum()),
        masked_rows=int((neginf.all(axis=1) & (width > 0)).sum()),
    )


class Accumulator:
    """Diagnostics gathered block by block, so memory does not grow with the input.

    ``add`` takes (rows, C) logits and the matching result rows; ``result``
    gives the same :class:`SoftmaxDiagnostics` as one :func:`diagnose` call on
    the whole array.

    Examples
    --------
    >>> from smx_cli.core.softmax import compute
    >>> x = np.array([[1.0, 2.0], [3.0, -np.inf], [np.nan, 0.0]])
    >>> acc = Accumulator("stable", compute(x).fmt, "prob", False)
    >>> for i in range(3):
    ...     acc.add(x[i:i + 1], compute(x[i:i + 1]).values)
    >>> acc.result().inputs.nan_rows == diagnose(x, compute(x)).inputs.nan_rows
    True
    """

    def __init__(self, variant: str, fmt, kind: str, emulated: bool, sparse: bool = False,
                 temperature: float = 1.0, engine: str = "numpy"):
        self.variant, self.fmt, self.kind = variant, fmt, kind
        self.engine = engine
        self.temperature = temperature
        self.emulated, self.sparse = emulated, sparse
        self.rows = self.classes = 0
        self.counts = dict.fromkeys(
            ("nan", "pos_inf", "neg_inf", "nan_rows", "inf_rows", "masked_rows", "zero", "zero_ok",
             "subnormal", "out_nan", "nan_rows_out", "produced", "off", "masked_nan"), 0)
        self.max_err = 0.0
        self.vmin = np.inf
        self.vmax = -np.inf
        self.argmax = None
        self.stats = KernelStats()
        self.nan_index: list[int] = []
        self.bad_input_index: list[int] = []

    def add(self, x2: np.ndarray, values: np.ndarray, stats: KernelStats | None = None) -> None:
        """Count one block of rows (cut into cache-sized pieces; memory stays small)."""
        if stats is not None:
            self.stats.add(stats)
        # the compiled kernel made these values and saw no NaN / +inf logit: the
        # compiled pass reads the logits only of rows holding a 0 probability
        xcheck = int(stats is not None and stats.nonfinite_input_rows == 0)
        x2 = np.asarray(x2)
        values = np.asarray(values)
        n = values.shape[0]
        width = values.shape[1] if values.ndim == 2 else 0
        self.classes = width
        if not values.size:  # no values (maybe 10**15 rows of 0 classes): nothing to count
            self.rows += n
            return
        step = max(1, _DIAG_BLOCK // max(width, 1))
        pieces = [(s0, min(s0 + step, n)) for s0 in range(0, n, step)]
        summaries = [None] * len(pieces)
        hists: dict[int, np.ndarray] = {}
        if len(pieces) > 1 and self._native_ok(x2, values):
            # the compiled pass on the pieces in parallel (it releases the GIL),
            # each worker thread adding argmax counts to its own histogram; the
            # other counts are then added in row order, as one piece at a time would
            def run(p):
                hist = hists.get(threading.get_ident())
                if hist is None:
                    hist = hists[threading.get_ident()] = np.zeros(width, dtype=np.int64)
                return self._summarize(x2[p[0]:p[1]], values[p[0]:p[1]], hist, xcheck)
            summaries = kernels.map_threads(run, pieces)
        with np.errstate(all="ignore"):
            for (s0, s1), summary in zip(pieces, summaries):
                self._add(x2[s0:s1], values[s0:s1], summary, xcheck)
        for hist in hists.values():
            self._hist(width)[:] += hist

    def _add(self, x: np.ndarray, y: np.ndarray, summary=None, xcheck: int = 0) -> None:
        n, width = y.shape
        base = self.rows
        self.rows += n
        if not width:
            return
        if self._add_native(x, y, base, summary, xcheck):
            return
        # rows whose logits and results are all finite (nearly all of them) need
        # only a few passes in their own dtype; the rest get the careful count
        ysum = y.sum(axis=1, dtype=np.float64)
        clean = np.isfinite(x.sum(axis=1, dtype=np.float64)) & np.isfinite(ysum)
        if clean.all():
            self._add_clean(x, y, ysum)
        else:
            if clean.any():
                self._add_clean(x[clean], y[clean], ysum[clean])
            self._add_special(x[~clean], y[~clean], base + np.flatnonzero(~clean))

    def _native_ok(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether the compiled pass (``_smx_diag``) counts these rows: not when it
        is not built, the numpy engine is chosen, the results are emulated (their
        zeros need the careful count), or for dtypes/layouts it does not read."""
        return not (_smx_diag is None or self.emulated or x.dtype not in _DIAG_CODES
                    or y.dtype not in _DIAG_CODES
                    or not (x.flags.c_contiguous and y.flags.c_contiguous)
                    or native.engine() == "numpy")

    def _hist(self, width: int) -> np.ndarray:
        """The argmax histogram (created on first use)."""
        if self.argmax is None:
            self.argmax = np.zeros(width, dtype=np.int64)
        return self.argmax

    def _summarize(self, x: np.ndarray, y: np.ndarray, hist: np.ndarray, xcheck: int = 0):
        """The compiled pass over rows; the clean rows' argmax counts are added to
        ``hist`` (no other state touched: it may run on any thread that owns ``hist``).
        ``xcheck`` 1: the kernel that made ``y`` from ``x`` saw no NaN / +inf logit,
        so only rows of probabilities holding a 0 need their logits read."""
        n, width = y.shape
        tiny = self.fmt.smallest_normal
        logprob = self.kind == "logprob"
        unclean = np.empty(n, dtype=np.uint8)
        totals = _smx_diag.summarize(
            x, _DIAG_CODES[x.dtype], y, _DIAG_CODES[y.dtype], n, width, int(logprob),
            float(np.log(tiny)) if logprob else tiny, SUM_TOLERANCE * self.fmt.eps, hist,
            unclean, xcheck)
        return totals, unclean

    def _add_native(self, x: np.ndarray, y: np.ndarray, base: int, summary=None,
                    xcheck: int = 0) -> bool:
        """The clean rows' counts from the compiled pass; the other rows go to
        :meth:`_add_special`. False (nothing counted) when it does not apply."""
        if summary is None:
            if not self._native_ok(x, y):
                return False
            summary = self._summarize(x, y, self._hist(y.shape[1]), xcheck)
        (zeros, sub, off, max_err, vmin, vmax, n_clean), unclean = summary
        n = y.shape[0]
        if n_clean:
            c = self.counts
            c["zero"] += zeros
            c["subnormal"] += sub
            c["off"] += off
            self.max_err = max(self.max_err, max_err)
            self.vmin = min(self.vmin, vmin)
            self.vmax = max(self.vmax, vmax)
        if n_clean < n:
            bad = unclean != 0
            self._add_special(x[bad], y[bad], base + np.flatnonzero(bad))
        return True

    def _add_clean(self, x: np.ndarray, y: np.ndarray, ysum: np.ndarray) -> None:
        c = self.counts
        tiny = self.fmt.smallest_normal
        if self.kind == "logprob":
            self._zeros(x, np.isneginf(y))
            c["subnormal"] += int(np.count_nonzero((y < np.log(tiny)) & ~np.isneginf(y)))
            prob = np.exp(y.astype(np.float64))
        else:
            zeros = self._zeros(x, y == 0)
            c["subnormal"] += int(np.count_nonzero(y < tiny)) - zeros
            prob = y
        if self.kind == "prob" and self.fmt.name != "float64":
            # float64 sums of <= 32-bit probabilities: already accurate enough
            err = np.abs(ysum - 1)
            self.counts["off"] += int(np.count_nonzero(err > SUM_TOLERANCE * self.fmt.eps))
            self.max_err = max(self.max_err, float(err.max()))
        else:
            self._sums(prob, np.ones(len(y), dtype=bool))
        top = np.argmax(y, axis=1)
        self.vmin = min(self.vmin, float(y.min()))
        self.vmax = max(self.vmax, float(y[np.arange(len(y)), top].max()))
        counts = np.bincount(top, minlength=y.shape[1])
        self.argmax = counts if self.argmax is None else self.argmax + counts

    def _zeros(self, x: np.ndarray, zero: np.ndarray) -> int:
        """Count zero results; an emulated one whose exact value the format cannot
        hold (below half its smallest subnormal) is correct, counted apart."""
        n = int(np.count_nonzero(zero))
        if not n or not self.emulated or self.sparse:
            self.counts["zero"] += n
            return n
        rows = zero.any(axis=1)
        z = np.asarray(x[rows], dtype=np.float64) / self.temperature
        m = np.max(np.where(np.isfinite(z), z, -np.inf), axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        lse = m + np.log(np.sum(np.exp(np.where(np.isfinite(z), z - m, -np.inf)), axis=1,
                                keepdims=True))
        half_sub = np.log(self.fmt.smallest_normal * self.fmt.eps / 2)
        below = (z - lse) < half_sub
        ok = int(np.count_nonzero(zero[rows] & below))
        self.counts["zero_ok"] += ok
        self.counts["zero"] += n - ok
        return n

    def _sums(self, prob: np.ndarray, rows: np.ndarray) -> None:
        """|sum(p) - 1| of the given rows, accurate to far below the tolerance."""
        if not rows.any():
            return
        p = prob[rows]
        if self.fmt.name == "float64":
            # an error-free split sum: numpy's own sum errs by up to ~(C/8) u
            hi, lo = split_sum(np.asarray(p, dtype=np.float64))
            err = np.abs((hi[:, 0] - 1) + lo[:, 0])  # hi - 1 is exact near 1 (Sterbenz)
        else:
            err = np.abs(p.sum(axis=1, dtype=np.float64) - 1)
        self.counts["off"] += int(np.count_nonzero(err > SUM_TOLERANCE * self.fmt.eps))
        self.max_err = max(self.max_err, float(err.max()))

    def _add_special(self, x2: np.ndarray, values: np.ndarray,
                     index: np.ndarray | None = None) -> None:
        c = self.counts
        if index is None:
            index = np.arange(len(values))
        inp = count_inputs(x2)
        for key in ("nan", "pos_inf", "neg_inf", "nan_rows", "inf_rows", "masked_rows"):
            c[key] += getattr(inp, key)
        x = np.asarray(x2).astype(np.float64, copy=False)
        y = np.asarray(values).astype(np.float64)
        n, width = y.shape
        if not n:
            return
        row_max = x.max(axis=1)
        live = np.isfinite(x) & np.isfinite(row_max)[:, None]
        prob = np.exp(y) if self.kind == "logprob" else y
        self._zeros(x, (prob == 0) & live)
        c["subnormal"] += int(np.count_nonzero((prob > 0) & (prob < self.fmt.smallest_normal)
                                               & live))
        out_nan = np.isnan(y)
        nan_rows = out_nan.any(axis=1)
        self.nan_index.extend(int(i) for i in index[nan_rows])
        bad_in = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1)
        self.bad_input_index.extend(int(i) for i in index[bad_in])
        c["out_nan"] += int(out_nan.sum())
        c["nan_rows_out"] += int(nan_rows.sum())
        input_nan_rows = np.isnan(x).any(axis=1)
        masked_rows = np.isneginf(x).all(axis=1)
        c["produced"] += int((nan_rows & ~input_nan_rows & ~masked_rows).sum())
        c["masked_nan"] += int((nan_rows & masked_rows).sum())
        # a fully masked row has no softmax: its zeros (--masked zeros, --mask)
        # are by design, so it is neither an "off" sum nor anyone's argmax
        self._sums(prob, ~nan_rows & ~masked_rows)
        finite_vals = np.where(np.isfinite(y), y, np.nan)
        if np.isfinite(finite_vals).any():
            self.vmin = min(self.vmin, float(np.nanmin(finite_vals)))
            self.vmax = max(self.vmax, float(np.nanmax(finite_vals)))
        finite_out = ~nan_rows & ~masked_rows
        pred = np.argmax(np.where(out_nan, -np.inf, y), axis=1)[finite_out]
        counts = np.bincount(pred, minlength=width)
        self.argmax = counts if self.argmax is None else self.argmax + counts

    def result(self, top_classes: int = 5) -> SoftmaxDiagnostics:
        c = self.counts
        inputs = InputCounts(self.rows, self.classes, c["nan"], c["pos_inf"], c["neg_inf"],
                             c["nan_rows"], c["inf_rows"], c["masked_rows"])
        top = []
        if self.argmax is not None:
            order = np.argsort(-self.argmax, kind="stable")[:top_classes]
            top = [(int(j), int(self.argmax[j])) for j in order if self.argmax[j] > 0]
        return SoftmaxDiagnostics(
            inputs=inputs, variant=self.variant, dtype=self.fmt.name, emulated=self.emulated,
            kind=self.kind,
            exp_overflow=self.stats.exp_overflow, exp_underflow=self.stats.exp_underflow,
            sum_overflow_rows=self.stats.sum_overflow_rows,
            underflow_to_zero=0 if self.sparse else c["zero"],
            zero_below_range=c["zero_ok"],
            exact_zeros=c["zero"] if self.sparse else 0, subnormal=c["subnormal"],
            output_nan=c["out_nan"], output_nan_rows=c["nan_rows_out"],
            produced_nan_rows=c["produced"], sum_off_rows=c["off"],
            max_sum_error=self.max_err, sum_tolerance=SUM_TOLERANCE,
            min_value=self.vmin if np.isfinite(self.vmin) else None,
            max_value=self.vmax if np.isfinite(self.vmax) else None,
            argmax_counts=top, masked_nan_rows=c["masked_nan"],
            nan_output_row_index=list(self.nan_index),
            nonfinite_input_row_index=list(self.bad_input_index),
            engine=self.engine,
        )


# a correctly rounded row sums to 1 within u (each p_i errs by at most u p_i);
# the emulated sum and the log -> prob conversion add a little
SUM_TOLERANCE = 4.0
# rows per diagnostics block: about 1M elements of float64 temporaries
_DIAG_BLOCK = 1 << 20


def diagnose(x2: np.ndarray, result: SoftmaxResult, top_classes: int = 5,
             sparse: bool = False) -> SoftmaxDiagnostics:
    """Diagnose one softmax ``result`` computed from logits ``x2``.

    Underflow counts entries that came out 0 (probabilities) or -inf
    (log-probabilities) although their logit was finite in a row whose
    maximum is finite: their exact value is positive. For ``sparse`` maps
    (sparsemax, entmax, hardmax) zeros are exact by design: they are counted
    as ``exact_zeros`` instead. A row's sum is "off" when |sum(p) - 1|
    exceeds ``SUM_TOLERANCE`` epsilons of the result format (the sum taken in
    float64, error-free for float64 results: a split sum on the numpy engine,
    TwoSum per lane in the compiled pass; log-probabilities sum exp(y), within
    2**-31 relative per term for 16/32-bit results, ~1 u for float64 ones).
    Works in row blocks (bounded memory).

    Examples
    --------
    >>> from smx_cli.core.softmax import compute
    >>> x = np.array([[1000.0, 2000.0, 3000.0]])
    >>> d = diagnose(x, compute(x, "naive"))
    >>> d.exp_overflow, d.output_nan_rows
    (3, 1)
    """
    acc = Accumulator(result.variant, result.fmt, result.kind, result.emulated, sparse,
                      result.temperature, result.engine)
    acc.add(x2, result.values, result.stats)
    return acc.result(top_classes)
