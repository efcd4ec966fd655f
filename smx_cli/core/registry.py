"""The softmax family, declared once: one :class:`Variant` entry per member.

Each entry names its forward map, its log-map where it has one, its
vector-Jacobian product and Jacobian factors, and the properties callers ask
for (sparse output, stochastic, needs alpha / tau, accurate / emulated,
sums to one). Nothing outside this module compares variant names: callers
look an entry up with :func:`get` and read its properties.

:func:`run` computes any variant over (N, C) rows (softmax-like variants
through :func:`smx_cli.core.softmax.compute`, accurate or emulated; the sparse
maps and Gumbel samples through :mod:`smx_cli.core.sparse`), with an optional
mask. :func:`vjp`, :func:`jacobian_block` and :func:`jacobian_summary` give
each variant's gradient in closed form; :func:`check_gradients` checks it
against central differences (:mod:`smx_cli.core.gradcheck`).

Examples
--------
>>> [v.name for v in VARIANTS.values() if v.sparse_output]
['hardmax', 'sparsemax', 'entmax15', 'entmax']
>>> get("entmax15").alpha_of(VariantOptions())
1.5
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from smx_cli.core import accurate, emulate
from smx_cli.core import sparse as family
from smx_cli.core.precision import format_of, result_format
from smx_cli.core.result import KernelStats, SoftmaxResult


@dataclass
class VariantOptions:
    """Options only some variants read; each is checked where it is used."""

    alpha: float = 1.5     # entmax
    tau: float = 1.0       # gumbel temperature
    hard: bool = False     # gumbel straight-through one-hot
    samples: int = 1       # gumbel draws per row
    seed: int | None = None


@dataclass(frozen=True)
class Variant:
    """One member of the softmax family.

    Attributes
    ----------
    name, help : str
        The ``--variant`` name and its one-line help.
    kind : {'prob', 'logprob'}
        What the forward map gives: probabilities or log-probabilities.
    title : str
        What the values table calls the map (``softmax(x)``, ``sparsemax(x)``).
    forward : callable
        ``forward(z, masked, options) -> (values, support, soft)`` on float64
        (N, C) rows already divided by the temperature: the float64 map the
        finite-difference checks difference. ``support`` (non-zeros per row) and
        ``soft`` (the soft sample behind a hard Gumbel draw) may be None.
    log_map : callable or None
        ``log_map(x, axis, temperature)``: the accurate log of the map, where
        it has one (log-softmax for the softmax variants).
    vjp : callable
        ``vjp(x2, probs, g, temperature, options, soft) -> g^T J`` row by row.
    factors : callable
        ``factors(p, temperature, options) -> (a, b, c, scale)`` with
        J = (diag(a) - b c^T) / scale for one row of probabilities ``p``.
    accurate : callable or None
        The plain accurate kernel (:mod:`smx_cli.core.accurate`) used when
        no ``dtype`` asks for emulation; None: the variant runs in the input
        format's arithmetic (naive, lse) or is a sparse/stochastic map.
    emulate : callable or None
        The per-operation-rounding algorithm (:mod:`smx_cli.core.emulate`);
        None for the sparse and stochastic maps (rounded at input and output).
    fast : bool
        Has the opt-in fast mode (and the blocked fast kernels).
    shifted : bool
        Subtracts the row maximum first (naive does not, and overflows).
    sparse_output, stochastic, needs_alpha, needs_tau, sums_to_one : bool
    alpha : float or None
        The fixed entmax alpha (2 for sparsemax, 1.5 for entmax15).
    label : str
        The short description ``smx compare-stability`` shows (emulated variants).
    """

    name: str
    help: str
    kind: str
    title: str
    forward: Callable
    vjp: Callable
    factors: Callable
    log_map: Callable | None = None
    accurate: Callable | None = None
    emulate: Callable | None = None
    fast: bool = False
    shifted: bool = True
    sparse_output: bool = False
    stochastic: bool = False
    needs_alpha: bool = False
    needs_tau: bool = False
    sums_to_one: bool = True
    alpha: float | None = None
    label: str = ""

    @property
    def emulatable(self) -> bool:
        """Runs under ``dtype=`` emulation with every operation rounded."""
        return self.emulate is not None

    @property
    def log_output(self) -> bool:
        return self.kind == "logprob"

    def alpha_of(self, options: VariantOptions | None = None) -> float | None:
        """The entmax alpha of a sparse variant (2 for sparsemax), else None."""
        if self.needs_alpha:
            return (options or VariantOptions()).alpha
        return self.alpha

    def exact_zeros(self, options: VariantOptions | None = None) -> bool:
        """Whether zeros in the output are exact by design, not underflow."""
        return self.sparse_output or (self.stochastic and (options or VariantOptions()).hard)

    def gradient_scale(self, temperature: float, options: VariantOptions | None = None) -> float:
        """What the logits are divided by before the map (T, times tau for Gumbel)."""
        return temperature * ((options or VariantOptions()).tau if self.needs_tau else 1.0)


# ----------------------------------------------------------------------------
# forward maps, VJPs and Jacobian factors, one per shape of Jacobian


def _softmax_forward(name):
    def forward(z, masked, options):
        from smx_cli.core.softmax import compute

        return compute(z, name, masked=masked).values, None, None
    return forward


def _log_map(x, axis=-1, temperature=1.0):
    from smx_cli.core.softmax import log_softmax

    return log_softmax(x, axis, temperature)


def _softmax_vjp(x2, probs, g, temperature, options, soft):
    from smx_cli.core import grad

    # blocked inside, in float64 per block: g is not widened as a whole
    return grad.softmax_vjp(x2, g, temperature=temperature)


def _log_softmax_vjp(x2, probs, g, temperature, options, soft):
    from smx_cli.core import grad

    return grad.log_softmax_vjp(x2, g, temperature=temperature)


def _softmax_factors(p, temperature, options):
    return p, p, p, temperature


def _log_softmax_factors(p, temperature, options):
    return np.ones_like(p), np.ones_like(p), p, temperature


def _sparse_vjp(x2, probs, g, temperature, options, soft, *, alpha=None):
    a = alpha if alpha is not None else options.alpha
    return family.sparse_vjp(probs, np.asarray(g, dtype=np.float64), a) / temperature


def _sparse_factors(p, temperature, options, *, alpha=None):
    s = family.support_weights(p, alpha if alpha is not None else options.alpha)
    total = s.sum()
    return s, s, (s / total if total > 0 else s * 0), temperature


def _zero_vjp(x2, probs, g, temperature, options, soft):
    return np.zeros_like(np.asarray(g, dtype=np.float64))


def _zero_factors(p, temperature, options):
    return p * 0, p * 0, p * 0, 1.0


def _gumbel_vjp(x2, probs, g, temperature, options, soft):
    # the gradient of the (soft) sample, straight-through for a hard one
    g = np.asarray(g, dtype=np.float64)
    p = soft if soft is not None else np.asarray(probs, dtype=np.float64)
    t = temperature * options.tau
    return p * (g - (g * p).sum(axis=1, keepdims=True)) / t


def _gumbel_factors(p, temperature, options):
    return p, p, p, temperature * options.tau


def _with_alpha(fn, alpha):
    return lambda *args: fn(*args, alpha=alpha)


def _hardmax_forward(z, masked, options):
    return family.hardmax(z, masked), None, None


def _sparsemax_forward(z, masked, options):
    values, support = family.sparsemax(z, masked, return_support=True)
    return values, support, None


def _entmax15_forward(z, masked, options):
    values, support = family.entmax15(z, masked, return_support=True)
    return values, support, None


def _entmax_forward(z, masked, options):
    values, support = family.entmax_bisect(z, options.alpha, masked, return_support=True)
    return values, support, None


def _gumbel_forward(z, masked, options):
    if options.samples < 1:
        raise ValueError(f"samples must be >= 1, got {options.samples}")
    draws = family.gumbel_softmax(z, options.tau, False, options.samples, options.seed, masked)
    soft = draws.reshape(options.samples * z.shape[0], z.shape[1])  # -1 fails for 0 classes
    values = family.hardmax(soft, masked) if options.hard else soft
    return values, None, soft


def _softmax_like(name, help, label, emulated, accurate_kernel=None, fast=False, shifted=True):
    return Variant(name, help, "prob", "softmax", _softmax_forward(name), _softmax_vjp,
                   _softmax_factors, log_map=_log_map, accurate=accurate_kernel, emulate=emulated,
                   fast=fast, shifted=shifted, label=label)


_ENTRIES = (
    _softmax_like("stable", "max-shifted, divide-by-sum (accurate; default)",
                  "max-shifted, divide by sum", emulate.stable, accurate.softmax_block, fast=True),
    _softmax_like("naive", "exp(x)/sum(exp(x)), unshifted textbook formula (overflows)",
                  "exp(x)/sum exp(x), unshifted", emulate.naive, shifted=False),
    Variant("log", "log-softmax: log-probabilities (accurate)", "logprob", "log_softmax",
            _softmax_forward("log"), _log_softmax_vjp, _log_softmax_factors, log_map=_log_map,
            accurate=accurate.log_softmax_block, emulate=emulate.log, fast=True,
            sums_to_one=False, label="exp(log-softmax)"),
    _softmax_like("online", "one-pass online normaliser over column blocks (accurate)",
                  "online normaliser", emulate.online, accurate.online_block),
    _softmax_like("lse", "exp(x - logsumexp(x)), division-free textbook form",
                  "exp(x - logsumexp), no division", emulate.lse),
    Variant("hardmax", "one-hot of the argmax, ties split evenly (no gradient)", "prob",
            "hardmax", _hardmax_forward, _zero_vjp, _zero_factors, sparse_output=True),
    Variant("sparsemax",
            "Euclidean projection onto the simplex: exact zeros (Martins & Astudillo 2016)",
            "prob", "sparsemax", _sparsemax_forward, _with_alpha(_sparse_vjp, 2.0),
            _with_alpha(_sparse_factors, 2.0), sparse_output=True, alpha=2.0),
    Variant("entmax15", "1.5-entmax, exact sort-based (Peters et al. 2019)", "prob", "entmax15",
            _entmax15_forward, _with_alpha(_sparse_vjp, 1.5), _with_alpha(_sparse_factors, 1.5),
            sparse_output=True, alpha=1.5),
    Variant("entmax", "alpha-entmax by bisection (--alpha A > 1; 2 = sparsemax, ->1 = softmax)",
            "prob", "entmax", _entmax_forward, _sparse_vjp, _sparse_factors, sparse_output=True,
            needs_alpha=True),
    Variant("gumbel", "Gumbel-softmax sample(s): --tau, --hard, --samples K, --seed", "prob",
            "gumbel", _gumbel_forward, _gumbel_vjp, _gumbel_factors, stochastic=True,
            needs_tau=True),
)
#: every variant by name, in the order ``--variant`` lists them
VARIANTS: dict[str, Variant] = {v.name: v for v in _ENTRIES}
ALL_VARIANTS = tuple(VARIANTS)
#: variants whose zeros are exact by design, not underflow
SPARSE_OUTPUT = tuple(v.name for v in _ENTRIES if v.sparse_output)
#: the variants :func:`smx_cli.core.softmax.compute` runs (accurate or emulated)
SOFTMAX_VARIANTS = tuple(v.name for v in _ENTRIES if v.emulatable)
#: smx's accurate kernels when no dtype asks for emulation
ACCURATE_VARIANTS = tuple(v.name for v in _ENTRIES if v.accurate is not None)
#: variants that do not subtract the row maximum (their exp can overflow)
UNSHIFTED = tuple(v.name for v in _ENTRIES if not v.shifted)
HELP = {v.name: v.help for v in _ENTRIES}


def get(variant: str, among: tuple[str, ...] = ALL_VARIANTS) -> Variant:
    """The entry of ``variant``; a ValueError naming the choices when unknown.

    Examples
    --------
    >>> get("log").kind
    'logprob'
    >>> get("fast")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown variant 'fast'; choose one of stable, naive, log, ..., gumbel
    """
    if not isinstance(variant, str) or variant not in among:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(among)}")
    return VARIANTS[variant]


def exact_zeros(variant: str, options: VariantOptions | None = None) -> bool:
    """Whether ``variant``'s zeros are exact by design (sparse maps, hard Gumbel draws)."""
    return get(variant).exact_zeros(options)


