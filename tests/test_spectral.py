"""The equivariant model (``ModelConfig.equivariant``), its spectral path in both twins, the spectral view, and
layer-wise least squares (docs/concepts.md, sections 11-12)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reference import analysis, spectral
from reference.config import ModelConfig
from reference.constructions import newton_schulz_params, newton_schulz_schedule
from reference.data import haar_q, sample_systems
from reference.greedy import greedy_fit, greedy_stage, to_params
from reference.model import forward, init_params, loss_and_grads
from reference.optim import train_lbfgs
from tests.helpers import check_grad, check_tensor, fd_vjp

EQ = ModelConfig(n_layers=4, n_heads=2, n_identity=3, init_scale=0.3, b_last_layer=True, equivariant=True)


def _rotated_systems(n=7, B=3, seed=0):
    """``(lam, U, A, b, x)``: ``A = U diag(lam) U^T`` with distinct sizes so that a wrong transpose shows."""
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.05, 1.0, (B, n))
    U = haar_q(rng.standard_normal((B, n, n)))
    A = U @ (lam[:, :, None] * np.swapaxes(U, 1, 2))
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    x = rng.standard_normal((B, n))
    return lam, U, A, np.einsum("bij,bj->bi", A, x), x


@pytest.mark.parametrize("equivariant", [True, False])
def test_equivariant_models_commute_with_rotations(equivariant):
    """f(Q A Q^T, Q b) = Q f(A, b) to rounding with the option; without it the ones vectors break it."""
    cfg = dataclasses.replace(EQ, equivariant=equivariant)
    params = init_params(cfg, seed=1)
    _, _, A, b, _ = _rotated_systems()
    Q = haar_q(np.random.default_rng(5).standard_normal(A.shape))
    x1 = forward(params, cfg, A, b)
    x2 = forward(params, cfg, Q @ A @ np.swapaxes(Q, 1, 2), np.einsum("bij,bj->bi", Q, b))
    err = np.abs(x2 - np.einsum("bij,bj->bi", Q, x1)).max() / np.abs(x1).max()
    assert (err < 1e-12) if equivariant else (err > 1e-3), err
    solver = lambda A_, b_: forward(params, cfg, A_, b_)  # noqa: E731
    assert (analysis.equivariance_error(solver, n=6, systems=4) < 1e-12) == equivariant


def test_equivariant_needs_b_last_layer():
    with pytest.raises(ValueError, match="equivariant needs b_last_layer"):
        ModelConfig(equivariant=True)


@pytest.mark.parametrize("norm", ["none", "n"])
def test_spectral_path_equals_the_full_model(norm):
    """x_hat = U g(lam) U^T b, and the loss and gradients with weights (U^T x)^2 are the full model's, to rounding."""
    cfg = dataclasses.replace(EQ, attention_norm=norm)
    params = init_params(cfg, seed=3)
    lam, U, A, b, x = _rotated_systems(seed=2)
    g = spectral.transfer(params, cfg, lam)
    x_spec = np.einsum("bij,bj->bi", U, g * np.einsum("bji,bj->bi", U, b))
    check_tensor("x_hat", x_spec, forward(params, cfg, A, b), rtol=1e-10, atol=1e-12)
    loss_full, grads_full = loss_and_grads(params, cfg, A, b, x)
    loss_spec, grads_spec = spectral.loss_and_grads(params, cfg, lam, weights=np.einsum("bji,bj->bi", U, x) ** 2)
    check_tensor("loss", loss_spec, loss_full, rtol=1e-12)
    scale = max(np.abs(v).max() for v in grads_full.values())
    for k in grads_full:
        check_tensor(k, grads_spec[k], grads_full[k], rtol=0.0, atol=1e-11 * scale)


def test_spectral_backward_by_finite_differences():
    """The hand-written backward against centred differences of sum(g * dout), padded spectra, distinct sizes."""
    cfg = dataclasses.replace(EQ, n_layers=3, n_heads=2, n_identity=2, init_scale=0.4)
    params = init_params(cfg, seed=4)
    rng = np.random.default_rng(6)
    lam = rng.uniform(0.1, 1.0, (3, 5))
    mask = np.ones(lam.shape, bool)
    mask[1, 3:] = False
    dout = rng.standard_normal(lam.shape) * mask
    g, cache, _ = spectral.model_forward(params, cfg, lam * mask, mask)
    grads = spectral.model_backward(dout, cache, cfg)
    names = list(params)

    def fn(*arrays):
        return spectral.model_forward(dict(zip(names, arrays, strict=True)), cfg, lam * mask, mask)[0]

    for name, num in zip(names, fd_vjp(fn, [params[k] for k in names], dout), strict=True):
        check_grad(name, grads[name], num, tol=1e-6)


