"""L-BFGS on one fixed batch (``reference.optim.lbfgs_step``, ``tf_impl.optim.LbfgsTrainer``, ``--optimizer
lbfgs``) and the lineage every checkpoint records (``reference.checkpoint.lineage_of``)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import reference as ref
from reference.checkpoint import (
    MAX_LINEAGE_RUNS,
    MAX_LINEAGE_TEXT,
    SHOW_RUNS,
    describe_lineage,
    lineage_of,
    load_checkpoint_extra,
)
from reference.config import ModelConfig
from reference.data import sample_systems
from reference.optim import LBFGS_STREAM, lbfgs_step, train_lbfgs, wolfe_search
from tests.helpers import check_tensor, train_config
from tf_impl.train import main

TINY = ["--n-layers", "2", "--n-heads", "1", "--n-identity", "2", "--n-min", "2", "--n-max", "4",
        "--batch-size", "16", "--eval-systems", "20", "--seed", "3", "--mode", "graph", "--eval-every", "0"]
LBFGS = TINY + ["--optimizer", "lbfgs", "--dtype", "float64"]


def _quadratic(P=7, seed=0):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((P, P)))[0]
    H = (U * np.geomspace(1, 100, P)) @ U.T  # (P, P): condition number 100
    th_star = rng.standard_normal(P)

    def fg(th):  # minimum 0 (as a training loss): the loss values keep their digits near the minimiser
        e = th - th_star
        return 0.5 * e @ H @ e, H @ e

    return fg, th_star


def _run(fg, theta, iters, memory=50):
    f, g = fg(theta)
    S = Y = np.zeros((0, theta.size))
    for _ in range(iters):
        theta, f, g, S, Y, _ = lbfgs_step(fg, theta, f, g, S, Y, memory)
    return theta, f


def test_lbfgs_solves_a_quadratic_and_rosenbrock():
    fg, th_star = _quadratic()
    theta, _ = _run(fg, np.zeros(7), 40)
    check_tensor("quadratic minimiser", theta, th_star, atol=1e-10, rtol=1e-10)

    def rosenbrock(th):
        x, y = th
        grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2, grad

    theta, f = _run(rosenbrock, np.array([-1.2, 1.0]), 80, memory=10)
    check_tensor("rosenbrock minimiser", theta, np.ones(2), atol=1e-8, rtol=0)


def test_wolfe_search_returns_a_step_with_both_conditions():
    fg, _ = _quadratic(seed=1)
    theta = np.ones(7)
    f0, g0 = fg(theta)
    d = -g0 * 5.0  # far too long a unit step: the search has to bisect
    t, f, g = wolfe_search(fg, theta, f0, g0, d)
    assert f <= f0 + 1e-4 * t * (g0 @ d)
    assert g @ d >= 0.9 * (g0 @ d)
    assert wolfe_search(fg, theta, f0, g0, -d) is None  # an ascent direction has no such step


def test_lbfgs_memory_is_bounded_and_a_stationary_point_stays_put():
    fg, th_star = _quadratic()
    f, g = fg(np.zeros(7))
    S = Y = np.zeros((0, 7))
    theta = np.zeros(7)
    for _ in range(10):
        theta, f, g, S, Y, _ = lbfgs_step(fg, theta, f, g, S, Y, memory=3)
        assert S.shape[0] <= 3 and S.shape == Y.shape
    f_star, g_star = fg(th_star)
    out = lbfgs_step(fg, th_star, f_star, g_star * 0, np.zeros((0, 7)), np.zeros((0, 7)))
    assert out[5] == 0.0 and np.array_equal(out[0], th_star)  # zero gradient: no step at all


def test_two_layers_end_below_one_layer_on_the_same_budget():
    """The recipe's claim in miniature: with L-BFGS from random weights a deeper model learns more."""
    final = {}
    for L in (1, 2):
        cfg = ModelConfig(parametrization="block", n_layers=L, n_heads=1, n_identity=2, attention_norm="none",
                          init_scale=0.02)
        params, losses = train_lbfgs(cfg, (2, 5), steps=80, batch_size=128, seed=0)
        assert losses[-1] < losses[0]
        A, b, x, mask = sample_systems(400, (2, 5), 10.0, seed=123)  # fresh systems
        final[L] = ref.loss_and_grads(params, cfg, A, b, x, mask)[0]
    assert final[2] < 0.8 * final[1], final


