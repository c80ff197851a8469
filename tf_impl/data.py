"""On-device sampling of random SPD systems with an exact condition number, in TensorFlow ops.

Same distribution as :func:`reference.data.sample_systems` (``docs/concepts.md`` section 1, ``docs/conventions.md``),
different random stream. For a batch padded to ``M = n_max``:

    N_s ~ uniform{n_min..n_max}                    one size per system, mask m_s = [i < N_s]
    G   = g * (m m^T) + diag(1 - m),  g ~ N(0, 1)  block-diagonal [G_N, 0; 0, I]
    U   = Q of G = Q R with diag(R) > 0            Haar on the N x N block, identity on padding
    lam_i ~ U[1/kappa, 1],  lam_0 = 1/kappa,  lam_{N-1} = 1,  lam = 0 on padding
    A = U diag(lam) U^T,  A <- (A + A^T)/2 * (m m^T)
    x ~ N(0, I) * m,  b = A x

The other system families (``kappa`` log-uniform per system, log-uniform / clustered / mixed
spectra, ``b ~ N(0, I)``, ``normalize_rhs``) follow :func:`reference.data.sample_systems`; their
extra random draws come from a stream folded off the seed, so the paper's law keeps its stream.

One batched QR handles every size at once: the QR of a block-diagonal matrix is block-diagonal,
so the real block is the QR of a Gaussian ``G_N`` (Haar after the sign fix) and ``cond(A) = kappa``
exactly on it, while padded rows and columns are exactly zero.

The QR is computed by Gram-Schmidt with one re-orthogonalisation pass (CGS2, orthogonal to working
precision), as a ``tf.while_loop`` over the M columns: it yields exactly ``Q diag(sign(diag R))``
(Gram-Schmidt's R has a positive diagonal), i.e. the sign-fixed QR of the reference, and XLA compiles
it in a fraction of the time of ``tf.linalg.qr`` (which it also runs slower on CPU). On padded
columns ``G`` is the identity, so Gram-Schmidt returns them unchanged.

Randomness is stateless: everything is a function of a seed pair ``(seed, stream)`` (the trainer
uses ``(seed, step)``), so runs are reproducible and resumable. Only full-range Philox integers
are drawn (bitwise identical with and without XLA); uniforms are made from their top bits and
normals by Box-Muller, so eager, graph and XLA runs see the same systems up to rounding of
``log``/``cos``.

Glossary of dimensions: B systems, M padded size n_max, N size of one system.
"""

from __future__ import annotations

import math

import numpy as np

from reference.data import CLUSTER_WIDTH, EIGENVALUE_LAWS, check_law, parse_sizes
from tf_impl._quiet import tf
from tf_impl.model import as_float_dtype

_ALG = "philox"


def _uniform(shape, seed, dtype) -> tf.Tensor:
    """Uniform on ``[0, 1)`` from the top 24 (float32) or 53 (float64) bits of Philox integers."""
    if dtype == tf.float64:
        bits = tf.random.stateless_uniform(shape, seed, dtype=tf.uint64, minval=None, maxval=None, alg=_ALG)
        return tf.cast(tf.bitwise.right_shift(bits, tf.constant(11, tf.uint64)), tf.float64) * (2.0**-53)
    bits = tf.random.stateless_uniform(shape, seed, dtype=tf.uint32, minval=None, maxval=None, alg=_ALG)
    return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * (2.0**-24)


def _normal(shape, seed, dtype) -> tf.Tensor:
    """Standard normal by Box-Muller: ``sqrt(-2 log(1 - u1)) cos(2 pi u2)``."""
    seeds = tf.random.experimental.stateless_split(seed, 2, alg=_ALG)
    u1 = _uniform(shape, seeds[0], dtype)
    u2 = _uniform(shape, seeds[1], dtype)
    return tf.sqrt(-2.0 * tf.math.log(1.0 - u1)) * tf.cos((2.0 * math.pi) * u2)


def haar_q(G: tf.Tensor) -> tf.Tensor:
    """``Q`` of ``G = Q R`` with ``diag(R) > 0`` for a batch (B, M, M) of full-rank ``G``: CGS2 Gram-Schmidt.

    Column ``j``: ``v = g_j``, twice ``v <- v - Q (Q^T v)`` (columns ``>= j`` of ``Q`` are still zero),
    then ``q_j = v / ||v||``.
    """
    M = int(G.shape[-1])
    eye = tf.eye(M, dtype=G.dtype)  # (M, M)

    def body(j, Q):
        v = tf.gather(G, j, axis=2)  # (B, M): column j
        for _ in range(2):  # classical Gram-Schmidt, then once more for orthogonality to rounding
            v = v - tf.linalg.matvec(Q, tf.linalg.matvec(Q, v, transpose_a=True))  # (B, M)
        v = v * tf.math.rsqrt(tf.reduce_sum(v * v, axis=1, keepdims=True))  # (B, M): unit norm
        return j + 1, Q + v[:, :, None] * tf.gather(eye, j)[None, None, :]  # write column j

    _, Q = tf.while_loop(lambda j, Q: j < M, body, (tf.constant(0), tf.zeros_like(G)), maximum_iterations=M)
    return Q  # (B, M, M)


