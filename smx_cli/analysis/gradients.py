"""What ``smx softmax --grad/--upstream/--check-grad`` shows, computed (no rendering).

:func:`gradient_report` gathers the Jacobian blocks of the first rows, the
vector-Jacobian product of an upstream gradient, the saturation of every row
and the finite-difference checks into one :class:`GradientReport`;
:mod:`smx_cli.render.grad` draws it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smx_cli.core import grad as grad_mod
from smx_cli.core import registry
from smx_cli.core.softmax import as_rows
from smx_cli.errors import SmxError


@dataclass
class JacobianBlock:
    """One row's Jacobian over the classes ``idx`` (all of them when narrow)."""

    row: int
    idx: np.ndarray
    jac: np.ndarray
    largest: float
    frobenius: float


@dataclass
class GradientReport:
    kind: str
    classes: int
    rows: int
    jacobians: list[JacobianBlock] = field(default_factory=list)
    saturation: object | None = None
    checks: list | None = None

    @property
    def failed(self) -> bool:
        return bool(self.checks) and not all(c.passed for c in self.checks)


def upstream_vjp(g_values: np.ndarray, g_source: str, rows, run: registry.VariantRun,
                 variant: str, temperature: float, options) -> np.ndarray:
    """The VJP ``g J`` of an upstream gradient, checked against the logits' layout."""
    try:
        g2, _, _ = as_rows(g_values, rows.axis if rows.ndim > 1 else -1)
    except ValueError as exc:
        raise SmxError(f"{g_source}: {exc}") from None
    if g2.shape != rows.x2.shape or g_values.ndim != max(rows.ndim, 1) and rows.ndim > 0:
        raise SmxError(f"{g_source}: upstream gradient has shape {g_values.shape}, "
                       f"the logits {rows.loaded.values.shape}: they must match")
    if run.samples > 1:
        raise SmxError("--upstream takes one Gumbel sample per row: drop --samples")
    return registry.vjp(variant, run.logits, run.result.values, g2, temperature=temperature,
                        options=options, soft=run.soft)


def gradient_report(run: registry.VariantRun, variant: str, *, temperature: float,
                    dtype: str | None, options, jacobian_rows: int = 0, full_up_to: int = 12,
                    block: int = 5, check: bool = False) -> GradientReport:
    """Jacobians of the first ``jacobian_rows`` rows (whole when a row has at most
    ``full_up_to`` classes, else the block of its top ``block``), the saturation panel's numbers and, with ``check``, the
    finite-difference checks."""
    values = run.result.values
    x = run.logits
    n, c = values.shape
    entry = registry.get(variant)
    kind = "log" if entry.log_output else "softmax"
    report = GradientReport(kind, c, n)
    for i in range(min(n, jacobian_rows)):
        p_row = np.asarray(values[i], dtype=np.float64)
        if kind == "log":
            p_row = np.exp(p_row)
        if run.soft is not None:  # a hard Gumbel draw: the soft sample's Jacobian
            p_row = run.soft[i]
        idx = (np.arange(c) if c <= full_up_to
               else np.sort(np.argsort(-p_row, kind="stable")[:min(block, full_up_to)]))
        jac = registry.jacobian_block(variant, p_row, idx, temperature=temperature,
                                      options=options)
        largest, fro = registry.jacobian_summary(variant, p_row, temperature=temperature,
                                                 options=options)
        report.jacobians.append(JacobianBlock(i, idx, jac, largest, fro))
    if not entry.sparse_output:
        report.saturation = grad_mod.saturation(x, entry.gradient_scale(temperature, options),
                                                dtype)
    if check:
        report.checks = registry.check_gradients(variant, x, temperature=temperature,
                                                 options=options)
        if report.saturation is None:
            report.saturation = grad_mod.saturation(x, temperature, dtype)
    return report
