"""What went right and wrong in a softmax: pure functions from arrays to counts.

No printing here: :mod:`smx_cli.render` turns these dataclasses into tables.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from smx_cli.softmax import SoftmaxResult


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


def diagnose(x2: np.ndarray, result: SoftmaxResult, top_classes: int = 5,
             sparse: bool = False) -> SoftmaxDiagnostics:
    """Diagnose one softmax ``result`` computed from logits ``x2``.

    Underflow counts entries that came out 0 (probabilities) or -inf
    (log-probabilities) although their logit was finite in a row whose
    maximum is finite: their exact value is positive. For ``sparse`` maps
    (sparsemax, entmax, hardmax) zeros are exact by design: they are counted
    as ``exact_zeros`` instead. A row's sum is "off"
    when |sum(p) - 1| exceeds a few epsilons of the result format (computed
    in float64, or long double for float64 results).

    Examples
    --------
    >>> from smx_cli.softmax import compute
    >>> x = np.array([[1000.0, 2000.0, 3000.0]])
    >>> d = diagnose(x, compute(x, "naive"))
    >>> d.exp_overflow, d.output_nan_rows
    (3, 1)
    """
    inputs = count_inputs(x2)
    x = np.asarray(x2).astype(np.float64, copy=False)
    y = result.values.astype(np.float64)
    fmt = result.fmt
    n, width = y.shape
    with np.errstate(all="ignore"):
        row_max = x.max(axis=1) if width else np.full(n, -np.inf)
        finite_row = np.isfinite(row_max)
        live = np.isfinite(x) & finite_row[:, None]
        prob = np.exp(y) if result.kind == "logprob" else y
        zero = (prob == 0) & live
        tiny = fmt.smallest_normal
        subnormal = (prob > 0) & (prob < tiny) & live
        out_nan = np.isnan(y)
        nan_rows = out_nan.any(axis=1)
        input_nan_rows = np.isnan(x).any(axis=1)
        masked_rows = np.isneginf(x).all(axis=1) & (width > 0)
        produced = nan_rows & ~input_nan_rows & ~masked_rows
        acc = np.longdouble if fmt.name == "float64" else np.float64
        sums = prob.astype(acc).sum(axis=1) if width else np.ones(n)
        finite_out = ~nan_rows & (width > 0)
        err = np.abs(sums - 1).astype(np.float64)
        # a correctly rounded row sums to 1 within u (each p_i errs by at most
        # u p_i); the emulated sum and the log->prob conversion add a little
        tol = 4.0
        off = finite_out & (err > tol * fmt.eps)
        valid = y[~out_nan]
        finite_vals = valid[np.isfinite(valid)]
        pred = np.argmax(np.where(np.isnan(y), -np.inf, y), axis=1)[finite_out] if width else []
        classes, counts = np.unique(pred, return_counts=True) if len(pred) else ([], [])
        order = np.argsort(counts)[::-1][:top_classes] if len(counts) else []
    return SoftmaxDiagnostics(
        inputs=inputs, variant=result.variant, dtype=fmt.name, emulated=result.emulated,
        kind=result.kind,
        exp_overflow=result.stats.exp_overflow,
        exp_underflow=result.stats.exp_underflow,
        sum_overflow_rows=result.stats.sum_overflow_rows,
        underflow_to_zero=0 if sparse else int(zero.sum()),
        exact_zeros=int(zero.sum()) if sparse else 0, subnormal=int(subnormal.sum()),
        output_nan=int(out_nan.sum()), output_nan_rows=int(nan_rows.sum()),
        produced_nan_rows=int(produced.sum()),
        sum_off_rows=int(off.sum()),
        max_sum_error=float(err[finite_out].max()) if finite_out.any() else 0.0,
        sum_tolerance=tol,
        min_value=float(finite_vals.min()) if finite_vals.size else None,
        max_value=float(finite_vals.max()) if finite_vals.size else None,
        argmax_counts=[(int(classes[i]), int(counts[i])) for i in order],
    )
