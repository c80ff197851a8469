"""The shared test helpers themselves (other suites rely on them): check_tensor and fd_vjp."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_grad, check_tensor, fd_vjp, rel_error


def test_check_tensor_passes_within_tolerance(capsys):
    check_tensor("close", [1.0, 2.0 + 1e-11], [1.0, 2.0])
    check_tensor("atol", [1e-13], [0.0], atol=1e-12)
    check_tensor("nan and inf in both", [np.nan, np.inf], [np.nan, np.inf])
    assert "close: maxdiff=" in capsys.readouterr().out


@pytest.mark.parametrize(("mine", "ref", "kw"), [
    ([1.0, 2.0], [1.0, 2.1], {}),
    ([0.0], [1e-300], {}),  # rtol alone never excuses a difference from a tiny ref
    ([np.nan], [1.0], {}),
    ([np.inf], [-np.inf], {}),
    ([1.0], [np.inf], {}),
    ([1e-11], [0.0], {"atol": 1e-12}),
])
def test_check_tensor_fails_loudly(mine, ref, kw, capsys):
    with pytest.raises(AssertionError, match="entries differ"):
        check_tensor("x", mine, ref, **kw)
    assert " vs " in capsys.readouterr().out  # the first mismatches are printed


def test_check_tensor_shape_mismatch():
    with pytest.raises(AssertionError, match="shape mismatch"):
        check_tensor("x", np.zeros((3,)), np.zeros((3, 1)))


def test_fd_vjp_known_gradients():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 4))
    v = rng.standard_normal(4)
    dout = rng.standard_normal(3)
    W0 = W.copy()
    gW, gv = fd_vjp(lambda w, x: w @ x**3, [W, v], dout)
    check_tensor("d/dW", gW, np.outer(dout, v**3), rtol=1e-8, atol=1e-9)
    check_tensor("d/dv", gv, (W.T @ dout) * 3 * v**2, rtol=1e-8, atol=1e-9)
    (g,) = fd_vjp(lambda x: float(np.sum(x**2)), [v], 1.0)  # scalar output
    check_tensor("d/dv |v|^2", g, 2 * v, rtol=1e-8, atol=1e-9)
    (gv_only,) = fd_vjp(lambda w, x: w @ x, [W, v], dout, wrt=[1])
    check_tensor("wrt", gv_only, W.T @ dout, rtol=1e-8, atol=1e-9)
    assert np.array_equal(W, W0)  # inputs are not perturbed in place


def test_check_grad_and_rel_error():
    assert rel_error([1.0, -2.0], [1.0, -2.0 + 2e-7]) == pytest.approx(1e-7)
    check_grad("ok", [1.0, -2.0 + 1e-9], [1.0, -2.0])
    check_grad("zero", np.zeros(3), np.zeros(3))
    with pytest.raises(AssertionError):
        check_grad("bad", [1.0, -2.1], [1.0, -2.0])
    with pytest.raises(AssertionError):
        check_grad("zero vs nonzero", [1e-3, 0.0], [0.0, 0.0])
