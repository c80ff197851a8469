"""Adam, the learning-rate schedule and a small training loop, in NumPy.

The TensorFlow twin implements the same update and schedule formula for formula, so that the
two trajectories can be compared step by step.
"""

from __future__ import annotations

import math

import numpy as np

from reference.config import ModelConfig
from reference.data import sample_systems
from reference.layers import check_loss
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
          params=None, clip_norm=None, warmup=0, schedule="constant", log_every=0, loss="mse", **law):
    """Train with Adam on fresh batches from :func:`sample_systems`; returns ``(params, losses)``.

    ``kappa`` and ``law`` (``spectrum``, ``rhs``, ``normalize_rhs``) are the data law of
    :func:`reference.data.sample_systems`; ``loss`` is one of :data:`reference.layers.LOSSES`
    (:func:`reference.layers.mse_forward`).

    ``params=None`` starts from :func:`init_params` ``(cfg, seed)``. ``losses[i]`` is the loss of
    the batch of step ``i`` before its update. Stops with ``FloatingPointError`` on a non-finite loss.
    """
    check_loss(loss)
    params = init_params(cfg, seed) if params is None else check_params(params, cfg)
    state = adam_init(params)
    losses = []
    for step in range(steps):
        A, b, x, mask = sample_systems(batch_size, sizes, kappa, seed=batch_seed(seed, step), **law)
        value, grads = loss_and_grads(params, cfg, A, b, x, mask, loss=loss)
        if not np.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step {step}")
        grads, _ = clip_by_global_norm(grads, clip_norm)
        params, state = adam_update(params, grads, state, lr_at(step, lr, steps, warmup, schedule))
        losses.append(value)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {value:.4e}")
    return params, np.asarray(losses)


LBFGS_STREAM = 2**31 - 2
"""The L-BFGS batch is drawn from ``(seed, LBFGS_STREAM)``: a stream no Adam step reaches (both twins)."""


# ----------------------------------------------------------------------------------------------
# L-BFGS on one fixed batch (docs/conventions.md, "Optimiser"): the quasi-Newton alternative to Adam.
# It works on the flat parameter vector theta (P,) and a function fg(theta) -> (loss, grad (P,)), so
# the same code drives the NumPy model here and the compiled TensorFlow loss in tf_impl.optim.


def flatten_params(params: dict, names) -> np.ndarray:
    """``theta`` (P,): the parameters ``names`` (in that order) concatenated, float64."""
    return np.concatenate([np.asarray(params[k], dtype=np.float64).ravel() for k in names])


def unflatten_params(theta: np.ndarray, shapes: dict) -> dict:
    """Inverse of :func:`flatten_params` for ``shapes`` (name -> shape, in the flattening order)."""
    out, i = {}, 0
    for k, shape in shapes.items():
        n = int(np.prod(shape))
        out[k] = np.asarray(theta[i:i + n], dtype=np.float64).reshape(shape)
        i += n
    if i != theta.size:
        raise ValueError(f"theta has {theta.size} entries, the shapes need {i}")
    return out


