"""The model's operations in TensorFlow: pure functions of tensors, differentiated by ``tf.GradientTape``.

Read it beside :mod:`reference.layers`: each ``op`` here is the twin of the reference's ``op_forward``
(same name without the suffix, same arguments, same equations, same order in the file). Where TensorFlow
differs, it differs in one way: there is no ``op_backward`` -- automatic differentiation replaces the
reference's hand-written backward passes, and the cross-tests (``tests/test_cross.py``) check that both
agree to 1e-10 in float64. ``tests/test_twins.py`` keeps the two lists of names in step.

TensorFlow-only fast paths, marked as such below: :func:`attention_readout` (the last layer computes only
the query's x-slot), :func:`mse_sum` (the loss summed, for the distributed step), and the structured block
path (:func:`block_attention` and its helpers: the block layer from the (G, G) scalars in the interleaved
token layout; the reference's readable version is ``reference.layers.block_attention_forward``).

Glossary of dimensions:
    B  systems in a batch
    M  padded system size n_max (full encoding: M = n)
    T  tokens = M equations + 1 query, so T = M + 1; the query is the last row
    D  token width: block M + 1 + K*M, full n + 1 + d_h
    G  token groups of the block parametrization, [a, b, h^1..h^K], G = K + 2
    W  wide groups [a, h^1..h^K] (width M each), W = K + 1
    K  copies of the identity in the block encoding (n_identity)
    H  attention heads
    E  learned embedding width d_h (full encoding)

Tokens are the rows of ``Z`` (B, T, D). Masks are float tensors (1 on real coordinates, 0 on
padding) of the computation's dtype. Invariant kept by every op (as in the reference): the
coordinates of padded unknowns and the padded equation rows are exactly zero, so a padded system
computes exactly what it would alone.

Performance notes (2-core CPU; ``scripts/bench_train_step.py``). The dense path's (B M, D) x (D, H D)
products for keys and values run near the CPU's matmul peak; the structured path replaces them with
(B M M, W+1) x (W+1, H W) products (3-5x fewer multiply-adds), but the keys and values it writes are
as large as the dense path's, so on CPU the step stays memory-bound and gains ~1.1x at N <= 9 and ~1.4x
at N = 20-30 (train step). The code therefore transforms the M keys instead of the T queries, stacks the
heads into one product, makes one plain 2-D product per block matrix (not B M tiny ones), keeps the
interleaved layout (no transposition of the tokens per layer), and computes only the query's x-slot in the
last layer. Measured slower, and so not used: per-group elementwise contractions (slower than the dense
products under XLA:CPU), one product per head, fused multiply-reduce, the oneDNN / XNNPACK dot flags of
``XLA_FLAGS``.
"""

from __future__ import annotations

import numpy as np

from reference.layers import block_layout, check_loss
from tf_impl._quiet import tf

# ----------------------------------------------------------------------------------------------
# token layout


def coordinate_mask(maskf: tf.Tensor, n_groups: int) -> tf.Tensor:
    """Block encoding: (B, D) mask of real token coordinates ``(m, 1, m, ..., m)`` from the (B, M) mask."""
    ones = tf.ones_like(maskf[:, :1])  # (B, 1)
    return tf.concat([maskf, ones] + [maskf] * (n_groups - 2), axis=1)  # (B, D)


# ----------------------------------------------------------------------------------------------
# block re-parametrization


def block_expand(p: tf.Tensor, m: int) -> tf.Tensor:
    """``P = (S p S^T) * C``: block ``(u, v)`` of ``P_h`` is ``p[h, u, v]`` times ``I_m``, ``1_m``,
    ``1_m^T`` or ``1``. ``p`` (H, G, G) -> ``P`` (H, D, D).

    ``S`` (D, G) one-hot group matrix and ``C`` (D, D) 0/1 pattern are the reference's
    :func:`reference.layers.block_layout` (constants, folded by XLA); autodiff of this line is the
    reference's adjoint ``dp = S^T (dP * C) S``.
    """
    S, C = block_layout(int(p.shape[-1]), int(m))
    S = tf.constant(S, dtype=p.dtype)  # (D, G)
    C = tf.constant(C, dtype=p.dtype)  # (D, D)
    return tf.einsum("dg,hgk,ek->hde", S, p, S) * C  # (H, D, D)


