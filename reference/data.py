"""Random SPD systems with an exact condition number, and validation of user input.

Glossary of dimensions:
    B  systems in a batch
    M  padded size n_max (every system lives in the top-left N_s x N_s corner)
    N  size of one system
"""

from __future__ import annotations

import numpy as np


def parse_sizes(sizes) -> tuple[int, int]:
    """``sizes`` is an int ``n`` or a pair ``(n_min, n_max)``; returns ``(n_min, n_max)``."""
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

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


def haar_orthogonal(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
    """Haar-random orthogonal ``(batch, n, n)``: QR of a Gaussian, columns signed by ``diag(R)``.

    Without the sign fix QR would return a biased (non-Haar) distribution.
    """
    g = rng.standard_normal((batch, n, n))  # (B, n, n)
    q, r = np.linalg.qr(g)
    signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))  # (B, n)
    signs[signs == 0] = 1.0
    return q * signs[:, None, :]


def spd_spectrum(rng: np.random.Generator, batch: int, n: int, kappa: float) -> np.ndarray:
    """Eigenvalues ``(batch, n)``: uniform on ``[1/kappa, 1]``, smallest pinned to ``1/kappa``, largest to 1."""
    lam = rng.uniform(1.0 / kappa, 1.0, size=(batch, n))
    lam[:, 0] = 1.0 / kappa
    lam[:, -1] = 1.0
    return lam


def sample_systems(batch: int, sizes, kappa: float = 10.0, seed=0):
    """Sample ``batch`` systems ``A x = b`` with ``A = U diag(lam) U^T``, ``x ~ N(0, I)``, ``b = A x``.

    Every system draws its own ``N`` uniformly from ``sizes`` (an int, or ``(n_min, n_max)``),
    and is padded with zeros to ``n_max``. ``cond(A) = kappa`` and ``||A||_2 = 1`` exactly
    (up to rounding).

    Returns ``(A, b, x, mask)``: ``(B, M, M)``, ``(B, M)``, ``(B, M)`` float64 and a boolean
    ``(B, M)`` mask, True on the real coordinates of each system.
    """
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float, np.integer, np.floating)) \
            or not np.isfinite(kappa) or kappa < 1:
        raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
    lo, hi = parse_sizes(sizes)
    rng = np.random.default_rng(seed)
    n_s = rng.integers(lo, hi + 1, size=batch)  # (B,)
    A = np.zeros((batch, hi, hi))
    x = np.zeros((batch, hi))
    mask = np.arange(hi)[None, :] < n_s[:, None]  # (B, M)
    for n in np.unique(n_s):  # one batched QR per distinct size
        idx = np.flatnonzero(n_s == n)
        U = haar_orthogonal(rng, len(idx), n)  # (b, n, n)
        lam = spd_spectrum(rng, len(idx), n, kappa)  # (b, n)
        An = (U * lam[:, None, :]) @ U.transpose(0, 2, 1)  # (b, n, n)
        A[idx, :n, :n] = 0.5 * (An + An.transpose(0, 2, 1))  # exactly symmetric
        x[idx, :n] = rng.standard_normal((len(idx), n))
    b = np.einsum("bij,bj->bi", A, x)  # (B, M)
    return A, b, x, mask


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