def test_tensorflow_spectral_twin():
    from tf_impl import spectral as tf_spectral

    cfg = dataclasses.replace(EQ, attention_norm="n")
    params = init_params(cfg, seed=7)
    rng = np.random.default_rng(8)
    lam = rng.uniform(0.01, 1.0, (3, 6))
    mask = np.ones(lam.shape, bool)
    mask[2, 4:] = False
    w = rng.uniform(0.0, 2.0, lam.shape)
    check_tensor("g", tf_spectral.transfer(params, cfg, lam, mask), spectral.transfer(params, cfg, lam, mask),
                 rtol=1e-12, atol=1e-14)
    loss_ref, grads_ref = spectral.loss_and_grads(params, cfg, lam, mask, w)
    loss_tf, grads_tf = tf_spectral.loss_and_grads(params, cfg, lam, mask, w)
    check_tensor("loss", loss_tf, loss_ref, rtol=1e-12)
    for k in grads_ref:
        check_tensor(k, grads_tf[k], grads_ref[k], rtol=1e-10, atol=1e-13)


def test_spectral_path_refuses_a_model_that_is_not_equivariant():
    cfg = dataclasses.replace(EQ, equivariant=False)
    with pytest.raises(ValueError, match="equivariant"):
        spectral.transfer(init_params(cfg), cfg, np.ones((1, 3)))


def test_spectral_view_of_the_construction_is_its_residual_polynomial():
    """component_errors of the hand-set Newton-Schulz model = |1 - y_L(lambda)|, y_0 = lambda,
    y_{l+1} = gamma_l y_l + beta_l y_l^2 (its schedule); CG's is not a function of lambda alone but is below 1."""
    L, kappa = 5, 100.0
    params, cfg = newton_schulz_params(L, kappa)
    coefficients, _ = newton_schulz_schedule(L, kappa)
    lam = np.logspace(-2, 0, 9)
    y = lam.copy()
    for gamma, beta in coefficients:
        y = gamma * y + beta * y * y
    errs = analysis.component_errors(lambda A, b: forward(params, cfg, A, b), lam, n=8, draws=2)
    check_tensor("component errors", errs, np.abs(1.0 - y), rtol=1e-8, atol=1e-13)


def test_best_polynomial_bound():
    """1 / T_d((1 + lam) / (1 - lam)): 1 at degree 0, the Richardson rate at degree 1, no overflow at degree 3^10."""
    lam = np.array([1e-4, 1e-2, 0.5])
    check_tensor("d=0", analysis.best_polynomial_bound(lam, 0), np.ones(3), rtol=1e-15)
    check_tensor("d=1", analysis.best_polynomial_bound(lam, 1), (1 - lam) / (1 + lam), rtol=1e-13)
    big = analysis.best_polynomial_bound(lam, 3**10)
    assert np.all(np.isfinite(big)) and big[0] < 1e-100


# ----------------------------------------------------------------------------------------------
# layer-wise least squares

GREEDY = ModelConfig(n_layers=6, n_heads=1, n_identity=2, b_last_layer=True, equivariant=True)


def _spectra(kappa_max=1e3, B=32, n=8, seed=0):
    return np.exp(np.random.default_rng(seed).uniform(np.log(1 / kappa_max), 0.0, (B, n)))


def test_greedy_fit_never_raises_the_loss_and_its_model_is_the_full_model():
    lam = _spectra()
    params, records = greedy_fit(GREEDY, lam, seed=0)
    losses = [r.loss for r in records]
    # a layer that adds nothing is one of the fits each stage chooses from
    assert all(b <= a * (1 + 1e-9) for a, b in zip(losses[:-1], losses[1:], strict=True)), losses
    assert losses[-1] < 1e-3 * losses[0], losses
    g = spectral.transfer(params, GREEDY, lam)
    check_tensor("final loss", np.mean((1 - lam * g) ** 2), losses[-1], rtol=1e-8)
    _, U, _, _, _ = _rotated_systems(n=8, B=2, seed=3)
    A = U @ (lam[:2, :, None] * np.swapaxes(U, 1, 2))
    b = np.einsum("bij,bj->bi", A, np.ones((2, 8)))
    x_spec = np.einsum("bij,bj->bi", U, g[:2] * np.einsum("bji,bj->bi", U, b))
    check_tensor("x_hat", forward(params, GREEDY, A, b), x_spec, rtol=1e-9, atol=1e-12)


