"""What a softmax computation returns, and the argument checks every entry point shares.

:class:`SoftmaxResult` (values and what happened on the way, :class:`KernelStats`)
is what :func:`smx_cli.core.softmax.compute` and
:func:`smx_cli.core.registry.run` return; :func:`as_rows` / :func:`from_rows`
turn any array into (N, C) rows of classes and back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smx_cli.core.precision import Format

MASKED_POLICIES = ("nan", "zeros")


@dataclass
class KernelStats:
    """Events counted while computing, for the diagnostics panel.

    Attributes
    ----------
    exp_overflow : int
        exp of a finite argument that came out as inf in the working format.
    exp_underflow : int
        exp of a finite argument that came out as 0 in the working format.
    sum_overflow_rows : int
        Rows whose sum of exponentials became inf.
    nonfinite_input_rows : int
        Rows with a NaN or +inf logit (or a masked row given NaN) as the
        compiled kernel counted them while computing the values; -1 when
        nothing counted them. 0 lets the diagnostics skip reading the logits
        of rows whose values show no -inf logit (no 0 probability).
    """

    exp_overflow: int = 0
    exp_underflow: int = 0
    sum_overflow_rows: int = 0
    nonfinite_input_rows: int = -1

    def add(self, other: "KernelStats") -> None:
        self.exp_overflow += other.exp_overflow
        self.exp_underflow += other.exp_underflow
        self.sum_overflow_rows += other.sum_overflow_rows
        unknown = self.nonfinite_input_rows < 0 or other.nonfinite_input_rows < 0
        self.nonfinite_input_rows = (-1 if unknown else
                                     self.nonfinite_input_rows + other.nonfinite_input_rows)


@dataclass
class SoftmaxResult:
    """What :func:`compute` returns: values plus what happened on the way.

    Attributes
    ----------
    values : ndarray
        (N, C) probabilities, or log-probabilities when ``kind == "logprob"``.
    kind : str
        ``"prob"`` or ``"logprob"``.
    fmt : Format
        The format of ``values``.
    emulated : bool
        True when the variant ran in the format's own arithmetic.
    variant : str
    temperature : float
    stats : KernelStats
    fast : bool
        True when computed by the opt-in fast mode (input-format arithmetic).
    engine : str
        What computed it: "numpy" or the compiled core ("native-avx512", ...;
        see :func:`smx_cli.core.native.engine`).
    """

    values: np.ndarray
    kind: str
    fmt: Format
    emulated: bool
    variant: str
    temperature: float
    stats: KernelStats = field(default_factory=KernelStats)
    fast: bool = False
    engine: str = "numpy"



# ----------------------------------------------------------------------------
# argument checks shared by the public functions


def check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def check_masked(masked: str) -> str:
    if masked not in MASKED_POLICIES:
        raise ValueError(f"masked must be 'nan' or 'zeros', got {masked!r}")
    return masked


def as_rows(x, axis: int = -1) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Move ``axis`` last and flatten the rest: (N, C) rows of classes.

    Returns the 2-D view, the moved shape to restore, and the normalised axis.
    A 0-d input is one row of one class.
    """
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {a.ndim} dimension(s)")
    axis = axis % a.ndim
    moved = np.moveaxis(a, axis, -1)
    # not reshape(-1, C): with C == 0 the row count cannot be inferred
    n = int(np.prod(moved.shape[:-1], dtype=np.int64))
    return moved.reshape(n, moved.shape[-1]), moved.shape, axis


def from_rows(values: np.ndarray, moved_shape: tuple[int, ...], axis: int, ndim: int) -> np.ndarray:
    """Undo :func:`as_rows`."""
    out = values.reshape(moved_shape)
    if ndim == 0:
        return out.reshape(())
    return np.moveaxis(out, -1, axis)


def floating(a: np.ndarray) -> np.ndarray:
    """``a`` as a real float array: integers and booleans become float64.

    Complex input is refused (a ValueError), never silently cut to its real
    part; so are strings and objects.

    Examples
    --------
    >>> floating(np.array([1, 2])).dtype
    dtype('float64')
    >>> floating(np.array([1 + 2j]))
    Traceback (most recent call last):
    ...
    ValueError: complex input is not supported (dtype complex128): pass x.real or abs(x)
    """
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype.kind == "c":
        raise ValueError(f"complex input is not supported (dtype {a.dtype}): pass x.real or abs(x)")
    if a.dtype.kind not in "fV":
        raise ValueError(f"logits must be real numbers, got an array of dtype {a.dtype}")
    return a


def check_class_weights(weight, n_classes: int, source: str = "weight") -> np.ndarray:
    """Per-class weights as float64 (C,), validated once for the API and the CLI.

    There must be one weight per class, each finite and >= 0; ``source``
    names where they came from in the error (``weight``, ``--weight``, a file).

    Examples
    --------
    >>> check_class_weights([1, 2, 0.5], 3).tolist()
    [1.0, 2.0, 0.5]
    >>> check_class_weights([1, -2], 2)
    Traceback (most recent call last):
    ...
    ValueError: weight: weight 1 is -2.0; weights must be finite and >= 0
    """
    w = np.asarray(weight, dtype=np.float64).ravel()
    if w.size != n_classes:
        raise ValueError(f"{source}: {w.size} class weights for {n_classes} classes")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{source}: weight {i} is {float(w[i])!r}; weights must be "
                         "finite and >= 0")
    return w
