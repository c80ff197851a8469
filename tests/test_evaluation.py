"""Krylov analysis (reference.analysis), evaluation records (reference.evaluation) and the
``python -m tf_impl.evaluate`` CLI end to end on tiny checkpoints."""

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reference
from reference import report
from reference.analysis import effective_krylov_dimension, krylov_best_errors
from reference.baselines import BASELINES, conjugate_gradient
from reference.constructions import richardson_params
from reference.data import sample_systems
from reference.evaluation import eval_systems, evaluate, layer_analysis, model_can_run, model_vs_cg, system_errors
from tests.helpers import check_tensor

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# Krylov floor


@pytest.mark.parametrize("with_x0", [False, True])
def test_krylov_floor_is_below_cg_and_exact_at_n(with_x0):
    A, b, x, mask = sample_systems(40, (3, 8), 10.0, seed=5)
    x0 = np.random.default_rng(1).standard_normal(x.shape) * mask if with_x0 else None
    best = krylov_best_errors(A, b, x, mask, x0=x0, d_max=8)  # (B, 9)
    assert best.shape == (40, 9)
    hist = conjugate_gradient(A, b, 8, mask, x0=x0, return_history=True)  # (B, 9, M)
    for d in range(9):
        cg_mse = system_errors(hist[:, d], x, mask)[0]
        assert np.all(best[:, d] <= cg_mse * (1 + 1e-9) + 1e-20), d  # 2-norm optimal in CG's own space
    start = x if x0 is None else x - x0
    check_tensor("column 0 is x0", best[:, 0], (start**2).sum(1) / mask.sum(1), rtol=1e-14)
    n_s = mask.sum(1)
    assert np.all(best[np.arange(40), n_s] < 1e-18)  # K_N is the whole space
    assert np.all(np.diff(best, axis=1) <= 1e-15)  # monotone in d


@pytest.mark.parametrize("with_x0", [False, True])
def test_krylov_padding_invariance(with_x0):
    A, b, x, mask = sample_systems(6, (3, 7), 10.0, seed=2)
    x0 = np.random.default_rng(3).standard_normal(x.shape) * mask if with_x0 else None
    padded = krylov_best_errors(A, b, x, mask, x0=x0, d_max=5)
    for s in range(6):
        n = mask[s].sum()
        x0s = None if x0 is None else x0[s:s + 1, :n]
        alone = krylov_best_errors(A[s:s + 1, :n, :n], b[s:s + 1, :n], x[s:s + 1, :n], x0=x0s, d_max=5)
        check_tensor(f"system {s}", alone[0], padded[s], rtol=1e-10, atol=1e-15)


def test_krylov_floor_is_scale_covariant():
    """Scaling b and x by s scales every MSE by s^2 (the breakdown test must be relative)."""
    A, b, x, mask = sample_systems(5, 6, 10.0, seed=1)
    base = krylov_best_errors(A, b, x, mask)
    for s in (1e-8, 1e10):
        check_tensor(f"scale {s:g}", krylov_best_errors(A, s * b, s * x, mask) / s**2, base, rtol=1e-6, atol=1e-14)


def test_krylov_space_exhausted_early():
    """A with two distinct eigenvalues: the solution is in x0 + K_2, later dimensions add nothing."""
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    A = (U * np.array([0.2, 0.2, 0.2, 1.0, 1.0, 1.0])) @ U.T
    A = 0.5 * (A + A.T)
    x = rng.standard_normal(6)
    best = krylov_best_errors(A[None], (A @ x)[None], x[None])[0]  # d = 0..6
    assert best[1] > 1e-3 and np.all(best[2:] < 1e-24) and np.all(np.isfinite(best))
    # x0 = x: nothing to do, the error is 0 at every d (and no 0/0); exact, as the error x - x0 is exactly 0
    assert np.all(krylov_best_errors(A[None], (A @ x)[None], x[None], x0=x[None]) == 0)


def test_effective_dimension_edge_cases():
    curve = np.array([1.0, 1e-1, 1e-2, 1e-3])
    assert effective_krylov_dimension(2.0, curve) == 0.0  # no better than x0
    assert effective_krylov_dimension(1.0, curve) == 0.0
    assert effective_krylov_dimension(1e-2, curve) == pytest.approx(2.0)  # a point of the curve: its d
    assert effective_krylov_dimension(10 ** -1.5, curve) == pytest.approx(1.5)  # log-linear in between
    assert effective_krylov_dimension(0.5, curve) == pytest.approx(math.log10(2))
    assert math.isinf(effective_krylov_dimension(1e-6, curve))  # better than every d of the curve
    exact = np.array([1.0, 1e-2, 0.0])  # a space exhausted at d = 2
    assert effective_krylov_dimension(0.0, exact) == pytest.approx(2.0)
    assert 1.0 < effective_krylov_dimension(1e-10, exact) < 2.0


