"""The model's operations, each a pure pair ``op_forward(...) -> (out, cache)`` and
``op_backward(dout, cache) -> (d_inputs..., d_params...)``, in float64 NumPy.

Glossary of dimensions:
    B  systems in a batch
    M  padded system size n_max (full encoding: M = n)
    T  tokens = M equations + 1 query, so T = M + 1; the query is the last row
    D  token width: block M + 1 + K*M, full n + 1 + d_h
    G  token groups of the block parametrization, [a, b, h^1..h^K], G = K + 2
    K  copies of the identity in the block encoding (n_identity)
    H  attention heads
    E  learned embedding width d_h (full encoding)

Tokens are the rows of ``Z`` (B, T, D). Invariant kept by every op: coordinates of padded
unknowns (columns past a system's own N inside the a- and h-groups) and padded equation rows
are exactly zero, so a padded system computes exactly what it would alone.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import numpy as np

# ----------------------------------------------------------------------------------------------
# caches: what each forward keeps for its backward


class BlockExpandCache(NamedTuple):
    S: np.ndarray  # (D, G) one-hot group matrix
    C: np.ndarray  # (D, D) 0/1 pattern


class EncodeCache(NamedTuple):
    M: int  # padded size
    parametrization: str  # "block" or "full"


class AttentionCache(NamedTuple):
    Z: np.ndarray  # (B, T, D) tokens in
    Zq: np.ndarray  # (B, H, T, D) rows Q_h e_i
    Sc: np.ndarray  # (B, H, T, M) scores e_j^T Q_h e_i
    V: np.ndarray  # (B, H, M, D) values P_h e_j
    P: np.ndarray  # (H, D, D)
    Q: np.ndarray  # (H, D, D)
    gate: np.ndarray  # (B, 1, D) c * colmask


class BlockApplyCache(NamedTuple):
    p: np.ndarray  # (H, G, G) block scalars
    w: np.ndarray  # (B, R, W, M) wide groups of the tokens
    s: np.ndarray  # (B, R) b coordinates
    wsum: np.ndarray  # (B, R, W) group sums 1^T w_v


class BlockAttentionCache(NamedTuple):
    Z: np.ndarray  # (B, T, D) tokens in
    K: np.ndarray  # (B, M, H, D) keys Q_h^T e_j
    V: np.ndarray  # (B, M, H, D) values P_h e_j
    Sc: np.ndarray  # (B, H, T, M) scores
    gate: np.ndarray  # (B, 1, D) c * colmask
    keys: BlockApplyCache  # of K = B(q^T) Z_kv
    values: BlockApplyCache  # of V = B(p) Z_kv


class ReadoutCache(NamedTuple):
    shape: tuple  # (B, T, D) of the tokens read


class MseCache(NamedTuple):
    r: np.ndarray  # (B, M) masked residual x_hat - x
    d: np.ndarray  # (B,) per-system denominators: sizes N_s, or ||x_s||^2 for the relative loss

# ----------------------------------------------------------------------------------------------
# token layout


@cache
def block_layout(n_groups: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot group matrix ``S`` (D, G) and 0/1 pattern ``C`` (D, D) of the block parametrization.

    Token coordinates are ordered ``[a (m), b (1), h^1 (m), ..., h^K (m)]``. ``C[r, c] = 1`` where
    block ``(group(r), group(c))`` has an entry at ``(r, c)``: the diagonal of an ``m x m`` block
    (``scalar * I``) or every entry of a block touching the width-1 ``b`` group (``scalar * 1``).
    Returned arrays are read-only (they are cached).
    """
    widths = [m, 1] + [m] * (n_groups - 2)
    group = np.repeat(np.arange(n_groups), widths)  # (D,) group of each coordinate
    pos = np.concatenate([np.arange(w) for w in widths])  # (D,) position inside its group
    S = np.eye(n_groups)[group]  # (D, G)
    narrow = np.asarray(widths)[group] == 1  # (D,) coordinate lies in the b group
    C = ((pos[:, None] == pos[None, :]) | narrow[:, None] | narrow[None, :]).astype(np.float64)  # (D, D)
    S.flags.writeable = False
    C.flags.writeable = False
    return S, C


def coordinate_mask(mask: np.ndarray, n_groups: int) -> np.ndarray:
    """Block encoding: (B, D) mask of real token coordinates, from the (B, M) unknowns mask."""
    B = mask.shape[0]
    m = mask.astype(np.float64)
    return np.concatenate([m, np.ones((B, 1))] + [m] * (n_groups - 2), axis=1)  # (B, D)


# ----------------------------------------------------------------------------------------------
# block re-parametrization


