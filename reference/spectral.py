"""The equivariant block model on eigenvalues: ``x_hat = g(A) b``, computed from the spectrum of ``A``.

Glossary of dimensions:
    B  systems (spectra) in a batch
    M  padded number of eigenvalues (the padded system size)
    W  wide token groups ``[a, h^1..h^K]``, W = K + 1
    H  attention heads
    L  layers

A model with ``ModelConfig.equivariant`` (docs/concepts.md, section 11) keeps every wide group of the
equation tokens a matrix function of ``A``: group ``u`` of the ``N`` equation rows is ``F_u = U diag(f_u) U^T``
for ``A = U diag(lambda) U^T``, starting at ``f = (lambda, 1, ..., 1)`` (``A`` and the ``K`` identities). A
layer ``l < L - 1`` adds ``c Z Q_h^T (Z^T Z) P_h^T`` to the rows; on the wide groups, whose products commute,
that is, per eigenvalue,

    f <- f + c sum_h (f^T q_h f) (p_h f)                      (layer_forward)

with ``p_h``, ``q_h`` (W, W) the wide-by-wide block scalars. The last layer reads ``b`` through its ``(b, b)``
scalar and writes the query's x-slot through the ``a`` row of ``P``: with ``x0 = 0``,

    x_hat = g(A) b,   g(lambda) = c sum_h q_h[b, b] (p_h f)_a     (readout_forward)

So a system's error is ``(g(A) A - I) x`` and, in the eigenbasis, its squared error is
``sum_i (lambda_i g(lambda_i) - 1)^2 (U^T x)_i^2``; with ``x ~ N(0, I)`` its expectation is
``sum_i (lambda_i g(lambda_i) - 1)^2``. Training on spectra costs ``O(N)`` per system instead of the full
model's ``O(N^3)`` and gives the same loss and gradients (``loss_and_grads`` with ``weights = (U^T x)^2``
equals :func:`reference.model.loss_and_grads`; tested to rounding).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference.config import ModelConfig
from reference.layers import _wide
from reference.model import check_params, param_masks, param_shapes


def wide_groups(cfg: ModelConfig) -> list[int]:
    """Indices of the wide groups ``[a, h^1..h^K]`` among ``[a, b, h^1..h^K]`` (the slabs of the spectral path)."""
    return _wide(cfg.n_groups)


class LayerCache(NamedTuple):
    f: np.ndarray  # (B, M, W) slab values in
    s: np.ndarray  # (B, M, H) scores f^T q_h f
    v: np.ndarray  # (B, M, H, W) values p_h f
    p: np.ndarray  # (H, W, W)
    q: np.ndarray  # (H, W, W)
    c: np.ndarray  # (B, 1, 1) attention scale


class ReadoutCache(NamedTuple):
    f: np.ndarray  # (B, M, W)
    pa: np.ndarray  # (H, W) the a row of each head's p
    qbb: np.ndarray  # (H,) the (b, b) scalar of each head's Q
    c: np.ndarray  # (B, 1)


class LossCache(NamedTuple):
    lam: np.ndarray  # (B, M)
    r: np.ndarray  # (B, M) masked residual lambda g - 1
    w: np.ndarray  # (B, M) weights / N_s


def layer_forward(f, p, q, c):
    """``f + c sum_h (f^T q_h f)(p_h f)``: f (B, M, W), p, q (H, W, W), c (B, 1, 1) -> (B, M, W)."""
    s = np.einsum("bmk,hkl,bml->bmh", f, q, f, optimize=True)  # (B, M, H)
    v = np.einsum("huw,bmw->bmhu", p, f, optimize=True)  # (B, M, H, W)
    out = f + c * np.einsum("bmh,bmhu->bmu", s, v, optimize=True)  # (B, M, W)
    return out, LayerCache(f, s, v, p, q, c)


def layer_backward(dout, cache):
    """Backward of :func:`layer_forward`: ``(df, dp, dq)``. The update ``c s_h v_h`` sends ``c dout . v_h``
    to the score ``s_h = f^T q_h f`` (whose gradient in ``f`` is ``(q_h + q_h^T) f``, in ``q_h`` is ``f f^T``)
    and ``c s_h dout`` to the value ``v_h = p_h f`` (``p_h^T dv`` to ``f``, ``dv f^T`` to ``p_h``)."""
    f, s, v, p, q, c = cache
    ds = c * np.einsum("bmu,bmhu->bmh", dout, v, optimize=True)  # (B, M, H)
    dv = c[..., None] * s[..., None] * dout[:, :, None, :]  # (B, M, H, W)
    df = dout + np.einsum("bmh,hkl,bml->bmk", ds, q + np.swapaxes(q, 1, 2), f, optimize=True)
    df += np.einsum("huw,bmhu->bmw", p, dv, optimize=True)
    dq = np.einsum("bmh,bmk,bml->hkl", ds, f, f, optimize=True)  # (H, W, W)
    dp = np.einsum("bmhu,bmw->huw", dv, f, optimize=True)  # (H, W, W)
    return df, dp, dq


def readout_forward(f, pa, qbb, c):
    """``g = c sum_h qbb_h (pa_h . f)``: f (B, M, W), pa (H, W), qbb (H,), c (B, 1) -> g (B, M)."""
    g = c * np.einsum("h,hw,bmw->bm", qbb, pa, f, optimize=True)  # (B, M)
    return g, ReadoutCache(f, pa, qbb, c)


def readout_backward(dg, cache):
    """Backward of :func:`readout_forward`: ``(df, dpa, dqbb)``; ``g`` is bilinear in ``(qbb, pa)`` and
    linear in ``f``, so each gradient contracts ``c dg`` with the other factors."""
    f, pa, qbb, c = cache
    cdg = c * dg  # (B, M)
    df = np.einsum("bm,h,hw->bmw", cdg, qbb, pa, optimize=True)  # (B, M, W)
    dpa = qbb[:, None] * np.einsum("bm,bmw->w", cdg, f, optimize=True)[None, :]  # (H, W)
    dqbb = np.einsum("bm,hw,bmw->h", cdg, pa, f, optimize=True)  # (H,)
    return df, dpa, dqbb


def loss_forward(g, lam, mask, weights=None):
    """``L = mean_s (1/N_s) sum_i w_si (lambda_si g_si - 1)^2`` over real eigenvalues; ``w = 1`` (default) is
    the expectation over ``x ~ N(0, I)`` of the model's MSE loss, ``w = (U^T x)^2`` its value for one ``x``."""
    maskf = mask.astype(np.float64)  # (B, M)
    w = maskf if weights is None else weights * maskf
    w = w / maskf.sum(axis=1, keepdims=True)  # (B, M)
    r = (lam * g - 1.0) * maskf  # (B, M)
    return float(np.mean((w * r * r).sum(axis=1))), LossCache(lam, r, w)