def test_the_twins_take_the_same_lbfgs_steps():
    """Same start, same batch: the TensorFlow trainer's losses equal the reference's, iteration by iteration."""
    from tf_impl.optim import LbfgsTrainer

    cfg = ModelConfig(parametrization="block", n_layers=2, n_heads=1, n_identity=2, attention_norm="none",
                      init_scale=0.05)
    params = ref.init_params(cfg, seed=4)
    A, b, x, mask = sample_systems(24, (2, 5), 10.0, seed=[4, LBFGS_STREAM])  # the reference's batch
    _, want = train_lbfgs(cfg, (2, 5), steps=8, batch_size=24, seed=4, params=params)
    tcfg = train_config(cfg, (2, 5), optimizer="lbfgs", batch_size=24, seed=4, dtype="float64", mode="graph")
    tr = LbfgsTrainer(tcfg, params)
    tr.batch = tr.prepare_batch(A, b, x, mask)
    got = [tr.train_step()["loss"] for _ in range(8)]
    check_tensor("L-BFGS losses (TF vs reference)", np.array(got), want, rtol=1e-9, atol=0)


def test_lbfgs_run_resumes_to_the_uninterrupted_result(tmp_path):
    steps = ["--steps", "16", "--ckpt-every", "4"]
    assert main(LBFGS + steps + ["--out", str(tmp_path / "straight")]) == 0
    want, _ = ref.load_checkpoint(tmp_path / "straight" / "final.npz")

    def stop_at_10(step):
        if step == 10:
            raise KeyboardInterrupt

    out = str(tmp_path / "cut")
    assert main(LBFGS + steps + ["--out", out], on_step=stop_at_10) == 130
    meta, extra = load_checkpoint_extra(tmp_path / "cut" / "ckpt.npz")
    assert int(extra["step"]) == 8 and extra["lbfgs/s"].shape == extra["lbfgs/y"].shape
    assert main(LBFGS + steps + ["--out", out, "--resume"]) == 0
    got, _ = ref.load_checkpoint(tmp_path / "cut" / "final.npz")
    for k in want:  # the same iterations from the same state (to rounding: another process' kernels)
        check_tensor(k, got[k], want[k], rtol=1e-7, atol=1e-10)


def test_a_falling_lbfgs_loss_is_not_divergence_and_its_step_is_not_a_learning_rate(tmp_path, capsys):
    """Init scale 0.5: the loss starts about 100 times the zero predictor's and falls at every iteration (L-BFGS
    accepts only steps that lower it), so the divergence rule (here 3 steps above 10 times) must not stop the run;
    the evaluation lines print the line search's step under its own name, never as a learning rate."""
    rc = main(LBFGS + ["--init-scale", "0.5", "--steps", "12", "--diverge-patience", "3", "--eval-every", "3",
                       "--out", str(tmp_path / "high")])
    out, err = capsys.readouterr()
    assert rc == 0 and "diverged" not in err, err[-500:]
    lines = [line for line in out.split("\n") if "eval loss" in line]
    losses = [float(line.split("train loss ")[1].split()[0]) for line in lines]
    assert len(lines) == 4 and losses[0] > 100 and all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert all("line-search step" in line and " lr " not in line for line in lines)


@pytest.mark.parametrize("corrupt, match", [
    (lambda S, Y: (np.where(np.arange(S.size).reshape(S.shape) == 3, np.nan, S), Y), "non-finite values"),
    (lambda S, Y: (S, -Y), "pair 0 has s\\^T y = -.*, not positive"),
    (lambda S, Y: (S, Y[:, :-1]), "must be two \\(k, \\d+\\) arrays"),
])
def test_resume_refuses_an_lbfgs_memory_no_run_could_have_kept(tmp_path, capsys, corrupt, match):
    """The memory of pairs is read from a file: NaN, a pair of negative curvature (whose two-loop direction need not
    descend) or the wrong shape is refused by --resume with one line, before any step."""
    args = LBFGS + ["--steps", "6", "--ckpt-every", "2", "--out", str(tmp_path / "run")]

    def stop_at_3(step):
        if step == 3:
            raise KeyboardInterrupt

    assert main(args, on_step=stop_at_3) == 130
    path = tmp_path / "run" / "ckpt.npz"
    params, cfg = ref.load_checkpoint(path)
    meta, extra = load_checkpoint_extra(path)
    assert extra["lbfgs/s"].shape[0] >= 1
    extra["lbfgs/s"], extra["lbfgs/y"] = corrupt(extra["lbfgs/s"], extra["lbfgs/y"])
    ref.save_checkpoint(path, params, cfg, meta=meta, extra=extra)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(f"error: resume state lbfgs/s, lbfgs/y.*{match}.*\n", err), err


