"""``factorize(A).solve(b)`` is ``solve(A, b)``, and the sparse layers are the dense ones, in both twins.

- every shipped model, one pass and with ``tol``, one right-hand side, several as columns, and a batch of
  matrices: the factorization gives ``solve``'s answers to rounding;
- a model that does not read ``b`` before its last layer is cached as a matrix (``Factorization.inverse``):
  ``solve`` through that matrix equals ``solve`` running the whole model on both signs at every pass;
- the sparse layers (only the products the nonzero block scalars need) equal the dense path on random weights
  with random zero patterns, and the model's matrix equals its odd part in ``b``.
"""

from __future__ import annotations

import importlib
import re
import warnings

import numpy as np
import pytest

import reference.model as ref_model
import tf_impl.model as tf_model
from reference.config import ModelConfig
from reference.data import sample_systems
from reference.pretrained import PRETRAINED, load_pretrained
from tests.helpers import check_tensor

ref_solve = importlib.import_module("reference.solve")  # the modules (the packages' ``solve`` is the function)
tf_solve = importlib.import_module("tf_impl.solve")
CACHED = ("newton-schulz",) + tuple(name for name in PRETRAINED if name.startswith("learned-"))
TWINS = {"reference": (ref_solve.solve, ref_solve.factorize, ref_model.forward, ref_model),
         "tf_impl": (tf_solve.solve, tf_solve.factorize, tf_solve._forward64, tf_model)}


def systems(n=9, batch=3, seed=0):
    A, b, _, _ = sample_systems(batch, n, 10.0, seed=seed)
    columns = np.random.default_rng(seed).standard_normal((n, 4))  # (N, k): four right-hand sides
    return A, b, columns


def close(name, mine, ref):
    check_tensor(name, mine, ref, rtol=0.0, atol=1e-9 * max(1.0, float(np.max(np.abs(ref)))))


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("name", PRETRAINED)
def test_factorize_solve_equals_solve(name, twin):
    solve, factorize, _, _ = TWINS[twin]
    A, b, C = systems()
    with warnings.catch_warnings():  # a pass far from the answer, tol not met, "nothing cached": not the point
        warnings.simplefilter("ignore")
        one, many = factorize(A[0], model=name), factorize(A, model=name)
        assert one.cached == many.cached == (name in CACHED)
        assert (one.inverse is None) == (name not in CACHED) and (one.reason is None) == (name in CACHED)
        for kwargs in ({}, {"tol": 1e-7, "max_passes": 4}):
            close(f"{name} one", one.solve(b[0], **kwargs), solve(A[0], b[0], model=name, **kwargs))
            cols = np.stack([solve(A[0], C[:, k], model=name, **kwargs) for k in range(C.shape[1])], axis=1)
            close(f"{name} columns", one.solve(C, **kwargs), cols)
            close(f"{name} columns through solve", solve(A[0], C, model=name, **kwargs), cols)
            close(f"{name} batch", many.solve(b, **kwargs), solve(A, b, model=name, **kwargs))


def full_passes(twin):
    """``solve`` of ``twin`` that runs the whole model on both signs at every pass (no matrix cached)."""
    forward_fn = TWINS[twin][2]
    return lambda A, b, **kw: ref_solve.solve_with(forward_fn, A, b, operator_fn=None, **kw)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("name", ["newton-schulz", "learned-L8"])
def test_the_cached_matrix_is_the_model(name, twin):
    """Through the model's matrix (every pass, both signs, every column) = running the model at every pass."""
    solve, _, _, _ = TWINS[twin]
    A, b, C = systems(n=12, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kwargs in ({}, {"tol": 1e-10, "max_passes": 6}):
            fast = solve(A, b, model=name, return_info=True, **kwargs)
            slow = full_passes(twin)(A, b, model=name, return_info=True, **kwargs)
            np.testing.assert_array_equal(fast.passes, slow.passes)
            close(f"{name} batch", fast.x, slow.x)
            fast = solve(A[0], C, model=name, return_info=True, **kwargs)
            slow = [full_passes(twin)(A[0], C[:, k], model=name, return_info=True, **kwargs) for k in range(4)]
            np.testing.assert_array_equal(fast.passes, [s.passes for s in slow])
            close(f"{name} columns", fast.x, np.stack([s.x for s in slow], axis=1))


def test_inverse_is_the_one_pass_direction_at_the_users_scale():
    A, b, _ = systems(n=10, seed=2)
    A0, b0 = 3.0e5 * A[0], -7.0e-3 * b[0]
    fac = ref_solve.factorize(A0, model="newton-schulz")
    x = ref_solve.solve(A0, b0)
    d = fac.inverse @ b0
    alpha = float(x @ d / (d @ d))  # one pass is the step length times M b
    close("x = alpha M b", x, alpha * d)
    assert abs(alpha - 1.0) < 1e-6  # the construction is exact at cond 10: M is A^-1 to rounding
    close("M A", fac.inverse @ A0, np.eye(10))
    assert ref_solve.factorize(A, model="newton-schulz").inverse.shape == (3, 10, 10)


def test_factorize_says_when_nothing_can_be_cached():
    A, b, _ = systems()
    with pytest.warns(UserWarning, match=r"nothing of shipped model 'block-n9' can be cached \(layer 0 of 4 reads b"):
        fac = ref_solve.factorize(A[0], model="block-n9")
    assert not fac.cached and fac.inverse is None and "reads b" in fac.reason
    params, cfg, _ = load_pretrained("block-n9")
    with pytest.raises(ValueError, match="layer 0 of 4 reads b"):
        ref_model.approximate_inverse(params, cfg, A)
    with pytest.raises(ValueError, match="layer 0 of 4 reads b"):
        tf_model.approximate_inverse(params, cfg, A)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(8), r"b must have shape \(N,\) = \(9,\) or \(N, k\)"),
    (np.zeros((8, 2)), r"b must have shape \(N,\) = \(9,\) or \(N, k\)"),
    (np.full(9, np.nan), "b contains NaN or Inf"),
    (np.zeros(9, dtype=complex), "real numbers"),
])
def test_factorization_refuses_bad_right_hand_sides(bad, match):
    A, _, _ = systems()
    fac = ref_solve.factorize(A[0])
    with pytest.raises(ValueError, match=match):
        fac.solve(bad)
    with pytest.raises(ValueError, match=r"x0 must have shape \(9,\) \(that of b\)"):
        fac.solve(np.ones(9), x0=np.ones(8))
    with pytest.raises(ValueError, match="tol must be"):
        fac.solve(np.ones(9), tol=2.0)


