"""Classical solvers for ``A x = b`` (A symmetric positive definite): the baselines the model is compared with.

Pure NumPy, float64, batched over systems, mask-aware. Every iterative solver here

* takes the same initial guess ``x0`` (default zeros) and a number of iterations ``n_iter``
  (``docs/concepts.md``, section 6: a model with ``L`` layers is compared with ``L`` iterations of each solver),
* returns the final iterate ``x`` of shape ``(B, M)``, or with ``return_history=True`` the iterates
  ``(B, n_iter + 1, M)`` with ``history[:, 0] = x0`` and ``history[:, k]`` the ``k``-th iterate,
* keeps padded coordinates exactly 0, and gives a padded system the same result (up to rounding
  in the order of summation) as the same system run alone at its own size: padded rows and
  columns of ``A`` are zero, so every matrix-vector product, inner product and update below
  leaves them at zero and never mixes them into the real coordinates.

Glossary of dimensions:
    B  systems in a batch
    M  padded size n_max (every system lives in the top-left N x N corner)
    N  size of one system (its number of True entries in ``mask``)
    k  iteration index, 0..n_iter

Public functions (inputs are validated by :func:`reference.data.check_systems`, which raises
``ValueError`` naming the problem)::

    conjugate_gradient(A, b, n_iter, mask=None, x0=None, return_history=False)
    steepest_descent(A, b, n_iter, mask=None, x0=None, return_history=False)
    richardson(A, b, n_iter, mask=None, x0=None, return_history=False, *, lam_min=None, lam_max=None, kappa=10.0)
    chebyshev(A, b, n_iter, mask=None, x0=None, return_history=False, *, lam_min=None, lam_max=None, kappa=10.0)
    jacobi(A, b, n_iter, mask=None, x0=None, return_history=False)
    gauss_seidel(A, b, n_iter, mask=None, x0=None, return_history=False)
    cholesky_solve(A, b, mask=None)

and the registry ``BASELINES``: name -> callable with the uniform signature
``(A, b, n_iter, mask=None, x0=None, kappa=10.0, return_history=False)``, for evaluation loops.
``kappa`` only matters to "richardson" and "chebyshev", which take the spectrum bounds
``[1/kappa, 1]`` of the project's data (``docs/concepts.md``, section 1); the others ignore it.
"""

from __future__ import annotations

import numpy as np

from reference.config import is_int
from reference.data import check_systems

__all__ = [
    "conjugate_gradient", "steepest_descent", "richardson", "chebyshev", "jacobi", "gauss_seidel",
    "cholesky_solve", "BASELINES",
]


# ----------------------------------------------------------------------------- helpers


