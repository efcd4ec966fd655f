"""--emulate torch: PyTorch's CPU softmax / log_softmax, bit for bit (issue 14, point 3).

Two independent references: the bit patterns torch 2.13 produced on an AVX-512
machine, stored in tests/fixtures (so CI checks them without torch), and torch
itself when it is installed, on fresh inputs. SLEEF's expf and the float32
FMA are checked against float64/exact arithmetic.
"""
from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from smx_cli.cli.app import cli
from smx_cli.core.emulate_torch import fma32, sleef_expf, torch_compute, torch_softmax_rows
from smx_cli.core.precision import FORMATS

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "torch_softmax_cpu.npz")
DTYPES = ("float16", "bfloat16", "float32")


def _bits(a: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(a, dtype=FORMATS[dtype].dtype).view(np.uint32 if dtype == "float32"
                                                          else np.uint16)


def _same(got_bits: np.ndarray, want_bits: np.ndarray, dtype: str) -> np.ndarray:
    """Equal bit patterns, any NaN matching any NaN."""
    dt = FORMATS[dtype].dtype
    g = got_bits.view(dt).astype(np.float64)
    w = want_bits.view(dt).astype(np.float64)
    return (got_bits == want_bits) | (np.isnan(g) & np.isnan(w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
def test_bitwise_against_stored_torch_outputs(dtype, log):
    data = np.load(FIXTURE)
    name = "log_softmax" if log else "softmax"
    for key in data.files:
        if not key.startswith("x_"):
            continue
        c = key[2:]
        x = data[key]
        want = data[f"{name}_{dtype}_{c}"].view(np.uint32 if dtype == "float32" else np.uint16)
        got = _bits(torch_softmax_rows(x, dtype, log=log, lanes=16), dtype)
        same = _same(got, want, dtype)
        if dtype == "float32" and log:
            # log(sum) is the correctly rounded log, SLEEF's logf may differ by 1 ulp
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
            assert (same | (diff <= 1)).all(), c
            continue
        assert same.all(), f"{name} {dtype} C={c}: {np.count_nonzero(~same)} entries differ"


def test_strict_emulation_is_not_what_torch_does():
    """The per-operation model differs from the framework: why --emulate torch exists."""
    data = np.load(FIXTURE)
    from smx_cli.core.softmax import compute
    x = data["x_1001"][3:]
    strict = compute(x, "stable", dtype="float16").values
    want = data["softmax_float16_1001"][3:].view(np.uint16)
    assert np.count_nonzero(strict.view(np.uint16) != want) > 100


try:
    import torch as _torch  # noqa: F401
except ImportError:  # pragma: no cover - the fixture tests above still run
    _torch = None


def _lanes() -> int:
    return 16 if _torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


@pytest.mark.skipif(_torch is None, reason="torch not installed (the stored outputs are checked)")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_bitwise_against_live_torch(dtype):
    rng = np.random.default_rng(7)
    td = {"float16": _torch.float16, "bfloat16": _torch.bfloat16}[dtype]
    for c in (1, 2, 15, 16, 31, 32, 47, 64, 500, 3000):
        x = rng.standard_normal((24, c)) * rng.choice([0.5, 4, 30, 500], size=(24, 1))
        t = _torch.from_numpy(x).to(td)
        for log, fn in ((False, _torch.softmax), (True, _torch.log_softmax)):
            want = fn(t, -1).view(_torch.int16).numpy().view(np.uint16)
            got = _bits(torch_softmax_rows(x, dtype, log=log, lanes=_lanes()), dtype)
            same = _same(got, want, dtype)
            assert same.all(), (dtype, c, log, np.count_nonzero(~same))


def test_fma32_is_one_rounding():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(2000).astype(np.float32) for _ in range(3))
    got = fma32(a, b, c)
    for i in range(0, 2000, 7):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        # the float32 nearest to the exact value: compare neighbours
        g = got[i]
        lo, hi = np.nextafter(g, np.float32(-np.inf)), np.nextafter(g, np.float32(np.inf))
        err = abs(Fraction(float(g)) - exact)
        assert err <= abs(Fraction(float(lo)) - exact) and err <= abs(Fraction(float(hi)) - exact)


def test_sleef_expf_within_one_ulp_of_exp():
    d = np.linspace(-103, 0, 200001, dtype=np.float32)
    got = sleef_expf(d).astype(np.float64)
    exact = np.exp(d.astype(np.float64))
    normal = exact > np.finfo(np.float32).tiny
    ulp = np.spacing(exact[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - exact[normal]) / ulp) <= 1.0
    assert sleef_expf(np.array([-200.0, np.nan], dtype=np.float32))[0] == 0


def test_special_rows_follow_torch():
    x = np.array([[0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0, 1], [0, 1, 2]])
    y = torch_softmax_rows(x, "float16").astype(np.float64)
    assert np.isnan(y[:3]).all()  # inf - inf, -inf - -inf and NaN: NaN rows, like torch
    assert np.isfinite(y[3]).all()


def test_hostile_arguments():
    with pytest.raises(ValueError, match="float16"):
        torch_softmax_rows(np.zeros((2, 2)), "float64")
    with pytest.raises(ValueError, match="lanes"):
        torch_softmax_rows(np.zeros((2, 2)), "float16", lanes=4)
    with pytest.raises(ValueError, match="rows"):
        torch_softmax_rows(np.zeros(3), "float16")
    assert torch_softmax_rows(np.zeros((0, 5)), "float16").shape == (0, 5)
    assert torch_softmax_rows(np.zeros((2, 0)), "bfloat16").shape == (2, 0)
    r = torch_compute(np.array([[0.0, 30.0]]), "float16", temperature=2.0)
    assert r.values.dtype == np.float16 and r.emulated


def test_cli_emulate_torch(tmp_path):
    data = np.load(FIXTURE)
    x = data["x_100"]
    src = tmp_path / "x.npy"
    np.save(src, x)
    out = tmp_path / "p.npy"
    r = CliRunner().invoke(cli, ["softmax", str(src), "--dtype", "float16", "--emulate", "torch",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    want = data["softmax_float16_100"].view(np.uint16)
    assert _same(np.load(out).view(np.uint16), want, "float16").all()
    # usage errors: torch needs a torch dtype and a torch function
    for args in (["--emulate", "torch"], ["--emulate", "torch", "--dtype", "float64"],
                 ["--emulate", "torch", "--dtype", "float16", "--variant", "naive"]):
        r = CliRunner().invoke(cli, ["softmax", str(src), *args])
        assert r.exit_code == 2, (args, r.stderr)


def test_xent_dtype_reproduces_a_nan_loss(tmp_path):
    """A logit past float16's range is inf in the tensor: torch's loss is NaN, and so is ours."""
    x = np.array([[1.0, 2.0, 3.0], [70000.0, 1.0, 2.0], [5.0, -3.0, 0.0]])
    y = np.array([2, 0, 1])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.npy"), "--labels",
                                 str(tmp_path / "y.npy"), "--dtype", "float16",
                                 "--reduction", "none", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    loss = [rec["loss"] for rec in doc["per_sample"]]
    assert loss[1] is None and loss[0] > 0   # JSON has no NaN: null
    # without --dtype the accurate loss of the same sample is 0 (it is right, hugely)
    r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.npy"), "--labels",
                                 str(tmp_path / "y.npy"), "--reduction", "none",
                                 "--format", "csv"])
    assert r.stdout.splitlines()[2].split(",")[4] == "0.0"
    r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.npy"), "--labels",
                                 str(tmp_path / "y.npy"), "--dtype", "float16", "--grad"])
    assert r.exit_code == 2


