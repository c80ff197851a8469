"""The whole model in TensorFlow: a ``tf.Module`` of ``tf.Variable`` s, pure tensor functions, and the
NumPy-facing public API (``docs/concepts.md``, section 7) (``forward``, ``forward_layers``, ``loss_and_grads``).

Equations (``docs/concepts.md`` sections 2-5, ``docs/conventions.md``), identical to :mod:`reference.model`:

    Z_0 = [e_1; ...; e_M; q]                     tokens as rows (B, T, D), query last
    Z_l = Z_{l-1} + c * colmask * sum_h (Z Q_h^T Z_kv^T)(Z_kv P_h^T)        l = 1..L
    x_hat = Z_L[query, :M]                          the x-slot of the query token
    L = mean_s (1/N_s) ||x_hat_s - x_s||^2

Block parametrization: ``P_h = (S p_h S^T) * C`` from the (G, G) scalars ``p_h``; the update is
multiplied by the coordinate mask ``(m, 1, m, ..., m)``. Gradients come from ``tf.GradientTape``.

Glossary of dimensions (see :mod:`tf_impl.layers`):
    B systems, M padded size, T = M + 1 tokens, D token width, G = K + 2 block groups,
    H heads, L layers, E learned embedding width.

Parameters keep the reference's names and shapes (``layers.{l}.P``, ``layers.{l}.Q``: block
(H, G, G) or full (H, D, D); ``embedding`` (n, E)), so checkpoints and ``init_params`` are shared
with the reference. The public functions take and return NumPy arrays, validate their inputs with
:func:`reference.data.check_systems` / :func:`reference.model.check_params` (same ``ValueError`` s),
and run in float64 by default (``dtype=tf.float32`` allowed), compiled with XLA by default
(``jit_compile=False`` runs the same graph without XLA).
"""

from __future__ import annotations

import numpy as np

from reference.config import ModelConfig
from reference.data import check_systems
from reference.layers import check_loss
from reference.model import check_params, first_layer_reading_b, init_params, param_masks, param_shapes, sparse_plans
from tf_impl._quiet import tf
from tf_impl.layers import (
    attention,
    attention_readout,
    block_attention,
    block_attention_readout,
    block_expand,
    coordinate_mask,
    encode,
    encode_groups,
    encode_interleaved,
    interleaved_colmask,
    interleaved_readout,
    mse,
    readout,
    sparse_block_attention,
    sparse_block_operator,
    sparse_block_readout,
)

__all__ = [
    "LinearTransformer", "model_forward", "loss_and_grads_tensors", "forward", "forward_layers",
    "loss_and_grads", "init_params", "param_shapes", "as_float_dtype", "sparse_model_forward", "operator_forward",
    "approximate_inverse",
]


def as_float_dtype(dtype) -> tf.DType:
    """``tf.float32`` / ``tf.float64`` (or their names); anything else is a ``ValueError``."""
    try:
        d = tf.as_dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if d not in (tf.float32, tf.float64):
        raise ValueError(f"dtype must be float32 or float64, got {d.name}")
    return d


# ----------------------------------------------------------------------------------------------
# pure tensor functions (used by the module, the public API and the trainer)


def _masked(params: dict, masks: dict, layer: int):
    """``(P, Q)`` of ``layer``, times their 0/1 masks where :func:`reference.model.param_masks` has one."""
    names = (f"layers.{layer}.P", f"layers.{layer}.Q")
    return tuple(params[k] * tf.constant(masks[k], params[k].dtype) if k in masks else params[k] for k in names)