def block_expand_forward(p: np.ndarray, m: int):
    """``P = (S p S^T) * C``: each (u, v) block of ``P`` is ``p[u, v]`` times ``I_m``, ``1_m``,
    ``1_m^T`` or ``1``. ``p`` (H, G, G) -> ``P`` (H, D, D)."""
    S, C = block_layout(p.shape[-1], m)
    P = (S @ p @ S.T) * C  # (H, D, D)
    return P, BlockExpandCache(S, C)


def block_expand_backward(dP: np.ndarray, cache):
    """Adjoint of the expansion: ``dp[u, v] = sum over the (u, v) block of dP * C``.

    The forward was ``P = (S p S^T) * C``, linear in ``p``: entry ``P[r, c] = C[r, c] p[g(r), g(c)]``, so
    ``dp[u, v]`` collects ``dP[r, c] C[r, c]`` over the coordinates of block ``(u, v)``: ``S^T (dP * C) S``.
    """
    S, C = cache
    return S.T @ (dP * C) @ S  # (H, G, G)


# ----------------------------------------------------------------------------------------------
# token encoding


def encode_forward(A, b, x0, mask, cfg, embedding=None):
    """Equation tokens ``e_i = (a_i, b_i, h_i)`` then the query ``(x0, 1, 1...)``; ``Z`` (B, T, D).

    Block: ``h_i = (u_i, ..., u_i)`` (K copies), the query's h-slots are ones on real coordinates.
    Full: ``h_i`` = row ``i`` of the learned ``embedding`` (n, E), the query's h-slot is ``1_E``.
    Padded equations are zero rows.
    """
    B, M, _ = A.shape
    maskf = mask.astype(np.float64)  # (B, M)
    if cfg.parametrization == "block":
        h_eq = [np.eye(M)[None] * maskf[:, :, None]] * cfg.n_identity  # K x (B, M, M): u_i on real rows
        h_q = [maskf] * cfg.n_identity  # K x (B, M)
    else:
        h_eq = [np.broadcast_to(embedding, (B,) + embedding.shape)]  # (B, n, E)
        h_q = [np.ones((B, embedding.shape[1]))]  # (B, E)
    eq = np.concatenate([A, b[:, :, None]] + h_eq, axis=2)  # (B, M, D)
    query = np.concatenate([x0, np.ones((B, 1))] + h_q, axis=1)  # (B, D)
    Z = np.concatenate([eq, query[:, None, :]], axis=1)  # (B, T, D)
    return Z, EncodeCache(M, cfg.parametrization)


def encode_backward(dZ, cache):
    """Gradient of the learned embedding (full encoding), ``None`` for the block encoding.

    The forward copied ``embedding[i]`` into the h-slot of equation token ``i`` of every system, so its
    gradient is that slot of ``dZ`` summed over the batch (the query's ``1_E`` and ``A``, ``b`` are inputs).
    """
    if cache.parametrization == "block":
        return None
    M = cache.M
    return dZ[:, :M, M + 1:].sum(axis=0)  # (n, E): the embedding is shared by every system


# ----------------------------------------------------------------------------------------------
# linear attention


def attention_forward(Z, P, Q, scale, colmask):
    """One layer, ``e_i <- e_i + c * colmask * sum_h sum_j (e_j^T Q_h e_i) P_h e_j``.

    Keys/values ``e_j`` are the M equation rows (zero rows of padded equations add nothing);
    every token, the query included, is updated. In rows: ``Z + c (Z Q_h^T Z_kv^T)(Z_kv P_h^T)``.
    ``scale`` (B,) is ``c`` (1, or 1/N per system); ``colmask`` (B, D) zeroes the update on
    padded coordinates, which is what masked ``I_N``/``1_N`` blocks would do.
    """
    M = Z.shape[1] - 1
    Zkv = Z[:, :M]  # (B, M, D)
    Zq = np.einsum("btd,hed->bhte", Z, Q, optimize=True)  # (B, H, T, D): rows Q_h e_i
    Sc = np.einsum("bhte,bje->bhtj", Zq, Zkv, optimize=True)  # (B, H, T, M): scores e_j^T Q_h e_i
    V = np.einsum("bjd,hed->bhje", Zkv, P, optimize=True)  # (B, H, M, D): rows P_h e_j
    gate = scale[:, None, None] * colmask[:, None, :]  # (B, 1, D)
    delta = np.einsum("bhtj,bhje->bte", Sc, V, optimize=True)  # (B, T, D), heads summed
    out = Z + gate * delta  # (B, T, D)
    return out, AttentionCache(Z, Zq, Sc, V, P, Q, gate)


