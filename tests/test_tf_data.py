"""The TensorFlow sampler (tf_impl.data): exact condition number, exact padding, same distribution as
the reference sampler, reproducible from its stateless seed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import check_tensor

import reference as ref
from tf_impl import data

# XLA compiles the batched QR in ~3 s per shape; the XLA path is checked once
# (test_same_systems_with_and_without_xla: identical systems), the rest runs the same graph without XLA.


def sample_systems(*args, jit_compile=False, **kwargs):
    return data.sample_systems(*args, jit_compile=jit_compile, **kwargs)


def test_shapes_mask_padding_symmetry():
    A, b, x, mask = sample_systems(300, (2, 9), kappa=10.0, seed=(1, 2))
    assert A.shape == (300, 9, 9) and b.shape == x.shape == mask.shape == (300, 9)
    assert A.dtype == b.dtype == x.dtype == np.float64 and mask.dtype == bool
    n_s = mask.sum(axis=1)
    assert np.array_equal(mask, np.arange(9)[None, :] < n_s[:, None]), "mask is a prefix of ones"
    pad2 = ~(mask[:, :, None] & mask[:, None, :])
    assert np.all(A[pad2] == 0) and np.all(b[~mask] == 0) and np.all(x[~mask] == 0), "padding exactly zero"
    assert np.array_equal(A, A.transpose(0, 2, 1)), "exactly symmetric"
    check_tensor("b = A x", b, np.einsum("bij,bj->bi", A, x), rtol=0, atol=1e-13)
    ref.check_systems(A, b, mask=mask, x=x)  # the reference's validation accepts them


@pytest.mark.parametrize("dtype,tol", [(tf.float64, 1e-10), (tf.float32, 3e-5)])
@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_exact_condition_number(dtype, tol, kappa):
    A, b, x, mask = sample_systems(200, (2, 8), kappa=kappa, seed=(kappa, 5), dtype=dtype)
    assert A.dtype == dtype.as_numpy_dtype
    for s in range(A.shape[0]):
        n = int(mask[s].sum())
        ev = np.linalg.eigvalsh(A[s, :n, :n].astype(np.float64))
        assert abs(ev[-1] - 1.0) <= tol, "||A||_2 = 1"
        assert abs(ev[0] * kappa - 1.0) <= tol * kappa, "lambda_min = 1/kappa"
        assert abs(ev[-1] / ev[0] / kappa - 1.0) <= tol * kappa, f"cond(A) = {ev[-1] / ev[0]} != {kappa}"
        assert np.all(ev >= 1.0 / kappa - tol) and np.all(ev <= 1.0 + tol)


def test_sizes_uniform():
    _, _, _, mask = sample_systems(4000, (2, 9), seed=3)
    counts = np.bincount(mask.sum(axis=1), minlength=10)[2:]
    expected = 4000 / 8
    # chi-square with 7 degrees of freedom: P(chi2 > 24.3) = 0.001
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 24.3, f"sizes not uniform: counts {counts.tolist()}, chi2 {chi2:.1f}"
    _, _, _, mask = sample_systems(10, 5, seed=3)
    assert mask.all() and mask.shape == (10, 5)


def test_same_distribution_as_reference():
    """Summary statistics of the TF sampler agree with the reference sampler's within 5 standard errors."""
    n, B = 4, 6000
    mine = sample_systems(B, n, kappa=10.0, seed=11)
    theirs = ref.sample_systems(B, n, kappa=10.0, seed=11)

    def stats(A, b, x, mask):
        return {"A00": A[:, 0, 0], "A01": A[:, 0, 1], "A01^2": A[:, 0, 1] ** 2, "A00^2": A[:, 0, 0] ** 2,
                "x0": x[:, 0], "x0^2": x[:, 0] ** 2, "|b|^2": (b**2).sum(axis=1), "trA": np.trace(A, axis1=1, axis2=2)}

    for (name, u), v in zip(stats(*mine).items(), stats(*theirs).values(), strict=True):
        se = np.sqrt(u.var() / B + v.var() / B)
        assert abs(u.mean() - v.mean()) <= 5 * se + 1e-12, f"{name}: {u.mean():.4f} vs reference {v.mean():.4f}"


def test_reproducible_and_streams_differ():
    first = sample_systems(16, (2, 6), seed=(5, 7))
    again = sample_systems(16, (2, 6), seed=(5, 7))
    for u, v in zip(first, again, strict=True):
        assert np.array_equal(u, v)
    other = sample_systems(16, (2, 6), seed=(5, 8))
    assert not np.allclose(first[2], other[2])
    assert np.array_equal(sample_systems(4, 3, seed=5)[0], sample_systems(4, 3, seed=(5, 0))[0])


def test_same_systems_with_and_without_xla():
    """Only full-range Philox integers are drawn, so XLA and plain TF see the same systems."""
    xla = sample_systems(64, (2, 9), seed=(2, 3), jit_compile=True)
    plain = sample_systems(64, (2, 9), seed=(2, 3), jit_compile=False)
    assert np.array_equal(xla[3], plain[3])  # exact: the sizes are integer draws, the mask compares integers
    for name, u, v in zip("Abx", xla[:3], plain[:3], strict=True):
        check_tensor(f"xla vs plain {name}", u, v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch=0, sizes=3), "batch"),
    (dict(batch=2, sizes=(1, 3)), "sizes"),
    (dict(batch=2, sizes=(5, 3)), "sizes"),
    (dict(batch=2, sizes="x"), "sizes"),
    (dict(batch=2, sizes=3, kappa=0.5), "kappa"),
    (dict(batch=2, sizes=3, kappa=float("nan")), "kappa"),
    (dict(batch=2, sizes=3, seed=(1, 2, 3)), "seed"),
    (dict(batch=2, sizes=3, seed="a"), "seed"),
    (dict(batch=2, sizes=3, dtype=tf.int32), "dtype"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_systems(**kwargs)
