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
* the AVX-512 rows (lowp_x4_row) and their exp (_smx_x4exp.h): the table and the
  reduction constants and the degree-5 polynomial re-checked at 60 digits; row
  lengths 1..40 and around the 8/32-entry loops, -inf entries, ties, entries at
  m - 708, temperatures, on every variant against the long double reference; the
  same underflow counts and zero signs on every variant; 1.2 M entries per format
  spread over [-40, 0].
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


def _poly_exp_error(coefficients, R):
    """max |(1 + r + r^2 Q(r)) / exp(r) - 1| over |r| <= R (1501 points and three
    more), Q(r) = sum coefficients[i] r^i, at the caller's mpmath precision."""
    c = [mpmath.mpf(v) for v in coefficients]
    pts = [-R + 2 * R * k / 1500 for k in range(1501)] + [mpmath.mpf(0), R / 3, -R / 7]
    worst = mpmath.mpf(0)
    for r in pts:
        q = mpmath.mpf(0)
        for a in reversed(c):
            q = q * r + a
        worst = max(worst, abs((1 + r + r * r * q) / mpmath.exp(r) - 1))
    return worst


def test_exp1w_polynomial_error():
    """max |(1 + r + r^2 Q(r)) / exp(r) - 1| over |r| <= ln2/2 + 2^-20, Q from the
    header's float64 coefficients, at 60 digits: <= 2^-50.5 (the budget takes
    2^-50.79 for it; any of C2..C6 off by 2^-30 relative fails)."""
    if not os.path.exists(HEADER):
        pytest.skip("source header not present (installed package)")
    with mpmath.workdps(60):
        worst = _poly_exp_error(_coefficients(), mpmath.log(2) / 2 + mpmath.mpf(2) ** -20)
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


# ---------------------------------------------------------------------------
# the AVX-512 rows (lowp_x4_row in _smx_lowp.h, exp from _smx_x4exp.h)

X4HEADER = os.path.join(os.path.dirname(HEADER), "_smx_x4exp.h")
_HEX = r"-?0x1\.[0-9a-fA-F]+p[+-]?\d+"


def _x4_constants() -> dict:
    """the table, the reduction's constants and the degree-5 coefficients, as
    written in _smx_x4exp.h"""
    src = open(X4HEADER).read()
    table = re.search(r"X4_EXP16_HI\[16\] = \{([^}]*)\}", src).group(1)
    body = src[src.index("AI4 __m512d x4_exp_deg("):src.index("__m512d r2 = ")]
    vals = [float.fromhex(h) for h in re.findall(_HEX, body)]
    found = dict(re.findall(r"#define X4E5_C(\d+) (" + _HEX + ")", src))
    return {"table": [float.fromhex(h) for h in re.findall(_HEX, table)], "shift": vals[0],
            "inv_ln2": vals[1], "chi": vals[2], "clo": vals[3],
            "poly": [float.fromhex(found[str(n)]) for n in range(2, 6)], "rest": vals[4:]}


def test_x4exp_table_and_reduction_constants():
    """T[j] = 2^(j/16) correctly rounded (0.5 u each, as the header's budget
    says); 1/ln2 correctly rounded; CHI has <= 39 significant bits ((k/16) CHI
    exact for |k| < 2^14) and, with CLO as written (r = (d - (k/16) CHI) -
    (k/16) CLO), CHI + CLO = ln2 within 2^-95."""
    if not os.path.exists(X4HEADER):
        pytest.skip("source header not present (installed package)")
    k = _x4_constants()
    with mpmath.workdps(60):
        assert k["table"] == [float(mpmath.mpf(2) ** (mpmath.mpf(j) / 16)) for j in range(16)]
        assert k["shift"] == 1.5 * 2.0 ** 48  # ulp 1/16: rounds d/ln2 to k/16
        assert k["inv_ln2"] == float(1 / mpmath.log(2))
        m, e = mpmath.frexp(mpmath.mpf(k["chi"]))
        assert int(m * 2 ** 39) == m * 2 ** 39  # <= 39 significant bits
        err = abs(mpmath.mpf(k["chi"]) + mpmath.mpf(k["clo"]) - mpmath.log(2))
        assert err <= mpmath.mpf(2) ** -95, float(mpmath.log(err, 2))
    assert k["rest"] == [], k["rest"]


def test_x4exp_polynomial_error():
    """max |(1 + r + r^2 Q(r)) / exp(r) - 1| over |r| <= ln2/32 + 2^-20, Q from the
    header's X4E5 float64 coefficients, at 60 digits: <= 2^-47 (the bound the
    budget in _smx_lowp.h takes for the approximation; C2 off by 2^-40 relative,
    or C4 by 2^-26, fails)."""
    if not os.path.exists(X4HEADER):
        pytest.skip("source header not present (installed package)")
    with mpmath.workdps(60):
        worst = _poly_exp_error(_x4_constants()["poly"], mpmath.log(2) / 32 + mpmath.mpf(2) ** -20)
    assert worst <= mpmath.mpf(2) ** -47, float(mpmath.log(worst, 2))


_FMTS = [np.dtype(np.float16), BF16, np.dtype(np.float32)]
# lengths around the 8-lane vectors, the 32-entry main loop and the tail; <= 16
# are the narrow rows (lowp_narrow_t), the rest the row kernels
_LENGTHS = list(range(1, 41)) + [63, 64, 65, 95, 96, 97, 255, 256, 257, 1000, 4099]