def lbfgs_direction(g: np.ndarray, S: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``d = -H g``: the L-BFGS two-loop recursion (Nocedal & Wright, Algorithm 7.4).

    ``H`` is the inverse-Hessian estimate built from the pairs ``s_k = theta_{k+1} - theta_k``,
    ``y_k = g_{k+1} - g_k`` (rows of ``S``, ``Y`` (k, P), oldest first) on top of
    ``H_0 = (s^T y / y^T y) I`` from the newest pair; with no pair ``d = -g / ||g||`` (a unit step,
    which the line search scales).
    """
    k = S.shape[0]
    if k == 0:
        return -g / max(np.linalg.norm(g), np.finfo(float).tiny)
    rho = 1.0 / np.einsum("kp,kp->k", S, Y)  # (k,): positive, the pairs are kept only if s^T y > 0
    q = g.copy()  # (P,)
    alpha = np.zeros(k)
    for i in reversed(range(k)):
        alpha[i] = rho[i] * (S[i] @ q)
        q -= alpha[i] * Y[i]
    r = q * ((S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]))  # H_0 q
    for i in range(k):
        r += S[i] * (alpha[i] - rho[i] * (Y[i] @ r))
    return -r


def wolfe_search(fg, theta, f0: float, g0, d, c1: float = 1e-4, c2: float = 0.9, max_evals: int = 40):
    """A step ``t`` along ``d`` that satisfies the weak Wolfe conditions
    ``f(theta + t d) <= f0 + c1 t g0.d`` and ``g(theta + t d).d >= c2 g0.d``, by bracketing
    (double ``t`` until the decrease fails, then bisect; Lewis & Overton). A non-finite loss counts
    as too long a step. Returns ``(t, f, g)``, or ``None`` when no such step was found in ``max_evals``
    evaluations and no step lowered the loss."""
    slope = float(g0 @ d)
    lo, hi, t = 0.0, math.inf, 1.0
    best = None  # the longest step seen that satisfies the decrease condition
    for _ in range(max_evals):
        f, g = fg(theta + t * d)
        if not (math.isfinite(f) and np.all(np.isfinite(g))) or f > f0 + c1 * t * slope:
            hi = t
        else:
            best = (t, f, g)
            if float(g @ d) < c2 * slope:
                lo = t
            else:
                return best
        t = 0.5 * (lo + hi) if hi < math.inf else 2.0 * t
    return best if best is not None and best[1] < f0 else None


def check_lbfgs_memory(S, Y, n_params: int, memory: int) -> tuple[np.ndarray, np.ndarray]:
    """The memory of pairs a resumed L-BFGS run reads (``extra/lbfgs/s``, ``extra/lbfgs/y``) as float64 arrays, if
    it is one that :func:`lbfgs_step` could have built: two ``(k, n_params)`` arrays, ``k <= memory``, finite, and
    every pair with the curvature a pair needs to join (``s^T y > 1e-12 ||s|| ||y||``: with ``s^T y <= 0`` the
    two-loop recursion's ``H`` is not positive definite, and its direction need not descend). ``ValueError``
    naming the problem otherwise."""
    try:
        S, Y = np.asarray(S, np.float64), np.asarray(Y, np.float64)
    except (TypeError, ValueError):
        raise ValueError("resume state lbfgs/s, lbfgs/y must be arrays of real numbers") from None
    if S.ndim != 2 or S.shape != Y.shape or S.shape[1] != n_params or S.shape[0] > memory:
        raise ValueError(f"resume state lbfgs/s, lbfgs/y must be two (k, {n_params}) arrays with k <= {memory}, "
                         f"got {S.shape} and {Y.shape}")
    if not (np.all(np.isfinite(S)) and np.all(np.isfinite(Y))):
        raise ValueError("resume state lbfgs/s, lbfgs/y holds non-finite values; an L-BFGS run never keeps them")
    curvature = np.einsum("kp,kp->k", S, Y)  # (k,)
    low = np.flatnonzero(~(curvature > 1e-12 * np.linalg.norm(S, axis=1) * np.linalg.norm(Y, axis=1)))
    if len(low):
        raise ValueError(f"resume state lbfgs/s, lbfgs/y: pair {low[0]} has s^T y = {curvature[low[0]]:.3g}, not "
                         "positive; an L-BFGS run keeps only pairs of positive curvature")
    return S, Y


def lbfgs_step(fg, theta, f: float, g, S, Y, memory: int = 50):
    """One L-BFGS iteration: direction (:func:`lbfgs_direction`), weak Wolfe step
    (:func:`wolfe_search`), then the new pair ``(s, y)`` joins the memory (the oldest leaves beyond
    ``memory`` pairs) if its curvature ``s^T y`` is positive.

    Returns ``(theta, f, g, S, Y, t)``. When no step lowers the loss along the L-BFGS direction the
    memory is cleared and the next iteration starts from ``-g``; with an empty memory ``t = 0`` and
    nothing changes (the loss is as low as this batch and float precision allow).
    """
    d = lbfgs_direction(g, S, Y)
    if not float(g @ d) < 0:  # not a descent direction (rounding in H): start again from -g
        S, Y = S[:0], Y[:0]
        d = lbfgs_direction(g, S, Y)
        if not float(g @ d) < 0:  # a zero gradient: a stationary point
            return theta, f, g, S, Y, 0.0
    found = wolfe_search(fg, theta, f, g, d)
    if found is None:
        return theta, f, g, S[:0], Y[:0], 0.0
    t, f_new, g_new = found
    s, y = t * d, g_new - g  # (P,)
    if s @ y > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
        S, Y = np.vstack([S, s[None]])[-memory:], np.vstack([Y, y[None]])[-memory:]
    return theta + s, f_new, g_new, S, Y, t


def train_lbfgs(cfg: ModelConfig, sizes, steps=300, batch_size=256, kappa=10.0, seed=0, params=None, memory=50,
                loss="mse", **law):
    """L-BFGS on ONE batch of ``batch_size`` systems drawn from ``(seed, LBFGS_STREAM)``; returns
    ``(params, losses)``, ``losses[i]`` the batch loss before
    iteration ``i``. ``params=None`` starts from :func:`init_params` ``(cfg, seed)``; ``loss`` as in :func:`train`."""
    check_loss(loss)
    params = init_params(cfg, seed) if params is None else check_params(params, cfg)
    shapes = {k: v.shape for k, v in params.items()}
    A, b, x, mask = sample_systems(batch_size, sizes, kappa, seed=batch_seed(seed, LBFGS_STREAM), **law)

    def fg(theta):
        value, grads = loss_and_grads(unflatten_params(theta, shapes), cfg, A, b, x, mask, loss=loss)
        return value, flatten_params(grads, shapes)

    theta = flatten_params(params, shapes)
    f, g = fg(theta)
    S = Y = np.zeros((0, theta.size))
    losses = []
    for _ in range(steps):
        losses.append(f)
        theta, f, g, S, Y, _ = lbfgs_step(fg, theta, f, g, S, Y, memory)
    return unflatten_params(theta, shapes), np.asarray(losses)