# ----------------------------------------------------------------------------------------------
# token encoding


def encode(A, b, x0, maskf, cfg, embedding=None) -> tf.Tensor:
    """Equation tokens ``e_i = (a_i, b_i, h_i)`` then the query ``(x0, 1, 1...)``; ``Z`` (B, T, D).

    Block: ``h_i = (u_i, ..., u_i)`` (K copies), the query's h-slots are the mask (ones on real
    coordinates). Full: ``h_i`` = row ``i`` of the learned ``embedding`` (n, E), the query's h-slot
    is ``1_E``. Padded equations are zero rows.
    """
    B = tf.shape(A)[0]
    M = int(A.shape[1])
    if cfg.parametrization == "block":
        eye = tf.eye(M, dtype=A.dtype)  # (M, M)
        h_eq = [eye[None] * maskf[:, :, None]] * cfg.n_identity  # K x (B, M, M): u_i on real rows
        h_q = [maskf] * cfg.n_identity  # K x (B, M)
    else:
        E = int(embedding.shape[1])
        h_eq = [tf.broadcast_to(embedding[None], tf.stack([B, M, E]))]  # (B, n, E)
        h_q = [tf.ones(tf.stack([B, E]), dtype=A.dtype)]  # (B, E)
    eq = tf.concat([A, b[:, :, None]] + h_eq, axis=2)  # (B, M, D)
    query = tf.concat([x0, tf.ones_like(b[:, :1])] + h_q, axis=1)  # (B, D)
    return tf.concat([eq, query[:, None, :]], axis=1)  # (B, T, D)


# ----------------------------------------------------------------------------------------------
# linear attention


def _keys_values(Zkv, P, Q, x_slot_only: bool = False):
    """Keys ``k_{jh} = Q_h^T e_j`` and values ``v_{jh} = P_h e_j`` of the M equation tokens, every head at once:
    two (B*M, D) x (D, H*D) products. Rows are ordered (j, h); ``x_slot_only`` keeps only the first M
    coordinates of the values (all the last layer needs). Returns (B, M*H, D) and (B, M*H, D or M)."""
    B = tf.shape(Zkv)[0]
    M, D = int(Zkv.shape[1]), int(Zkv.shape[2])
    H = int(P.shape[0])
    flat = tf.reshape(Zkv, [-1, D])  # (B*M, D)
    K = tf.matmul(flat, tf.reshape(tf.transpose(Q, [0, 2, 1]), [H * D, D]), transpose_b=True)  # (B*M, H*D)
    Pv = P[:, :M, :] if x_slot_only else P  # (H, Dv, D)
    Dv = int(Pv.shape[1])  # width of the values: D, or M for the x-slot only
    V = tf.matmul(flat, tf.reshape(Pv, [H * Dv, D]), transpose_b=True)  # (B*M, H*Dv)
    return tf.reshape(K, tf.stack([B, M * H, D])), tf.reshape(V, tf.stack([B, M * H, Dv]))


def attention(Z, P, Q, scale, colmask) -> tf.Tensor:
    """One layer, ``e_i <- e_i + c * colmask * sum_h sum_j (e_j^T Q_h e_i) P_h e_j``, for every token.

    Keys/values ``e_j`` are the M equation rows (zero rows of padded equations add nothing);
    every token, the query included, is updated. In rows: ``Z + c (Z K^T) V`` with the keys
    ``K = [Q_h^T e_j]`` and values ``V = [P_h e_j]`` stacked over (j, h) -- the reference's
    ``(Z Q_h^T Z_kv^T)(Z_kv P_h^T)`` summed over heads, through the (T, M*H) score matrix, never a
    D x D x D product. Transforming the M keys rather than the T queries saves a row, and stacking
    the heads makes each step one large product. ``scale`` (B,) is ``c`` (1, or 1/N per system);
    ``colmask`` (B, D) zeroes the update on padded coordinates.
    """
    M = int(Z.shape[1]) - 1
    K, V = _keys_values(Z[:, :M], P, Q)  # (B, M*H, D) each
    Sc = tf.matmul(Z, K, transpose_b=True)  # (B, T, M*H): scores e_j^T Q_h e_i
    delta = tf.matmul(Sc, V)  # (B, T, D): sum over keys and heads
    gate = scale[:, None, None] * colmask[:, None, :]  # (B, 1, D)
    return Z + gate * delta  # (B, T, D)


