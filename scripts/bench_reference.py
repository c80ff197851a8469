"""Time forward + backward (``loss_and_grads``) of the NumPy reference.

256 systems of size N=9 through 4 layers: block (1 head, 2 heads) and full (n=9, d_h=27).
Reports the median of several repeats after a warm-up, prints a table and writes
``results/bench_reference.json`` with the machine info.

    python scripts/bench_reference.py [--repeats 15] [--out results/bench_reference.json]
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

from reference import ModelConfig, forward, init_params, loss_and_grads, sample_systems  # noqa: E402

BATCH, N, LAYERS = 256, 9, 4
CASES = {
    "block, 1 head": ModelConfig(parametrization="block", n_layers=LAYERS, n_heads=1),
    "block, 2 heads": ModelConfig(parametrization="block", n_layers=LAYERS, n_heads=2),
    "full n=9 d_h=27, 1 head": ModelConfig(parametrization="full", n_layers=LAYERS, n_heads=1, n=N, embed_dim=27),
}


def timeit(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def blas_info() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "bench_reference.json"))
    args = ap.parse_args()

    A, b, x, mask = sample_systems(BATCH, N, kappa=10.0, seed=0)
    rows = []
    for name, cfg in CASES.items():
        params = init_params(cfg, seed=0)
        fb = timeit(lambda p=params, c=cfg: loss_and_grads(p, c, A, b, x, mask), args.repeats)
        fw = timeit(lambda p=params, c=cfg: forward(p, c, A, b, mask), args.repeats)
        rows.append({
            "case": name, "parametrization": cfg.parametrization, "n_heads": cfg.n_heads,
            "token_width": cfg.token_width(N),
            "forward_backward_median_s": statistics.median(fb), "forward_backward_min_s": min(fb),
            "forward_median_s": statistics.median(fw),
        })

    machine = {
        "nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None, "numpy": np.__version__, "blas": blas_info(), "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
    }
    result = {"benchmark": "reference.loss_and_grads (forward + hand-written backward), float64",
              "batch": BATCH, "n": N, "n_layers": LAYERS, "repeats": args.repeats, "warmup": 2,
              "machine": machine, "results": rows}

    print(f"NumPy reference, {BATCH} systems of N={N}, {LAYERS} layers "
          f"(nproc={machine['nproc']}, numpy {machine['numpy']}, {machine['blas']})")
    print(f"{'case':<26} {'D':>3} {'fwd+bwd median':>15} {'fwd+bwd min':>12} {'fwd median':>11}")
    for r in rows:
        print(f"{r['case']:<26} {r['token_width']:>3} {1e3 * r['forward_backward_median_s']:>12.1f} ms"
              f" {1e3 * r['forward_backward_min_s']:>9.1f} ms {1e3 * r['forward_median_s']:>8.1f} ms")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
