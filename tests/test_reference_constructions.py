"""reference.constructions: hand-set block weights under which one layer is one Richardson step
``x <- x - eta (A x - b)`` on the query token, checked against the classical step."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_tensor

from reference import forward, forward_layers, loss_and_grads, sample_systems
from reference.constructions import richardson_params

B, SIZES, ETA = 5, (3, 7), 0.7


def systems(seed, sizes=SIZES):
    A, b, x, mask = sample_systems(B, sizes, seed=seed)
    x0 = np.random.default_rng([seed, 1]).standard_normal(x.shape) * mask
    return A, b, x, mask, x0


def richardson_step(A, b, x0, eta):
    """Classical step per system; ``eta`` scalar or (B,)."""
    eta = np.broadcast_to(np.asarray(eta, dtype=np.float64), (A.shape[0],))
    return x0 - eta[:, None] * (np.einsum("bij,bj->bi", A, x0) - b)


@pytest.mark.parametrize("n_identity", [1, 3])
def test_richardson_none(n_identity):
    params, cfg = richardson_params(ETA, n_identity=n_identity)
    assert cfg.parametrization == "block" and cfg.n_layers == 1 and cfg.n_heads == 1
    assert cfg.n_identity == n_identity and cfg.attention_norm == "none"
    A, b, _, mask, x0 = systems(0)
    check_tensor("layer vs Richardson step", forward(params, cfg, A, b, mask, x0),
                 richardson_step(A, b, x0, ETA), rtol=1e-12, atol=1e-12)
    layers = forward_layers(params, cfg, A, b, mask, x0)
    check_tensor("forward_layers[:, 0]", layers[:, 0], x0, rtol=0)


def test_richardson_n_same_size():
    """attention_norm="n": systems of the size the weights were set for take exactly the step eta."""
    params, cfg = richardson_params(ETA, attention_norm="n", n=6)
    assert cfg.attention_norm == "n"
    A, b, _, mask, x0 = systems(1, sizes=6)
    check_tensor("layer vs Richardson step (N=6)", forward(params, cfg, A, b, mask, x0),
                 richardson_step(A, b, x0, ETA), rtol=1e-12, atol=1e-12)


def test_richardson_n_mixed_sizes():
    """attention_norm="n" on mixed sizes: a system of size N takes the step eta * n / N."""
    params, cfg = richardson_params(ETA, attention_norm="n", n=5)
    A, b, _, mask, x0 = systems(2)
    n_s = mask.sum(axis=1)
    assert len(set(n_s.tolist())) >= 3
    check_tensor("layer vs Richardson step (eta n / N)", forward(params, cfg, A, b, mask, x0),
                 richardson_step(A, b, x0, ETA * 5 / n_s), rtol=1e-12, atol=1e-12)


def test_repeated_layer_converges_to_solution():
    """Feeding the output back as x0 iterates Richardson: with eta = 1 and spectrum in [0.1, 1]
    the error contracts by 0.9 per step, so 300 steps reach the solution to ~1e-13."""
    params, cfg = richardson_params(1.0)
    A, b, x, mask, _ = systems(3)
    xk = np.zeros_like(b)
    for _ in range(300):
        xk = forward(params, cfg, A, b, mask, xk)
    check_tensor("300 Richardson steps vs solution", xk, x, rtol=0, atol=1e-9)


def test_richardson_params_work_with_loss_and_grads():
    """Sanity of the API: the construction's params work with loss_and_grads (same keys/shapes)."""
    params, cfg = richardson_params(ETA)
    A, b, x, mask, x0 = systems(4)
    loss, grads = loss_and_grads(params, cfg, A, b, x, mask, x0=x0)
    assert np.isfinite(loss) and set(grads) == set(params)
    assert all(grads[k].shape == params[k].shape for k in params)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"eta": float("nan")}, "eta must be a finite"),
    ({"eta": 0.5, "n_identity": 0}, "n_identity must be an int >= 1"),
    ({"eta": 0.5, "attention_norm": "n"}, "needs the system size n"),
    ({"eta": 0.5, "attention_norm": "sqrt"}, "attention_norm must be one of"),
])
def test_richardson_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        richardson_params(**kwargs)