def _sizes(batch: int, n_min: int, n_max: int, seed) -> tf.Tensor:
    """``N_s`` uniform on ``{n_min..n_max}`` (B,) int32: 53 random bits modulo the range."""
    bits = tf.random.stateless_uniform([batch], seed, dtype=tf.uint64, minval=None, maxval=None, alg=_ALG)
    r = tf.bitwise.right_shift(bits, tf.constant(11, tf.uint64))
    r = tf.cast(r, tf.int64) % (n_max - n_min + 1)
    return tf.cast(r, tf.int32) + n_min  # (B,)


def spectrum_from_uniforms(u, c, family, lo) -> tf.Tensor:
    """Eigenvalues from uniforms: :func:`reference.data.spectrum_from_uniforms` in TF ops.

    ``u``, ``c`` (B, M) uniforms, ``family`` (B,) int32, ``lo`` (B,) = 1/kappa."""
    lo = lo[:, None]  # (B, 1)
    uni = lo + (1.0 - lo) * u  # (B, M)
    log = tf.exp(u * tf.math.log(lo))  # (B, M): lo ** u
    w = CLUSTER_WIDTH
    clu = tf.where(c < 0.5, tf.minimum(lo * (1.0 + w * u), 1.0), 1.0 - w * (1.0 - lo) * u)  # (B, M)
    f = family[:, None]  # (B, 1)
    return tf.where(tf.equal(f, 0), uni, tf.where(tf.equal(f, 1), log, clu))


def sample_systems_tf(batch: int, sizes, kappa=10.0, seed=0, dtype=tf.float32, *,
                      spectrum: str = "uniform", rhs: str = "solution", normalize_rhs: bool = False):
    """Sample ``batch`` systems inside a TF graph: returns ``(A, b, x, maskf)`` tensors of ``dtype``:
    (B, M, M), (B, M), (B, M), (B, M) with ``maskf`` 1.0 on real coordinates.

    The arguments of :func:`sample_systems`: ``sizes`` ``n`` or ``(n_min, n_max)``; ``kappa`` a number or
    a pair ``(k_min, k_max)`` (log-uniform per system); ``seed`` an int64 tensor (2,) ``(seed, stream)``
    (stateless; an int or a pair of ints is taken as :func:`as_seed` takes it); ``spectrum``, ``rhs``,
    ``normalize_rhs`` the law options of :func:`reference.data.sample_systems` (same law, other stream).
    ``batch``, ``sizes``, ``kappa`` and the law options are static Python values (they fix the graph).
    """
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be an int >= 1 (the arguments are those of sample_systems: batch, sizes, "
                         f"kappa, seed), got {batch!r}")
    dtype = as_float_dtype(dtype)
    k_lo, k_hi = check_law(kappa, spectrum, rhs, normalize_rhs)
    n_min, n_max = parse_sizes(sizes)
    seed = tf.cast(seed, tf.int64) if tf.is_tensor(seed) else tf.constant(as_seed(seed), tf.int64)
    s = tf.random.experimental.stateless_split(seed, 4, alg=_ALG)
    B, M = batch, n_max
    n_s = _sizes(B, n_min, n_max, s[0])  # (B,)
    idx = tf.range(M)[None, :]  # (1, M)
    maskf = tf.cast(idx < n_s[:, None], dtype)  # (B, M)
    mask2 = maskf[:, :, None] * maskf[:, None, :]  # (B, M, M)
    G = _normal([B, M, M], s[1], dtype) * mask2 + tf.linalg.diag(1.0 - maskf)  # (B, M, M): [G_N, 0; 0, I]
    U = haar_q(G)  # (B, M, M): Haar on the real block
    u = _uniform([B, M], s[2], dtype)  # (B, M)
    if (k_lo, k_hi, spectrum, rhs) == (k_hi, k_hi, "uniform", "solution"):  # the paper's law: no extra draws
        lo = tf.fill([B], tf.constant(1.0 / k_lo, dtype))  # (B,)
        lam = lo[:, None] + (1.0 - lo[:, None]) * u  # (B, M)
        normal_rhs = tf.zeros([B], tf.bool)
    else:  # extra draws from a stream folded off the seed
        e = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(seed, 1, alg=_ALG), 4, alg=_ALG)
        log_k = math.log(k_lo) + (math.log(k_hi) - math.log(k_lo)) * _uniform([B], e[0], dtype)  # (B,)
        lo = tf.exp(-log_k)  # (B,): 1/kappa per system
        if spectrum == "mix":
            family = tf.minimum(tf.cast(3.0 * _uniform([B], e[1], dtype), tf.int32), 2)  # (B,) in {0, 1, 2}
        else:
            family = tf.fill([B], EIGENVALUE_LAWS.index(spectrum))
        lam = spectrum_from_uniforms(u, _uniform([B, M], e[2], dtype), family, lo)  # (B, M)
        if rhs == "mix":
            normal_rhs = _uniform([B], e[3], dtype) < 0.5
        else:
            normal_rhs = tf.fill([B], rhs == "normal")  # (B,)
    lam = tf.where(tf.equal(idx, 0), lo[:, None], lam)  # smallest pinned to 1/kappa
    lam = tf.where(tf.equal(idx, n_s[:, None] - 1), tf.ones_like(lam), lam)  # largest pinned to 1
    lam = lam * maskf  # (B, M): 0 on padding
    A = tf.matmul(U * lam[:, None, :], U, transpose_b=True)  # (B, M, M)
    A = 0.5 * (A + tf.transpose(A, [0, 2, 1])) * mask2  # exactly symmetric, exactly 0 on padding
    z = _normal([B, M], s[3], dtype) * maskf  # (B, M): x, or b for the "normal" law
    inv = tf.math.divide_no_nan(maskf, lam)  # (B, M): 1/lam, 0 on padding
    x_of_z = tf.linalg.matvec(U * inv[:, None, :], tf.linalg.matvec(U, z, transpose_a=True))  # (B, M): A^{-1} z
    x = tf.where(normal_rhs[:, None], x_of_z * maskf, z)  # (B, M)
    b = tf.where(normal_rhs[:, None], z, tf.linalg.matvec(A, x))  # (B, M)
    if normalize_rhs:
        scale = tf.sqrt(tf.reduce_sum(maskf, axis=1, keepdims=True)) / tf.norm(b, axis=1, keepdims=True)  # (B, 1)
        b, x = b * scale, x * scale
    return A, b, x, maskf


