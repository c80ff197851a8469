"""reference.constructions: hand-set block weights under which one layer is one Richardson step
``x <- x - eta (A x - b)`` on the query token, and L layers run L - 1 Newton-Schulz steps on the
equation tokens then one preconditioned step, checked against the classical iterations."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_tensor

from reference import ModelConfig, forward, forward_layers, loss_and_grads, sample_systems
from reference.constructions import (
    newton_schulz_init,
    newton_schulz_params,
    newton_schulz_schedule,
    richardson_params,
)

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


# ----------------------------------------------------------------------------------------------
# Newton-Schulz


def newton_schulz_classical(A, b, x0, n_layers, kappa):
    """The iteration the construction claims to run, written with matrices: ``X_0 = I``,
    ``X <- gamma X + beta X A X`` per layer but the last, then ``x0 - X (A x0 - b)``."""
    coefficients, _ = newton_schulz_schedule(n_layers, kappa)
    X = np.broadcast_to(np.eye(A.shape[1]), A.shape).copy()
    for gamma, beta in coefficients:
        X = gamma * X + beta * X @ A @ X
    eta = 2 / (1 + 1 / kappa) if n_layers == 1 else 1.0
    return x0 - eta * np.einsum("bij,bj->bi", X, np.einsum("bij,bj->bi", A, x0) - b)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 5])
def test_newton_schulz_runs_the_classical_iteration(n_layers):
    """Mixed sizes 2..11 padded to 11, a random initial guess, 3 heads and 4 identities (the extra
    ones unused): the model's output is the matrix iteration's, and every layer but the last leaves
    the query's x-slot alone."""
    params, cfg = newton_schulz_params(n_layers, kappa=7.0, n_heads=3, n_identity=4)
    assert cfg.attention_norm == "none" and cfg.n_layers == n_layers and cfg.n_heads == 3
    A, b, _, mask, x0 = systems(5, sizes=(2, 11))
    check_tensor(f"Newton-Schulz L={n_layers}", forward(params, cfg, A, b, mask, x0),
                 newton_schulz_classical(A, b, x0, n_layers, 7.0), rtol=1e-10, atol=1e-12)
    layers = forward_layers(params, cfg, A, b, mask, x0)  # (B, L+1, M)
    check_tensor("x-slot before the last layer", layers[:, n_layers - 1], x0, rtol=0, atol=0)


def test_newton_schulz_error_meets_its_bound_and_falls_doubly_exponentially():
    """Systems with spectrum in [1/kappa, 1] (the data's law, extremes pinned): the relative error of
    L layers is at most the schedule's bound m_L, which is reached (the pinned extreme eigenvalues)
    and roughly squares from one layer to the next, while CG-L's falls geometrically."""
    kappa = 10.0
    A, b, x, mask = sample_systems(64, (12, 20), kappa=kappa, seed=6)
    errors = []
    for n_layers in range(1, 7):
        params, cfg = newton_schulz_params(n_layers, kappa)
        rel = np.linalg.norm(forward(params, cfg, A, b, mask) - x, axis=1) / np.linalg.norm(x, axis=1)  # (B,)
        bound = newton_schulz_schedule(n_layers, kappa)[1][-1]
        assert rel.max() <= bound * (1 + 1e-6) + 1e-14, (n_layers, rel.max(), bound)
        if n_layers <= 5:
            assert rel.max() >= 0.1 * bound, (n_layers, rel.max(), bound)  # the bound is not loose
        errors.append(rel.max())
    assert errors[5] < 1e-8 and errors[3] < 0.02
    for e_prev, e in zip(errors[1:-1], errors[2:], strict=True):
        assert e <= 2 * e_prev ** 2, errors  # quadratic convergence in depth