def attention_readout(Z, P, Q, scale, colmask) -> tf.Tensor:
    """The last layer followed by the read-out: the query's x-slot after :func:`attention`, (B, M).

    Only the query row and its first M coordinates are computed (the other rows of the last layer
    are never read): the same numbers as ``readout(attention(...))`` at a fraction of the cost.
    """
    M = int(Z.shape[1]) - 1
    K, Vx = _keys_values(Z[:, :M], P, Q, x_slot_only=True)  # (B, M*H, D), (B, M*H, M)
    zq = Z[:, M:, :]  # (B, 1, D): the query token
    sc = tf.matmul(zq, K, transpose_b=True)  # (B, 1, M*H)
    delta = tf.matmul(sc, Vx)[:, 0, :]  # (B, M)
    return zq[:, 0, :M] + (scale[:, None] * colmask[:, :M]) * delta  # (B, M)


# ----------------------------------------------------------------------------------------------
# structured fast path of the block parametrization (no D x D matrix is formed)
#
# The fast path holds a token in the INTERLEAVED layout ``[(a_m, h^1_m, ..., h^K_m) for m < M] + [b]``:
# the W = K + 1 wide groups side by side per coordinate, the b coordinate last. A block matrix then
# acts on a token as one small (W+1) x W matrix on the rows of ``X = [w_m (W) | s]`` (M, W+1) plus a
# group sum for the b output, and every product of the layer is a plain (batched) matrix product with
# no transposition of a large tensor. The layout is a fixed permutation of the token coordinates, so
# the layer computes exactly the numbers of the dense path (tests/test_cross.py).


def block_matrices(p: tf.Tensor):
    """The block scalars ``p`` (H, G, G), groups ``[a, b, h^1..h^K]``, as the two small matrices that
    apply ``P_h`` in the interleaved layout: with ``w_v`` (M,) the wide groups of a token and ``s`` its b
    coordinate,

        (P e)_u = sum_v p_uv w_v + p_ub s 1_M        -> rows: [w_m | s] @ Wide_h,   Wide_h (W+1, W)
        (P e)_b = sum_v p_bv (1^T w_v) + p_bb s      -> [1^T w | s] @ Narrow,       Narrow (W+1, H)

    Returns ``(Wide (H, W+1, W), Narrow (W+1, H))``.
    """
    G = int(p.shape[-1])
    order = list(range(2, G)) + [1]  # [h^1..h^K, b] after a: wide groups first, b last
    order = [0] + order
    pp = tf.gather(tf.gather(p, order, axis=1), order, axis=2)  # (H, G, G) rows/cols [a, h^1..h^K, b]
    W = G - 1
    wide = tf.transpose(pp[:, :W, :], [0, 2, 1])  # (H, W+1, W): column u of head h is row u of p_h
    narrow = tf.transpose(pp[:, W, :])  # (W+1, H)
    return wide, narrow