@pytest.mark.skipif(_torch is None, reason="torch not installed")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_xent_dtype_losses_are_torchs(tmp_path, dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 37)) * 6
    y = rng.integers(0, 37, 64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.npy"), "--labels",
                                 str(tmp_path / "y.npy"), "--dtype", dtype,
                                 "--reduction", "none", "--format", "csv"])
    assert r.exit_code == 0, r.stderr
    got = np.array([float(ln.split(",")[4]) for ln in r.stdout.splitlines()[1:]])
    td = {"float16": _torch.float16, "bfloat16": _torch.bfloat16}[dtype]
    want = _torch.nn.functional.cross_entropy(_torch.from_numpy(x).to(td),
                                              _torch.from_numpy(y), reduction="none")
    np.testing.assert_array_equal(got, want.float().numpy().astype(np.float64))


# ----------------------------------------------------------------------------
# the SIMD width: what torch runs on THIS machine, unless --torch-cpu says otherwise


@pytest.mark.skipif(_torch is None, reason="torch not installed")
def test_machine_lanes_follow_torch():
    from smx_cli.core.emulate_torch import machine_lanes

    lanes, how = machine_lanes()
    assert lanes == _lanes() and "get_cpu_capability" in how


def test_machine_lanes_without_torch(monkeypatch):
    """No torch: ATEN_CPU_CAPABILITY, then the CPU flags, then the documented default."""
    import importlib.util

    from smx_cli.core import emulate_torch as et

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert et._find_machine_lanes() == (8, "ATEN_CPU_CAPABILITY=avx2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setattr(et, "_cpu_flags", lambda: {"fma", "avx2", "avx512f", "avx512bw",
                                                   "avx512vl", "avx512dq"})
    assert et._find_machine_lanes()[0] == 16
    monkeypatch.setattr(et, "_cpu_flags", lambda: {"fma", "avx2", "avx512f"})
    assert et._find_machine_lanes()[0] == 8
    monkeypatch.setattr(et, "_cpu_flags", lambda: None)
    assert et._find_machine_lanes() == (et.DEFAULT_LANES, et._find_machine_lanes()[1])
    assert "default" in et._find_machine_lanes()[1]


