"""Every op pair of reference/layers.py: finite-difference gradient checks, plus the token layout
and the block expansion against an explicit, loop-built construction.

Dimensions are small and pairwise distinct so that a wrong transpose or axis fails loudly:
B=5 systems, M=7 padded size, H=2 heads, K=3 identity copies (G=5 groups, D=29), full: n=5, E=4.
Relative error of a gradient: max|num - ana| / max|num| (``helpers.rel_error``), required <= 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_grad, check_tensor, fd_vjp

from reference import ModelConfig, sample_systems
from reference.layers import (
    attention_backward,
    attention_forward,
    block_apply_forward,
    block_attention_backward,
    block_attention_forward,
    block_expand_backward,
    block_expand_forward,
    block_layout,
    coordinate_mask,
    encode_backward,
    encode_forward,
    mse_backward,
    mse_forward,
    readout_backward,
    readout_forward,
)

B, M, H, K = 5, 7, 2, 3
G = K + 2
D = M + 1 + K * M  # 29
T = M + 1
N_FULL, E = 5, 4
TOL = 1e-6


def explicit_block_matrix(p, m, widths=None):
    """(G, G) scalars -> (D, D) matrix built block by block: scalar * I_m, 1_m, 1_m^T or 1."""
    g = p.shape[0]
    widths = widths or [m, 1] + [m] * (g - 2)
    offs = np.concatenate([[0], np.cumsum(widths)])
    out = np.zeros((offs[-1], offs[-1]))
    for u in range(g):
        for v in range(g):
            wu, wv = widths[u], widths[v]
            if wu == wv == m and m != 1:
                blk = p[u, v] * np.eye(m)
            else:
                blk = p[u, v] * np.ones((wu, wv))
            out[offs[u]:offs[u + 1], offs[v]:offs[v + 1]] = blk
    return out


# ----------------------------------------------------------------------------------------------
# block expansion


def test_block_layout_shapes_and_pattern():
    S, C = block_layout(G, M)
    assert S.shape == (D, G) and C.shape == (D, D)
    check_tensor("S.sum(0)", S.sum(axis=0), [M, 1] + [M] * K)
    check_tensor("C", C, explicit_block_matrix(np.ones((G, G)), M))
    assert not S.flags.writeable and not C.flags.writeable


def test_block_expand_forward_matches_explicit_blocks():
    rng = np.random.default_rng(0)
    p = 0.3 * rng.standard_normal((H, G, G))
    P, _ = block_expand_forward(p, M)
    assert P.shape == (H, D, D)
    for h in range(H):
        check_tensor(f"P[{h}]", P[h], explicit_block_matrix(p[h], M), rtol=0, atol=0)


def test_block_expand_gradient():
    rng = np.random.default_rng(1)
    p = 0.3 * rng.standard_normal((H, G, G))
    dout = rng.standard_normal((H, D, D))
    _, cache = block_expand_forward(p, M)
    ana = block_expand_backward(dout, cache)
    (num,) = fd_vjp(lambda q: block_expand_forward(q, M)[0], [p], dout)
    check_grad("block_expand dp", ana, num, TOL)


# ----------------------------------------------------------------------------------------------
# encoding


def test_encode_block_layout():
    A, b, _, mask = sample_systems(B, (3, M), seed=2)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((B, M)) * mask
    cfg = ModelConfig(parametrization="block", n_identity=K)
    Z, cache = encode_forward(A, b, x0, mask, cfg)
    assert Z.shape == (B, T, D)
    n_s = mask.sum(axis=1)
    for s in range(B):
        n = n_s[s]
        for i in range(M):
            u = np.zeros(M)
            if i < n:
                u[i] = 1.0
            want = np.concatenate([A[s, i], [b[s, i]]] + [u] * K)
            if i >= n:
                want[:] = 0.0  # padded equations are zero rows
            check_tensor(f"Z[{s},{i}]", Z[s, i], want, rtol=0, atol=0)
        want_q = np.concatenate([x0[s], [1.0]] + [mask[s].astype(float)] * K)
        check_tensor(f"query[{s}]", Z[s, M], want_q, rtol=0, atol=0)
    assert encode_backward(np.ones_like(Z), cache) is None


def test_encode_full_layout_and_embedding_gradient():
    A, b, _, mask = sample_systems(B, N_FULL, seed=4)
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((B, N_FULL))
    emb = rng.standard_normal((N_FULL, E))
    cfg = ModelConfig(parametrization="full", n=N_FULL, embed_dim=E)
    Z, cache = encode_forward(A, b, x0, mask, cfg, emb)
    d = N_FULL + 1 + E
    assert Z.shape == (B, N_FULL + 1, d)
    check_tensor("Z[:, :n, :n]", Z[:, :N_FULL, :N_FULL], A, rtol=0)
    check_tensor("Z[:, :n, n]", Z[:, :N_FULL, N_FULL], b, rtol=0)
    check_tensor("Z[:, :n, n+1:]", Z[:, :N_FULL, N_FULL + 1:], np.broadcast_to(emb, (B, N_FULL, E)), rtol=0)
    check_tensor("query", Z[:, N_FULL], np.concatenate([x0, np.ones((B, 1 + E))], axis=1), rtol=0)

    dout = rng.standard_normal(Z.shape)
    ana = encode_backward(dout, cache)
    (num,) = fd_vjp(lambda e: encode_forward(A, b, x0, mask, cfg, e)[0], [emb], dout)
    check_grad("encode d_embedding", ana, num, TOL)


def test_coordinate_mask():
    mask = np.arange(M)[None, :] < np.array([3, 7, 5, 4, 6])[:, None]
    cm = coordinate_mask(mask, G)
    assert cm.shape == (B, D)
    for s in range(B):
        m = mask[s].astype(float)
        check_tensor(f"colmask[{s}]", cm[s], np.concatenate([m, [1.0]] + [m] * K), rtol=0)


# ----------------------------------------------------------------------------------------------
# attention


def attention_inputs(seed):
    """Arbitrary (not token-structured) inputs: random Z, P, Q, per-system scale != 1, colmask with zeros."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((B, T, D))
    P = 0.25 * rng.standard_normal((H, D, D))
    Q = 0.25 * rng.standard_normal((H, D, D))
    scale = rng.uniform(0.2, 0.9, size=B)
    colmask = (rng.uniform(size=(B, D)) < 0.7).astype(np.float64)
    colmask[:, 0] = 0.0
    colmask[:, 1] = 1.0
    return Z, P, Q, scale, colmask


