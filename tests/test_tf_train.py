"""``python -m tf_impl.train``: configuration, a tiny end-to-end run, resume after SIGKILL, NaN stop,
initialisation from a checkpoint."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from reference.config import ModelConfig
from reference.pretrained import PRETRAINED
from tf_impl.config import RESUME_MAY_CHANGE
from tf_impl.train import PRESETS, TrainConfig, main, parse_config

ROOT = Path(__file__).resolve().parents[1]
# a tiny model that runs a few dozen steps in seconds. XLA compiles a train step in several seconds,
# so only the end-to-end test uses --mode xla (the default); the others run the same step function
# without XLA (--mode graph): resuming, NaN handling and initialisation do not depend on the mode.
TINY = ["--n-layers", "2", "--n-min", "2", "--n-max", "4", "--batch-size", "16", "--lr", "0.01",
        "--warmup", "3", "--eval-systems", "50", "--seed", "3"]
FAST = TINY + ["--mode", "graph"]
SLOW = [sys.executable, str(ROOT / "tests" / "slow_train.py")]  # + DELAY: the CLI, sleeping after every step


# ----------------------------------------------------------------------------------------------
# configuration


def test_model_fields_share_model_config_defaults_and_presets_are_valid():
    model_fields = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "n"]
    assert TrainConfig().model_config() == ModelConfig()  # one set of defaults
    assert all(getattr(TrainConfig(), k) == getattr(ModelConfig(), k) for k in model_fields)
    assert parse_config([]) == TrainConfig(**PRESETS["small"])  # a command-line run starts from small
    assert set(PRESETS) >= {"small", "full-n9", "block-n9", "block-mixed", "block-finetune"}
    assert set(PRETRAINED) <= set(PRESETS)  # "train them with --preset NAME" works for every shipped model
    for name, values in PRESETS.items():
        extra = {"init_from": "x.npz"} if name == "block-finetune" else {}
        tcfg = TrainConfig(**{**values, "preset": name, **extra})
        tcfg.model_config()  # a valid ModelConfig
    full = parse_config(["--preset", "full-n9"]).model_config()
    assert full.parametrization == "full" and full.n == 9 and full.embed_dim == 27
    assert parse_config(["--preset", "block-mixed"]).attention_norm == "n"


def test_shipped_models_were_trained_by_their_preset():
    """``--preset NAME`` regenerates the shipped NAME: its checkpoint's training config equals the preset's
    in every field that changes a number (fields it predates take their defaults)."""
    from reference.pretrained import load_pretrained, pretrained_path

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    ignore = (*RESUME_MAY_CHANGE, "preset", "init_from")  # init_from: block-finetune's path, wherever it was
    checked = 0
    for name in PRETRAINED:
        try:
            pretrained_path(name)
        except ValueError:
            continue  # not shipped in this install
        stored = {**defaults, **load_pretrained(name)[2]["train_config"]}
        want = {**defaults, **PRESETS[name]}
        if name.startswith("learned-"):  # scripts/train_learned_family.sh ships the better of seeds 0 and 1
            assert stored["seed"] in (0, 1), f"{name}: seed {stored['seed']}"
            want["seed"] = stored["seed"]
        diff = {k: (stored[k], want[k]) for k in want if k not in ignore and stored[k] != want[k]}
        assert not diff, f"{name}: checkpoint vs preset {diff}"
        checked += 1
    assert checked >= 1  # the paper's models are in the repository


def test_overrides_are_typed():
    tcfg = parse_config(["--preset", "block-n9", "--batch_size", "32", "--lr", "3e-4", "--clip-norm", "none",
                         "--resume", "--out", "somewhere", "--kappa", "100"])
    assert tcfg.preset == "block-n9" and tcfg.n_max == 9 and tcfg.batch_size == 32 and tcfg.lr == 3e-4
    assert tcfg.clip_norm is None and tcfg.resume is True and tcfg.out_dir == "somewhere" and tcfg.kappa == 100.0
    assert parse_config([]).out_dir == os.path.join("runs", "small")
    assert parse_config(["--resume", "false"]).resume is False


@pytest.mark.parametrize("argv,message", [
    (["--bogus", "3"], "unknown option(s) --bogus"),
    (["--steps", "abc"], "argument --steps: expected an int, got 'abc'"),
    (["--lr", "fast"], "expected a float"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--schedule", "linear"], "invalid choice: 'linear'"),
    (["--resume", "maybe"], "expected true/false"),
])
def test_bad_options_exit_2_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--n-min", "5", "--n-max", "3"], "n_min <= n_max"),
    (["--parametrization", "full", "--n-min", "3"], "n_min = n_max"),
    (["--preset", "block-finetune"], "--init-from"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--n-layers", "0"], "n_layers must be an int >= 1"),  # ModelConfig's validation, reported as TrainConfig's
    (["--n-heads", "100000"], "n_heads = 100000 is above the limit"),
    (["--init-scale", "0"], "init_scale must be a positive number"),
])
def test_bad_combinations_are_value_errors(argv, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_config(argv)
    assert main(argv) == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="lr must be a float"):
        TrainConfig(lr="1")


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in text
    assert "block-finetune" in text


# ----------------------------------------------------------------------------------------------
# runs


def _step_of(path: Path) -> int:
    meta, _ = ref.load_checkpoint_extra(path)
    return int(meta["step"])


def test_tiny_run_end_to_end_then_finetune(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--steps", "30", "--eval-every", "10", "--ckpt-every", "10", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TrainConfig:" in text and "final evaluation" in text and "CG-2" in text
    params, cfg = ref.load_checkpoint(out / "final.npz")  # the reference reads it
    assert cfg.n_layers == 2 and cfg.parametrization == "block"
    meta, extra = ref.load_checkpoint_extra(out / "final.npz")
    assert meta["step"] == 30 and meta["train_config"]["batch_size"] == 16 and extra == {}
    rows = meta["evaluation"]
    assert [r["n"] for r in rows] == [2, 3, 4]
    assert all(r["mse_model"] < r["mse_zero"] for r in rows), "even 30 steps beat the zero predictor"
    meta_c, extra_c = ref.load_checkpoint_extra(out / "ckpt.npz")
    assert int(extra_c["step"]) == 30 and "adam_m/layers.0.P" in extra_c and "adam_v/layers.1.Q" in extra_c
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tb"))

    # block-finetune starts from that checkpoint (same architecture), on other sizes
    out2 = tmp_path / "finetune"
    argv = ["--preset", "block-finetune", "--init-from", str(out / "final.npz"), "--n-layers", "2",
            "--n-heads", "1", "--attention-norm", "none", "--n-min", "5", "--n-max", "6", "--batch-size", "8",
            "--steps", "2", "--warmup", "0", "--eval-systems", "20", "--mode", "graph", "--out", str(out2)]
    assert main(argv) == 0
    assert "starting from" in capsys.readouterr().out
    tuned, _ = ref.load_checkpoint(out2 / "final.npz")
    assert any(not np.array_equal(tuned[k], params[k]) for k in params)
    assert max(float(np.abs(tuned[k] - params[k]).max()) for k in params) < 0.1, "small steps from the start"
    # an architecture that differs from the checkpoint's is refused
    assert main(argv[:-1] + [str(tmp_path / "x")] + ["--n-heads", "2"]) == 2
    assert "differs" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    rc = main(FAST + ["--lr", "1e4", "--warmup", "0", "--init-scale", "0.5", "--clip-norm", "none",
                      "--steps", "50", "--ckpt-every", "1", "--diverge-factor", "0", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "Last good checkpoint" in err
    assert not (out / "final.npz").exists()
    params, _ = ref.load_checkpoint(out / "ckpt.npz")  # loads: all parameters finite (checked on load)
    step = _step_of(out / "ckpt.npz")
    assert 1 <= step < 50 and f"step {step})" in err


def test_resume_after_sigkill_gives_the_uninterrupted_result(tmp_path, capsys):
    steps = ["--steps", "40", "--ckpt-every", "4", "--eval-every", "0"]
    # uninterrupted, in this process
    assert main(FAST + steps + ["--out", str(tmp_path / "straight")]) == 0
    want, _ = ref.load_checkpoint(tmp_path / "straight" / "final.npz")

    # interrupted: a subprocess that sleeps after each step, killed with SIGKILL after its 3rd checkpoint
    out = tmp_path / "killed"
    options = [*FAST, *steps, "--out", str(out), "--resume"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(SLOW + ["0.1", *options], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (out / "ckpt.npz").exists() and _step_of(out / "ckpt.npz") >= 12:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _step_of(out / "ckpt.npz")
    assert 12 <= killed_at < 40 and not (out / "final.npz").exists()

    # resumed: continues from the last checkpoint to the end
    res = subprocess.run([sys.executable, "-m", "tf_impl.train", *options], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming {out / 'ckpt.npz'} at step {killed_at}" in res.stdout
    got, _ = ref.load_checkpoint(out / "final.npz")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert _step_of(out / "final.npz") == 40

    # resuming with other settings is refused
    assert main(FAST + steps + ["--out", str(out), "--resume", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "lr: 0.01 -> 0.5" in err


# ----------------------------------------------------------------------------------------------
# faults: divergence, concurrent runs, path spellings, leftovers, one-line errors


def test_gradual_divergence_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """float64, lr ramping to 0.3: the loss is fine for ~55 steps (checkpoints every 5), then grows
    without ever becoming NaN; the run must stop, say so, and keep a checkpoint from before."""
    out = tmp_path / "div"
    rc = main(FAST + ["--lr", "0.3", "--warmup", "60", "--steps", "150", "--ckpt-every", "5", "--eval-every", "0",
                      "--dtype", "float64", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "the run diverged" in err and "stopping without writing" in err
    assert not (out / "final.npz").exists()
    step = _step_of(out / "ckpt.npz")
    stopped = int(err.split("up to step ")[1].split(" ")[0])
    assert 5 <= step <= stopped - 20 and f"(step {step})" in err
    params, cfg = ref.load_checkpoint(out / "ckpt.npz")
    A, b, x, mask = ref.sample_systems(256, (2, 4), 10.0, seed=1)
    loss, _ = ref.loss_and_grads(params, cfg, A, b, x, mask)
    assert loss < 2.0, f"the kept checkpoint is not a good model (loss {loss})"


def test_divergence_rule_can_be_turned_off(tmp_path, capsys):
    out = tmp_path / "off"
    rc = main(FAST + ["--lr", "0.3", "--warmup", "60", "--steps", "70", "--ckpt-every", "0", "--eval-every", "0",
                      "--dtype", "float64", "--diverge-factor", "0", "--out", str(out)])
    assert rc == 0 and (out / "final.npz").exists()  # the user's choice: nothing stops it


def _start_slow_run(out, steps=400):
    cmd = SLOW + ["0.05", *FAST, "--steps", str(steps), "--ckpt-every", "2", "--eval-every", "0", "--out", str(out),
                  "--resume"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "ckpt.npz").exists():
        assert proc.poll() is None, "the run ended early"
        time.sleep(0.05)
    return proc


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_run_does_not_block(tmp_path, capsys):
    out = tmp_path / "shared"
    proc = _start_slow_run(out)
    try:
        rc = main(FAST + ["--steps", "5", "--eval-every", "0", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "is in use by a running training run (pid" in err
        assert err.count("\n") == 1  # one line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (out / ".tmp-abc_123.npz").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
    (out / ".tmp-notes.txt").write_text("not ours")
    killed_at = _step_of(out / "ckpt.npz")
    rc = main(FAST + ["--steps", str(killed_at + 2), "--ckpt-every", "2", "--eval-every", "0", "--out", str(out),
                      "--resume"])
    assert rc == 2  # --steps differs from the killed run: refused, but not because of the lock
    assert "other settings" in capsys.readouterr().err
    rc = main(FAST + ["--steps", "400", "--ckpt-every", "2", "--eval-every", "0", "--out", str(out), "--resume",
                      "--eval-systems", "10"])
    assert rc == 0 and _step_of(out / "final.npz") == 400
    assert not (out / ".tmp-abc_123.npz").exists() and (out / ".tmp-notes.txt").exists()


def test_resume_accepts_any_spelling_of_the_folder(tmp_path, monkeypatch, capsys):
    args = FAST + ["--steps", "6", "--ckpt-every", "3", "--eval-every", "0", "--eval-systems", "10"]
    assert main(args + ["--out", str(tmp_path / "r")]) == 0
    monkeypatch.chdir(tmp_path)
    for spelling in ("r/", "r", "./r//", str(tmp_path / "r") + "/"):
        assert main(args + ["--out", spelling, "--resume"]) == 0, capsys.readouterr().err
        assert "resuming" in capsys.readouterr().out


def test_a_checkpoint_without_resume_state_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "f"
    args = FAST + ["--steps", "4", "--eval-every", "0", "--eval-systems", "10", "--out", str(out)]
    assert main(args) == 0
    os.replace(out / "final.npz", out / "ckpt.npz")  # final.npz has no extra/step
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "has no resume state (no extra/step)" in err and "Traceback" not in err


@pytest.mark.parametrize("make_out, message", [
    (lambda p: "", "out must name a folder"),
    (lambda p: (p / "file.txt").write_text("x") and str(p / "file.txt"), "is a file, not a folder"),
    (lambda p: (p / "file.txt").write_text("x") and str(p / "file.txt" / "sub"), "cannot write to --out"),
])
def test_unusable_out_is_one_line(tmp_path, capsys, make_out, message):
    assert main(FAST + ["--steps", "2", "--out", make_out(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1


def test_the_command_line_is_quiet_by_default():
    cmd = [sys.executable, "-m", "tf_impl.train", *FAST, "--steps", "2", "--eval-every", "0", "--eval-systems", "5",
           "--n-max", "3"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    with __import__("tempfile").TemporaryDirectory() as d:
        res = subprocess.run(cmd + ["--out", d], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        noise = [line for line in res.stderr.splitlines() if not line.startswith("train:") and "\r" not in line
                 and line.strip() and "step/s" not in line and "it/s" not in line and "%|" not in line]
        assert noise == [], noise
        res = subprocess.run(cmd + ["--out", d + "/v", "--verbose"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0 and "cuda" in res.stderr.lower()  # --verbose shows TensorFlow's own lines


def test_sigterm_writes_a_checkpoint_says_one_line_and_resumes(tmp_path, capsys):
    """SIGTERM (a scheduler's stop, a cloud preemption) is handled as Ctrl-C: the step under way ends and is written
    to ckpt.npz (checkpoints every 7 steps otherwise), one line says where, the exit status is 143, and --resume
    gives the uninterrupted result."""
    steps = ["--steps", "40", "--ckpt-every", "7", "--eval-every", "0"]
    assert main(FAST + steps + ["--out", str(tmp_path / "straight")]) == 0
    want, _ = ref.load_checkpoint(tmp_path / "straight" / "final.npz")
    out = tmp_path / "term"
    options = [*FAST, *steps, "--out", str(out), "--resume"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(SLOW + ["0.1", *options], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (out / "ckpt.npz").exists():
            time.sleep(0.05)
        time.sleep(0.25)  # a few steps past the checkpoint at step 7
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    step = int(lines[0].split("interrupted by SIGTERM at step ")[1].split()[0])
    assert 7 <= step < 40 and _step_of(out / "ckpt.npz") == step and f"last checkpoint at step {step}" in lines[0]
    res = subprocess.run([sys.executable, "-m", "tf_impl.train", *options], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and f"resuming {out / 'ckpt.npz'} at step {step}" in res.stdout, res.stderr[-2000:]
    got, _ = ref.load_checkpoint(out / "final.npz")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_ctrl_c_message(tmp_path):
    cmd = SLOW + ["0.05", *FAST, "--steps", "400", "--ckpt-every", "2", "--eval-every", "0",
                  "--out", str(tmp_path / "i")]
    # a shell that runs the suite in the background starts it with SIGINT ignored, and Python keeps an
    # inherited SIG_IGN: give the child the default disposition, as a terminal would
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "i" / "ckpt.npz").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "last checkpoint at step" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
