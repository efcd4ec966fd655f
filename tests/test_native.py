"""The compiled core (smx_cli.core._smx_native) against high-precision references.

Every accuracy assertion compares with an independent reference: mpmath at 50
digits for small cases, and the long double :func:`smx_cli.core.reference.exact_softmax`
(itself checked against mpmath in test_softmax.py, ~1/500 ulp of float64) for big
ones -- never the kernel against itself. Bounds (the documented ones):

* float16 / bfloat16 / float32 softmax and log-softmax: <= 0.5 ulp + 2**-20 ulp;
* float64 softmax and log-softmax: <= 1.5 ulp;
* cross-entropy per-row loss (float64): <= 2 ulp without smoothing.

Entries whose exact value is subnormal in the output format are held to an
absolute error of one subnormal spacing (the bounds are for normal results).
"""
from __future__ import annotations


import numpy as np
import pytest

from smx_cli.core import native
from native_isa import isa as _isa, isas as _isas

if not native.available():  # pragma: no cover - depends on the build
    print(f"test_native: the native extension is not built: {native.why_unavailable()}")
    pytest.skip(f"native extension not built ({native.why_unavailable()})", allow_module_level=True)

import ml_dtypes  # noqa: E402
import mpmath  # noqa: E402

from smx_cli.core.reference import exact_softmax  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
LOWP_BOUND = 0.5 + 2.0 ** -20
F64_BOUND = 1.5
XENT_F64_BOUND = 2.0
XENT_LOWP_BOUND = 6.0
# (mantissa bits, minimum normal exponent) of each format
FMT = {np.dtype(np.float16): (10, -14), BF16: (7, -126), np.dtype(np.float32): (23, -126),
       np.dtype(np.float64): (52, -1022)}


def xent_bound(dt) -> float:
    """ulps of float64 of the per-row loss (native.py: 2 for float64 input, 6 for 16/32-bit)."""
    return XENT_F64_BOUND if np.dtype(dt) == np.float64 else XENT_LOWP_BOUND


def bound(dt) -> float:
    return F64_BOUND if np.dtype(dt) == np.float64 else LOWP_BOUND


def ulp_errors(got: np.ndarray, ref: np.ndarray, dt) -> np.ndarray:
    """|got - ref| in ulps of the format at the exact value ``ref`` (long double).

    Subnormal exact values use the subnormal spacing. Non-finite reference
    entries must be matched exactly (error 0 or inf).
    """
    nm, emin = FMT[np.dtype(dt)]
    L = np.longdouble
    ref = np.asarray(ref, dtype=L)
    g = np.asarray(got, dtype=np.float64).astype(L)
    a = np.abs(ref)
    with np.errstate(all="ignore"):
        e = np.floor(np.log2(np.where(a > 0, a, 1).astype(np.float64)))
    e = np.maximum(e, emin).astype(int)
    # log2 of a long double rounded to float64 may land one binade off at powers of two
    e = np.where((a > 0) & (np.ldexp(L(1), e) > a), e - 1, e)
    e = np.maximum(e, emin)
    ulp = np.ldexp(L(1), e - nm)
    fin = np.isfinite(ref)
    err = np.where(fin, np.abs(g - np.where(fin, ref, 0)) / ulp, 0.0)
    same_special = (np.isnan(ref) & np.isnan(g)) | (np.isinf(ref) & (g == ref))
    err = np.where(fin, err, np.where(same_special, 0.0, np.inf))
    return err.astype(np.float64)


def check(x: np.ndarray, temperature: float = 1.0, kinds=("prob", "logprob")):
    """Run the native kernel on x and assert the documented bound; return the max errors."""
    ref_p, ref_lp = exact_softmax(x.astype(np.float64), temperature)
    worst = {}
    for kind, ref in (("prob", ref_p), ("logprob", ref_lp)):
        if kind not in kinds:
            continue
        out = np.empty_like(x)
        native.softmax_rows(x, out, kind=kind, temperature=temperature)
        err = ulp_errors(out, ref, x.dtype)
        worst[kind] = float(err.max()) if err.size else 0.0
        i = np.unravel_index(np.argmax(err), err.shape) if err.size else None
        assert worst[kind] <= bound(x.dtype), (
            f"{x.dtype} {kind}: {worst[kind]:.4g} ulp at {i}: x={x[i[0]].tolist()[:8]}..., "
            f"got {out[i]!r}, exact {ref[i]!r}")
    return worst