def loss_backward(cache):
    """Seed of the backward pass: ``dL/dg = 2 w r lambda / B``."""
    lam, r, w = cache
    return 2.0 * w * r * lam / r.shape[0]  # (B, M)


# ----------------------------------------------------------------------------------------------
# the model


class ModelCache(NamedTuple):
    layers: list  # LayerCache per layer 0..L-2
    readout: ReadoutCache


def _scale(cfg: ModelConfig, mask):
    n_s = mask.sum(axis=1).astype(np.float64)  # (B,)
    return 1.0 / n_s if cfg.attention_norm == "n" else np.ones(mask.shape[0])  # (B,)


def _weights(params, cfg: ModelConfig):
    """Per layer the masked wide blocks ``(p, q)`` (H, W, W); for the last, ``(pa, qbb)``."""
    masks = param_masks(cfg)
    wi = wide_groups(cfg)
    out = []
    for layer in range(cfg.n_layers):
        P, Q = (params[k] * masks[k] if k in masks else params[k] for k in (f"layers.{layer}.P", f"layers.{layer}.Q"))
        if layer < cfg.n_layers - 1:
            out.append((P[:, wi][:, :, wi], Q[:, wi][:, :, wi]))
        else:
            out.append((P[:, 0, wi], Q[:, 1, 1]))
    return out


def initial_slabs(cfg: ModelConfig, lam, mask):
    """``f = (lambda, 1, ..., 1)`` (B, M, W) on real eigenvalues, zero on padding: the wide groups of the
    equation tokens, ``A`` and the ``K`` identities, on the eigenbasis."""
    maskf = mask.astype(np.float64)  # (B, M)
    return np.stack([lam * maskf] + [maskf] * cfg.n_identity, axis=2)  # (B, M, W)