def attention_backward(dout, cache):
    """Backward of :func:`attention_forward`: returns ``(dZ, dP, dQ)``.

    The forward was ``out = Z + gate * delta`` with ``delta = sum_h Sc_h V_h``, ``Sc_h = (Z Q_h^T) Z_kv^T``
    and ``V_h = Z_kv P_h^T``. Read in reverse: ``delta`` receives ``dout * gate``; a product ``Sc V``
    sends ``ddelta V^T`` to ``Sc`` and ``Sc^T ddelta`` to ``V``; ``Sc = Zq Z_kv^T`` sends ``dSc Z_kv`` to
    ``Zq`` and ``dSc^T Zq`` to ``Z_kv``; ``Zq = Z Q^T`` and ``V = Z_kv P^T`` send ``dZq Q`` and ``dV P`` to
    their inputs and ``dZq^T Z``, ``dV^T Z_kv`` to the weights. ``Z`` is used three times -- the residual,
    the queries, and (its M equation rows) the keys and values -- so its gradient is the sum of the three.
    """
    Z, Zq, Sc, V, P, Q, gate = cache
    M = Z.shape[1] - 1
    Zkv = Z[:, :M]  # (B, M, D)
    ddelta = dout * gate  # (B, T, D)
    dSc = np.einsum("bte,bhje->bhtj", ddelta, V, optimize=True)  # (B, H, T, M)
    dV = np.einsum("bhtj,bte->bhje", Sc, ddelta, optimize=True)  # (B, H, M, D)
    dZq = np.einsum("bhtj,bje->bhte", dSc, Zkv, optimize=True)  # (B, H, T, D)
    dZkv = np.einsum("bhtj,bhte->bje", dSc, Zq, optimize=True)  # (B, M, D): Z_kv as keys
    dZkv += np.einsum("bhje,hed->bjd", dV, P, optimize=True)  # Z_kv as values
    dZ = dout + np.einsum("bhte,hed->btd", dZq, Q, optimize=True)  # residual + Z as queries
    dZ[:, :M] += dZkv
    dP = np.einsum("bhje,bjd->hed", dV, Zkv, optimize=True)  # (H, D, D)
    dQ = np.einsum("bhte,btd->hed", dZq, Z, optimize=True)  # (H, D, D)
    return dZ, dP, dQ


# ----------------------------------------------------------------------------------------------
# structured block attention: the same layer from the (G, G) scalars, no D x D matrix


def _groups(Z, G):
    """Token view ``w`` (B, R, W, M): the W = G - 1 wide groups ``[a, h^1..h^K]``, and ``s`` (B, R) the b coordinate."""
    B, R, D = Z.shape
    M = (D - 1) // (G - 1)
    w = np.concatenate([Z[:, :, None, :M], Z[:, :, M + 1:].reshape(B, R, G - 2, M)], axis=2)  # (B, R, W, M)
    return w, Z[:, :, M]


def _ungroup(out_w, out_b):
    """Inverse of :func:`_groups` with a head axis: (B, R, H, W, M) and (B, R, H) -> (B, R, H, D)."""
    B, R, H, W, M = out_w.shape
    return np.concatenate([out_w[:, :, :, 0], out_b[..., None], out_w[:, :, :, 1:].reshape(B, R, H, (W - 1) * M)],
                          axis=3)


def _wide(G):
    return [0] + list(range(2, G))  # indices of the wide groups among [a, b, h^1..h^K]


def block_apply_forward(p, Z):
    """``P_h e`` for every token ``e`` (row of ``Z`` (B, R, D)) and head, from the scalars ``p`` (H, G, G):
    (B, R, H, D). With ``w_v`` the wide groups of ``e`` and ``s`` its b coordinate::

        (P e)_u = sum_v p_uv w_v + p_ub s 1_M      (u wide: scalar * I and scalar * 1 blocks)
        (P e)_b = sum_v p_bv (1^T w_v) + p_bb s    (scalar * 1^T blocks: group sums)

    ``O(G^2 M)`` per token, against ``O(D^2)`` for the expanded ``P``; equal to ``Z @ block_expand(p)^T``.
    """
    G = p.shape[-1]
    wi = _wide(G)
    w, s = _groups(Z, G)  # (B, R, W, M), (B, R)
    wsum = w.sum(axis=3)  # (B, R, W)
    out_w = np.einsum("huv,brvm->brhum", p[:, wi][:, :, wi], w, optimize=True)  # (B, R, H, W, M)
    out_w += np.einsum("hu,br->brhu", p[:, wi, 1], s)[..., None]  # p_ub s 1_M
    out_b = np.einsum("hv,brv->brh", p[:, 1, wi], wsum) + p[:, 1, 1] * s[..., None]  # (B, R, H)
    return _ungroup(out_w, out_b), BlockApplyCache(p, w, s, wsum)


