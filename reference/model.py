"""The whole model: parameters, forward, loss and hand-written backward.

Glossary of dimensions (see :mod:`reference.layers`):
    B systems, M padded size, T = M + 1 tokens, D token width, G = K + 2 block groups,
    H heads, L layers, E learned embedding width.

Parameters are a flat ``dict[str, np.ndarray]``:
    ``layers.{l}.P``, ``layers.{l}.Q``  (H, G, G) block scalars, or (H, D, D) full matrices
    ``embedding``                      (n, E) learned ``h_i`` of the full encoding only
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from reference.config import ModelConfig, is_int
from reference.data import check_systems
from reference.layers import (
    BlockAttentionCache,
    attention_backward,
    attention_forward,
    block_attention_backward,
    block_attention_forward,
    block_expand_backward,
    block_expand_forward,
    check_loss,
    coordinate_mask,
    encode_backward,
    encode_forward,
    encode_groups_forward,
    mse_backward,
    mse_forward,
    readout_backward,
    readout_forward,
    sparse_block_attention_forward,
    sparse_block_operator_forward,
    sparse_block_readout_forward,
    sparse_plan,
)


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter, in a fixed order (the order :func:`init_params` draws them)."""
    if cfg.parametrization == "block":
        w = (cfg.n_heads, cfg.n_groups, cfg.n_groups)
    else:
        D = cfg.token_width(cfg.n)
        w = (cfg.n_heads, D, D)
    shapes = {}
    for layer in range(cfg.n_layers):
        shapes[f"layers.{layer}.P"] = w
        shapes[f"layers.{layer}.Q"] = w
    if cfg.parametrization == "full":
        shapes["embedding"] = (cfg.n, cfg.embed_dim)
    return shapes


