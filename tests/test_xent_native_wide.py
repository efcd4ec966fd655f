"""The cross-entropy kernels' bounds on language-model widths (C = 131072), where a plain
lane sum of C/8 terms would drift past them.

native.xent_rows states the entropy within 8 ulp and the smoothed loss within 16 ulp;
native.xent_prob_rows the loss within 16 ulp. The entropy dot sum_j e_j (m - x_j) and the
smoothing sum sum_j (m - x_j) are sums of 131072 non-negative terms: summed plainly in 8
lanes (16384 terms each) their rounding errors reached 14 ulp of the entropy on random rows
and 67 ulp on nearly flat ones before those sums were compensated. Each is checked here against
a 30-digit mpmath reference, on every CPU variant this machine has, in float32 and float64.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest

from smx_cli.core import native
from native_isa import isa, isas

pytestmark = pytest.mark.skipif(not native.available(), reason="the extension is not built")

C = 131072
ENTROPY_ULPS = 8.0   # native.xent_rows' docstring
SMOOTH_ULPS = 16.0   # xent_rows with smoothing; xent_prob_rows' loss


def ulps(got: float, exact) -> float:
    ulp = mp.mpf(2) ** (mp.floor(mp.log(abs(exact), 2)) - 52)
    return float(abs(mp.mpf(float(got)) - exact) / ulp)


def reference(row: np.ndarray, label: int, eps: float):
    """Entropy, the smoothed class-index loss and the one-hot-target entropy terms of a
    finite row, at 30 digits. d = x - m is exact in float64 for these rows (float32
    values within a few binades of each other)."""
    d = row.astype(np.float64) - row.max()
    with mp.workdps(30):
        e = [mp.exp(mp.mpf(v)) for v in d.tolist()]
        s = mp.fsum(e)
        dot = mp.fsum(ei * mp.mpf(-v) for ei, v in zip(e, d.tolist()))
        lse = mp.log(s)
        ent = lse + dot / s
        neg_sum = mp.mpf(math.fsum((-d).tolist()))  # exact: a float64 fsum of exact terms
        smooth = (1 - mp.mpf(eps)) * (lse - mp.mpf(d[label])) \
            + mp.mpf(eps) / len(d) * (len(d) * lse + neg_sum)
    return ent, smooth


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(131)
    x = np.empty((3, C), dtype=np.float32)
    x[0] = rng.standard_normal(C) * 3.0
    # nearly flat: a few distinct values in long runs, so a plain lane sum adds the
    # same term thousands of times and its roundings pile up one way (67 ulp of the
    # entropy in float32 before the compensated sums)
    x[1] = 0.6 + rng.uniform(0.0, 1e-6, C)
    x[1, 0] = 3.3
    x[2] = 0.6
    x[2, 0] = 0.7
    y = rng.integers(0, C, 3)
    refs = [reference(x[i], int(y[i]), 0.1) for i in range(3)]
    return x, y, refs


@pytest.mark.parametrize("name", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["float32", "float64"])
def test_entropy_and_smoothing_at_lm_width(rows, name, dt):
    if name not in isas():
        pytest.skip(f"this CPU has no {name}")
    x, y, refs = rows
    xd = x.astype(dt)
    with isa(name):
        plain = native.xent_rows(xd, y)
        smoothed = native.xent_rows(xd, y, label_smoothing=0.1)
        onehot = np.zeros((3, C), dtype=dt)
        onehot[np.arange(3), y] = 1.0
        prob = native.xent_prob_rows(xd, onehot, label_smoothing=0.1)
    for i, (ent, smooth) in enumerate(refs):
        assert ulps(plain["entropy"][i], ent) <= ENTROPY_ULPS, (i, ulps(plain["entropy"][i], ent))
        assert ulps(smoothed["loss"][i], smooth) <= SMOOTH_ULPS, (i, ulps(smoothed["loss"][i],
                                                                            smooth))
        assert ulps(prob["entropy"][i], ent) <= ENTROPY_ULPS, (i, ulps(prob["entropy"][i], ent))
        assert ulps(prob["loss"][i], smooth) <= SMOOTH_ULPS, (i, ulps(prob["loss"][i], smooth))
