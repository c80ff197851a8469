"""reference.data.sample_systems: exact condition number, symmetry, padding, b = A x, sizes, seeds,
and light statistical sanity of the Haar factor and of x."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_tensor

from reference import sample_systems
from reference.data import haar_orthogonal, parse_sizes, spd_spectrum


@pytest.mark.parametrize("kappa", [10.0, 100.0, 1.0 + 1e-3])
def test_exact_condition_number_and_norm(kappa):
    A, b, x, mask = sample_systems(40, (2, 9), kappa=kappa, seed=1)
    for s, n in enumerate(mask.sum(axis=1)):
        lam = np.linalg.eigvalsh(A[s, :n, :n])
        assert abs(lam[0] - 1.0 / kappa) <= 1e-10, (s, n, lam[0])
        assert abs(lam[-1] - 1.0) <= 1e-10, (s, n, lam[-1])
        assert np.all(lam >= 1.0 / kappa - 1e-10) and np.all(lam <= 1.0 + 1e-10)
        assert abs(np.linalg.cond(A[s, :n, :n]) - kappa) <= 1e-8 * kappa


def test_shapes_dtypes_symmetry_padding_and_b():
    A, b, x, mask = sample_systems(30, (3, 7), kappa=10.0, seed=2)
    assert A.shape == (30, 7, 7) and b.shape == x.shape == mask.shape == (30, 7)
    assert A.dtype == b.dtype == x.dtype == np.float64 and mask.dtype == bool
    assert np.array_equal(A, A.transpose(0, 2, 1)), "A must be exactly symmetric"
    n_s = mask.sum(axis=1)
    assert np.array_equal(mask, np.arange(7)[None, :] < n_s[:, None]), "mask is a prefix of ones"
    real2 = mask[:, :, None] & mask[:, None, :]
    assert np.all(A[~real2] == 0) and np.all(b[~mask] == 0) and np.all(x[~mask] == 0)
    for s, n in enumerate(n_s):
        check_tensor(f"b[{s}] = A x", b[s, :n], A[s, :n, :n] @ x[s, :n], rtol=1e-13, atol=1e-15)
        assert np.all(np.linalg.eigvalsh(A[s, :n, :n]) > 0)


def test_sizes_in_range_and_all_appear():
    _, _, _, mask = sample_systems(400, (2, 9), seed=3)
    n_s = mask.sum(axis=1)
    assert n_s.min() >= 2 and n_s.max() <= 9
    assert sorted(set(n_s.tolist())) == list(range(2, 10))
    counts = np.bincount(n_s, minlength=10)[2:]
    assert counts.min() > 400 / 8 / 3, f"sizes far from uniform: {counts}"


def test_fixed_size():
    A, b, x, mask = sample_systems(6, 5, seed=4)
    assert A.shape == (6, 5, 5) and mask.all()
    A2, *_ = sample_systems(6, (5, 5), seed=4)
    assert np.array_equal(A, A2)
    assert parse_sizes(np.int64(4)) == (4, 4) and parse_sizes([2, 9]) == (2, 9)


def test_seeds():
    one = sample_systems(8, (2, 6), seed=5)
    two = sample_systems(8, (2, 6), seed=5)
    other = sample_systems(8, (2, 6), seed=6)
    for a, c in zip(one, two, strict=True):
        assert np.array_equal(a, c)
    assert not np.array_equal(one[0], other[0]) and not np.array_equal(one[2], other[2])
    seq = sample_systems(8, (2, 6), seed=[5, 0])  # the training loop's per-step seeds
    assert not np.array_equal(seq[0], sample_systems(8, (2, 6), seed=[5, 1])[0])


def test_haar_orthogonal_is_orthogonal_and_unbiased():
    rng = np.random.default_rng(7)
    n, count = 4, 4000
    U = haar_orthogonal(rng, count, n)
    check_tensor("U^T U", U.transpose(0, 2, 1) @ U, np.broadcast_to(np.eye(n), U.shape), rtol=0, atol=1e-12)
    # Haar: every entry has mean 0 and variance 1/n (std of a mean over count draws: 1/sqrt(n count)).
    # Without the sign fix the diagonal of Q from QR is biased (its mean is far from 0).
    bound = 5.0 / np.sqrt(n * count)
    mean = U.mean(axis=0)
    assert np.max(np.abs(mean)) < bound, mean
    assert np.max(np.abs((U**2).mean(axis=0) - 1.0 / n)) < 0.05
    # determinant +-1 equally likely under Haar on O(n)
    dets = np.linalg.det(U)
    assert abs(dets.mean()) < 5.0 / np.sqrt(count)


def test_spectrum_and_x_statistics():
    lam = spd_spectrum(np.random.default_rng(8), 2000, 6, kappa=10.0)
    assert np.all(lam[:, 0] == 0.1) and np.all(lam[:, -1] == 1.0)
    inner = lam[:, 1:-1]
    assert inner.min() >= 0.1 and inner.max() <= 1.0
    assert abs(inner.mean() - 0.55) < 0.02  # uniform on [0.1, 1]
    _, _, x, mask = sample_systems(2000, 6, seed=9)
    assert abs(x.mean()) < 0.03 and abs(x.var() - 1.0) < 0.05  # x ~ N(0, I)
