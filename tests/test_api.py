"""The Python API mirrors the CLI: every --variant, with the same meaning (issue 11)."""
from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import smx_cli
from conftest import SAMPLES
from smx_cli.cli import cli
from smx_cli.core import registry
from smx_cli.core.reference import exact_softmax

SEEDS = os.path.join(SAMPLES, "seeds.csv")


def _cli_npy(tmp_path, *args) -> np.ndarray:
    out = tmp_path / "out.npy"
    r = CliRunner().invoke(cli, ["softmax", *map(str, args), "-o", str(out)])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return np.load(out)


def _logits(tmp_path, dtype=np.float64):
    x = np.random.default_rng(4).normal(0, 2, (5, 6)).astype(dtype)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, path


_OPTIONS = {
    "entmax": ({"alpha": 1.3}, ["--alpha", "1.3"]),
    "gumbel": ({"tau": 0.5, "hard": True, "samples": 3, "seed": 7},
               ["--tau", "0.5", "--hard", "--samples", "3", "--seed", "7"]),
}


@pytest.mark.parametrize("variant", registry.ALL_VARIANTS)
@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_every_cli_variant_gives_the_same_array_through_the_api(tmp_path, variant, dtype):
    x, path = _logits(tmp_path, dtype)
    kwargs, args = _OPTIONS.get(variant, ({}, []))
    got = smx_cli.softmax(x, variant=variant, temperature=1.5, **kwargs)
    want = _cli_npy(tmp_path, path, "--variant", variant, "--temperature", "1.5", *args)
    assert got.dtype == want.dtype == x.dtype
    np.testing.assert_array_equal(got, want)


def test_log_means_log_probabilities_in_the_api_as_in_the_cli(tmp_path):
    x, path = _logits(tmp_path)
    got = smx_cli.softmax(x, variant="log")
    np.testing.assert_array_equal(got, smx_cli.log_softmax(x))
    np.testing.assert_array_equal(got, _cli_npy(tmp_path, path, "--variant", "log"))
    _, lp = exact_softmax(x)
    np.testing.assert_allclose(got, lp.astype(np.float64), rtol=1e-15)
    assert (got < 0).all()


def test_mask_and_emulation_reach_the_math_as_the_cli_options_do(tmp_path):
    x, path = _logits(tmp_path)
    mask = np.random.default_rng(1).random(x.shape) > 0.3
    mask[2] = False
    mpath = tmp_path / "m.npy"
    np.save(mpath, mask)
    for variant in ("stable", "sparsemax", "log"):
        got = smx_cli.softmax(x, variant=variant, mask=mask)
        np.testing.assert_array_equal(
            got, _cli_npy(tmp_path, path, "--variant", variant, "--mask", mpath))
        probs = np.exp(got) if variant == "log" else got
        assert (probs[~mask] == 0).all() and (probs[2] == 0).all()
    got = smx_cli.softmax(x, variant="naive", dtype="float16")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, _cli_npy(tmp_path, path, "--variant", "naive",
                                                "--dtype", "float16"))


def test_gumbel_samples_stack_on_a_leading_axis():
    x = np.zeros((2, 3))
    s = smx_cli.softmax(x, variant="gumbel", samples=4, seed=0)
    assert s.shape == (4, 2, 3)
    np.testing.assert_allclose(s.sum(axis=-1), 1)
    h = smx_cli.softmax(x, variant="gumbel", samples=4, seed=0, hard=True)
    assert set(np.unique(h)) <= {0.0, 1.0}
    # the same seed gives the same draws; the hard sample is the argmax of the soft one
    np.testing.assert_array_equal(h.argmax(-1), s.argmax(-1))


@pytest.mark.parametrize("variant,kwargs,what", [
    ("stable", {"alpha": 2.0}, "alpha= does not apply to variant 'stable'"),
    ("sparsemax", {"seed": 1}, "seed= does not apply"),
    ("entmax", {"tau": 2.0}, "tau= does not apply"),
    ("entmax", {"alpha": 1.0}, "alpha must be a finite number > 1"),
    ("gumbel", {"tau": 0.0}, "tau must be a finite number > 0"),
    ("gumbel", {"samples": 0}, "samples must be an integer >= 1"),
    ("nope", {}, "unknown variant 'nope'"),
])
def test_an_option_the_variant_does_not_read_is_an_error(variant, kwargs, what):
    with pytest.raises(ValueError, match=what):
        smx_cli.softmax([1.0, 2.0], variant=variant, **kwargs)


@pytest.mark.parametrize("fn", [smx_cli.sparsemax, smx_cli.entmax15, smx_cli.entmax_bisect,
                                smx_cli.hardmax])
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_sparse_maps_keep_the_input_float_type(fn, dtype):
    x = np.array([[0.1, 0.5, 0.55, -1.0]], dtype=dtype)
    got = fn(x)
    assert got.dtype == np.dtype(dtype)
    want = fn(x.astype(np.float64))
    np.testing.assert_array_equal(got.astype(np.float64),
                                  want.astype(dtype).astype(np.float64))
    assert fn(np.array([1, 2, 3])).dtype == np.float64  # integers: float64, as softmax
    g = smx_cli.gumbel_softmax(x, seed=0)
    assert g.dtype == np.dtype(dtype)


