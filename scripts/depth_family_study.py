"""Error against depth for the depth family (block models grown layer by layer on N in [2, 20]).

For every checkpoint, N in {9, 15, 20} and kappa in {10, 100} (the models were trained at kappa = 10):
the model's MSE on the fixed test systems of :mod:`reference.evaluation`, CG and Chebyshev (exact spectrum
bounds [1/kappa, 1]) with as many iterations as the model has layers, and the floor of every polynomial method
of that degree, the best 2-norm point of ``x0 + K_L(A, r0)`` (:func:`reference.analysis.krylov_best_errors`).

    python scripts/depth_family_study.py runs/depth-L2/final.npz runs/depth-L4/final.npz ... \
        [--n-systems 500] [--out results/depth_family]

Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from reference.analysis import krylov_best_errors
from reference.baselines import chebyshev, conjugate_gradient
from reference.checkpoint import load_checkpoint, load_checkpoint_extra
from reference.evaluation import eval_systems, system_errors
from reference.model import forward

SIZES, KAPPAS = (9, 15, 20), (10.0, 100.0)


def evaluate(paths, n_systems: int) -> list[dict]:
    rows = []
    for path in paths:
        params, cfg = load_checkpoint(path)
        meta, _ = load_checkpoint_extra(path)
        L = cfg.n_layers
        for kappa in KAPPAS:
            for n in SIZES:
                A, b, x, mask = eval_systems(n, kappa, n_systems)
                mse = {
                    "model": system_errors(forward(params, cfg, A, b, mask), x, mask)[0],
                    "cg": system_errors(conjugate_gradient(A, b, L, mask), x, mask)[0],
                    "chebyshev": system_errors(chebyshev(A, b, L, mask, lam_min=1 / kappa, lam_max=1.0), x, mask)[0],
                    "krylov_best": krylov_best_errors(A, b, x, mask, d_max=L)[:, L],
                }
                rows.append({"checkpoint": str(path), "name": Path(path).parent.name, "layers": L, "n": n,
                             "kappa": kappa, "train_steps": meta.get("step"),
                             **{k: float(np.mean(v)) for k, v in mse.items()}})
                r = rows[-1]
                print(f"L={L} N={n:2d} kappa={kappa:5.0f}: model {r['model']:.2e}  CG {r['cg']:.2e}  "
                      f"Chebyshev {r['chebyshev']:.2e}  Krylov-best {r['krylov_best']:.2e}", flush=True)
    return rows


def markdown(rows) -> str:
    out = []
    for kappa in KAPPAS:
        note = "" if kappa == 10 else " (out of the training distribution: trained at kappa = 10)"
        out += [f"**kappa = {kappa:g}**{note}. MSE on fresh systems; CG, Chebyshev and the Krylov floor with "
                "L iterations.", "",
                "| run | L | N | model | CG-L | Chebyshev-L | best in K_L | model / CG |", "|---" * 8 + "|"]
        for r in sorted((r for r in rows if r["kappa"] == kappa), key=lambda r: (r["n"], r["layers"], r["name"])):
            out.append(f"| {r['name']} | {r['layers']} | {r['n']} | {r['model']:.2e} | {r['cg']:.2e} "
                       f"| {r['chebyshev']:.2e} | {r['krylov_best']:.2e} | {r['model'] / r['cg']:.3g} |")
        out.append("")
    return "\n".join(out)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(KAPPAS), len(SIZES), figsize=(11, 6.5), sharex=True)
    styles = {"model": ("o-", "model"), "cg": ("s--", "CG-L"), "chebyshev": ("^:", "Chebyshev-L"),
              "krylov_best": ("x-.", "best point of K_L")}
    for i, kappa in enumerate(KAPPAS):
        for j, n in enumerate(SIZES):
            ax = axes[i, j]
            here = [r for r in rows if r["kappa"] == kappa and r["n"] == n]
            sel = sorted((r for r in here if not r["name"].endswith("-scratch")), key=lambda r: r["layers"])
            for r in here:  # a model trained from scratch where the family's line was grown: a separate marker
                if r["name"].endswith("-scratch"):
                    ax.semilogy([r["layers"]], [r["model"]], "*", ms=11, color="C4", label="model from scratch")
            Ls = [r["layers"] for r in sel]
            values = [r["model"] for r in here]
            for key, (style, label) in styles.items():
                ys = [r[key] for r in sel]
                values += ys
                ax.semilogy(Ls, ys, style, label=label)
            positive = [v for v in values if v > 0]
            ax.set_ylim(min(positive) / 3, max(positive) * 3)
            ax.set_xticks(Ls)
            ax.set_title(f"N = {n}, kappa = {kappa:g}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == len(KAPPAS) - 1:
                ax.set_xlabel("layers L (iterations)")
            if j == 0:
                ax.set_ylabel("MSE")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Depth family (trained on N in [2, 20], kappa 10): error against depth")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--n-systems", type=int, default=500)
    p.add_argument("--out", default="results/depth_family")
    args = p.parse_args(argv)
    rows = evaluate(args.checkpoints, args.n_systems)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"n_systems": args.n_systems, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.json, .md, .png")


if __name__ == "__main__":
    main()
