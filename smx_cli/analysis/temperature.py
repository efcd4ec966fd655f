"""Fitting a temperature (or Guo's vector scaling) by minimising the NLL.

Temperature scaling divides the logits by T. The mean NLL is not convex in
T (fitting T directly, as LBFGS-on-T scripts do, can wander to T < 0 or to
1e6), but it is convex in beta = 1/T: its second derivative is the mean
variance of the logits under the scaled softmax. So the fit is a
safeguarded Newton iteration on beta:

* start from a fit on an evenly spaced subsample of the rows (in memory,
  cheap), so that the full data needs few passes;
* each step is one pass over the data computing the NLL, its gradient and
  Hessian in beta together (:func:`smx_cli.analysis.scan.scan`);
* the iterate is kept inside the bracket [lo, hi] of betas where the
  gradient changed sign (bisection when Newton leaves it), and beta stays
  > 0;
* stop when the Newton step is below 1e-7 of beta: quadratic convergence
  puts the next iterate within ~1e-14, which is evaluated (for the
  gradient reported) and returned.

Vector scaling (``method='vector'``) maps each class's logit to
``a_k z_k + b_k`` and fits the 2C parameters by damped Newton with the
exact Hessian (convex too); a pass costs O(N C^2), so it is for C up to a
few hundred.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from smx_cli.analysis.scan import Rows, Scan, scan
from smx_cli.errors import SmxError

# the in-memory subsample that starts the fit: at most this many elements
SAMPLE_ELEMENTS = 1 << 23
# the fit has converged when its step is below this fraction of beta
CONVERGED = 1e-9
# a step below this fraction of beta is expected to land within CONVERGED
# (the cubic model's error is ~ step^4): that pass keeps the metrics too
LAST_STEP = 3e-3
MAX_ITER = 60
VECTOR_MAX_CLASSES = 512


@dataclass
class Fit:
    """A fitted calibration map and how the fit went.

    ``temperature`` (T = 1/beta) for ``method='temperature'``; ``scale``
    and ``bias`` (C each) for ``method='vector'``. NLLs are means over the
    fit rows; ``gradient`` is dNLL/dbeta at the result (``gradient_t``,
    dNLL/dT); ``iterations`` counts full-data evaluations, ``passes``
    counts reads of the fit data.
    """

    method: str
    rows: int
    nll_before: float
    nll_after: float
    iterations: int
    passes: int
    converged: bool
    temperature: float = 1.0
    beta: float = 1.0
    gradient: float = 0.0
    gradient_t: float = 0.0
    hessian: float = 0.0
    start_temperature: float | None = None
    sample_rows: int = 0
    scale: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)

    def apply(self, xb: np.ndarray) -> np.ndarray:
        """Calibrated logits of a float64 block."""
        if self.method == "vector":
            return xb * self.scale + self.bias
        return xb * self.beta


def cubic_step(g: float, h: float, k3: float, k4: float) -> float:
    """The root near 0 of the gradient's cubic Taylor model g + h d + k3 d^2/2 + k4 d^3/6.

    Newton on the model from d = -g/h; falls back to the plain Newton step
    when the model's slope turns non-positive or its root runs away.

    Examples
    --------
    >>> d = cubic_step(1.0, 2.0, 0.5, 0.1)
    >>> abs(1.0 + 2.0 * d + 0.5 * d * d / 2 + 0.1 * d ** 3 / 6) < 1e-15
    True
    """
    plain = -g / h
    d = plain
    for _ in range(30):
        p = g + d * (h + d * (k3 / 2 + d * k4 / 6))
        dp = h + d * (k3 + d * k4 / 2)
        if not (dp > 0 and math.isfinite(p)):
            return plain
        nd = d - p / dp
        if abs(nd - d) <= 1e-16 * abs(nd):
            d = nd
            break
        d = nd
    if not math.isfinite(d) or abs(d) > 2 * abs(plain) + 1e-300:
        return plain
    return d


def newton_beta(evaluate, beta: float, n: int, *, first: Scan | None = None,
                tol: float = CONVERGED, max_iter: int = MAX_ITER):
    """Safeguarded Newton on beta with a cubic model of the gradient; ``evaluate(beta, last)``.

    Each evaluation is one pass giving the NLL's first four derivatives in
    beta; the step solves their cubic Taylor model (fourth-order
    convergence), kept inside the bracket where the gradient changed sign.
    Stops when the step is below ``tol`` of beta. ``last`` is True for an
    evaluation expected to be the final one. Returns ``(beta, scan at beta,
    evaluations)``.
    """
    lo, hi, start = 0.0, math.inf, beta
    sc = first if first is not None and first.dbeta == beta else evaluate(beta, False)
    evals = 1
    if sc.top == sc.rows and sc.grad < 0:
        raise SmxError("every fit sample's true class has the largest logit: the NLL keeps "
                       "falling as T -> 0, no finite temperature minimises it")
    for _ in range(max_iter):
        g, h = sc.grad / n, sc.hess / n
        if not (math.isfinite(g) and math.isfinite(h)):
            raise SmxError(f"the NLL's derivatives at T = {1 / beta:.6g} are not finite")
        if g == 0:
            return beta, sc, evals
        if g > 0:
            hi = beta
        else:
            lo = beta
        new = beta + cubic_step(g, h, sc.k3 / n, sc.k4 / n) if h > 0 else math.nan
        if abs(new - beta) <= tol * beta:
            return beta, sc, evals   # converged: the step is below tol (or rounds away)
        if not lo < new < hi:
            new = 0.5 * (lo + hi) if hi < math.inf else max(4 * beta, 2 * lo)
        if hi < 1e-9 or hi < 1e-6 * start:
            raise SmxError("the NLL keeps falling as T grows: the logits rank the true class "
                           "no better than chance; no finite temperature minimises it")
        if lo > 1e9:
            raise SmxError("the NLL keeps falling as T -> 0: every fit sample's true class has "
                           "the largest logit; no finite temperature minimises it")
        last = abs(new - beta) <= LAST_STEP * beta
        beta = new
        sc = evaluate(beta, last)
        evals += 1
    return beta, sc, evals


def _in_memory_beta(x: np.ndarray, y: np.ndarray) -> float:
    """beta fitted on rows held in memory (the subsample start)."""
    rows = Rows.of(x, "subsample")
    try:
        beta, _, _ = newton_beta(lambda b, last: scan(rows, y, b, metrics=False), 1.0, len(y),
                                 tol=1e-15)
    except SmxError:
        return 1.0
    return beta


def fit_beta(data: Rows, labels: np.ndarray, *, before_metrics=False, last_metrics=False,
             bins: int | None = 15, threads: int | None = None,
             check_probs: bool = False) -> tuple[Fit, Scan, Scan]:
    """Temperature scaling of ``data`` by safeguarded Newton on beta = 1/T.

    Starts from the fit on an evenly spaced subsample held in memory. The
    first pass gives the NLL (and, with ``before_metrics``, the metrics) at
    T = 1 and the derivatives at the start; ``last_metrics`` makes the
    final pass keep the metrics at the fitted T too (the fit and the report
    share the rows). Typically two passes. Returns the fit, the first pass
    and the final one.
    """
    n = data.rows
    if n == 0:
        raise SmxError(f"{data.source}: no rows to fit a temperature on")
    xs, ys = data.sample(labels, SAMPLE_ELEMENTS)
    exact_start = len(ys) == n
    start = _in_memory_beta(xs, ys)
    del xs
    first = scan(data, labels, 1.0, metrics=before_metrics, derivs=2 if exact_start else 4,
                 dbeta=start, bins=bins, threads=threads, check_probs=check_probs)

    def evaluate(beta, last):
        return scan(data, labels, beta, metrics=bool(last and last_metrics),
                    derivs=2 if last else 4, bins=bins, threads=threads)
    beta, sc, evals = newton_beta(evaluate, start, n, first=first)
    g, h = sc.grad / n, sc.hess / n
    passes = evals
    if last_metrics and (sc.conf is None or sc.beta != beta):
        sc = scan(data, labels, beta, derivs=False, bins=bins, threads=threads)
        passes += 1
    fit = Fit("temperature", n, first.nll / n, sc.dnll / n if sc.dbeta == beta else
              sc.nll / n, evals, passes, converged=h > 0 and abs(g / h) <= CONVERGED * beta,
              temperature=1.0 / beta, beta=beta, gradient=g, gradient_t=-beta * beta * g,
              hessian=h, start_temperature=1.0 / start, sample_rows=len(ys))
    return fit, first, sc


# ----------------------------------------------------------------------------
# vector scaling


def _vector_pass(data: Rows, labels: np.ndarray, a: np.ndarray, b: np.ndarray):
    """(mean NLL, gradient (2C), Hessian (2C x 2C)) of vector scaling at (a, b)."""
    c = data.c
    g = np.zeros(2 * c)
    h = np.zeros((2 * c, 2 * c))
    nll = []
    for start, xb in data.blocks():
        yb = labels[start:start + xb.shape[0]]
        rows = np.arange(start, start + xb.shape[0])
        if data.select is not None:
            keep = data.select[start:start + xb.shape[0]]
            xb, yb, rows = xb[keep], yb[keep], rows[keep]
        if not xb.shape[0]:
            continue
        z = np.asarray(xb, dtype=np.float64)
        if not np.isfinite(z).all():
            i = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
            raise SmxError(f"{data.where(int(rows[i]))} holds NaN or inf; vector scaling "
                           "needs finite logits")
        u = z * a + b
        m = u.max(axis=1, keepdims=True)
        e = np.exp(u - m)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        rows = np.arange(len(yb))
        nll.append(float(np.sum(np.log(s[:, 0]) + m[:, 0] - u[rows, yb])))
        r = p.copy()
        r[rows, yb] -= 1.0
        g[:c] += np.einsum("ij,ij->j", r, z)
        g[c:] += r.sum(axis=0)
        pz = p * z
        h[:c, :c] += np.diag(np.einsum("ij,ij->j", pz, z)) - pz.T @ pz
        hab = np.diag(pz.sum(axis=0)) - pz.T @ p
        h[:c, c:] += hab
        h[c:, :c] += hab.T
        h[c:, c:] += np.diag(p.sum(axis=0)) - p.T @ p
    n = data.rows
    return math.fsum(nll) / n, g / n, h / n


def fit_vector(data: Rows, labels: np.ndarray, *, max_iter: int = 50) -> Fit:
    """Vector scaling (Guo et al. 2017): per-class scale a and bias b by damped Newton.

    The NLL is convex in (a, b); the bias is determined up to a constant
    (the softmax ignores it), fixed by a least-squares step and sum(b) = 0.

    Examples
    --------
    >>> z = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    >>> f = fit_vector(Rows.of(z), np.array([0, 1, 1, 1, 0]))
    >>> f.nll_after < f.nll_before, f.converged
    (True, True)
    """
    c = data.c
    if c > VECTOR_MAX_CLASSES:
        raise SmxError(f"{data.source}: vector scaling fits 2C = {2 * c} parameters with a "
                       f"2C x 2C Hessian; at most {VECTOR_MAX_CLASSES} classes (use the "
                       "temperature method)")
    if data.rows == 0:
        raise SmxError(f"{data.source}: no rows to fit on")
    a, b = np.ones(c), np.zeros(c)
    nll0, g, h = _vector_pass(data, labels, a, b)
    cur, passes, it, converged = nll0, 1, 0, False
    for it in range(1, max_iter + 1):
        step = np.linalg.lstsq(h, -g, rcond=1e-12)[0]
        decrement = float(-g @ step)
        if decrement <= 1e-20 * max(1.0, abs(cur)):
            converged = True
            break
        t = 1.0
        while True:
            na, nb = a + t * step[:c], b + t * step[c:]
            nll, ng, nh = _vector_pass(data, labels, na, nb)
            passes += 1
            if nll <= cur + 1e-14 * abs(cur) or t < 1e-6:
                break
            t *= 0.5
        a, b, g, h = na, nb - nb.mean(), ng, nh
        done = cur - nll <= 1e-15 * max(1.0, abs(cur)) and decrement < 1e-12
        cur = nll
        if done:
            converged = True
            break
    return Fit("vector", data.rows, nll0, cur, it, passes, converged,
               gradient=float(np.max(np.abs(g))), scale=a, bias=b)
