"""The 16/32-bit softmax path of the compiled core (smx_cli/core/_smx_lowp.h).

* exp1w's polynomial: the coefficients written in the header are re-checked at 60
  digits (mpmath) on a dense grid plus the ends of the reduced range: the relative
  error the header's error budget uses (<= 2^-50.5 for the approximation alone).
* float16 outputs through F16C (AVX2 / AVX-512 variants: rounded to odd in
  float32, then vcvtps2ph) and the bit-level rounding of the baseline variant are
  each held to 0.5 ulp + 2^-20 against the long double reference on enough entries
  that a double rounding through float32 would show (~1 in 2^13 entries lands in
  the window where it errs).
* the row maxima on the format's own bits (row_max_w): -0/+0, NaN bit patterns,
  +-inf, subnormals, against numpy.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from smx_cli.core import native

if not native.available():  # pragma: no cover - depends on the build
    pytest.skip(f"native extension not built ({native.why_unavailable()})", allow_module_level=True)

import ml_dtypes  # noqa: E402
import mpmath  # noqa: E402

from smx_cli.core.reference import exact_softmax  # noqa: E402

from test_native import BF16, LOWP_BOUND, _isa, _isas, ulp_errors  # noqa: E402

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "smx_cli", "core", "_smx_lowp.h")


def _coefficients() -> list[float]:
    src = open(HEADER).read()
    found = dict(re.findall(r"#define EXPW_C(\d+) (0x[0-9a-fA-Fp.+-]+)", src))
    return [float.fromhex(found[str(n)]) for n in range(2, 11)]


def test_exp1w_polynomial_error():
    """max |(1 + r + r^2 Q(r)) / exp(r) - 1| over |r| <= ln2/2 + 2^-20, Q from the
    header's float64 coefficients, at 60 digits: <= 2^-50.5 (the budget takes
    2^-50.79 for it; any of C2..C6 off by 2^-30 relative fails)."""
    if not os.path.exists(HEADER):
        pytest.skip("source header not present (installed package)")
    c = [mpmath.mpf(v) for v in _coefficients()]
    with mpmath.workdps(60):
        R = mpmath.log(2) / 2 + mpmath.mpf(2) ** -20
        pts = [-R + 2 * R * k / 1500 for k in range(1501)] + [mpmath.mpf(0), R / 3, -R / 7]
        worst = mpmath.mpf(0)
        for r in pts:
            q = mpmath.mpf(0)
            for a in reversed(c):
                q = q * r + a
            worst = max(worst, abs((1 + r + r * r * q) / mpmath.exp(r) - 1))
    assert worst <= mpmath.mpf(2) ** -50.5, float(mpmath.log(worst, 2))


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("shape", [(600, 517), (30000, 9)], ids=["wide", "narrow"])
def test_float16_outputs_rounded_once(isa, shape):
    """~310 000 float16 outputs per kind, wide rows and narrow (<= 16 column) rows,
    each ISA variant: within 0.5 ulp + 2^-20 of the exact value."""
    if isa not in _isas():
        pytest.skip(f"this CPU has no {isa}")
    rng = np.random.default_rng(21)
    x = (rng.standard_normal(shape) * rng.choice([0.5, 3.0, 12.0], (shape[0], 1))).astype(np.float16)
    ref_p, ref_lp = exact_softmax(x.astype(np.float64), 1.0)
    with _isa(isa):
        for kind, ref in (("prob", ref_p), ("logprob", ref_lp)):
            out = np.empty_like(x)
            native.softmax_rows(x, out, kind=kind, threads=1)
            err = ulp_errors(out, ref, x.dtype)
            assert err.max() <= LOWP_BOUND, (kind, float(err.max()))


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16, np.dtype(np.float32)], ids=str)
@pytest.mark.parametrize("C", [3, 40, 700])
def test_row_max_on_bits(dt, C):
    """argmax and the special rows agree with numpy: signed zeros, +-inf, NaN bit
    patterns of every kind, subnormals, all -inf."""
    rng = np.random.default_rng(22)
    tiny = float(ml_dtypes.finfo(dt).smallest_subnormal) if dt == BF16 else float(
        np.finfo(dt).smallest_subnormal)
    rows = []
    for _ in range(40):
        r = rng.choice([-0.0, 0.0, tiny, -tiny, 1.0, -1.0, -np.inf], C).astype(np.float64)
        rows.append(r)
    rows.append(np.full(C, -np.inf))
    rows.append(np.full(C, -0.0))
    x = np.array(rows).astype(dt)
    # NaNs with other payloads and signs (the bits are what row_max_w reads)
    bits = x.view(np.uint16 if x.itemsize == 2 else np.uint32)
    nan_bits = {np.dtype(np.float16): [0x7c01, 0xfe00, 0x7fff], BF16: [0x7f81, 0xffc0, 0x7fff],
                np.dtype(np.float32): [0x7f800001, 0xffc00000, 0x7fffffff]}[dt]
    for i, b in enumerate(nan_bits):
        bits[3 + i, (5 * i) % C] = b
    bits[10, C - 1] = {np.dtype(np.float16): 0x7c00, BF16: 0x7f80,
                       np.dtype(np.float32): 0x7f800000}[dt]          # +inf last
    x64 = x.astype(np.float64)
    nan_rows = np.isnan(x64).any(axis=1)
    masked = (x64 == -np.inf).all(axis=1)
    ok = ~nan_rows & ~masked
    ref_p, ref_lp = exact_softmax(x64[ok], 1.0)
    for kind, ref in (("prob", ref_p), ("logprob", ref_lp)):
        out = np.empty_like(x)
        am = np.zeros(len(x), np.int64)
        native.softmax_rows(x, out, kind=kind, argmax=am, threads=1)
        np.testing.assert_array_equal(am[~nan_rows], np.argmax(x64[~nan_rows], axis=1))
        np.testing.assert_array_equal(am[nan_rows], np.argmax(np.isnan(x64[nan_rows]), axis=1))
        o64 = out.astype(np.float64)
        assert np.isnan(o64[nan_rows | masked]).all()
        assert not np.isnan(o64[ok]).any()
        assert ulp_errors(out[ok], ref, dt).max() <= LOWP_BOUND


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16, np.dtype(np.float32)], ids=str)
@pytest.mark.parametrize("C", [9, 40, 1000])
def test_underflow_count_skips_neginf(dt, C):
    """exp_underflow counts finite entries whose probability is 0 in the format (or whose
    log-probability is below log of half the smallest subnormal), never -inf entries:
    rows with 5 -inf entries and 3 entries at -200, and rows with -inf entries only."""
    under = np.full((3, C), -1.0)
    under[:, 0] = 0.0
    under[:, 1:6] = -np.inf
    under[:, 6:9] = -200.0
    clean = np.full((2, C), -1.0)
    clean[:, 2:4] = -np.inf
    x = np.concatenate([under, clean]).astype(dt)
    for kind in ("prob", "logprob"):
        out = np.empty_like(x)
        s = native.softmax_rows(x, out, kind=kind, threads=1)
        assert s["exp_underflow"] == 9, (kind, s)
        s = native.softmax_rows(x[3:], out[3:], kind=kind, threads=1)
        assert s["exp_underflow"] == 0, (kind, s)