def encode_interleaved(A, b, x0, maskf, cfg) -> tf.Tensor:
    """The block encoding of :func:`encode` in the interleaved layout: ``Z`` (B, T, M W + 1), W = K + 1.

    Coordinate ``m`` of equation token ``i`` is ``(A_im, u_i[m], ..., u_i[m])``, of the query
    ``(x0_m, mask_m, ..., mask_m)``; the b coordinate (``b_i``, 1 for the query) is last.
    """
    B = tf.shape(A)[0]
    M = int(A.shape[1])
    eye = tf.eye(M, dtype=A.dtype)[None] * maskf[:, :, None]  # (B, M, M): u_i on real rows
    eq = tf.stack([A] + [eye] * cfg.n_identity, axis=3)  # (B, M, M, W)
    q = tf.stack([x0] + [maskf] * cfg.n_identity, axis=2)[:, None]  # (B, 1, M, W)
    Zw = tf.reshape(tf.concat([eq, q], axis=1), tf.stack([B, M + 1, M * (cfg.n_identity + 1)]))  # (B, T, M W)
    s = tf.concat([b, tf.ones_like(b[:, :1])], axis=1)[:, :, None]  # (B, T, 1)
    return tf.concat([Zw, s], axis=2)  # (B, T, M W + 1)


def interleaved_colmask(maskf: tf.Tensor, n_wide: int) -> tf.Tensor:
    """Mask of real coordinates in the interleaved layout, (B, M W + 1): ``mask_m`` on each wide slot, 1 on b."""
    B = tf.shape(maskf)[0]
    M = int(maskf.shape[1])
    wide = tf.reshape(tf.tile(maskf[:, :, None], [1, 1, n_wide]), tf.stack([B, M * n_wide]))  # (B, M W)
    return tf.concat([wide, tf.ones_like(maskf[:, :1])], axis=1)  # (B, M W + 1)


def interleaved_readout(Z, n_wide: int) -> tf.Tensor:
    """The x-slot of the query token (coordinates ``a_m``) in the interleaved layout: (B, M)."""
    return Z[:, -1, 0:-1:n_wide]  # (B, M)


def _block_rows(Zkv, n_wide: int):
    """The rows the small block matrices act on, for the M equation tokens ``Zkv`` (B, M, D):
    ``X`` (B M M, W+1), row ``(j, m)`` = ``[w_m | s]`` of token ``j``, and ``Xsum`` (B M, W+1) = ``[1^T w | s]``."""
    B = tf.shape(Zkv)[0]
    M = int(Zkv.shape[1])
    s = Zkv[:, :, -1:]  # (B, M, 1)
    Xw = tf.reshape(Zkv[:, :, :-1], tf.stack([B, M, M, n_wide]))  # (B, M, M, W): rows w_m
    X = tf.concat([Xw, tf.tile(s[:, :, None, :], [1, 1, M, 1])], axis=3)  # (B, M, M, W+1)
    Xsum = tf.concat([tf.reduce_sum(Xw, axis=2), s], axis=2)  # (B, M, W+1)
    return tf.reshape(X, [-1, n_wide + 1]), tf.reshape(Xsum, [-1, n_wide + 1])


def _block_kv(X, Xsum, wide, narrow, B, M: int, n_wide: int):
    """``P_h e_j`` for every equation token and head, all heads in one product per part:
    the wide part (B, M H, M W) (rows ordered (j, h), as the scores' columns) and the b coordinates (B, M H, 1)."""
    H = int(wide.shape[0])
    all_heads = tf.reshape(tf.transpose(wide, [1, 0, 2]), [n_wide + 1, H * n_wide])  # (W+1, H W)
    Vw = tf.reshape(tf.matmul(X, all_heads), tf.stack([B, M, M, H, n_wide]))  # (B, j, m, h, u)
    Vw = tf.reshape(tf.transpose(Vw, [0, 1, 3, 2, 4]), tf.stack([B, M * H, M * n_wide]))  # (B, (j, h), (m, u))
    Vb = tf.reshape(tf.matmul(Xsum, narrow), tf.stack([B, M * H, 1]))  # (B, (j, h), 1)
    return Vw, Vb