# ------------------------------------------------------------------------------------------------
# evaluation records


def test_eval_systems_fixed_per_size_kappa_and_seed():
    a = eval_systems(5, 10.0, 7)
    for same in (eval_systems(5, 10.0, 7), eval_systems(5, 10, 7), eval_systems(np.int64(5), np.float64(10.0), 7)):
        for u, v in zip(a, same, strict=True):
            np.testing.assert_array_equal(u, v)  # deterministic, whatever the numeric type of n and kappa
    assert eval_systems(6, 10.0, 7)[0].shape == (7, 6, 6)
    assert not np.allclose(eval_systems(6, 10.0, 7)[2][:, :5], a[2])  # other n: other draws, not a prefix
    assert not np.allclose(eval_systems(5, 100.0, 7)[2], a[2])
    assert not np.allclose(eval_systems(5, 10.0, 7, seed=1)[2], a[2])
    assert np.allclose(np.linalg.cond(eval_systems(5, 100.0, 7)[0]), 100.0)


def test_evaluate_uses_the_same_systems_for_every_method():
    blk = reference.ModelConfig("block", n_layers=3, n_heads=1, attention_norm="n", init_scale=0.05)
    blk_p = reference.init_params(blk, 1)
    full = reference.ModelConfig("full", n_layers=3, n_heads=1, n=3, embed_dim=2, init_scale=0.05)
    full_p = reference.init_params(full, 2)
    recs = evaluate({"blk": (blk_p, blk), "full": (full_p, full)}, [2, 3, 4, 5], [10.0], n_systems=50)
    by = {(r["n"], r["method"], r["iters"]): r for r in recs}
    assert len(by) == len(recs)  # one record per (N, method, iters)
    for n in (2, 3, 4, 5):
        A, b, x, mask = eval_systems(n, 10.0, 50)
        for name, (params, cfg) in (("blk", (blk_p, blk)), ("full", (full_p, full))):
            assert ((n, name, 3) in by) == model_can_run(cfg, n) == (name == "blk" or n == 3)
            if model_can_run(cfg, n):  # the record is the model on exactly these systems
                mse = system_errors(reference.forward(params, cfg, A, b), x, mask)[0].mean()
                assert by[(n, name, 3)]["mse"] == pytest.approx(mse, rel=1e-12)
        assert by[(n, "zero", 0)]["mse"] == pytest.approx((x**2).mean(), rel=1e-12)
        assert 0.6 < by[(n, "zero", 0)]["mse"] < 1.4  # x ~ N(0, I)
        assert by[(n, "cholesky", 0)]["mse"] < 1e-25
        assert by[(n, "cholesky", 0)]["rel"] < 1e-12
        cg = by[(n, "cg", 3)]
        assert (cg["mse"] < 1e-20) == (n <= 3), n  # CG is exact in N steps, not before
        assert set(BASELINES) == {m for (nn, m, _) in by if nn == n} - {"blk", "full", "zero"}
        for r in (by[(n, "zero", 0)], cg, by[(n, "blk", 3)]):
            assert r["kappa"] == 10.0 and r["mse_sem"] >= 0 and r["rel"] >= 0


def test_evaluate_records_with_richardson_weights():
    params, cfg = richardson_params(1.0)
    recs = evaluate({"rich": (params, cfg)}, [2, 3, 5], [10.0], n_systems=50, baselines=["cg", "richardson"])
    by = {(r["n"], r["method"]): r for r in recs}
    assert {m for (_, m) in by} == {"rich", "zero", "cg", "richardson"}
    for n in (2, 3, 5):
        assert by[(n, "rich")]["iters"] == 1 and by[(n, "rich")]["kind"] == "model"
        assert by[(n, "rich")]["mse"] < by[(n, "zero")]["mse"]  # x = b is a better guess than 0 here
    assert by[(2, "cg")]["mse"] > 1e-6  # one iteration is not exact at N = 2
    la = layer_analysis(params, cfg, 4, 10.0, n_systems=50)
    assert len(la["model"]) == 2 and la["krylov_best"][0] == pytest.approx(la["model"][0])
    assert la["cg"][0] == pytest.approx(la["model"][0])
    assert len(la["krylov_best_all"]) == 5 and la["effective_krylov_dim"][0] == pytest.approx(0, abs=1e-9)
    # one Richardson step with eta = 1 is a point of x0 + K_1: it cannot beat the 2-norm floor
    assert la["model"][1] >= la["krylov_best"][1] * (1 - 1e-12)
    assert 0 < la["effective_krylov_dim"][1] <= 1 + 1e-9


