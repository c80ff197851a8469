"""Error against wall time and multiply-adds: every shipped model, CG, Jacobi-preconditioned CG and Cholesky.

Systems of the paper's law (kappa = 10, b = A x) at N = 16, 64, 256, one system and a batch (256, 64 and 4
systems). For every shipped block model (``full-n9`` runs at N = 9 only and is left out): ``tf_impl.solve``
with one pass and with ``tol=1e-8`` (at most ``--max-passes``, 20); for CG and Jacobi-preconditioned CG (batched NumPy)
the run of k iterations for k = 1, 2, 4, ..., 256; Cholesky (``np.linalg.cholesky`` and two triangular
solves). Error: the mean relative error ``||x_hat - x|| / ||x||``; time: the best of ``--repeats`` runs after
a warm-up (compilation excluded), in ms per batch; multiply-adds per system: the model's products
(``reference.model.sparse_plans``: each ``(N + 1) N^2``; a model cached as a matrix runs them once, then
``3 N^2`` a pass; any other runs them on both signs every pass), ``k (N^2 + 5 N)`` for CG (``+ N`` for the
preconditioner), ``N^3 / 3 + 2 N^2`` for Cholesky. ``solve``'s own checks (a Cholesky attempt, the eigenvalues
of ``A``) are in its time, not in its multiply-adds.

    python scripts/bench_compute_fair.py [--repeats 3] [--out runs/compute_fair.json]
    python scripts/bench_compute_fair.py --repeats 1 --max-passes 10 \
        --out results/compute_fair.json --overwrite-shipped     # the committed one (and its .png)
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

import tf_impl
from reference.data import sample_systems
from reference.model import first_layer_reading_b, sparse_plans
from reference.pretrained import PRETRAINED, load_pretrained
from reference.report import add_output_args, checked_output

CASES = [(16, 1), (16, 256), (64, 1), (64, 64), (256, 1), (256, 4)]
ITERS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def best_ms(fn, repeats: int):
    out = fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times), out


def pcg(A, b, n_iter, jacobi):
    """Batched (preconditioned) conjugate gradient from zero, ``n_iter`` iterations; ``jacobi``: M = diag(A)."""
    inv_d = 1.0 / np.einsum("bii->bi", A) if jacobi else np.ones_like(b)  # (B, N)
    x = np.zeros_like(b)
    r = b.copy()
    z = inv_d * r
    p, rz = z.copy(), np.einsum("bi,bi->b", r, z)
    for _ in range(n_iter):
        Ap = np.einsum("bij,bj->bi", A, p)
        alpha = rz / np.maximum(np.einsum("bi,bi->b", p, Ap), 1e-300)
        x += alpha[:, None] * p
        r -= alpha[:, None] * Ap
        z = inv_d * r
        rz_new = np.einsum("bi,bi->b", r, z)
        p = z + (rz_new / np.maximum(rz, 1e-300))[:, None] * p
        rz = rz_new
    return x


def cholesky(A, b):
    L = np.linalg.cholesky(A)
    return np.linalg.solve(np.swapaxes(L, 1, 2), np.linalg.solve(L, b[..., None]))[..., 0]


def model_madds(name, n, passes):
    params, cfg, _ = load_pretrained(name)
    products = sum(plan.products for plan in sparse_plans(params, cfg)[:-1]) * (n + 1) * n * n
    if first_layer_reading_b(params, cfg) is None:
        return products + 3 * n * n * passes
    return 2 * products * passes + 3 * n * n * passes


def error(x_hat, x):
    return float(np.mean(np.linalg.norm(x_hat - x, axis=1) / np.linalg.norm(x, axis=1)))


def bench_case(n, batch, repeats, models, max_passes=20):
    A, b, x, _ = sample_systems(batch, n, 10.0, seed=n + batch)
    rows = []
    for k in ITERS:
        for label, jac in (("CG", False), ("Jacobi-PCG", True)):
            ms, xh = best_ms(lambda k=k, jac=jac: pcg(A, b, k, jac), repeats)
            rows.append({"method": label, "iters": k, "ms": ms, "error": error(xh, x),
                         "madds": k * (n * n + 5 * n + (n if jac else 0))})
    ms, xh = best_ms(lambda: cholesky(A, b), repeats)
    rows.append({"method": "Cholesky", "ms": ms, "error": error(xh, x), "madds": n**3 / 3 + 2 * n * n})
    for name in models:
        if load_pretrained(name)[1].parametrization != "block":
            continue
        for tol in (None, 1e-8):
            with warnings.catch_warnings():  # one pass far from the answer, tol not met: the errors say it
                warnings.simplefilter("ignore")
                ms, info = best_ms(lambda tol=tol, name=name: tf_impl.solve(
                    A, b, model=name, tol=tol, max_passes=None if tol is None else max_passes, return_info=True),
                    repeats)
            passes = float(np.mean(info.passes))
            rows.append({"method": name, "tol": tol, "ms": ms, "error": error(info.x, x), "passes": passes,
                         "madds": model_madds(name, n, max(passes, 1.0))})
    return [dict(row, n=n, batch=batch) for row in rows]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    add_output_args(ap, "runs/compute_fair.json", "the JSON file written, and its figure beside it (.png)")
    ap.add_argument("--cases", default=",".join(f"{n}x{b}" for n, b in CASES), help="NxB,... (N = size, B = batch)")
    ap.add_argument("--models", default=",".join(PRETRAINED), help="shipped models to run (block ones only)")
    ap.add_argument("--max-passes", type=int, default=20, help="at most this many passes of solve(tol=1e-8)")
    ap.add_argument("--plot-only", action="store_true", help="draw the figure of an existing --out, measure nothing")
    args = ap.parse_args(argv)
    checked_output(ap, args)
    if args.plot_only:
        result = json.loads(Path(args.out).read_text())
        plot(result, Path(args.out).with_suffix(".png"))
        return result
    cases = [tuple(int(v) for v in case.split("x")) for case in args.cases.split(",")]
    result = {"load_avg_before": os.getloadavg(), "cpus": os.cpu_count(), "cases": cases, "repeats": args.repeats,
              "max_passes": args.max_passes, "rows": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for n, batch in cases:
        result["rows"] += bench_case(n, batch, args.repeats, args.models.split(","), args.max_passes)
        result["load_avg_after"] = os.getloadavg()
        Path(args.out).write_text(json.dumps(result, indent=1))  # after every case: a long run keeps what it did
        print(n, batch, flush=True)
    plot(result, Path(args.out).with_suffix(".png"))
    return result


def plot(result, path):
    """Error against time (top, ms per batch) and against multiply-adds per system (bottom), one column per case:
    CG curves, Cholesky and the models as points (o one pass, ^ solve to 1e-8)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = [tuple(case) for case in result["cases"] if any(r["n"] == case[0] and r["batch"] == case[1]
                                                                for r in result["rows"])]
    fig, axes = plt.subplots(2, len(cases), figsize=(3.6 * len(cases), 7.5), sharey=True, squeeze=False)
    for col, (n, batch) in enumerate(cases):
        rows = [r for r in result["rows"] if r["n"] == n and r["batch"] == batch]
        for ax, key in zip(axes[:, col], ("ms", "madds"), strict=True):
            _panel(ax, rows, key)
            ax.set(xscale="log", yscale="log", xlabel="ms per batch" if key == "ms" else "multiply-adds per system")
        axes[0, col].set_title(f"N = {n}, {batch} system(s)")
    for row in axes:
        row[0].set_ylabel("mean relative error")
    axes[0, 0].legend(fontsize=6, loc="lower left", ncol=2)
    load = ", ".join(f"{v:.1f}" for v in result["load_avg_before"][:1] + result["load_avg_after"][:1])
    fig.suptitle(f"Error against wall time and multiply-adds (2 CPU cores, load average {load} before/after; "
                 "models: o one pass, ^ solve to 1e-8)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _panel(ax, rows, key):
    for label, style in (("CG", "k-o"), ("Jacobi-PCG", "b--s")):
        cg = [r for r in rows if r["method"] == label]
        ax.plot([r[key] for r in cg], [max(r["error"], 1e-17) for r in cg], style, ms=3, label=label)
    ch = [r for r in rows if r["method"] == "Cholesky"][0]
    ax.plot(ch[key], max(ch["error"], 1e-17), "r*", ms=12, label="Cholesky")
    for i, name in enumerate(sorted({r["method"] for r in rows if "tol" in r})):
        for r in (r for r in rows if r["method"] == name):
            ax.plot(r[key], max(r["error"], 1e-17), "o" if r["tol"] is None else "^", color=f"C{i % 10}",
                    mfc="none" if r["tol"] is None else None, label=name if r["tol"] is None else None)


if __name__ == "__main__":
    main()