def adversarial_rows(rng, dt) -> list[np.ndarray]:
    """Rows that break naive or half-compensated kernels, as (N, C) arrays of dtype dt."""
    fmax = float(ml_dtypes.finfo(dt).max) if dt == BF16 else float(np.finfo(dt).max)
    lim = min(1e4, fmax / 4)
    cases = [
        rng.standard_normal((64, 257)),
        rng.standard_normal((32, 1000)) * 30,
        rng.standard_normal((16, 333)) * 300,
        np.linspace(-lim, lim, 4001)[None, :],                  # huge spread
        np.linspace(-lim, lim, 4001)[None, ::-1] + 0.5,
        np.full((3, 17), 5.0),                                   # all equal
        np.array([[0.0] + [-40.0] * 20]), np.array([[3.0] + [-700.0] * 30]),  # dominant
        np.array([[1.0, 2.0, 3.0], [1000.0, 2000.0, 3000.0], [-1000.0, 1.0, 10000.0]]),
        rng.uniform(-20, 20, (50, 7)),
        np.array([[7.0]]),                                       # one column
        np.array([[1e-30, -1e-30, 0.0, 2e-30]]),
        np.array([[0.1, 0.1 + 2e-16, 0.1 - 3e-16, -0.3]]),
        # around the float32 / bfloat16 / float16 underflow and normal limits of p and log p
        np.array([[0.0, -87.3, -87.5, -103.2, -103.9, -104.0, -17.3, -9.7, -9.71]]),
        np.array([[0.0, -707.9, -708.1, -745.2, -750.0] + [-30.0] * 5]),
        np.array([[20.0, 1e-8, -1e-9, 19.0, 20.0]]),             # inexact x - m, ties
        rng.standard_normal((2, 5000)) * 3,                      # many blocks per lane
    ]
    if dt == np.float64:
        cases += [
            np.array([[1e300, 1e300 - 1e284, -1e300]]),
            np.array([[-745.0, -1.0, 0.0, -700.5, -708.3]]),
            rng.standard_normal((8, 64)) * 1e3 + 1e5,
        ]
    out = []
    for c in cases:
        a = np.asarray(c, dtype=np.float64)
        with np.errstate(over="ignore"):
            a = a.astype(dt)
        out.append(np.ascontiguousarray(a))
    return out


# ---------------------------------------------------------------------------
# engine selection


def test_engine_name(monkeypatch):
    monkeypatch.delenv("SMX_ENGINE", raising=False)  # the suite also runs under SMX_ENGINE=numpy
    assert native.engine().startswith("native-")
    assert native.engine() in ("native-avx512", "native-avx2", "native-baseline")


def test_smx_engine_numpy_forces_fallback(monkeypatch):
    monkeypatch.setenv("SMX_ENGINE", "numpy")
    assert native.engine() == "numpy"
    monkeypatch.delenv("SMX_ENGINE")
    assert native.engine() != "numpy"
    with native.numpy_engine():
        assert native.engine() == "numpy"
    assert native.engine() != "numpy"


# ---------------------------------------------------------------------------
# accuracy


@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_adversarial_rows_within_bounds(dt):
    rng = np.random.default_rng(1)
    worst = {"prob": 0.0, "logprob": 0.0}
    for x in adversarial_rows(rng, dt):
        for k, v in check(x).items():
            worst[k] = max(worst[k], v)
    print(f"{dt}: max ulp prob {worst['prob']:.4f}, logprob {worst['logprob']:.4f}")


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("t", [0.3, 7.0])
def test_temperature_within_bounds(dt, t):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((40, 300)) * 20).astype(dt)
    check(x, temperature=t)


@pytest.mark.parametrize("dt", [np.dtype(np.float32), np.dtype(np.float64)], ids=str)
def test_narrow_many_rows(dt):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((100000, 10)) * 8).astype(dt)
    check(x)