def test_attention_forward_matches_token_formula():
    """out_i = e_i + c * colmask * sum_h sum_{j<M} (e_j^T Q_h e_i) P_h e_j, token by token."""
    Z, P, Q, scale, colmask = attention_inputs(10)
    out, _ = attention_forward(Z, P, Q, scale, colmask)
    want = np.empty_like(Z)
    for s in range(B):
        for i in range(T):
            delta = np.zeros(D)
            for h in range(H):
                for j in range(M):
                    delta += (Z[s, j] @ Q[h] @ Z[s, i]) * (P[h] @ Z[s, j])
            want[s, i] = Z[s, i] + scale[s] * colmask[s] * delta
    check_tensor("attention out", out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [11, 12])
def test_attention_gradients(seed):
    Z, P, Q, scale, colmask = attention_inputs(seed)
    rng = np.random.default_rng(seed + 100)
    dout = rng.standard_normal((B, T, D))
    _, cache = attention_forward(Z, P, Q, scale, colmask)
    dZ, dP, dQ = attention_backward(dout, cache)
    num_Z, num_P, num_Q = fd_vjp(lambda z, p, q: attention_forward(z, p, q, scale, colmask)[0], [Z, P, Q], dout)
    check_grad("attention dZ", dZ, num_Z, TOL)
    check_grad("attention dP", dP, num_P, TOL)
    check_grad("attention dQ", dQ, num_Q, TOL)


def test_attention_backward_does_not_modify_dout():
    Z, P, Q, scale, colmask = attention_inputs(13)
    dout = np.random.default_rng(14).standard_normal((B, T, D))
    keep = dout.copy()
    _, cache = attention_forward(Z, P, Q, scale, colmask)
    attention_backward(dout, cache)
    check_tensor("dout after backward", dout, keep, rtol=0)


