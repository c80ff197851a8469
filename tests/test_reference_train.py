"""reference.optim: the Adam update, the learning-rate schedule, clipping, and a training smoke test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import check_tensor

from reference import ModelConfig, adam_init, adam_update, lr_at, train
from reference.optim import clip_by_global_norm


def test_train_smoke_block_model_learns():
    """2-layer block model on N=4: the loss falls far below the zero predictor's (E||x||^2/N = 1)."""
    cfg = ModelConfig(parametrization="block", n_layers=2, init_scale=0.1)
    params, losses = train(cfg, 4, steps=150, batch_size=32, lr=1e-2, seed=0)
    assert losses.shape == (150,) and np.all(np.isfinite(losses))
    first, last = losses[:10].mean(), losses[-20:].mean()
    print(f"first 10 steps: {first:.4f}, last 20 steps: {last:.4f}")
    assert 0.5 < first < 2.0, "an untrained model should predict about as badly as zero"
    assert last < 0.2
    assert last < first / 4
    assert set(params) == {"layers.0.P", "layers.0.Q", "layers.1.P", "layers.1.Q"}


def test_train_is_reproducible_and_resumable():
    cfg = ModelConfig(parametrization="block", n_layers=1, init_scale=0.1)
    p1, l1 = train(cfg, (2, 4), steps=5, batch_size=8, lr=1e-2, seed=3)
    p2, l2 = train(cfg, (2, 4), steps=5, batch_size=8, lr=1e-2, seed=3)
    check_tensor("losses, same seed", l1, l2, rtol=0)
    for k in p1:
        check_tensor(f"{k}, same seed", p1[k], p2[k], rtol=0)
    _, l3 = train(cfg, (2, 4), steps=5, batch_size=8, lr=1e-2, seed=4)
    assert not np.array_equal(l1, l3)
    # given params are used as the start (validated, and not modified in place)
    start = {k: v.copy() for k, v in p1.items()}
    p4, _ = train(cfg, (2, 4), steps=1, batch_size=8, lr=0.0, seed=3, params=p1)
    for k in p1:
        check_tensor(f"{k} after lr=0", p4[k], start[k], rtol=0)
        check_tensor(f"{k} untouched", p1[k], start[k], rtol=0)


def test_adam_update_matches_textbook():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)), "v": rng.standard_normal(5)}
    state = adam_init(params)
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-2
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    p_ref = {k: v.copy() for k, v in params.items()}
    p = params
    for t in range(1, 4):
        grads = {k: rng.standard_normal(x.shape) for k, x in params.items()}
        p, state = adam_update(p, grads, state, lr)
        for k in p_ref:
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v2[k] = b2 * v2[k] + (1 - b2) * grads[k] ** 2
            p_ref[k] = p_ref[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + eps)
        assert state["t"] == t
    for k in p_ref:
        check_tensor(f"adam {k}", p[k], p_ref[k], rtol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    params = {"w": np.array([1.0, -2.0, 3.0])}
    grads = {"w": np.array([0.5, -4.0, 1e-3])}
    p, _ = adam_update(params, grads, adam_init(params), lr=0.1)
    check_tensor("first Adam step", params["w"] - p["w"], 0.1 * np.sign(grads["w"]), rtol=1e-4)


def test_lr_schedule():
    assert lr_at(0, 1.0, 100, warmup=4) == pytest.approx(0.25)
    assert lr_at(3, 1.0, 100, warmup=4) == pytest.approx(1.0)
    assert lr_at(50, 1.0, 100) == 1.0
    assert lr_at(4, 1.0, 104, warmup=4, schedule="cosine") == pytest.approx(1.0)
    assert lr_at(54, 1.0, 104, warmup=4, schedule="cosine") == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(104, 1.0, 104, warmup=4, schedule="cosine") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule must be"):
        lr_at(10, 1.0, 100, schedule="linear")


def test_clip_by_global_norm():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    same, norm = clip_by_global_norm(grads, None)
    assert norm == pytest.approx(5.0) and same is grads
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(sum(float(np.sum(g * g)) for g in clipped.values()))
    assert total == pytest.approx(1.0)
    check_tensor("clipped a", clipped["a"], [0.6], rtol=1e-15)
