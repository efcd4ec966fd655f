"""The float64 narrow-row path of the compiled core (smx_cli/core/_smx_narrow64.h).

float64 softmax of rows of <= NARROW64_C columns and log-softmax of rows of
<= NARROW64_LOG_C columns run in blocks of rows vectorised across rows. Held
here to the README's float64 bound (1.5 ulp, softmax and log-softmax; the
dominant log-probability relative to its own size) against mpmath at 50
digits -- never against smx -- on every instruction-set variant the CPU
runs, on both sides of each column threshold, at block boundaries, with
temperatures 0.3 and 7, and on adversarial rows (spreads of 1e300, values near
the overflow threshold and the largest float, ties, -inf entries, dominant
rows whose log-probabilities are ~-1e-17, underflowing terms). Special rows
(NaN, +inf, all -inf with masked on and off) follow the documented semantics,
and the counts and argmax equal the per-row path's (the set_narrow64 test hook
switches the narrow path off) and numpy's argmax.

Errors are in ulps of the exact value, in units of the subnormal spacing
2**-1074 below the normal range (as tests/test_native.py's ulp_errors); an
exact value beyond the largest float must come out as the infinity it rounds
to.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

import numpy as np
import pytest

from smx_cli.core import native
from native_isa import isa as _isa, isas as _isas

if not native.available():  # pragma: no cover - depends on the build
    pytest.skip(f"native extension not built ({native.why_unavailable()})", allow_module_level=True)

from f64_rows import (  # noqa: E402
    check_output, expected_argmax, mp_softmax, run, special, ulps)

F64_BOUND = 1.5  # README "Accuracy": float64 softmax and log-softmax on the compiled core
HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "smx_cli", "core", "_smx_narrow64.h")

NAMES = ("exp_overflow", "exp_underflow", "nan_entries", "nan_rows", "masked_rows", "posinf_rows")


def _thresholds() -> tuple[int, int]:
    """(NARROW64_C, NARROW64_LOG_C) as the header defines them (16, 32 if absent)."""
    if not os.path.exists(HEADER):
        return 16, 32
    src = open(HEADER).read()
    found = dict(re.findall(r"#define (NARROW64_C|NARROW64_LOG_C) (\d+)", src))
    return int(found["NARROW64_C"]), int(found["NARROW64_LOG_C"])


NC, NLC = _thresholds()
# both sides of both thresholds, and the small widths
WIDTHS = sorted({1, 2, 3, 10, NC, NC + 1, NLC, NLC + 1})


@contextmanager
def _narrow(on: bool):
    old = native._ext.set_narrow64(on)
    try:
        yield
    finally:
        native._ext.set_narrow64(old)


def narrow(kind: str, C: int) -> bool:
    """Whether rows of C columns take the narrow path for this kind."""
    return C <= (NLC if kind == "logprob" else NC)


# ---------------------------------------------------------------------------
# running both paths (the exact reference, ulps and special-row semantics: tests/f64_rows.py)


def check_rows(x: np.ndarray, t: float = 1.0, masked: str = "nan", kinds=("prob", "logprob"),
               ref=None) -> dict:
    """Run x on the current ISA, assert the bound on every normal row against
    mpmath, the semantics of the special rows, and stats / argmax equal to the
    per-row path's and to numpy's argmax. Returns the worst ulps per kind."""
    if ref is None:
        ref = {i: mp_softmax(row, t) for i, row in enumerate(x) if not special(row)}
    worst = {}
    for kind in kinds:
        out, stats, am = run(x, kind, t, masked)
        with _narrow(False):
            out_w, stats_w, am_w = run(x, kind, t, masked)
        assert stats == stats_w, (kind, x.shape, stats, stats_w)
        np.testing.assert_array_equal(am, am_w)
        np.testing.assert_array_equal(am, expected_argmax(x))
        worst[kind] = check_output(x, out, stats, kind, t, masked, ref, F64_BOUND)
    return worst


def random_rows(rng, n: int, C: int) -> np.ndarray:
    scale = rng.choice([0.1, 1.0, 10.0, 300.0, 1e4], (n, 1))
    x = rng.standard_normal((n, C)) * scale
    if C > 1:
        x[rng.random((n, C)) < 0.05] = -np.inf
        x[::9] = np.round(x[::9])               # ties
    x[(x == -np.inf).all(axis=1), 0] = 0.0      # no accidental all -inf rows here
    return x


def adversarial_rows(C: int, kind_narrow: bool, t: float) -> np.ndarray:
    """(N, C) rows of the issue's kinds, cut or padded to C columns (padding: -inf
    for the 'one value vs the rest' rows, repeats otherwise)."""
    big = np.finfo(np.float64).max
    rows = [
        [1e300, -1e300, 0.0, 1e300 - 1e284, -5e299],            # huge spreads
        [-1e300, 1e300, 1e299, -1e299],
        [709.0, 708.5, 700.0, 705.0, 0.0, 709.7],                # near exp's overflow
        [big, 1.6e308, 1e308, 0.0, 1e300],                        # near the largest float
        [big, big, big - 2.0 ** 970],
        [5.0] * 3, [-0.0, 0.0, -0.0], [0.0, -0.0], [-745.0] * 2,  # all equal, signed zeros
        [0.0, -np.inf, 1.0, -np.inf, 2.0],                        # -inf entries
        [-np.inf, -np.inf, 3.0],
        [0.0, -40.0, -41.0, -39.1],                               # dominant: log p ~ -1e-17
        [0.0, -39.1], [0.0, -37.0, -80.0, -700.0],
        [3.0, -700.0, -705.0, -707.9],
        [0.0, -707.9, -708.1, -744.4, -744.5, -745.2, -750.0],   # underflow edges
        [0.0, -745.0, -745.05, -745.1],
        [20.0, 1e-8, -1e-9, 19.0, 20.0],                          # inexact x - m, ties
        [0.1, 0.1 + 2e-16, 0.1 - 3e-16, -0.3],
        [1e-300, -1e-300, 0.0, 5e-324],
        [1e-30, -1e-30, 0.0, 2e-30],
    ]
    if t <= 1.0:
        # x - m overflows: -inf, the rounding of (x - m) / t (the shared shift,
        # as the per-row path; with t > 1 the exact value can be finite)
        rows += [[big, 1.6e308, -big, 1e308, 0.0], [1e308, -1e308, -big]]
    if kind_narrow:
        # second maximum below exp's underflow: the narrow path sums these terms
        # (the per-row path sets L = 0 once libm's exp of it underflows)
        rows += [[0.0, -745.3, -745.4, -745.5], [0.0, -1000.0, -1100.0], [0.0, -760.0]]
    out = []
    for r in rows:
        r = np.array(r, dtype=np.float64)
        if len(r) >= C:
            out.append(r[:C])
        else:
            pad = np.full(C - len(r), -np.inf) if len(set(r.tolist())) > 1 else np.full(
                C - len(r), r[0])
            out.append(np.concatenate([r, pad]))
    # every row's maximum somewhere else too (the argmax moves)
    out += [np.roll(r, C // 2) for r in out[:8]]
    x = np.array(out)
    x[(x == -np.inf).all(axis=1), 0] = 0.0
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------
# accuracy


@pytest.fixture(autouse=True)
def _narrow_on():
    """Every test starts with the narrow path on (the default)."""
    with _narrow(True):
        yield


@pytest.mark.parametrize("C", WIDTHS)
@pytest.mark.parametrize("t", [1.0, 0.3, 7.0])
def test_random_rows_against_mpmath(C, t):
    """65 rows (two blocks and one more) of mixed scales, -inf entries and ties,
    each ISA variant, both kinds: within 1.5 ulp; counts and argmax as the
    per-row path."""
    rng = np.random.default_rng(C * 31 + int(t * 10))
    x = random_rows(rng, 65, C)
    ref = {i: mp_softmax(row, t) for i, row in enumerate(x)}
    for isa in _isas():
        with _isa(isa):
            worst = check_rows(x, t, ref=ref)
    print(f"C={C} t={t}: max ulp prob {worst['prob']:.3f}, logprob {worst['logprob']:.3f}")


@pytest.mark.parametrize("C", WIDTHS)
@pytest.mark.parametrize("t", [1.0, 0.3, 7.0])
def test_adversarial_rows_against_mpmath(C, t):
    for kind in ("prob", "logprob"):
        x = adversarial_rows(C, narrow(kind, C), t)
        ref = {i: mp_softmax(row, t) for i, row in enumerate(x)}
        for isa in _isas():
            with _isa(isa):
                check_rows(x, t, kinds=(kind,), ref=ref)


def test_dominant_log_probability_is_relative_accurate():
    """log_softmax([0, -40])[0] = -log1p(e^-40) = -4.248e-18: within 1.5 ulp of
    itself (not of 1), on the narrow path."""
    x = np.array([[0.0, -40.0], [0.0, -39.1], [0.0, -700.0]])
    for isa in _isas():
        with _isa(isa):
            out, _, _ = run(x, "logprob")
            for i in range(len(x)):
                _, lp = mp_softmax(x[i], 1.0)
                assert out[i, 0] < 0.0
                assert ulps(float(out[i, 0]), lp[0]) <= F64_BOUND


# ---------------------------------------------------------------------------
# special rows, block boundaries, threads


@pytest.mark.parametrize("C", WIDTHS)
@pytest.mark.parametrize("masked", ["nan", "zeros"])
def test_special_rows_at_block_boundaries(C, masked):
    """NaN rows, +inf rows (one or several +inf, with -inf), all -inf rows, put at
    the first / last rows of blocks (of 32 and of 64 rows) among ordinary rows."""
    rng = np.random.default_rng(C + (masked == "zeros"))
    n = 130
    x = random_rows(rng, n, C)
    inf, nan = np.inf, np.nan
    specials = [np.full(C, -inf), np.full(C, nan), np.full(C, inf)]
    r = np.linspace(-3.0, 3.0, C)
    r1 = r.copy()
    r1[C // 2] = nan
    r2 = r.copy()
    r2[-1] = inf
    r3 = np.full(C, -inf)
    r3[0] = inf
    r3[-1] = inf
    r4 = r.copy()
    r4[0] = inf
    r4[-1] = nan
    specials += [r1, r2, r3, r4]
    for i, row in zip([0, 31, 32, 33, 63, 64, 65, 127, 129], specials * 2):
        x[i] = row
    ref = {i: mp_softmax(row, 1.0) for i, row in enumerate(x) if not special(row)}
    for isa in _isas():
        with _isa(isa):
            check_rows(x, 1.0, masked, ref=ref)


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 63, 64, 65, 1000])
def test_row_counts(n):
    """Partial blocks (padding rows never leak) and 0 rows."""
    rng = np.random.default_rng(n)
    for C in (1, 10, NC, NLC):
        x = random_rows(rng, n, C) if n else np.zeros((0, C))
        if n == 0:
            for kind in ("prob", "logprob"):
                out, stats, am = run(x, kind)
                assert out.shape == (0, C) and all(v == 0 for v in stats.values())
            continue
        rows = range(n) if n <= 65 else range(0, n, 37)
        ref = {i: mp_softmax(x[i], 1.0) for i in rows}
        for kind in ("prob", "logprob"):
            out, stats, am = run(x, kind)
            with _narrow(False):
                out_w, stats_w, am_w = run(x, kind)
            assert stats == stats_w
            np.testing.assert_array_equal(am, expected_argmax(x))
            for i in rows:
                exact = ref[i][0 if kind == "prob" else 1]
                assert max(ulps(float(out[i, j]), exact[j]) for j in range(C)) <= F64_BOUND


def test_threads_and_row_ranges_give_identical_results():
    """Blocks start wherever a thread's row range starts: same bits."""
    rng = np.random.default_rng(9)
    x = random_rows(rng, 4099, 10)
    for kind in ("prob", "logprob"):
        a = np.empty_like(x)
        b = np.empty_like(x)
        native.softmax_rows(x, a, kind=kind, threads=1)
        native.softmax_rows(x, b, kind=kind, threads=3)
        np.testing.assert_array_equal(a, b)


def test_set_narrow64_hook_returns_old_flag():
    assert native._ext.set_narrow64(False) is True
    assert native._ext.set_narrow64(True) is False
