"""Hand-set weights that make the block model run a classical method: a readable sanity check.

A block model's layer is ``e_i <- e_i + c * sum_h sum_j (e_j^T Q_h e_i) P_h e_j`` with ``P_h``,
``Q_h`` made of ``scalar * I_N`` / ``scalar * 1_N`` blocks over the token groups
``[a (N), b (1), h^1 (N), ..., h^K (N)]`` (see ``docs/conventions.md``). Equation token ``j`` is
``(a_j, b_j, u_j, ..., u_j)`` and the query is ``(x, 1, 1_N, ..., 1_N)``.
"""

from __future__ import annotations

import numpy as np

from reference.config import ModelConfig, is_int

# group indices of the block parametrization: [a, b, h^1, ..., h^K]
_A, _B, _H1 = 0, 1, 2


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
    if attention_norm == "n":
        if not is_int(n) or n < 1:
            raise ValueError(f'attention_norm="n" needs the system size n (an int >= 1), got {n!r}')
        p_scale = eta * n
    else:
        p_scale = eta
    cfg = ModelConfig(parametrization="block", n_layers=1, n_heads=1, n_identity=n_identity,
                      attention_norm=attention_norm)
    G = cfg.n_groups
    P = np.zeros((1, G, G))
    Q = np.zeros((1, G, G))
    Q[0, _A, _A] = 1.0
    Q[0, _B, _B] = -1.0
    P[0, _A, _H1] = -p_scale
    return {"layers.0.P": P, "layers.0.Q": Q}, cfg
