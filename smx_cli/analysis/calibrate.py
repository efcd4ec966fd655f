"""``calibrate``: fit a calibration map on one set, report metrics before and after.

The engine behind ``smx calibrate``: reads the rows in blocks (an array, or
an NPY file of any size), fits temperature or vector scaling
(:mod:`smx_cli.analysis.temperature`) and computes every metric of
:mod:`smx_cli.analysis.calibration` before and after. With the fit and the
report on the same rows the result says so (``fit_on='same'``): numbers
measured on the data a map was fitted to flatter it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smx_cli.analysis import calibration as cal
from smx_cli.analysis.scan import Rows, Scan, scan
from smx_cli.analysis.temperature import Fit, fit_beta, fit_vector
from smx_cli.core.xent import check_target
from smx_cli.errors import SmxError

METHODS = ("temperature", "vector")
INPUT_KINDS = ("logits", "log-probs", "probs")


@dataclass
class CalibrationReport:
    """Metrics before and after, the fit, and where each came from."""

    before: cal.Metrics
    after: cal.Metrics
    fit: Fit
    fit_on: str          # 'same', 'split' or 'separate'
    source: str
    fit_source: str
    warnings: list[str]
    passes: int

    @property
    def temperature(self) -> float:
        return self.fit.temperature

    def to_dict(self) -> dict:
        f = self.fit
        fit = {"method": f.method, "rows": f.rows, "nll_before": f.nll_before,
               "nll_after": f.nll_after, "iterations": f.iterations, "passes": f.passes,
               "converged": f.converged, "fit_on": self.fit_on, "source": self.fit_source}
        if f.method == "temperature":
            fit.update(temperature=f.temperature, beta=f.beta, gradient_beta=f.gradient,
                       gradient_temperature=f.gradient_t, hessian_beta=f.hessian,
                       start_temperature=f.start_temperature, start_rows=f.sample_rows)
        else:
            fit.update(scale=f.scale.tolist(), bias=f.bias.tolist(), max_abs_gradient=f.gradient)
        return _clean({"command": "calibrate", "source": self.source, "fit": fit,
                       "before": self.before.to_dict(), "after": self.after.to_dict(),
                       "passes": self.passes, "warnings": self.warnings})


def _clean(v):
    """JSON-ready: numpy scalars to Python, NaN/inf (undefined: e.g. an empty bin) to None."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def check_labels(labels, n: int, c: int, source: str = "labels") -> np.ndarray:
    """N class indices in [0, C) as int64, or a one-line SmxError."""
    try:
        kind, y = check_target(labels, n, c, ignore_index=-100)
    except ValueError as exc:
        raise SmxError(f"{source}: {exc}") from None
    if kind != "index":
        raise SmxError(f"{source}: calibration needs class labels, not probability targets")
    bad = np.flatnonzero(y == -100)
    if bad.size:
        raise SmxError(f"{source}: label {int(bad[0])} is -100, outside [0, {c})")
    return y


def _rows(x, source: str, input_kind: str) -> Rows:
    if input_kind not in INPUT_KINDS:
        raise SmxError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
    rows = x if isinstance(x, Rows) else Rows.of(x, source)
    if rows.n == 0 or rows.c == 0:
        raise SmxError(f"{rows.source}: no data (shape ({rows.n}, {rows.c})); calibration "
                       "needs at least one row of at least one class")
    return rows.as_probs() if input_kind == "probs" else rows


def _metrics(sc: Scan, c: int, opts: dict) -> cal.Metrics:
    n = sc.rows
    cw = (sc.cw_count, sc.cw_psum, sc.cw_pos) if sc.cw_count is not None else None
    return cal.metrics(sc.conf, sc.correct, nll=sc.nll / n, brier=sc.brier / n, classes=c,
                       cw=cw, **opts)