def block_apply_backward(dout, cache):
    """Backward of :func:`block_apply_forward`: ``(dZ, dp)``.

    The forward is linear in ``p`` and in ``(w, s)`` separately, so each gradient is the forward's
    contraction with the other factor: ``dp_uv = sum dout_u w_v`` (wide-wide), ``dp_ub = sum dout_u s``
    (summed over the M coordinates too: the block is ``1_M``), ``dp_bv = sum dout_b 1^T w_v``,
    ``dp_bb = sum dout_b s``; and ``dw_v = sum_u p_uv dout_u + p_bv dout_b 1_M``,
    ``ds = sum_u p_ub 1^T dout_u + p_bb dout_b``.
    """
    p, w, s, wsum = cache
    G = p.shape[-1]
    wi = _wide(G)
    dw_out, db_out = _groups(dout.reshape(-1, *dout.shape[2:]), G)  # heads folded into rows
    B, R, H = dout.shape[:3]
    dw_out = dw_out.reshape(B, R, H, G - 1, -1)  # (B, R, H, W, M)
    db_out = db_out.reshape(B, R, H)  # (B, R, H)
    dp = np.zeros_like(p)  # (H, G, G)
    dp[np.ix_(range(H), wi, wi)] = np.einsum("brhum,brvm->huv", dw_out, w, optimize=True)
    dp[:, wi, 1] = np.einsum("brhum,br->hu", dw_out, s, optimize=True)
    dp[:, 1, wi] = np.einsum("brh,brv->hv", db_out, wsum, optimize=True)
    dp[:, 1, 1] = np.einsum("brh,br->h", db_out, s)
    dw = np.einsum("huv,brhum->brvm", p[:, wi][:, :, wi], dw_out, optimize=True)  # (B, R, W, M)
    dw += np.einsum("hv,brh->brv", p[:, 1, wi], db_out)[..., None]  # through 1^T w_v
    ds = np.einsum("hu,brhum->br", p[:, wi, 1], dw_out, optimize=True) + db_out @ p[:, 1, 1]  # (B, R)
    M = w.shape[-1]
    dZ = np.concatenate([dw[:, :, 0], ds[..., None], dw[:, :, 1:].reshape(B, R, (G - 2) * M)], axis=2)  # (B, R, D)
    return dZ, dp


def block_attention_forward(Z, p, q, scale, colmask):
    """:func:`attention_forward` of the block parametrization from its scalars ``p``, ``q`` (H, G, G): keys
    ``Q_h^T e_j`` and values ``P_h e_j`` by :func:`block_apply_forward` (``Q_h^T`` is the block matrix of
    ``q_h^T``), then the same scores and update. Same numbers as expanding ``P``, ``Q``, fewer operations."""
    M = Z.shape[1] - 1
    Zkv = Z[:, :M]  # (B, M, D)
    K, k_cache = block_apply_forward(np.swapaxes(q, 1, 2), Zkv)  # (B, M, H, D): rows Q_h^T e_j
    V, v_cache = block_apply_forward(p, Zkv)  # (B, M, H, D): rows P_h e_j
    Sc = np.einsum("btd,bjhd->bhtj", Z, K, optimize=True)  # (B, H, T, M): e_j^T Q_h e_i
    delta = np.einsum("bhtj,bjhd->btd", Sc, V, optimize=True)  # (B, T, D)
    gate = scale[:, None, None] * colmask[:, None, :]  # (B, 1, D)
    return Z + gate * delta, BlockAttentionCache(Z, K, V, Sc, gate, k_cache, v_cache)


def block_attention_backward(dout, cache):
    """Backward of :func:`block_attention_forward`: ``(dZ, dp, dq)``. The forward was
    ``out = Z + gate * (Sc V)`` with ``Sc = Z K^T``, ``K = B(q^T) Z_kv``, ``V = B(p) Z_kv``, so ``Z`` receives
    the residual, its use as queries (``dSc K``), and, as keys and values, what :func:`block_apply_backward`
    sends back from ``dK`` and ``dV``; ``dq`` is the transpose of the keys' ``d(q^T)``."""
    Z, K, V, Sc, gate, k_cache, v_cache = cache
    M = Z.shape[1] - 1
    ddelta = dout * gate  # (B, T, D)
    dSc = np.einsum("btd,bjhd->bhtj", ddelta, V, optimize=True)  # (B, H, T, M)
    dV = np.einsum("bhtj,btd->bjhd", Sc, ddelta, optimize=True)  # (B, M, H, D)
    dK = np.einsum("bhtj,btd->bjhd", dSc, Z, optimize=True)  # (B, M, H, D)
    dZ = dout + np.einsum("bhtj,bjhd->btd", dSc, K, optimize=True)  # residual + Z as queries
    dZkv_k, dqT = block_apply_backward(dK, k_cache)
    dZkv_v, dp = block_apply_backward(dV, v_cache)
    dZ[:, :M] += dZkv_k + dZkv_v
    return dZ, dp, np.swapaxes(dqT, 1, 2)