@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_wide_rows(dt):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((64, 32000)) * 4).astype(dt)
    check(x)


def test_mpmath_spot_check_float64():
    """A few rows straight against mpmath at 50 digits (not the long double reference)."""
    rng = np.random.default_rng(5)
    rows = np.array([rng.standard_normal(50) * 100, np.linspace(-1e4, 1e4, 50),
                     np.r_[0.0, rng.uniform(-50, -30, 49)]])
    out_p = np.empty_like(rows)
    out_l = np.empty_like(rows)
    native.softmax_rows(rows, out_p, kind="prob")
    native.softmax_rows(rows, out_l, kind="logprob")
    worst = 0.0
    with mpmath.workdps(50):
        for i, row in enumerate(rows):
            z = [mpmath.mpf(float(v)) for v in row]
            lse = max(z) + mpmath.log(mpmath.fsum(mpmath.exp(v - max(z)) for v in z))
            for j, v in enumerate(z):
                lp = v - lse
                p = mpmath.exp(lp)
                for got, ex in ((out_p[i, j], p), (out_l[i, j], lp)):
                    if ex == 0 or abs(ex) < mpmath.mpf(2) ** -1022:
                        continue
                    ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(abs(ex), 2)) - 52)
                    worst = max(worst, float(abs(mpmath.mpf(float(got)) - ex) / ulp))
    assert worst <= F64_BOUND, worst


# ---------------------------------------------------------------------------
# special rows: exactly the numpy reference's semantics


def _reference_compute():
    """The numpy reference kernels (compute() itself runs the native engine when built)."""
    from smx_cli.core.softmax import compute

    def reference(*args, **kwargs):
        with native.numpy_engine():
            return compute(*args, **kwargs)
    return reference


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["prob", "logprob"])
def test_special_rows_match_reference(dt, kind):
    inf, nan = np.inf, np.nan
    x64 = np.array([
        [1.0, inf, 2.0, inf],
        [1.0, nan, 2.0, 3.0],
        [-inf, -inf, -inf, -inf],
        [0.0, -inf, 1.0, -inf],
        [inf, nan, 1.0, 1.0],
        [-inf, 3.0, -inf, -inf],
        [1.0, inf, -inf, 2.0],
    ])
    x = x64.astype(dt)
    out = np.empty_like(x)
    am = np.empty(len(x), dtype=np.int64)
    stats = native.softmax_rows(x, out, kind=kind, argmax=am)
    ref = _reference_compute()(x, "log" if kind == "logprob" else "stable").values
    np.testing.assert_array_equal(np.isnan(out.astype(np.float64)), np.isnan(ref.astype(np.float64)))
    err = ulp_errors(out, ref.astype(np.float64), dt)
    assert err.max() <= bound(dt) + 0.5  # the reference itself is within a few ulps
    assert stats["nan_rows"] == 3 and stats["masked_rows"] == 1 and stats["posinf_rows"] == 2
    assert stats["nan_entries"] == 12
    np.testing.assert_array_equal(am, np.argmax(x64, axis=1))
    # signs of zeros too (a single +inf entry: log p = +0.0, as numpy's log(1.0))
    fin = np.isfinite(ref.astype(np.float64)) & (ref.astype(np.float64) == 0)
    np.testing.assert_array_equal(np.signbit(out.astype(np.float64))[fin],
                                  np.signbit(ref.astype(np.float64))[fin])
    zeros = np.empty_like(x)
    native.softmax_rows(x, zeros, kind=kind, masked="zeros")
    assert np.all(zeros[2].astype(np.float64) == (0.0 if kind == "prob" else -np.inf))


@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_empty_shapes(dt):
    for shape in [(0, 5), (3, 0), (0, 0)]:
        x = np.zeros(shape, dtype=dt)
        out = np.empty_like(x)
        s = native.softmax_rows(x, out)
        assert s["nan_rows"] == 0
        lse = np.empty(shape[0])
        native.logsumexp_rows(x, lse)
        assert np.all(lse == -np.inf)


