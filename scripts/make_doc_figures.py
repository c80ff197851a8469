"""Draw the figures of the documentation site into ``docs/assets/`` (committed PNGs).

    python scripts/make_doc_figures.py [--out runs/doc_figures]
    python scripts/make_doc_figures.py --out docs/assets --overwrite-shipped    # the committed figures

* ``token_matrix.png`` (home page): the block-encoded tokens of one system, ``Z`` with one row
  per equation and the query last, the groups ``a | b | h1 | h2 | h3`` marked, and the model's
  read-out.
* ``block_expand.png`` (concepts page): the same 25 block scalars expanded into ``P`` for
  ``N = 3`` and ``N = 6``.

Deterministic: fixed seeds, no timestamps in the PNG metadata.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reference import ModelConfig, sample_systems  # noqa: E402
from reference.layers import block_expand_forward, encode_forward  # noqa: E402
from reference.report import add_output_args, checked_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ["a", "b", "h¹", "h²", "h³"]
K = 3
PNG_META = {"Software": None}  # no matplotlib version in the file: re-running gives the same bytes


def group_edges(n: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([n, 1] + [n] * K)])


def token_matrix(path: Path) -> None:
    n = 6
    A, b, x, mask = sample_systems(batch=1, sizes=n, kappa=10.0, seed=2)
    x0 = np.zeros_like(b)
    Z, _ = encode_forward(A, b, x0, mask, ModelConfig(parametrization="block", n_identity=K))
    Z = Z[0]  # (T, D)
    T, D = Z.shape
    fig, ax = plt.subplots(figsize=(10, 3.9))
    v = np.abs(Z).max()
    im = ax.imshow(Z, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
    edges = group_edges(n)
    for e in edges[1:-1]:
        ax.axvline(e - 0.5, color="k", lw=1.2)
    ax.axhline(T - 1.5, color="k", lw=1.2, ls="--")
    top = ax.secondary_xaxis("top")
    top.set_xticks((edges[:-1] + edges[1:]) / 2 - 0.5,
                   ["a  (row of A)", "b", "h¹", "h²", "h³"])
    top.tick_params(length=0)
    ax.set_yticks(range(T), [f"$e_{{{i + 1}}}$" for i in range(T - 1)] + ["query"])
    ax.set_xticks([])
    ax.set_xlabel(f"token coordinates: D = N + 1 + 3N = {D}", loc="right")
    ax.annotate("", xy=(-0.5, T - 1), xytext=(n - 0.5, T - 1),
                arrowprops=dict(arrowstyle="<->", color="tab:green", lw=2))
    ax.text(n / 2 - 0.5, T - 0.25, r"$x_0$ in, $\hat x$ out after $L$ layers", color="tab:green",
            ha="center", va="top", fontsize=10)
    ax.set_title(f"A system Ax = b with N = {n} as N + 1 tokens (block encoding)", pad=24)
    fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=130, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)


def block_expand(path: Path) -> None:
    rng = np.random.default_rng(0)
    p = np.round(rng.uniform(-1, 1, size=(1, K + 2, K + 2)), 2)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.3, 2.1]})
    axes[0].imshow(p[0], cmap="RdBu_r", vmin=-1, vmax=1)
    axes[0].set_xticks(range(K + 2), GROUPS)
    axes[0].set_yticks(range(K + 2), GROUPS)
    axes[0].set_title("p: (K+2)² = 25 scalars")
    for ax, n in zip(axes[1:], (3, 6), strict=True):
        P, _ = block_expand_forward(p, n)
        ax.imshow(P[0], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        edges = group_edges(n)
        for e in edges[1:-1]:
            ax.axvline(e - 0.5, color="k", lw=0.8)
            ax.axhline(e - 0.5, color="k", lw=0.8)
        centres = (edges[:-1] + edges[1:]) / 2 - 0.5
        ax.set_xticks(centres, GROUPS)
        ax.set_yticks(centres, GROUPS)
        ax.tick_params(length=0)
        D = P.shape[-1]
        ax.set_title(f"P for N = {n}  ({D} × {D})")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_args(parser, "runs/doc_figures", "output folder (the docs' own: docs/assets, with "
                    "--overwrite-shipped)")
    args = parser.parse_args(argv)
    args.out = checked_output(parser, args)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("token_matrix.png", token_matrix), ("block_expand.png", block_expand)):
        draw(args.out / name)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