def test_attention_equation_permutation():
    """Shuffling the equation rows of Z (h parts included) permutes the equation outputs and
    leaves the query row unchanged: keys/values form a set, not a sequence."""
    Z, P, Q, scale, colmask = attention_inputs(15)
    perm = np.random.default_rng(16).permutation(M)
    Zp = Z.copy()
    Zp[:, :M] = Z[:, perm]
    out, _ = attention_forward(Z, P, Q, scale, colmask)
    outp, _ = attention_forward(Zp, P, Q, scale, colmask)
    check_tensor("query row", outp[:, M], out[:, M], rtol=1e-12, atol=1e-12)
    check_tensor("equation rows", outp[:, :M], out[:, perm], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# read-out and loss


def test_readout_gradient():
    rng = np.random.default_rng(20)
    Z = rng.standard_normal((B, T, D))
    x_hat, cache = readout_forward(Z)
    check_tensor("readout", x_hat, Z[:, M, :M], rtol=0)
    x_hat[:] = 0.0  # must be a copy
    assert np.all(Z[:, M, :M] != 0)
    dout = rng.standard_normal((B, M))
    ana = readout_backward(dout, cache)
    (num,) = fd_vjp(lambda z: readout_forward(z)[0], [Z], dout)
    check_grad("readout dZ", ana, num, TOL)


def test_mse_value_and_gradient():
    rng = np.random.default_rng(21)
    mask = np.arange(M)[None, :] < np.array([3, 7, 5, 4, 6])[:, None]
    x = rng.standard_normal((B, M)) * mask
    x_hat = rng.standard_normal((B, M))  # garbage on padded coordinates must be ignored
    loss, cache = mse_forward(x_hat, x, mask)
    want = np.mean([np.sum((x_hat[s, :n] - x[s, :n]) ** 2) / n for s, n in enumerate(mask.sum(axis=1))])
    check_tensor("mse", loss, want, rtol=1e-14)
    ana = mse_backward(cache)
    (num,) = fd_vjp(lambda xh: mse_forward(xh, x, mask)[0], [x_hat], 1.0)
    check_grad("mse dx_hat", ana, num, TOL)
    check_tensor("mse grad on padding", ana[~mask], np.zeros(int((~mask).sum())), rtol=0)


# ----------------------------------------------------------------------------------------------
# structured block attention: from the (G, G) scalars, no D x D matrix


def block_attention_inputs(seed):
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(n_identity=K)
    A, b, _, mask = sample_systems(B, (2, M), seed=seed)
    Z, _ = encode_forward(A, b, 0.4 * rng.standard_normal(b.shape) * mask, mask, cfg)  # (B, T, D), padded
    Z[:, :M] += 0.1 * rng.standard_normal((B, M, D)) * coordinate_mask(mask, G)[:, None] * mask[:, :, None]
    p, q = 0.3 * rng.standard_normal((2, H, G, G))
    return Z, p, q, 1.0 / mask.sum(axis=1), coordinate_mask(mask, G)


def test_block_apply_is_the_expanded_matrix():
    Z, p, _, _, _ = block_attention_inputs(21)
    out, _ = block_apply_forward(p, Z)  # (B, T, H, D)
    want = np.einsum("hed,btd->bthe", np.stack([explicit_block_matrix(p[h], M) for h in range(H)]), Z)
    check_tensor("P_h e, structured vs explicit blocks", out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [22, 23])
def test_block_attention_forward_backward(seed):
    """Equal to the dense pair on the expanded matrices, and its hand-written backward equals finite differences."""
    Z, p, q, scale, colmask = block_attention_inputs(seed)
    out, cache = block_attention_forward(Z, p, q, scale, colmask)
    P, cp = block_expand_forward(p, M)
    Q, cq = block_expand_forward(q, M)
    dense, dcache = attention_forward(Z, P, Q, scale, colmask)
    check_tensor("structured vs dense layer", out, dense, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(seed + 100).standard_normal((B, T, D))
    dZ, dp, dq = block_attention_backward(dout, cache)
    dZ_d, dP, dQ = attention_backward(dout, dcache)
    check_tensor("dZ structured vs dense", dZ, dZ_d, rtol=1e-10, atol=1e-12)
    check_tensor("dp structured vs dense", dp, block_expand_backward(dP, cp), rtol=1e-10, atol=1e-12)
    check_tensor("dq structured vs dense", dq, block_expand_backward(dQ, cq), rtol=1e-10, atol=1e-12)
    num_Z, num_p, num_q = fd_vjp(lambda z, a, c: block_attention_forward(z, a, c, scale, colmask)[0], [Z, p, q], dout)
    check_grad("structured dZ", dZ, num_Z, TOL)
    check_grad("structured dp", dp, num_p, TOL)
    check_grad("structured dq", dq, num_q, TOL)