def block_attention(Z, p, q, scale, colmask) -> tf.Tensor:
    """:func:`attention` of the block parametrization from its scalars ``p``, ``q`` (H, G, G), on tokens in
    the interleaved layout (:func:`encode_interleaved`): the same update, never forming a D x D matrix.

    Keys ``Q_h^T e_j`` and values ``P_h e_j`` cost ``O(G^2 M)`` per token (:func:`block_matrices`); the
    scores ``Z K^T`` (T x M H) and the update ``S V`` are two batched products of ``T M H D``
    multiply-adds each, all heads stacked. ``colmask`` is :func:`interleaved_colmask`.
    """
    B = tf.shape(Z)[0]
    M = int(Z.shape[1]) - 1
    W = int(p.shape[-1]) - 1
    X, Xsum = _block_rows(Z[:, :M], W)  # (B M M, W+1), (B M, W+1)
    Kw, Kb = _block_kv(X, Xsum, *block_matrices(tf.transpose(q, [0, 2, 1])), B, M, W)  # keys: Q_h^T e_j
    Vw, Vb = _block_kv(X, Xsum, *block_matrices(p), B, M, W)  # values: P_h e_j
    Sc = tf.matmul(Z[:, :, :-1], Kw, transpose_b=True) + Z[:, :, -1:] * tf.transpose(Kb, [0, 2, 1])  # (B, T, M H)
    delta = tf.concat([tf.matmul(Sc, Vw), tf.matmul(Sc, Vb)], axis=2)  # (B, T, D): sum over keys and heads
    gate = scale[:, None, None] * colmask[:, None, :]  # (B, 1, D)
    return Z + gate * delta  # (B, T, D)


def block_attention_readout(Z, p, q, scale, colmask) -> tf.Tensor:
    """:func:`block_attention` followed by :func:`interleaved_readout`, computing only the query row's
    x-slot (the values' a-group): (B, M)."""
    B = tf.shape(Z)[0]
    M = int(Z.shape[1]) - 1
    W = int(p.shape[-1]) - 1
    H = int(p.shape[0])
    X, Xsum = _block_rows(Z[:, :M], W)  # (B M M, W+1), (B M, W+1)
    Kw, Kb = _block_kv(X, Xsum, *block_matrices(tf.transpose(q, [0, 2, 1])), B, M, W)  # (B, M H, M W), (B, M H, 1)
    wide, _ = block_matrices(p)  # (H, W+1, W)
    Vx = tf.reshape(tf.matmul(X, tf.transpose(wide[:, :, 0])), tf.stack([B, M, M, H]))  # (B, j, m, h): a-group
    Vx = tf.reshape(tf.transpose(Vx, [0, 1, 3, 2]), tf.stack([B, M * H, M]))  # (B, (j, h), m)
    zq = Z[:, M:, :]  # (B, 1, D): the query
    sc = tf.matmul(zq[:, :, :-1], Kw, transpose_b=True) + zq[:, :, -1:] * tf.transpose(Kb, [0, 2, 1])  # (B, 1, M H)
    delta = tf.matmul(sc, Vx)[:, 0, :]  # (B, M)
    return interleaved_readout(Z, W) + (scale[:, None] * colmask[:, 0:-1:W]) * delta  # (B, M)


# ----------------------------------------------------------------------------------------------
# sparse block attention: only the T x M x M products the nonzero block scalars need (inference)
#
# The twin of the reference's sparse layers (reference.layers, same section): the tokens as wide groups w
# (B, T, W, M) and b coordinates s (B, T), and the products of a plan (reference.layers.sparse_plan, read from the
# zero pattern of the NumPy weights, static when the layer is traced). Scalars are tensors; the plan's branches
# are Python, so a compiled layer is specialised to its plan.


def _wide_index(G: int) -> list:
    return [0] + list(range(2, G))  # indices of the wide groups among [a, b, h^1..h^K]


def _wide_blocks(w: tf.Tensor) -> tf.Tensor:
    """(H, W, W): the wide-wide blocks of (H, G, G) scalars."""
    wi = _wide_index(int(w.shape[-1]))
    return tf.gather(tf.gather(w, wi, axis=1), wi, axis=2)


