"""Hand-set weights that make the block model run a classical method.

``richardson_params``: one layer is one Richardson step (a readable sanity check).
``newton_schulz_params``: an L-layer model whose equation tokens run L - 1 steps of a Newton-Schulz
iteration towards ``A^{-1}`` and whose last layer applies it to the residual, so its error falls
doubly exponentially with depth (``docs/concepts.md``, "Depth: a Newton-Schulz construction").

A block model's layer is ``e_i <- e_i + c * sum_h sum_j (e_j^T Q_h e_i) P_h e_j`` with ``P_h``,
``Q_h`` made of ``scalar * I_N`` / ``scalar * 1_N`` blocks over the token groups
``[a (N), b (1), h^1 (N), ..., h^K (N)]`` (see ``docs/conventions.md``). Equation token ``j`` is
``(a_j, b_j, u_j, ..., u_j)`` and the query is ``(x, 1, 1_N, ..., 1_N)``.
"""

from __future__ import annotations

import numpy as np

from reference.config import ModelConfig, is_int, is_real

# indices of the token groups of the block parametrization, [a, b, h^1, ..., h^K] (the b group, not the batch B)
_GROUP_A, _GROUP_B, _GROUP_H1, _GROUP_H2 = 0, 1, 2, 3


def richardson_params(eta: float, n_identity: int = 3, attention_norm: str = "none",
                      n: int | None = None) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """Weights of a 1-layer, 1-head block model whose query token does one Richardson step.

    Returns ``(params, cfg)`` such that ``forward(params, cfg, A, b, x0=x0)`` is
    ``x0 - eta * (A x0 - b)`` (the gradient step on ``0.5 x^T A x - b^T x``).

    The construction sets three scalars, all others are zero:

    * ``Q``'s ``(a, a)`` scalar ``1`` and ``(b, b)`` scalar ``-1``: the score of key ``j`` for the
      query is ``e_j^T Q e_query = a_j . x - b_j``, the ``j``-th residual;
    * ``P``'s ``(a, h^1)`` scalar ``-eta``: the value ``P e_j`` puts ``-eta u_j`` in the ``x``-slot,

    so the query's update is ``-eta sum_j (a_j . x - b_j) u_j = -eta (A x - b)``.

    With ``attention_norm="n"`` the layer divides the sum by each system's own ``N``; the ``P``
    scalar is then ``-eta * n`` so that systems of size ``n`` take exactly the step ``eta`` (a system
    of size ``N`` takes ``eta * n / N``). ``n`` is required in that case and ignored otherwise.

    Only the query token is a Richardson iterate: the equation tokens change too (their ``a``-slot
    receives ``-eta (A a_i - b b_i)``), so stacking this layer does not give several steps.
    """
    eta = float(eta)
    if not np.isfinite(eta):
        raise ValueError(f"eta must be a finite number, got {eta!r}")
    if not is_int(n_identity) or n_identity < 1:
        raise ValueError(f"n_identity must be an int >= 1 (the construction reads h^1), got {n_identity!r}")
    cfg = ModelConfig(parametrization="block", n_layers=1, n_heads=1, n_identity=n_identity,
                      attention_norm=attention_norm)
    P, Q = _readout_layer(1, cfg.n_groups, eta * _p_scale(attention_norm, n))
    return {"layers.0.P": P, "layers.0.Q": Q}, cfg


def _p_scale(attention_norm: str, n) -> float:
    """What the ``P`` scalars are multiplied by: ``n`` under the ``1/N`` norm (exact at that size), else 1."""
    if attention_norm != "n":
        return 1.0
    if not is_int(n) or n < 1:
        raise ValueError(f'attention_norm="n" needs the system size n (an int >= 1), got {n!r}')
    return float(n)


