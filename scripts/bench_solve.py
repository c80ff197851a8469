"""What a solve costs: the learned solver against conjugate gradient and Cholesky, to the same accuracy.

For each size N and batch B (systems of the paper's law, kappa = 10, b = A x):

* ``model``: one pass of a shipped block model (``--model``: ``paper``, the 4-layer ``block-mixed`` for
  N <= 9 and ``block-finetune`` above, or a shipped name such as ``newton-schulz``, ``solve``'s default),
  the bare forward pass in TensorFlow (float32, XLA, the structured block path), on the batch as given:
  the inference cost of the model itself;
* ``cg@model``: conjugate gradient (batched NumPy, float64) with the fewest iterations whose mean
  relative error is at most the model's: the classical method to the same accuracy;
* ``scipy cg@model``: the same iterations with ``scipy.sparse.linalg.cg``, one system at a time
  (B <= 64);
* ``cholesky``: ``np.linalg.cholesky`` + two batched triangular solves (exact);
* ``solve 1e-8`` / ``cg 1e-8``: ``tf_impl.solve(A, b, tol=1e-8)`` (passes, flexible GCR) against CG to
  the same relative residual (B <= 64).

Times are the best of ``--repeats`` runs after a warm-up (compilation excluded), in milliseconds per
batch. The machine is noisy: compare rows of one run, not runs. Peak resident memory of the process
is reported at the end. Writes ``--out`` (JSON) and prints a Markdown table.

    python scripts/bench_solve.py [--repeats 5] [--out runs/bench_solve.json]
    python scripts/bench_solve.py --out results/bench_solve.json --overwrite-shipped          # the committed one
    python scripts/bench_solve.py --model newton-schulz --out results/bench_solve_ns.json --overwrite-shipped
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse.linalg

from reference.baselines import conjugate_gradient
from reference.data import sample_systems
from reference.pretrained import load_pretrained
from reference.report import add_output_args, checked_output
from reference.robustness import cg_iterations_to, relative_errors

CASES = [(9, 1), (9, 64), (9, 4096), (20, 1), (20, 64), (20, 4096), (64, 1), (64, 64), (64, 512), (256, 1)]
# (256, 16) is left out: its solve to 1e-8 runs 100 passes of ~1 s each (the model does not converge there)


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def cholesky_solve(A, b):
    L = np.linalg.cholesky(A)  # (B, N, N)
    y = np.linalg.solve(L, b[..., None])  # (B, N, 1): batched (LAPACK gesv on the triangle)
    return np.linalg.solve(np.swapaxes(L, 1, 2), y)[..., 0]


def bench_case(n: int, batch: int, repeats: int, model: str = "paper") -> dict:
    """One row of the table (see the module docstring)."""
    import tf_impl
    from tf_impl.model import forward

    name = ("block-mixed" if n <= 9 else "block-finetune") if model == "paper" else model
    params, cfg, _ = load_pretrained(name)
    A, b, x, _ = sample_systems(batch, n, 10.0, seed=[7, n, batch])
    Af, bf = A.astype(np.float32), b.astype(np.float32)
    x_model = forward(params, cfg, Af, bf, structured=True, dtype="float32")
    err_model = float(np.mean(relative_errors(x_model.astype(np.float64), x)))
    row = {"n": n, "batch": batch, "model": name, "err_model": err_model,
           "model_ms": best_ms(lambda: forward(params, cfg, Af, bf, structured=True, dtype="float32"), repeats)}
    k = 1
    while k < 4 * n and np.mean(relative_errors(conjugate_gradient(A, b, k), x)) > err_model:
        k += 1
    row["cg_iters_same_error"] = k
    row["cg_ms"] = best_ms(lambda k=k: conjugate_gradient(A, b, k), repeats)
    if batch <= 64:
        def scipy_cg(k=k):
            for s in range(batch):
                scipy.sparse.linalg.cg(A[s], b[s], rtol=0.0, atol=0.0, maxiter=k)
        row["scipy_cg_ms"] = best_ms(scipy_cg, repeats)
    row["cholesky_ms"] = best_ms(lambda: cholesky_solve(A, b), repeats)
    if batch <= 64:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol not reached off the model's sizes: expected, recorded in the row
            info = tf_impl.solve(A, b, model=name, tol=1e-8, return_info=True)
            row["solve_tol_ms"] = best_ms(lambda: tf_impl.solve(A, b, model=name, tol=1e-8),
                                          max(1, repeats // 2))
        row["solve_tol_passes_median"] = float(np.median(info.passes))
        row["solve_tol_converged"] = float(np.mean(info.converged))
        its = cg_iterations_to(A, b, 1e-8, max_iter=4 * n + 20)
        kt = int(np.max(its))
        row["cg_tol_iters_max"] = kt
        row["cg_tol_ms"] = best_ms(lambda kt=kt: conjugate_gradient(A, b, kt), repeats)
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    add_output_args(p, "runs/bench_solve.json", "the JSON file written")
    p.add_argument("--cases", default=None, help="NxB,NxB,... (default: the full grid)")
    p.add_argument("--model", default="paper", help="'paper' (block-mixed for N <= 9, block-finetune above) or a "
                                                    "shipped model's name")
    args = p.parse_args(argv)
    checked_output(p, args)
    cases = CASES if args.cases is None else [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    rows = []
    for n, batch in cases:
        rows.append(bench_case(n, batch, args.repeats, args.model))
        print(json.dumps(rows[-1]), flush=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg": os.getloadavg()}, "peak_rss_mib": rss_mib, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return result


def markdown(result) -> str:
    def ms(v):
        return "" if v is None else f"{v:.3g}"

    lines = ["| N | B | model (1 pass) | its error | CG to that error | scipy CG (loop) | Cholesky | solve to 1e-8 "
             "(passes) | CG to 1e-8 (iters) |", "|" + "---:|" * 9]
    for r in result["rows"]:
        tol = (f"{ms(r['solve_tol_ms'])} ({r['solve_tol_passes_median']:.0f}, "
               f"{100 * r['solve_tol_converged']:.0f}% met)") if "solve_tol_ms" in r else ""
        cgt = f"{ms(r['cg_tol_ms'])} ({r['cg_tol_iters_max']})" if "cg_tol_ms" in r else ""
        lines.append(f"| {r['n']} | {r['batch']} | {ms(r['model_ms'])} | {r['err_model']:.1e} | "
                     f"{ms(r['cg_ms'])} ({r['cg_iters_same_error']} its) | {ms(r.get('scipy_cg_ms'))} | "
                     f"{ms(r['cholesky_ms'])} | {tol} | {cgt} |")
    rss = result.get("peak_rss_mib")
    lines.append("\nTimes in ms per batch (best of the repeats)" + (f"; peak RSS {rss:.0f} MiB" if rss else "") + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
