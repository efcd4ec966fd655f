"""sparsemax / entmax / hardmax / Gumbel-softmax against independent references."""
import numpy as np
import pytest

from conftest import need
from scipy.optimize import brentq

from smx_cli.core.sparse import (apply_mask, entmax15, entmax_bisect, gumbel_softmax, hardmax,
                            sparse_jacobian, sparse_vjp, sparsemax)
from smx_cli.core.softmax import softmax

RNG = np.random.default_rng(11)
ROWS = np.concatenate([RNG.normal(0, s, (40, 9)) for s in (0.1, 1, 5, 50)]
                      + [np.array([[0.0, 0.5, 0.6, -3, 2, 2, 2, 1e-9, -1e3]])])


def slow_entmax(z, alpha):
    """Independent solver: brentq on tau of sum [(a-1) z - tau]_+^(1/(a-1)) = 1."""
    x = (alpha - 1) * np.asarray(z, dtype=np.float64)
    power = 1 / (alpha - 1)
    f = lambda tau: np.sum(np.clip(x - tau, 0, None) ** power) - 1  # noqa: E731
    tau = brentq(f, x.max() - 1, x.max(), xtol=1e-15, rtol=1e-15, maxiter=500)
    return np.clip(x - tau, 0, None) ** power


def test_sparsemax_optimality_conditions():
    p, support = sparsemax(ROWS, return_support=True)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-12)
    assert (p >= 0).all()
    for row, pr, k in zip(ROWS, p, support):
        s = pr > 0
        assert s.sum() == k
        # KKT: z_i - tau is the same on the support, and <= 0 off it
        tau = np.mean(row[s] - pr[s])
        np.testing.assert_allclose(row[s] - pr[s], tau, atol=1e-9 * max(1, abs(tau)))
        assert (row[~s] <= tau + 1e-9 * max(1, abs(tau))).all()


@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.0, 3.0])
def test_entmax_bisect_matches_slow_solver(alpha):
    got = entmax_bisect(ROWS, alpha)
    for row, g in zip(ROWS, got):
        np.testing.assert_allclose(g, slow_entmax(row, alpha), atol=1e-10)


def test_entmax15_exact_matches_slow_solver_and_bisection():
    got, support = entmax15(ROWS, return_support=True)
    for row, g in zip(ROWS, got):
        np.testing.assert_allclose(g, slow_entmax(row, 1.5), atol=1e-10)
    np.testing.assert_allclose(entmax_bisect(ROWS, 1.5), got, atol=1e-12)
    assert (support == (got > 0).sum(axis=1)).all()


def test_alpha_two_is_sparsemax_and_alpha_near_one_is_softmax():
    np.testing.assert_allclose(entmax_bisect(ROWS, 2.0), sparsemax(ROWS), atol=1e-12)
    near = entmax_bisect(ROWS[:80], 1.0 + 1e-6)
    np.testing.assert_allclose(near, softmax(ROWS[:80]), atol=1e-5)
    # and the distance shrinks as alpha -> 1
    d1 = np.abs(entmax_bisect(ROWS[:80], 1.1) - softmax(ROWS[:80])).max()
    d2 = np.abs(entmax_bisect(ROWS[:80], 1.01) - softmax(ROWS[:80])).max()
    assert d2 < d1


def test_sparsemax_gives_exact_zeros_where_softmax_does_not():
    seeds = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 5.0]])
    sp = sparsemax(seeds)
    assert (sp[:, :2] == 0).all() and (softmax(seeds)[:, :2] > 0).all()


def test_special_rows():
    x = np.array([[np.inf, 1.0, np.inf], [-np.inf, -np.inf, -np.inf], [np.nan, 1.0, 2.0],
                  [-np.inf, 0.0, 0.0]])
    for fn in (sparsemax, entmax15, hardmax, lambda z, **k: entmax_bisect(z, 1.3, **k)):
        out = fn(x)
        np.testing.assert_array_equal(out[0], [0.5, 0, 0.5])
        assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
        np.testing.assert_allclose(out[3], [0, 0.5, 0.5])
        assert (fn(x, masked="zeros")[1] == 0).all()


