"""Starts that make depth trainable. Layer growth (``reference.model.grow_params``, ``python -m tf_impl.train
--init-from`` a shallower checkpoint): the grown model's first layers are the checkpoint's, the new layers start
as exact no-ops, and they can learn. The Newton-Schulz start (``--init newton-schulz``): the twin runs the
construction as the reference does, and a run starts from it."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_tensor

import reference as ref
import tf_impl
from reference.model import grow_params


def _shallow(n_layers=2, heads=2):
    cfg = ref.ModelConfig(n_layers=n_layers, n_heads=heads, attention_norm="n", init_scale=0.3)
    return ref.init_params(cfg, seed=4), cfg


def test_grown_model_starts_as_the_checkpoint_and_can_learn():
    params, cfg = _shallow()
    grown, big = grow_params(params, cfg, 5, seed=1)
    assert big.n_layers == 5 and list(grown) == list(ref.param_shapes(big))
    for name in params:
        assert np.array_equal(grown[name], params[name]), name
    for layer in range(2, 5):
        assert not grown[f"layers.{layer}.P"].any() and np.abs(grown[f"layers.{layer}.Q"]).min() > 0
    A, b, x, mask = ref.sample_systems(6, (2, 7), seed=3)
    want = ref.forward(params, cfg, A, b, mask)
    check_tensor("grown forward (reference)", ref.forward(grown, big, A, b, mask), want, rtol=0, atol=1e-14)
    check_tensor("grown forward (tf)", tf_impl.forward(grown, big, A, b, mask), want, rtol=0, atol=1e-12)
    layers = ref.forward_layers(grown, big, A, b, mask)  # (B, L+1, M): the new layers change nothing
    check_tensor("new layers are no-ops", layers[:, 3:], np.repeat(layers[:, 2:3], 3, axis=1), rtol=0, atol=0)
    _, grads = ref.loss_and_grads(grown, big, A, b, x, mask)
    for layer in range(2, 5):  # P = 0 but dL/dP != 0: the new layers are not stuck
        assert np.abs(grads[f"layers.{layer}.P"]).max() > 1e-4, layer


def test_grow_rejects_fewer_layers():
    params, cfg = _shallow(3)
    with pytest.raises(ValueError, match="n_layers must be an int >= the model's 3 layers"):
        grow_params(params, cfg, 2)


def test_train_init_from_shallower_checkpoint(tmp_path):
    from tf_impl.train import _load_start, parse_config

    params, cfg = _shallow()
    path = tmp_path / "shallow.npz"
    ref.save_checkpoint(path, params, cfg)
    common = ["--n-heads", "2", "--attention-norm", "n", "--init-scale", "0.3", "--init-from", str(path),
              "--out", str(tmp_path / "run")]
    tcfg = parse_config(["--n-layers", "4", *common])
    grown, extra, step, _ = _load_start(tcfg, tcfg.model_config(), str(tmp_path / "run" / "ckpt.npz"))
    assert extra is None and step == 0 and len(grown) == 8
    for name in params:
        assert np.array_equal(grown[name], params[name]), name
    assert not grown["layers.3.P"].any()
    tcfg = parse_config(["--n-layers", "1", *common])  # shrinking is not growth: refused, named
    with pytest.raises(ValueError, match="n_layers: 2 \\(checkpoint\\) > 1"):
        _load_start(tcfg, tcfg.model_config(), str(tmp_path / "run" / "ckpt.npz"))


def test_twin_runs_the_newton_schulz_construction():
    """The TensorFlow forward of the construction equals the reference's in float64 (both paths), and in
    float32 a deep one stays at float32's floor instead of growing (MSE of 8 layers < 1e-11)."""
    from reference.constructions import newton_schulz_params

    A, b, x, mask = ref.sample_systems(16, (2, 20), seed=9)
    for n_layers in (2, 5):
        params, cfg = newton_schulz_params(n_layers, kappa=10.0, n_heads=2)
        want = ref.forward(params, cfg, A, b, mask)
        for structured in (True, False):
            check_tensor(f"tf Newton-Schulz L={n_layers} structured={structured}",
                         tf_impl.forward(params, cfg, A, b, mask, structured=structured), want, rtol=1e-10,
                         atol=1e-12)
    params, cfg = newton_schulz_params(8, kappa=10.0)
    x_hat = np.asarray(tf_impl.forward(params, cfg, A, b, mask, dtype="float32"))
    mse = (((x_hat - x) ** 2).sum(axis=1) / mask.sum(axis=1)).mean()
    assert mse < 1e-11, mse


def test_train_init_newton_schulz(tmp_path):
    from reference.constructions import newton_schulz_init
    from tf_impl.train import _load_start, parse_config

    argv = ["--n-layers", "3", "--n-heads", "2", "--attention-norm", "none", "--kappa", "5", "--kappa-max", "40",
            "--init", "newton-schulz", "--init-upper", "1.2", "--out", str(tmp_path / "run")]
    tcfg = parse_config(argv)
    params, extra, step, _ = _load_start(tcfg, tcfg.model_config(), str(tmp_path / "run" / "ckpt.npz"))
    assert extra is None and step == 0
    want = newton_schulz_init(tcfg.model_config(), kappa=40.0, seed=tcfg.seed, upper=1.2)  # the run's largest kappa
    for name in want:  # exact: the same construction with the same arguments
        assert np.array_equal(params[name], want[name]), name


@pytest.mark.parametrize("argv,message", [
    (["--parametrization", "full", "--n-min", "4", "--n-max", "4"], "block model with n_identity >= 2"),
    (["--n-identity", "1"], "block model with n_identity >= 2"),
    (["--attention-norm", "n"], "exact at one size only"),
    (["--init-from", "x.npz"], "two starts"),
    (["--init-upper", "0.5"], "init_upper must be >= 1"),
])
def test_train_init_newton_schulz_refuses(argv, message):
    from tf_impl.train import parse_config

    with pytest.raises(ValueError, match=message):
        parse_config(["--init", "newton-schulz", *argv])
    parse_config(["--init", "newton-schulz", "--attention-norm", "n", "--n-min", "6", "--n-max", "6"])  # one size
    with pytest.raises(ValueError, match="init_upper is an option of --init newton-schulz"):
        parse_config(["--init-upper", "1.1"])