@pytest.mark.parametrize("twin", TWINS)
def test_warnings_are_solves_and_name_the_callers_line(twin):
    """Through the factorization (``solve`` of one or several right-hand sides, ``Factorization.solve``), the
    warnings are ``solve``'s: one pass that may be far from the answer (``cond(A)`` 1e6 against the model's kappa
    10), ``tol`` not reached; each names the line that called."""
    solve, factorize, _, _ = TWINS[twin]
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((9, 9)))[0]
    A = Q @ np.diag(np.logspace(-6, 0, 9)) @ Q.T  # (9, 9), cond 1e6
    A, b, model = (A + A.T) / 2, rng.standard_normal(9), "learned-L8"
    fac = factorize(A, model=model)
    far = r"one pass of shipped model 'learned-L8' may be far from the answer on {0} of {0} system\(s\): {0} have a"
    calls = [(lambda: solve(A, b, model=model), far.format(1)),
             (lambda: solve(A, np.stack([b, -b], axis=1), model=model), far.format(2)),
             (lambda: fac.solve(b), far.format(1)),
             (lambda: solve(A, b, model=model, tol=1e-15, max_passes=1), r"solve did not reach tol=1e-15 on 1 of 1"),
             (lambda: fac.solve(b, tol=1e-15, max_passes=1), r"solve did not reach tol=1e-15 on 1 of 1")]
    for call, match in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        where = [(w.filename, w.lineno) for w in caught]  # the lambda's line, not the loop's
        assert where == [(__file__, call.__code__.co_firstlineno)], (where, [str(w.message) for w in caught])
        assert re.match(match, str(caught[0].message)), str(caught[0].message)


def random_model(rng, trial):
    """Random weights with a random zero pattern (40% nonzero, large enough that every product matters)."""
    cfg = ModelConfig(n_layers=3, n_heads=int(rng.integers(1, 4)), n_identity=int(rng.integers(1, 4)),
                      attention_norm=("none", "n")[trial % 2], b_last_layer=trial % 3 == 0, equivariant=trial % 6 == 0)
    params = {k: v * (rng.random(v.shape) < 0.4) * 20 for k, v in ref_model.init_params(cfg, trial).items()}
    return params, cfg


def test_sparse_layers_equal_the_dense_path_on_random_zero_patterns():
    """Both twins, padded batches, every association of the plans (scores: query, key, pairs; update: columns,
    rows) and the identity groups tracked through the layers."""
    rng = np.random.default_rng(0)
    A, b, _, mask = sample_systems(4, (3, 7), 10.0, seed=1)
    x0 = rng.standard_normal(b.shape) * mask
    seen = set()
    for trial in range(12):
        params, cfg = random_model(rng, trial)
        dense = ref_model.forward_layers(params, cfg, A, b, mask, x0)  # (B, L+1, M)
        close(f"reference {trial}", ref_model.forward_layers(params, cfg, A, b, mask, x0, sparse=True), dense)
        if trial % 2 == 0:  # half the trials in TensorFlow (graph mode: an XLA compile per model costs seconds)
            close(f"tf_impl {trial}", tf_model.forward_layers(params, cfg, A, b, mask, x0, sparse=True,
                                                            jit_compile=False), dense)
        for plan in ref_model.sparse_plans(params, cfg):
            seen |= {plan.scores, *plan.update}
        if ref_model.first_layer_reading_b(params, cfg) is None:  # the model as a matrix of b
            odd = (ref_model.forward(params, cfg, A, b, mask) - ref_model.forward(params, cfg, A, -b, mask)) / 2
            for twin, F in (("reference", ref_model.approximate_inverse(params, cfg, A, mask)),
                            ("tf_impl", tf_model.approximate_inverse(params, cfg, A, mask, jit_compile=False))):
                close(f"{twin} matrix {trial}", np.einsum("bij,bj->bi", F, b), odd)  # F (B, M, M)
    assert seen == {"query", "key", "pairs", "columns", "rows"}


def test_products_of_the_newton_schulz_layers():
    """Two N x N products a layer (X A, then the scores times X), none in the first (X = I) and the last."""
    params, cfg, _ = load_pretrained("newton-schulz")
    assert [plan.products for plan in ref_model.sparse_plans(params, cfg)][:-1] == [0] + [2] * 10