# ----------------------------------------------------------------------------------------------
# lineage


def test_lineage_round_trips_and_is_inherited_by_init_from_and_resume(tmp_path, capsys):
    parent = tmp_path / "parent"
    assert main(LBFGS + ["--steps", "6", "--out", str(parent)]) == 0
    meta, _ = load_checkpoint_extra(parent / "final.npz")
    (root,) = lineage_of(meta)
    assert root["init"] == "random" and root["init_from"] is None and root["steps"] == 6
    assert root["optimizer"] == "lbfgs" and root["dtype"] == "float64" and root["n_layers"] == 2
    assert root["loss"] == pytest.approx(meta["metrics"]["train_loss"])
    assert describe_lineage(lineage_of(meta)).startswith("lineage: learned from random weights")

    child = tmp_path / "child"  # grown to 3 layers from the parent, with Adam
    assert main(TINY + ["--n-layers", "3", "--steps", "4", "--init-from", str(parent / "final.npz"),
                        "--out", str(child)]) == 0
    lineage = lineage_of(load_checkpoint_extra(child / "final.npz")[0])
    assert [e["n_layers"] for e in lineage] == [2, 3] and lineage[0] == root
    assert lineage[1]["init_from"] == str(parent / "final.npz") and lineage[1]["optimizer"] == "adam"
    assert "learned from random weights (over 2 runs, grown from 2 to 3 layers)" in describe_lineage(lineage)

    def stop_at_3(step):
        if step == 3:
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed"
    args = TINY + ["--n-layers", "3", "--steps", "6", "--ckpt-every", "2", "--init-from", str(parent / "final.npz"),
                   "--out", str(resumed)]
    assert main(args, on_step=stop_at_3) == 130
    assert main(args + ["--resume"]) == 0
    lineage = lineage_of(load_checkpoint_extra(resumed / "final.npz")[0])
    assert len(lineage) == 2 and lineage[0] == root and lineage[1]["steps"] == 6  # one run, not two


def test_lineage_marks_a_construction_and_an_unknown_parent(tmp_path):
    out = tmp_path / "ns"
    assert main(TINY + ["--init", "newton-schulz", "--steps", "2", "--lr", "1e-9", "--out", str(out)]) == 0
    text = describe_lineage(lineage_of(load_checkpoint_extra(out / "final.npz")[0]))
    assert text.startswith("lineage: constructed (newton-schulz), then trained")

    # a file saved without any training config: its children cannot say where they come from
    cfg = ModelConfig(parametrization="block", n_layers=2, n_heads=1, n_identity=2, attention_norm="none")
    ref.save_checkpoint(tmp_path / "bare.npz", ref.init_params(cfg), cfg)
    assert main(TINY + ["--steps", "2", "--init-from", str(tmp_path / "bare.npz"), "--out", str(tmp_path / "c")]) == 0
    text = describe_lineage(lineage_of(load_checkpoint_extra(tmp_path / "c" / "final.npz")[0]))
    assert text.startswith("lineage: unknown origin")


def test_a_malformed_lineage_is_a_value_error_naming_the_file():
    with pytest.raises(ValueError, match="some.npz.*lineage must be a list.*entry 0 lacks init, init_from"):
        lineage_of({"lineage": [{"preset": "small"}]}, "some.npz")
    with pytest.raises(ValueError, match="lineage must be a list .* got a str"):
        lineage_of({"lineage": "random"})


def _entry(**change):
    return {"preset": "small", "init": "random", "init_from": None, "optimizer": "adam", "n_layers": 2, "steps": 5,
            "seed": 0, "dtype": "float32", "loss": 0.5, **change}