# widths around the lane remainders: C mod 8 and C mod 16 nonzero, a 2L chunk and a tail
REMAINDER_WIDTHS = (7, 17, 33, 1000)


@pytest.mark.skipif(_torch is None, reason="torch not installed")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("variant", ["stable", "log"])
def test_cli_emulation_is_this_machines_torch_bitwise(tmp_path, dtype, variant):
    """smx softmax --emulate torch (no --torch-cpu) equals torch on this machine, bit for bit."""
    rng = np.random.default_rng(21)
    td = {"float16": _torch.float16, "bfloat16": _torch.bfloat16}[dtype]
    fn = _torch.log_softmax if variant == "log" else _torch.softmax
    for c in REMAINDER_WIDTHS:
        x = rng.standard_normal((16, c)) * rng.choice([0.3, 3, 12, 90], size=(16, 1))
        np.save(tmp_path / "x.npy", x)
        out = tmp_path / "p.npy"
        r = CliRunner().invoke(cli, ["softmax", str(tmp_path / "x.npy"), "--dtype", dtype,
                                     "--emulate", "torch", "--variant", variant, "-o", str(out)])
        assert r.exit_code == 0, r.stderr
        want = fn(_torch.from_numpy(x).to(td), -1).view(_torch.int16).numpy().view(np.uint16)
        got = np.load(out)
        got_bits = (got.view(np.uint16) if dtype == "float16"
                    else _bits(got.astype(np.float32), dtype))
        assert _same(got_bits, want, dtype).all(), (dtype, variant, c)


@pytest.mark.skipif(_torch is None, reason="torch not installed")
def test_the_other_lane_count_is_not_torchs(tmp_path):
    """--torch-cpu names the other kernels: the result differs from this machine's torch
    (so the test above would catch a wrong automatic choice)."""
    other = "avx2" if _lanes() == 16 else "avx512"
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 1000)) * 3
    np.save(tmp_path / "x.npy", x)
    want = _torch.softmax(_torch.from_numpy(x).to(_torch.float16), -1).numpy().view(np.uint16)
    r = CliRunner().invoke(cli, ["softmax", str(tmp_path / "x.npy"), "--dtype", "float16",
                                 "--emulate", "torch", "--torch-cpu", other,
                                 "-o", str(tmp_path / "o.npy")])
    assert r.exit_code == 0, r.stderr
    assert np.count_nonzero(np.load(tmp_path / "o.npy").view(np.uint16) != want) > 0


def test_torch_cpu_needs_the_emulation(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    np.save(tmp_path / "y.npy", np.zeros(2, dtype=np.int64))
    r = CliRunner().invoke(cli, ["softmax", str(tmp_path / "x.npy"), "--torch-cpu", "avx2"])
    assert r.exit_code == 2 and "--emulate torch" in r.stderr
    r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.npy"), "--labels",
                                 str(tmp_path / "y.npy"), "--torch-cpu", "avx2"])
    assert r.exit_code == 2 and "--dtype" in r.stderr


@pytest.mark.skipif(_torch is None, reason="torch not installed")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_xent_dtype_at_the_lane_remainders(tmp_path, dtype):
    rng = np.random.default_rng(8)
    td = {"float16": _torch.float16, "bfloat16": _torch.bfloat16}[dtype]
    for c in REMAINDER_WIDTHS:
        x = rng.standard_normal((32, c)) * 5
        y = rng.integers(0, c, 32)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        r = CliRunner().invoke(cli, ["xent", str(tmp_path / "x.npy"), "--labels",
                                     str(tmp_path / "y.npy"), "--dtype", dtype,
                                     "--reduction", "none", "-o", str(tmp_path / "l.npz")])
        assert r.exit_code == 0, r.stderr
        want = _torch.nn.functional.cross_entropy(_torch.from_numpy(x).to(td),
                                                  _torch.from_numpy(y), reduction="none")
        with np.load(tmp_path / "l.npz", allow_pickle=False) as z:
            np.testing.assert_array_equal(z["loss"], want.float().numpy().astype(np.float64))
