"""smx softmax with the family variants, masks and gradient options, end to end."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from smx_cli.cli import cli
from smx_cli.core.sparse import entmax_bisect, sparsemax

SEEDS = os.path.join(SAMPLES, "seeds.csv")
SATURATED = os.path.join(SAMPLES, "saturated.csv")
MNIST = os.path.join(SAMPLES, "mnist_lenet_logits.npy")


def invoke(*args):
    return CliRunner().invoke(cli, ["softmax", *map(str, args)])


def csv_out(*args):
    r = invoke(*args, "--format", "csv")
    assert r.exit_code == 0, r.stderr
    return np.loadtxt(r.stdout.splitlines(), delimiter=",", ndmin=2)


def test_saturated_row_shows_tiny_jacobian_and_warning():
    r = invoke(SATURATED, "--grad")
    assert r.exit_code == 0, r.stderr
    assert "2.06e-09" in r.stdout  # the largest Jacobian entry of [0, 20, 40]
    assert "saturated: ~no gradient flows" in r.stdout
    assert "1 of 2 rows have every softmax-Jacobian entry below" in r.stdout
    assert "smx xent" in r.stdout  # the training signal of cross-entropy is p - y
    assert "T = 4.343" in r.stdout  # the temperature that brings max p to 0.99


def test_upstream_vjp_shown_and_written(tmp_path):
    x = np.loadtxt(SEEDS, delimiter=",", comments="#")
    g = np.random.default_rng(0).normal(size=x.shape)
    gp = tmp_path / "g.npy"
    np.save(gp, g)
    out = tmp_path / "vjp.npy"
    r = invoke(SEEDS, "--upstream", gp, "--grad-out", out)
    assert r.exit_code == 0, r.stderr
    assert "vector-Jacobian product" in r.stdout
    got = np.load(out)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, p * (g - (g * p).sum(axis=1, keepdims=True)), atol=1e-15)
    # log-softmax VJP: g - p sum(g)
    r = invoke(SEEDS, "--variant", "log", "--upstream", gp, "--grad-out", out)
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(np.load(out), g - p * g.sum(axis=1, keepdims=True), atol=1e-14)


def test_grad_out_needs_upstream_and_shapes_must_match(tmp_path):
    r = invoke(SEEDS, "--grad-out", tmp_path / "x.npy")
    assert r.exit_code == 2 and "--upstream" in r.stderr
    gp = tmp_path / "g.npy"
    np.save(gp, np.zeros((4, 2)))
    r = invoke(SEEDS, "--upstream", gp, "--grad-out", tmp_path / "x.npy")
    assert r.exit_code == 1 and "must match" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()


def test_check_grad_passes_on_mnist():
    r = invoke(MNIST, "--check-grad", "--rows", "2")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("pass") >= 2 and "FAIL" not in r.stdout


def test_sparsemax_exact_zeros_and_support():
    got = csv_out(SEEDS, "--variant", "sparsemax")
    x = np.loadtxt(SEEDS, delimiter=",", comments="#")
    np.testing.assert_allclose(got, sparsemax(x))
    assert (got[:2, :2] == 0).all()  # softmax gives 0.09, 0.24 there
    r = invoke(SEEDS, "--variant", "sparsemax")
    assert "support" in r.stdout and "exact zeros" in r.stdout
    assert "underflowed" not in r.stdout


def test_entmax_alpha_reaches_the_math():
    got13 = csv_out(SEEDS, "--variant", "entmax", "--alpha", "1.3")
    got20 = csv_out(SEEDS, "--variant", "entmax", "--alpha", "2")
    xs = np.loadtxt(SEEDS, delimiter=",", comments="#")
    np.testing.assert_allclose(got13, entmax_bisect(xs, 1.3), atol=1e-12)
    np.testing.assert_allclose(got20, sparsemax(xs), atol=1e-12)
    r = invoke(SEEDS, "--variant", "entmax", "--alpha", "1")
    assert r.exit_code == 2


def test_gumbel_seed_samples_hard_tau():
    a = csv_out(SEEDS, "--variant", "gumbel", "--seed", "3", "--samples", "4")
    b = csv_out(SEEDS, "--variant", "gumbel", "--seed", "3", "--samples", "4")
    c = csv_out(SEEDS, "--variant", "gumbel", "--seed", "4", "--samples", "4")
    assert a.shape == (16, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    hard = csv_out(SEEDS, "--variant", "gumbel", "--seed", "3", "--samples", "4", "--hard")
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard.argmax(axis=1), a.argmax(axis=1))
    soft = csv_out(SATURATED, "--variant", "gumbel", "--seed", "1", "--tau", "100")
    assert soft.max() < 0.9  # a high tau flattens the samples


@pytest.mark.parametrize("variant", ["stable", "naive", "log", "online", "lse", "hardmax",
                                     "sparsemax", "entmax15", "entmax", "gumbel"])
def test_every_variant_with_grad_dtype_output_and_mask(variant, tmp_path):
    mask = tmp_path / "m.csv"
    mask.write_text("1,0,1\n")
    out = tmp_path / "out.npy"
    r = invoke(SEEDS, "--variant", variant, "--grad", "--dtype", "float32", "-o", out,
               "--mask", mask, "--seed", "0")
    assert r.exit_code == 0, r.stderr
    assert "Jacobian" in r.stdout
    y = np.load(out)
    assert y.dtype == np.float32 and y.shape == (4, 3)
    probs = np.exp(y) if variant == "log" else y
    assert (probs[:, 1] == 0).all()


def test_fully_masked_row_gives_zeros_and_is_reported(tmp_path):
    mask = tmp_path / "m.csv"
    mask.write_text("1,1,1\n0,0,0\n1,1,1\n1,1,1\n")
    got = csv_out(SEEDS, "--mask", mask)
    assert (got[1] == 0).all() and np.isfinite(got).all()
    r = invoke(SEEDS, "--mask", mask)
    assert "fully masked rows 1" in r.stdout


def test_bad_mask_one_line_error(tmp_path):
    mask = tmp_path / "m.csv"
    mask.write_text("1,maybe,1\n")
    r = invoke(SEEDS, "--mask", mask)
    assert r.exit_code == 1 and "maybe" in r.stderr and "line 1, column 2" in r.stderr
    mask.write_text("1,0\n")
    r = invoke(SEEDS, "--mask", mask)
    assert r.exit_code == 1 and "shape" in r.stderr


def test_json_output_carries_support(tmp_path):
    r = invoke(SEEDS, "--variant", "entmax15", "--format", "json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["variant"] == "entmax15" and doc["support"] == [2, 1, 1, 1]
