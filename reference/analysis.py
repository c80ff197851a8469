"""What kind of algorithm did the Transformer learn? Krylov-space yardsticks for its layers.

After ``k`` iterations from ``x0`` every classical Krylov method (CG, Chebyshev, Richardson,
steepest descent) returns a point of ``x0 + K_k(A, r0)``, ``K_k = span{r0, A r0, ..., A^{k-1} r0}``:
``x0`` plus a polynomial of degree ``k - 1`` in ``A`` applied to the residual ``r0 = b - A x0``.
CG picks the best such point in the ``A``-norm; :func:`krylov_best_errors` gives the best one in
the 2-norm, the floor for *any* polynomial method of that degree. Comparing the model's error
after layer ``l`` with that floor tells whether the layer behaves like one polynomial step or like
several: :func:`effective_krylov_dimension` turns the comparison into a number of Krylov steps.

Glossary of dimensions:
    B systems, M padded size, N size of one system, d Krylov dimension, L layers
"""

from __future__ import annotations

import numpy as np

from reference.data import check_systems


def krylov_basis(A, r0, mask, d_max: int) -> np.ndarray:
    """Orthonormal basis ``V`` (B, d_max, M) of ``K_d(A, r0)`` for ``d = 1..d_max`` (Lanczos-type
    Arnoldi with two passes of full re-orthogonalisation). Once a system's space is exhausted
    (at most ``N`` dimensions) its further basis vectors are zero."""
    B, M = r0.shape
    V = np.zeros((B, d_max, M))
    w = r0.copy()  # (B, M)
    for k in range(d_max):
        before = np.linalg.norm(w, axis=1)  # (B,): the breakdown test is relative to the new vector itself
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            w -= np.einsum("bk,bkm->bm", np.einsum("bkm,bm->bk", V[:, :k], w), V[:, :k])
        nrm = np.linalg.norm(w, axis=1)  # (B,)
        alive = (nrm > 1e-10 * before) & (before > 0)  # space not yet exhausted (scale-invariant test)
        V[:, k] = np.where(alive[:, None], w / np.where(alive, nrm, 1.0)[:, None], 0.0)
        w = np.einsum("bij,bj->bi", A, V[:, k]) * mask  # (B, M)
    return V


def krylov_best_errors(A, b, x, mask=None, x0=None, d_max: int | None = None) -> np.ndarray:
    """Per-system MSE ``(1/N)||x - x_d||^2`` of the best 2-norm approximation ``x_d`` of ``x`` in
    ``x0 + K_d(A, b - A x0)``, for ``d = 0..d_max``: (B, d_max + 1). Column 0 is ``x0`` itself."""
    A, b, mask, x0, x = check_systems(A, b, mask=mask, x0=x0, x=x)
    d_max = A.shape[1] if d_max is None else d_max
    r0 = (b - np.einsum("bij,bj->bi", A, x0)) * mask  # (B, M)
    V = krylov_basis(A, r0, mask, d_max)  # (B, d, M)
    e0 = x - x0  # (B, M)
    coef = np.einsum("bkm,bm->bk", V, e0)  # (B, d): components of the error along the basis
    n_s = mask.sum(axis=1)  # (B,)
    # ||e0 - V_d V_d^T e0||^2, from the residual vectors themselves (subtracting the squared
    # components instead would leave a floor of eps * ||e0||^2 once the space is exhausted)
    resid = np.cumsum(coef[:, :, None] * V, axis=1)  # (B, d, M): V_d V_d^T e0 for d = 1..
    remaining = np.concatenate([(e0**2).sum(axis=1)[:, None], ((e0[:, None] - resid) ** 2).sum(axis=2)], axis=1)
    return remaining / n_s[:, None]  # (B, d+1)


def effective_krylov_dimension(model_mse: float, best_mse_by_d: np.ndarray) -> float:
    """Smallest (log-linearly interpolated) Krylov dimension ``d`` whose best 2-norm error reaches
    ``model_mse``; ``inf`` if no ``d`` does. ``best_mse_by_d`` is the mean over systems, ``d = 0..``."""
    curve = np.asarray(best_mse_by_d, dtype=np.float64)
    if model_mse >= curve[0]:
        return 0.0
    below = np.flatnonzero(curve <= model_mse)
    if below.size == 0:
        return float("inf")
    d = int(below[0])
    hi, lo = np.log(curve[d - 1]), np.log(max(curve[d], 1e-300))
    frac = (hi - np.log(max(model_mse, 1e-300))) / (hi - lo) if hi > lo else 1.0  # model_mse = 0: d
    return float(d - 1 + frac)
