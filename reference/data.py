"""Random SPD systems with an exact condition number (system families), and validation of user input.

Glossary of dimensions:
    B  systems in a batch
    M  padded size n_max (every system lives in the top-left N_s x N_s corner)
    N  size of one system
"""

from __future__ import annotations

import numpy as np

from reference.config import is_int, is_real


def parse_sizes(sizes) -> tuple[int, int]:
    """``sizes`` is an int ``n`` or a pair ``(n_min, n_max)``; returns ``(n_min, n_max)``."""
    if is_int(sizes):
        lo = hi = int(sizes)
    else:
        try:
            pair = tuple(sizes)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(is_int(v) for v in pair):
            raise ValueError(f"sizes must be an int n or a pair of ints (n_min, n_max), got {sizes!r}")
        lo, hi = int(pair[0]), int(pair[1])
    if not 2 <= lo <= hi:
        raise ValueError(f"sizes must satisfy 2 <= n_min <= n_max, got ({lo}, {hi})")
    return lo, hi


def haar_q(G: np.ndarray) -> np.ndarray:
    """``Q`` of ``G = Q R`` with ``diag(R) > 0`` for a batch (B, n, n) of full-rank ``G``: the QR factor's
    columns signed by ``diag(R)``. For a Gaussian ``G`` this ``Q`` is Haar-distributed; without the sign fix
    QR would return a biased (non-Haar) distribution.
    """
    q, r = np.linalg.qr(G)
    signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))  # (B, n)
    signs[signs == 0] = 1.0
    return q * signs[:, None, :]