def model_forward(params, cfg: ModelConfig, lam, mask, keep_slabs=False):
    """``g`` (B, M) of every eigenvalue; ``keep_slabs``: also the slabs after each layer (B, L, M, W)."""
    c = _scale(cfg, mask)  # (B,)
    f = initial_slabs(cfg, lam, mask)  # (B, M, W)
    slabs = [f] if keep_slabs else None
    caches = []
    weights = _weights(params, cfg)
    for p, q in weights[:-1]:
        f, lc = layer_forward(f, p, q, c[:, None, None])  # (B, M, W)
        caches.append(lc)
        if keep_slabs:
            slabs.append(f)
    pa, qbb = weights[-1]
    g, rc = readout_forward(f, pa, qbb, c[:, None])  # (B, M)
    g = g * mask
    return g, ModelCache(caches, rc), (np.stack(slabs, axis=1) if keep_slabs else None)


def model_backward(dg, cache: ModelCache, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The forward read in reverse: read-out, then layers L-2..0; the wide blocks' gradients are put back
    into the (H, G, G) arrays of the parameters (zero where the model does not reach: masked entries and
    the b group, which only the last layer's ``(b, b)`` scalar uses)."""
    wi = wide_groups(cfg)
    shapes = param_shapes(cfg)
    grads = {name: np.zeros(shape) for name, shape in shapes.items()}
    df, dpa, dqbb = readout_backward(dg, cache.readout)
    last = cfg.n_layers - 1
    grads[f"layers.{last}.P"][:, 0, wi] = dpa
    grads[f"layers.{last}.Q"][:, 1, 1] = dqbb
    for layer in reversed(range(last)):
        df, dp, dq = layer_backward(df, cache.layers[layer])
        grads[f"layers.{layer}.P"][np.ix_(range(cfg.n_heads), wi, wi)] = dp
        grads[f"layers.{layer}.Q"][np.ix_(range(cfg.n_heads), wi, wi)] = dq
    for name, m in param_masks(cfg).items():  # the forward multiplied these entries by 0
        grads[name] = grads[name] * m
    return grads


def _check(params, cfg: ModelConfig, lam, mask):
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    if not cfg.equivariant:
        raise ValueError("the spectral path computes equivariant models only (ModelConfig.equivariant=True): "
                         "another model's output depends on the eigenvectors, not only on the eigenvalues")
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim != 2:
        raise ValueError(f"lam must be a (batch, n) array of eigenvalues, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)):
        raise ValueError("lam contains NaN or Inf")
    if mask is None:
        mask = np.ones(lam.shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != lam.shape or mask.dtype != bool:
        raise ValueError(f"mask must be a bool array of lam's shape {lam.shape}, got {mask.dtype} {mask.shape}")
    if not np.all(mask.sum(axis=1) >= 1):
        raise ValueError("every spectrum needs at least one real eigenvalue (a row of mask is all False)")
    return check_params(params, cfg), lam * mask, mask


def transfer(params, cfg: ModelConfig, lam, mask=None) -> np.ndarray:
    """``g(lambda)`` (B, M) of an equivariant model: its answer is ``x_hat = g(A) b`` (``x0 = 0``), so
    ``1 - lambda g(lambda)`` is its relative error on the eigen-component ``lambda``. ``lam`` (B, M) are
    the eigenvalues of each system (their number sets ``N`` for ``attention_norm="n"``; pad with ``mask``)."""
    params, lam, mask = _check(params, cfg, lam, mask)
    return model_forward(params, cfg, lam, mask)[0]


def loss_and_grads(params, cfg: ModelConfig, lam, mask=None, weights=None):
    """``(L, dL/dparams)`` of :func:`loss_forward` (``weights=None``: the expectation over ``x ~ N(0, I)``);
    equals :func:`reference.model.loss_and_grads` on ``A = U diag(lam) U^T``, ``b = A x`` with
    ``weights = (U^T x)^2`` (docs/concepts.md, section 11)."""
    params, lam, mask = _check(params, cfg, lam, mask)
    g, cache, _ = model_forward(params, cfg, lam, mask)
    loss_value, loss_cache = loss_forward(g, lam, mask, weights)
    dg = loss_backward(loss_cache) * mask  # the seed: dL/dg
    return loss_value, model_backward(dg, cache, cfg)