def _combine(coefs, groups: list, idx):
    """``sum_k coefs[k] groups[k]`` over the indices ``idx`` only (the nonzero scalars)."""
    return sum(coefs[k] * groups[k] for k in idx)


def _times_keys(x, y, x_ident: bool, y_ident: bool) -> tf.Tensor:
    """``G[i, j] = <x[i], y[j]>`` (B, R, M) for rows ``x`` (B, R, M) and keys ``y`` (B, M, M), no product where a
    side is the encoding's identity block (:func:`reference.layers.sparse_block_attention_forward`)."""
    if y_ident:
        return x
    if x_ident:
        R = int(x.shape[1])
        return tf.concat([tf.transpose(y, [0, 2, 1]), tf.reduce_sum(y, axis=2)[:, None, :]], axis=1)[:, -R:]
    return tf.matmul(x, y, transpose_b=True)  # (B, R, M): a product when R = T


def _wide_scores(x: list, keys: list, qw, plan) -> list:
    """``sum_{u,v} q_uv <w_v[i], w_u[j]>`` per head: H tensors (B, R, M), by the plan's association; ``x`` and
    ``keys`` are the W groups of the rows (B, R, M) and of the keys (B, M, M)."""
    H, W = int(qw.shape[0]), int(qw.shape[1])
    nz = np.asarray(plan.q_nonzero)[:, _wide_index(W + 1)][:, :, _wide_index(W + 1)]  # (H, W, W)
    ident = plan.identity
    S = [tf.zeros_like(x[0]) for _ in range(H)]  # H x (B, R, M)
    for h in range(H):
        if plan.scores == "query":  # S_h = sum_v w_v K_v^T, K_v = sum_u q_uv w_u
            for v in np.flatnonzero(nz[h].any(axis=0)):
                K = _combine(qw[h, :, v], keys, np.flatnonzero(nz[h, :, v]))  # (B, M, M)
                S[h] += _times_keys(x[v], K, ident[v], False)
        elif plan.scores == "key":  # S_h = sum_u R_u w_u^T, R_u = sum_v q_uv w_v
            for u in np.flatnonzero(nz[h].any(axis=1)):
                R = _combine(qw[h, u], x, np.flatnonzero(nz[h, u]))  # (B, R, M)
                S[h] += _times_keys(R, keys[u], False, ident[u])
    if plan.scores == "pairs":  # one Gram product per pair {u, v}, shared by the heads
        used = nz.any(axis=0) | nz.any(axis=0).T
        for u, v in zip(*np.nonzero(np.triu(used)), strict=True):
            G_vu = _times_keys(x[v], keys[u], ident[v], ident[u])  # (B, R, M)
            G_uv = None
            if u != v:
                G_uv = _times_keys(x[u][:, -1:], keys[v], ident[u], ident[v])  # the query row
                if int(x[u].shape[1]) > 1:  # the equation rows: the transpose of the other orientation's
                    G_uv = tf.concat([tf.transpose(G_vu[:, :-1], [0, 2, 1]), G_uv], axis=1)
            for h in range(H):
                S[h] += qw[h, u, v] * G_vu if nz[h, u, v] else 0.0
                S[h] += qw[h, v, u] * G_uv if G_uv is not None and nz[h, v, u] else 0.0
    return S


def _scores(x: list, s_x, keys: list, s_k, q, plan) -> tf.Tensor:
    """Scores (B, H, R, M): :func:`_wide_scores` and the rank-one terms of the b row and column."""
    wi = _wide_index(int(q.shape[-1]))
    S = tf.stack(_wide_scores(x, keys, _wide_blocks(q), plan), axis=1)  # (B, H, R, M)
    nz = np.asarray(plan.q_nonzero)
    if not (nz[:, 1].any() or nz[:, :, 1].any()):  # q reads no b coordinate
        return S
    ksum = tf.stack([tf.reduce_sum(k, axis=2) for k in keys], axis=2)  # (B, M, W): group sums 1^T w_u[j]
    xsum = tf.stack([tf.reduce_sum(g, axis=2) for g in x], axis=2)  # (B, R, W)
    k_b = tf.einsum("hu,bju->bhj", tf.gather(q[:, :, 1], wi, axis=1), ksum)  # (B, H, M)
    x_b = tf.einsum("hv,biv->bhi", tf.gather(q[:, 1, :], wi, axis=1), xsum)  # (B, H, R)
    S += s_x[:, None, :, None] * k_b[:, :, None, :] + x_b[..., None] * s_k[:, None, None, :]
    return S + q[None, :, 1, 1, None, None] * s_x[:, None, :, None] * s_k[:, None, None, :]