def as_seed(seed) -> tuple[int, int]:
    """A seed pair ``(seed, stream)`` from an int ``seed`` (stream 0) or a pair of ints."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        pair = (int(seed), 0)
    else:
        try:
            pair = tuple(int(s) for s in seed)
        except (TypeError, ValueError):
            pair = ()
        if len(pair) != 2:
            raise ValueError(f"seed must be an int or a pair of ints (seed, stream), got {seed!r}")
    if not all(-(2**63) <= s < 2**63 for s in pair):
        raise ValueError(f"seed values must fit in int64, got {seed!r}")
    return pair


_SAMPLERS: dict = {}


def sample_systems(batch: int, sizes, kappa=10.0, seed=0, *, spectrum: str = "uniform", rhs: str = "solution",
                   normalize_rhs: bool = False, dtype=tf.float64, jit_compile: bool = True):
    """Sample ``batch`` systems ``A x = b`` with the TF sampler; NumPy out, like the reference's.

    ``sizes`` is ``n`` or ``(n_min, n_max)``; ``kappa`` a number or ``(k_min, k_max)``; ``spectrum``,
    ``rhs``, ``normalize_rhs`` as in :func:`reference.data.sample_systems` (same law, other stream);
    ``seed`` an int or a pair ``(seed, stream)``: the trainer's batch of step ``t`` is
    ``sample_systems(batch_size, sizes, kappa, (seed, t), <law options>, dtype=<training dtype>)``.
    Returns ``(A, b, x, mask)``: ``(B, M, M)``, ``(B, M)``, ``(B, M)`` arrays of ``dtype`` and a
    boolean ``(B, M)`` mask.
    """
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    k_lo, k_hi = check_law(kappa, spectrum, rhs, normalize_rhs)
    lo, hi = parse_sizes(sizes)
    dtype = as_float_dtype(dtype)
    key = (int(batch), lo, hi, k_lo, k_hi, spectrum, rhs, bool(normalize_rhs), dtype, bool(jit_compile))
    fn = _SAMPLERS.get(key)
    if fn is None:
        def body(seed):
            return sample_systems_tf(int(batch), (lo, hi), (k_lo, k_hi), seed, dtype, spectrum=spectrum, rhs=rhs,
                                     normalize_rhs=bool(normalize_rhs))
        fn = _SAMPLERS[key] = tf.function(body, jit_compile=bool(jit_compile))
    A, b, x, maskf = fn(tf.constant(as_seed(seed), tf.int64))
    return A.numpy(), b.numpy(), x.numpy(), maskf.numpy() > 0.5
