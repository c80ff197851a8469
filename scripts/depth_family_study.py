"""Error against depth for the depth families (block models on N in [2, 20]) and the Newton-Schulz construction.

For every checkpoint (and every depth given to ``--newton-schulz``: the hand-set model of
:func:`reference.constructions.newton_schulz_params` for kappa 10, untrained), N in {9, 15, 20, 40} (40: outside
the training sizes) and kappa in {10, 100} (each row records the kappa range its model was trained on):
the model's MSE on the fixed test systems of :mod:`reference.evaluation`, CG and Chebyshev (exact spectrum
bounds [1/kappa, 1]) with as many iterations as the model has layers, and the floor of every polynomial method
of that degree, the best 2-norm point of ``x0 + K_L(A, r0)`` (:func:`reference.analysis.krylov_best_errors`).

    python scripts/depth_family_study.py runs/depth-L2/final.npz runs/depth-L4/final.npz ... \
        [--newton-schulz 2 4 6 8] [--n-systems 500] [--out runs/depth_family]

A model's family is its run name without the depth (``depth-L4`` -> ``depth``, ``depth-ns-L4`` -> ``depth-ns``);
each family is one line of the plot.

Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from reference.analysis import krylov_best_errors
from reference.baselines import chebyshev, conjugate_gradient
from reference.checkpoint import load_checkpoint, load_checkpoint_extra
from reference.constructions import newton_schulz_params
from reference.evaluation import eval_systems, system_errors
from reference.model import forward
from reference.report import add_output_args, checked_output

SIZES, KAPPAS = (9, 15, 20, 40), (10.0, 100.0)


def family(name: str) -> str:
    """The run name without its depth: ``depth-L8-scratch`` -> ``depth-scratch``, ``depth-ns-L6`` -> ``depth-ns``."""
    return re.sub(r"-L\d+", "", name)


def run_name(path) -> str:
    """A run folder's name for ``RUN/final.npz``, the file's stem otherwise (``pretrained/learned-L4.npz``)."""
    path = Path(path)
    return path.parent.name if path.name in ("final.npz", "ckpt.npz") else path.stem


def models(paths, ns_depths):
    """``(name, path, params, cfg, train_steps, train_sizes, train_kappa)`` for every checkpoint, then every
    construction (built for kappa 10)."""
    for path in paths:
        params, cfg = load_checkpoint(path)
        meta, _ = load_checkpoint_extra(path)
        tc = meta.get("train_config", {})
        kappa = [tc.get("kappa"), tc.get("kappa_max") or tc.get("kappa")]
        yield run_name(path), str(path), params, cfg, meta.get("step"), [tc.get("n_min"), tc.get("n_max")], kappa
    for L in ns_depths:
        params, cfg = newton_schulz_params(L, kappa=10.0)
        yield f"newton-schulz-L{L}", "reference.constructions.newton_schulz_params", params, cfg, 0, None, [10.0, 10.0]


def evaluate(paths, n_systems: int, ns_depths=()) -> list[dict]:
    rows = []
    for name, path, params, cfg, train_steps, train_sizes, train_kappa in models(paths, ns_depths):
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
                rows.append({"checkpoint": path, "name": name, "family": family(name), "layers": L, "n": n,
                             "kappa": kappa, "train_steps": train_steps, "train_sizes": train_sizes,
                             "train_kappa": train_kappa,
                             **{k: float(np.mean(v)) for k, v in mse.items()}})
                r = rows[-1]
                print(f"{name}: L={L} N={n:2d} kappa={kappa:5.0f}: model {r['model']:.2e}  CG {r['cg']:.2e}  "
                      f"Chebyshev {r['chebyshev']:.2e}  Krylov-best {r['krylov_best']:.2e}", flush=True)
    return rows


def markdown(rows) -> str:
    out = []
    for kappa in KAPPAS:
        out += [f"**kappa = {kappa:g}**. MSE on fresh systems; CG, Chebyshev and the Krylov floor with L iterations; "
                "N outside a model's training sizes is marked *, a kappa outside its training range (a "
                "construction: the range it was built for) marks the run's name with a dagger.", "",
                "| run | L | N | model | CG-L | Chebyshev-L | best in K_L | model / CG |", "|---" * 8 + "|"]
        for r in sorted((r for r in rows if r["kappa"] == kappa), key=lambda r: (r["n"], r["layers"], r["name"])):
            lo, hi = r.get("train_sizes") or (r["n"], r["n"])
            star = "" if lo is None or lo <= r["n"] <= hi else "*"
            k_lo, k_hi = r.get("train_kappa") or (None, None)
            dagger = "" if k_lo is None or k_lo <= r["kappa"] <= k_hi else " †"
            out.append(f"| {r['name']}{dagger} | {r['layers']} | {r['n']}{star} | {r['model']:.2e} | {r['cg']:.2e} "
                       f"| {r['chebyshev']:.2e} | {r['krylov_best']:.2e} | {r['model'] / r['cg']:.3g} |")
        out.append("")
    return "\n".join(out)


def plot(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(KAPPAS), len(SIZES), figsize=(14, 6.5), sharex=True)
    baselines = {"cg": ("s--", "CG-L"), "chebyshev": ("^:", "Chebyshev-L"), "krylov_best": ("x-.", "best point of K_L")}
    families = list(dict.fromkeys(r["family"] for r in rows))
    for i, kappa in enumerate(KAPPAS):
        for j, n in enumerate(SIZES):
            ax = axes[i, j]
            here = [r for r in rows if r["kappa"] == kappa and r["n"] == n]
            values = []
            for k, fam in enumerate(families):
                sel = sorted((r for r in here if r["family"] == fam), key=lambda r: r["layers"])
                ys = [r["model"] for r in sel]
                values += ys
                ax.semilogy([r["layers"] for r in sel], ys, "oD*v^"[k % 5] + "-", color=f"C{4 + k}", label=fam)
            by_depth = {r["layers"]: r for r in here}  # the baselines do not depend on the model
            Ls = sorted(by_depth)
            for key, (style, label) in baselines.items():
                ys = [by_depth[L][key] for L in Ls]
                values += ys
                ax.semilogy(Ls, ys, style, label=label, color="0.4" if key == "cg" else None)
            positive = [v for v in values if v > 0]
            ax.set_ylim(max(min(positive) / 3, 1e-33), max(positive) * 3)
            ax.set_xticks(Ls)
            ax.set_title(f"N = {n}, kappa = {kappa:g}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == len(KAPPAS) - 1:
                ax.set_xlabel("layers L (iterations)")
            if j == 0:
                ax.set_ylabel("MSE")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*")
    p.add_argument("--newton-schulz", type=int, nargs="*", default=[], metavar="L",
                   help="also the untrained Newton-Schulz construction (kappa 10) with these depths")
    p.add_argument("--n-systems", type=int, default=500)
    add_output_args(p, "runs/depth_family", "output stem: writes OUT.json, OUT.md and OUT.png")
    p.add_argument("--title", default="Depth families (trained on N in [2, 20], kappa 10) and the Newton-Schulz "
                                      "construction: error against depth")
    args = p.parse_args(argv)
    out = checked_output(p, args)  # before the work: a shipped output needs --overwrite-shipped
    rows = evaluate(args.checkpoints, args.n_systems, args.newton_schulz)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"n_systems": args.n_systems, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    plot(rows, out.with_suffix(".png"), args.title)
    print(f"wrote {out}.json, .md, .png")


if __name__ == "__main__":
    main()
