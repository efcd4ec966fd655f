"""variants.run dispatch, masks, and the O(C) Jacobian blocks/summaries."""
import numpy as np
import pytest

from smx_cli.core import sparse as family
from smx_cli.core import grad
from smx_cli.core import registry as variants
from smx_cli.core.softmax import softmax

RNG = np.random.default_rng(21)


@pytest.mark.parametrize("variant,full", [
    ("stable", lambda x, p: grad.softmax_jacobian(x)),
    ("log", lambda x, p: grad.softmax_jacobian(x, kind="log")),
    ("sparsemax", lambda x, p: family.sparse_jacobian(p, 2.0)),
    ("entmax15", lambda x, p: family.sparse_jacobian(p, 1.5)),
])
def test_jacobian_block_and_summary_match_the_full_matrix(variant, full):
    for x in [RNG.normal(0, 2, 7), np.array([0.0, 20.0, 40.0]), np.array([1.0, 1.0])]:
        r = variants.run(x[None], variant)
        p = r.result.values[0]
        p = np.exp(p) if variant == "log" else p
        jac = full(x, p)
        idx = np.arange(len(x))
        np.testing.assert_allclose(variants.jacobian_block(variant, p, idx), jac, rtol=1e-12, atol=1e-300)
        sub = np.array([0, len(x) - 1])
        np.testing.assert_allclose(variants.jacobian_block(variant, p, sub), jac[np.ix_(sub, sub)],
                                   rtol=1e-12, atol=1e-300)
        largest, fro = variants.jacobian_summary(variant, p)
        assert largest == pytest.approx(np.abs(jac).max(), rel=1e-12)
        assert fro == pytest.approx(np.linalg.norm(jac), rel=1e-12)


def test_saturated_summary_keeps_tiny_entries_accurate():
    # exact: largest entry p1 (1 - p1) with p1 = e^-20 / (1 + e^-20 + e^-40)
    p = softmax(np.array([0.0, 20.0, 40.0]))
    largest, fro = variants.jacobian_summary("stable", p)
    e20 = np.exp(-20.0)
    assert largest == pytest.approx(e20, rel=1e-8)
    assert fro == pytest.approx(2 * e20, rel=1e-8)


def test_mask_gives_zeros_for_masked_entries_and_fully_masked_rows():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = np.array([[True, False, True], [False, False, False]])
    for v in ("stable", "log", "online", "sparsemax", "entmax15", "hardmax"):
        out = variants.run(x, v, mask=mask).result.values
        probs = np.exp(out) if v == "log" else out
        assert probs[0, 1] == 0
        assert np.isfinite(out[0, [0, 2]]).all()
        np.testing.assert_array_equal(probs[1], 0)  # zeros, never NaN
    np.testing.assert_allclose(variants.run(x, mask=mask).result.values[0],
                               softmax(np.array([1.0, 3.0])).tolist()[:1] + [0.0]
                               + softmax(np.array([1.0, 3.0])).tolist()[1:], rtol=1e-15)


def test_run_options_reach_the_maps():
    x = RNG.normal(0, 1, (5, 6))
    a2 = variants.run(x, "entmax", options=variants.VariantOptions(alpha=2.0)).result.values
    np.testing.assert_allclose(a2, family.sparsemax(x), atol=1e-12)
    a13 = variants.run(x, "entmax", options=variants.VariantOptions(alpha=1.3)).result.values
    assert np.abs(a13 - a2).max() > 1e-3
    g1 = variants.run(x, "gumbel", options=variants.VariantOptions(seed=1, tau=0.5)).result.values
    g2 = variants.run(x, "gumbel", options=variants.VariantOptions(seed=1, tau=5.0)).result.values
    assert g1.max(axis=1).mean() > g2.max(axis=1).mean()  # lower tau: sharper samples
    t = variants.run(x, "sparsemax", temperature=10.0).result.values
    np.testing.assert_allclose(t, family.sparsemax(x / 10.0))


def test_sparse_variants_under_dtype_round_input_and_output():
    x = np.array([[0.1, 0.2, 0.35]])
    r = variants.run(x, "sparsemax", dtype="float16")
    assert r.result.values.dtype == np.float16
    ref = family.sparsemax(x.astype(np.float16).astype(np.float64))
    np.testing.assert_array_equal(r.result.values, ref.astype(np.float16))


def test_vjp_of_every_variant_matches_its_jacobian():
    x = RNG.normal(0, 1.5, (4, 5))
    g = RNG.normal(size=(4, 5))
    for v in ("stable", "log", "sparsemax", "entmax15", "hardmax"):
        r = variants.run(x, v)
        p = r.result.values
        got = variants.vjp(v, x, p, g)
        for i in range(4):
            pr = np.exp(p[i]) if v == "log" else p[i]
            jac = variants.jacobian_block(v, pr, np.arange(5))
            np.testing.assert_allclose(got[i], g[i] @ jac, rtol=1e-10, atol=1e-14)


def test_check_gradients_for_sparse_variants_pass():
    x = RNG.normal(0, 1, (20, 6))
    for v in ("sparsemax", "entmax15"):
        checks = variants.check_gradients(v, x, rows=5)
        assert [c.function for c in checks] == ["softmax", "log", v]
        assert all(c.passed for c in checks), checks


def test_check_gradient_at_a_sparsemax_kink_uses_one_sided_differences():
    # [1, 2, 3]: tau = 2, so x_1 = 2 sits exactly on the support boundary; the
    # central difference averages the two one-sided slopes and matches neither
    from smx_cli.core import gradcheck

    x = np.array([[1.0, 2.0, 3.0]])
    assert variants.run(x, "sparsemax").result.values[0, 1] == 0.0
    check = variants.check_gradients("sparsemax", x, rows=1)[-1]
    assert check.passed and check.kinks >= 1, check

    def forward(v):
        return variants.run(v[None, :], "sparsemax").result.values[0]

    def beyond(v, p, g):  # past the farther one-sided slope by the jump: no derivative
        _, fwd, bwd = gradcheck.differences(lambda u: float(g @ forward(u)), v, np.arange(3))
        assert np.abs(fwd - bwd).max() > 0.1  # a real kink
        return np.maximum(fwd, bwd) + np.abs(fwd - bwd)

    bad = gradcheck.check_map("sparsemax", x, forward, beyond, rows=1)
    assert not bad.passed, bad