def test_model_vs_cg_matches_evaluate_and_both_twins():
    from tf_impl.model import forward as tf_forward

    params, cfg = richardson_params(1.0)
    rows = model_vs_cg(params, cfg, [2, 3, 5], 10.0, 40)
    recs = {(r["n"], r["method"]): r for r in evaluate({"rich": (params, cfg)}, [2, 3, 5], [10.0], n_systems=40,
                                                        baselines=["cg"])}
    assert [r["n"] for r in rows] == [2, 3, 5]
    for r in rows:  # the same systems and the same metrics as evaluate()
        for name, method in (("model", "rich"), ("cg", "cg"), ("zero", "zero")):
            assert r[f"mse_{name}"] == pytest.approx(recs[(r["n"], method)]["mse"], rel=1e-12)
            assert r[f"rel_{name}"] == pytest.approx(recs[(r["n"], method)]["rel"], rel=1e-12)
    tf_rows = model_vs_cg(params, cfg, [2, 3, 5], 10.0, 40,
                          forward=lambda p, c, A, b, m: tf_forward(p, c, A, b, m, jit_compile=False))
    for r, t in zip(rows, tf_rows, strict=True):
        check_tensor(f"mse_model N={r['n']}", t["mse_model"], r["mse_model"], atol=1e-12)


def test_evaluate_rejects_a_model_named_like_a_baseline():
    with pytest.raises(ValueError, match="taken by baselines"):
        evaluate({"cg": richardson_params(1.0)}, [3], [10.0], n_systems=5)


# ------------------------------------------------------------------------------------------------
# the CLI


@pytest.fixture
def checkpoints(tmp_path):
    blk_p, blk_c = richardson_params(1.0)  # block, 1 layer
    reference.save_checkpoint(tmp_path / "blk.npz", blk_p, blk_c)
    full_c = reference.ModelConfig("full", n_layers=2, n_heads=1, n=4, embed_dim=3, init_scale=0.05)
    reference.save_checkpoint(tmp_path / "full.npz", reference.init_params(full_c, 0), full_c)
    return tmp_path / "blk.npz", tmp_path / "full.npz"


def test_evaluate_cli_end_to_end(tmp_path, checkpoints):
    from tf_impl import evaluate as ev

    out = tmp_path / "out"
    result = ev.evaluate_cli([*map(str, checkpoints), "--n-max", "6", "--n-systems", "50", "--layer-sizes", "4",
                      "--kappa", "10", "100", "--out", str(out)])
    data = json.loads((out / "eval.json").read_text())
    assert data["records"] == json.loads(json.dumps(result["records"]))
    keys = {(r["kappa"], r["n"], r["method"], r["iters"]) for r in data["records"]}
    assert len(keys) == len(data["records"])
    for kappa in (10.0, 100.0):
        for n in range(2, 7):
            assert (kappa, n, "blk", 1) in keys and (kappa, n, "zero", 0) in keys and (kappa, n, "cholesky", 0) in keys
            for m in set(BASELINES) - {"cholesky"}:
                for depth in (1, 2):  # every depth some model has
                    assert (kappa, n, m, depth) in keys, (kappa, n, m, depth)
            assert ((kappa, n, "full", 2) in keys) == (n == 4)  # the full model only at its N
    assert {r["method"] for r in data["records"]} == {"blk", "full", "zero", *BASELINES}
    assert set(data["models"]) == {"blk", "full"} and data["models"]["full"]["config"]["n"] == 4
    md = (out / "eval.md").read_text()
    assert md.count("### MSE at kappa") == 2 and "**full** (L=2)" in md
    assert md == report.eval_markdown(data)  # rendered again from eval.json alone: the same page
    widths = [line.count("|") - 1 for line in md.splitlines() if line.startswith("| N |")]
    assert widths and max(widths) <= 8, widths  # baselines in their own table: every table fits a page
    assert sorted(a["name"] for a in data["layers"]) == ["blk", "blk", "full", "full"]  # N = 4, two kappas
    assert all(len(a["model"]) == 3 for a in data["layers"] if a["name"] == "full")  # x0 + 2 layers
    for png in ("error_vs_n_kappa10.png", "error_vs_n_kappa100.png", "layers_N4_kappa10.png",
                "layers_N4_kappa100.png"):
        assert (out / png).stat().st_size > 1000