def test_greedy_fit_continued_from_its_stages_equals_one_fit():
    lam = _spectra(seed=1)
    layers, w = [], None
    for _ in range(3):
        layers, w, _ = greedy_stage(GREEDY, lam, layers, w, seed=4)
    for _ in range(GREEDY.n_layers - 3):  # continued from the stored (p, q) and w, as a resumed run is
        layers, w, _ = greedy_stage(GREEDY, lam, [(p.copy(), q.copy()) for p, q in layers], w.copy(), seed=4)
    one, _ = greedy_fit(GREEDY, lam, seed=4)
    for k, v in to_params(GREEDY, layers, w).items():
        check_tensor(k, v, one[k], rtol=1e-9, atol=1e-12)


def test_greedy_refuses_models_it_cannot_fit():
    for bad in (dataclasses.replace(GREEDY, equivariant=False), dataclasses.replace(GREEDY, attention_norm="n"),
                dataclasses.replace(GREEDY, n_identity=1)):
        with pytest.raises(ValueError):
            greedy_fit(bad, _spectra())


def test_new_recipe_beats_the_old_on_a_kappa_range_at_both_ends():
    """4 layers, kappa in [10, 1000]: layer-wise least squares (4 stages, ~0.1 s) against the learned family's
    recipe (L-BFGS on one batch of systems, 300 iterations, ~15x the time), MSE on fresh systems at 10 and 1000."""
    L = 4
    old = ModelConfig(n_layers=L, n_heads=1, n_identity=2, b_last_layer=True)
    p_old, _ = train_lbfgs(old, (2, 6), steps=300, batch_size=64, kappa=(10.0, 1000.0), seed=0)
    new = dataclasses.replace(old, equivariant=True)
    p_new, _ = greedy_fit(new, _spectra(kappa_max=1e3, B=64, n=6), seed=0)
    for kappa in (10.0, 1000.0):
        A, b, x, mask = sample_systems(300, (2, 6), kappa, seed=7)
        mse = {name: float(np.mean(((forward(p, c, A, b, mask) - x) ** 2).sum(1) / mask.sum(1)))
               for name, p, c in (("old", p_old, old), ("new", p_new, new))}
        print(kappa, mse)
        assert mse["new"] < mse["old"], (kappa, mse)


# ----------------------------------------------------------------------------------------------
# --optimizer greedy: the trainer and the command line


def _greedy_tcfg(**fields):
    from tf_impl.config import PRESETS, TrainConfig

    preset = {**PRESETS["learned-general-L6"], "n_layers": 4, "steps": 4, "batch_size": 16, "n_max": 6,
              "eval_systems": 5}
    return TrainConfig(**{**preset, "preset": "learned-general-L6", **fields})


def test_greedy_trainer_resumed_equals_uninterrupted():
    from tf_impl.optim import GreedyTrainer

    tcfg = _greedy_tcfg()
    one = GreedyTrainer(tcfg)
    losses = [one.train_step()["loss"] for _ in range(4)]
    assert losses[-1] < losses[1] < losses[0], losses
    half = GreedyTrainer(tcfg)
    for _ in range(2):
        half.train_step()
    params, extra = half.get_state()
    resumed = GreedyTrainer(tcfg, params)
    resumed.set_state(params, extra)
    for _ in range(2):
        resumed.train_step()
    for k, v in one.get_params().items():
        check_tensor(k, resumed.get_params()[k], v, rtol=1e-9, atol=1e-12)
    cfg = tcfg.model_config()
    lam = one.lam
    loss, _ = spectral.loss_and_grads(one.get_params(), cfg, lam)
    assert loss < losses[-1]  # the loss after the last stage, below the one before it


@pytest.mark.parametrize("fields, message", [
    (dict(equivariant=False), "equivariant"), (dict(steps=5), "steps must be <= n_layers"),
    (dict(dtype="float32"), "float64"), (dict(spectrum="uniform"), "loguniform"),
    (dict(init="newton-schulz"), "from scratch")])
def test_greedy_config_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        _greedy_tcfg(**fields)


def test_greedy_command_line_and_spectrum_view(tmp_path, capsys):
    from reference.checkpoint import load_checkpoint
    from tf_impl.evaluate import main as evaluate_main
    from tf_impl.train import main

    out = tmp_path / "run"
    argv = ["--preset", "learned-general-L6", "--n-layers", "4", "--steps", "4", "--batch-size", "16", "--n-max", "6",
            "--eval-systems", "5", "--out", str(out)]
    assert main(argv) == 0
    params, cfg = load_checkpoint(out / "final.npz")
    assert cfg.equivariant and cfg.n_layers == 4
    assert evaluate_main([str(out / "final.npz"), "--spectrum", "--out", str(tmp_path / "spec"), "--no-plots"]) == 0
    view = (tmp_path / "spec" / "spectrum_run.json").read_text()
    assert '"equivariance"' in view and "model" in view
