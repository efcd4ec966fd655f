"""Calibration metrics: is a 90 % confidence right 90 % of the time?

Conventions (every table and JSON document states them):

* **Top-label**: a sample's confidence is its largest probability, and it
  is correct when the argmax (the first one, on ties) is the label.
* **Equal-width bins** (``binning='width'``): M bins ``(lo, hi]`` with
  ``lo = k/M``; a confidence of exactly 0 goes to the first bin and of
  exactly 1.0 to the last (not to a hidden extra bin). Empty bins are kept
  (count 0, accuracy and confidence NaN) and weigh nothing.
* **Equal-mass bins** (``binning='mass'``): the confidences sorted (ties by
  row order) and cut into M runs of N // M or N // M + 1 samples, the first
  N % M runs one longer (``numpy.array_split``); a bin's ``(lo, hi]`` is
  (its smallest, its largest) confidence.
* ECE with norm ``l1`` = sum_b (n_b / N) |acc_b - conf_b|; ``l2`` =
  sqrt(sum_b (n_b / N) (acc_b - conf_b)^2); ``max`` = max over non-empty
  bins of |acc_b - conf_b|. MCE is the max norm on equal-width bins, ACE
  (adaptive ECE, Nixon et al. 2019) the l1 norm on equal-mass bins.
* Over/under-confidence split: ECE (l1) = over + under, where over sums
  the bins whose confidence exceeds their accuracy.
* Class-wise ECE (Kull et al. 2019): (1/C) sum_k sum_b |pos_kb - sum p_kb| / N
  over M equal-width bins of each class's probability p_k.
* Brier score: mean over samples of sum_k (p_k - [k = y])^2, in [0, 2].
* Debiased L2 calibration error (Kumar et al. 2019, "Verified uncertainty
  calibration"): on M equal-mass bins, sqrt(max(0, sum_b (n_b / N)
  ((acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)))), a bin of fewer
  than 2 samples adding 0. Its confidence interval is the 2.5 and 97.5
  percentiles over B bootstrap resamples of the rows (bins re-cut on each
  resample), drawn with ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BINNINGS = ("width", "mass")
NORMS = ("l1", "l2", "max")
EDGE_RULE = "(lo, hi]; confidence 0 in the first bin, exactly 1.0 in the last"


@dataclass
class Bins:
    """Reliability bins: per bin its range, count, mean confidence and accuracy."""

    scheme: str
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray
    conf: np.ndarray
    acc: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """acc - conf per bin (negative: over-confident); NaN for an empty bin."""
        return self.acc - self.conf

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "lo": _nan_list(self.lo), "hi": _nan_list(self.hi),
                "count": self.count.tolist(), "confidence": _nan_list(self.conf),
                "accuracy": _nan_list(self.acc)}


def _nan_list(a) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def _check(conf, correct):
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if conf.ndim != 1 or conf.shape != correct.shape:
        raise ValueError(f"confidences {conf.shape} and correctness {correct.shape} must be "
                         "two vectors of one length")
    if conf.size and not (np.all(conf >= 0) and np.all(conf <= 1)):
        i = int(np.flatnonzero(~((conf >= 0) & (conf <= 1)))[0])
        raise ValueError(f"confidence {i} is {conf[i]!r}, not in [0, 1]")
    return conf, correct


def _check_bins(m: int) -> int:
    if int(m) != m or m < 1:
        raise ValueError(f"the number of bins must be an integer >= 1, got {m!r}")
    return int(m)


def width_index(conf: np.ndarray, m: int) -> np.ndarray:
    """Equal-width bin of each confidence, edges (lo, hi], 0 in bin 0, 1.0 in bin M-1.

    Examples
    --------
    >>> width_index(np.array([0.0, 0.1, 0.5, 0.50001, 1.0]), 2).tolist()
    [0, 0, 0, 1, 1]
    """
    edges = np.linspace(0.0, 1.0, _check_bins(m) + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, m - 1)


def width_bins(conf, correct, m: int = 15) -> Bins:
    """Equal-width reliability bins (see the module notes for the conventions).

    Examples
    --------
    >>> b = width_bins([0.55, 0.95, 1.0], [True, False, True], m=2)
    >>> b.count.tolist(), b.acc.tolist()
    ([0, 3], [nan, 0.6666666666666666])
    """
    conf, correct = _check(conf, correct)
    m = _check_bins(m)
    idx = width_index(conf, m)
    count = np.bincount(idx, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.bincount(idx, weights=conf, minlength=m) / count
        a = np.bincount(idx, weights=correct, minlength=m) / count
    edges = np.linspace(0.0, 1.0, m + 1)
    return Bins("width", edges[:-1], edges[1:], count, c, a)


def _mass_cuts(n: int, m: int) -> np.ndarray:
    """Start of each of M equal-mass runs of n sorted samples (array_split's)."""
    q, r = divmod(n, m)
    sizes = np.full(m, q)
    sizes[:r] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def mass_bins(conf, correct, m: int = 15) -> Bins:
    """Equal-mass reliability bins: M runs of the sorted confidences.

    Examples
    --------
    >>> b = mass_bins([0.9, 0.6, 0.8, 0.7], [1, 0, 1, 1], m=2)
    >>> b.lo.tolist(), b.hi.tolist(), b.acc.tolist()
    ([0.6, 0.8], [0.7, 0.9], [0.5, 1.0])
    """
    conf, correct = _check(conf, correct)
    m = _check_bins(m)
    order = np.argsort(conf, kind="stable")
    return _mass_from_sorted(conf[order], correct[order], m)


def _mass_from_sorted(cs, ys, m) -> Bins:
    n = len(cs)
    cuts = _mass_cuts(n, m)
    count = np.diff(cuts)
    csum = np.concatenate([[0.0], np.cumsum(cs)])
    ysum = np.concatenate([[0.0], np.cumsum(ys, dtype=np.float64)])
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.diff(csum[cuts]) / count
        a = np.diff(ysum[cuts]) / count
    lo = np.where(count > 0, cs[np.minimum(cuts[:-1], max(n - 1, 0))] if n else np.nan, np.nan)
    hi = np.where(count > 0, cs[np.maximum(cuts[1:] - 1, 0)] if n else np.nan, np.nan)
    return Bins("mass", lo, hi, count, c, a)


def ece_of(bins: Bins, norm: str = "l1") -> float:
    """The calibration error of reliability bins under ``norm`` (l1, l2 or max).

    Examples
    --------
    >>> b = width_bins([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], m=10)
    >>> round(ece_of(b), 6), round(ece_of(b, "max"), 6)
    (0.4, 0.4)
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    n = bins.count.sum()
    full = bins.count > 0
    if n == 0:
        return math.nan
    gap = np.abs(bins.gap[full])
    w = bins.count[full] / n
    if norm == "l1":
        return float(np.sum(w * gap))
    if norm == "l2":
        return float(math.sqrt(np.sum(w * gap * gap)))
    return float(gap.max())


def debiased_l2(bins: Bins) -> float:
    """Kumar et al.'s debiased L2 calibration error of (equal-mass) bins.

    Each bin's squared gap minus the variance of its accuracy estimate,
    acc (1 - acc) / (n - 1); bins of fewer than 2 samples add 0; the square
    root of the (clipped at 0) weighted sum.

    Examples
    --------
    >>> b = mass_bins([0.7] * 4, [1, 1, 0, 1], m=1)
    >>> round(debiased_l2(b), 6)   # gap 0.05, 0.0025 - 0.1875/3 < 0
    0.0
    """
    n = bins.count.sum()
    ok = bins.count >= 2
    if n == 0:
        return math.nan
    a, c, k = bins.acc[ok], bins.conf[ok], bins.count[ok]
    sq = np.sum(k / n * ((a - c) ** 2 - a * (1 - a) / (k - 1)))
    return float(math.sqrt(max(float(sq), 0.0)))


def bootstrap_debiased(conf, correct, m: int, b: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of :func:`debiased_l2` on equal-mass bins.

    The rows are sorted by confidence (stable) once; each resample draws N
    positions of the sorted rows with replacement
    (``numpy.random.default_rng(seed).integers(0, N, N)`` per resample) and
    re-cuts the M equal-mass bins on it. The resample is never formed nor
    sorted: from each row's multiplicity, the bins' sums are prefix sums
    read at the M + 1 cut positions. Cost O(B N).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1.0, 2000)
    >>> lo, hi = bootstrap_debiased(conf, rng.random(2000) < conf, 10, 200, seed=1)
    >>> 0 <= lo <= hi < 0.1
    True
    """
    conf, correct = _check(conf, correct)
    n = len(conf)
    if b <= 0 or n == 0:
        return (math.nan, math.nan)
    order = np.argsort(conf, kind="stable")
    cs, ys = conf[order], correct[order].astype(np.float64)
    rng = np.random.default_rng(seed)
    cuts = _mass_cuts(n, m)
    k = np.diff(cuts).astype(np.float64)
    out = np.empty(b)
    for r in range(b):
        mult = np.bincount(rng.integers(0, n, size=n), minlength=n)
        cm = np.cumsum(mult)            # resample items from sorted rows 0..i
        # sorted row holding resample position p (0-based) is the first i with cm_i > p
        i = np.minimum(np.searchsorted(cm, cuts, side="left"), n - 1)
        before = np.where(i > 0, cm[np.maximum(i - 1, 0)], 0)
        sc = _prefix_at(mult * cs, i) + (cuts - before) * cs[i]
        sy = _prefix_at(mult * ys, i) + (cuts - before) * ys[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            c, a = np.diff(sc) / k, np.diff(sy) / k
            terms = k / n * ((a - c) ** 2 - a * (1 - a) / (k - 1))
        out[r] = math.sqrt(max(float(np.sum(terms[k >= 2])), 0.0))
    lo, hi = np.percentile(out, [2.5, 97.5])
    return float(lo), float(hi)


def _prefix_at(w: np.ndarray, i: np.ndarray) -> np.ndarray:
    """sum(w[:i_k]) for each of the non-decreasing indices i (segment sums, no cumsum of w)."""
    starts = np.concatenate([[0], i])
    ends = np.concatenate([i, [len(w)]])
    seg = np.zeros(len(starts))
    full = starts < ends
    if full.any():
        # reduceat sums from each start to the next given start: with the empty
        # segments left out, that is exactly each segment
        seg[full] = np.add.reduceat(w, starts[full])
    return np.cumsum(seg)[:-1]


def classwise_ece(count: np.ndarray, psum: np.ndarray, pos: np.ndarray) -> float:
    """Class-wise ECE from C x M bins: (1/C) sum_k sum_b |pos_kb - psum_kb| / N.

    ``count``, ``psum``, ``pos``: per class and bin, the samples, the sum of
    the class's probability over them and how many have that class as label.

    Examples
    --------
    >>> count = np.array([[1, 1], [1, 1]])            # 2 samples, 2 classes, 2 bins
    >>> psum = np.array([[0.3, 0.7], [0.3, 0.7]])
    >>> pos = np.array([[0, 1], [0, 1]])
    >>> round(classwise_ece(count, psum, pos), 6)     # (0.3 + 0.3) / 2 per class
    0.3
    """
    c = count.shape[0]
    n = count[0].sum() if c else 0
    if not c or not n:
        return math.nan
    return float(np.sum(np.abs(pos - psum)) / (n * c))


@dataclass
class Metrics:
    """Every calibration number of one set of probabilities (see the module notes)."""

    rows: int
    classes: int
    accuracy: float
    nll: float
    brier: float
    ece: float
    mce: float
    ace: float
    classwise_ece: float
    debiased_l2: float
    debiased_l2_ci: tuple[float, float]
    over_confidence: float
    under_confidence: float
    bins: Bins
    mass: Bins
    n_bins: int
    binning: str
    norm: str
    bootstrap: int
    seed: int
    conventions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: _num(getattr(self, k)) for k in (
            "rows", "classes", "accuracy", "nll", "brier", "ece", "mce", "ace",
            "classwise_ece", "debiased_l2", "over_confidence", "under_confidence")}
        d["debiased_l2_ci95"] = [_num(v) for v in self.debiased_l2_ci]
        d["bins"] = self.bins.to_dict()
        d["mass_bins"] = self.mass.to_dict()
        d.update(self.conventions)
        return d


def _num(v):
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None


def metrics(conf, correct, *, nll: float, brier: float, classes: int, cw=None, bins: int = 15,
            binning: str = "width", norm: str = "l1", bootstrap: int = 100,
            seed: int = 0) -> Metrics:
    """All metrics from per-sample confidences and correctness (plus NLL and Brier).

    ``nll`` and ``brier`` are the means; ``cw`` the class-wise (count,
    psum, pos) bins or None.

    Examples
    --------
    >>> m = metrics([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], nll=0.5, brier=0.3, classes=2,
    ...             bins=10, bootstrap=0)
    >>> m.accuracy, round(m.ece, 6), round(m.over_confidence, 6)
    (0.75, 0.4, 0.2)
    """
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {', '.join(BINNINGS)}, got {binning!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    conf, correct = _check(conf, correct)
    bins = _check_bins(bins)
    wb = width_bins(conf, correct, bins)
    mb = mass_bins(conf, correct, bins)
    chosen = wb if binning == "width" else mb
    n = len(conf)
    full = chosen.count > 0
    gap = chosen.conf[full] - chosen.acc[full]
    w = chosen.count[full] / max(n, 1)
    return Metrics(
        rows=n, classes=classes, accuracy=float(correct.mean()) if n else math.nan,
        nll=nll, brier=brier, ece=ece_of(chosen, norm), mce=ece_of(wb, "max"),
        ace=ece_of(mb, "l1"),
        classwise_ece=classwise_ece(*cw) if cw is not None else math.nan,
        debiased_l2=debiased_l2(mb),
        debiased_l2_ci=bootstrap_debiased(conf, correct, bins, bootstrap, seed),
        over_confidence=float(np.sum(w * np.maximum(gap, 0))) if n else math.nan,
        under_confidence=float(np.sum(w * np.maximum(-gap, 0))) if n else math.nan,
        bins=chosen if binning == "width" else wb, mass=mb, n_bins=bins, binning=binning,
        norm=norm, bootstrap=bootstrap, seed=seed,
        conventions={"n_bins": bins, "binning": binning, "norm": norm,
                     "edge_rule": EDGE_RULE, "top_label": True,
                     "brier_formula": "mean of sum_k (p_k - [k = y])^2",
                     "classwise_binning": "width", "debiased_binning": "mass",
                     "bootstrap": bootstrap, "seed": seed})


def ece(probs, labels, bins: int = 15, binning: str = "width", norm: str = "l1") -> float:
    """Top-label expected calibration error of probabilities (N, C) against labels.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    >>> round(ece(p, [0, 1, 1, 1], bins=10), 6)
    0.4
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probabilities {p.shape} need one label per row, got {y.shape}")
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    b = width_bins(conf, correct, bins) if binning == "width" else mass_bins(conf, correct, bins)
    return ece_of(b, norm)
