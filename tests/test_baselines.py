"""Tests of the classical baselines (reference/baselines.py) against SciPy, loop implementations and
textbook convergence bounds; padding invariance; initial guesses; input validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg

from reference.baselines import (
    BASELINES,
    chebyshev,
    cholesky_solve,
    conjugate_gradient,
    gauss_seidel,
    jacobi,
    richardson,
    steepest_descent,
)
from reference.data import sample_systems

NAMES = list(BASELINES)


def _a_norm(A, e):
    """Batched A-norm ``sqrt(e^T A e)``: ``(B, M, M), (B, ..., M) -> (B, ...)``."""
    Ae = np.einsum("bij,b...j->b...i", A, e)
    return np.sqrt(np.maximum(np.einsum("b...i,b...i->b...", e, Ae), 0.0))


def _cond(A, mask):
    """Condition number of each system's real block, ``(B,)``."""
    out = []
    for s in range(A.shape[0]):
        n = int(mask[s].sum())
        lam = np.linalg.eigvalsh(A[s, :n, :n])
        out.append(lam[-1] / lam[0])
    return np.array(out)


# ----------------------------------------------------------------------------- against SciPy / loops


def test_cg_matches_scipy():
    A, b, x, mask = sample_systems(4, (5, 8), kappa=100.0, seed=1)
    x0 = np.random.default_rng(2).standard_normal(b.shape) * mask
    hist = conjugate_gradient(A, b, 6, mask=mask, x0=x0, return_history=True)
    assert hist.shape == (4, 7, 8)
    for s in range(4):
        n = int(mask[s].sum())
        for k in (1, 2, 3, 5, 6):
            ref, info = scipy.sparse.linalg.cg(A[s, :n, :n], b[s, :n], x0=x0[s, :n].copy(), maxiter=k,
                                               rtol=0.0, atol=0.0)
            assert info == k
            np.testing.assert_allclose(hist[s, k, :n], ref, rtol=0, atol=1e-10 * np.linalg.norm(ref))
    # the final-iterate API returns the last row of the history (exact: both calls run the same arithmetic
    # on the same arrays, and the history is only kept or dropped at the end)
    np.testing.assert_array_equal(conjugate_gradient(A, b, 6, mask=mask, x0=x0), hist[:, -1])


def test_cholesky_matches_scipy_and_numpy():
    A, b, x, mask = sample_systems(5, (2, 9), kappa=100.0, seed=3)
    got = cholesky_solve(A, b, mask=mask)
    for s in range(5):
        n = int(mask[s].sum())
        As, bs = A[s, :n, :n], b[s, :n]
        ref = scipy.linalg.cho_solve(scipy.linalg.cho_factor(As), bs)
        np.testing.assert_allclose(got[s, :n], ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[s, :n], np.linalg.solve(As, bs), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got[s, :n], x[s, :n], rtol=1e-9, atol=1e-9)
    assert np.all(got[~mask] == 0)


def _splitting_loop(A, b, x0, n_iter, gauss_seidel_sweep):
    """Per-system reference: Jacobi ``x <- D^{-1}(b - (L+U) x)`` or Gauss-Seidel ``(D+L) x <- b - U x``."""
    D = np.diag(np.diag(A))
    L = np.tril(A, -1)
    U = np.triu(A, 1)
    xs = [x0]
    for _ in range(n_iter):
        if gauss_seidel_sweep:
            xs.append(scipy.linalg.solve_triangular(D + L, b - U @ xs[-1], lower=True))
        else:
            xs.append((b - (L + U) @ xs[-1]) / np.diag(A))
    return np.stack(xs)


@pytest.mark.parametrize("fn, gs", [(jacobi, False), (gauss_seidel, True)])
def test_splitting_methods_match_loop(fn, gs):
    A, b, x, mask = sample_systems(4, (3, 7), kappa=10.0, seed=4)
    # a diagonally dominant shift, so that Jacobi converges and the comparison is meaningful
    A = A + 2.0 * np.eye(A.shape[1])[None] * mask[:, None, :]
    b = np.einsum("bij,bj->bi", A, x)
    x0 = np.random.default_rng(5).standard_normal(b.shape) * mask
    hist = fn(A, b, 5, mask=mask, x0=x0, return_history=True)
    for s in range(4):
        n = int(mask[s].sum())
        ref = _splitting_loop(A[s, :n, :n], b[s, :n], x0[s, :n], 5, gs)
        np.testing.assert_allclose(hist[s, :, :n], ref, rtol=1e-12, atol=1e-12)
    # Gauss-Seidel converges on SPD matrices; this shifted (diagonally dominant) system also for Jacobi
    err = np.linalg.norm(hist[:, -1] - x, axis=1) / np.linalg.norm(hist[:, 0] - x, axis=1)
    assert np.all(err < 0.5)