def _matvec(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched ``A v``: ``(B, M, M), (B, M) -> (B, M)``."""
    return np.einsum("bij,bj->bi", A, v)


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched inner product ``u^T v``: ``(B, M), (B, M) -> (B,)``."""
    return np.einsum("bi,bi->b", u, v)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, and 0 where ``den == 0`` (a system that has converged exactly)."""
    nonzero = den != 0
    return np.where(nonzero, num / np.where(nonzero, den, 1.0), 0.0)


def _check_n_iter(n_iter) -> int:
    if not is_int(n_iter) or n_iter < 0:
        raise ValueError(f"n_iter must be an int >= 0, got {n_iter!r}")
    return int(n_iter)


def _prepare(A, b, mask, x0, n_iter):
    """Validate inputs; return ``A (B,M,M), b (B,M), mask (B,M) bool, x0 (B,M), n_iter``."""
    A, b, mask, x0, _ = check_systems(A, b, mask=mask, x0=x0)
    return A, b, mask, x0, _check_n_iter(n_iter)


def _positive_diagonal(A: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``diag(A)`` ``(B, M)`` with padded entries set to 1 (never divided into anything nonzero).

    Raises ``ValueError`` if a real diagonal entry is not positive (then ``A`` is not SPD).
    """
    d = np.diagonal(A, axis1=1, axis2=2).copy()  # (B, M)
    if np.any(d[mask] <= 0):
        raise ValueError("A must have a positive diagonal (A is not positive definite)")
    d[~mask] = 1.0
    return d


def _spectrum_bounds(lam_min, lam_max, kappa, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum bounds as ``(B,)`` arrays; defaults ``lam_min = 1/kappa``, ``lam_max = 1`` (our data)."""
    if lam_min is None or lam_max is None:
        if not np.isfinite(kappa) or kappa < 1:
            raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
    lo = np.asarray(1.0 / kappa if lam_min is None else lam_min, dtype=np.float64)
    hi = np.asarray(1.0 if lam_max is None else lam_max, dtype=np.float64)
    try:
        lo = np.broadcast_to(lo, (batch,)).copy()  # (B,)
        hi = np.broadcast_to(hi, (batch,)).copy()  # (B,)
    except ValueError:
        raise ValueError(f"lam_min / lam_max must be scalars or of shape (B,) = ({batch},)") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo > 0) and np.all(lo <= hi)):
        raise ValueError("spectrum bounds must satisfy 0 < lam_min <= lam_max < inf")
    return lo, hi


def _finish(history: list[np.ndarray], return_history: bool) -> np.ndarray:
    """Stack the iterates into ``(B, n_iter + 1, M)``, or return the last one ``(B, M)``."""
    if return_history:
        return np.stack(history, axis=1)  # (B, n_iter + 1, M)
    return history[-1]


# ----------------------------------------------------------------------------- Krylov methods


def conjugate_gradient(A, b, n_iter, mask=None, x0=None, return_history=False):
    """Conjugate gradient (Hestenes-Stiefel), ``n_iter`` iterations from ``x0``.

    Recurrence (per system)::

        r_0 = b - A x_0,   p_0 = r_0
        alpha_k = (r_k^T r_k) / (p_k^T A p_k)
        x_{k+1} = x_k + alpha_k p_k
        r_{k+1} = r_k - alpha_k A p_k
        beta_k  = (r_{k+1}^T r_{k+1}) / (r_k^T r_k)
        p_{k+1} = r_{k+1} + beta_k p_k

    ``x_k`` minimises the A-norm error over ``x_0 + K_k(A, r_0)``; in exact arithmetic
    ``x_N`` is the solution. A division by zero (a system that has converged exactly, e.g. a zero
    residual) gives ``alpha = beta = 0``: the system then stays where it is, never NaN.
    """
    A, b, mask, x, n_iter = _prepare(A, b, mask, x0, n_iter)
    history = [x.copy()]
    r = b - _matvec(A, x)  # (B, M)
    p = r.copy()  # (B, M)
    rr = _dot(r, r)  # (B,)
    for _ in range(n_iter):
        Ap = _matvec(A, p)  # (B, M)
        alpha = _safe_div(rr, _dot(p, Ap))  # (B,)
        x = x + alpha[:, None] * p  # (B, M)
        r = r - alpha[:, None] * Ap  # (B, M)
        rr_new = _dot(r, r)  # (B,)
        beta = _safe_div(rr_new, rr)  # (B,)
        p = r + beta[:, None] * p  # (B, M)
        rr = rr_new
        history.append(x)
    return _finish(history, return_history)


def steepest_descent(A, b, n_iter, mask=None, x0=None, return_history=False):
    """Steepest descent with exact line search (in the A-norm), ``n_iter`` iterations from ``x0``.

    Recurrence (per system)::

        r_0 = b - A x_0
        alpha_k = (r_k^T r_k) / (r_k^T A r_k)
        x_{k+1} = x_k + alpha_k r_k
        r_{k+1} = r_k - alpha_k A r_k

    Converges as ``||e_k||_A <= ((kappa - 1) / (kappa + 1))^k ||e_0||_A`` (Kantorovich).
    A zero residual gives ``alpha = 0`` (no NaN).
    """
    A, b, mask, x, n_iter = _prepare(A, b, mask, x0, n_iter)
    history = [x.copy()]
    r = b - _matvec(A, x)  # (B, M)
    for _ in range(n_iter):
        Ar = _matvec(A, r)  # (B, M)
        alpha = _safe_div(_dot(r, r), _dot(r, Ar))  # (B,)
        x = x + alpha[:, None] * r  # (B, M)
        r = r - alpha[:, None] * Ar  # (B, M)
        history.append(x)
    return _finish(history, return_history)


# ----------------------------------------------------------------------------- methods with spectrum bounds


def richardson(A, b, n_iter, mask=None, x0=None, return_history=False, *, lam_min=None, lam_max=None,
               kappa=10.0):
    """Richardson iteration with the optimal fixed step for the spectrum bounds ``[lam_min, lam_max]``.

    Recurrence (per system)::

        omega   = 2 / (lam_min + lam_max)
        x_{k+1} = x_k + omega (b - A x_k)

    If the spectrum of ``A`` lies in ``[lam_min, lam_max]``, ``||I - omega A||_2 <= (c - 1)/(c + 1)``
    with ``c = lam_max / lam_min``, so ``||e_k||_2 <= ((c - 1)/(c + 1))^k ||e_0||_2``.
    Bounds are scalars or ``(B,)`` arrays; by default ``lam_min = 1/kappa``, ``lam_max = 1``, the
    spectrum of the project's data.
    """
    A, b, mask, x, n_iter = _prepare(A, b, mask, x0, n_iter)
    lo, hi = _spectrum_bounds(lam_min, lam_max, kappa, A.shape[0])  # (B,), (B,)
    omega = 2.0 / (lo + hi)  # (B,)
    history = [x.copy()]
    for _ in range(n_iter):
        r = b - _matvec(A, x)  # (B, M)
        x = x + omega[:, None] * r  # (B, M)
        history.append(x)
    return _finish(history, return_history)


def chebyshev(A, b, n_iter, mask=None, x0=None, return_history=False, *, lam_min=None, lam_max=None,
              kappa=10.0):
    """Chebyshev iteration for the spectrum bounds ``[lam_min, lam_max]`` (Saad, *Iterative Methods
    for Sparse Linear Systems*, 2nd ed., Algorithm 12.1), three-term recurrence.

    Recurrence (per system), with ``theta = (lam_max + lam_min)/2``, ``delta = (lam_max - lam_min)/2``,
    ``sigma = theta / delta``::

        r_0 = b - A x_0,   rho_0 = 1 / sigma,   d_0 = r_0 / theta
        x_{k+1}   = x_k + d_k
        r_{k+1}   = r_k - A d_k
        rho_{k+1} = 1 / (2 sigma - rho_k)
        d_{k+1}   = rho_{k+1} rho_k d_k + (2 rho_{k+1} / delta) r_{k+1}

    The error is ``e_k = T_k((theta I - A)/delta) e_0 / T_k(sigma)`` (``T_k`` the Chebyshev
    polynomial of the first kind), so if the spectrum lies in the bounds
    ``||e_k||_2 <= ||e_0||_2 / T_k(sigma) <= 2 ((sqrt(c) - 1)/(sqrt(c) + 1))^k ||e_0||_2``,
    ``c = lam_max / lam_min``. When ``lam_min == lam_max`` (``delta = 0``) the coefficients take
    their limits ``rho_{k+1} rho_k -> 0``, ``2 rho_{k+1} / delta -> 1 / theta``: Richardson with
    step ``1/theta``. Bounds are scalars or ``(B,)`` arrays; by default ``[1/kappa, 1]``.
    """
    A, b, mask, x, n_iter = _prepare(A, b, mask, x0, n_iter)
    lo, hi = _spectrum_bounds(lam_min, lam_max, kappa, A.shape[0])  # (B,), (B,)
    theta = 0.5 * (hi + lo)  # (B,)
    delta = 0.5 * (hi - lo)  # (B,)
    point = delta == 0  # (B,) spectrum a single point: limit coefficients
    sigma = theta / np.where(point, 1.0, delta)  # (B,) unused where point
    rho = np.where(point, 0.0, 1.0 / sigma)  # (B,)
    history = [x.copy()]
    r = b - _matvec(A, x)  # (B, M)
    d = r / theta[:, None]  # (B, M)
    for _ in range(n_iter):
        x = x + d  # (B, M)
        r = r - _matvec(A, d)  # (B, M)
        rho_next = np.where(point, 0.0, 1.0 / (2.0 * sigma - rho))  # (B,)
        c_d = rho_next * rho  # (B,)
        c_r = np.where(point, 1.0 / theta, 2.0 * rho_next / np.where(point, 1.0, delta))  # (B,)
        d = c_d[:, None] * d + c_r[:, None] * r  # (B, M)
        rho = rho_next
        history.append(x)
    return _finish(history, return_history)


# ----------------------------------------------------------------------------- splitting methods


def jacobi(A, b, n_iter, mask=None, x0=None, return_history=False):
    """Jacobi iteration, ``n_iter`` sweeps from ``x0``.

    Recurrence (per system), ``D = diag(A)``::

        x_{k+1} = x_k + D^{-1} (b - A x_k)

    Converges iff the spectral radius of ``I - D^{-1} A`` is below 1; for SPD ``A`` that holds iff
    ``2 D - A`` is also positive definite, which dense random SPD matrices need not satisfy (the
    iterates may then diverge: that is the method, not a bug). Raises ``ValueError`` if a real
    diagonal entry is not positive.
    """
    A, b, mask, x, n_iter = _prepare(A, b, mask, x0, n_iter)
    inv_diag = np.where(mask, 1.0 / _positive_diagonal(A, mask), 0.0)  # (B, M) 0 on padding
    history = [x.copy()]
    for _ in range(n_iter):
        r = b - _matvec(A, x)  # (B, M)
        x = x + inv_diag * r  # (B, M)
        history.append(x)
    return _finish(history, return_history)


def gauss_seidel(A, b, n_iter, mask=None, x0=None, return_history=False):
    """Gauss-Seidel iteration (forward sweep), ``n_iter`` sweeps from ``x0``.

    Recurrence (per system), ``A = L + D + U`` (strict lower, diagonal, strict upper)::

        (D + L) x_{k+1} = b - U x_k

    computed coordinate by coordinate, ``i = 1..N``::

        x_{k+1, i} = (b_i - sum_{j < i} A_ij x_{k+1, j} - sum_{j > i} A_ij x_{k, j}) / A_ii

    Converges for every SPD ``A``. Raises ``ValueError`` if a real diagonal entry is not positive.
    Padded coordinates have zero rows, so they stay 0 (their diagonal is replaced by 1).
    """
    A, b, mask, x, n_iter = _prepare(A, b, mask, x0, n_iter)
    diag = _positive_diagonal(A, mask)  # (B, M) 1 on padding
    M = A.shape[1]
    history = [x.copy()]
    for _ in range(n_iter):
        x = x.copy()  # (B, M) updated in place: x[:, :i] new, x[:, i+1:] old
        for i in range(M):
            lower = np.einsum("bj,bj->b", A[:, i, :i], x[:, :i])  # (B,)
            upper = np.einsum("bj,bj->b", A[:, i, i + 1:], x[:, i + 1:])  # (B,)
            x[:, i] = (b[:, i] - lower - upper) / diag[:, i]  # (B,)
        history.append(x)
    return _finish(history, return_history)


# ----------------------------------------------------------------------------- direct solve


def cholesky_solve(A, b, mask=None):
    """Direct solve ``x = A^{-1} b`` by Cholesky ``A = L L^T`` (the floor every method is compared with).

    Each system's real ``N x N`` block is factored; the padded block is replaced by the identity
    (it is decoupled, since padded rows/columns of ``A`` are zero), so ``L`` is block diagonal
    ``[L_N, 0; 0, I]`` and, with ``b`` zero on padding, the padded coordinates of ``x`` are exactly 0.
    Then two batched triangular solves::

        L y = b      (forward substitution)   y_i = (b_i - sum_{j < i} L_ij y_j) / L_ii
        L^T x = y    (back substitution)      x_i = (y_i - sum_{j > i} L_ji x_j) / L_ii

    Returns ``x`` ``(B, M)``. Raises ``ValueError`` for invalid input or if ``A`` is not positive definite.
    """
    A, b, mask, _, _ = check_systems(A, b, mask=mask)
    B, M, _ = A.shape
    A_full = A + np.eye(M)[None] * (~mask)[:, None, :]  # (B, M, M) identity on the padded block
    try:
        L = np.linalg.cholesky(A_full)  # (B, M, M) lower triangular
    except np.linalg.LinAlgError:
        raise ValueError("A is not positive definite (Cholesky failed)") from None
    y = np.zeros((B, M))  # (B, M)
    for i in range(M):
        y[:, i] = (b[:, i] - np.einsum("bj,bj->b", L[:, i, :i], y[:, :i])) / L[:, i, i]
    x = np.zeros((B, M))  # (B, M)
    for i in reversed(range(M)):
        x[:, i] = (y[:, i] - np.einsum("bj,bj->b", L[:, i + 1:, i], x[:, i + 1:])) / L[:, i, i]
    return x


# ----------------------------------------------------------------------------- registry


def _uniform(solver, uses_kappa: bool = False):
    """``solver`` in the registry's uniform signature (``kappa`` passed on only where it sets the bounds)."""

    def run(A, b, n_iter, mask=None, x0=None, kappa=10.0, return_history=False):
        extra = {"kappa": kappa} if uses_kappa else {}
        return solver(A, b, n_iter, mask=mask, x0=x0, return_history=return_history, **extra)

    run.__name__ = f"uniform_{solver.__name__}"
    run.__doc__ = f":func:`{solver.__name__}` in the registry's uniform signature."
    return run


def _cholesky(A, b, n_iter, mask=None, x0=None, kappa=10.0, return_history=False):
    """Cholesky in the uniform signature: ``n_iter`` only sets the history length.

    The history is ``x0`` followed by the exact solution repeated ``n_iter`` times
    ``(B, n_iter + 1, M)``; without history the result is the exact solution (also for ``n_iter = 0``).
    """
    A, b, mask, x0, n_iter = _prepare(A, b, mask, x0, n_iter)
    x = cholesky_solve(A, b, mask=mask)  # (B, M)
    return _finish([x0] + [x] * n_iter, return_history) if return_history else x


BASELINES = {
    "cg": _uniform(conjugate_gradient),
    "steepest_descent": _uniform(steepest_descent),
    "richardson": _uniform(richardson, uses_kappa=True),
    "chebyshev": _uniform(chebyshev, uses_kappa=True),
    "jacobi": _uniform(jacobi),
    "gauss_seidel": _uniform(gauss_seidel),
    "cholesky": _cholesky,
}
"""name -> solver with the uniform signature ``(A, b, n_iter, mask=None, x0=None, kappa=10.0, return_history=False)``.

``kappa`` sets the spectrum bounds ``[1/kappa, 1]`` of "richardson" and "chebyshev" and is ignored
by the others. "cholesky" ignores ``n_iter`` for its result (the exact solution); its history is
``x0`` followed by the exact solution repeated ``n_iter`` times.
"""