def test_logsumexp_keepdims_and_axis_none_like_scipy():
    special = pytest.importorskip("scipy.special")
    x = np.random.default_rng(3).normal(0, 30, (3, 4, 5))
    for axis in (0, 1, -1, None):
        for keepdims in (False, True):
            got = smx_cli.logsumexp(x, axis=axis, keepdims=keepdims)
            want = special.logsumexp(x, axis=axis, keepdims=keepdims)
            assert np.shape(got) == np.shape(want), (axis, keepdims)
            np.testing.assert_allclose(got, want, rtol=1e-14)
    # keepdims broadcasts back: x - lse is the log-softmax
    lse = smx_cli.logsumexp(x, axis=1, keepdims=True)
    np.testing.assert_allclose(x - lse, smx_cli.log_softmax(x, axis=1), atol=1e-12)
    assert smx_cli.logsumexp([1.0, 2.0], keepdims=True).shape == (1,)


@pytest.mark.parametrize("call", [
    lambda z: smx_cli.logsumexp(z), lambda z: smx_cli.softmax(z),
    lambda z: smx_cli.log_softmax(z), lambda z: smx_cli.softmax(z, variant="sparsemax"),
    lambda z: smx_cli.sparsemax(z),
])
def test_complex_input_is_refused_not_cut_to_its_real_part(call):
    with pytest.raises(ValueError, match="complex input is not supported"):
        call(np.array([1.0 + 2.0j, 3.0 + 0.0j]))


def test_every_command_has_a_same_named_api_function():
    from smx_cli.analysis.compare import SEED_ROWS, compare_stability

    assert smx_cli.compare_stability is compare_stability
    c = smx_cli.compare_stability(SEED_ROWS, ["naive", "smx"], ["float16"])
    assert c.report("naive", "float16").verdict == "broken"
    assert c.report("smx", "float16").verdict == "ok"
    assert {"softmax", "cross_entropy", "compare_stability"} <= set(smx_cli.__all__)


def test_registry_is_the_one_list_of_variants():
    from smx_cli.analysis import compare

    assert smx_cli.ALL_VARIANTS == registry.ALL_VARIANTS
    cmd = cli.commands["softmax"]
    choice = next(p for p in cmd.params if p.name == "variant").type.choices
    assert tuple(choice) == registry.ALL_VARIANTS
    assert set(compare.ALL_VARIANTS) == set(registry.SOFTMAX_VARIANTS) | {compare.ACCURATE}
    for name, spec in registry.VARIANTS.items():
        assert spec.name == name and spec.help and spec.kind in ("prob", "logprob")


def test_agreement_tests_fail_instead_of_skipping_in_ci(monkeypatch):
    """A missing torch skips on a laptop, but fails when CI=true (.ci/run sets it)."""
    import sys

    from conftest import need

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        need("torch")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        need("torch")


@pytest.mark.parametrize("kwargs,what", [
    ({"mask": [True, False]}, r"mask has shape \(2,\), the logits \(3,\)"),
    ({"mask": [1.0, 0.5, 1.0]}, "mask must hold booleans"),
    ({"variant": "entmax", "alpha": float("nan")}, "alpha must be a finite number > 1"),
    ({"variant": "entmax", "alpha": float("inf")}, "alpha must be a finite number > 1"),
    ({"variant": "gumbel", "samples": 2.5}, "samples must be an integer >= 1"),
    ({"variant": "gumbel", "tau": -1.0}, "tau must be a finite number > 0"),
    ({"variant": "sparsemax", "fast": True}, "fast mode applies to the stable and log"),
    ({"variant": "stable", "temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"variant": 3}, "unknown variant 3"),
])
def test_hostile_api_options_are_one_clear_value_error(kwargs, what):
    with pytest.raises(ValueError, match=what):
        smx_cli.softmax([1.0, 2.0, 3.0], **kwargs)


def test_strings_and_objects_are_refused_as_logits():
    with pytest.raises(ValueError, match="real numbers"):
        smx_cli.softmax(np.array(["1", "2"]))
    with pytest.raises(ValueError, match="real numbers"):
        smx_cli.logsumexp(np.array([1.0, None]))


def test_every_command_has_a_same_named_library_function():
    """smx softmax / xent / compare-stability / calibrate -> smx_cli.softmax / xent /
    compare_stability / calibrate; xent is the per-sample report the command shows."""
    import smx_cli
    from smx_cli.cli.app import COMMANDS

    for name in COMMANDS:
        assert callable(getattr(smx_cli, name.replace("-", "_"))), name
    x = np.array([[2.0, 0.0], [0.0, 3.0]])
    res = smx_cli.xent(x, np.array([0, 0]), reduction="none")
    np.testing.assert_allclose(res.loss, smx_cli.cross_entropy(x, [0, 0], reduction="none"),
                               rtol=1e-15)