# ----------------------------------------------------------------------------------------------
# sparse block attention: only the T x M x M products the nonzero block scalars need (inference)
#
# A block layer on the wide groups w_v (T, M) of the tokens (rows: the M equation tokens, then the query) and the
# b coordinates s (T,), per head, with u the key side and v the query side of a block of Q:
#
#     S_h   = sum_{u,v} q_uv w_v w_u^T  +  the b terms (rank one)          (T, M) scores, keys the first M rows
#     dw_u  = sum_h S_h (sum_v p_uv w_v + p_ub s 1^T)                      (T, M) update of wide group u
#     ds    = sum_h S_h (sum_v p_bv w_v 1 + p_bb s)                        (T,)   update of b
#
# Each w_v w_u^T and S_h w_v is a T x M x M product; everything else is O(M^2) per scalar. A zero scalar needs
# no product, a group the encoding holds (h^k = the identity, until a layer writes it) needs none either
# (w u_j = column j of w), and w_v w_u^T is the transpose of w_u w_v^T on the equation rows. The plan
# (:func:`sparse_plan`) picks the association with the fewest products from the zero pattern alone, so both
# twins run the same products; the layer equals :func:`block_attention_forward` to rounding (tests/test_sparse.py).


class SparsePlan(NamedTuple):
    """What a sparse block layer computes, read from the zero pattern of its scalars (:func:`sparse_plan`)."""

    p_nonzero: tuple  # (H, G, G) bools: p_h[u, v] != 0
    q_nonzero: tuple  # (H, G, G) bools: q_h[u, v] != 0
    identity: tuple  # (W,) bools: wide group v of the input tokens is still the encoding's identity block
    scores: str  # "query": S_h = sum_v w_v K_v^T; "key": sum_u R_u w_u^T; "pairs": Gram products shared by the heads
    update: tuple  # (H,) per head "columns" (S_h w_v, then combined) or "rows" (S_h V_u per written group u)
    written: tuple  # (W,) bools: wide group u receives an update (identity after the layer: identity and not written)
    products: int  # T x M x M products of the full layer (the last layer, query row only, needs none)


def _nested(a) -> tuple:
    """A bool array as nested tuples (hashable: a compiled TensorFlow layer is keyed by its plan)."""
    return tuple(_nested(x) for x in a) if np.ndim(a) else bool(a)


def _wide_blocks(nonzero: np.ndarray) -> np.ndarray:
    """(H, W, W): the wide-wide blocks of a (H, G, G) array, groups ``[a, h^1..h^K]``."""
    wi = _wide(nonzero.shape[-1])
    return nonzero[:, wi][:, :, wi]


def _score_costs(qw: np.ndarray, ident: np.ndarray) -> dict:
    """Products of the three ways to form the scores, from the (H, W, W) pattern of ``q`` (u key, v query side)."""
    query = int(np.sum(qw.any(axis=1) & ~ident))  # per head, w_v K_v^T for each v not the identity
    key = int(np.sum(qw.any(axis=2) & ~ident))  # per head, R_u w_u^T for each u not the identity
    used = qw.any(axis=0) | qw.any(axis=0).T  # (W, W): the pair {u, v} appears in some head
    real = used & ~ident[:, None] & ~ident[None, :]
    pairs = int(np.sum(np.triu(real)))  # one Gram product per pair, shared by the heads
    return {"query": query, "key": key, "pairs": pairs}


def sparse_plan(p, q, identity) -> SparsePlan:
    """The products of one sparse block layer with scalars ``p``, ``q`` (H, G, G) on tokens whose wide groups
    ``identity`` (W,) are still the encoding's identity blocks. Scores: the cheapest of the three associations
    (ties: query, key, pairs); update, per head: ``S_h w_v`` for each read group ``v`` not the identity
    ("columns"), or ``S_h V_u`` for each written group ``u`` ("rows"), whichever is fewer."""
    pn, qn = np.asarray(p) != 0, np.asarray(q) != 0  # (H, G, G)
    pw, qw = _wide_blocks(pn), _wide_blocks(qn)  # (H, W, W)
    ident = np.asarray(identity, dtype=bool)  # (W,)
    costs = _score_costs(qw, ident)
    scores = min(("query", "key", "pairs"), key=lambda k: costs[k])  # min keeps the first on ties
    columns = np.sum(pw.any(axis=1) & ~ident, axis=1)  # (H,) groups each head reads
    rows = np.sum(pw.any(axis=2), axis=1)  # (H,) wide groups each head writes from wide groups
    update = tuple("columns" if c <= r else "rows" for c, r in zip(columns, rows, strict=True))
    written = pn[:, _wide(pn.shape[-1])].any(axis=(0, 2))  # (W,)
    products = costs[scores] + int(np.minimum(columns, rows).sum())
    return SparsePlan(_nested(pn), _nested(qn), _nested(ident), scores, update, _nested(written), products)


