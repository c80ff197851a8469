"""Draw the README's headline figure, ``docs/assets/headline.png``: a system as tokens, the model, and
the shipped models' error against conjugate gradient with as many iterations as the model has layers.

    python scripts/make_headline_figure.py [--eval results/eval/eval.json] [--out runs/headline.png]
    python scripts/make_headline_figure.py --out docs/assets/headline.png --overwrite-shipped   # the committed one

The tokens are those of one sampled system (the block encoding, ``reference.layers.encode_forward``);
the error curves are the measured numbers of ``results/eval/eval.json`` (``python -m tf_impl.evaluate``
on the shipped models: 1000 fresh systems per size, kappa = 10), nothing is recomputed here.
Deterministic: a fixed seed, no timestamps in the PNG metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from reference import ModelConfig, sample_systems  # noqa: E402
from reference.layers import encode_forward  # noqa: E402
from reference.report import add_output_args, checked_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_META = {"Software": None}  # no matplotlib version in the file: re-running gives the same bytes
MODELS = {"block-mixed": ("C0", "trained on N in [2, 9]"), "block-finetune": ("C1", "then N in [10, 20]")}
KAPPA = 10.0


def curves(eval_json: Path) -> tuple[dict[str, dict[int, float]], int]:
    """MSE by size of every model of ``MODELS``, of CG with as many iterations as their layers, and of x = 0."""
    data = json.loads(eval_json.read_text(encoding="utf-8"))
    recs = [r for r in data["records"] if r["kappa"] == KAPPA]
    layers = {r["iters"] for r in recs if r["method"] in MODELS}
    if len(layers) != 1:
        raise ValueError(f"the models of {sorted(MODELS)} have different depths: {sorted(layers)}")
    (depth,) = layers
    out: dict[str, dict[int, float]] = {}
    for r in recs:
        name = r["method"] if r["method"] in MODELS or r["method"] == "zero" else None
        if r["method"] == "cg" and r["iters"] == depth:
            name = "cg"
        if name is not None:
            out.setdefault(name, {})[int(r["n"])] = float(r["mse"])
    missing = [k for k in (*MODELS, "cg", "zero") if k not in out]
    if missing:
        raise ValueError(f"{eval_json}: no kappa = {KAPPA:g} records for {missing}")
    return out, depth


def draw(eval_json: Path, path: Path) -> None:
    err, depth = curves(eval_json)
    n = 5
    A, b, _, mask = sample_systems(batch=1, sizes=n, kappa=KAPPA, seed=2)
    Z, _ = encode_forward(A, b, np.zeros_like(b), mask, ModelConfig(parametrization="block", n_identity=3))
    Z = Z[0]  # (T, D): N equation tokens and the query

    fig = plt.figure(figsize=(12.5, 4.0))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.3, 0.9, 1.5], wspace=0.3)
    # 1. the tokens
    ax = fig.add_subplot(grid[0])
    v = np.abs(Z[:n, :n + 1]).max()  # the colours of A and b (the ones of h and the query saturate)
    ax.imshow(Z, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest", aspect="auto")
    ax.axhline(Z.shape[0] - 1.5, color="k", lw=1.2, ls="--")
    for e in (n, n + 1):
        ax.axvline(e - 0.5, color="k", lw=0.8)
    ax.set_yticks(range(Z.shape[0]), [f"$e_{{{i + 1}}}$" for i in range(n)] + ["query"])
    ax.set_xticks([(n - 1) / 2, n, n + 1 + (3 * n - 1) / 2], ["$a_i$", "$b_i$", "$h_i$"])
    ax.tick_params(length=0)
    ax.set_title(f"1. a system $Ax = b$ (N = {n}):\none token per equation, plus a query", fontsize=10)

    # 2. the model
    ax = fig.add_subplot(grid[1])
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")
    ax.set_title("2. the model", fontsize=10)
    for i in range(depth):
        y = 0.8 - i * 0.15
        ax.add_patch(FancyBboxPatch((0.15, y - 0.05), 0.7, 0.1, boxstyle="round,pad=0.01", fc="#e8eaf6", ec="#3f51b5"))
        ax.text(0.5, y, f"linear attention, layer {i + 1}", ha="center", va="center", fontsize=8)
    rule = r"each layer: $e_i \leftarrow e_i + \sum_j (e_j^\top Q\, e_i)\, P\, e_j$"
    ax.text(0.5, 0.12, rule + "\nno softmax, no MLP", ha="center", va="center", fontsize=8.5)
    for start, end in (((-0.12, 0.55), (0.13, 0.55)), ((0.87, 0.55), (1.12, 0.55))):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=15, color="k", clip_on=False))
    ax.text(0.97, 0.6, r"$\hat x$", ha="center", va="bottom", fontsize=12)

    # 3. the error against CG
    ax = fig.add_subplot(grid[2])
    sizes = sorted(err["cg"])
    for name, (color, label) in MODELS.items():
        ax.semilogy(sorted(err[name]), [err[name][k] for k in sorted(err[name])], "o-", ms=3, color=color,
                    label=f"{name} ({label})")
    shown = [k for k in sizes if k > depth]  # CG is exact up to rounding when N <= its iterations: off the axis
    ax.semilogy(shown, [err["cg"][k] for k in shown], "k--", lw=1.5,
                label=f"conjugate gradient, {depth} iterations (exact for N ≤ {depth})")
    ax.semilogy(sizes, [err["zero"][k] for k in sizes], ":", color="grey", label="x = 0")
    ax.set(xlabel="system size N", ylabel="MSE", ylim=(5e-5, 1e3))
    ax.set_title(f"3. error of one {depth}-layer pass vs CG ($\\kappa$ = {KAPPA:g}, fresh systems)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right")
    fig.savefig(path, dpi=110, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=ROOT / "results" / "eval" / "eval.json",
                        help="evaluation records (python -m tf_impl.evaluate)")
    add_output_args(parser, "runs/headline.png", "the PNG (the docs' own: docs/assets/headline.png, with "
                    "--overwrite-shipped)")
    args = parser.parse_args(argv)
    args.out = checked_output(parser, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(args.eval, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
