"""Fast mode's measured accuracy: max error / (2 + |x - max| + log2 C) ulps, per format.

    python bench/ulps.py
"""
import os
import sys

import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smx_cli.core.precision import format_of, ulp_error  # noqa: E402
from smx_cli.core.reference import exact_softmax  # noqa: E402
from smx_cli.core.softmax import compute  # noqa: E402

CASES = ((1, (50, 1000)), (3, (50, 1000)), (10, (50, 3000)), (30, (20, 3000)), (3, (3000, 10)))


def main() -> None:
    rng = np.random.default_rng(0)
    for dt in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64):
        fmt = format_of(np.dtype(dt))
        worst = worst_log = 0.0
        for scale, (n, c) in CASES:
            x = rng.normal(0, scale, (n, c)).astype(dt)
            x64 = x.astype(np.float64)
            p, lp = exact_softmax(x64)
            bound = 2 + (x64.max(1, keepdims=True) - x64) + np.log2(c)
            got = compute(x, fast=True).values
            normal = np.abs(p.astype(np.float64)) >= fmt.smallest_normal
            worst = max(worst, (ulp_error(got, p, fmt) / bound)[normal].max())
            gl = compute(x, "log", fast=True).values.astype(np.float64)
            lp64 = lp.astype(np.float64)
            errl = np.abs(gl - lp64) / np.maximum(np.abs(lp64), 1) / fmt.eps
            worst_log = max(worst_log, (errl / bound).max())
        print(f"{np.dtype(dt).name}: max err/bound prob {worst:.3f} log {worst_log:.3f}")


if __name__ == "__main__":
    main()
