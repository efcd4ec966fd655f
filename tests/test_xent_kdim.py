"""K-dimensional cross-entropy against PyTorch: every option, both layouts, gradients by autograd.

PyTorch is the independent reference here (its own kernels, in float64 on
the same values); the ported cases are torch's own test inputs
(torch/testing/_internal: common_modules.module_inputs_torch_nn_CrossEntropyLoss
and common_methods_invocations.sample_inputs_cross_entropy), rebuilt with
numpy's generator in the same shapes, ranges and options.
"""
from __future__ import annotations

import itertools
import os
import math

import numpy as np
import pytest

from smx_cli import cross_entropy, cross_entropy_grad, nll_loss
from smx_cli.core.xent_kdim import class_axis_of, to_rows

try:
    import torch
except ImportError:  # the agreement tests skip without torch, but CI (CI=true) requires it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("torch is not installed", allow_module_level=True)
F = torch.nn.functional


def _torch(x, t, grad=True, **kw):
    """torch's loss (float64) and d(sum of the loss)/dx by autograd."""
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    tt = torch.tensor(t) if np.asarray(t).dtype.kind != "f" else torch.tensor(t, dtype=torch.float64)
    if kw.get("weight") is not None:
        kw = {**kw, "weight": torch.tensor(kw["weight"], dtype=torch.float64)}
    out = F.cross_entropy(xt, tt, **kw)
    g = None
    if grad:
        out.sum().backward()
        g = xt.grad.numpy()
    return out.detach().numpy(), g


def _close(got, ref, rtol=1e-12, atol=1e-14):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == np.shape(ref), (got.shape, np.shape(ref))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)


SHAPES = [(5,), (4, 5), (3, 5, 4), (2, 5, 3, 2)]  # (C,), (N, C), (N, C, d1), (N, C, d1, d2)


def _case(shape, tkind, ignore, rng, dtype):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    c = shape[1] if len(shape) > 1 else shape[0]
    lead = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if tkind == "index":
        t = rng.integers(0, c, size=lead).astype(np.int64)
        if ignore is not None and t.size > 1:
            t.reshape(-1)[::3] = ignore
        return x, t
    p = rng.random(shape)
    return x, p / p.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction,eps,weighted,tkind,ignore", [
    (r, e, w, k, i) for r, e, w, k, i in itertools.product(
        ("mean", "sum", "none"), (0.0, 0.2), (False, True), ("index", "prob"), (None, 2))
    if not (k == "prob" and i is not None)])
