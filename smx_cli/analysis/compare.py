"""Every softmax variant in every format, measured against an exact reference.

The numerics behind ``smx compare-stability``: :func:`compare_stability` runs
each variant (:data:`ALL_VARIANTS`: the registry's textbook variants emulated
in each format, and ``smx``, smx's own accurate path) in each format and
measures it (:mod:`smx_cli.analysis.measure`, where the measures are defined);
:func:`~smx_cli.analysis.sweep.sweep` finds where each breaks as the logits
grow. No printing, no click, no rich.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from smx_cli.analysis.measure import (ACCURATE, ALL_VARIANTS, DEFAULT_DTYPES, TEXTBOOK,  # noqa: F401
                                      ULP_OK, VARIANT_LABELS, WORST_COLUMNS, Thresholds,
                                      VariantReport, WorstRow, check_names, measure, prepare,
                                      round_to, thresholds)
from smx_cli.analysis.sweep import (MAX_SCALE, Sweep, SweepEntry, normal_sample,  # noqa: F401
                                    paper_row_errors, scales_up_to, sweep)
from smx_cli.core.precision import FORMATS

#: the four seed examples of every softmax tutorial
SEED_ROWS = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0], [1000.0, 2000.0, 3000.0],
                      [-1000.0, 1.0, 10000.0]])
SEED_LABEL = "the seed examples [1,2,3] [1,2,5] [1000,2000,3000] [-1000,1,10000]"


@dataclass
class Comparison:
    """Every requested variant x format, in table order (format-major).

    Attributes
    ----------
    n_rows, n_cols : int
        The shape of the (N, C) rows compared.
    temperature : float
    reports : list of VariantReport
    thresholds : dict of str -> Thresholds
    """

    n_rows: int
    n_cols: int
    temperature: float
    reports: list[VariantReport]
    thresholds: dict[str, Thresholds] = field(default_factory=dict)

    def report(self, variant: str, dtype: str) -> VariantReport:
        """The report of one variant in one format."""
        found = {(r.variant, r.dtype): r for r in self.reports}
        return found[(variant, dtype)]

    def to_dict(self) -> dict:
        return {
            "rows": self.n_rows, "classes": self.n_cols, "temperature": self.temperature,
            "ulp_ok": ULP_OK,
            "thresholds": {k: asdict(v) for k, v in self.thresholds.items()},
            "results": [r.to_dict() for r in self.reports],
        }


def compare_stability(x2, variants=ALL_VARIANTS, dtypes=DEFAULT_DTYPES,
                      temperature: float = 1.0) -> Comparison:
    """Run every variant in every format on ``x2`` and measure it.

    Parameters
    ----------
    x2 : array_like, shape (N, C)
        Logits, classes along the last axis.
    variants : sequence of str
        From :data:`ALL_VARIANTS` (``smx`` is the accurate path).
    dtypes : sequence of str
        Format names, from :data:`DEFAULT_DTYPES`.
    temperature : float
        The logits are divided by this (> 0).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> c = compare_stability(SEED_ROWS, ["naive", "stable"], ["float16"])
    >>> r = c.report("naive", "float16")
    >>> r.overflow_rows, r.failed_rows, r.verdict
    (2, 2, 'broken')
    >>> c.report("stable", "float16").failed_rows
    0
    """
    variants = check_names(variants, ALL_VARIANTS, "variants")
    dtypes = check_names(dtypes, tuple(FORMATS), "dtypes")
    x2 = np.asarray(x2)
    if x2.ndim != 2:
        raise ValueError(f"compare_stability takes (N, C) rows, got shape {x2.shape}")
    reports = []
    for dt in dtypes:
        prep = prepare(x2, dt, temperature)
        for v in variants:
            reports.append(measure(prep, v, temperature))
    return Comparison(x2.shape[0], x2.shape[1], float(temperature), reports,
                      {dt: thresholds(dt) for dt in dtypes})
