"""Validation of cross-entropy's options, targets and probability inputs.

Every check raises ValueError naming the index and value at fault (the CLI
prefixes the file). Re-exported by :mod:`smx_cli.core.xent`, where these
names have always been importable.
"""
from __future__ import annotations

import numpy as np

REDUCTIONS = ("mean", "sum", "none")
INPUT_KINDS = ("logits", "log-probs", "probs")

def check_options(reduction: str, label_smoothing: float, input_kind: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not (0.0 <= float(label_smoothing) <= 1.0):
        raise ValueError(f"label smoothing must be in [0, 1], got {float(label_smoothing)!r}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")


def check_target(target, n_rows: int, n_classes: int, ignore_index: int,
                 tolerance: float | None = 1e-6,
                 defer_prob: bool = False) -> tuple[str, np.ndarray]:
    """Tell index targets from probability targets and validate them.

    Returns ``("index", int64 labels)`` or ``("prob", float64 (N, C))``.
    As in PyTorch, a floating target of the logits' shape (N, C) holds
    probabilities, whatever its values (so with C = 1 an (N, 1) float target
    is a probability column, not class indices); anything else holds class
    indices: N integers (integral floats are accepted, and an (N, 1) column),
    each in [0, C) or equal to ``ignore_index``. Probability targets' rows
    must be non-negative and sum to 1 within ``tolerance`` (None: any sum,
    as PyTorch takes them).

    With ``defer_prob`` (the compiled kernel will sweep the targets anyway)
    float32 and float64 probability targets come back as they are (no
    float64 copy) and unchecked: the caller passes the kernel's row sums to
    :func:`check_target_sums`, which raises the same errors.
    """
    t = np.asarray(target)
    if t.ndim == 2 and t.shape == (n_rows, n_classes) and t.dtype.kind == "f":
        if ignore_index >= 0:
            raise ValueError(f"ignore_index={ignore_index} is not supported with probability "
                             "targets (as in PyTorch); leave it at -100")
        if defer_prob and t.dtype in (np.float32, np.float64):
            return "prob", t
        t = t.astype(np.float64)
        check_target_sums(t, _sum_or_nan(t), tolerance)
        return "prob", t
    return _check_labels(t, n_rows, n_classes, ignore_index)


def _sum_or_nan(t: np.ndarray) -> np.ndarray:
    """Row sums of float64 targets, NaN where a row has a non-finite or negative target."""
    with np.errstate(invalid="ignore"):
        sums = t.sum(axis=1)
        sums[~(np.isfinite(t) & (t >= 0)).all(axis=1)] = np.nan
    return sums


def check_target_sums(t: np.ndarray, sums: np.ndarray, tolerance: float | None) -> None:
    """Refuse probability targets from their row sums (NaN: a negative or NaN target).

    ``sums`` comes from the compiled kernel's sweep (``native.xent_prob_rows``'
    ``target_sum``) or from :func:`check_target`; a non-finite sum marks a row
    with a target that is not finite and >= 0, which is found and named here
    (one row is read). Otherwise each sum must be within ``tolerance`` of 1
    (None: any sum).

    Examples
    --------
    >>> check_target_sums(np.array([[0.5, 0.5], [0.25, -1.0]]), np.array([1.0, np.nan]), 1e-6)
    Traceback (most recent call last):
    ...
    ValueError: probability target row 1, class 1 is -1.0: targets must be finite and >= 0
    """
    bad_rows = np.flatnonzero(~np.isfinite(sums))
    if bad_rows.size:
        i = int(bad_rows[0])
        row = np.asarray(t[i], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            j = int(np.flatnonzero(~np.isfinite(row) | (row < 0))[0])
        raise ValueError(f"probability target row {i}, class {j} is {float(row[j])!r}: "
                         "targets must be finite and >= 0")
    if tolerance is None:
        return
    off = np.flatnonzero(np.abs(sums - 1) > tolerance)
    if off.size:
        i = int(off[0])
        raise ValueError(f"probability target row {i} sums to {float(sums[i])!r}, not 1 "
                         f"(tolerance {tolerance:g}); {off.size} row(s) are off")


def _check_labels(t: np.ndarray, n_rows: int, n_classes: int,
                  ignore_index: int) -> tuple[str, np.ndarray]:
    """Class-index targets (check_target's second half)."""
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"labels have shape {t.shape}: expected {n_rows} class indices, or "
                         f"probability targets of the logits' shape ({n_rows}, {n_classes})")
    if t.shape[0] != n_rows:
        raise ValueError(f"{t.shape[0]} labels for {n_rows} rows of logits")
    if t.dtype.kind == "f":
        frac = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
        if frac.size:
            i = int(frac[0])
            raise ValueError(f"label {i} is {float(t[i])!r}, not an integer class index")
        # out of int64's range: name the value before converting wraps it
        huge = np.flatnonzero(np.abs(t) >= 2.0**62)
        if huge.size:
            i = int(huge[0])
            raise ValueError(f"label {i} is {float(t[i])!r}, outside [0, {n_classes}) and not the "
                             f"ignore index {ignore_index}")
    elif t.dtype.kind not in "iub":
        raise ValueError(f"labels have dtype {t.dtype}: expected integer class indices")
    elif t.dtype.kind == "u" and t.size and int(t.max()) >= 2**63:
        i = int(np.argmax(t))
        raise ValueError(f"label {i} is {int(t[i])}, outside [0, {n_classes})")
    labels = t.astype(np.int64)
    bad = np.flatnonzero(((labels < 0) | (labels >= n_classes)) & (labels != ignore_index))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"label {i} is {labels[i]}, outside [0, {n_classes}) and not the "
                         f"ignore index {ignore_index}; {bad.size} label(s) out of range")
    return "index", labels


# ----------------------------------------------------------------------------
# --input-kind probs

#: --input-kind probs: values in [0, 1] and row sums within this of 1 (text
#: written with 6 significant digits passes; 5 and 0.5 do not)
PROBS_TOLERANCE = 1e-3


class NotProbabilities(ValueError):
    """``input_kind='probs'`` got values that are not probabilities (names the row)."""


def check_probs(xb: np.ndarray, start: int = 0) -> None:
    """Refuse rows that are not probability vectors, naming the first bad row.

    Each value must lie in [0, 1] and each row sum to 1 within
    :data:`PROBS_TOLERANCE`; NaN is left to the NaN count (reported as such).
    ``start`` is the index of ``xb``'s first row in the whole array.

    Examples
    --------
    >>> check_probs(np.array([[0.25, 0.75], [5.0, 0.5]]))
    Traceback (most recent call last):
    ...
    smx_cli.core.xent_checks.NotProbabilities: row 1, class 0: 5.0 is not a probability (--input-kind probs needs values in [0, 1]); give logits with --input-kind logits
    """
    x = np.asarray(xb, dtype=np.float64)
    if not x.size:
        return
    with np.errstate(invalid="ignore"):
        bad = (x < 0) | (x > 1)  # NaN compares False
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise NotProbabilities(
                f"row {start + i}, class {j}: {x[i, j].item()!r} is not a probability "
                "(--input-kind probs needs values in [0, 1]); give logits with "
                "--input-kind logits")
        sums = x.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > PROBS_TOLERANCE)
    if off.size:
        i = int(off[0])
        raise NotProbabilities(
            f"row {start + i} sums to {sums[i].item():.6g}, not 1 (--input-kind probs: each "
            f"row must sum to 1 within {PROBS_TOLERANCE:g}); normalise it, or give logits "
            "with --input-kind logits")
