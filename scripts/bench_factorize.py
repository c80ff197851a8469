"""Factor once, solve many: the issue's timing ratios, and what a pass costs counted in its products.

Paired runs (each repeat runs every contender of a row once, interleaved), the best of ``--repeats`` after a
warm-up (compilation excluded), times in ms; the load average of the machine is recorded before and after.

* ``products``: for every shipped block model, the T x M x M products each layer computes on the sparse path
  (``reference.model.sparse_plans``: zero blocks skipped, identity groups of the encoding read without a product,
  Gram products shared by heads); the last layer of a pass and of a factorization needs none (query row only);
* ``matmul``: this machine's batched float64 matrix-product rate (NumPy), N x N times N x N, which turns the
  product counts into a lower bound on the time of a pass or a factorization;
* ``per_model``: one pass of ``tf_impl.solve`` with each of them at N = 256, beside that bound;
* ``targets``: one pass of the default (``newton-schulz``) at N = 256 against ``cho_factor`` + ``cho_solve``;
  256 systems of N = 64 against ``numpy.linalg.solve``; a new right-hand side on an existing factorization against
  ``cho_solve``; ``solve(tol=1e-12)`` with ``learned-L8-k100`` at kappa 100 against one pass.

    python scripts/bench_factorize.py [--repeats 7] [--out runs/bench_factorize.json]
    python scripts/bench_factorize.py --out results/bench_factorize.json --overwrite-shipped   # the committed one
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg

import reference
import tf_impl
from reference.data import sample_systems
from reference.model import first_layer_reading_b, sparse_plans
from reference.pretrained import PRETRAINED, load_pretrained
from reference.report import add_output_args, checked_output


def paired_ms(fns: dict, repeats: int) -> dict:
    """Best time (ms) of each function, the functions run interleaved in every repeat (after one warm-up)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: 1000 * min(v) for k, v in times.items()}


def matmul_rate(n: int, batch: int, repeats: int) -> float:
    """Multiply-adds per second of ``np.matmul`` on ``batch`` float64 products ``(n, n) @ (n, n)`` (at least 16 in one
    call: a single short product measures the scheduler of a loaded machine, not the arithmetic)."""
    batch = max(batch, 16)
    X = np.random.default_rng(0).standard_normal((batch, n, n))
    ms = paired_ms({"mm": lambda: X @ X}, repeats)["mm"]
    return batch * n**3 / (ms / 1000)


def product_counts() -> list:
    """Per shipped block model: the products of each layer on the sparse path, and whether it is cached."""
    rows = []
    for name in PRETRAINED:
        params, cfg, _ = load_pretrained(name)
        if cfg.parametrization != "block":
            continue
        per_layer = [plan.products for plan in sparse_plans(params, cfg)][:-1] + [0]  # last: query row only
        rows.append({"model": name, "layers": cfg.n_layers, "heads": cfg.n_heads, "K": cfg.n_identity,
                     "products_per_layer": per_layer, "cached": first_layer_reading_b(params, cfg) is None})
    return rows


def per_model(rows: list, n: int, repeats: int, rate: float) -> list:
    """One pass of ``tf_impl.solve`` with each shipped block model on one system of size ``n`` (kappa 10), beside
    the bound of its products at the matmul ``rate``: a cached model runs them once (the factorization), any other
    on both signs (twice)."""
    A, b, _ = system(n, 10.0, seed=2)
    out = []
    for row in rows:
        with warnings.catch_warnings():  # solve's warning that one pass may be far from the answer (N = 256 is
            # off most models' training sizes): the time is the point here
            warnings.simplefilter("ignore")
            ms = paired_ms({"pass": lambda m=row["model"]: tf_impl.solve(A[0], b[0], model=m)}, repeats)["pass"]
        runs = 1 if row["cached"] else 2
        bound = 1000 * runs * sum(row["products_per_layer"]) * (n + 1) * n * n / rate
        out.append({"model": row["model"], "n": n, "one_pass_ms": ms, "bound_ms": bound})
    return out