def split_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of round(fraction N) rows for the fit, the rest for the report.

    Examples
    --------
    >>> int(split_mask(10, 0.3, 0).sum())
    3
    """
    if not 0 < fraction < 1:
        raise SmxError(f"split fraction {fraction!r} must be in (0, 1)")
    k = int(round(fraction * n))
    if k < 1 or k >= n:
        raise SmxError(f"split {fraction:g} of {n} rows leaves {k} to fit on and {n - k} to "
                       "report on; both need at least one")
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def calibrate(logits, labels, *, method: str = "temperature", bins: int = 15,
              binning: str = "width", norm: str = "l1", bootstrap: int = 100, seed: int = 0,
              fit_logits=None, fit_labels=None, split: float | None = None,
              input_kind: str = "logits", threads: int | None = None) -> CalibrationReport:
    """Fit a calibration map and report calibration metrics before and after.

    Parameters
    ----------
    logits : array_like (N, C) or Rows
        The rows to report on (and to fit on, unless ``fit_logits`` or
        ``split``). A :class:`smx_cli.analysis.scan.Rows` reads an NPY file
        in blocks.
    labels : array_like (N,)
        Class indices.
    method : {'temperature', 'vector'}
        Temperature scaling (one T) or vector scaling (per-class a, b).
    bins, binning, norm
        Reliability bins: M (>= 1), ``'width'`` or ``'mass'``, and the ECE
        norm ``'l1'``, ``'l2'`` or ``'max'`` (see
        :mod:`smx_cli.analysis.calibration`).
    bootstrap, seed : int
        Resamples for the debiased L2 error's interval (0: none) and the
        seed of the resampling and of ``split``.
    fit_logits, fit_labels : array_like or Rows, optional
        Fit on these instead (report on ``logits``).
    split : float, optional
        Fit on a seeded random fraction of the rows, report on the rest.
    input_kind : {'logits', 'log-probs', 'probs'}
        Probabilities are used through their log (exactly what temperature
        scaling of the logits would give, unless they were rounded to 0 or 1).

    Returns
    -------
    CalibrationReport

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 4)) * 3
    >>> y = np.array([rng.choice(4, p=np.exp(r) / np.exp(r).sum()) for r in z / 3])
    >>> r = calibrate(z, y, bootstrap=0)   # logits 3x too sharp
    >>> 2.5 < r.temperature < 3.5, r.after.ece < r.before.ece
    (True, True)
    """
    if method not in METHODS:
        raise SmxError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise SmxError(f"bins must be an integer >= 1, got {bins!r}")
    if binning not in cal.BINNINGS or norm not in cal.NORMS:
        raise SmxError(f"binning must be width or mass and norm l1, l2 or max; got "
                       f"{binning!r}, {norm!r}")
    if (fit_logits is None) != (fit_labels is None):
        raise SmxError("give both fit_logits and fit_labels, or neither")
    if fit_logits is not None and split is not None:
        raise SmxError("fit on separate data or on a split, not both")
    rep = _rows(logits, "logits", input_kind)
    y = check_labels(labels, rep.n, rep.c, "labels")
    opts = dict(bins=int(bins), binning=binning, norm=norm, bootstrap=int(bootstrap),
                seed=int(seed))
    warnings = []
    passes = 0
    if fit_logits is not None:
        fit_rows = _rows(fit_logits, "fit logits", input_kind)
        if fit_rows.c != rep.c:
            raise SmxError(f"{fit_rows.source}: {fit_rows.c} classes, but {rep.source} has "
                           f"{rep.c}")
        fit_y = check_labels(fit_labels, fit_rows.n, fit_rows.c, "fit labels")
        fit_on = "separate"
    elif split is not None:
        mask = split_mask(rep.n, split, seed)
        fit_rows, fit_y = rep.with_select(mask), y
        rep = rep.with_select(~mask)
        fit_on = "split"
    else:
        fit_rows, fit_y, fit_on = rep, y, "same"
        warnings.append("the fit and the report use the same rows: the 'after' numbers "
                        "flatter the fit (use --split F or --fit-on FILE for honest ones)")
    check = input_kind == "logits"
    if fit_on == "same" and method == "temperature":
        fit, before, after = fit_beta(rep, y, before_metrics=True, last_metrics=True,
                                      bins=opts["bins"], threads=threads, check_probs=check)
        passes = fit.passes
    else:
        if method == "temperature":
            fit, _, _ = fit_beta(fit_rows, fit_y, bins=opts["bins"], threads=threads)
        else:
            fit = fit_vector(fit_rows, fit_y)
        passes = fit.passes
        before = scan(rep, y, 1.0, derivs=False, bins=opts["bins"], threads=threads,
                      check_probs=check)
        if method == "temperature":
            after = scan(rep, y, fit.beta, derivs=False, bins=opts["bins"], threads=threads)
        else:
            after = scan(rep, y, 1.0, derivs=False, bins=opts["bins"], threads=threads,
                         transform=fit.apply)
        passes += 2
    if input_kind == "probs":
        warnings.append("probabilities given: temperature scaling needs logits, so their "
                        "logarithms are used; probabilities rounded to exactly 0 or 1 have "
                        "lost what the logits knew")
    if not fit.converged:
        warnings.append(f"the {method} fit did not converge in {fit.iterations} iterations")
    return CalibrationReport(_metrics(before, rep.c, opts), _metrics(after, rep.c, opts), fit,
                             fit_on, rep.source, fit_rows.source, warnings, passes)


def fit_temperature(logits, labels, *, input_kind: str = "logits",
                    threads: int | None = None) -> Fit:
    """Fit T by minimising the mean NLL of softmax(logits / T) (Newton on 1/T).

    Examples
    --------
    >>> z = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
    >>> f = fit_temperature(z, [0, 1, 0, 1])   # 3 of 4 right at confidence 0.98
    >>> round(f.temperature, 6), round(float(1 / (1 + np.exp(-4 / f.temperature))), 12)
    (3.640957, 0.75)
    """
    rows = _rows(logits, "logits", input_kind)
    y = check_labels(labels, rows.n, rows.c)
    fit, _, _ = fit_beta(rows, y, bins=None, threads=threads)
    return fit


def calibration_metrics(logits, labels, *, bins: int = 15, binning: str = "width",
                        norm: str = "l1", bootstrap: int = 100, seed: int = 0,
                        input_kind: str = "logits", threads: int | None = None) -> cal.Metrics:
    """Every calibration metric of softmax(logits) against labels, without a fit.

    Examples
    --------
    >>> m = calibration_metrics([[2.0, 0.0], [0.0, 1.0]], [0, 0], bins=10, bootstrap=0)
    >>> m.accuracy, round(m.ece, 6)
    (0.5, 0.425131)
    """
    rows = _rows(logits, "logits", input_kind)
    y = check_labels(labels, rows.n, rows.c)
    opts = dict(bins=int(bins), binning=binning, norm=norm, bootstrap=int(bootstrap),
                seed=int(seed))
    sc = scan(rows, y, 1.0, derivs=False, bins=opts["bins"], threads=threads,
              check_probs=input_kind == "logits")
    return _metrics(sc, rows.c, opts)


def calibrated_logits(fit: Fit, x) -> np.ndarray:
    """Apply a fit to logits (N, C): x / T, or a x + b for vector scaling."""
    return fit.apply(np.asarray(x, dtype=np.float64))