def _edge_rows(rng, dt, C: int) -> np.ndarray:
    """rows of length C: random spreads, -inf entries (also in the last lanes),
    ties of the maximum, entries near m - 708, a large offset"""
    fmax = 6e4 if dt == np.float16 else 1e30
    rows = []
    for s in (0.5, 4.0, 60.0, 400.0):
        rows.append(rng.standard_normal(C) * s)
    r = rng.standard_normal(C) * 5
    r[rng.random(C) < 0.3] = -np.inf
    r[-1] = -np.inf
    rows.append(r)
    r = np.round(rng.standard_normal(C))           # many ties, n_max > 1
    rows.append(r)
    r = rng.choice([0.0, -707.5, -708.0, -708.5, -704.0, -712.0, -1.0], C)
    rows.append(r)
    r = np.full(C, -708.0)
    r[0] = 0.0
    rows.append(r)
    r = np.full(C, -np.inf)
    r[C // 2] = 1.5                                 # one finite entry
    rows.append(r)
    rows.append(rng.standard_normal(C) + min(3e4, fmax / 2))
    return np.array(rows).astype(dt)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", _FMTS, ids=str)
@pytest.mark.parametrize("t", [1.0, 0.3, 7.0])
def test_row_edges_against_reference(isa, dt, t):
    """Every length in _LENGTHS, on each ISA variant, with -inf entries, ties,
    entries at m - 708 +- a little and temperatures: within 0.5 ulp + 2^-20 of the
    long double reference; -inf entries give exactly 0 / -inf."""
    if isa not in _isas():
        pytest.skip(f"this CPU has no {isa}")
    rng = np.random.default_rng(31)
    with _isa(isa):
        for C in _LENGTHS:
            x = _edge_rows(rng, dt, C)
            x64 = x.astype(np.float64)
            ref_p, ref_lp = exact_softmax(x64, t)
            for kind, ref in (("prob", ref_p), ("logprob", ref_lp)):
                out = np.empty_like(x)
                native.softmax_rows(x, out, kind=kind, temperature=t, threads=1)
                err = ulp_errors(out, ref, dt)
                assert err.max() <= LOWP_BOUND, (C, kind, float(err.max()),
                                                 np.unravel_index(np.argmax(err), err.shape))
                live = np.isfinite(x64.max(axis=1))[:, None]   # all -inf rows are NaN
                o = out.astype(np.float64)[(x64 == -np.inf) & live]
                assert (o == (0.0 if kind == "prob" else -np.inf)).all(), (C, kind)


@pytest.mark.parametrize("dt", _FMTS, ids=str)
@pytest.mark.parametrize("t", [1.0, 0.3])
def test_row_edges_same_specials_on_every_isa(dt, t):
    """The counts (exp_underflow: stored zeros of finite entries, log-probabilities
    below LOG_UNDER) and the signs of zero outputs are the same on every variant:
    the AVX-512 rows treat q < -708, -inf and the maxima as the portable loop."""
    isas = _isas()
    if len(isas) < 2:
        pytest.skip("one ISA variant only")
    rng = np.random.default_rng(32)
    for C in [17, 20, 33, 40, 97, 1000]:
        x = _edge_rows(rng, dt, C)
        # also rows whose probabilities underflow and log-probabilities overflow the format
        big = 6e4 if dt == np.float16 else 3e38
        extra = np.array([np.linspace(-big, 0, C), np.r_[0.0, np.full(C - 1, -big)]])
        x = np.concatenate([x, extra.astype(dt)])
        for kind in ("prob", "logprob"):
            res = {}
            for isa in isas:
                with _isa(isa):
                    out = np.empty_like(x)
                    st = native.softmax_rows(x, out, kind=kind, temperature=t, threads=1)
                o = out.astype(np.float64)
                res[isa] = (st, np.signbit(o[o == 0]), np.isinf(o), o[o == 0].size)
            first = res[isas[0]]
            for isa in isas[1:]:
                assert res[isa][0] == first[0], (C, kind, isa)
                np.testing.assert_array_equal(res[isa][1], first[1])
                np.testing.assert_array_equal(res[isa][2], first[2])
                assert res[isa][3] == first[3]


@pytest.mark.parametrize("dt", _FMTS, ids=str)
def test_many_entries_near_midpoints(dt):
    """~1.3 M entries per format on the best variant, q spread over [-40, 0] so
    every table entry and both ends of the reduced range are used: within 0.5 ulp
    + 2^-20 (an exp off by 2^-40 relative shows in float32: ~2^-15 of the entries
    lie within 2^-16 ulp of a rounding midpoint)."""
    rng = np.random.default_rng(33)
    x = np.concatenate([rng.uniform(-40, 0, (300, 4099)), np.zeros((300, 1))], axis=1).astype(dt)
    ref_p, ref_lp = exact_softmax(x.astype(np.float64), 1.0)
    for kind, ref in (("prob", ref_p), ("logprob", ref_lp)):
        out = np.empty_like(x)
        native.softmax_rows(x, out, kind=kind, threads=1)
        err = ulp_errors(out, ref, dt)
        assert err.max() <= LOWP_BOUND, (kind, float(err.max()))