def test_one_column_is_exactly_one():
    x = np.array([[3.0], [-1e300], [0.0]])
    out = np.empty_like(x)
    native.softmax_rows(x, out)
    assert np.all(out == 1.0)
    native.softmax_rows(x, out, kind="logprob")
    assert np.all(out == 0.0)


def test_underflow_count():
    x = np.array([[0.0, -800.0, -10.0, -np.inf]])
    out = np.empty_like(x)
    s = native.softmax_rows(x, out)
    assert s["exp_underflow"] == 1  # -800 underflows; -inf is not a finite argument
    x32 = x.astype(np.float32)
    out32 = np.empty_like(x32)
    s = native.softmax_rows(x32, out32, kind="logprob")
    assert s["exp_underflow"] == 1


def test_threads_give_identical_results():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((999, 513)) * 10
    a, b = np.empty_like(x), np.empty_like(x)
    native.softmax_rows(x, a, threads=1)
    native.softmax_rows(x, b, threads=3)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_every_isa_variant_within_bounds(isa, dt):
    """The baseline (no FMA) and the FMA variants each meet the bounds (their float64
    results may differ in the last bits: the exp polynomial is fused on FMA CPUs)."""
    if isa not in _isas():
        pytest.skip(f"this CPU has no {isa}")
    rng = np.random.default_rng(14)
    with _isa(isa):
        assert native._ext.isa() == isa
        for x in adversarial_rows(rng, dt):
            check(x, temperature=0.7)
            check(x)
        x = (rng.standard_normal((40, 301)) * 30).astype(dt)
        y = rng.integers(0, 301, len(x))
        r = native.xent_rows(x, y)
        for i in range(0, len(x), 3):
            loss, _, _ = _mp_xent(x[i].astype(np.float64), int(y[i]), None, 0.0)
            assert _ulps64(r["loss"][i], loss) <= xent_bound(dt)


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError):
        native._ext.set_isa("avx1024")


# ---------------------------------------------------------------------------
# 16-bit rounding: once, from float64, to nearest even


def _exact_round(v: float, dt) -> float:
    """Correctly rounded v in dt, by exact rational arithmetic (ties to even)."""
    from fractions import Fraction
    finfo = ml_dtypes.finfo(dt)
    lo = np.array(v, dtype=np.float64).astype(np.float32)  # candidates around v
    cands = set()
    for c in (lo, np.nextafter(lo, np.float32(np.inf)), np.nextafter(lo, np.float32(-np.inf))):
        with np.errstate(over="ignore"):
            r = np.float32(c).astype(dt)
        for w in (r, np.nextafter(r.astype(np.float32), np.float32(np.inf)).astype(dt),
                  np.nextafter(r.astype(np.float32), np.float32(-np.inf)).astype(dt)):
            cands.add(float(w))
    fv = Fraction(v)
    best = None
    for cnd in sorted(cands):
        if not np.isfinite(cnd) or abs(cnd) > float(finfo.max):
            continue
        # candidate must be representable in dt
        if float(np.float64(cnd).astype(dt)) != cnd:
            continue
        d = abs(Fraction(cnd) - fv)
        key = (d, int(np.array(cnd, dtype=dt).view(np.uint16)) & 1)
        if best is None or key < best[0]:
            best = (key, cnd)
    return best[1]


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16], ids=str)
def test_16bit_outputs_rounded_once(dt):
    """log-softmax outputs of 2-column rows [0, -a] are -log1p(e^-a) and -a - log1p(e^-a):
    check every 16-bit output is the correctly rounded exact value (within the band)."""
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 12, 400)
    x = np.stack([np.zeros_like(a), -a], axis=1).astype(dt)
    out = np.empty_like(x)
    native.softmax_rows(x, out, kind="logprob")
    _, ref = exact_softmax(x.astype(np.float64))
    err = ulp_errors(out, ref, dt)
    assert err.max() <= LOWP_BOUND
    for v in rng.standard_normal(300) * np.exp2(rng.integers(-30, 20, 300)):
        got = np.empty(1, dtype=dt)
        # one-column logsumexp in the input's format = the input itself: exact
        xin = np.array([[v]], dtype=np.float64).astype(dt)
        native.logsumexp_rows(xin, got)
        assert float(got[0]) == float(xin[0, 0])