def test_newton_schulz_schedule_values():
    """kappa = 1: plain Newton-Schulz (gamma 2, beta -1) and exact; the bound recursion
    m' = m^2 / (2 - m^2) after the first layer; the first layer's optimal quadratic at kappa = 10."""
    coefficients, bounds = newton_schulz_schedule(4, 1.0)
    assert coefficients == [(2.0, -1.0)] * 3 and bounds == [0.0] * 4
    coefficients, bounds = newton_schulz_schedule(8, 10.0)
    check_tensor("first layer (gamma, beta)", np.array(coefficients[0]), np.array([8.8 / 1.61, -8 / 1.61]),
                 rtol=1e-14)
    check_tensor("bounds", np.array(bounds[2:]), np.array([m * m / (2 - m * m) for m in bounds[1:-1]]),
                 rtol=1e-12)
    assert bounds[:2] == [0.9, 0.81 / 1.61] and 0 < bounds[-1] < 1e-35  # no rounding to zero
    coefficients, bounds = newton_schulz_schedule(1, 10.0)
    assert coefficients == [] and bounds == [pytest.approx(9 / 11, rel=1e-15)]


def test_newton_schulz_n_norm_is_exact_at_its_size_only():
    params, cfg = newton_schulz_params(3, kappa=10.0, attention_norm="n", n=6)
    A, b, _, mask, x0 = systems(7, sizes=6)
    check_tensor("norm n at its size", forward(params, cfg, A, b, mask, x0),
                 newton_schulz_classical(A, b, x0, 3, 10.0), rtol=1e-10, atol=1e-12)
    A, b, _, mask, x0 = systems(7, sizes=9)
    assert np.abs(forward(params, cfg, A, b, mask, x0) - newton_schulz_classical(A, b, x0, 3, 10.0)).max() > 1e-3


def test_newton_schulz_init_starts_at_the_construction_and_can_learn():
    """The training start: head 0 is the construction, the other heads add nothing (P = 0) but have
    random Q, so their P has a gradient."""
    cfg = ModelConfig(n_layers=3, n_heads=2, n_identity=3, attention_norm="none", init_scale=0.1)
    params = newton_schulz_init(cfg, kappa=10.0, seed=3)
    exact, _ = newton_schulz_params(3, 10.0, n_heads=2)
    for name in params:
        check_tensor(f"{name} head 0", params[name][0], exact[name][0], rtol=0)
        if name.endswith(".P"):
            assert not params[name][1:].any()
        else:
            assert np.abs(params[name][1:]).min() > 0
    A, b, x, mask, x0 = systems(8, sizes=(2, 9))
    check_tensor("init forward", forward(params, cfg, A, b, mask, x0), forward(exact, cfg, A, b, mask, x0),
                 rtol=0, atol=1e-14)
    _, grads = loss_and_grads(params, cfg, A, b, x, mask, x0=x0)
    assert all(np.abs(grads[f"layers.{layer}.P"][1]).max() > 1e-8 for layer in range(3))
    with pytest.raises(ValueError, match="block model"):
        newton_schulz_init(ModelConfig(parametrization="full", n=4, n_layers=2), kappa=10.0)


def test_newton_schulz_upper_tolerates_a_low_scale_estimate():
    """A spectrum that reaches 1.05 (the scale estimate 5% low): the weights built for [1e-4, 1] fail (the first
    polynomial leaves [-1, 1], the next layers blow up), those built for [1e-4, 1.1] meet their bound."""
    A, b, x, mask = sample_systems(16, 12, kappa=100.0, seed=11)
    A, x = 1.05 * A, x / 1.05  # b = A x unchanged
    for upper, ok in ((1.0, False), (1.1, True)):
        params, cfg = newton_schulz_params(12, kappa=1e4, upper=upper)
        with np.errstate(over="ignore", invalid="ignore"):  # the failing one overflows: that is the point
            rel = np.linalg.norm(forward(params, cfg, A, b, mask) - x, axis=1) / np.linalg.norm(x, axis=1)
        bound = newton_schulz_schedule(12, 1e4, upper)[1][-1]
        assert (rel.max() < 1e-10) == ok, (upper, rel.max(), bound)
    assert bound < 1e-16


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_layers": 0}, "n_layers must be an int >= 1"),
    ({"n_layers": 3, "upper": 0.9}, "upper must be a finite number >= 1"),
    ({"n_layers": 3, "kappa": 0.5}, "kappa must be a finite number >= 1"),
    ({"n_layers": 3, "n_identity": 1}, "n_identity must be an int >= 2"),
    ({"n_layers": 3, "n_heads": 0}, "n_heads must be an int >= 1"),
    ({"n_layers": 3, "attention_norm": "n"}, "needs the system size n"),
])
def test_newton_schulz_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        newton_schulz_params(**kwargs)