def test_every_kdim_option_matches_torch(dtype, shape, reduction, eps, weighted, tkind, ignore):
    rng = np.random.default_rng(hash((shape, reduction, eps, weighted, tkind, ignore)) % 2**32)
    x, t = _case(shape, tkind, ignore, rng, dtype)
    c = shape[1] if len(shape) > 1 else shape[0]
    kw = dict(reduction=reduction, label_smoothing=eps)
    if weighted:
        kw["weight"] = rng.random(c) + 0.25
    if ignore is not None:
        kw["ignore_index"] = ignore
    ref, gref = _torch(x, t, **kw)
    _close(cross_entropy(x, t, **kw), ref)
    # torch's gradient of loss.sum(): for 'none' each position's own gradient
    _close(cross_entropy_grad(x, t, **kw), gref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("tkind", ["index", "prob"])
def test_language_model_layout_is_torch_on_the_transposed_logits(reduction, tkind):
    """(B, T, V) with class_axis=-1 equals torch's (B, V, T) cross-entropy."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 11)).astype(np.float32)
    if tkind == "index":
        t = rng.integers(0, 11, size=(2, 6))
        t[1, 4:] = -100
        tt = t
    else:
        t = rng.dirichlet(np.ones(11), size=(2, 6))
        tt = np.moveaxis(t, -1, 1)
    ref, gref = _torch(np.moveaxis(x, -1, 1), tt, reduction=reduction)
    _close(cross_entropy(x, t, reduction=reduction, class_axis=-1), ref)
    _close(cross_entropy_grad(x, t, reduction=reduction, class_axis=-1), np.moveaxis(gref, 1, -1))


def test_single_row_with_reduction_none_is_0d_like_torch():
    x, y = np.array([1.0, 2.0, 0.5]), np.array(2)
    ref, gref = _torch(x, y, reduction="none")
    got = cross_entropy(x, y, reduction="none")
    assert isinstance(got, np.ndarray) and got.shape == () == ref.shape
    _close(got, ref)
    _close(cross_entropy_grad(x, y), gref)  # a (C,) row and a 0-d target are taken there too
    _close(cross_entropy(x, 2), _torch(x, y)[0])


def test_nll_loss_takes_kdim_log_probs():
    rng = np.random.default_rng(3)
    lp = np.log(rng.dirichlet(np.ones(4), size=(2, 3)))  # (N, d1, C)
    lp = np.moveaxis(lp, -1, 1)  # torch's (N, C, d1)
    y = rng.integers(0, 4, size=(2, 3))
    ref = F.nll_loss(torch.tensor(lp), torch.tensor(y)).item()
    assert nll_loss(lp, y) == pytest.approx(ref, rel=1e-13)


def test_kdim_errors_name_the_position():
    x = np.zeros((2, 3, 4))
    y = np.zeros((2, 4), dtype=int)
    y[1, 2] = 7
    with pytest.raises(ValueError, match=r"label at \(1, 2\) is 7, outside \[0, 3\)"):
        cross_entropy(x, y)
    with pytest.raises(ValueError, match=r"labels have shape \(2, 3\): expected class indices of "
                                         r"shape \(2, 4\)"):
        cross_entropy(x, np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="class axis 3 is out of range for 3-d"):
        cross_entropy(x, y, class_axis=3)
    with pytest.raises(ValueError, match="0-d"):
        cross_entropy(np.float64(1.0), 0)
    t = np.full((2, 3, 4), 1 / 3)
    t[0, :, 1] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"probability target at \(0, 1\) sums to 1.5"):
        cross_entropy(x, t)


def test_helpers():
    assert class_axis_of(4, None) == 1 and class_axis_of(2, -1) == 1 and class_axis_of(1, None) == 0
    x2, t2, lead, ax = to_rows(np.arange(24.0).reshape(2, 3, 4), np.ones((2, 4), int))
    assert lead == (2, 4) and ax == 1
    # row (n, d) is x[n, :, d]
    np.testing.assert_array_equal(x2[5], np.arange(24.0).reshape(2, 3, 4)[1, :, 1])


# ----------------------------------------------------------------------------
# ported from torch/testing/_internal (see the module docstring)


def _make(rng, shape, low=-9.0, high=9.0):
    return rng.uniform(low, high, size=shape)


def _module_inputs(rng):
    """common_modules.module_inputs_torch_nn_CrossEntropyLoss, with numpy's generator."""
    cases = [("", {}), ("weights", {"weight": "w"}), ("ignore_index", {"ignore_index": 1}),
             ("label_smoothing", {"label_smoothing": 0.15}),
             ("ignore_index_label_smoothing", {"ignore_index": 1, "label_smoothing": 0.15})]
    for reduction, (desc, kw) in itertools.product(("mean", "sum", "none"), cases):
        # torch draws weights in [-9, 9); smx refuses negative class weights on purpose
        kw = {k: (np.abs(_make(rng, (3,))) if v == "w" else v) for k, v in kw.items()}
        kw["reduction"] = reduction
        for xs, ts in (((2, 3, 5, 5), (2, 5, 5)), ((2, 3, 5), (2, 5)), ((2, 3), (2,)),
                       ((2, 3, 5, 5, 2, 2), (2, 5, 5, 2, 2))):
            yield f"{xs}_{desc}_{reduction}", _make(rng, xs), rng.integers(0, 3, size=ts), kw
        if "ignore_index" not in kw:
            for xs in ((5, 3, 4, 2), (5, 3, 4), (5, 3), (2, 3, 5, 5, 2, 2)):
                p = np.exp(_make(rng, xs))
                yield f"{xs}_prob_{desc}_{reduction}", _make(rng, xs), p / p.sum(1, keepdims=True), kw
            yield f"no_batch_{desc}_{reduction}", _make(rng, (3,)), rng.integers(0, 3, size=()), kw


def _sample_inputs(rng):
    """common_methods_invocations.sample_inputs_cross_entropy, with numpy's generator.

    Its probability targets are uniform in [0, 1) and not normalised: torch
    takes them as they are, and so does smx with ``target_tolerance=None``.
    """
    shape = (2, 3)
    cases = [(shape, {}), ((*shape, 1), {}), ((*shape, 1, 2), {}), ((*shape, 1, 2, 3), {}),
             *[(shape, {"reduction": r}) for r in ("mean", "sum", "none")],
             *[(shape, {"weight": "w", "reduction": r}) for r in ("mean", "sum", "none")],
             (shape, {"ignore_index": 1})]
    for (xs, kw), prob in itertools.product(cases, (False, True)):
        if prob and "ignore_index" in kw:
            continue
        kw = {k: (np.abs(_make(rng, (3,))) if v == "w" else v) for k, v in kw.items()}
        x = _make(rng, xs)
        if prob:
            t = rng.uniform(0, 1, size=xs)
        else:
            t = rng.integers(0, 3, size=(2, *xs[2:]))
            if "ignore_index" in kw and (t == 1).all():
                t.reshape(-1)[0] = 0
        yield f"sample_{xs}_{sorted(kw)}_{prob}", x, t, kw


PORTED = list(_module_inputs(np.random.default_rng(0))) + list(_sample_inputs(np.random.default_rng(1)))


def test_ported_case_count():
    assert len(PORTED) == 105 + 21


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,x,t,kw", PORTED, ids=[c[0] for c in PORTED])
def test_ported_torch_cases(name, x, t, kw, dtype):
    x = x.astype(dtype)
    ref, gref = _torch(x, t, **kw)
    opts = dict(kw, target_tolerance=None)
    _close(cross_entropy(x, t, **opts), ref, rtol=1e-11)
    _close(cross_entropy_grad(x, t, **opts), gref, rtol=1e-11, atol=1e-13)
    if kw.get("reduction", "mean") == "mean" and math.isfinite(float(ref)):
        assert cross_entropy(x, t, **opts) == pytest.approx(float(ref), rel=1e-11)