def test_evaluate_cli_renames_a_model_called_like_a_baseline(tmp_path, checkpoints):
    from tf_impl import evaluate as ev

    (tmp_path / "cg.npz").write_bytes(checkpoints[0].read_bytes())
    result = ev.evaluate_cli([str(tmp_path / "cg.npz"), "--n-max", "3", "--n-systems", "5", "--layer-sizes",
                      "--no-plots", "--out", str(tmp_path / "out")])
    assert set(result["models"]) == {"cg-2"}
    model = [r for r in result["records"] if r["method"] == "cg-2"]
    cg = [r for r in result["records"] if r["method"] == "cg"]
    assert len(model) == len(cg) == 2 and all(r["kind"] == "model" for r in model)
    assert all(r["kind"] == "baseline" for r in cg)


@pytest.mark.parametrize("args", [
    ["--n-min", "1"], ["--n-min", "5", "--n-max", "4"], ["--n-systems", "1"], ["--kappa", "0.5"],
    ["--kappa", "nan"], ["--baselines", "cg", "foo"], ["--layer-sizes", "1"], [],
])
def test_evaluate_cli_rejects_bad_arguments(tmp_path, checkpoints, args, capsys):
    from tf_impl import evaluate as ev

    argv = [*args, "--out", str(tmp_path / "out")] if args else []  # []: no checkpoint at all
    with pytest.raises(SystemExit) as e:
        ev.main([str(checkpoints[0]), *argv] if args else argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # rejected before any work


def test_evaluate_cli_bad_checkpoints_and_folders_are_one_line(tmp_path, checkpoints, capsys):
    from tf_impl import evaluate as ev

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "file").write_text("x")
    for argv, message in (([str(tmp_path / "missing.npz")], "no checkpoint .*missing.npz.*block-mixed"),
                          ([str(tmp_path / "junk.npz")], "checkpoint .*junk.npz' is not a readable .npz"),
                          (["block-nine"], "no checkpoint 'block-nine'.*shipped model")):
        assert ev.main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert re.match(f"error: {message}", err) and err.count("\n") == 1, err
    for argv in (["--seed", "-1"], ["--out", str(tmp_path / "file")], ["--n-max", "100000"]):
        with pytest.raises(SystemExit) as e:
            ev.main([str(checkpoints[0]), *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "error:" in err and "Traceback" not in err


def test_evaluate_writes_strict_json_and_defaults_outside_tracked_files(tmp_path, checkpoints, monkeypatch):
    from tf_impl import evaluate as ev

    assert ev.parse_args([str(checkpoints[0])]).out == "runs/eval"
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/eval/eval.json"], cwd=ROOT)
    assert ignored.returncode == 0, "the default output folder must be ignored by git"
    report.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64(2.0)})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": 2.0} and "NaN" not in text


def test_no_default_writes_into_committed_results_and_records_name_no_machine_path(tmp_path, capsys):
    """--robustness and --probe default to runs/ too (--probe wrote to results/probe, and the files it wrote
    named the machine's folders); an --out inside results/ needs --overwrite-shipped; the records name a shipped
    checkpoint by its path in the repository."""
    from reference.pretrained import pretrained_path
    from tests.test_tutorials import MACHINE_PATH
    from tf_impl import evaluate as ev

    assert ev.parse_args(["x.npz", "--probe"]).out == "runs/probe"
    assert ev.parse_args(["x.npz", "--robustness"]).out == "runs/robustness"
    for extra in ([], ["--robustness"], ["--probe"]):
        with pytest.raises(SystemExit) as stop:
            ev.parse_args(["x.npz", "--out", "results/robustness", *extra])
        assert stop.value.code == 2
        assert "--out results/robustness is inside results/, which is committed with the project: give " \
               "--overwrite-shipped" in capsys.readouterr().err
    assert ev.parse_args(["x.npz", "--out", str(ROOT / "results" / "eval"), "--overwrite-shipped"]).overwrite_shipped
    try:
        path = pretrained_path("learned-L2")
    except ValueError:
        pytest.skip("learned-L2 not shipped")
    out = ROOT / "runs" / f"probe-test-{tmp_path.name}"  # a folder inside the repository, as the default is
    try:
        ev.evaluate_cli([str(path), "--probe", "--layer-sizes", "4", "--n-systems", "4", "--out", str(out)])
        text = (out / "probe_learned-L2.json").read_text()
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    record = json.loads(text)
    assert record["path"] == "reference/pretrained/learned-L2.npz" and record["args"]["out"] == f"runs/{out.name}"
    assert record["args"]["checkpoints"] == ["reference/pretrained/learned-L2.npz"]
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)