def haar_orthogonal(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
    """Haar-random orthogonal ``(batch, n, n)``: :func:`haar_q` of a Gaussian drawn from ``rng``."""
    return haar_q(rng.standard_normal((batch, n, n)))  # G: (B, n, n)


EIGENVALUE_LAWS = ("uniform", "loguniform", "clustered", "mix")
"""Eigenvalue laws on ``[1/kappa, 1]`` (``docs/conventions.md``, "System families"); "mix": one of the
three others per system, with equal probability."""
RHS_LAWS = ("solution", "normal", "mix")
"""Right-hand-side laws: "solution": ``x ~ N(0, I)``, ``b = A x`` (the paper's); "normal": ``b ~ N(0, I)``,
``x = A^{-1} b``; "mix": one of the two per system, with equal probability."""
CLUSTER_WIDTH = 0.05  # relative width of each of the two clusters of the "clustered" spectrum


KAPPA_LIMIT = 1e15
"""The largest condition number a law may ask for: below ``1 / eps = 4.5e15`` of float64, beyond which the smallest
eigenvalue is lost in the rounding of the largest (and at ``1e308`` the solutions of ``b ~ N(0, I)`` overflow)."""


def parse_kappa(kappa) -> tuple[float, float]:
    """``kappa`` is a number ``k`` or a pair ``(k_min, k_max)`` (log-uniform per system), each in
    ``[1, KAPPA_LIMIT]``; returns the pair."""
    if is_real(kappa):
        if not (np.isfinite(kappa) and 1 <= kappa <= KAPPA_LIMIT):
            raise ValueError(f"kappa must be a number in [1, {KAPPA_LIMIT:g}] (or a pair (kappa_min, kappa_max)), got "
                             f"{kappa!r}")
        lo = hi = float(kappa)
    else:
        try:
            pair = tuple(kappa)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(is_real(v) for v in pair):
            raise ValueError(f"kappa must be a number >= 1 or a pair (kappa_min, kappa_max), got {kappa!r}")
        lo, hi = float(pair[0]), float(pair[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and 1 <= lo <= hi <= KAPPA_LIMIT):
        raise ValueError(f"kappa must satisfy 1 <= kappa_min <= kappa_max <= {KAPPA_LIMIT:g}, got {kappa!r}")
    return lo, hi


def check_law(kappa, spectrum: str, rhs: str, normalize_rhs: bool) -> tuple[float, float]:
    """Validate a system law (both samplers call this); returns ``parse_kappa(kappa)``."""
    if spectrum not in EIGENVALUE_LAWS:
        raise ValueError(f"spectrum must be one of {EIGENVALUE_LAWS}, got {spectrum!r}")
    if rhs not in RHS_LAWS:
        raise ValueError(f"rhs must be one of {RHS_LAWS}, got {rhs!r}")
    if not isinstance(normalize_rhs, (bool, np.bool_)):
        raise ValueError(f"normalize_rhs must be a bool, got {normalize_rhs!r}")
    return parse_kappa(kappa)


def spectrum_from_uniforms(u, c, family, lo):
    """Eigenvalues from uniforms, the one formula both samplers use (NumPy here; ``tf_impl.data`` has its twin).

    ``u`` (B, N) and ``c`` (B, N) uniforms on [0, 1); ``family`` (B,) 0 uniform, 1 log-uniform,
    2 clustered; ``lo = 1/kappa`` (B,). Before pinning (done by the caller):

        uniform      lam = lo + (1 - lo) u
        loguniform   lam = lo ** u                      (log lam uniform on [log lo, 0])
        clustered    lam = min(lo (1 + w u), 1)         if c < 1/2 (cluster at the bottom)
                     lam = 1 - w (1 - lo) u             otherwise  (cluster at the top),  w = CLUSTER_WIDTH
    """
    lo = lo[:, None]  # (B, 1)
    uni = lo + (1.0 - lo) * u  # (B, N)
    log = lo**u  # (B, N)
    clu = np.where(c < 0.5, np.minimum(lo * (1.0 + CLUSTER_WIDTH * u), 1.0), 1.0 - CLUSTER_WIDTH * (1.0 - lo) * u)
    f = family[:, None]  # (B, 1)
    return np.where(f == 0, uni, np.where(f == 1, log, clu))  # (B, N)


def spd_spectrum(rng: np.random.Generator, batch: int, n: int, kappa, spectrum="uniform") -> np.ndarray:
    """Eigenvalues ``(batch, n)`` on ``[1/kappa, 1]``, smallest pinned to ``1/kappa``, largest to 1.

    ``kappa``: a number or one per system (batch,); ``spectrum``: a name of :data:`EIGENVALUE_LAWS` other than
    "mix", or one family index per system (batch,) as in :func:`spectrum_from_uniforms`.
    """
    lo = 1.0 / np.broadcast_to(np.asarray(kappa, dtype=np.float64), (batch,))  # (B,)
    family = EIGENVALUE_LAWS.index(spectrum) if isinstance(spectrum, str) else spectrum
    family = np.broadcast_to(np.asarray(family), (batch,))  # (B,)
    u = rng.random((batch, n))  # (B, n)
    c = rng.random((batch, n)) if np.any(family == 2) else np.zeros((batch, n))  # cluster choice
    lam = spectrum_from_uniforms(u, c, family, lo)  # (B, n)
    lam[:, 0] = lo
    lam[:, -1] = 1.0
    return lam


def sample_systems(batch: int, sizes, kappa=10.0, seed=0, *, spectrum: str = "uniform", rhs: str = "solution",
                   normalize_rhs: bool = False):
    """Sample ``batch`` systems ``A x = b`` with ``A = U diag(lam) U^T``, ``U`` Haar-random.

    Every system draws its own ``N`` uniformly from ``sizes`` (an int, or ``(n_min, n_max)``), and
    is padded with zeros to ``n_max``. ``||A||_2 = 1`` and ``cond(A) = kappa`` exactly (up to
    rounding); ``kappa`` is a number, or a pair ``(k_min, k_max)``: one ``kappa`` per system,
    log-uniform. ``spectrum`` (:data:`EIGENVALUE_LAWS`) is the law of the other eigenvalues, ``rhs``
    (:data:`RHS_LAWS`) that of ``b``; ``normalize_rhs`` rescales ``b`` and ``x`` so that
    ``||b|| = sqrt(N)`` (rms 1: what :func:`reference.solve.solve` feeds a model). The defaults are
    the paper's law; the other options make their extra random draws only when they are used, so the
    paper's law keeps its random stream.

    Returns ``(A, b, x, mask)``: ``(B, M, M)``, ``(B, M)``, ``(B, M)`` float64 and a boolean
    ``(B, M)`` mask, True on the real coordinates of each system.
    """
    if not is_int(batch) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    k_lo, k_hi = check_law(kappa, spectrum, rhs, normalize_rhs)
    lo, hi = parse_sizes(sizes)
    rng = np.random.default_rng(seed)
    n_s = rng.integers(lo, hi + 1, size=batch)  # (B,)
    # extra draws only for the non-default options, so that the paper's law keeps its stream
    kap = np.full(batch, k_lo) if k_lo == k_hi else np.exp(rng.uniform(np.log(k_lo), np.log(k_hi), size=batch))
    family = (rng.integers(0, 3, size=batch) if spectrum == "mix" else np.full(batch, EIGENVALUE_LAWS.index(spectrum)))
    normal_rhs = (rng.random(batch) < 0.5) if rhs == "mix" else np.full(batch, rhs == "normal")  # (B,)
    A = np.zeros((batch, hi, hi))
    x = np.zeros((batch, hi))
    b = np.zeros((batch, hi))
    mask = np.arange(hi)[None, :] < n_s[:, None]  # (B, M)
    for n in np.unique(n_s):  # one batched QR per distinct size
        idx = np.flatnonzero(n_s == n)
        U = haar_orthogonal(rng, len(idx), n)  # (b, n, n)
        lam = spd_spectrum(rng, len(idx), n, kap[idx], family[idx])  # (b, n)
        An = (U * lam[:, None, :]) @ U.transpose(0, 2, 1)  # (b, n, n)
        A[idx, :n, :n] = 0.5 * (An + An.transpose(0, 2, 1))  # exactly symmetric
        z = rng.standard_normal((len(idx), n))  # (b, n): x, or b for the "normal" law
        # x = A^{-1} z through the eigendecomposition (exact to rounding: cond(A) <= kappa)
        x_of_z = np.einsum("bij,bj->bi", U / lam[:, None, :], np.einsum("bji,bj->bi", U, z))  # (b, n)
        x[idx, :n] = np.where(normal_rhs[idx, None], x_of_z, z)
        b[idx, :n] = np.where(normal_rhs[idx, None], z, 0.0)
    solution_rhs = ~normal_rhs
    b[solution_rhs] = np.einsum("bij,bj->bi", A[solution_rhs], x[solution_rhs])  # (B', M): b = A x
    if normalize_rhs:
        scale = np.sqrt(n_s) / np.linalg.norm(b, axis=1)  # (B,): ||b|| = sqrt(N)
        b *= scale[:, None]
        x *= scale[:, None]
    return A, b, x, mask


def rhs_rms(n: int, kappa=10.0, spectrum: str = "uniform", rhs: str = "solution", normalize_rhs: bool = False):
    """Root mean square ``sqrt(E ||b||^2 / N)`` of the right-hand sides of size ``n`` under a law.

    ``solve`` scales every right-hand side to this rms before calling a model trained on the law.
    Exact: 1 for ``normalize_rhs`` and ``rhs="normal"``; for ``b = A x`` with ``x ~ N(0, I)``,
    ``E ||b||^2 = sum_i E lam_i^2 = (1/kappa^2 + 1 + (N - 2) m2) / N`` with ``m2 = E lam^2`` of the
    spectrum (uniform: ``(lo^2 + lo + 1)/3``; log-uniform: ``(1 - lo^2) / (2 log kappa)``), ``lo = 1/kappa``;
    for a range ``(k_min, k_max)`` that expression averaged over ``log kappa`` uniform on the range (a
    32-point Gauss-Legendre rule: the integrand is smooth, the rule exact to rounding). Other laws raise
    ``ValueError`` (train them with ``normalize_rhs``).
    """
    if not (is_int(n) and n >= 1):
        raise ValueError(f"rhs_rms: n must be an int >= 1 (a system size), got {n!r}")
    k_lo, k_hi = check_law(kappa, spectrum, rhs, normalize_rhs)
    if normalize_rhs or rhs == "normal":
        return 1.0
    if rhs != "solution" or spectrum not in ("uniform", "loguniform"):
        raise ValueError("the rms of b is known for normalize_rhs, rhs='normal', or b = A x with a uniform or "
                         f"log-uniform spectrum; got spectrum={spectrum!r}, rhs={rhs!r}, kappa={kappa!r}")
    if n == 1:
        return 1.0
    if k_lo == k_hi:
        return float(np.sqrt(_mean_square_of_b(n, k_lo, spectrum)))
    t, w = np.polynomial.legendre.leggauss(32)  # nodes on [-1, 1], weights summing to 2
    log_k = np.log(k_lo) + (t + 1.0) / 2.0 * (np.log(k_hi) - np.log(k_lo))
    ms = [_mean_square_of_b(n, float(np.exp(u)), spectrum) for u in log_k]  # (32,)
    return float(np.sqrt(np.dot(w, ms) / 2.0))


def _mean_square_of_b(n: int, kappa: float, spectrum: str) -> float:
    """``E ||A x||^2 / N`` at one ``kappa`` (:func:`rhs_rms`)."""
    if kappa == 1.0:
        return 1.0
    lo = 1.0 / kappa
    m2 = (lo * lo + lo + 1.0) / 3.0 if spectrum == "uniform" else (1.0 - lo * lo) / (2.0 * np.log(kappa))
    return (lo * lo + 1.0 + (n - 2) * m2) / n


def check_systems(A, b, mask=None, x0=None, x=None, n_fixed: int | None = None):
    """Validate a batch of systems; return ``(A, b, mask, x0, x)`` as float64 / bool arrays.

    Raises ``ValueError`` naming the problem: shapes, non-finite values, a non-symmetric ``A``,
    a mask that is not a prefix of ones or does not match, nonzero entries in padded positions,
    or (``n_fixed``) a size other than the one a full-encoding model was built for.
    ``mask=None`` means every coordinate is real; ``x0=None`` means a zero initial guess.
    """
    A = np.asarray(A)
    b = np.asarray(b)
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"A must be a batch of square matrices (B, M, M), got shape {A.shape}")
    B, M, _ = A.shape
    if B < 1 or M < 1:
        raise ValueError(f"A must hold at least one system of size >= 1, got shape {A.shape}")
    if b.shape != (B, M):
        raise ValueError(f"b must have shape (B, M) = {(B, M)} to match A, got {b.shape}")
    for name, arr in (("A", A), ("b", b)):
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or Inf")
    A = A.astype(np.float64)
    b = b.astype(np.float64)
    if mask is None:
        mask = np.ones((B, M), dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != (B, M):
            raise ValueError(f"mask must have shape (B, M) = {(B, M)}, got {mask.shape}")
        if mask.dtype != bool:
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError("mask must be boolean or hold only 0 and 1")
            mask = mask.astype(bool)
        n_s = mask.sum(axis=1)
        if np.any(n_s < 1):
            raise ValueError("mask: every system needs at least one real coordinate")
        if np.any(mask != (np.arange(M)[None, :] < n_s[:, None])):
            raise ValueError("mask must be a prefix of ones then zeros in every row (systems padded at the end)")
    if n_fixed is not None and (M != n_fixed or not mask.all()):
        raise ValueError(
            f"this full-encoding model runs only on systems of size n={n_fixed}; "
            f"got padded size {M} with sizes {sorted(set(mask.sum(axis=1).tolist()))}")
    pad2 = ~(mask[:, :, None] & mask[:, None, :])  # (B, M, M)
    if np.any(A[pad2] != 0):
        raise ValueError("A has nonzero entries outside its mask (padded rows/columns must be zero)")
    if np.any(b[~mask] != 0):
        raise ValueError("b has nonzero entries outside its mask")
    scale = max(1.0, float(np.max(np.abs(A))))
    asym = float(np.max(np.abs(A - A.transpose(0, 2, 1))))
    if asym > 1e-8 * scale:
        raise ValueError(f"A must be symmetric: max |A - A^T| = {asym:.3g}")
    out = [A, b, mask]
    for name, v in (("x0", x0), ("x", x)):
        if v is None:
            out.append(None if name == "x" else np.zeros((B, M)))
            continue
        v = np.asarray(v)
        if v.shape != (B, M):
            raise ValueError(f"{name} must have shape (B, M) = {(B, M)}, got {v.shape}")
        if not np.issubdtype(v.dtype, np.number) or not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite real numbers")
        v = v.astype(np.float64)
        if np.any(v[~mask] != 0):
            raise ValueError(f"{name} has nonzero entries outside its mask")
        out.append(v)
    return tuple(out)