# ----------------------------------------------------------------------------
# running a variant


@dataclass
class VariantRun:
    """A result and the extras some variants carry.

    Attributes
    ----------
    result : SoftmaxResult
        Values are (N, C), or (K*N, C) for K Gumbel samples (sample-major).
    support : ndarray (rows,) or None
        Non-zero entries per row, for the sparse variants.
    soft : ndarray or None
        For a hard Gumbel draw, the soft sample whose gradient the
        straight-through estimator passes back.
    logits : ndarray
        The (masked, per-sample repeated) logits the values belong to.
    samples : int
    """

    result: SoftmaxResult
    support: np.ndarray | None
    soft: np.ndarray | None
    logits: np.ndarray
    samples: int = 1


def run(x2: np.ndarray, variant: str = "stable", *, temperature: float = 1.0,
        dtype: str | None = None, masked: str = "nan", mask: np.ndarray | None = None,
        options: VariantOptions | None = None, fast: bool = False,
        threads: int | None = None) -> VariantRun:
    """Compute any variant of the family over (N, C) rows.

    With a ``mask`` (True = keep), masked entries get probability 0 and a
    fully masked row gives zeros (JAX's ``where=`` semantics), never NaN.

    Examples
    --------
    >>> r = run(np.array([[1.0, 2.0, 5.0]]), "sparsemax")
    >>> r.result.values.tolist(), r.support.tolist()
    ([[0.0, 0.0, 1.0]], [1])
    >>> m = np.array([[True, True, False]])
    >>> run(np.array([[1.0, 2.0, 5.0]]), mask=m).result.values.round(4).tolist()
    [[0.2689, 0.7311, 0.0]]
    """
    from smx_cli.core.softmax import compute

    opts = options or VariantOptions()
    spec = get(variant)
    if mask is not None:
        masked = "zeros"
    x = family.apply_mask(x2, mask) if mask is not None else x2
    if spec.emulatable:
        res = compute(x, variant, temperature, dtype, masked, fast=fast, threads=threads)
        return VariantRun(res, None, None, x)
    if fast:
        raise ValueError(f"fast mode applies to the stable and log variants, not {variant}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    fmt = format_of(dtype) if dtype else result_format(np.asarray(x).dtype)
    # sparse maps: the input is rounded to the format, the threshold is found in
    # float64, and the output rounded once (no per-operation emulation)
    xr = fmt.cast(np.asarray(x, dtype=np.float64)) if dtype else np.asarray(x)
    z = np.asarray(xr, dtype=np.float64) / temperature
    samples = opts.samples if spec.stochastic else 1
    with np.errstate(invalid="ignore", over="ignore"):
        values, support, soft = spec.forward(z, masked, opts)
    if samples > 1:
        xr = np.tile(np.asarray(xr), (samples, 1))
    out = values.astype(fmt.dtype) if not dtype else fmt.cast(values)
    res = SoftmaxResult(out, "prob", fmt, bool(dtype), variant, float(temperature), KernelStats())
    return VariantRun(res, support, soft if opts.hard else None, np.asarray(xr), samples)


def alpha_of(variant: str, options: VariantOptions | None = None) -> float | None:
    """The entmax alpha of a sparse variant (2 for sparsemax), else None."""
    return get(variant).alpha_of(options)


# ----------------------------------------------------------------------------
# gradients


def vjp(variant: str, x2: np.ndarray, probs: np.ndarray, g: np.ndarray, *,
        temperature: float = 1.0, options: VariantOptions | None = None,
        soft: np.ndarray | None = None) -> np.ndarray:
    """g^T J of ``variant`` at logits ``x2`` (outputs ``probs``), row by row.

    softmax-like variants use :func:`smx_cli.core.grad.softmax_vjp` (log:
    :func:`~smx_cli.core.grad.log_softmax_vjp`); sparse ones the closed form on
    their support; hardmax has zero gradient; a hard Gumbel draw passes the
    gradient of its soft sample (straight-through).
    """
    return get(variant).vjp(x2, probs, g, temperature, options or VariantOptions(), soft)


def jacobian_factors(variant: str, p: np.ndarray, *, temperature: float = 1.0,
                     options: VariantOptions | None = None):
    """J = (diag(a) - b c^T) / scale for the row's probabilities ``p``: (a, b, c, scale).

    Examples
    --------
    >>> a, b, c, scale = jacobian_factors("entmax15", np.array([0.0, 0.25, 0.75]))
    >>> a.tolist(), scale
    ([0.0, 0.5, 0.8660254037844386], 1.0)
    """
    p = np.asarray(p, dtype=np.float64)
    return get(variant).factors(p, temperature, options or VariantOptions())


def jacobian(variant: str, p_row: np.ndarray, *, temperature: float = 1.0,
             options: VariantOptions | None = None) -> np.ndarray:
    """The full C x C Jacobian d out_i / d x_j of ``variant`` at one row of probabilities."""
    return jacobian_block(variant, p_row, np.arange(len(p_row)), temperature=temperature,
                          options=options)


def jacobian_block(variant: str, p_row: np.ndarray, idx: np.ndarray, *, temperature: float = 1.0,
                   options: VariantOptions | None = None) -> np.ndarray:
    """The block J[idx, idx] of one row's Jacobian, without forming C x C.

    Every variant's Jacobian has the form (diag(a) - a c^T) / scale with
    sum(c) = 1: softmax a = c = p; log-softmax a = 1, c = p;
    sparsemax/entmax a = s, c = s / sum(s) with s = p^(2 - alpha) on the
    support. The diagonal a_i (1 - c_i) is taken as a_i sum_{j != i} c_j, so
    a saturated row keeps its tiny entries' relative accuracy.

    Examples
    --------
    >>> jacobian_block("stable", np.array([0.5, 0.5]), np.array([0, 1])).tolist()
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    from smx_cli.core import grad

    return grad.factored_block(*jacobian_factors(variant, p_row, temperature=temperature,
                                                 options=options), idx)


def jacobian_summary(variant: str, p_row: np.ndarray, *, temperature: float = 1.0,
                     options: VariantOptions | None = None) -> tuple[float, float]:
    """(largest |entry|, Frobenius norm) of one row's Jacobian, in O(C).

    ||J||_F^2 = sum_i (a_i sum_{j != i} c_j)^2 + sum_i a_i^2 sum_{j != i} c_j^2;
    the largest entry is on the diagonal or is the largest a_i c_j, i != j.

    Examples
    --------
    >>> [round(v, 6) for v in jacobian_summary("stable", np.array([0.5, 0.5]))]
    [0.25, 0.5]
    """
    from smx_cli.core import grad

    return grad.factored_summary(*jacobian_factors(variant, p_row, temperature=temperature,
                                                   options=options))


def check_gradients(variant: str, x2: np.ndarray, *, temperature: float = 1.0,
                    options: VariantOptions | None = None, rows: int = 8, seed: int = 0):
    """Finite-difference checks of this variant's gradient (and softmax/log-softmax).

    Returns a list of :class:`~smx_cli.core.gradcheck.GradCheck`. Sparse
    variants are also checked with their closed-form VJP against central
    differences of the map itself (:func:`smx_cli.core.gradcheck.check_map`).
    """
    from smx_cli.core import grad, gradcheck

    opts = options or VariantOptions()
    spec = get(variant)
    checks = grad.check_grad(x2, temperature=temperature, rows=rows, seed=seed,
                             functions=("softmax", "log"))
    if spec.alpha_of(opts) is not None:
        def forward(v):
            return spec.forward(v[None] / temperature, "nan", opts)[0][0]

        def analytic(x, p, g):
            return spec.vjp(x[None], p[None], g[None], temperature, opts, None)[0]

        checks.append(gradcheck.check_map(variant, x2, forward, analytic, rows=rows, seed=seed))
    return checks