def test_round16_single_rounding():
    """f64 -> f16 / bf16 rounds once to nearest even (never through float32)."""
    ext = native._ext
    cases = {
        np.dtype(np.float16): [(1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -10),   # float32 would tie
                               (1 + 2.0 ** -11, 1.0), (1 + 3 * 2.0 ** -11, 1 + 2.0 ** -9),
                               (65519.99, 65504.0), (65520.0, np.inf), (-7e4, -np.inf),
                               (2.0 ** -25, 0.0), (2.0 ** -25 * (1 + 2.0 ** -30), 2.0 ** -24),
                               (3 * 2.0 ** -25, 2.0 ** -23), (2.0 ** -14 - 2.0 ** -26, 2.0 ** -14)],
        BF16: [(1 + 2.0 ** -8 + 2.0 ** -40, 1 + 2.0 ** -7), (1 + 2.0 ** -8, 1.0),
               (2.0 ** -134 * (1 + 2.0 ** -40), 2.0 ** -133), (2.0 ** -134, 0.0),
               ((2 - 2.0 ** -8) * 2.0 ** 127, np.inf),   # midpoint: ties to even = inf
               ((2 - 2.0 ** -8 - 2.0 ** -30) * 2.0 ** 127, (2 - 2.0 ** -7) * 2.0 ** 127),
               (-1e39, -np.inf)],
    }
    for dt, pairs in cases.items():
        src = np.array([p[0] for p in pairs])
        dst = np.empty(len(src), dtype=np.uint16)
        ext.round16(src, dst, len(src), 0 if dt == np.float16 else 1)
        got = dst.view(dt).astype(np.float64)
        np.testing.assert_array_equal(got, [p[1] for p in pairs])
    # random values against numpy's (direct, correctly rounded) float64 -> float16
    rng = np.random.default_rng(13)
    v = rng.standard_normal(100000) * np.exp2(rng.integers(-28, 17, 100000))
    dst = np.empty(len(v), dtype=np.uint16)
    ext.round16(v, dst, len(v), 0)
    np.testing.assert_array_equal(dst, v.astype(np.float16).view(np.uint16))
    src = np.array([np.nan, -np.nan, np.inf, -0.0])
    dst = np.empty(4, dtype=np.uint16)
    ext.round16(src, dst, 4, 1)
    got = dst.view(BF16).astype(np.float64)
    assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == np.inf and np.signbit(got[3])


# ---------------------------------------------------------------------------
# logsumexp


@pytest.mark.parametrize("t", [1.0, 0.7])
def test_logsumexp_against_mpmath(t):
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal((20, 40)) * 50,
                        np.array([[0.0] + [-60.0] * 39]), np.full((1, 40), 1000.0)])
    out = np.empty(len(x))
    native.logsumexp_rows(x, out, temperature=t)
    with mpmath.workdps(50):
        for i, row in enumerate(x):
            z = [mpmath.mpf(float(v)) / t for v in row]
            ex = max(z) + mpmath.log(mpmath.fsum(mpmath.exp(v - max(z)) for v in z))
            ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(abs(ex), 2)) - 52)
            assert abs(mpmath.mpf(float(out[i])) - ex) / ulp <= 1.0


def test_logsumexp_special_rows():
    x = np.array([[1.0, np.nan], [np.inf, 1.0], [-np.inf, -np.inf]])
    out = np.empty(3)
    native.logsumexp_rows(x, out)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf


# ---------------------------------------------------------------------------
# cross-entropy


def _mp_xent(row, y, w, eps):
    with mpmath.workdps(50):
        z = [mpmath.mpf(float(v)) for v in row]
        m = max(z)
        lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in z))
        lp = [v - lse for v in z]
        C = len(z)
        wy = w[y] if w is not None else 1.0
        loss = (1 - mpmath.mpf(eps)) * wy * -lp[y]
        if eps:
            loss += mpmath.mpf(eps) / C * mpmath.fsum((w[c] if w is not None else 1.0) * -lp[c]
                                                       for c in range(C))
        ent = -mpmath.fsum(mpmath.exp(v) * v for v in lp)
        return loss, lp[y], ent


