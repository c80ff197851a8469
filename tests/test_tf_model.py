"""tf_impl's model layer and optimiser pieces: padding invariance, input validation (the reference's
ValueErrors), the tf.Module, the learning-rate schedule and the trainer's bookkeeping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from helpers import check_tensor, train_config

import reference as ref
import tf_impl
from tf_impl.model import LinearTransformer
from tf_impl.optim import LbfgsTrainer, Trainer, lr_at

CFG = ref.ModelConfig(parametrization="block", n_layers=2, n_heads=2, attention_norm="n", init_scale=0.3)


def test_padding_does_not_change_the_result():
    """A padded system gives exactly the output of the same system run at its own size."""
    params = ref.init_params(CFG, seed=1)
    A, b, x, mask = ref.sample_systems(6, (2, 7), 10.0, seed=4)
    x0 = 0.3 * np.random.default_rng(0).standard_normal(b.shape) * mask
    padded = tf_impl.forward(params, CFG, A, b, mask, x0)
    for s in range(A.shape[0]):
        n = int(mask[s].sum())
        alone = tf_impl.forward(params, CFG, A[s:s + 1, :n, :n], b[s:s + 1, :n], x0=x0[s:s + 1, :n],
                                jit_compile=False)
        check_tensor(f"system {s} (N={n}) padded vs alone", padded[s, :n], alone[0], rtol=1e-12, atol=1e-12)
        assert np.all(padded[s, n:] == 0)


def _errors(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    raise AssertionError("no ValueError")


def test_same_validation_errors_as_reference():
    params = ref.init_params(CFG, seed=1)
    A, b, x, mask = ref.sample_systems(3, (2, 4), 10.0, seed=2)
    assert not mask.all()
    bad_A = A.copy()
    bad_A[0, 0, 1] += 1.0
    bad_mask = mask.copy()
    bad_mask[:, 0] = False
    bad_params = dict(params, **{"layers.0.P": params["layers.0.P"][:1]})
    full = ref.ModelConfig(parametrization="full", n_layers=1, n=3, embed_dim=2)
    cases = [
        ((params, CFG, A[0], b), {}),  # not 3-D
        ((params, CFG, A, b[:, :2]), {}),  # b of the wrong shape
        ((params, CFG, bad_A, b), {}),  # not symmetric
        ((params, CFG, A, b), {"mask": bad_mask}),  # not a prefix
        ((params, CFG, A, b), {"mask": mask, "x0": np.ones_like(b)}),  # nonzero x0 on padding
        ((bad_params, CFG, A, b), {}),  # wrong parameter shape
        ((params, "cfg", A, b), {}),  # not a config
        ((ref.init_params(full), full, A, b), {"mask": mask}),  # full model, other size
    ]
    for args, kwargs in cases:
        want = _errors(lambda: ref.forward(*args, **kwargs))  # noqa: B023
        got = _errors(lambda: tf_impl.forward(*args, **kwargs))  # noqa: B023
        assert got == want
    with pytest.raises(ValueError, match="dtype"):
        tf_impl.forward(params, CFG, A, b, mask, dtype=tf.int32)


def test_module_variables_named_like_reference():
    params = ref.init_params(CFG, seed=3)
    model = LinearTransformer(CFG, params, dtype=tf.float64)
    assert [v.name.split("/")[-1] for v in model.trainable_variables] != []
    assert sorted(v.name.split(":")[0].split("/")[-1] for v in model.trainable_variables) == sorted(params)
    assert model.names == list(params)
    for k, v in model.get_params().items():
        assert np.array_equal(v, params[k])
    A, b, x, mask = ref.sample_systems(4, (2, 5), 10.0, seed=4)
    maskf = mask.astype(np.float64)
    got = model(tf.constant(A), tf.constant(b), tf.constant(maskf), tf.zeros_like(b)).numpy()
    check_tensor("module call", got, ref.forward(params, CFG, A, b, mask), rtol=1e-10, atol=1e-12)
    model.set_params(ref.init_params(CFG, seed=4))
    assert np.array_equal(model.get_params()["layers.1.Q"], ref.init_params(CFG, seed=4)["layers.1.Q"])
    default = LinearTransformer(CFG, seed=7)  # starts from the reference's init_params(cfg, seed)
    for k, v in ref.init_params(CFG, seed=7).items():
        assert np.array_equal(default.get_params()[k], v.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("warmup,schedule", [(0, "constant"), (5, "constant"), (0, "cosine"), (7, "cosine")])
def test_lr_schedule_matches_reference(warmup, schedule):
    total = 40
    steps = np.arange(0, total + 3)
    got = lr_at(tf.constant(steps, tf.int64), 3e-3, total, warmup, schedule).numpy()
    want = np.array([ref.lr_at(int(s), 3e-3, total, warmup, schedule) for s in steps])
    check_tensor(f"lr {schedule} warmup {warmup}", got, want, rtol=1e-14)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 1e-3, 10, 0, "linear")


def test_trainer_batches_are_the_samplers():
    """The batch of step t is sample_systems(batch, sizes, kappa, (seed, t)), and the step counts."""
    trainer = Trainer(train_config(CFG, (2, 5), batch_size=4, kappa=30.0, seed=12, mode="graph"))
    trainer.train_step()
    trainer.train_step()
    A, b, x, maskf = (t.numpy() for t in trainer.sample_batch(tf.constant(2, tf.int64)))
    A2, b2, x2, mask2 = tf_impl.sample_systems(4, (2, 5), 30.0, (12, 2), dtype=tf.float32, jit_compile=False)
    # the mask is exact (integer draws); A and x come from the same draws through the same ops, but eagerly here
    # and in a graph there (which may fuse ops): equal to float32 rounding
    assert np.array_equal(maskf > 0.5, mask2)
    check_tensor("x: trainer vs sampler", x, x2, rtol=1e-6, atol=1e-6)
    check_tensor("A: trainer vs sampler", A, A2, rtol=1e-6, atol=1e-6)
    loss, grads = trainer.loss_and_grads()  # the batch of the current step (2)
    want, _ = tf_impl.loss_and_grads(trainer.get_params(), CFG, A2, b2, x2, mask2, dtype=tf.float32,
                                     jit_compile=False)
    assert abs(loss - want) <= 1e-5 * want
    assert int(trainer.step.numpy()) == 2 and set(grads) == set(trainer.names)


def test_non_finite_step_changes_nothing():
    trainer = Trainer(train_config(CFG, (2, 4), batch_size=4, lr=1e-2, mode="eager"))
    before, extra = trainer.get_state()
    A, b, x, mask = ref.sample_systems(4, 4, 10.0, seed=1)
    out = trainer.train_step((A, b, np.full_like(x, 1e30), mask))  # loss overflows float32
    assert not np.isfinite(out["loss"])
    after, extra2 = trainer.get_state()
    assert int(extra2["step"]) == 0
    for k in before:
        assert np.array_equal(before[k], after[k]) and np.array_equal(extra[f"adam_v/{k}"], extra2[f"adam_v/{k}"])


def test_trainer_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        Trainer(train_config(CFG, 3, mode="fast"))
    with pytest.raises(ValueError, match="schedule"):
        Trainer(train_config(CFG, 3, schedule="step"))
    full = ref.ModelConfig(parametrization="full", n_layers=1, n=3, embed_dim=2)
    with pytest.raises(ValueError, match="one size"):
        Trainer(train_config(full, (2, 3)))
    tcfg = train_config(CFG, (2, 4), batch_size=4)
    with pytest.raises(ValueError, match="optimizer 'lbfgs'"):
        Trainer(dataclasses.replace(tcfg, optimizer="lbfgs"))
    with pytest.raises(ValueError, match="optimizer 'adam'"):
        LbfgsTrainer(tcfg)
    with pytest.raises(ValueError, match="params"):  # a construction's start is the caller's to build
        Trainer(dataclasses.replace(tcfg, n_identity=2, attention_norm="none", init="newton-schulz"))
    with pytest.raises(ValueError, match=r"\['lr'\]"):  # the settings are the config's, not keywords
        Trainer(tcfg, lr=0.1)
    with pytest.raises(ValueError, match="TrainConfig"):
        Trainer({"n_layers": 2})
    trainer = Trainer(tcfg)
    with pytest.raises(ValueError, match="batch"):
        trainer.train_step(ref.sample_systems(3, (2, 4), 10.0, seed=1))


def test_trainer_of_model_config_and_keywords_is_deprecated():
    """``Trainer(model_config, sizes=..., ...)`` warns and builds the TrainConfig of its keywords and defaults."""
    with pytest.warns(DeprecationWarning, match="TrainConfig"):
        trainer = Trainer(CFG, sizes=(2, 5), batch_size=4, kappa=(2.0, 30.0), relative_loss=True, total_steps=7,
                          dtype=tf.float64, mode="graph", structured=False)
    assert trainer.tcfg == train_config(CFG, (2, 5), batch_size=4, kappa=2.0, kappa_max=30.0, loss="relative",
                                        steps=7, dtype="float64", mode="graph")
    assert not trainer.structured and trainer.cfg == CFG
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="N = 3"):
        Trainer(ref.ModelConfig(parametrization="full", n_layers=1, n=3, embed_dim=2), sizes=(2, 3))
