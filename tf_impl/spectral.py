"""TensorFlow twin of :mod:`reference.spectral`: an equivariant block model on eigenvalues.

Equations (docs/concepts.md, section 11), identical to the reference:

    f_0 = (lambda, 1, ..., 1)                                  slabs (B, M, W) of the wide groups
    f <- f + c sum_h (f^T q_h f) (p_h f)                        layers 0..L-2, wide-by-wide blocks
    g = c sum_h q_h[b, b] (p_h f)_a                              the last layer: x_hat = g(A) b
    L = mean_s (1/N_s) sum_i w_si (lambda_si g_si - 1)^2        w = 1: the expectation over x ~ N(0, I)

Glossary: B spectra, M padded number of eigenvalues, W = K + 1 wide groups, H heads, L layers.
Gradients come from ``tf.GradientTape``; the public functions take and return NumPy arrays, validate as the
reference does, and run XLA-compiled in float64 by default.
"""

from __future__ import annotations

import numpy as np

from reference import spectral as _ref
from reference.config import ModelConfig
from reference.model import param_masks, param_shapes
from tf_impl._quiet import tf
from tf_impl.model import as_float_dtype

__all__ = ["transfer_tensors", "loss_tensors", "transfer", "loss_and_grads"]


def transfer_tensors(weights: dict, cfg: ModelConfig, lam, maskf):
    """``g`` (B, M) from the parameter tensors (H, G, G), the eigenvalues ``lam`` and the 0/1 mask (B, M)."""
    masks = param_masks(cfg)
    wi = _ref.wide_groups(cfg)
    n_s = tf.reduce_sum(maskf, axis=1)  # (B,)
    c = 1.0 / n_s if cfg.attention_norm == "n" else tf.ones_like(n_s)  # (B,)
    f = tf.stack([lam * maskf] + [maskf] * cfg.n_identity, axis=2)  # (B, M, W)
    for layer in range(cfg.n_layers):
        P, Q = (weights[k] * masks[k] if k in masks else weights[k] for k in (f"layers.{layer}.P", f"layers.{layer}.Q"))
        if layer < cfg.n_layers - 1:
            p = tf.gather(tf.gather(P, wi, axis=1), wi, axis=2)  # (H, W, W)
            q = tf.gather(tf.gather(Q, wi, axis=1), wi, axis=2)  # (H, W, W)
            s = tf.einsum("bmk,hkl,bml->bmh", f, q, f)  # (B, M, H): f^T q_h f
            v = tf.einsum("huw,bmw->bmhu", p, f)  # (B, M, H, W): p_h f
            f = f + c[:, None, None] * tf.einsum("bmh,bmhu->bmu", s, v)  # (B, M, W)
        else:
            pa = tf.gather(P[:, 0, :], wi, axis=1)  # (H, W): the a row
            g = c[:, None] * tf.einsum("h,hw,bmw->bm", Q[:, 1, 1], pa, f)  # (B, M)
    return g * maskf


def loss_tensors(weights: dict, cfg: ModelConfig, lam, maskf, w):
    """:func:`reference.spectral.loss_forward` on :func:`transfer_tensors`: ``w`` (B, M) the weights."""
    g = transfer_tensors(weights, cfg, lam, maskf)
    r = (lam * g - 1.0) * maskf  # (B, M)
    w = w * maskf / tf.reduce_sum(maskf, axis=1, keepdims=True)  # (B, M)
    return tf.reduce_mean(tf.reduce_sum(w * r * r, axis=1))


_COMPILED: dict = {}


def _compiled(kind: str, cfg: ModelConfig, dtype, jit_compile: bool):
    key = (kind, cfg, dtype, bool(jit_compile))
    if key not in _COMPILED:
        if kind == "transfer":
            def body(weights, lam, maskf):
                return transfer_tensors(weights, cfg, lam, maskf)
        else:
            def body(weights, lam, maskf, w):
                with tf.GradientTape() as tape:
                    tape.watch(weights)
                    value = loss_tensors(weights, cfg, lam, maskf, w)
                return value, tape.gradient(value, weights)
        _COMPILED[key] = tf.function(body, jit_compile=bool(jit_compile))
    return _COMPILED[key]


def _prepare(params, cfg, lam, mask, dtype):
    params, lam, mask = _ref._check(params, cfg, lam, mask)
    dtype = as_float_dtype(dtype)
    t = lambda a: tf.constant(a, dtype=dtype)  # noqa: E731
    return dtype, {k: t(v) for k, v in params.items()}, t(lam), t(mask.astype(np.float64))


def transfer(params, cfg: ModelConfig, lam, mask=None, *, dtype=tf.float64, jit_compile: bool = True) -> np.ndarray:
    """``g(lambda)`` (B, M) of an equivariant model (:func:`reference.spectral.transfer`)."""
    dtype, w, lam, maskf = _prepare(params, cfg, lam, mask, dtype)
    return _compiled("transfer", cfg, dtype, jit_compile)(w, lam, maskf).numpy()


def loss_and_grads(params, cfg: ModelConfig, lam, mask=None, weights=None, *, dtype=tf.float64,
                   jit_compile: bool = True):
    """``(L, dL/dparams)`` of :func:`reference.spectral.loss_and_grads` (``weights=None``: the expectation)."""
    dtype, w, lam_t, maskf = _prepare(params, cfg, lam, mask, dtype)
    wt = tf.ones_like(lam_t) if weights is None else tf.constant(np.asarray(weights, dtype=np.float64), dtype=dtype)
    value, grads = _compiled("loss", cfg, dtype, jit_compile)(w, lam_t, maskf, wt)
    return float(value.numpy()), {k: grads[k].numpy() for k in param_shapes(cfg)}
