"""Train-step time of the block model: the structured fast path against the dense D x D path.

The training configuration of the block presets: 4 layers, 4 heads, K = 3 identity copies, batch 512,
float32, the whole step (sampling excluded: one fixed batch; and sampled on device) in one XLA
function (:class:`tf_impl.optim.Trainer`, ``structured=True`` / ``False``), for the size ranges the
presets train on. Best and median of ``--repeats`` steps after two warm-up steps; the machine is noisy,
so compare the two paths within one run. FLOP counts of both paths: ``docs/concepts.md``, section 8.

    python scripts/bench_block_paths.py [--repeats 7] [--out results/bench_block_paths.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from reference.config import ModelConfig
from tf_impl.data import sample_systems
from tf_impl.optim import Trainer

SIZES = [(2, 9), (10, 20), (2, 30), (30, 30)]
BATCH = 512


def time_steps(fn, repeats: int) -> tuple[float, float]:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times), 1000 * statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="results/bench_block_paths.json")
    p.add_argument("--sizes", default=None, help="lo-hi,lo-hi (default: 2-9,10-20,2-30,30-30)")
    args = p.parse_args(argv)
    sizes = SIZES if args.sizes is None else [tuple(int(v) for v in s.split("-")) for s in args.sizes.split(",")]
    cfg = ModelConfig(n_layers=4, n_heads=4, n_identity=3, attention_norm="n", init_scale=0.05)
    rows = []
    for lo, hi in sizes:
        batch_np = sample_systems(BATCH, (lo, hi), 10.0, 0, dtype="float32")
        row = {"n_min": lo, "n_max": hi}
        for structured in (True, False):
            tr = Trainer(cfg, sizes=(lo, hi), batch_size=BATCH, structured=structured)
            batch = tr.prepare_batch(*batch_np)
            key = "structured" if structured else "dense"
            row[f"{key}_fixed_ms"], row[f"{key}_fixed_median_ms"] = time_steps(lambda tr=tr, b=batch: tr.train_step(b),
                                                                                args.repeats)
            row[f"{key}_sampled_ms"], _ = time_steps(lambda tr=tr: tr.train_step(), args.repeats)
        row["speedup_fixed"] = row["dense_fixed_ms"] / row["structured_fixed_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
              "config": {"layers": 4, "heads": 4, "n_identity": 3, "batch": BATCH, "dtype": "float32"}, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("| N | structured step (ms) | dense step (ms) | dense / structured | sampled on device: structured, dense |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| [{r['n_min']}, {r['n_max']}] | {r['structured_fixed_ms']:.0f} | {r['dense_fixed_ms']:.0f} | "
              f"{r['speedup_fixed']:.2f} | {r['structured_sampled_ms']:.0f}, {r['dense_sampled_ms']:.0f} |")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
