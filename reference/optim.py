"""Adam, the learning-rate schedule and a small training loop, in NumPy.

The TensorFlow twin implements the same update and schedule formula for formula, so that the
two trajectories can be compared step by step.
"""

from __future__ import annotations

import math

import numpy as np

from reference.config import ModelConfig
from reference.data import sample_systems
from reference.model import check_params, init_params, loss_and_grads


def lr_at(step: int, lr: float, total_steps: int, warmup: int = 0, schedule: str = "constant") -> float:
    """Learning rate at 0-based ``step``: linear warm-up over ``warmup`` steps, then
    ``"constant"`` or ``"cosine"`` decay to ``0.1 lr`` at ``total_steps``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")


def clip_by_global_norm(grads: dict, max_norm: float | None):
    """Scale every gradient by ``min(1, max_norm / ||g||)``, ``||g||`` over all of them; returns ``(grads, ||g||)``."""
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    if max_norm is None or norm <= max_norm:
        return grads, norm
    return {k: g * (max_norm / norm) for k, g in grads.items()}, norm


def adam_init(params: dict) -> dict:
    """Adam state: first and second moments per parameter, and the step count ``t``."""
    return {"m": {k: np.zeros_like(v) for k, v in params.items()},
            "v": {k: np.zeros_like(v) for k, v in params.items()}, "t": 0}


def adam_update(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step (Kingma & Ba): ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with bias-corrected ``m_hat, v_hat``.
    Pure: returns new ``(params, state)``."""
    t = state["t"] + 1
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        new_m[k] = beta1 * state["m"][k] + (1 - beta1) * g
        new_v[k] = beta2 * state["v"][k] + (1 - beta2) * g * g
        m_hat = new_m[k] / (1 - beta1**t)
        v_hat = new_v[k] / (1 - beta2**t)
        new_p[k] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new_p, {"m": new_m, "v": new_v, "t": t}


def batch_seed(seed: int, step: int) -> list[int]:
    """Seed of the training batch at ``step``: every step draws fresh systems, reproducibly."""
    return [seed, step]


def train(cfg: ModelConfig, sizes, steps=300, batch_size=64, lr=1e-3, kappa=10.0, seed=0,
          params=None, clip_norm=None, warmup=0, schedule="constant", log_every=0, relative=False, **law):
    """Train with Adam on fresh batches from :func:`sample_systems`; returns ``(params, losses)``.

    ``kappa`` and ``law`` (``spectrum``, ``rhs``, ``normalize_rhs``) are the data law of
    :func:`reference.data.sample_systems`; ``relative`` selects the relative loss
    (:func:`reference.layers.mse_forward`).

    ``params=None`` starts from :func:`init_params` ``(cfg, seed)``. ``losses[i]`` is the loss of
    the batch of step ``i`` before its update. Stops with ``FloatingPointError`` on a non-finite loss.
    """
    params = init_params(cfg, seed) if params is None else check_params(params, cfg)
    state = adam_init(params)
    losses = []
    for step in range(steps):
        A, b, x, mask = sample_systems(batch_size, sizes, kappa, seed=batch_seed(seed, step), **law)
        loss, grads = loss_and_grads(params, cfg, A, b, x, mask, relative=relative)
        if not np.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss} at step {step}")
        grads, _ = clip_by_global_norm(grads, clip_norm)
        params, state = adam_update(params, grads, state, lr_at(step, lr, steps, warmup, schedule))
        losses.append(loss)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss:.4e}")
    return params, np.asarray(losses)