def model_forward(params: dict, cfg: ModelConfig, A, b, maskf, x0, keep_layers: bool = False,
                  structured: bool = False) -> tf.Tensor:
    """Encode, apply the L layers, read the query's x-slot: ``x_hat`` (B, M); with ``keep_layers`` the
    estimate after every layer (B, L+1, M), entry 0 is ``x0`` (the reference's ``ModelCache.iterates``).

    ``params``: name -> tensor (or variable) of the reference's shapes; ``A`` (B, M, M), ``b``,
    ``maskf``, ``x0`` (B, M), all of one float dtype. A block model expands ``P_h = (S p_h S^T) * C``
    and runs the dense layer, the readable definition, as the reference does; ``structured=True`` runs the
    structured fast path instead (:func:`tf_impl.layers.block_attention`, no D x D matrix; same numbers).
    """
    M = int(A.shape[1])
    masks = param_masks(cfg)  # entries fixed at zero (b_last_layer): multiplied out, so their gradient is 0
    n_s = tf.reduce_sum(maskf, axis=1)  # (B,)
    scale = 1.0 / n_s if cfg.attention_norm == "n" else tf.ones_like(n_s)  # (B,): c
    if cfg.parametrization == "block" and structured:  # the fast path, tokens in the interleaved layout
        W = cfg.n_identity + 1
        Z = encode_interleaved(A, b, x0, maskf, cfg)  # (B, T, D)
        colmask = interleaved_colmask(maskf, W)  # (B, D)
        iterates = [interleaved_readout(Z, W)]
        for layer in range(cfg.n_layers):
            p, q = _masked(params, masks, layer)  # (H, G, G) scalars
            if layer < cfg.n_layers - 1:
                Z = block_attention(Z, p, q, scale, colmask)  # (B, T, D)
                iterates.append(interleaved_readout(Z, W))  # (B, M)
            else:  # the last layer: only the query's x-slot is read
                iterates.append(block_attention_readout(Z, p, q, scale, colmask))  # (B, M)
        return tf.stack(iterates, axis=1) if keep_layers else iterates[-1]
    Z = encode(A, b, x0, maskf, cfg, params.get("embedding"))  # (B, T, D)
    if cfg.parametrization == "block":
        colmask = coordinate_mask(maskf, cfg.n_groups)  # (B, D)
    else:
        colmask = tf.ones_like(Z[:, 0, :])  # (B, D): no padding in the full model
    iterates = [readout(Z)]
    for layer in range(cfg.n_layers):
        P, Q = _masked(params, masks, layer)
        if cfg.parametrization == "block":
            P, Q = block_expand(P, M), block_expand(Q, M)  # (H, D, D)
        if layer < cfg.n_layers - 1:
            Z = attention(Z, P, Q, scale, colmask)  # (B, T, D)
            iterates.append(readout(Z))  # (B, M)
        else:  # the last layer: only the query's x-slot is read
            iterates.append(attention_readout(Z, P, Q, scale, colmask))  # (B, M)
    return tf.stack(iterates, axis=1) if keep_layers else iterates[-1]


def loss_and_grads_tensors(weights: dict, cfg: ModelConfig, A, b, x, maskf, x0, loss_fn=mse,
                           structured: bool = False):
    """``(L, {name: dL/dweight})`` by ``tf.GradientTape``; ``loss_fn(x_hat, x, maskf)`` defaults to the mean MSE."""
    names = list(weights)
    with tf.GradientTape() as tape:
        tape.watch([weights[k] for k in names])
        loss = loss_fn(model_forward(weights, cfg, A, b, maskf, x0, structured=structured), x, maskf)
    grads = tape.gradient(loss, [weights[k] for k in names])
    return loss, dict(zip(names, grads, strict=True))


# ----------------------------------------------------------------------------------------------
# inference from the zero pattern of the weights: sparse layers, and the model as a matrix of b


def _plans_of(params, cfg, plans):
    if plans is None:  # eager tensors or NumPy: read the zero pattern (a traced call passes the plans)
        plans = sparse_plans({k: np.asarray(v) for k, v in params.items()}, cfg)
    return plans


def sparse_model_forward(params: dict, cfg: ModelConfig, A, b, maskf, x0, keep_layers: bool = False,
                         plans=None) -> tf.Tensor:
    """:func:`model_forward` of a block model by sparse layers (:func:`tf_impl.layers.sparse_block_attention`, the
    products of :func:`reference.model.sparse_plans`, which ``plans`` holds when the weights are traced)."""
    plans = _plans_of(params, cfg, plans)
    masks = param_masks(cfg)
    n_s = tf.reduce_sum(maskf, axis=1)  # (B,)
    scale = 1.0 / n_s if cfg.attention_norm == "n" else tf.ones_like(n_s)  # (B,): c
    w, s = encode_groups(A, b, x0, maskf, cfg)  # W x (B, T, M), (B, T)
    iterates = [w[0][:, -1]]
    for layer, plan in enumerate(plans):
        p, q = _masked(params, masks, layer)  # (H, G, G)
        if layer < cfg.n_layers - 1:
            w, s = sparse_block_attention(w, s, p, q, scale, maskf, plan)
            iterates.append(w[0][:, -1])  # (B, M)
        else:
            iterates.append(sparse_block_readout(w, s, p, q, scale, maskf, plan))
    return tf.stack(iterates, axis=1) if keep_layers else iterates[-1]


