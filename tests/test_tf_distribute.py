"""tf.distribute: the CPU split into two logical devices under MirroredStrategy gives the same loss,
gradients and training steps as one device for the same global batch; two worker processes on
localhost (``TF_CONFIG``, MultiWorkerMirroredStrategy) train like one process, the chief alone writing.

Logical devices must be configured before TensorFlow initialises its devices, so the check runs in
a fresh subprocess (this test process has long initialised them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_impl import distribute

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import dataclasses
import reference as ref
from tf_impl.config import TrainConfig
from tf_impl.optim import Trainer

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
tcfg = TrainConfig(parametrization="block", n_layers=2, n_heads=2, attention_norm="n", init_scale=0.2, n_min=2,
                   n_max=6, batch_size=8, lr=0.01, steps=5, warmup=1, schedule="cosine", clip_norm=1.0, seed=4,
                   dtype="float64", mode="xla")
p0 = ref.init_params(tcfg.model_config(), 5)
# default strategy, one device (without XLA: fewer compilations)
one = Trainer(dataclasses.replace(tcfg, mode="graph"), p0)
two = Trainer(tcfg, p0, strategy=strategy)  # two replicas, 4 systems each, XLA per replica
out = {"replicas": two.n_replicas, "distributed": two.distributed, "devices": sorted(
    {v.device for v in two.model.params["layers.0.P"].values})}
batch = ref.sample_systems(8, (2, 6), 10.0, seed=3)
for label, b in (("explicit", batch), ("sampled", None)):
    l1, g1 = one.loss_and_grads(b)
    l2, g2 = two.loss_and_grads(b)
    out[label] = {"loss": [l1, l2], **{k: float(np.abs(g1[k] - g2[k]).max() / np.abs(g1[k]).max()) for k in g1}}
out["steps"] = [[one.train_step(), two.train_step()] for _ in range(3)]
p1, e1 = one.get_state()
p2, e2 = two.get_state()
out["params"] = {k: float(np.abs(p1[k] - p2[k]).max() / np.abs(p1[k]).max()) for k in p1}
out["adam_v"] = {k: float(np.abs(e1[f"adam_v/{k}"] - e2[f"adam_v/{k}"]).max()) for k in p1}
out["step"] = [int(e1["step"]), int(e2["step"])]
print("RESULT " + json.dumps(out))
"""


def test_two_logical_cpus_match_one_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["replicas"] == 2 and out["distributed"] and len(out["devices"]) == 2, out
    for label in ("explicit", "sampled"):  # the global loss is the mean over all 8 systems, not per replica
        l1, l2 = out[label].pop("loss")
        assert abs(l1 - l2) <= 1e-12 * l1, (label, l1, l2)
        for k, err in out[label].items():
            assert err <= 1e-12, (label, k, err)
    for t, (o1, o2) in enumerate(out["steps"]):
        for key in ("loss", "grad_norm", "lr"):
            assert abs(o1[key] - o2[key]) <= 1e-12 * abs(o1[key]), (t, key, o1, o2)
    assert out["step"] == [3, 3]
    assert max(out["params"].values()) <= 1e-12 and max(out["adam_v"].values()) <= 1e-15