def system(n, kappa, seed=0, batch=1):
    A, b, x, _ = sample_systems(batch, n, kappa, seed=seed)
    return A, b, x


def targets(repeats: int, rate: float, n: int = 256, batch_n: int = 64, batch: int = 256) -> dict:
    """The timing ratios of the issue (``n`` = 256, ``batch`` = 256 systems of ``batch_n`` = 64), each row one paired
    measurement; ``rate`` the matmul rate at ``n``."""
    A, b, _ = system(n, 100.0)
    A0, b0 = A[0], b[0]
    fac_tf, fac_ref, cho = tf_impl.factorize(A0), reference.factorize(A0), scipy.linalg.cho_factor(A0)
    out = {}
    out["default_pass"] = paired_ms({
        "tf_impl.solve": lambda: tf_impl.solve(A0, b0), "reference.solve": lambda: reference.solve(A0, b0),
        "cho_factor+cho_solve": lambda: scipy.linalg.cho_solve(scipy.linalg.cho_factor(A0), b0),
        "tf_impl.factorize": lambda: tf_impl.factorize(A0), "reference.factorize": lambda: reference.factorize(A0)},
        repeats)
    params, cfg, _ = load_pretrained("newton-schulz")
    products = sum(plan.products for plan in sparse_plans(params, cfg)[:-1])
    out["default_pass"]["bound (products at the matmul rate)"] = 1000 * products * (n + 1) * n**2 / rate
    out["new_rhs"] = paired_ms({
        "tf_impl factorization.solve": lambda: fac_tf.solve(b0), "reference factorization.solve":
        lambda: fac_ref.solve(b0), "cho_solve": lambda: scipy.linalg.cho_solve(cho, b0)}, 3 * repeats)
    Ab, bb, _ = system(batch_n, 10.0, seed=1, batch=batch)
    out["batch"] = paired_ms({"tf_impl.solve": lambda: tf_impl.solve(Ab, bb),
                                     "numpy.linalg.solve": lambda: np.linalg.solve(Ab, bb[..., None])}, repeats)
    model = "learned-L8-k100"
    with warnings.catch_warnings():  # one pass at N = 256 may draw solve's warning that it is far from the
        # answer: the passes tol=1e-12 takes there are the point of the row
        warnings.simplefilter("ignore")
        info = tf_impl.solve(A0, b0, model=model, tol=1e-12, return_info=True)
        out["tol_learned"] = paired_ms({
            "tf_impl.solve tol=1e-12": lambda: tf_impl.solve(A0, b0, model=model, tol=1e-12),
            "tf_impl.solve one pass": lambda: tf_impl.solve(A0, b0, model=model)}, repeats)
    out["tol_learned"]["passes"] = int(info.passes)
    out["tol_learned"]["residual"] = float(info.residual)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    add_output_args(ap, "runs/bench_factorize.json", "the JSON file written")
    ap.add_argument("--sizes", default="256,64,256", help="N of the single system, N and count of the batch")
    ap.add_argument("--models", default="", help="per_model: only these shipped models (default: every block one)")
    args = ap.parse_args(argv)
    checked_output(ap, args)
    n, batch_n, batch = (int(v) for v in args.sizes.split(","))
    load_before = os.getloadavg()
    rates = {f"{m}x{k}": matmul_rate(m, k, args.repeats) for m, k in ((n, 1), (batch_n, batch))}
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_before": load_before},
              "sizes": {"n": n, "batch_n": batch_n, "batch": batch},
              "matmul_madds_per_s": rates, "products": product_counts(),
              "targets": targets(args.repeats, rates[f"{n}x1"], n, batch_n, batch)}
    chosen = [row for row in result["products"] if not args.models or row["model"] in args.models.split(",")]
    result["per_model"] = per_model(chosen, n, max(3, args.repeats // 2), rates[f"{n}x1"])
    result["machine"]["load_avg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