def operator_forward(params: dict, cfg: ModelConfig, A, maskf, plans=None) -> tf.Tensor:
    """The model as a matrix of ``b`` (B, M, M): the first ``L - 1`` layers by sparse layers on ``A`` with ``b = 0``
    and ``x0 = 0``, then :func:`tf_impl.layers.sparse_block_operator` (:func:`reference.model.operator_forward`)."""
    plans = _plans_of(params, cfg, plans)
    masks = param_masks(cfg)
    n_s = tf.reduce_sum(maskf, axis=1)  # (B,)
    scale = 1.0 / n_s if cfg.attention_norm == "n" else tf.ones_like(n_s)  # (B,)
    zeros = tf.zeros_like(maskf)  # (B, M): b and x0
    w, s = encode_groups(A, zeros, zeros, maskf, cfg)  # W x (B, T, M), (B, T)
    for layer, plan in enumerate(plans[:-1]):
        w, s = sparse_block_attention(w, s, *_masked(params, masks, layer), scale, maskf, plan)
    return sparse_block_operator(w, s, *_masked(params, masks, cfg.n_layers - 1), scale, maskf, plans[-1])


# ----------------------------------------------------------------------------------------------
# idiomatic layer: the model as a tf.Module


class LinearTransformer(tf.Module):
    """The model as a ``tf.Module``: one ``tf.Variable`` per reference parameter, same names.

    ``params=None`` starts from :func:`init_params` ``(cfg, seed)`` (the reference's NumPy
    initialisation, so both packages start identically). Calling the module runs the forward on
    tensors: ``model(A, b, maskf, x0) -> x_hat`` (B, M).
    """

    def __init__(self, cfg: ModelConfig, params: dict | None = None, seed=0, dtype=tf.float32,
                 name: str = "linear_transformer"):
        super().__init__(name=name)
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.dtype = as_float_dtype(dtype)
        params = init_params(cfg, seed) if params is None else check_params(params, cfg)
        self.params = {k: tf.Variable(tf.constant(v, dtype=self.dtype), name=k) for k, v in params.items()}

    @property
    def names(self) -> list[str]:
        """Parameter names in the reference's order."""
        return list(self.params)

    def __call__(self, A, b, maskf, x0):
        return model_forward(self.params, self.cfg, A, b, maskf, x0, structured=True)

    def get_params(self) -> dict[str, np.ndarray]:
        """The parameters as float64 NumPy arrays (the reference's format)."""
        return {k: v.numpy().astype(np.float64) for k, v in self.params.items()}

    def set_params(self, params: dict) -> None:
        """Assign NumPy parameters (validated against the config)."""
        params = check_params(params, self.cfg)
        for k, v in params.items():
            self.params[k].assign(tf.constant(v, dtype=self.dtype))


# ----------------------------------------------------------------------------------------------
# public API (docs/concepts.md, section 7): NumPy in, NumPy out

_COMPILED: dict = {}


def _compiled(kind: str, cfg: ModelConfig, dtype: tf.DType, jit_compile: bool, structured: bool = False,
              loss: str = "mse", plans: tuple | None = None):
    """One ``tf.function`` per (kind, cfg, dtype, jit, path, loss, sparse plans): traced once per input shape."""
    key = (kind, cfg, dtype, bool(jit_compile), bool(structured), loss, plans)
    fn = _COMPILED.get(key)
    if fn is None:
        if kind == "forward" and plans is not None:
            def body(weights, A, b, maskf, x0):
                return sparse_model_forward(weights, cfg, A, b, maskf, x0, keep_layers=True, plans=plans)
        elif kind == "forward":
            def body(weights, A, b, maskf, x0):
                return model_forward(weights, cfg, A, b, maskf, x0, keep_layers=True, structured=structured)
        elif kind == "operator":
            def body(weights, A, maskf):
                return operator_forward(weights, cfg, A, maskf, plans=plans)
        else:
            def loss_fn(x_hat, x, maskf):
                return mse(x_hat, x, maskf, loss)

            def body(weights, A, b, x, maskf, x0):
                return loss_and_grads_tensors(weights, cfg, A, b, x, maskf, x0, loss_fn, structured=structured)
        fn = _COMPILED[key] = tf.function(body, jit_compile=bool(jit_compile))
    return fn