def _update(S, keys: list, s_k, p, plan):
    """``sum_h S_h V_h``: W tensors (B, R, M) for the wide groups and (B, R) for b, per head by the plan."""
    H, W = int(p.shape[0]), int(p.shape[-1]) - 1
    wi = _wide_index(W + 1)
    pw, pb = _wide_blocks(p), tf.gather(p[:, :, 1], wi, axis=1)  # (H, W, W), (H, W)
    pn = np.asarray(plan.p_nonzero)
    nz = pn[:, wi][:, :, wi]  # (H, W, W)
    dw = [tf.zeros_like(S[:, 0]) for _ in range(W)]  # W x (B, R, M)
    for h in range(H):
        if plan.update[h] == "columns":  # S_h w_v for each read group v, then combined
            for v in np.flatnonzero(nz[h].any(axis=0)):
                Y = _times_keys(S[:, h], tf.transpose(keys[v], [0, 2, 1]), False, plan.identity[v])
                for u in np.flatnonzero(nz[h, :, v]):
                    dw[u] += pw[h, u, v] * Y
        else:  # S_h V_u for each written group u
            for u in np.flatnonzero(nz[h].any(axis=1)):
                dw[u] += tf.matmul(S[:, h], _combine(pw[h, u], keys, np.flatnonzero(nz[h, u])))
    if pn[:, wi, 1].any():  # p_ub (S_h s) 1^T
        Ss = tf.einsum("hu,bhi->bui", pb, tf.einsum("bhij,bj->bhi", S, s_k))  # (B, W, R)
        dw = [dw[u] + Ss[:, u, :, None] for u in range(W)]
    if not pn[:, 1].any():  # nothing writes b
        return dw, tf.zeros_like(S[:, 0, :, 0])
    ksum = tf.stack([tf.reduce_sum(k, axis=2) for k in keys], axis=2)  # (B, M, W)
    vb = (tf.einsum("hv,bjv->bhj", tf.gather(p[:, 1, :], wi, axis=1), ksum)
          + p[None, :, 1, 1, None] * s_k[:, None])  # (B, H, M)
    return dw, tf.einsum("bhij,bhj->bi", S, vb)


def encode_groups(A, b, x0, maskf, cfg):
    """The block encoding as the sparse layers hold it: the wide groups ``[a, h^1..h^K]`` of every token (equations,
    then the query) as a list of W tensors (B, T, M) (the reference's ``w`` (B, T, W, M) split along its groups:
    each group one contiguous tensor), and the b coordinates ``s`` (B, T)."""
    B = tf.shape(A)[0]
    M = int(A.shape[1])
    eye = tf.eye(M, dtype=A.dtype)[None] * maskf[:, :, None]  # (B, M, M): u_i on real rows
    a = tf.concat([A, x0[:, None, :]], axis=1)  # (B, T, M)
    h = tf.concat([eye, maskf[:, None, :]], axis=1)  # (B, T, M)
    s = tf.concat([b, tf.ones(tf.stack([B, 1]), dtype=A.dtype)], axis=1)  # (B, T)
    return [a] + [h] * cfg.n_identity, s


