"""Layer-wise least squares: training an equivariant block model on spectra, one layer at a time.

Glossary of dimensions:
    E  training eigenvalues (all spectra of the batch, flattened)
    W  wide token groups ``[a, h^1..h^K]``, W = K + 1
    H  attention heads
    C  quadratic monomials ``f_i f_j`` (i <= j) of the slabs, C = W (W + 1) / 2

An equivariant model (docs/concepts.md, section 11) computes ``x_hat = g(A) b`` with ``g = w . f``: ``f`` (E, W) the
slabs after its first ``L - 1`` layers and ``w`` (W,) the readout of its last layer. Its training loss on spectra
(the expectation over ``x ~ N(0, I)``) is ``mean_e (1 - lambda_e g(lambda_e))^2`` (all spectra of one size). This
module fits that loss layer by layer (docs/concepts.md, section 12):

1. the readout alone: ``w`` by linear least squares on the initial slabs ``(lambda, 1, ..., 1)``;
2. for each layer ``l = 0..L-2``, the earlier layers fixed: the layer adds ``c sum_h (f^T q_h f)(p_h f)`` to the slabs,
   with ``p_h = d u_h^T`` -- every head writes into the direction ``d`` that the current readout sees (``w . d = 1``),
   so the estimate becomes ``g' = g + sum_h (f^T q_h f)(u_h . f)`` and the residual ``R = 1 - lambda g`` becomes
   ``R - lambda sum_h (f^T q_h f)(u_h . f)``: bilinear in ``(q, u)``. Alternating least squares fits it
   (``q`` given ``u`` and ``u`` given ``q`` are linear problems) from ``restarts`` random Gaussian ``u``; the
   best fit is kept. Then the readout is refitted if that lowers the loss.

Two choices make every layer able to refine the estimate: the ``a`` group (``lambda``) and the last identity group
(the constant ``1``) are never written, so ``lambda g`` and ``1`` stay quadratic monomials of the slabs and a layer
can always take a step ``g' = g (gamma + beta lambda g)`` (which squares the residual for ``gamma = 2``,
``beta = -1``); without the constant slab the fit stalls (the lab notebook). Nothing here uses a construction: each
layer's coefficients are least-squares fits to the training spectra and their solutions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from reference.config import ModelConfig, is_int
from reference.model import param_shapes
from reference.spectral import wide_groups


def _lstsq(F, y):
    """``argmin ||F c - y||`` with the columns of ``F`` (E, n) scaled to unit norm first: the monomials of the slabs
    span many orders of magnitude, and an unscaled solve would cut their small singular values."""
    norms = np.linalg.norm(F, axis=0)  # (n,)
    norms[norms == 0] = 1.0
    return np.linalg.lstsq(F / norms, y, rcond=1e-15)[0] / norms


def initial_slabs(lam, n_identity: int):
    """``f = (lambda, 1, ..., 1)`` (E, W): ``A`` and the ``K`` identities on the eigenbasis."""
    return np.stack([lam] + [np.ones_like(lam)] * n_identity, axis=1)  # (E, W)


def layer_update(f, p, q):
    """``f + sum_h (f^T q_h f)(p_h f)`` (E, W): :func:`reference.spectral.layer_forward` with ``c = 1``."""
    s = np.einsum("ek,hkl,el->eh", f, q, f, optimize=True)  # (E, H)
    v = np.einsum("huw,ew->ehu", p, f, optimize=True)  # (E, H, W)
    return f + np.einsum("eh,ehu->eu", s, v, optimize=True)


def fit_readout(f, lam):
    """``w`` (W,) minimising ``mean (1 - lambda w . f)^2``: linear least squares."""
    return _lstsq(lam[:, None] * f, np.ones_like(lam))


def fit_layer(f, w, lam, n_heads: int, writable, rng, restarts: int = 8, sweeps: int = 30):
    """``(p, q, loss)``: the layer (H, W, W) that best lowers ``mean (1 - lambda g')^2`` with ``g' = w . f'`` for the
    slabs ``f`` (E, W) and readout ``w`` (W,), every head writing into the groups ``writable`` (alternating least
    squares from ``restarts`` random starts, ``sweeps`` sweeps each; see the module docstring)."""
    W = f.shape[1]
    R = 1.0 - lam * (f @ w)  # (E,) the residual of the current estimate
    iu = np.triu_indices(W)
    quad = f[:, iu[0]] * f[:, iu[1]]  # (E, C) the monomials f_i f_j, i <= j
    best = None
    for _ in range(restarts):
        U = rng.standard_normal((n_heads, W))  # (H, W)
        for _ in range(sweeps):
            lin = f @ U.T  # (E, H): u_h . f
            F = np.concatenate([lam[:, None] * quad * lin[:, h:h + 1] for h in range(n_heads)], axis=1)  # (E, H C)
            cq = _lstsq(F, R).reshape(n_heads, -1)  # (H, C)
            s = quad @ cq.T  # (E, H): f^T q_h f
            F = np.concatenate([lam[:, None] * f * s[:, h:h + 1] for h in range(n_heads)], axis=1)  # (E, H W)
            U = _lstsq(F, R).reshape(n_heads, W)
        r = R - lam * np.sum((quad @ cq.T) * (f @ U.T), axis=1)  # (E,)
        loss = float(np.mean(r * r))
        if np.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, cq, U)
    if best is None:
        raise FloatingPointError("every least-squares fit of the layer was non-finite")
    loss, cq, U = best
    q = np.zeros((n_heads, W, W))
    for h in range(n_heads):  # f^T q_h f = sum_{i <= j} c_ij f_i f_j with q_h symmetric
        upper = np.zeros((W, W))
        upper[iu] = cq[h]
        q[h] = 0.5 * (upper + upper.T)
    d = np.zeros(W)
    d[writable] = w[writable]
    if not d @ d > 0:
        raise FloatingPointError("the readout does not read any writable group; no layer can refine it")
    d = d / (d @ d)  # the least-norm direction with w . d = 1
    p = np.einsum("u,hw->huw", d, U)  # (H, W, W): p_h = d u_h^T
    return p, q, loss


@dataclasses.dataclass(frozen=True)
class GreedyRecord:
    """What one stage of :func:`greedy_fit` did: the training loss after it and the readout's refit."""

    layer: int  # the layer fitted (-1: the readout alone)
    loss: float  # mean (1 - lambda g)^2 on the training eigenvalues after the stage
    readout_refit: bool  # whether refitting the readout lowered the loss (then it was kept)


def to_params(cfg: ModelConfig, layers, w) -> dict[str, np.ndarray]:
    """The model's parameters (H, G, G) from the fitted wide blocks ``layers`` = [(p, q), ...] (layers not fitted
    yet are exact no-ops, ``P = Q = 0``) and the readout ``w``: the last layer's head 0 has ``Q[b, b] = 1`` and ``w``
    in the ``a`` row of ``P`` (so ``x_hat = (w . f)(A) b``)."""
    wi = wide_groups(cfg)
    params = {name: np.zeros(shape) for name, shape in param_shapes(cfg).items()}
    H = cfg.n_heads
    for layer, (p, q) in enumerate(layers):
        params[f"layers.{layer}.P"][np.ix_(range(H), wi, wi)] = p
        params[f"layers.{layer}.Q"][np.ix_(range(H), wi, wi)] = q
    last = cfg.n_layers - 1
    params[f"layers.{last}.P"][0, 0, wi] = w
    params[f"layers.{last}.Q"][0, 1, 1] = 1.0
    return params


def check_greedy_config(cfg: ModelConfig) -> None:
    """The models :func:`greedy_fit` trains: block, equivariant, plain sums (``attention_norm="none"``, so a layer's
    effect on an eigenvalue does not depend on ``N``) and at least two identity copies (one is kept constant)."""
    if not (isinstance(cfg, ModelConfig) and cfg.parametrization == "block" and cfg.equivariant):
        raise ValueError("layer-wise least squares trains equivariant block models (ModelConfig.equivariant=True)")
    if cfg.attention_norm != "none":
        raise ValueError('layer-wise least squares needs attention_norm="none" (the layers act on every eigenvalue '
                         'alike, whatever N)')
    if cfg.n_identity < 2:
        raise ValueError(f"layer-wise least squares needs n_identity >= 2 (the last copy stays the constant 1), "
                         f"got {cfg.n_identity}")


def _check_fit_args(cfg, lam, restarts, sweeps):
    check_greedy_config(cfg)
    lam = np.asarray(lam, dtype=np.float64).ravel()
    if lam.size == 0 or not np.all(np.isfinite(lam) & (lam > 0)):
        raise ValueError("lam must hold positive finite eigenvalues")
    if not (is_int(restarts) and restarts >= 1 and is_int(sweeps) and sweeps >= 1):
        raise ValueError(f"restarts and sweeps must be ints >= 1, got {restarts!r}, {sweeps!r}")
    return lam


def greedy_stage(cfg: ModelConfig, lam, layers, w, seed=0, restarts: int = 8, sweeps: int = 30):
    """One stage of :func:`greedy_fit` after the stages ``layers`` (fitted ``(p, q)``) and readout ``w`` (``None``:
    no stage yet): ``(layers, w, record)``. Stage 0 fits the readout; stage ``l >= 1`` fits layer ``l - 1`` from
    random starts drawn from ``(seed, l - 1)``, so a fit continued from its stages equals an uninterrupted one."""
    lam = _check_fit_args(cfg, lam, restarts, sweeps)
    layers = list(layers)
    f = initial_slabs(lam, cfg.n_identity)
    for p, q in layers:
        f = layer_update(f, p, q)
    if w is None:
        w = fit_readout(f, lam)
        r = 1.0 - lam * (f @ w)
        return layers, w, GreedyRecord(-1, float(np.mean(r * r)), True)
    if len(layers) >= cfg.n_layers - 1:
        raise ValueError(f"every layer is fitted ({len(layers)} of {cfg.n_layers - 1} before the readout)")
    writable = list(range(1, cfg.n_identity))  # h^1..h^{K-1}: not a (0) and not the last identity (K)
    rng = np.random.default_rng([seed, len(layers)])
    p, q, _ = fit_layer(f, w, lam, cfg.n_heads, writable, rng, restarts, sweeps)
    layers.append((p, q))
    f = layer_update(f, p, q)
    r = 1.0 - lam * (f @ w)
    w_new = fit_readout(f, lam)
    r_new = 1.0 - lam * (f @ w_new)
    refit = bool(np.mean(r_new * r_new) < np.mean(r * r))
    if refit:
        w, r = w_new, r_new
    return layers, w, GreedyRecord(len(layers) - 1, float(np.mean(r * r)), refit)


def greedy_fit(cfg: ModelConfig, lam, seed=0, restarts: int = 8, sweeps: int = 30):
    """Fit ``cfg``'s model to the eigenvalues ``lam`` layer by layer (:func:`greedy_stage`, ``cfg.n_layers``
    stages); returns ``(params, records)``, one :class:`GreedyRecord` per stage."""
    layers, w, records = [], None, []
    for _ in range(cfg.n_layers):
        layers, w, record = greedy_stage(cfg, lam, layers, w, seed, restarts, sweeps)
        records.append(record)
    return to_params(cfg, layers, w), records