def _times_keys(x, y, x_ident: bool, y_ident: bool):
    """``G[i, j] = <x[i], y[j]>`` for rows ``x`` (B, R, M) (R = T: every token, R = 1: the query) and keys ``y``
    (B, M, M), with no product where a side is the encoding's identity block: its key rows are ``u_j``, so
    ``<x[i], u_j> = x[i, j]``; its token rows are ``u_i`` then the mask, so the rows are ``y^T`` then the group sums
    ``1^T y[j]`` (coordinates of padded unknowns are zero in every token)."""
    if y_ident:
        return x  # (B, R, M)
    if x_ident:
        return np.concatenate([np.swapaxes(y, 1, 2), y.sum(axis=2)[:, None, :]], axis=1)[:, -x.shape[1]:]
    return x @ np.swapaxes(y, 1, 2)  # (B, R, M): a product when R = T (matmul: about twice einsum's speed here)


def _combine(coefs, groups, idx):
    """``sum_k coefs[k] groups[..., k, :]`` over the indices ``idx`` only (the nonzero scalars): (..., M)."""
    return sum(coefs[k] * groups[..., k, :] for k in idx)


def _gram(x, keys, plan, v, u):
    """``<w_v[i], w_u[j]>`` (B, R, M) for the rows ``x`` (B, R, W, M) and the keys (B, M, W, M)."""
    return _times_keys(x[:, :, v], keys[:, :, u], plan.identity[v], plan.identity[u])


def _wide_scores(x, keys, qw, plan):
    """``sum_{u,v} q_uv <w_v[i], w_u[j]>`` per head: (B, H, R, M), by the plan's association."""
    H, W = qw.shape[:2]
    S = np.zeros((x.shape[0], H, x.shape[1], keys.shape[1]))  # (B, H, R, M)
    nz = np.asarray(plan.q_nonzero)[:, _wide(W + 1)][:, :, _wide(W + 1)]  # (H, W, W)
    for h in range(H):
        if plan.scores == "query":  # S_h = sum_v w_v K_v^T, K_v = sum_u q_uv w_u
            for v in np.flatnonzero(nz[h].any(axis=0)):
                K = _combine(qw[h, :, v], keys, np.flatnonzero(nz[h, :, v]))  # (B, M, M)
                S[:, h] += _times_keys(x[:, :, v], K, plan.identity[v], False)
        elif plan.scores == "key":  # S_h = sum_u R_u w_u^T, R_u = sum_v q_uv w_v
            for u in np.flatnonzero(nz[h].any(axis=1)):
                R = _combine(qw[h, u], x, np.flatnonzero(nz[h, u]))  # (B, R, M)
                S[:, h] += _times_keys(R, keys[:, :, u], False, plan.identity[u])
    if plan.scores == "pairs":  # one Gram product per pair {u, v}, shared by the heads
        used = nz.any(axis=0) | nz.any(axis=0).T
        for u, v in zip(*np.nonzero(np.triu(used)), strict=True):
            G_vu = _gram(x, keys, plan, v, u)  # (B, R, M): <w_v[i], w_u[j]>
            if u == v:
                S += qw[None, :, u, v, None, None] * G_vu[:, None]
                continue
            G_uv = _gram(x[:, -1:], keys, plan, u, v)  # the query row of <w_u[i], w_v[j]>
            if x.shape[1] > 1:  # the equation rows: the transpose of the other orientation's
                G_uv = np.concatenate([np.swapaxes(G_vu[:, :-1], 1, 2), G_uv], axis=1)
            S += qw[None, :, u, v, None, None] * G_vu[:, None] + qw[None, :, v, u, None, None] * G_uv[:, None]
    return S