def test_a_run_without_a_recorded_init_was_learned_from_random_weights():
    """A training config written before the init field existed (the paper's models) started from random weights:
    "learned", never "constructed (None)"; a start the lineage does not name is an unknown origin."""
    old = {"train_config": {"preset": "block-mixed", "n_layers": 4, "seed": 0, "init_from": None}, "step": 8000}
    assert describe_lineage(lineage_of(old)).startswith("lineage: learned from random weights\n")
    for name in ("block-mixed", "block-n9", "full-n9", "broad", "block-mixed-20"):
        try:
            meta = ref.load_checkpoint_extra(ref.pretrained.pretrained_path(name))[0]
        except ValueError:  # not shipped in this install
            continue
        assert describe_lineage(lineage_of(meta)).startswith("lineage: learned from random weights"), name
    text = describe_lineage([_entry(init=None)])
    assert text.startswith("lineage: unknown origin") and "constructed" not in text
    assert describe_lineage([_entry(init="magic")]).startswith("lineage: unknown origin")


@pytest.mark.parametrize("field, value, match", [
    ("loss", [1.0, 2.0], "entry 1 'loss' must be a number or null, got a list"),
    ("preset", {"a": 1}, "entry 1 'preset' must be a string or null, got a dict"),
    ("steps", 2.5, "entry 1 'steps' must be an integer >= 0, got a float"),
    ("seed", True, "entry 1 'seed' must be an integer >= 0, got a bool"),
    ("init_from", "deep", "entry 1 'init_from' must be a string or null, got a list"),
])
def test_lineage_fields_of_the_wrong_type_are_refused(field, value, match):
    """A list or dict where a number or string belongs (a TypeError when printed), a 900-deep list (a RecursionError):
    one ValueError naming the file, the entry and the field, before anything prints or copies it."""
    if value == "deep":
        value = json.loads("[" * 900 + "]" * 900)
    with pytest.raises(ValueError, match=f"x.npz.*{match}"):
        lineage_of({"lineage": [_entry(), _entry(**{field: value})]}, "x.npz")


def test_hostile_lineage_text_is_escaped_and_cut_when_printed_and_copied(tmp_path):
    """ANSI escape sequences never reach the terminal or a child's checkpoint (they are written as escapes); a
    10 MB string prints as 80 characters and is copied as 300; a long lineage prints its first and last runs;
    one longer than MAX_LINEAGE_RUNS is refused when read, and one at the limit cannot get a child."""
    red, huge = "\x1b[31mred\x1b]0;title\x07\r", "y" * 10**7
    lineage = [_entry(preset=red, init_from=None), _entry(preset=huge, init_from="p.npz")]
    text = describe_lineage(lineage)
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f]", text) and "\\x1b[31mred" in text and len(text) < 600
    many = [_entry()] * 900
    text = describe_lineage(many)
    assert len(text.splitlines()) == 1 + SHOW_RUNS + 1 and "... 888 runs ..." in text
    with pytest.raises(ValueError, match=f"holds {MAX_LINEAGE_RUNS + 1} runs, more than the {MAX_LINEAGE_RUNS}"):
        lineage_of({"lineage": [_entry()] * (MAX_LINEAGE_RUNS + 1)}, "x.npz")

    cfg = ModelConfig(parametrization="block", n_layers=2, n_heads=1, n_identity=2, attention_norm="none")
    ref.save_checkpoint(tmp_path / "parent.npz", ref.init_params(cfg), cfg, meta={"lineage": lineage})
    assert main(TINY + ["--steps", "2", "--init-from", str(tmp_path / "parent.npz"), "--out", str(tmp_path / "c")]) == 0
    copied = lineage_of(load_checkpoint_extra(tmp_path / "c" / "final.npz")[0])
    assert copied[0]["preset"] == "\\x1b[31mred\\x1b]0;title\\x07\\r"
    assert copied[1]["preset"] == "y" * MAX_LINEAGE_TEXT + f"... ({10**7} characters)"
    assert len(copied) == 3 and copied[2]["init_from"] == str(tmp_path / "parent.npz")

    full = {"lineage": [_entry()] * MAX_LINEAGE_RUNS}
    ref.save_checkpoint(tmp_path / "full.npz", ref.init_params(cfg), cfg, meta=full)
    assert main(TINY + ["--steps", "2", "--init-from", str(tmp_path / "full.npz"), "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d" / "final.npz").exists()
