"""Probability targets are checked inside the compiled kernel's sweep, with check_target's errors.

On the native engine ``evaluate`` hands float32/float64 targets to the kernel as they are
(``check_target(..., defer_prob=True)``) and checks them from the kernel's row sums
(``check_target_sums``); these tests assert that every refusal names the same row, class
and value on both engines, that accepted targets give the same results as the float64
checked path, and that the targets are not copied to float64 on the way.
"""
from __future__ import annotations

import numpy as np
import pytest

from smx_cli.core import native
from smx_cli.core.xent import evaluate
from smx_cli.core.xent_checks import check_target


def both(fn):
    """(message on the selected engine, message on the numpy engine)."""
    out = []
    for ctx in (native.numpy_engine, None):
        try:
            if ctx is None:
                fn()
            else:
                with ctx():
                    fn()
        except ValueError as exc:
            out.append(str(exc))
        else:
            out.append(None)
    return out[1], out[0]


def targets(n=40, c=23, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (n, c)).astype(np.float32)
    t = rng.dirichlet(np.ones(c), n).astype(dtype)
    return x, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [-0.25, np.nan, np.inf, -np.inf])
def test_a_bad_target_is_named_alike_on_both_engines(dtype, bad):
    x, t = targets(dtype=dtype)
    t[17, 5] = bad
    t[30, 2] = -1.0  # a later row: the first bad row is named
    native_msg, numpy_msg = both(lambda: evaluate(x, t, reduction="none"))
    assert numpy_msg is not None and native_msg == numpy_msg
    assert numpy_msg.startswith(f"probability target row 17, class 5 is {float(bad)!r}")


def test_a_bad_target_on_a_nan_logit_row_is_still_refused():
    x, t = targets()
    x[4, 0] = np.nan  # the kernel hands this row back; its targets are still checked
    t[4, 9] = -0.5
    native_msg, numpy_msg = both(lambda: evaluate(x, t))
    assert native_msg == numpy_msg == (
        "probability target row 4, class 9 is -0.5: targets must be finite and >= 0")


def test_a_row_off_the_tolerance_is_named_alike():
    x, t = targets(dtype=np.float64)
    t[11] *= 1.01
    t[25] *= 0.5
    native_msg, numpy_msg = both(lambda: evaluate(x, t))
    assert native_msg == numpy_msg
    assert numpy_msg.startswith("probability target row 11 sums to ")
    assert numpy_msg.endswith("not 1 (tolerance 1e-06); 2 row(s) are off")
    # None: any sum, as PyTorch
    native_msg, numpy_msg = both(lambda: evaluate(x, t, target_tolerance=None))
    assert native_msg is None and numpy_msg is None


def test_accepted_targets_give_the_checked_results():
    x, t = targets(n=64, c=300, dtype=np.float32, seed=3)
    w = np.random.default_rng(4).uniform(0, 2, 300)
    got = evaluate(x, t, weight=w, label_smoothing=0.1, reduction="none")
    with native.numpy_engine():
        ref = evaluate(x, t.astype(np.float64), weight=w, label_smoothing=0.1,
                       reduction="none")
    np.testing.assert_allclose(got.loss, ref.loss, rtol=32 * 2.0**-52, atol=0)
    np.testing.assert_allclose(got.nll, ref.nll, rtol=32 * 2.0**-52, atol=0)
    np.testing.assert_array_equal(got.true_class, ref.true_class)


def test_deferred_targets_are_not_copied():
    _, t = targets()
    kind, same = check_target(t, *t.shape, -100, defer_prob=True)
    assert kind == "prob" and same is t
    kind, wide = check_target(t, *t.shape, -100)
    assert wide.dtype == np.float64 and wide is not t
    # float16 targets are widened (and checked) either way
    t16 = t.astype(np.float16)
    assert check_target(t16, *t.shape, -100, tolerance=None,
                        defer_prob=True)[1].dtype == np.float64
    t16[2, 2] = -1
    with pytest.raises(ValueError, match="row 2, class 2 is -1.0"):
        check_target(t16, *t.shape, -100, tolerance=None, defer_prob=True)