def _scores(x, s_x, keys, s_k, q, plan):
    """Scores ``e_j^T Q_h e_i`` (B, H, R, M) of the rows ``x`` (B, R, W, M), ``s_x`` (B, R) against the keys
    (B, M, W, M), ``s_k`` (B, M): the wide blocks (:func:`_wide_scores`) and the rank-one terms of the b row and
    column, ``q_ub (1^T w_u[j]) s_i + q_bv s_j (1^T w_v[i]) + q_bb s_i s_j``."""
    wi = _wide(q.shape[-1])
    S = _wide_scores(x, keys, q[:, wi][:, :, wi], plan)  # (B, H, R, M)
    nz = np.asarray(plan.q_nonzero)
    if not (nz[:, 1].any() or nz[:, :, 1].any()):  # q reads no b coordinate
        return S
    k_b = np.einsum("hu,bju->bhj", q[:, wi, 1], keys.sum(axis=3))  # (B, H, M)
    x_b = np.einsum("hv,biv->bhi", q[:, 1, wi], x.sum(axis=3))  # (B, H, R)
    S += s_x[:, None, :, None] * k_b[:, :, None, :] + x_b[..., None] * s_k[:, None, None, :]
    return S + q[None, :, 1, 1, None, None] * s_x[:, None, :, None] * s_k[:, None, None, :]


def _update(S, keys, s_k, p, plan):
    """``sum_h S_h V_h`` (B, R, W, M) for the wide groups and (B, R) for b, per head by the plan's association."""
    B, H, R, M = S.shape
    wi = _wide(p.shape[-1])
    W = len(wi)
    pw, pb = p[:, wi][:, :, wi], p[:, wi, 1]  # (H, W, W), (H, W)
    nz = np.asarray(plan.p_nonzero)[:, wi]  # (H, W, G): rows of the wide groups
    dw = np.zeros((B, R, W, M))
    for h in range(H):
        if plan.update[h] == "columns":  # S_h w_v for each read group v, then combined: sum_v p_uv S_h w_v
            for v in np.flatnonzero(nz[h][:, wi].any(axis=0)):
                Y = _times_keys(S[:, h], np.swapaxes(keys[:, :, v], 1, 2), False, plan.identity[v])  # S_h w_v
                for u in np.flatnonzero(nz[h][:, wi][:, v]):
                    dw[:, :, u] += pw[h, u, v] * Y
        else:  # S_h V_u for each written group u, V_u = sum_v p_uv w_v
            for u in np.flatnonzero(nz[h][:, wi].any(axis=1)):
                V = _combine(pw[h, u], keys, np.flatnonzero(nz[h][u, wi]))  # (B, M, M)
                dw[:, :, u] += S[:, h] @ V  # (B, R, M)
    if nz[:, :, 1].any():  # p_ub (S_h s) 1^T
        dw += np.einsum("hu,bhi->biu", pb, np.einsum("bhij,bj->bhi", S, s_k))[..., None]
    if not np.asarray(plan.p_nonzero)[:, 1].any():  # nothing writes b
        return dw, np.zeros((B, R))
    vb = np.einsum("hv,bjv->bhj", p[:, 1, wi], keys.sum(axis=3)) + p[None, :, 1, 1, None] * s_k[:, None]  # (B, H, M)
    return dw, np.einsum("bhij,bhj->bi", S, vb)


def encode_groups_forward(A, b, x0, mask, cfg):
    """The block encoding (:func:`encode_forward`) as the sparse layers hold it: the wide groups ``w``
    (B, T, W, M), ``[a, h^1..h^K]`` of every token (equations, then the query), and the b coordinates ``s`` (B, T)."""
    Z, _ = encode_forward(A, b, x0, mask, cfg)  # (B, T, D)
    return _groups(Z, cfg.n_groups)


def sparse_block_attention_forward(w, s, p, q, scale, mask, plan):
    """:func:`block_attention_forward` on the groups (:func:`encode_groups_forward`), computing only the products
    of ``plan`` (:func:`sparse_plan` of ``p``, ``q`` and the identity groups of ``w``): returns ``(w, s)`` after the
    layer. Inference only (no backward: training runs :func:`block_attention_forward`)."""
    M = w.shape[1] - 1
    S = _scores(w, s, w[:, :M], s[:, :M], q, plan)  # (B, H, T, M)
    dw, ds = _update(S, w[:, :M], s[:, :M], p, plan)  # (B, T, W, M), (B, T)
    gate = scale[:, None, None] * mask.astype(np.float64)[:, None, :]  # (B, 1, M)
    w = w.copy()
    for u in np.flatnonzero(plan.written):  # the other groups receive exactly zero
        w[:, :, u] += gate * dw[:, :, u]
    return w, s + scale[:, None] * ds


def sparse_block_readout_forward(w, s, p, q, scale, mask, plan):
    """The last layer and the read-out: the query's x-slot after :func:`sparse_block_attention_forward`, (B, M).
    Only the query row is computed: no T x M x M product."""
    M = w.shape[1] - 1
    S = _scores(w[:, M:], s[:, M:], w[:, :M], s[:, :M], q, plan)  # (B, H, 1, M)
    dw, _ = _update(S, w[:, :M], s[:, :M], p, plan)  # (B, 1, W, M)
    return w[:, M, 0] + scale[:, None] * mask.astype(np.float64) * dw[:, 0, 0]  # (B, M)