def _prepare(params, cfg, A, b, mask, x0, x, dtype):
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    dtype = as_float_dtype(dtype)
    n_fixed = cfg.n if cfg.parametrization == "full" else None
    A, b, mask, x0, x = check_systems(A, b, mask=mask, x0=x0, x=x, n_fixed=n_fixed)
    params = check_params(params, cfg)
    t = lambda a: tf.constant(a, dtype=dtype)  # noqa: E731
    weights = {k: t(v) for k, v in params.items()}
    return dtype, weights, t(A), t(b), t(mask.astype(np.float64)), t(x0), None if x is None else t(x)


def forward(params, cfg: ModelConfig, A, b, mask=None, x0=None, *, structured: bool = False, sparse: bool = False,
            dtype=tf.float64, jit_compile: bool = True) -> np.ndarray:
    """Solve a batch: ``x_hat`` (B, M) as a NumPy array of ``dtype``, zero on padded coordinates.

    ``x0`` is the initial guess (default zeros); ``mask`` (B, M) marks real coordinates; ``structured=True``
    runs a block model's structured fast path (same numbers, faster; :func:`model_forward`); ``sparse=True`` its
    sparse layers, the products its nonzero scalars need (same numbers; :func:`sparse_model_forward`).
    """
    return forward_layers(params, cfg, A, b, mask, x0, dtype=dtype, jit_compile=jit_compile,
                          structured=structured, sparse=sparse)[:, -1]


def forward_layers(params, cfg: ModelConfig, A, b, mask=None, x0=None, *, structured: bool = False,
                   sparse: bool = False, dtype=tf.float64, jit_compile: bool = True) -> np.ndarray:
    """The estimate read from the query token after each layer: (B, L+1, M), entry 0 is ``x0``.

    ``structured=True`` runs a block model's structured fast path, ``sparse=True`` its sparse layers (same numbers)."""
    dtype, w, A, b, maskf, x0, _ = _prepare(params, cfg, A, b, mask, x0, None, dtype)
    plans = tuple(sparse_plans(check_params(params, cfg), cfg)) if sparse else None
    return _compiled("forward", cfg, dtype, jit_compile, structured, plans=plans)(w, A, b, maskf, x0).numpy()


def approximate_inverse(params, cfg: ModelConfig, A, mask=None, *, dtype=tf.float64,
                        jit_compile: bool = True) -> np.ndarray:
    """The model as a matrix of ``b``, ``F`` (B, M, M) with ``(forward(A, b) - forward(A, -b)) / 2 = F b``:
    :func:`reference.model.approximate_inverse` (the same checks and errors) in TensorFlow."""
    if cfg.parametrization != "block":
        raise ValueError("approximate_inverse: block models only (this model is 'full')")
    params = check_params(params, cfg)
    layer = first_layer_reading_b(params, cfg)
    if layer is not None:
        raise ValueError(f"approximate_inverse: layer {layer} of {cfg.n_layers} reads b, so the model's answer is not "
                         "linear in b and no matrix gives it (docs/concepts.md, section 10)")
    plans = tuple(sparse_plans(params, cfg))
    dtype, w, A, _, maskf, _, _ = _prepare(params, cfg, A, np.zeros(np.shape(A)[:-1]), mask, None, None, dtype)
    return _compiled("operator", cfg, dtype, jit_compile, plans=plans)(w, A, maskf).numpy()


def loss_and_grads(params, cfg: ModelConfig, A, b, x, mask=None, x0=None, *, structured=False, loss="mse",
                   dtype=tf.float64, jit_compile: bool = True):
    """``(L, dL/dparams)`` for ``L = mean_s (1/N_s) ||x_hat_s - x_s||^2`` (``loss="relative"``: ``/ ||x_s||^2``,
    as :func:`reference.model.loss_and_grads`); grads have the params' keys and shapes (NumPy arrays of
    ``dtype``), the loss is a Python float."""
    check_loss(loss)
    dtype, w, A, b, maskf, x0, x = _prepare(params, cfg, A, b, mask, x0, x, dtype)
    loss_value, grads = _compiled("loss_and_grads", cfg, dtype, jit_compile, structured, loss)(w, A, b, x, maskf, x0)
    return float(loss_value.numpy()), {k: grads[k].numpy() for k in param_shapes(cfg)}