def test_strategy_selection(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.n_cluster_tasks() == 0 and distribute.is_chief()
    strategy = distribute.select_strategy()  # no GPUs here, no cluster: the default strategy
    assert strategy.num_replicas_in_sync == 1 and "Default" in distribute.describe(strategy)
    cluster = {"worker": ["host0:2222", "host1:2222"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert distribute.n_cluster_tasks() == 2 and not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["host2:2222"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.n_cluster_tasks() == 3 and not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.n_cluster_tasks()


def _free_ports(k):
    import socket

    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_on_localhost_train_like_one_process_and_resume_after_a_kill(tmp_path):
    """``TF_CONFIG`` with two workers -> MultiWorkerMirroredStrategy: both processes run the same steps,
    only the chief (worker 0) writes. Worker 1 is killed (SIGKILL) after the first checkpoint; the chief,
    left waiting on its peer, is killed too; both restarted with ``--resume`` finish the run, and the
    result equals one process on the same global batches without interruption."""
    import time

    import reference as ref
    from reference.checkpoint import load_checkpoint_extra
    from tf_impl.train import main

    root = ROOT
    args = ["--n-layers", "2", "--n-min", "2", "--n-max", "4", "--batch-size", "16", "--lr", "0.01", "--warmup", "2",
            "--steps", "6", "--eval-every", "0", "--ckpt-every", "3", "--eval-systems", "10", "--seed", "3",
            "--mode", "graph"]
    single = tmp_path / "single"  # the reference run: one process (this one), no TF_CONFIG
    assert main([*args, "--out", str(single)]) == 0
    multi = tmp_path / "multi"

    def launch(delay: float | None, extra_args: list[str]):
        ports = _free_ports(2)
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        procs = []
        for i in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            cli = [sys.executable, "-m", "tf_impl.train"] if delay is None else \
                [sys.executable, str(root / "tests" / "slow_train.py"), str(delay)]  # sleeps after every step
            procs.append(subprocess.Popen([*cli, *args, "--out", str(multi), *extra_args], cwd=root, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return procs

    # 1. two workers, half a second per step; kill worker 1 once the chief has written the step-3 checkpoint
    procs = launch(0.5, [])
    try:
        deadline = time.time() + 300
        while not (multi / "ckpt.npz").exists():
            assert time.time() < deadline and all(p.poll() is None for p in procs), "no checkpoint was written"
            time.sleep(0.2)
        procs[1].kill()
        try:  # the chief either fails on its lost peer or waits for it (then it never writes again): kill it
            procs[0].wait(timeout=2)
        except subprocess.TimeoutExpired:
            procs[0].kill()
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert load_checkpoint_extra(multi / "ckpt.npz")[0]["step"] == 3 and not (multi / "final.npz").exists()

    # 2. both restarted with --resume: the run finishes from step 3
    procs = launch(None, ["--resume"])
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    devices = [line for line in outs[0][0].splitlines() if line.startswith("devices:")]
    assert devices and devices[0].endswith("with 2 replica(s)"), devices
    assert "resum" in outs[0][0].lower(), outs[0][0][-2000:]
    assert not list(multi.glob("*.npz.tmp*")) and not list(multi.glob(".tmp-*"))
    want, _ = ref.load_checkpoint(single / "final.npz")
    got, _ = ref.load_checkpoint(multi / "final.npz")  # written by the chief only
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_two_workers_on_localhost_take_the_lbfgs_iterations_of_one_process(tmp_path):
    """The L-BFGS recipe (``--preset learned-L2``: one fixed float64 batch, the NumPy iteration on the all-reduced
    loss and gradient) under MultiWorkerMirroredStrategy with two workers: the same iterations as one process, to
    rounding (the line search takes the same steps, so the parameters and the pairs in memory agree)."""
    import reference as ref
    from reference.checkpoint import load_checkpoint_extra
    from tf_impl.train import main

    args = ["--preset", "learned-L2", "--n-max", "5", "--batch-size", "16", "--steps", "3", "--eval-every", "0",
            "--ckpt-every", "3", "--eval-systems", "10", "--seed", "2", "--mode", "graph"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main([*args, "--out", str(single)]) == 0
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, "-m", "tf_impl.train", *args, "--out", str(multi)], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "with 2 replica(s)" in outs[0][0], outs[0][0][-2000:]
    want, _ = ref.load_checkpoint(single / "final.npz")
    got, _ = ref.load_checkpoint(multi / "final.npz")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)
    (_, want_extra), (_, got_extra) = (load_checkpoint_extra(d / "ckpt.npz") for d in (single, multi))
    for k in ("lbfgs/s", "lbfgs/y"):
        assert got_extra[k].shape == want_extra[k].shape == (3, want_extra[k].shape[1]), k
        np.testing.assert_allclose(got_extra[k], want_extra[k], rtol=1e-7, atol=1e-12, err_msg=k)
