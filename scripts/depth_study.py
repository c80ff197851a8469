"""Loss vs depth: train one preset at several depths with a short, equal budget and compare each
depth with conjugate gradient given as many iterations as the model has layers.

    python scripts/depth_study.py --preset block-mixed --depths 1 2 3 4 6 8 --steps 1500 --batch-size 256

Every run is a plain ``python -m tf_impl.train`` (its checkpoints land in ``runs/depth/L<k>``);
this script then evaluates each final checkpoint on the fixed test systems of
:mod:`reference.evaluation` for every training size and writes ``results/depth_study.json``,
``results/depth_study.md`` and ``results/depth_study.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reference.checkpoint import load_checkpoint, load_checkpoint_extra
from reference.evaluation import model_vs_cg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="block-mixed")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-systems", type=int, default=500)
    p.add_argument("--runs", default="runs/depth")
    p.add_argument("--out", default="results")
    p.add_argument("--reuse", action="store_true", help="skip training where runs/depth/L<k>/final.npz exists")
    args, extra = p.parse_known_args(argv)  # the rest: --key value overrides passed to tf_impl.train
    args.extra = extra

    rows = []
    for depth in args.depths:
        run = Path(args.runs) / f"L{depth}"
        t0 = time.time()
        if not (args.reuse and (run / "final.npz").exists()):
            cmd = [sys.executable, "-m", "tf_impl.train", "--preset", args.preset, "--n-layers", str(depth),
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--out", str(run),
                   "--eval-every", "0", *extra]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.time() - t0
        params, cfg = load_checkpoint(run / "final.npz")
        meta, _ = load_checkpoint_extra(run / "final.npz")
        tc = meta["train_config"]
        table = model_vs_cg(params, cfg, range(tc["n_min"], tc["n_max"] + 1), tc["kappa"], args.n_systems)
        per_n = {r["n"]: {"model": r["mse_model"], "cg": r["mse_cg"]} for r in table}
        mean_model = float(np.mean([v["model"] for v in per_n.values()]))
        mean_cg = float(np.mean([v["cg"] for v in per_n.values()]))
        rows.append({"depth": depth, "train_seconds": seconds, "mean_mse_model": mean_model,
                     "mean_mse_cg": mean_cg, "per_n": per_n})
        print(f"L={depth}: model MSE {mean_model:.3e}  CG-{depth} MSE {mean_cg:.3e}  ({seconds:.0f} s)", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth_study.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    md = [f"Depth study: preset `{args.preset}`, {args.steps} steps, batch {args.batch_size}, "
          f"MSE averaged over the training sizes ({args.n_systems} fresh systems each).", "",
          "| layers | model MSE | CG MSE (same iterations) | model / CG | train time (s) |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = r["mean_mse_model"] / r["mean_mse_cg"] if r["mean_mse_cg"] > 0 else float("inf")
        md.append(f"| {r['depth']} | {r['mean_mse_model']:.2e} | {r['mean_mse_cg']:.2e} | {ratio:.3g} | "
                  f"{r['train_seconds']:.0f} |")
    (out / "depth_study.md").write_text("\n".join(md) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    d = [r["depth"] for r in rows]
    ax.semilogy(d, [r["mean_mse_model"] for r in rows], "o-", label=f"{args.preset} ({args.steps} steps)")
    ax.semilogy(d, [r["mean_mse_cg"] for r in rows], "s--", label="CG, same number of iterations")
    ax.set_xlabel("layers / iterations")
    ax.set_ylabel("MSE, mean over training sizes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "depth_study.png", dpi=110)
    print("\n".join(md))


if __name__ == "__main__":
    main()
