"""The finite-difference engine: analytic gradients against central differences.

One step rule and one acceptance rule for every check smx runs
(:func:`smx_cli.core.grad.check_grad` for softmax, log-softmax and the
cross-entropy; :func:`check_map` for any other map of the family):

* central differences in float64 with the step h_j = eps^(1/3) max(|x_j|, 1)
  (the step that balances truncation, O(h^2), against rounding, O(eps/h)),
  divided by the step actually taken, (x_j + h) - (x_j - h);
* an entry passes when |analytic - fd| <= atol + rtol * max |fd| of its row;
  entries whose difference overflows are not counted, nor rows left without one;
* at a kink of a piecewise-smooth map (sparsemax's support boundary: x_j at
  the threshold tau) the central difference averages two one-sided slopes
  and may match neither. An entry also passes when the analytic value lies
  (within the same tolerance) between its forward and backward differences,
  i.e. is a generalised (Clarke) derivative there; entries that pass only so
  are counted as kinks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the relative step of the central differences
STEP = float(np.cbrt(np.finfo(np.float64).eps))
RTOL = 1e-5
ATOL = 1e-8


@dataclass
class GradCheck:
    """Analytic gradient against central finite differences, for one function."""

    function: str
    rows_checked: int
    entries_checked: int
    max_abs_error: float
    max_rel_error: float
    rtol: float
    atol: float
    passed: bool
    #: entries whose one-sided differences disagree (a kink inside the step)
    kinks: int = 0


def central_difference(phi, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """d phi / d x_j for j in ``cols`` by central differences (float64).

    Examples
    --------
    >>> central_difference(lambda v: float(v @ v), np.array([1.0, 2.0]), np.array([0, 1]))
    array([2., 4.])
    """
    h = STEP * np.maximum(np.abs(x[cols]), 1.0)
    out = np.empty(len(cols))
    for k, j in enumerate(cols):
        xp = x.copy()
        xm = x.copy()
        xp[j] += h[k]
        xm[j] -= h[k]
        out[k] = (phi(xp) - phi(xm)) / (xp[j] - xm[j])
    return out


def differences(phi, x: np.ndarray, cols: np.ndarray):
    """Central, forward and backward differences of phi at x for j in ``cols``.

    The one-sided ones reuse the central stencil's two evaluations and phi(x),
    so they cost one more evaluation per row.

    Examples
    --------
    >>> c, f, b = differences(lambda v: float(abs(v[0])), np.array([0.0]), np.array([0]))
    >>> float(c[0]), float(f[0]), float(b[0])
    (0.0, 1.0, -1.0)
    """
    h = STEP * np.maximum(np.abs(x[cols]), 1.0)
    mid = phi(x)
    central, fwd, bwd = (np.empty(len(cols)) for _ in range(3))
    for k, j in enumerate(cols):
        xp = x.copy()
        xm = x.copy()
        xp[j] += h[k]
        xm[j] -= h[k]
        hi, lo = phi(xp), phi(xm)
        central[k] = (hi - lo) / (xp[j] - xm[j])
        fwd[k] = (hi - mid) / (xp[j] - x[j])
        bwd[k] = (mid - lo) / (x[j] - xm[j])
    return central, fwd, bwd


class Tally:
    """Accumulates row comparisons into one :class:`GradCheck`."""

    def __init__(self, name: str, rtol: float = RTOL, atol: float = ATOL):
        self.name, self.rtol, self.atol = name, rtol, atol
        self.max_abs = self.max_rel = 0.0
        self.rows = self.entries = self.kinks = 0
        self.ok = True

    def add(self, analytic: np.ndarray, fd: np.ndarray, fwd: np.ndarray | None = None,
            bwd: np.ndarray | None = None) -> None:
        """Compare one row's analytic entries with their finite differences.

        With the one-sided differences ``fwd`` and ``bwd``, an entry also passes
        when it lies between them (a kink; see the module docstring).
        """
        # a step that overflows (rows like [1e308, -1e308]) gives no difference to
        # compare with: those entries, and rows left with none, are not counted
        checkable = np.isfinite(fd)
        if not checkable.any():
            return
        analytic, fd = analytic[checkable], fd[checkable]
        scale = np.max(np.abs(fd))
        tol = self.atol + self.rtol * scale
        err = np.abs(analytic - fd)
        if fwd is not None and bwd is not None:
            # distance to the interval between the one-sided slopes: at a kink any
            # value in it is a generalised (Clarke) derivative; for a smooth map the
            # interval is O(h |f''|) wide around the central difference
            fwd, bwd = fwd[checkable], bwd[checkable]
            lo, hi = np.minimum(fwd, bwd), np.maximum(fwd, bwd)
            side = np.maximum(np.maximum(lo - analytic, analytic - hi), 0.0)
            kink = (err > tol) & (hi - lo > tol) & (side <= tol)
            err = np.minimum(err, side)
            self.kinks += int(np.count_nonzero(kink))
        worst = float(err.max())
        self.max_abs = max(self.max_abs, worst)
        self.max_rel = max(self.max_rel, worst / scale if scale > 0 else worst)
        self.ok &= bool(np.all(err <= tol))
        self.entries += len(fd)
        self.rows += 1

    def result(self) -> GradCheck:
        return GradCheck(self.name, self.rows, self.entries, self.max_abs, self.max_rel,
                         self.rtol, self.atol, self.ok, self.kinks)


def pick_rows(x2: np.ndarray, rows: int, rng, eligible: np.ndarray | None = None) -> np.ndarray:
    """Up to ``rows`` distinct rows drawn from the finite (and ``eligible``) ones."""
    # a row of 0 classes is "all finite" but has nothing to check
    ok = np.isfinite(x2).all(axis=1) & (x2.shape[1] > 0)
    if eligible is not None and (ok & eligible).any():
        ok &= eligible
    finite = np.flatnonzero(ok)
    if not len(finite):
        return np.array([], dtype=int)
    return rng.choice(finite, size=min(rows, len(finite)), replace=False)


def check_map(name: str, x2: np.ndarray, forward, analytic, *, rows: int = 8, seed: int = 0,
              rtol: float = RTOL, atol: float = ATOL) -> GradCheck:
    """Check the VJP ``analytic(x, forward(x), g)`` of a row map ``forward`` on sampled rows.

    For each of up to ``rows`` finite rows x and a random upstream g, the
    VJP is compared with the central differences of <g, forward(x)> over
    every column (at a kink, with the one-sided differences: see the module
    docstring).

    Examples
    --------
    >>> def f(v):
    ...     e = np.exp(v - v.max())
    ...     return e / e.sum()
    >>> vjp = lambda x, p, g: p * (g - g @ p)
    >>> check_map("softmax", np.array([[1.0, 2.0, 3.0]]), f, vjp).passed
    True
    """
    rng = np.random.default_rng(seed)
    x2 = np.asarray(x2, dtype=np.float64)
    tally = Tally(name, rtol, atol)
    for i in pick_rows(x2, rows, rng):
        x = x2[i].copy()
        g = rng.normal(size=len(x))
        got = analytic(x, forward(x), g)
        fd, fwd, bwd = differences(lambda v: float(g @ forward(v)), x, np.arange(len(x)))
        tally.add(got, fd, fwd, bwd)
    return tally.result()
