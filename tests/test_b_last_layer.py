"""``ModelConfig.b_last_layer``: the b group of P, Q is fixed at zero in every layer but the last, so the
first L-1 layers compute from A alone (docs/concepts.md, section 10); in both twins."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import reference as ref
import tf_impl
from reference.config import ModelConfig
from reference.data import sample_systems
from reference.model import grow_params, param_masks
from tests.helpers import check_tensor
from tests.test_reference_model import check_model_grads

CFG = ModelConfig(parametrization="block", n_layers=3, n_heads=2, n_identity=2, attention_norm="none",
                  init_scale=0.3, b_last_layer=True)


def _batch(seed=1, n=5):
    A, b, x, mask = sample_systems(n, (2, 6), 10.0, seed=seed)
    x0 = 0.3 * np.random.default_rng(seed).standard_normal(b.shape) * mask
    return A, b, x, mask, x0


def test_the_b_group_is_zero_in_all_layers_but_the_last():
    params = ref.init_params(CFG, seed=2)
    masks = param_masks(CFG)
    assert sorted(masks) == ["layers.0.P", "layers.0.Q", "layers.1.P", "layers.1.Q"]
    for k, m in masks.items():
        assert np.all(params[k][:, 1, :] == 0) and np.all(params[k][:, :, 1] == 0) and m.sum() == 2 * 9
    assert np.all(params["layers.2.P"][:, 1, :] != 0)  # the last layer reads b
    # the other entries are drawn as without the option (same stream)
    plain = ref.init_params(dataclasses.replace(CFG, b_last_layer=False), seed=2)
    for k in params:
        check_tensor(k, params[k], plain[k] * masks.get(k, 1.0), rtol=0)
    assert param_masks(dataclasses.replace(CFG, b_last_layer=False)) == {}


def test_gradients_by_finite_differences_and_masked_entries_do_not_move():
    A, b, x, mask, x0 = _batch(seed=3)
    params = ref.init_params(CFG, seed=4)
    check_model_grads(CFG, params, A, b, x, mask, x0)  # fd_vjp on every entry: the masked ones have gradient 0
    _, grads = ref.loss_and_grads(params, CFG, A, b, x, mask, x0=x0)
    for k, m in param_masks(CFG).items():
        assert np.all(grads[k][m == 0] == 0), k


def test_the_first_layers_do_not_read_b():
    """Layers 0..L-2 see A alone: the query's estimate after them is the same for any b."""
    A, b, x, mask, x0 = _batch(seed=5)
    params = ref.init_params(CFG, seed=6)
    it1 = ref.forward_layers(params, CFG, A, b, mask, x0)  # (B, L+1, M)
    it2 = ref.forward_layers(params, CFG, A, -3.0 * b + 1.0 * mask, mask, x0)
    check_tensor("estimates before the last layer", it2[:, :-1], it1[:, :-1], rtol=1e-12, atol=1e-12)
    assert np.abs(it2[:, -1] - it1[:, -1]).max() > 1e-3  # the last one does read b
    plain = dataclasses.replace(CFG, b_last_layer=False)
    it3 = ref.forward_layers(params, plain, A, -3.0 * b + 1.0 * mask, mask, x0)  # the same weights, unmasked
    check_tensor("unmasked model, zero b group", it3, it2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("structured", [True, False])
def test_twins_agree(structured):
    A, b, x, mask, x0 = _batch(seed=7)
    params = ref.init_params(CFG, seed=8)
    params["layers.0.Q"] = params["layers.0.Q"] + 0.5  # entries the mask removes: neither twin may read them
    loss, grads = ref.loss_and_grads(params, CFG, A, b, x, mask, x0=x0)
    loss_tf, grads_tf = tf_impl.loss_and_grads(params, CFG, A, b, x, mask, x0=x0, structured=structured)
    check_tensor("loss", loss_tf, loss, rtol=1e-12)
    for k in grads:
        check_tensor(k, grads_tf[k], grads[k], rtol=1e-9, atol=1e-12)


def test_invalid_uses_are_refused():
    with pytest.raises(ValueError, match="b_last_layer is an option of the block parametrization"):
        ModelConfig(parametrization="full", n=4, b_last_layer=True)
    with pytest.raises(ValueError, match="b_last_layer must be a bool"):
        ModelConfig(b_last_layer=1)
    with pytest.raises(ValueError, match="cannot grow"):
        grow_params(ref.init_params(CFG), CFG, 4)
    cfg = ModelConfig.from_json(CFG.to_json())
    assert cfg == CFG
    old = ModelConfig.from_json('{"parametrization": "block", "n_layers": 2}')  # a config from before the field
    assert old.b_last_layer is False


def _train_args(tmp_path, name, *extra):
    return ["--n-heads", "2", "--n-identity", "2", "--attention-norm", "none", "--init-scale", "0.3", "--n-min", "2",
            "--n-max", "4", "--batch-size", "8", "--eval-systems", "4", "--eval-every", "0", "--mode", "graph",
            "--dtype", "float64", "--out", str(tmp_path / name), *extra]


def test_init_from_never_claims_a_start_it_does_not_make(tmp_path, capsys):
    """A run with b_last_layer from a checkpoint that reads b in a middle layer would zero what the checkpoint uses
    (its output moved by 3.5 in the audit): refused, at the same depth and grown, with one line saying what would
    change. From a b_last_layer checkpoint, a run without the option starts exactly as the checkpoint (the fixed
    entries are zero); a b_last_layer checkpoint cannot grow."""
    from tf_impl.train import main

    plain = dataclasses.replace(CFG, n_layers=2, b_last_layer=False)
    ref.save_checkpoint(tmp_path / "plain.npz", ref.init_params(plain, seed=1), plain)
    for layers in ("2", "3"):
        capsys.readouterr()
        argv = _train_args(tmp_path, f"run{layers}", "--b-last-layer", "true", "--n-layers", layers, "--steps", "0",
                           "--init-from", str(tmp_path / "plain.npz"))
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert "starts as the checkpoint" not in out and not (tmp_path / f"run{layers}" / "final.npz").exists()
        assert re.fullmatch(r"error: --init-from .*plain.npz: this run fixes entries of P, Q at zero "
                            r"\(b_last_layer: reference.model.param_masks\) that the checkpoint's model uses: \d+ "
                            r"nonzero in layer\(s\) 0(, 1)?, so it would not start as the checkpoint's. Give the "
                            r"checkpoint's --b-last-layer false, --equivariant false and --n-layers 2, or start from "
                            r"random weights\n", err), err

    last = dataclasses.replace(CFG, n_layers=2)
    ref.save_checkpoint(tmp_path / "last.npz", ref.init_params(last, seed=1), last)
    A, b, _, mask, _ = _batch()
    for layers in ("2", "3"):
        assert main(_train_args(tmp_path, f"free{layers}", "--n-layers", layers, "--steps", "0", "--init-from",
                                str(tmp_path / "last.npz"))) == 0
        params, cfg = ref.load_checkpoint(tmp_path / f"free{layers}" / "final.npz")
        assert not cfg.b_last_layer and cfg.n_layers == int(layers)
        check_tensor(f"started, {layers} layers", ref.forward(params, cfg, A, b, mask),
                     ref.forward(*ref.load_checkpoint(tmp_path / "last.npz"), A, b, mask), rtol=1e-12, atol=1e-12)
    assert main(_train_args(tmp_path, "grown", "--b-last-layer", "true", "--n-layers", "3", "--steps", "0",
                            "--init-from", str(tmp_path / "last.npz"))) == 2
    assert "a b_last_layer model cannot grow" in capsys.readouterr().err
