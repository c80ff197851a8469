"""Krylov analysis, evaluation records and the `python -m tf_impl.evaluate` CLI end to end."""

import json
import math

import numpy as np
import pytest

import reference
from reference.analysis import effective_krylov_dimension, krylov_best_errors
from reference.baselines import conjugate_gradient
from reference.constructions import richardson_params
from reference.data import sample_systems
from reference.evaluation import eval_systems, evaluate, layer_analysis, system_errors


def test_krylov_floor_is_below_cg_and_exact_at_n():
    A, b, x, mask = sample_systems(40, (3, 8), 10.0, seed=5)
    x0 = np.random.default_rng(1).standard_normal(x.shape) * mask
    best = krylov_best_errors(A, b, x, mask, x0=x0, d_max=8)  # (B, 9)
    hist = conjugate_gradient(A, b, 8, mask, x0=x0, return_history=True)
    for k in range(9):
        cg_mse = system_errors(hist[:, k], x, mask)[0]
        assert np.all(best[:, k] <= cg_mse * (1 + 1e-9) + 1e-20), k  # 2-norm optimal in the same space
    n_s = mask.sum(1)
    assert np.all(best[np.arange(40), n_s] < 1e-18)  # K_N is the whole space
    assert np.all(np.diff(best, axis=1) <= 1e-15)  # monotone in d


def test_krylov_padding_invariance():
    A, b, x, mask = sample_systems(6, (3, 7), 10.0, seed=2)
    full = krylov_best_errors(A, b, x, mask, d_max=5)
    for s in range(6):
        n = mask[s].sum()
        alone = krylov_best_errors(A[s:s + 1, :n, :n], b[s:s + 1, :n], x[s:s + 1, :n], d_max=5)
        np.testing.assert_allclose(alone[0], full[s], rtol=1e-10, atol=1e-15)


def test_effective_dimension_edge_cases():
    curve = np.array([1.0, 1e-1, 1e-2, 1e-3])
    assert effective_krylov_dimension(2.0, curve) == 0.0
    assert effective_krylov_dimension(1e-2, curve) == pytest.approx(2.0)
    assert effective_krylov_dimension(10 ** -1.5, curve) == pytest.approx(1.5)
    assert math.isinf(effective_krylov_dimension(1e-6, curve))


def test_eval_systems_fixed_per_size_and_kappa():
    a = eval_systems(5, 10.0, 7)
    b = eval_systems(5, 10.0, 7)
    c = eval_systems(6, 10.0, 7)
    d = eval_systems(5, 100.0, 7)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape != c[0].shape and not np.allclose(a[1], d[1])


def test_evaluate_records_are_sane():
    params, cfg = richardson_params(1.0)
    recs = evaluate({"rich": (params, cfg)}, [2, 3, 5], [10.0], n_systems=50)
    by = {(r["n"], r["method"]): r for r in recs}
    for n in (2, 3, 5):
        assert by[(n, "cholesky")]["mse"] < 1e-25
        assert 0.5 < by[(n, "zero")]["mse"] < 1.5
        assert by[(n, "rich")]["iters"] == 1
    assert by[(2, "cg")]["mse"] > 1e-6  # one iteration is not exact at N = 2
    la = layer_analysis(params, cfg, 4, 10.0, n_systems=50)
    assert len(la["model"]) == 2 and la["krylov_best"][0] == pytest.approx(la["model"][0])
    # one Richardson step with eta = 1 is a point of x0 + K_1: it cannot beat the 2-norm floor
    assert la["model"][1] >= la["krylov_best"][1] * (1 - 1e-12)


def test_evaluate_cli_end_to_end(tmp_path):
    from tf_impl import evaluate as ev

    blk_p, blk_c = richardson_params(1.0)
    reference.save_checkpoint(tmp_path / "blk.npz", blk_p, blk_c)
    full_c = reference.ModelConfig("full", 2, 1, n=4, embed_dim=3, init_scale=0.05)
    reference.save_checkpoint(tmp_path / "full.npz", reference.init_params(full_c, 0), full_c)
    out = tmp_path / "out"
    ev.main([str(tmp_path / "blk.npz"), str(tmp_path / "full.npz"), "--n-max", "6", "--n-systems", "30",
             "--layer-sizes", "4", "--kappa", "10", "100", "--out", str(out)])
    data = json.loads((out / "eval.json").read_text())
    methods = {(r["kappa"], r["n"], r["method"]) for r in data["records"]}
    for kappa in (10.0, 100.0):
        for n in range(2, 7):
            for m in ("blk", "zero", "cg", "chebyshev", "cholesky"):
                assert (kappa, n, m) in methods
            assert ((kappa, n, "full") in methods) == (n == 4)
    assert (out / "eval.md").read_text().count("### MSE at kappa") == 2
    assert sorted(a["name"] for a in data["layers"]) == ["blk", "blk", "full", "full"]  # N = 4, two kappas
    assert all(len(a["model"]) == 3 for a in data["layers"] if a["name"] == "full")  # x0 + 2 layers
    for png in ("error_vs_n_kappa10.png", "error_vs_n_kappa100.png", "layers_N4_kappa10.png"):
        assert (out / png).stat().st_size > 1000
    with pytest.raises(SystemExit):
        ev.main([str(tmp_path / "blk.npz"), "--n-min", "1"])
    with pytest.raises(ValueError, match="does not exist"):
        ev.main([str(tmp_path / "missing.npz"), "--out", str(out)])