def test_models_are_named_as_given_not_by_their_preset():
    """A run started from a preset with other options is another model: block-ns-8 was trained as
    `--preset block-mixed --n-layers 8 ...` and must not be called block-mixed."""
    from tf_impl.evaluate import model_name

    assert model_name("block-ns-8", set()) == "block-ns-8"
    assert model_name("runs/depth-ns-L8/final.npz", set()) == "depth-ns-L8"
    assert model_name("runs/x/ckpt.npz", {"x"}) == "x-2"
    assert model_name("reference/pretrained/full-n9.npz", set()) == "full-n9"
    assert model_name("somewhere/cg.npz", {"cg"}) == "cg-2"


def test_evaluate_accepts_shipped_names(tmp_path, capsys):
    from reference.pretrained import pretrained_path
    from tf_impl import evaluate as ev

    try:
        pretrained_path("block-mixed")
    except ValueError:
        pytest.skip("block-mixed weights not shipped")
    res = ev.evaluate_cli(["block-mixed", "--n-min", "3", "--n-max", "4", "--n-systems", "20", "--layer-sizes",
                           "--no-plots", "--baselines", "cg", "--out", str(tmp_path / "o")])
    assert set(res["models"]) == {"block-mixed"}
    assert "wrote" in capsys.readouterr().out and not list((tmp_path / "o").glob("*.png"))


def test_plots_have_integer_ticks_and_titles_inside_the_figure(tmp_path, checkpoints):
    """The layer plot and the error-vs-N plot: integer ticks on the layer / size axis, every title
    within the figure's bounds (nothing cut off), the layer plot's y-range fitted to its data."""
    from tf_impl import evaluate as ev

    res = ev.evaluate_cli([*map(str, checkpoints), "--n-max", "6", "--n-systems", "20", "--layer-sizes", "4",
                           "--out", str(tmp_path / "o")])
    sel = [(a["name"], a) for a in res["layers"]]
    fig = report.plot_layers(sel, tmp_path / "l.png",
                             "What the model learned: error per layer vs CG and the Krylov floor")
    fig2 = report.plot_error_vs_n(res["records"], {k: reference.load_checkpoint(p) for k, p in
                                               zip(("blk", "full"), checkpoints, strict=True)}, 10.0,
                              tmp_path / "e.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for f in (fig, fig2):
        renderer = FigureCanvasAgg(f).get_renderer()
        f.draw(renderer)
        box = f.bbox
        texts = [ax.title for ax in f.axes] + ([f._suptitle] if f._suptitle is not None else [])
        for t in texts:
            if t.get_text():
                e = t.get_window_extent(renderer)
                assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y1 <= box.y1 + 1, t.get_text()
        for ax in f.axes:
            if ax.axison:
                ticks = [v for v in ax.get_xticks() if ax.get_xlim()[0] <= v <= ax.get_xlim()[1]]
                assert ticks and all(float(v).is_integer() for v in ticks), ticks
    for ax in fig.axes:
        if ax.axison:
            lo, hi = ax.get_ylim()
            assert lo > 1e-13 and hi < 10  # fitted to the data (MSE in [~1e-3, 1]), not down to 1e-10


def test_robustness_cli_end_to_end(tmp_path, checkpoints):
    """``--robustness``: every family, one pass and to tol, against CG; tables that fit a page."""
    from reference.robustness import FAMILIES
    from tf_impl import evaluate as ev

    out = tmp_path / "rob"
    ev.evaluate_cli([str(checkpoints[0]), "--robustness", "--sizes", "3", "5", "--n-systems", "4", "--tol", "1e-6",
                     "--no-plots", "--out", str(out)])
    data = json.loads((out / "robustness.json").read_text())
    (name,) = data["models"]
    recs = {(r["family"], r["n"], r["method"], r["kind"]): r for r in data["records"]}
    for family in FAMILIES:
        for n in (3, 5):
            assert {(family, n, name, kind) for kind in ("solve", "bare", "to_tol")} <= set(recs)
            assert recs[(family, n, name, "to_tol")]["converged"] == 1.0  # solve reaches tol on every family
            assert recs[(family, n, "CG", "to_tol")]["converged"] == 1.0
    md = (out / "robustness.md").read_text()
    assert md.count("### ") == len(FAMILIES)
    widths = [line.count("|") - 1 for line in md.splitlines() if line.startswith("| N |")]
    assert len(widths) == 3 * len(FAMILIES) and max(widths) <= 8, widths