def param_masks(cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Name -> 0/1 array of the parameters with entries fixed at zero (the others have none).

    ``cfg.b_last_layer``: in layers ``0..L-2`` the row and the column of the ``b`` group (group 1) of
    every head's ``P`` and ``Q`` are zero, so the right-hand side is read by the last layer only: the
    first ``L - 1`` layers compute from ``A`` alone (docs/concepts.md, section 10).

    ``cfg.equivariant`` (with ``b_last_layer``) also zeroes, so that the ones vectors of the encoding never
    reach the output (docs/concepts.md, section 11): in layers ``0..L-2`` the ``a`` row of ``P`` (the ``a``
    group, hence the query's x-slot, is written by the last layer only); in the last layer the ``h`` columns
    of ``Q`` (the query's ``1_N`` slots are not read) and every ``1_N`` / ``1_N^T`` block of ``P`` and ``Q``
    (between the ``b`` group and a wide group). Then ``x_hat = x0 + T(A) x0 + g(A) b`` for matrix functions
    ``T``, ``g`` of ``A``: ``f(Q A Q^T, Q b) = Q f(A, b)`` for every orthogonal ``Q``.
    """
    if not cfg.b_last_layer:
        return {}
    G, L = cfg.n_groups, cfg.n_layers
    early = np.ones((cfg.n_heads, G, G))  # (H, G, G)
    early[:, 1, :] = 0.0
    early[:, :, 1] = 0.0
    masks = {f"layers.{layer}.{w}": early for layer in range(L - 1) for w in ("P", "Q")}
    if cfg.equivariant:
        early_p = early.copy()
        early_p[:, 0, :] = 0.0  # the a row: the a group is written by the last layer only
        last = np.ones((cfg.n_heads, G, G))  # (H, G, G)
        last[:, 1, :] = last[:, :, 1] = 0.0  # the 1_N and 1_N^T blocks ...
        last[:, 1, 1] = 1.0  # ... but not the scalar (b, b) block
        last_q = last.copy()
        last_q[:, :, 2:] = 0.0  # the query's h-slots (ones vectors) are not read
        masks.update({f"layers.{layer}.P": early_p for layer in range(L - 1)})
        masks.update({f"layers.{L - 1}.P": last, f"layers.{L - 1}.Q": last_q})
    return masks


def init_params(cfg: ModelConfig, seed=0) -> dict[str, np.ndarray]:
    """Gaussian weights, std ``cfg.init_scale``; the full encoding's embedding has std ``1/sqrt(E)``.

    Both packages use this one function, so the same ``(cfg, seed)`` gives the same start.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        std = 1.0 / np.sqrt(max(cfg.embed_dim, 1)) if name == "embedding" else cfg.init_scale
        params[name] = std * rng.standard_normal(shape)
    for name, m in param_masks(cfg).items():  # drawn, then zeroed: the stream of every other entry is kept
        params[name] = params[name] * m
    return params


def grow_params(params, cfg: ModelConfig, n_layers: int, seed=0) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """A deeper model that starts as ``params``: layers ``0..L-1`` copied, then layers ``L..n_layers-1``
    with ``P = 0`` and ``Q ~ N(0, init_scale^2)``.

    A new layer adds ``c sum_j (e_j^T Q e_i) P e_j = 0`` to every token, so the grown model computes
    exactly what ``params`` did; its gradient in ``P`` is ``c sum (e_j^T Q e_i) dDelta_i e_j^T != 0``, so
    training moves it (``P = Q = 0`` would be a stationary point: each gradient is proportional to the
    other matrix). Returns ``(params, cfg)`` with ``cfg.n_layers = n_layers``.
    """
    params = check_params(params, cfg)
    if not is_int(n_layers) or n_layers < cfg.n_layers:
        raise ValueError(f"n_layers must be an int >= the model's {cfg.n_layers} layers, got {n_layers!r}")
    if cfg.b_last_layer and n_layers > cfg.n_layers:
        raise ValueError("a b_last_layer model cannot grow: its last layer reads b, which a middle layer may not")
    big = dataclasses.replace(cfg, n_layers=n_layers)
    rng = np.random.default_rng(seed)
    shape = param_shapes(cfg)["layers.0.P"]
    grown = dict(params)
    for layer in range(cfg.n_layers, n_layers):
        grown[f"layers.{layer}.P"] = np.zeros(shape)
        grown[f"layers.{layer}.Q"] = cfg.init_scale * rng.standard_normal(shape)
    return {name: grown[name] for name in param_shapes(big)}, big


START_FIELDS = ("parametrization", "n_heads", "n_identity", "embed_dim", "n", "attention_norm")
"""The model fields a run started from a checkpoint must share with it (the shapes and the layer's arithmetic)."""


def start_from(params, cfg: ModelConfig, target: ModelConfig, seed=0) -> dict[str, np.ndarray]:
    """Parameters of ``target`` that compute exactly what ``params`` (a model of ``cfg``) computes: the start of a
    run from a checkpoint (``python -m tf_impl.train --init-from``), or ``ValueError`` saying why there is none.

    ``target`` must share :data:`START_FIELDS` with ``cfg`` and have at least its layers (more: :func:`grow_params`,
    new layers adding zero). Entries of ``params`` that ``cfg``'s masks fix at zero (:func:`param_masks`) are never
    read, and are set to zero; then every entry that ``target``'s masks fix at zero must be zero already, else the
    started model would not compute what the checkpoint's does (``b_last_layer`` or ``equivariant`` in ``target``
    but not in ``cfg``, or such a model grown: its last layer reads ``b`` and would become a middle layer).
    """
    diff = [f"{k}: {getattr(cfg, k)!r} (checkpoint) vs {getattr(target, k)!r}" for k in START_FIELDS
            if getattr(cfg, k) != getattr(target, k)]
    if cfg.n_layers > target.n_layers:
        diff.append(f"n_layers: {cfg.n_layers} (checkpoint) > {target.n_layers}")
    if diff:
        raise ValueError("the checkpoint's model differs from this run's: " + "; ".join(diff))
    masks = param_masks(cfg)
    params = {k: v * masks[k] if k in masks else v for k, v in check_params(params, cfg).items()}
    plain = dataclasses.replace(cfg, b_last_layer=False, equivariant=False)  # the same function: those entries are 0
    if target.n_layers > cfg.n_layers:
        params, _ = grow_params(params, plain, target.n_layers, seed=seed)
    lost = {k: int(np.count_nonzero(params[k] * (1 - m))) for k, m in param_masks(target).items()}
    lost = {k: c for k, c in lost.items() if c}
    if lost:
        layers = sorted({int(k.split(".")[1]) for k in lost})
        options = "b_last_layer" + (", equivariant" if target.equivariant else "")
        raise ValueError(f"this run fixes entries of P, Q at zero ({options}: reference.model.param_masks) that the "
                         f"checkpoint's model uses: {sum(lost.values())} nonzero in layer(s) "
                         f"{', '.join(map(str, layers))}, so it would not start as the checkpoint's. Give the "
                         f"checkpoint's --b-last-layer {str(cfg.b_last_layer).lower()}, --equivariant "
                         f"{str(cfg.equivariant).lower()} and --n-layers {cfg.n_layers}"
                         + (" (a b_last_layer model cannot grow)" if cfg.b_last_layer else "")
                         + ", or start from random weights")
    return params


def check_params(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Exactly the expected names and shapes, finite values; returns float64 copies-or-views."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of arrays, got {type(params).__name__}")
    shapes = param_shapes(cfg)
    missing = sorted(set(shapes) - set(params))
    extra = sorted(set(params) - set(shapes))
    if missing or extra:
        raise ValueError(f"params do not match the config: missing {missing}, unexpected {extra}")
    out = {}
    for name, shape in shapes.items():
        try:
            v = np.asarray(params[name], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"param {name!r} is not an array of real numbers ({e})") from None
        if v.shape != shape:
            raise ValueError(f"param {name!r} has shape {v.shape}, the config needs {shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"param {name!r} contains NaN or Inf")
        out[name] = v
    return out


# ----------------------------------------------------------------------------------------------
# model forward / backward on validated arrays


class LayerCache(NamedTuple):
    attention: object  # AttentionCache (dense) or BlockAttentionCache (structured)
    expand_P: object  # BlockExpandCache of P and Q (dense block layer), else None
    expand_Q: object


class ModelCache(NamedTuple):
    encode: object  # EncodeCache
    layers: list  # one LayerCache per layer
    readout: object  # ReadoutCache
    iterates: np.ndarray | None  # (B, L+1, M) the estimate after every layer (keep_layers), else None


def model_forward(params, cfg: ModelConfig, A, b, mask, x0, keep_layers=False, structured=False):
    """Encode, apply the L layers, read the query's x-slot. Returns ``(x_hat, ModelCache)``;
    with ``keep_layers`` the cache also holds the estimate after every layer (B, L+1, M).
    ``structured`` runs a block model's layers from the block scalars (:func:`block_attention_forward`)
    instead of expanding them to D x D matrices: the same numbers, fewer operations."""
    M = A.shape[1]
    n_s = mask.sum(axis=1)  # (B,)
    scale = 1.0 / n_s if cfg.attention_norm == "n" else np.ones(A.shape[0])  # (B,)
    if cfg.parametrization == "block":
        colmask = coordinate_mask(mask, cfg.n_groups)  # (B, D)
    else:
        colmask = np.ones((A.shape[0], cfg.token_width(M)))  # (B, D): no padding in the full model
    Z, enc_cache = encode_forward(A, b, x0, mask, cfg, params.get("embedding"))  # (B, T, D)
    layer_caches = []
    iterates = [Z[:, M, :M].copy()] if keep_layers else None
    masks = param_masks(cfg)  # entries fixed at zero (b_last_layer), multiplied out as in tf_impl
    for layer in range(cfg.n_layers):
        P, Q = (params[k] * masks[k] if k in masks else params[k] for k in (f"layers.{layer}.P", f"layers.{layer}.Q"))
        cp = cq = None
        if cfg.parametrization == "block" and structured:
            Z, att_cache = block_attention_forward(Z, P, Q, scale, colmask)  # (B, T, D), from (H, G, G)
        else:
            if cfg.parametrization == "block":
                (P, cp), (Q, cq) = block_expand_forward(P, M), block_expand_forward(Q, M)  # (H, D, D)
            Z, att_cache = attention_forward(Z, P, Q, scale, colmask)  # (B, T, D)
        layer_caches.append(LayerCache(att_cache, cp, cq))
        if keep_layers:
            iterates.append(Z[:, M, :M].copy())
    x_hat, out_cache = readout_forward(Z)  # (B, M)
    return x_hat, ModelCache(enc_cache, layer_caches, out_cache,
                             None if iterates is None else np.stack(iterates, axis=1))


def model_backward(dx_hat, cache: ModelCache, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The forward read in reverse: read-out, layers L..1 (attention, then block expansion), encoding.

    ``dx_hat`` is the seed (``mse_backward``'s ``dL/dx_hat``). Each layer maps ``dZ`` of its output to
    ``dZ`` of its input (the next layer down) and the gradients of its own ``P``, ``Q``; a dense block
    layer's ``dP`` (H, D, D) goes back through the expansion to the (H, G, G) scalars.
    """
    grads = {}
    dZ = readout_backward(dx_hat, cache.readout)  # (B, T, D)
    for layer in reversed(range(cfg.n_layers)):
        lc = cache.layers[layer]
        if isinstance(lc.attention, BlockAttentionCache):
            dZ, dP, dQ = block_attention_backward(dZ, lc.attention)  # dP, dQ: (H, G, G)
        else:
            dZ, dP, dQ = attention_backward(dZ, lc.attention)  # dP, dQ: (H, D, D)
        if lc.expand_P is not None:
            dP = block_expand_backward(dP, lc.expand_P)  # (H, G, G)
            dQ = block_expand_backward(dQ, lc.expand_Q)
        grads[f"layers.{layer}.P"] = dP
        grads[f"layers.{layer}.Q"] = dQ
    for name, m in param_masks(cfg).items():  # the forward multiplied these entries by 0
        grads[name] = grads[name] * m
    d_emb = encode_backward(dZ, cache.encode)
    if d_emb is not None:
        grads["embedding"] = d_emb
    return {name: grads[name] for name in param_shapes(cfg)}  # the params' own order


# ----------------------------------------------------------------------------------------------
# inference from the zero pattern of the weights: sparse layers, and the model as a matrix of b


def masked_params(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The parameters the forward uses: each times its 0/1 mask where :func:`param_masks` has one."""
    masks = param_masks(cfg)
    return {k: v * masks[k] if k in masks else v for k, v in params.items()}


def sparse_plans(params, cfg: ModelConfig) -> list:
    """The :class:`reference.layers.SparsePlan` of every layer of a block model: the encoding's ``h^1..h^K`` are
    identity blocks, and a group stays one until a layer writes it. Both twins run these plans."""
    if cfg.parametrization != "block":
        raise ValueError("sparse layers are a path of the block parametrization; this model is 'full'")
    params = masked_params(params, cfg)
    identity = (False,) + (True,) * cfg.n_identity  # [a, h^1..h^K]
    plans = []
    for layer in range(cfg.n_layers):
        plan = sparse_plan(params[f"layers.{layer}.P"], params[f"layers.{layer}.Q"], identity)
        plans.append(plan)
        identity = tuple(i and not wr for i, wr in zip(identity, plan.written, strict=True))
    return plans


def first_layer_reading_b(params, cfg: ModelConfig) -> int | None:
    """The first layer before the last whose ``P`` or ``Q`` (any head) has a nonzero entry in the row or column of
    the ``b`` coordinate, or ``None``: then the first ``L - 1`` layers compute from ``A`` alone, and the model's odd
    part in ``b`` is a matrix times ``b`` (:func:`approximate_inverse`; docs/concepts.md, section 10)."""
    params = masked_params(params, cfg)
    k = 1 if cfg.parametrization == "block" else cfg.n  # index of b among the groups / coordinates
    for layer in range(cfg.n_layers - 1):
        for w in (params[f"layers.{layer}.P"], params[f"layers.{layer}.Q"]):
            if np.any(w[:, k, :] != 0) or np.any(w[:, :, k] != 0):
                return layer
    return None


def sparse_model_forward(params, cfg: ModelConfig, A, b, mask, x0, keep_layers=False, plans=None):
    """:func:`model_forward` of a block model by sparse layers (:func:`reference.layers.sparse_block_attention_forward`,
    the products of :func:`sparse_plans`; the last layer computes the query's x-slot only): ``x_hat`` (B, M), or
    with ``keep_layers`` the estimate after every layer (B, L+1, M). The same numbers to rounding; inference only."""
    plans = sparse_plans(params, cfg) if plans is None else plans
    params = masked_params(params, cfg)
    scale = 1.0 / mask.sum(axis=1) if cfg.attention_norm == "n" else np.ones(A.shape[0])  # (B,)
    w, s = encode_groups_forward(A, b, x0, mask, cfg)  # (B, T, W, M), (B, T)
    iterates = [w[:, -1, 0]]
    for layer, plan in enumerate(plans):
        p, q = params[f"layers.{layer}.P"], params[f"layers.{layer}.Q"]
        if layer < cfg.n_layers - 1:
            w, s = sparse_block_attention_forward(w, s, p, q, scale, mask, plan)
            iterates.append(w[:, -1, 0])  # (B, M)
        else:
            iterates.append(sparse_block_readout_forward(w, s, p, q, scale, mask, plan))
    return np.stack(iterates, axis=1) if keep_layers else iterates[-1]


def operator_forward(params, cfg: ModelConfig, A, mask, plans=None) -> np.ndarray:
    """:func:`approximate_inverse` on validated arrays: the first ``L - 1`` layers by sparse layers on ``A`` with
    ``b = 0`` and ``x0 = 0``, then the last layer as a matrix of ``b``
    (:func:`reference.layers.sparse_block_operator_forward`). ``(B, M, M)``."""
    plans = sparse_plans(params, cfg) if plans is None else plans
    params = masked_params(params, cfg)
    zeros = np.zeros(A.shape[:2])  # (B, M): b and x0
    scale = 1.0 / mask.sum(axis=1) if cfg.attention_norm == "n" else np.ones(A.shape[0])  # (B,)
    w, s = encode_groups_forward(A, zeros, zeros, mask, cfg)  # (B, T, W, M), (B, T)
    for layer, plan in enumerate(plans[:-1]):
        w, s = sparse_block_attention_forward(w, s, params[f"layers.{layer}.P"], params[f"layers.{layer}.Q"], scale,
                                              mask, plan)
    last = cfg.n_layers - 1
    return sparse_block_operator_forward(w, s, params[f"layers.{last}.P"], params[f"layers.{last}.Q"], scale, mask,
                                         plans[-1])


# ----------------------------------------------------------------------------------------------
# public API (the same names in tf_impl: docs/concepts.md, section 7)


def _check(params, cfg, A, b, mask, x0, x=None):
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    n_fixed = cfg.n if cfg.parametrization == "full" else None
    A, b, mask, x0, x = check_systems(A, b, mask=mask, x0=x0, x=x, n_fixed=n_fixed)
    return check_params(params, cfg), A, b, mask, x0, x


def forward(params, cfg: ModelConfig, A, b, mask=None, x0=None, *, structured=False, sparse=False) -> np.ndarray:
    """Solve a batch: ``x_hat`` (B, M), zero on padded coordinates. ``x0`` is the initial guess.
    ``structured``: a block model's layers from the block scalars (same numbers; see :func:`model_forward`).
    ``sparse``: a block model's layers by the products their nonzero scalars need (same numbers; inference,
    :func:`sparse_model_forward`)."""
    params, A, b, mask, x0, _ = _check(params, cfg, A, b, mask, x0)
    if sparse:
        return sparse_model_forward(params, cfg, A, b, mask, x0)
    return model_forward(params, cfg, A, b, mask, x0, structured=structured)[0]


def forward_layers(params, cfg: ModelConfig, A, b, mask=None, x0=None, *, structured=False,
                   sparse=False) -> np.ndarray:
    """The estimate read from the query token after each layer: (B, L+1, M), entry 0 is ``x0``."""
    params, A, b, mask, x0, _ = _check(params, cfg, A, b, mask, x0)
    if sparse:
        return sparse_model_forward(params, cfg, A, b, mask, x0, keep_layers=True)
    return model_forward(params, cfg, A, b, mask, x0, keep_layers=True, structured=structured)[1].iterates


def approximate_inverse(params, cfg: ModelConfig, A, mask=None) -> np.ndarray:
    """The model as a matrix of ``b``: ``F`` (B, M, M) with ``(forward(A, b) - forward(A, -b)) / 2 = F b`` for every
    ``b`` (``x0 = 0``), zero on padded rows and columns; computed from ``A`` alone, by the first ``L - 1`` layers and
    the last layer's linear part (:func:`operator_forward`). For a model trained on ``A x = b`` it approximates
    ``A^{-1}``. Block models whose layers before the last do not read ``b`` only (:func:`first_layer_reading_b`,
    ``b_last_layer``, the Newton-Schulz construction); any other is a ``ValueError`` saying which layer reads it."""
    if cfg.parametrization != "block":
        raise ValueError("approximate_inverse: block models only (this model is 'full')")
    layer = first_layer_reading_b(params, cfg)
    if layer is not None:
        raise ValueError(f"approximate_inverse: layer {layer} of {cfg.n_layers} reads b, so the model's answer is not "
                         "linear in b and no matrix gives it (docs/concepts.md, section 10)")
    params, A, _, mask, _, _ = _check(params, cfg, A, np.zeros(np.shape(A)[:-1]), mask, None)
    return operator_forward(params, cfg, A, mask)


def loss_and_grads(params, cfg: ModelConfig, A, b, x, mask=None, x0=None, *, structured=False, loss="mse"):
    """``(L, dL/dparams)`` for ``L = mean_s (1/N_s) ||x_hat_s - x_s||^2`` (``loss="relative"``: ``/ ||x_s||^2``
    instead of ``/ N_s``, see :func:`reference.layers.mse_forward`); grads have the params' keys."""
    check_loss(loss)
    params, A, b, mask, x0, x = _check(params, cfg, A, b, mask, x0, x)
    x_hat, cache = model_forward(params, cfg, A, b, mask, x0, structured=structured)
    loss_value, loss_cache = mse_forward(x_hat, x, mask, loss)
    dx_hat = mse_backward(loss_cache)  # the seed: dL/dx_hat
    return loss_value, model_backward(dx_hat, cache, cfg)


def forward_bytes(cfg: ModelConfig, n: int, batch: int) -> int:
    """Bytes the NumPy forward (:func:`forward`) holds at its peak for ``batch`` systems of size ``n``,
    from its arrays: per layer and system, the queries, values, scores and two token arrays,
    ``(2H + 2) T D + H T n`` floats (``T = n + 1`` tokens of width ``D``; every layer's are kept), and per
    layer the two expanded ``D x D`` weight matrices of each head. Measured (newton-schulz, n = 100, 200): the
    peak is 0.8-0.9 of this."""
    T, D, H, L = n + 1, cfg.token_width(n), cfg.n_heads, cfg.n_layers
    per_system = L * ((2 * H + 2) * T * D + H * T * n) + 2 * T * D
    return 8 * (2 * L * H * D * D + batch * per_system)
