"""Train-step time of the shipped block configuration: structured and dense paths, XLA and plain TF graph,
against the NumPy reference; GFLOP/s and the fraction of this machine's matmul peak; peak memory.

Model: block parametrization, 4 layers, 4 heads, K = 3 identity copies, attention_norm "n" (the block
presets); a batch of 512 systems (kappa 10) per size range: N in [2, 9], [10, 20] and N = 30. One train
step = loss, gradients, global-norm clipping and the Adam update, on one fixed batch (the same for every
implementation; the ``*_sampled`` rows draw it on device, as training does):

* ``xla_structured`` / ``xla_dense``: :class:`tf_impl.optim.Trainer` ``mode="xla"`` (the whole step one
  ``tf.function(jit_compile=True)``), ``structured=True`` (the default) / ``False`` (D x D matrices);
* ``graph_structured`` / ``graph_dense``: the same step under ``tf.function`` without XLA;
* ``reference``: ``reference.loss_and_grads(structured=True)`` + clipping + Adam, NumPy float64 (the
  reference has no float32 path).

TensorFlow runs in float32 (training precision), TF32 off. Rounds are interleaved (every implementation
once per round) so that a change of machine load hits all alike; the report gives the median and the
minimum over rounds of the mean step time of a round, and the load average before and after.

FLOPs (matrix products only, forward + backward = 3 x forward; ``docs/concepts.md``, section 8): per
layer, head and system, with T = M + 1 tokens, D = M + 1 + K M and W = K + 1, in multiply-adds

    dense:       keys + values 2 M D^2,            scores + update 2 T M D
    structured:  keys + values 2 M^2 (W + 1) W,    scores + update 2 T M D

counted for every layer (the last layer's query-only shortcut is not subtracted, so GFLOP/s is an upper
bound, by at most 1/L). The dense count is the work the dense path does; the structured count, the work
the structured path does: "effective" GFLOP/s of the structured path use the dense count (what the same
step would cost done densely). The peak: a 2048 x 2048 float32 matmul in TensorFlow (best of several).

Memory (``--memory``): peak resident set size of a fresh process that trains 3 steps at batch 2048,
N = 20 (structured, XLA), and of one that solves one 256 x 256 system with ``reference.solve`` and with
``tf_impl.solve`` (shipped model, one pass).

    python scripts/bench_train_step.py [--rounds 5] [--steps 5] [--memory] [--out runs/bench_train_step.json]
    (the committed results/bench_train_step.json: --out results/bench_train_step.json --overwrite-shipped)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import reference as ref
from reference.optim import clip_by_global_norm
from reference.report import add_output_args, checked_output
from tf_impl._quiet import tf
from tf_impl.config import TrainConfig
from tf_impl.optim import Trainer

RANGES = [(2, 9), (10, 20), (30, 30)]
BATCH, LAYERS, HEADS, K = 512, 4, 4, 3
CLIP, LR = 10.0, 1e-3


def train_step_flops(B: int, M: int, structured: bool) -> int:
    """Forward + backward matrix-product FLOPs of one step (module docstring)."""
    T, D, W = M + 1, M + 1 + K * M, K + 1
    kv = 2 * M * M * (W + 1) * W if structured else 2 * M * D * D
    macs = LAYERS * HEADS * (kv + 2 * T * M * D)  # per system
    return 3 * 2 * B * macs


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


def bench_range(n_min: int, n_max: int, rounds: int, steps: int, with_reference: bool) -> dict:
    """Median and minimum step times (ms) of every implementation on one size range."""
    tcfg = TrainConfig(parametrization="block", n_layers=LAYERS, n_heads=HEADS, n_identity=K, attention_norm="n",
                       init_scale=0.05, n_min=n_min, n_max=n_max, kappa=10.0, batch_size=BATCH, lr=LR,
                       steps=10**6, warmup=0, schedule="constant", clip_norm=CLIP, dtype="float32")
    cfg = tcfg.model_config()
    params0 = ref.init_params(cfg, seed=0)
    A, b, x, mask = ref.sample_systems(BATCH, (n_min, n_max), 10.0, seed=0)
    state = {"params": params0, "adam": ref.adam_init(params0)}

    def reference_steps(n):
        for _ in range(n):
            _, grads = ref.loss_and_grads(state["params"], cfg, A, b, x, mask, structured=True)
            grads, _ = clip_by_global_norm(grads, CLIP)
            state["params"], state["adam"] = ref.adam_update(state["params"], grads, state["adam"], LR)

    impls = {}
    for mode in ("xla", "graph"):
        for structured in (True, False):
            tr = Trainer(dataclasses.replace(tcfg, mode=mode), params0, structured=structured)
            batch = tr.prepare_batch(A, b, x, mask)
            name = f"{mode}_{'structured' if structured else 'dense'}"
            impls[name] = (lambda n, tr=tr, batch=batch: [tr.train_step(batch) for _ in range(n)], steps)
            if mode == "xla":
                impls[name + "_sampled"] = (lambda n, tr=tr: [tr.train_step() for _ in range(n)], steps)
    if with_reference:
        impls["reference"] = (reference_steps, 1)
    first_call = {}
    for name, (fn, _) in impls.items():  # compile and warm up
        t0 = time.perf_counter()
        fn(1)
        first_call[name] = time.perf_counter() - t0
        fn(1)
    times = {name: [] for name in impls}
    for r in range(rounds):
        for name, (fn, n) in impls.items():
            t0 = time.perf_counter()
            fn(n)
            times[name].append((time.perf_counter() - t0) / n)
        print(f"N in [{n_min}, {n_max}] round {r + 1}/{rounds}: "
              + "  ".join(f"{k} {v[-1] * 1e3:.0f}" for k, v in times.items()) + " (ms)", flush=True)
    return {name: {"step_ms_median": 1e3 * statistics.median(ts), "step_ms_min": 1e3 * min(ts),
                   "first_call_s": first_call[name]} for name, ts in times.items()}


def peak_rss_mib(code: str) -> float:
    """Peak resident set size (MiB) of a fresh Python process running ``code``: its VmHWM (Linux). Not
    ru_maxrss, which a child inherits from the (large) benchmark process that forked it."""
    report = ("; print('peak_rss_kib', next(line.split()[1] for line in open('/proc/self/status') "
              "if line.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code + report], check=True, capture_output=True, text=True).stdout
    return int(out.split("peak_rss_kib")[-1]) / 1024


MEMORY_CASES = {
    "train_batch2048_n20": (
        "import os, tempfile; from tf_impl.train import main; "
        "main(['--preset', 'block-mixed', '--n-min', '20', '--n-max', '20', '--batch-size', '2048', '--steps', '3', "
        "'--eval-every', '0', '--eval-systems', '10', '--out', tempfile.mkdtemp()])"),
    "solve_n256_reference": (
        "import numpy as np, reference; from reference.data import sample_systems; "
        "A, b, x, m = sample_systems(1, 256, 10.0, seed=0); import warnings; warnings.simplefilter('ignore'); "
        "reference.solve(A[0], b[0], model='broad')"),
    "solve_n256_tf_impl": (
        "import numpy as np, tf_impl; from reference.data import sample_systems; "
        "A, b, x, m = sample_systems(1, 256, 10.0, seed=0); import warnings; warnings.simplefilter('ignore'); "
        "tf_impl.solve(A[0], b[0], model='broad')"),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=5, help="TF steps per round (the reference does 1)")
    ap.add_argument("--ranges", default=None, help="lo-hi,lo-hi (default 2-9,10-20,30-30)")
    ap.add_argument("--no-reference", action="store_true", help="skip the NumPy reference (slow at N = 30)")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS (module docstring)")
    add_output_args(ap, "runs/bench_train_step.json", "the JSON file written")
    args = ap.parse_args(argv)
    checked_output(ap, args)
    ranges = RANGES if args.ranges is None else [tuple(int(v) for v in s.split("-")) for s in args.ranges.split(",")]
    tf.config.experimental.enable_tensor_float_32_execution(False)
    load_before = os.getloadavg()
    rows = []
    for n_min, n_max in ranges:
        timings = bench_range(n_min, n_max, args.rounds, args.steps, not args.no_reference)
        rows.append({"n_min": n_min, "n_max": n_max, "results": timings})
    peak = matmul_gflops()
    for row in rows:
        M = row["n_max"]
        dense, structured = train_step_flops(BATCH, M, False), train_step_flops(BATCH, M, True)
        row["flops_dense"], row["flops_structured"] = dense, structured
        for name, r in row["results"].items():
            own = structured if "structured" in name or name == "reference" else dense
            r["gflops"] = own / (r["step_ms_median"] / 1e3) / 1e9
            r["fraction_of_matmul_peak"] = r["gflops"] / peak
            r["effective_gflops"] = dense / (r["step_ms_median"] / 1e3) / 1e9
        med = {k: v["step_ms_median"] for k, v in row["results"].items()}
        row["speedups_median"] = {"structured_vs_dense_xla": med["xla_dense"] / med["xla_structured"],
                                  "xla_vs_graph_structured": med["graph_structured"] / med["xla_structured"]}
        if "reference" in med:
            row["speedups_median"]["xla_structured_vs_reference"] = med["reference"] / med["xla_structured"]
    memory = {name: peak_rss_mib(code) for name, code in MEMORY_CASES.items()} if args.memory else None
    report = {
        "benchmark": "one train step (loss, gradients, global-norm clip, Adam), same model and batch everywhere",
        "model": {"parametrization": "block", "n_layers": LAYERS, "n_heads": HEADS, "n_identity": K,
                  "attention_norm": "n"},
        "batch": BATCH, "kappa": 10.0, "dtype": {"reference": "float64", "tf": "float32"},
        "rounds": args.rounds, "tf_steps_per_round": args.steps,
        "flops_formula": "matrix products only, every layer full, forward + backward = 3 x forward; docstring",
        "matmul_2048_gflops": peak, "rows": rows, "peak_rss_mib": memory,
        "machine": {"nproc": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "tensorflow": tf.__version__, "numpy": np.__version__, "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"wrote {args.out}")
    return report


def markdown(report: dict) -> str:
    """The table of the performance page."""
    lines = ["| N | XLA structured | XLA dense | graph structured | graph dense | reference (f64) | "
             "dense / structured | structured: GFLOP/s, % of peak |", "|---|" + "---:|" * 7]
    for row in report["rows"]:
        r = row["results"]
        ms = [f"{r[k]['step_ms_median']:.0f}" if k in r else "-"
              for k in ("xla_structured", "xla_dense", "graph_structured", "graph_dense", "reference")]
        s = r["xla_structured"]
        lines.append(f"| [{row['n_min']}, {row['n_max']}] | " + " | ".join(ms)
                     + f" | {row['speedups_median']['structured_vs_dense_xla']:.2f} | "
                       f"{s['gflops']:.1f}, {100 * s['fraction_of_matmul_peak']:.0f}% |")
    lines.append(f"\nStep times in ms (median of {report['rounds']} interleaved rounds), batch {report['batch']}; "
                 f"matmul peak {report['matmul_2048_gflops']:.0f} GFLOP/s.")
    if report["peak_rss_mib"]:
        lines.append("Peak RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in report["peak_rss_mib"].items()) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