def _readout_layer(n_heads: int, n_groups: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """``(P, Q)`` (H, G, G) of a layer whose head 0 adds ``-step sum_j (a_j . x - b_j) h^1_j`` to the query's
    ``x``-slot: its scores are the residuals (``q_aa = 1``, ``q_bb = -1``), its values the ``h^1`` rows."""
    P = np.zeros((n_heads, n_groups, n_groups))
    Q = np.zeros((n_heads, n_groups, n_groups))
    Q[0, _GROUP_A, _GROUP_A] = 1.0
    Q[0, _GROUP_B, _GROUP_B] = -1.0
    P[0, _GROUP_A, _GROUP_H1] = -step
    return P, Q


def newton_schulz_schedule(n_layers: int, kappa: float, upper: float = 1.0
                           ) -> tuple[list[tuple[float, float]], list[float]]:
    """The per-layer steps of :func:`newton_schulz_params`: ``(coefficients, bounds)``.

    The equation tokens carry a matrix ``X_l`` (``X_0 = I``); layer ``l < L - 1`` maps it to

        X_{l+1} = gamma_l X_l + beta_l X_l A X_l,

    so the residual matrix ``I - A X_{l+1} = r_l(A X_l)`` with ``r_l(y) = 1 - gamma_l y - beta_l y^2``.
    ``r_l`` is the degree-2 Chebyshev polynomial with ``r_l(0) = 1`` on the interval ``[lo, hi]`` that
    holds the spectrum of ``A X_l`` (``[1/kappa, upper]`` for ``X_0 = I``; ``upper = 1`` is the data's
    ``||A|| = 1``, a larger one tolerates a scale estimate that is too low, see below); it is
    bounded by ``m_l = w^2 / (2 (hi + lo)^2 - w^2)`` there (``w = hi - lo``), so the spectrum of
    ``A X_{l+1}`` lies in ``[1 - m_l, 1 + m_l]``: ``m`` is roughly squared at every layer (plain
    Newton-Schulz, ``gamma = 2, beta = -1``, is the limit ``w -> 0``).

    ``bounds[l]`` is ``||I - A X_l||_2`` for ``l = 0..L-1`` on any system with its spectrum in
    ``[1/kappa, upper]``; the last layer's error is ``||x_hat - x|| <= bounds[-1] ||x0 - x||`` (for
    ``L = 1`` the readout takes the optimal Richardson step ``2 / (upper + 1/kappa)``).

    Above ``upper`` the first polynomial leaves ``[-1, 1]`` at once (``r_0(upper) = m_0``, close to 1 for a
    large ``kappa``, and its slope there is ``~8 / w``), ``A X_1`` gets negative eigenvalues and the later
    layers blow them up: an eigenvalue 0.1% above ``upper`` ruins a ``kappa = 1e4`` model. Hence
    ``upper``: ``solve`` scales ``A`` by its largest eigenvalue (computed, to rounding), and a model used on
    matrices scaled some other way (by an estimate that may be low) needs room above 1; the shipped model takes
    ``upper = 1.1``.
    """
    if not is_int(n_layers) or n_layers < 1:
        raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
    if not (is_real(kappa) and np.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
    if not (is_real(upper) and np.isfinite(upper) and upper >= 1):
        raise ValueError(f"upper must be a finite number >= 1, got {upper!r}")
    # the interval holding the spectrum of A X_l, as centre-sum t = hi + lo and width w = hi - lo
    # (kept apart so that a width of 1e-20 around 1 does not round to zero)
    t, w = float(upper) + 1.0 / float(kappa), float(upper) - 1.0 / float(kappa)
    coefficients = []
    bounds = [w / t]  # ||I - eta A|| with the best step eta = 2 / (lo + hi)
    for _ in range(n_layers - 1):
        d = 2 * t * t - w * w  # w^2 T_2(t / w), written so that w = 0 is exact
        coefficients.append((8 * t / d, -8 / d))
        m = w * w / d
        t, w = 2.0, 2.0 * m  # the spectrum of A X_{l+1} lies in [1 - m, 1 + m]
        bounds.append(m)
    if n_layers > 1:
        bounds[0] = max(1 - 1 / float(kappa), float(upper) - 1)  # X_0 = I: ||I - A||
    return coefficients, bounds


def newton_schulz_params(n_layers: int, kappa: float = 10.0, n_heads: int = 1, n_identity: int = 3,
                         attention_norm: str = "none", n: int | None = None, upper: float = 1.0
                         ) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """Weights of an ``n_layers`` block model that solves systems with spectrum in ``[1/kappa, upper]``
    to ``||x_hat - x|| <= m ||x0 - x||``, ``m = newton_schulz_schedule(n_layers, kappa, upper)[1][-1]``
    (``m`` = 0.50, 0.14, 1.1e-2, 5.6e-5, 1.6e-9 for ``L`` = 2..6 at ``kappa = 10``).

    Equation token ``j`` is ``(a_j, b_j, u_j, u_j, ...)``: its ``h^1`` group is row ``j`` of a matrix
    ``X`` (``I`` at the start) and its ``h^2`` group stays ``u_j``. Layer ``l < L - 1`` has one head with

    * ``Q``'s ``(a, h^1)`` scalar ``1`` and ``(h^2, h^2)`` scalar ``q = (gamma - 1) / beta``: the score of
      key ``j`` for token ``i`` is ``a_j . X_i + q u_j . u_i = (X A + q I)_{ij}``;
    * ``P``'s ``(h^1, h^1)`` scalar ``beta``: the value of key ``j`` is ``beta X_j`` in the ``h^1`` group,

    so ``X <- X + (X A + q I) beta X = gamma X + beta X A X`` (:func:`newton_schulz_schedule`) and
    nothing else in the equation tokens changes. The query's ``h^1`` group changes too, but its
    ``x``-slot does not: ``P`` writes ``h^1`` only. The last layer is :func:`richardson_params`'s with
    ``X`` in place of ``eta I`` (``P``'s ``(a, h^1)`` scalar ``-1``): ``x_hat = x0 - X (A x0 - b)``.

    Every term is a product of token entries summed over the keys, none depends on ``N``: with
    ``attention_norm="none"`` the weights are exact at every size (and on padded batches). With
    ``"n"`` each layer's sum is divided by the system's ``N``; the ``P`` scalars are multiplied by
    ``n`` (required), so the construction is exact at that one size only. Heads after the first are zero.
    """
    if not is_int(n_identity) or n_identity < 2:
        raise ValueError(f"n_identity must be an int >= 2 (the construction keeps X in h^1 and I in h^2), "
                         f"got {n_identity!r}")
    if not is_int(n_heads) or n_heads < 1:
        raise ValueError(f"n_heads must be an int >= 1, got {n_heads!r}")
    coefficients, _ = newton_schulz_schedule(n_layers, kappa, upper)
    p_scale = _p_scale(attention_norm, n)
    cfg = ModelConfig(parametrization="block", n_layers=n_layers, n_heads=n_heads, n_identity=n_identity,
                      attention_norm=attention_norm)
    G = cfg.n_groups
    params = {}
    for layer, (gamma, beta) in enumerate(coefficients):
        P = np.zeros((n_heads, G, G))
        Q = np.zeros((n_heads, G, G))
        Q[0, _GROUP_A, _GROUP_H1] = 1.0
        Q[0, _GROUP_H2, _GROUP_H2] = (gamma - 1.0) / beta
        P[0, _GROUP_H1, _GROUP_H1] = beta * p_scale
        params[f"layers.{layer}.P"], params[f"layers.{layer}.Q"] = P, Q
    eta = 2.0 / (float(upper) + 1.0 / float(kappa)) if n_layers == 1 else 1.0  # L = 1: the best Richardson step
    params[f"layers.{n_layers - 1}.P"], params[f"layers.{n_layers - 1}.Q"] = _readout_layer(n_heads, G, eta * p_scale)
    return params, cfg


INITS = ("random", "newton-schulz")
"""How a training run may start a model (``python -m tf_impl.train --init``): Gaussian weights
(:func:`reference.model.init_params`) or :func:`newton_schulz_init`."""


def newton_schulz_init(cfg: ModelConfig, kappa: float, n: int | None = None, seed=0, upper: float = 1.0
                       ) -> dict[str, np.ndarray]:
    """Weights of shape ``cfg`` that start training at :func:`newton_schulz_params`'s model.

    Head 0 of every layer is the construction; the other heads have ``P = 0`` and ``Q`` Gaussian with
    std ``cfg.init_scale`` (as the new layers of :func:`reference.model.grow_params`): they add nothing
    at the start, yet their gradient in ``P`` is not zero (``P = Q = 0`` would be a stationary point).
    ``kappa``, ``upper``: the spectrum ``[1/kappa, upper]`` the weights are built for (``kappa``: the largest
    condition number of the training systems; see :func:`newton_schulz_schedule`); ``n``: the one size of
    the run when ``cfg.attention_norm == "n"``.
    """
    if cfg.parametrization != "block":
        raise ValueError(f"the Newton-Schulz start is a block model; this config is {cfg.parametrization!r}")
    params, _ = newton_schulz_params(cfg.n_layers, kappa, n_heads=cfg.n_heads, n_identity=cfg.n_identity,
                                     attention_norm=cfg.attention_norm, n=n, upper=upper)
    rng = np.random.default_rng(seed)
    for layer in range(cfg.n_layers):
        Q = params[f"layers.{layer}.Q"]  # (H, G, G)
        Q[1:] = cfg.init_scale * rng.standard_normal(Q[1:].shape)
    return params
