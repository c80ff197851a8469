"""Train-step throughput: tf_impl's XLA-compiled step against the NumPy reference and TensorFlow without XLA.

Same model and batch everywhere: block parametrization, 4 layers, 1 head, K = 3 identities, a batch of
1024 systems with N uniform in [2, 9] (padded to M = 9, token width D = 37), Adam with global-norm
clipping. One train step = loss, gradients, clipping and the Adam update:

* ``reference``: ``reference.loss_and_grads`` + ``clip_by_global_norm`` + ``adam_update`` (NumPy, float64:
  the reference has no float32 path);
* ``tf_xla``: :class:`tf_impl.optim.Trainer` ``mode="xla"``, the whole step one ``tf.function(jit_compile=True)``;
* ``tf_graph``: the same step function under ``tf.function`` without XLA;
* ``tf_eager``: the same Python function run eagerly (few steps);
* ``*_sampled``: the same steps drawing their batch on device (the training configuration); the other
  rows are fed one fixed batch (the same for every implementation), so they time the model and optimiser only.

TensorFlow runs in float32 (training precision). Rounds are interleaved (reference, XLA, graph, ...)
so that a change in machine load hits every implementation alike; the report gives the median and the
minimum over rounds of the mean step time of a round, and the load average before and after.

FLOP count (analytic, matrix products only; elementwise work is ignored). Per layer and system, with
T = M + 1 tokens and H heads, as implemented in :mod:`tf_impl.layers`::

    keys    K = Z_kv Q^T-stack     2 M D (H D)        (every layer)
    values  V = Z_kv P-stack       2 M D (H D)        (last layer: x-slot only, 2 M D (H M))
    scores  S = Z K^T              2 T D (M H)        (last layer: query row only, 2 D (M H))
    update  S V                    2 T (M H) D        (last layer: 2 (M H) M)

The backward pass of a product C = A B costs two products of the same size (dA = dC B^T, dB = A^T dC),
so forward + backward = 3 x forward (an upper bound by the first layer's unneeded input gradients,
~1/(3L) of the total). GFLOP/s = FLOPs / step time; the machine's reference point is a 2048 x 2048 float32
matmul in TensorFlow (best of several).

    python scripts/bench_train_step.py [--rounds 7] [--steps 10] [--out results/bench_train_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import reference as ref  # noqa: E402
from reference.optim import clip_by_global_norm  # noqa: E402
from tf_impl.optim import Trainer  # noqa: E402

BATCH, N_MIN, N_MAX, LAYERS, HEADS = 1024, 2, 9, 4, 1
CLIP, LR = 10.0, 1e-3


def train_step_flops(B: int, M: int, D: int, H: int, L: int) -> int:
    """Forward + backward matrix-product FLOPs of one step (see the module docstring)."""
    T = M + 1
    layer = 2 * M * D * H * D + 2 * M * D * H * D + 2 * T * D * M * H + 2 * T * M * H * D
    last = 2 * M * D * H * D + 2 * M * D * H * M + 2 * D * M * H + 2 * M * H * M
    return 3 * B * ((L - 1) * layer + last)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = tf.random.normal([n, n], dtype=tf.float32)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=10, help="TF steps per round (the reference does 1)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_train_step.json"))
    ap.add_argument("--note", default="", help="free text stored in the report (e.g. how the run was launched)")
    args = ap.parse_args()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    load_before = os.getloadavg()

    cfg = ref.ModelConfig(parametrization="block", n_layers=LAYERS, n_heads=HEADS, init_scale=0.05)
    params0 = ref.init_params(cfg, seed=0)
    A, b, x, mask = ref.sample_systems(BATCH, (N_MIN, N_MAX), 10.0, seed=0)
    D = cfg.token_width(N_MAX)
    flops = train_step_flops(BATCH, N_MAX, D, HEADS, LAYERS)

    # --- the implementations: each a callable running `n` steps, returning a float to sync on
    state = {"params": params0, "adam": ref.adam_init(params0)}

    def reference_steps(n):
        for _ in range(n):
            loss, grads = ref.loss_and_grads(state["params"], cfg, A, b, x, mask)
            grads, _ = clip_by_global_norm(grads, CLIP)
            state["params"], state["adam"] = ref.adam_update(state["params"], grads, state["adam"], LR)
        return loss

    trainers, compile_s = {}, {}
    for mode in ("xla", "graph", "eager"):
        trainers[mode] = Trainer(cfg, params0, sizes=(N_MIN, N_MAX), batch_size=BATCH, lr=LR, total_steps=10**6,
                                 clip_norm=CLIP, dtype=tf.float32, mode=mode)
    batch = trainers["xla"].prepare_batch(A, b, x, mask)

    def tf_steps(mode, sampled):
        def run(n):
            out = None
            for _ in range(n):
                out = trainers[mode]._step_fn(None if sampled else batch)
            return float(out["loss"].numpy())
        return run

    impls = {"reference": (reference_steps, 1),
             "tf_xla": (tf_steps("xla", False), args.steps),
             "tf_graph": (tf_steps("graph", False), args.steps),
             "tf_eager": (tf_steps("eager", False), 2),
             "tf_xla_sampled": (tf_steps("xla", True), args.steps),
             "tf_graph_sampled": (tf_steps("graph", True), args.steps)}
    for name, (fn, _) in impls.items():  # compile / warm up
        t0 = time.perf_counter()
        fn(1)
        compile_s[name] = time.perf_counter() - t0
        fn(1)
    times = {name: [] for name in impls}
    for r in range(args.rounds):
        for name, (fn, n) in impls.items():
            t0 = time.perf_counter()
            fn(n)
            times[name].append((time.perf_counter() - t0) / n)
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{k} {v[-1] * 1e3:.1f} ms" for k, v in times.items()),
              flush=True)
    peak = matmul_gflops()
    load_after = os.getloadavg()

    results = {}
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        results[name] = {"step_ms_median": med * 1e3, "step_ms_min": best * 1e3,
                         "systems_per_s_median": BATCH / med, "first_call_s": compile_s[name]}
        if name != "reference":
            results[name]["gflops_median"] = flops / med / 1e9
            results[name]["fraction_of_matmul_peak"] = flops / med / 1e9 / peak
    med = {k: v["step_ms_median"] for k, v in results.items()}
    speedups = {
        "xla_vs_reference": med["reference"] / med["tf_xla"],
        "xla_vs_tf_graph": med["tf_graph"] / med["tf_xla"],
        "xla_vs_tf_eager": med["tf_eager"] / med["tf_xla"],
        "xla_sampled_vs_reference": med["reference"] / med["tf_xla_sampled"],
        "xla_sampled_vs_tf_graph_sampled": med["tf_graph_sampled"] / med["tf_xla_sampled"],
    }
    report = {
        "benchmark": "one train step (loss, gradients, global-norm clip, Adam) on the same model and batch",
        "model": {"parametrization": "block", "n_layers": LAYERS, "n_heads": HEADS, "n_identity": 3,
                  "token_width": D},
        "batch": {"systems": BATCH, "n_min": N_MIN, "n_max": N_MAX, "kappa": 10.0},
        "dtype": {"reference": "float64", "tf": "float32"},
        "rounds": args.rounds, "tf_steps_per_round": args.steps,
        "flops_per_step": flops,
        "flops_formula": "matrix products only, forward + backward = 3 x forward; see the script's docstring",
        "matmul_2048_gflops": peak,
        "results": results,
        "speedups_median": speedups,
        "targets": {"xla_vs_reference>=30": speedups["xla_vs_reference"] >= 30,
                    "xla_vs_tf_graph>=1.5": speedups["xla_vs_tf_graph"] >= 1.5},
        "notes": [
            "reference times are float64 NumPy with a multi-threaded BLAS: they degrade several-fold when "
            "other processes compete for the cores (oversubscribed BLAS threads); check loadavg_before/after",
            "an XLA profile of the step (tf.profiler, thunk durations) puts ~90% of the time in matrix products, "
            "which TensorFlow without XLA runs with its own (oneDNN) kernels at least as fast: XLA's fusion only "
            "covers the small elementwise remainder on CPU",
        ] + ([args.note] if args.note else []),
        "machine": {"nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
                    "loadavg_before": load_before, "loadavg_after": load_after,
                    "tensorflow": tf.__version__, "numpy": np.__version__, "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    print(json.dumps({"speedups_median": speedups, "matmul_2048_gflops": peak,
                      **{k: round(v["step_ms_median"], 2) for k, v in results.items()}}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
