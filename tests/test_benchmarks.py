"""Smoke tests of the benchmark scripts: one tiny case each runs and reports sane numbers (the real
measurements are in results/ and docs/performance.md, not in the timed test suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_solve_one_case(tmp_path):
    from reference.pretrained import pretrained_path

    try:
        pretrained_path("block-mixed")
    except ValueError:
        pytest.skip("block-mixed weights not shipped")
    bench = load_script("bench_solve")
    result = bench.main(["--cases", "5x2", "--repeats", "1", "--out", str(tmp_path / "b.json")])
    (row,) = result["rows"]
    assert row["n"] == 5 and row["batch"] == 2 and 0 < row["err_model"] < 0.5
    for key in ("model_ms", "cg_ms", "scipy_cg_ms", "cholesky_ms", "solve_tol_ms", "cg_tol_ms"):
        assert row[key] > 0, key
    assert row["solve_tol_converged"] == 1.0 and 1 <= row["cg_iters_same_error"] <= 20
    assert (tmp_path / "b.json").exists() and "| 5 | 2 |" in bench.markdown(result)


def test_bench_train_step_one_range(tmp_path):
    bench = load_script("bench_train_step")
    report = bench.main(["--ranges", "2-3", "--rounds", "1", "--steps", "1", "--out", str(tmp_path / "t.json")])
    (row,) = report["rows"]
    assert set(row["results"]) == {"xla_structured", "xla_structured_sampled", "xla_dense", "xla_dense_sampled",
                                   "graph_structured", "graph_dense", "reference"}
    for r in row["results"].values():
        assert r["step_ms_median"] > 0 and 0 < r["fraction_of_matmul_peak"] < 10
    assert row["flops_structured"] < row["flops_dense"] and report["matmul_2048_gflops"] > 0
    assert "| [2, 3] |" in bench.markdown(report) and (tmp_path / "t.json").exists()
    assert 10 < bench.peak_rss_mib("import numpy") < 10_000


def test_training_curves_reads_a_run(tmp_path):
    from tf_impl.train import main as train_main

    run = tmp_path / "run"
    assert train_main(["--n-layers", "1", "--n-max", "3", "--batch-size", "8", "--steps", "6", "--warmup", "1",
                       "--eval-every", "2", "--eval-systems", "5", "--mode", "graph", "--out", str(run)]) == 0
    script = load_script("training_curves")
    data = script.main([str(run), "--labels", "tiny", "--window", "3", "--out", str(tmp_path / "c")])
    assert [s for s, _ in data["tiny"]["eval_loss"]] == [2, 4, 6]
    assert [s for s, _ in data["tiny"]["train_loss_windowed"]] == [2, 5]  # steps 0-2 and 3-5
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "c.json").exists()
    assert data["tiny"]["steps"] == 6 and [r["n"] for r in data["tiny"]["final_evaluation"]] == [2, 3]


def test_bench_factorize_small(tmp_path):
    bench = load_script("bench_factorize")
    result = bench.main(["--sizes", "12,6,4", "--repeats", "1", "--models", "newton-schulz,block-n9",
                         "--out", str(tmp_path / "f.json")])
    counts = {row["model"]: row["products_per_layer"] for row in result["products"]}
    assert counts["newton-schulz"] == [0] + [2] * 10 + [0] and "full-n9" not in counts
    assert all(v > 0 for row in result["targets"].values() for v in row.values())
    assert result["targets"]["tol_learned"]["residual"] <= 1e-12 and (tmp_path / "f.json").exists()
    assert [row["model"] for row in result["per_model"]] == ["block-n9", "newton-schulz"]
    assert all(row["one_pass_ms"] > 0 and row["bound_ms"] > 0 for row in result["per_model"])


def test_bench_compute_fair_one_case(tmp_path):
    bench = load_script("bench_compute_fair")
    result = bench.main(["--cases", "6x2", "--models", "newton-schulz,block-mixed", "--repeats", "1",
                         "--out", str(tmp_path / "c.json")])
    by = {(r["method"], r.get("tol"), r.get("iters")): r for r in result["rows"]}
    assert by[("Cholesky", None, None)]["error"] < 1e-12 and by[("newton-schulz", None, None)]["error"] < 1e-10
    assert by[("CG", None, 8)]["error"] < by[("CG", None, 1)]["error"] and (tmp_path / "c.png").exists()