def sparse_block_attention(w, s, p, q, scale, maskf, plan):
    """One block layer on the groups by the products of ``plan``: ``(w, s)`` after the layer (inference)."""
    M = int(w[0].shape[1]) - 1
    keys = [g[:, :M] for g in w]  # W x (B, M, M)
    S = _scores(w, s, keys, s[:, :M], q, plan)  # (B, H, T, M)
    dw, ds = _update(S, keys, s[:, :M], p, plan)  # W x (B, T, M), (B, T)
    gate = scale[:, None, None] * maskf[:, None, :]  # (B, 1, M)
    w = [g + gate * d if written else g for g, d, written in zip(w, dw, plan.written, strict=True)]
    return w, s + scale[:, None] * ds


def sparse_block_readout(w, s, p, q, scale, maskf, plan) -> tf.Tensor:
    """The last layer and the read-out, the query row only: the query's x-slot (B, M)."""
    M = int(w[0].shape[1]) - 1
    keys = [g[:, :M] for g in w]
    S = _scores([g[:, M:] for g in w], s[:, M:], keys, s[:, :M], q, plan)  # (B, H, 1, M)
    dw, _ = _update(S, keys, s[:, :M], p, plan)  # W x (B, 1, M)
    return w[0][:, M] + scale[:, None] * maskf * dw[0][:, 0]  # (B, M)


def sparse_block_operator(w, s, p, q, scale, maskf, plan) -> tf.Tensor:
    """The last layer as a matrix of ``b`` (B, M, M), for tokens whose b coordinates are 0 (equations) and 1 (the
    query): :func:`reference.layers.sparse_block_operator_forward`."""
    M = int(w[0].shape[1]) - 1
    wi = _wide_index(int(p.shape[-1]))
    keys = [g[:, :M] for g in w]  # W x (B, M, M)
    sigma = _scores([g[:, M:] for g in w], s[:, M:], keys, s[:, :M], q, plan)[:, :, 0]  # (B, H, M)
    qsum = tf.stack([tf.reduce_sum(g[:, M], axis=1) for g in w], axis=1)  # (B, W): group sums of the query
    tau = tf.einsum("hv,bv->bh", tf.gather(q[:, 1, :], wi, axis=1), qsum) + q[None, :, 1, 1] * s[:, M:]  # (B, H)
    Va = tf.einsum("hv,vbjm->bhjm", tf.gather(p[:, 0, :], wi, axis=1), tf.stack(keys))  # (B, H, M, M)
    F = tf.einsum("h,bhj->bj", p[:, 0, 1], sigma)[:, None, :] + tf.einsum("bh,bhjm->bmj", tau, Va)  # (B, M, M)
    return scale[:, None, None] * maskf[:, :, None] * F


# ----------------------------------------------------------------------------------------------
# read-out and loss


def readout(Z) -> tf.Tensor:
    """The prediction is the x-slot (first M coordinates) of the query token: (B, M)."""
    M = int(Z.shape[1]) - 1
    return Z[:, M, :M]  # (B, M)


def mse_sum(x_hat, x, maskf, loss: str = "mse") -> tf.Tensor:
    """``sum_s ||x_hat_s - x_s||^2 / d_s`` over the batch (real coordinates only): a scalar; ``d_s = N_s``
    (``loss="mse"``) or ``||x_s||^2`` (``loss="relative"``), as :func:`reference.layers.mse_forward`.

    Divided by the (global) number of systems it is the loss ``L = mean_s ||x_hat_s - x_s||^2 / d_s``.
    """
    relative = check_loss(loss) == "relative"
    d = tf.reduce_sum(x * x * maskf, axis=1) if relative else tf.reduce_sum(maskf, axis=1)  # (B,)
    r = (x_hat - x) * maskf  # (B, M)
    return tf.reduce_sum(tf.reduce_sum(r * r, axis=1) / d)


def mse(x_hat, x, maskf, loss: str = "mse") -> tf.Tensor:
    """``L = mean_s ||x_hat_s - x_s||^2 / d_s``, ``d_s = N_s`` (``loss="mse"``: every system weighs the same,
    whatever its size) or ``||x_s||^2`` (``loss="relative"``): :func:`reference.layers.mse_forward`."""
    return mse_sum(x_hat, x, maskf, loss) / tf.cast(tf.shape(x)[0], x.dtype)