def test_hardmax_ties_split_evenly():
    out = hardmax(np.array([[1.0, 3.0, 3.0, 3.0]]))
    np.testing.assert_allclose(out, [[0, 1 / 3, 1 / 3, 1 / 3]])


def test_gumbel_reproducible_with_seed_and_frequencies_match_softmax():
    z = np.array([[0.0, 1.0, 2.0, -1.0]])
    a = gumbel_softmax(z, samples=5, seed=3)
    b = gumbel_softmax(z, samples=5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gumbel_softmax(z, samples=5, seed=4))
    k = 20000
    hard = gumbel_softmax(z, hard=True, samples=k, seed=0)[:, 0, :]
    assert set(np.unique(hard)) <= {0.0, 1.0}
    freq = hard.mean(axis=0)
    p = softmax(z)[0]
    # 5 standard errors of a binomial proportion
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / k))


def test_gumbel_low_tau_approaches_one_hot():
    s = gumbel_softmax(np.array([[0.0, 1.0, 2.0]]), tau=0.01, samples=50, seed=1)
    assert np.median(s.max(axis=-1)) > 0.999 and np.mean(s.max(axis=-1) > 0.99) > 0.9


def _fd_jacobian(fn, z, h=1e-7):
    d = len(z)
    jac = np.empty((d, d))
    for j in range(d):
        zp, zm = z.copy(), z.copy()
        zp[j] += h
        zm[j] -= h
        jac[:, j] = (fn(zp[None])[0] - fn(zm[None])[0]) / (2 * h)
    return jac


@pytest.mark.parametrize("name,alpha,fn", [("sparsemax", 2.0, sparsemax), ("entmax15", 1.5, entmax15),
                                           ("entmax1.3", 1.3, lambda z: entmax_bisect(z, 1.3))])
def test_sparse_gradients_against_finite_differences(name, alpha, fn):
    for z in ROWS[[0, 45, 100, -1]]:
        # stay off the kinks: finite differences are only valid where the support is stable
        p = fn(z[None])[0]
        jac = sparse_jacobian(p, alpha)
        np.testing.assert_allclose(jac, _fd_jacobian(fn, z.copy()), atol=1e-5)
        g = RNG.normal(size=len(z))
        np.testing.assert_allclose(sparse_vjp(p[None], g[None], alpha)[0], g @ jac, atol=1e-12)


def test_mask_sets_minus_inf_and_checks_shape():
    x = np.array([[1.0, 2.0, 3.0]])
    m = np.array([[True, False, True]])
    np.testing.assert_array_equal(apply_mask(x, m), [[1.0, -np.inf, 3.0]])
    with pytest.raises(ValueError, match="must match"):
        apply_mask(x, m[:, :2])


def test_agrees_with_entmax_package(torch):
    entmax = need("entmax")
    t = torch.tensor(ROWS, dtype=torch.float64)
    np.testing.assert_allclose(sparsemax(ROWS), entmax.sparsemax(t, dim=-1).numpy(), atol=1e-12)
    np.testing.assert_allclose(entmax15(ROWS), entmax.entmax15(t, dim=-1).numpy(), atol=1e-12)
    np.testing.assert_allclose(entmax_bisect(ROWS, 1.3),
                               entmax.entmax_bisect(t, alpha=1.3, dim=-1, n_iter=80).numpy(),
                               atol=1e-9)


def test_sparse_maps_take_a_single_row_and_refuse_nd():
    """1-D in, 1-D out (like softmax); N-d is a ValueError, not an IndexError."""
    assert sparsemax([0.0, 0.5, 0.6]).round(6).tolist() == [0.0, 0.45, 0.55]
    assert hardmax([1.0, 3.0, 3.0]).tolist() == [0.0, 0.5, 0.5]
    assert entmax15([0.0, 0.0]).tolist() == [0.5, 0.5]
    assert np.allclose(entmax_bisect([0.0, 0.5, 0.6], alpha=2.0), [0.0, 0.45, 0.55])
    p, support = sparsemax([0.0, 0.5, 0.6], return_support=True)
    assert p.shape == (3,) and int(support) == 2
    for fn in (sparsemax, hardmax, entmax15, entmax_bisect):
        with pytest.raises(ValueError, match="shape"):
            fn(np.zeros((2, 2, 3)))
