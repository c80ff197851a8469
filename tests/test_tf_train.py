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
from tf_impl.train import PRESETS, TrainConfig, main, parse_config

ROOT = Path(__file__).resolve().parents[1]
# a tiny model that runs a few dozen steps in seconds. XLA compiles a train step in several seconds,
# so only the end-to-end test uses --mode xla (the default); the others run the same step function
# without XLA (--mode graph): resuming, NaN handling and initialisation do not depend on the mode.
TINY = ["--n-layers", "2", "--n-min", "2", "--n-max", "4", "--batch-size", "16", "--lr", "0.01",
        "--warmup", "3", "--eval-systems", "50", "--seed", "3"]
FAST = TINY + ["--mode", "graph"]


# ----------------------------------------------------------------------------------------------
# configuration


def test_defaults_are_the_small_preset_and_presets_are_valid():
    assert dataclasses.replace(TrainConfig(), **PRESETS["small"]) == TrainConfig()
    assert set(PRESETS) >= {"small", "full-n9", "block-n9", "block-mixed", "block-finetune"}
    for name, values in PRESETS.items():
        extra = {"init_from": "x.npz"} if name == "block-finetune" else {}
        tcfg = TrainConfig(**{**values, "preset": name, **extra})
        tcfg.model_config()  # a valid ModelConfig
    full = parse_config(["--preset", "full-n9"]).model_config()
    assert full.parametrization == "full" and full.n == 9 and full.embed_dim == 27
    assert parse_config(["--preset", "block-mixed"]).attention_norm == "n"


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
                      "--steps", "50", "--ckpt-every", "1", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "last good checkpoint" in err
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
    cmd = [sys.executable, "-m", "tf_impl.train", *FAST, *steps, "--out", str(out), "--resume"]
    env = dict(os.environ, TF_IMPL_TRAIN_STEP_DELAY="0.1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    res = subprocess.run(cmd, cwd=ROOT, env=dict(env, TF_IMPL_TRAIN_STEP_DELAY="0"), capture_output=True,
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