def test_jacobi_gauss_seidel_on_unshifted_data():
    """Same comparison on the project's own (not diagonally dominant) data, where Jacobi may diverge."""
    A, b, x, mask = sample_systems(3, 6, kappa=10.0, seed=6)
    for fn, gs in ((jacobi, False), (gauss_seidel, True)):
        hist = fn(A, b, 4, mask=mask, return_history=True)
        for s in range(3):
            ref = _splitting_loop(A[s], b[s], np.zeros(6), 4, gs)
            np.testing.assert_allclose(hist[s], ref, rtol=1e-11, atol=1e-11 * np.abs(ref).max())


def test_steepest_descent_exact_line_search():
    """Exact line search: each new residual is orthogonal to the previous one (the search direction),
    and the A-norm error decreases at every step."""
    A, b, x, mask = sample_systems(5, (3, 8), kappa=50.0, seed=18)
    hist = steepest_descent(A, b, 6, mask=mask, return_history=True)  # (B, k, M)
    r = b[:, None] - np.einsum("bij,bkj->bki", A, hist)  # (B, k, M) true residuals
    cos = np.einsum("bki,bki->bk", r[:, 1:], r[:, :-1]) / (
        np.linalg.norm(r[:, 1:], axis=2) * np.linalg.norm(r[:, :-1], axis=2))
    assert np.all(np.abs(cos) < 1e-10)
    err = _a_norm(A, hist - x[:, None])  # (B, k)
    assert np.all(np.diff(err, axis=1) < 0)
    # first step by hand: x1 = (b^T b / b^T A b) b
    alpha = np.einsum("bi,bi->b", b, b) / np.einsum("bi,bij,bj->b", b, A, b)
    np.testing.assert_allclose(hist[:, 1], alpha[:, None] * b, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- convergence bounds


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_textbook_convergence_bounds(kappa):
    A, b, x, mask = sample_systems(16, (2, 12), kappa=kappa, seed=int(kappa))
    kap = _cond(A, mask)
    np.testing.assert_allclose(kap, kappa, rtol=1e-8)  # the bounds below use the true kappa
    n_iter = 12
    i = np.arange(n_iter + 1)  # (k,)
    q_sqrt = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    q_lin = (kappa - 1) / (kappa + 1)
    slack = 1.0 + 1e-9
    tiny = 1e-12  # absolute floor for rounding once an error is at machine precision

    e_cg = conjugate_gradient(A, b, n_iter, mask=mask, return_history=True) - x[:, None]  # (B, k, M)
    e0_a = _a_norm(A, -x)[:, None]  # (B, 1)
    assert np.all(_a_norm(A, e_cg) <= 2 * q_sqrt ** i * e0_a * slack + tiny)

    e_sd = steepest_descent(A, b, n_iter, mask=mask, return_history=True) - x[:, None]
    assert np.all(_a_norm(A, e_sd) <= q_lin ** i * e0_a * slack + tiny)

    e0 = np.linalg.norm(x, axis=1)[:, None]  # (B, 1)
    e_ri = np.linalg.norm(richardson(A, b, n_iter, mask=mask, kappa=kappa, return_history=True)
                          - x[:, None], axis=2)
    assert np.all(e_ri <= q_lin ** i * e0 * slack + tiny)

    e_ch = np.linalg.norm(chebyshev(A, b, n_iter, mask=mask, kappa=kappa, return_history=True)
                          - x[:, None], axis=2)
    sigma = (kappa + 1) / (kappa - 1)
    t_i = np.cosh(i * np.arccosh(sigma))  # T_i(sigma)
    assert np.all(e_ch <= e0 / t_i * slack + tiny)  # the minimax polynomial bound
    assert np.all(e_ch <= 2 * q_sqrt ** i * e0 * slack + tiny)
    assert np.all(e_ch <= q_lin ** i * e0 * slack + tiny)  # never worse than Richardson's bound
    # ... and strictly better in the bound after a few steps (kappa > 1)
    assert 1 / t_i[-1] < 0.5 * q_lin ** n_iter


def test_chebyshev_error_is_the_chebyshev_polynomial():
    """e_k = T_k((theta - A)/delta) e_0 / T_k(sigma), checked in the eigenbasis, also off-default bounds."""
    A, b, x, mask = sample_systems(3, 7, kappa=30.0, seed=7)
    lo, hi = 0.02, 1.3  # bounds wider than the spectrum [1/30, 1]
    x0 = np.random.default_rng(8).standard_normal(b.shape)
    hist = chebyshev(A, b, 6, x0=x0, lam_min=lo, lam_max=hi, return_history=True)
    theta, delta = (hi + lo) / 2, (hi - lo) / 2
    for s in range(3):
        lam, V = np.linalg.eigh(A[s])
        c0 = V.T @ (x0[s] - x[s])
        for k in range(7):
            ref = V @ (np.cos(k * np.arccos((theta - lam) / delta)) / np.cosh(k * np.arccosh(theta / delta)) * c0)
            np.testing.assert_allclose(hist[s, k] - x[s], ref, rtol=0, atol=1e-11)


def test_richardson_step_and_point_spectrum():
    A, b, x, mask = sample_systems(2, 5, kappa=10.0, seed=9)
    got = richardson(A, b, 1, lam_min=0.25, lam_max=0.75)
    np.testing.assert_allclose(got, 2.0 * b, rtol=1e-15)  # x1 = x0 + omega b, omega = 2/(0.25+0.75)
    # A = 2 I: both bound methods with lam_min = lam_max = 2 solve it in one step, no NaN afterwards
    A2 = 2.0 * np.eye(4)[None].repeat(2, axis=0)
    b2 = np.arange(8.0).reshape(2, 4)
    for fn in (richardson, chebyshev):
        h = fn(A2, b2, 3, lam_min=2.0, lam_max=2.0, return_history=True)
        np.testing.assert_allclose(h[:, 1:], np.broadcast_to(b2[:, None] / 2, (2, 3, 4)), rtol=1e-15)
    # per-system (B,) bounds equal the scalar call on each system
    both = chebyshev(A, b, 4, lam_min=np.array([0.1, 0.05]), lam_max=1.0)
    np.testing.assert_allclose(both[1], chebyshev(A[1:], b[1:], 4, lam_min=0.05)[0], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_cg_exact_after_n_iterations_and_no_nan(kappa):
    A, b, x, mask = sample_systems(8, (2, 9), kappa=kappa, seed=10)
    n = mask.sum(axis=1)
    hist = conjugate_gradient(A, b, 15, mask=mask, return_history=True)  # beyond N: converged systems
    assert np.all(np.isfinite(hist))
    for s in range(8):
        err = np.linalg.norm(hist[s, n[s]:] - x[s], axis=1) / np.linalg.norm(x[s])
        assert np.all(err < 1e-8), (s, err)
    # zero right-hand side: exact zero residual from the start, alpha = beta = 0, no NaN
    z = conjugate_gradient(A, np.zeros_like(b), 5, mask=mask, return_history=True)
    assert np.all(z == 0)


def test_cg_converged_exactly_stays_finite():
    """A = I: CG solves in one step with an exactly zero residual; later steps must not divide 0/0."""
    A = np.eye(3)[None].repeat(2, axis=0)
    b = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    hist = conjugate_gradient(A, b, 4, return_history=True)
    np.testing.assert_array_equal(hist[:, 1:], np.broadcast_to(b[:, None], (2, 4, 3)))
    sd = steepest_descent(A, b, 4, return_history=True)
    np.testing.assert_array_equal(sd[:, 1:], np.broadcast_to(b[:, None], (2, 4, 3)))


# ----------------------------------------------------------------------------- padding, x0


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name):
    fn = BASELINES[name]
    A, b, x, mask = sample_systems(6, (2, 9), kappa=10.0, seed=11)
    x0 = np.random.default_rng(12).standard_normal(b.shape) * mask
    hist = fn(A, b, 5, mask=mask, x0=x0, kappa=10.0, return_history=True)
    assert hist.shape == (6, 6, 9)
    assert np.all(hist.transpose(0, 2, 1)[~mask] == 0)  # padded coordinates exactly zero at every step
    for s in range(6):
        n = int(mask[s].sum())
        alone = fn(A[s:s + 1, :n, :n], b[s:s + 1, :n], 5, x0=x0[s:s + 1, :n], kappa=10.0, return_history=True)
        scale = max(1.0, np.abs(alone).max())
        np.testing.assert_allclose(hist[s, :, :n], alone[0], rtol=0, atol=1e-12 * scale)
    # without history: the last iterate (exact: the same call on the same batch, the history dropped at the end)
    np.testing.assert_array_equal(fn(A, b, 5, mask=mask, x0=x0, kappa=10.0), hist[:, -1])


@pytest.mark.parametrize("name", NAMES)
def test_initial_guess_respected(name):
    fn = BASELINES[name]
    A, b, x, mask = sample_systems(4, (3, 6), kappa=10.0, seed=13)
    x0 = np.random.default_rng(14).standard_normal(b.shape) * mask
    hist = fn(A, b, 3, mask=mask, x0=x0, return_history=True)
    np.testing.assert_array_equal(hist[:, 0], x0)
    assert fn(A, b, 0, mask=mask, x0=x0, return_history=True).shape == (4, 1, 6)
    # starting at the exact solution, every method stays there
    x_star = cholesky_solve(A, b, mask=mask)
    hist = fn(A, b, 4, mask=mask, x0=x_star, return_history=True)
    np.testing.assert_allclose(hist, np.broadcast_to(x_star[:, None], hist.shape), rtol=0, atol=1e-12)
    # default x0 is zero
    np.testing.assert_array_equal(fn(A, b, 2, mask=mask, return_history=True)[:, 0], 0.0)


def test_cholesky_history_convention():
    A, b, x, mask = sample_systems(3, (2, 5), kappa=10.0, seed=15)
    x0 = np.ones_like(b) * mask
    hist = BASELINES["cholesky"](A, b, 3, mask=mask, x0=x0, return_history=True)
    x_star = cholesky_solve(A, b, mask=mask)
    np.testing.assert_array_equal(hist[:, 0], x0)
    for k in (1, 2, 3):  # exact: every row is the one cholesky_solve of the same batch
        np.testing.assert_array_equal(hist[:, k], x_star)
    np.testing.assert_array_equal(BASELINES["cholesky"](A, b, 0, mask=mask), x_star)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises(name):
    fn = BASELINES[name]
    A, b, x, mask = sample_systems(2, 4, kappa=10.0, seed=16)
    A_asym = A.copy()
    A_asym[0, 0, 1] += 1e-3
    with pytest.raises(ValueError, match="symmetric"):
        fn(A_asym, b, 2)
    A_nan = A.copy()
    A_nan[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(A_nan, b, 2)
    b_nan = b.copy()
    b_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(A, b_nan, 2)
    with pytest.raises(ValueError, match="b must have shape"):
        fn(A, b[:, :3], 2)
    with pytest.raises(ValueError, match="x0 must have shape"):
        fn(A, b, 2, x0=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="n_iter"):
        fn(A, b, -1)
    with pytest.raises(ValueError, match="n_iter"):
        fn(A, b, 2.5)


def test_bad_spectrum_bounds_and_indefinite():
    A, b, x, mask = sample_systems(2, 4, kappa=10.0, seed=17)
    for fn in (richardson, chebyshev):
        with pytest.raises(ValueError, match="spectrum bounds"):
            fn(A, b, 2, lam_min=1.0, lam_max=0.5)
        with pytest.raises(ValueError, match="spectrum bounds"):
            fn(A, b, 2, lam_min=0.0, lam_max=1.0)
        with pytest.raises(ValueError, match="kappa"):
            fn(A, b, 2, kappa=0.5)
        with pytest.raises(ValueError, match="shape"):
            fn(A, b, 2, lam_min=np.array([0.1, 0.1, 0.1]))
    indefinite = np.diag([1.0, -1.0, 2.0, 3.0])[None].repeat(2, axis=0)
    with pytest.raises(ValueError, match="positive definite"):
        cholesky_solve(indefinite, b)
    for fn in (jacobi, gauss_seidel):
        with pytest.raises(ValueError, match="positive"):
            fn(indefinite, b, 2)