def _ulps64(got, ex):
    if ex == 0:
        return 0.0 if got == 0 else np.inf
    ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(abs(ex), 2)) - 52)
    return float(abs(mpmath.mpf(float(got)) - ex) / ulp)


@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_xent_loss_against_mpmath(dt):
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.standard_normal((30, 50)) * 10,
                        np.array([[40.0] + [0.0] * 49]),            # confident, correct
                        np.array([[0.0] * 49 + [-1e3]])])           # confidently wrong
    x = x.astype(dt)
    y = rng.integers(0, 50, len(x))
    y[-2] = 0
    y[-1] = 49
    r = native.xent_rows(x, y)
    worst = 0.0
    for i in range(len(x)):
        loss, lpy, ent = _mp_xent(x[i].astype(np.float64), int(y[i]), None, 0.0)
        worst = max(worst, _ulps64(r["loss"][i], loss))
        assert _ulps64(r["entropy"][i], ent) <= 8
    assert worst <= xent_bound(dt), worst
    assert np.array_equal(r["argmax"], np.argmax(x.astype(np.float64), axis=1))


def test_xent_options_against_mpmath():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((20, 30)) * 5
    y = rng.integers(0, 30, 20)
    y[3] = -100
    w = rng.uniform(0.1, 2, 30)
    w[4] = 0.0
    r = native.xent_rows(x, y, weight=w, label_smoothing=0.1)
    for i in range(20):
        if y[i] == -100:
            assert r["loss"][i] == 0.0 and np.isnan(r["p_true"][i]) and not r["top5"][i]
            continue
        loss, _, _ = _mp_xent(x[i], int(y[i]), w, 0.1)
        assert _ulps64(r["loss"][i], loss) <= 16


def test_xent_matches_torch_semantics():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 20)) * 3
    y = rng.integers(0, 20, 64)
    y[::7] = 3
    y[5] = -1
    w = rng.uniform(0.5, 1.5, 20)
    r = native.xent_rows(x, y, weight=w, ignore_index=-1, label_smoothing=0.2)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(y),
                                            weight=torch.from_numpy(w), ignore_index=-1,
                                            reduction="none", label_smoothing=0.2).numpy()
    np.testing.assert_allclose(r["loss"], ref, rtol=1e-12, atol=0)
    lp = torch.log_softmax(torch.from_numpy(x), -1).numpy()
    ok = y != -1
    yy = np.where(ok, y, 0)
    top = np.argsort(-lp, axis=1)[:, :5]
    np.testing.assert_array_equal(r["top5"][ok], (top == yy[:, None]).any(axis=1)[ok])
    others = lp.copy()
    others[np.arange(64), yy] = -np.inf
    np.testing.assert_allclose(r["margin"][ok], (lp[np.arange(64), yy] - others.max(1))[ok],
                               rtol=1e-12, atol=1e-13)


def test_xent_fallback_rows():
    x = np.array([[1.0, np.nan, 0.0], [np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]])
    r = native.xent_rows(x, np.array([0, 1, 2]))
    assert list(r["fallback"]) == [True, True, False]
    assert np.isnan(r["loss"][0]) and r["loss"][1] == np.inf
    assert r["argmax"][1] == 0 and r["argmax"][2] == 2


# ---------------------------------------------------------------------------
# native and numpy engines agree


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["prob", "logprob"])
def test_engines_agree(dt, kind):
    compute = _reference_compute()
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((200, 300)) * 15).astype(dt)
    out = np.empty_like(x)
    native.softmax_rows(x, out, kind=kind)
    ref_np = compute(x, "log" if kind == "logprob" else "stable").values
    p, lp = exact_softmax(x.astype(np.float64))
    exact = p if kind == "prob" else lp
    e_native = ulp_errors(out, exact, dt)
    e_numpy = ulp_errors(ref_np, exact, dt)
    assert e_native.max() <= bound(dt)
    # both within their bounds of the exact value, hence of each other
    d = ulp_errors(out, ref_np.astype(np.float64), dt)
    assert d.max() <= bound(dt) + max(4.0, e_numpy.max())