def sparse_block_operator_forward(w, s, p, q, scale, mask, plan):
    """The last layer as a matrix of ``b``: ``F`` (B, M, M) with ``F b`` the odd part in ``b`` of the query's
    x-slot after the layer, for tokens whose b coordinates are 0 (the equations) and 1 (the query) and which no
    earlier layer read or wrote (docs/concepts.md, section 10). With ``b`` in the equation tokens, the score of key
    ``j`` is ``sigma_j + tau b_j`` and its value's x-slot ``V_a[j] + p_ab b_j 1``, so the query's update is
    quadratic in ``b`` with linear part

        F[m, j] = c mask_m sum_h (p_ab sigma_j + tau V_a[j, m]),   V_a = sum_v p_av w_v,
        tau = sum_v q_bv 1^T w_v[query] + q_bb

    (``sigma`` the query's scores at ``b = 0``). No T x M x M product."""
    M = w.shape[1] - 1
    wi = _wide(p.shape[-1])
    keys = w[:, :M]  # (B, M, W, M)
    sigma = _scores(w[:, M:], s[:, M:], keys, s[:, :M], q, plan)[:, :, 0]  # (B, H, M)
    tau = np.einsum("hv,bv->bh", q[:, 1, wi], w[:, M].sum(axis=2)) + q[None, :, 1, 1] * s[:, M:]  # (B, H)
    Va = np.einsum("hv,bjvm->bhjm", p[:, 0, wi], keys)  # (B, H, M, M): x-slots of the values at b = 0
    F = np.einsum("h,bhj->bj", p[:, 0, 1], sigma)[:, None, :] + np.einsum("bh,bhjm->bmj", tau, Va)  # (B, M, M)
    return scale[:, None, None] * mask.astype(np.float64)[:, :, None] * F



# ----------------------------------------------------------------------------------------------
# read-out and loss


def readout_forward(Z):
    """The prediction is the x-slot (first M coordinates) of the query token: (B, M)."""
    M = Z.shape[1] - 1
    return Z[:, M, :M].copy(), ReadoutCache(Z.shape)


def readout_backward(dx, cache):
    """Backward of :func:`readout_forward`: the forward copied the query's x-slot, so ``dZ`` is ``dx`` there
    and zero everywhere else (no other coordinate of the last tokens reaches the prediction)."""
    dZ = np.zeros(cache.shape)  # (B, T, D)
    M = cache.shape[1] - 1  # the query is the last of the T = M + 1 rows
    dZ[:, M, :M] = dx
    return dZ


LOSSES = ("mse", "relative")
"""The losses (docs/conventions.md, "Output and loss"), named the same in both twins, the training config and
the command line: ``"mse"`` divides each system's squared error by ``N_s``, ``"relative"`` by ``||x_s||^2``."""


def check_loss(loss) -> str:
    """``loss`` if it is one of :data:`LOSSES`, else a ``ValueError`` naming them."""
    if not (isinstance(loss, str) and loss in LOSSES):
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return loss


def mse_forward(x_hat, x, mask, loss: str = "mse"):
    """``L = mean_s ||x_hat_s - x_s||^2 / d_s`` over real coordinates, ``d_s = N_s`` (``loss="mse"``: every
    system weighs the same) or ``d_s = ||x_s||^2`` (``loss="relative"``, the mean squared relative error: systems
    whose solution is large, e.g. ``b ~ N(0, I)`` with a large ``kappa``, do not dominate the loss)."""
    maskf = mask.astype(np.float64)  # (B, M)
    relative = check_loss(loss) == "relative"
    d = (x * x * maskf).sum(axis=1) if relative else maskf.sum(axis=1)  # (B,)
    r = (x_hat - x) * maskf  # (B, M)
    loss_value = float(np.mean((r**2).sum(axis=1) / d))
    return loss_value, MseCache(r, d)


def mse_backward(cache):
    """Seed of the backward pass: ``dL/dx_hat = 2 r / (B d_s)`` (zero on padded coordinates).

    The forward was ``L = (1/B) sum_s (1/d_s) sum_m r_sm^2`` with ``r = (x_hat - x) * mask`` and ``d_s``
    independent of the parameters; the derivative of ``r_sm^2`` is ``2 r_sm``, weighted like its term.
    Padded coordinates have ``r = 0``, hence no gradient.
    """
    r, d = cache
    return 2.0 * r / (d[:, None] * r.shape[0])  # (B, M)
