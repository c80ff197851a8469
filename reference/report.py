"""Reporting: the tables (Markdown), figures (matplotlib) and JSON files the application writes.

Everything that turns measured records into text or pictures lives here, apart from the code that measures
them: :mod:`reference.evaluation` and :mod:`reference.robustness` return records (lists of dicts),
:mod:`reference.analysis` returns probes and alignments, and ``python -m tf_impl.evaluate`` hands them to the
functions below. The lesson core (``docs/conventions.md``, "Lesson core and application") never imports this
module; matplotlib is imported inside the plotting functions, so the tables work without it.

Sections: where outputs go; JSON; evaluation tables (``eval.md``); robustness tables; probe tables; figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from reference.config import ModelConfig

# ----------------------------------------------------------------------------------------------
# where outputs go: runs/ by default; what the project ships only with OVERWRITE_FLAG

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The folder of the checkout (or of the installed packages) the shipped outputs lie in."""
SHIPPED_OUTPUTS = ("results", "reference/pretrained", "docs/assets")
"""The folders whose files are committed with the project: measured data, shipped weights, the docs' figures."""
OVERWRITE_FLAG = "--overwrite-shipped"
"""The flag every command and script takes to write into :data:`SHIPPED_OUTPUTS` (``scripts/reproduce_paper.sh``
passes it); their defaults are under ``runs/``, which git ignores."""


def shipped_output(path) -> str | None:
    """The folder of :data:`SHIPPED_OUTPUTS` that ``path`` lies in (or is), relative to :data:`REPO_ROOT`; None
    for a path outside them."""
    p = Path(path).resolve()
    for rel in SHIPPED_OUTPUTS:
        folder = (REPO_ROOT / rel).resolve()
        if p == folder or folder in p.parents:
            return rel
    return None


def check_output(path, overwrite: bool, flag: str = "--out") -> None:
    """``ValueError`` when ``path`` lies in a folder the project ships and ``overwrite`` (:data:`OVERWRITE_FLAG`)
    was not given: a command never replaces committed results, weights or figures by default."""
    where = shipped_output(path)
    if where is not None and not overwrite:
        raise ValueError(f"{flag} {path} is inside {where}/, which is committed with the project: give "
                         f"{OVERWRITE_FLAG} to replace what is there, or write elsewhere (the default is under runs/)")


def add_output_args(parser, default, help: str) -> None:
    """``--out`` (``default``, under ``runs/``) and :data:`OVERWRITE_FLAG` on a script's ``argparse`` parser; call
    :func:`checked_output` after parsing."""
    parser.add_argument("--out", default=default, help=f"{help} (default: %(default)s)")
    parser.add_argument(OVERWRITE_FLAG, action="store_true", help="allow --out inside "
                        f"{', '.join(f'{r}/' for r in SHIPPED_OUTPUTS)}, whose files are committed with the project")


def checked_output(parser, args) -> Path:
    """``args.out`` as a ``Path``, or the parser's error (exit 2) where it lies in a shipped folder without
    :data:`OVERWRITE_FLAG` (:func:`check_output`)."""
    try:
        check_output(args.out, args.overwrite_shipped)
    except ValueError as e:
        parser.error(str(e))
    return Path(args.out)


def recorded_path(path) -> str:
    """How a written record names a file: relative to :data:`REPO_ROOT` when it lies inside it (a shipped
    checkpoint is ``reference/pretrained/NAME.npz`` on every machine), else as given."""
    p = Path(path).resolve()
    root = REPO_ROOT.resolve()
    return str(p.relative_to(root)) if root in p.parents else str(path)


# ----------------------------------------------------------------------------------------------
# JSON

def strict_json(value):
    """``value`` with every non-finite float replaced by ``None``: ``eval.json`` is strict JSON
    (no ``NaN`` / ``Infinity``); ``null`` marks a number that was not finite (a model that blew up)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.generic):
        return strict_json(value.item())
    return value


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(strict_json(value), indent=1, allow_nan=False))


def as_plain(value):
    """:func:`layer_probe`'s or :func:`construction_alignment`'s result as plain lists and numbers (without
    the iterates), ready for ``json.dumps`` (``inf`` stays a float: write it with a writer that maps
    non-finite numbers to ``null``)."""
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items() if k != "iterates"}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------
# evaluation tables (eval.md)


def fmt(v: float) -> str:
    return f"{v:.2e}"


def eval_tables(records, models, kappas, sizes) -> str:
    """Per kappa: N, each model's MSE beside CG's (at each depth), Cholesky's and the zero predictor's; the
    other baselines in a table per depth (so that no table is wider than a page); the model / CG ratios."""
    lines = []
    by = {(r["kappa"], r["n"], r["method"], r["iters"]): r for r in records}
    methods = [(r["method"], r["iters"]) for r in records if r["kind"] == "baseline"]
    methods = list(dict.fromkeys(methods))
    first = [(m, k) for m, k in methods if m in ("cg", "cholesky")]  # beside the models: CG and the exact floor
    depths = list(dict.fromkeys(k for m, k in methods if (m, k) not in first))
    others = [[(m, k) for m, k in methods if k == d and (m, k) not in first] for d in depths]  # a table per depth
    for kappa in kappas:
        kappa = float(kappa)
        tables = [(f"### MSE at kappa = {kappa:g}", list(models), first, True)]
        tables += [(f"#### Other baselines, {d} iterations, at kappa = {kappa:g} (MSE)", [], base, False)
                   for d, base in zip(depths, others, strict=True)]
        for title, names, base, zero in tables:
            head = ["N"] + [f"**{m}** (L={models[m][1].n_layers})" for m in names] + \
                [f"{m}-{k}" if m != "cholesky" else "cholesky" for m, k in base] + (["zero"] if zero else [])
            lines += [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for n in sizes:
                row = [str(n)]
                for m in names:
                    r = by.get((kappa, n, m, models[m][1].n_layers))
                    row.append(fmt(r["mse"]) if r else "—")
                row += [fmt(by[(kappa, n, m, k)]["mse"]) for m, k in base]
                if zero:
                    row.append(fmt(by[(kappa, n, "zero", 0)]["mse"]))
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
        lines += [f"#### Model / CG MSE ratio at kappa = {kappa:g} (below 1: the model wins at equal depth)", "",
                  "| N | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for n in sizes:
            row = [str(n)]
            for m, (_, cfg) in models.items():
                r, c = by.get((kappa, n, m, cfg.n_layers)), by.get((kappa, n, "cg", cfg.n_layers))
                if not (r and c):
                    row.append("—")
                elif c["mse"] < 1e-20:  # N <= L: CG is exact, no polynomial map can match it
                    row.append("CG exact")
                else:
                    row.append(f"{r['mse'] / c['mse']:.3g}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def eval_markdown(result: dict) -> str:
    """``eval.md`` from the contents of ``eval.json`` (so it can be rendered again from the file)."""
    args = result["args"]
    models = {name: (None, ModelConfig(**m["config"])) for name, m in result["models"].items()}
    sizes = list(range(args["n_min"], args["n_max"] + 1))
    md = ["# Evaluation", "", f"Checkpoints: {', '.join(f'`{m}`' for m in models)}; {args['n_systems']} systems per "
          f"(kappa, N), seed {args['seed']}; iterative baselines run as many iterations as the model has layers.", "",
          eval_tables(result["records"], models, args["kappa"], sizes), "### Layer by layer", "",
          "| model | N | kappa | MSE after each layer | CG after each iteration | effective Krylov dim. per layer |",
          "|---|---|---|---|---|---|"]
    for a in result["layers"]:
        dims = ", ".join(f"{d:.2f}" for d in a["effective_krylov_dim"])
        md.append(f"| {a['name']} | {a['n']} | {a['kappa']:g} | {', '.join(fmt(v) for v in a['model'])} | "
                  f"{', '.join(fmt(v) for v in a['cg'])} | {dims} |")
    return "\n".join(md) + "\n"


# ----------------------------------------------------------------------------------------------
# robustness tables


def robustness_markdown(records, models, sizes, families=None, tol: float = 1e-8) -> str:
    """Tables per family: one pass (relative error) through ``solve`` and of the bare model, one pair per depth
    (the models of that depth beside CG and the Krylov floor at equal depth), and the work to ``tol``."""
    families = list(dict.fromkeys(r["family"] for r in records)) if families is None else families
    by = {(r["family"], r["n"], r["method"], r["kind"]): r for r in records}
    out = []
    for family in families:
        names = [m for m in models if any(k[2] == m and k[0] == family for k in by)]
        layers = {m: next(r["layers"] for k, r in by.items() if k[0] == family and k[2] == m and k[3] == "solve")
                  for m in names}
        out += [f"### {family}"]
        for L in sorted(set(layers.values())):  # one table per depth: the models beside CG-L (tables that fit)
            group = [m for m in names if layers[m] == L]
            for kind, what in (("solve", "through `solve`"), ("bare", "bare (no normalisation)")):
                head = ["N"] + group + [f"CG-{L}"] + ([f"best Krylov-{L}"] if kind == "solve" else [])
                out += ["", f"One pass of each {L}-layer model {what}, mean relative error ||x_hat - x|| / ||x||"
                        + (" (bold: below CG at equal depth):" if kind == "solve" else ":"), "",
                        "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
                for n in sizes:
                    row = [str(n)]
                    cg = by[(family, n, f"CG-{L}", "cg")]["rel"]
                    for m in group:
                        r = by.get((family, n, m, kind))
                        if r is None:
                            row.append("")
                            continue
                        rel = r["rel"] if r["rel"] is not None else float("inf")  # null in JSON: not finite
                        cell = f"{rel:.2e}" if np.isfinite(rel) else "overflow"
                        row.append(f"**{cell}**" if kind == "solve" and rel < cg else cell)
                    row.append(f"{cg:.2e}")
                    if kind == "solve":
                        row.append(f"{by[(family, n, f'Krylov-{L}', 'krylov')]['rel']:.2e}")
                    out.append("| " + " | ".join(row) + " |")
        head = ["N"] + [f"{m}: layers (passes x L)" for m in names] + ["CG iterations"]
        out += ["", f"To a relative residual of {tol:g}: median work, and the share of systems that got there:", "",
                "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        for n in sizes:
            row = [str(n)]
            for m in names:
                r = by.get((family, n, m, "to_tol"))
                row.append("" if r is None else f"{r['layers_median']:.0f} ({100 * r['converged']:.0f}%)")
            cg = by[(family, n, "CG", "to_tol")]
            row.append(f"{cg['iters_median']:.0f} ({100 * cg['converged']:.0f}%)")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def robustness_page(result: dict) -> str:
    """``robustness.md`` of ``python -m tf_impl.evaluate --robustness`` from the contents of
    ``robustness.json``."""
    args, models = result["args"], result["models"]
    return "\n".join(["# solve() off the training distribution", "",
                      f"Models: {', '.join(f'`{m}`' for m in models)}; {args['n_systems']} systems per (family, N), "
                      f"seed {args['seed']}. `solve`: one pass of `reference.solve` (normalised, odd part); `bare`: "
                      "the model on the system as given (the paper's use).", "",
                      robustness_markdown(result["records"], models, args["sizes"], tol=args["tol"])]) + "\n"


# ----------------------------------------------------------------------------------------------
# probe tables (which algorithm each layer follows)


def probe_markdown(probe: dict, title: str = "") -> str:
    """A table with one row per layer: the model's MSE, then for each algorithm the best-matching step
    ``k`` with its similarity, and the equivalent number of steps (the MSE-matched ``k``)."""
    names = list(probe["methods"])
    head = ["layer", "model MSE"] + [f"{n}: best k (sim) / equiv. k" for n in names]
    lines = ([f"{title}", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer, e in enumerate(probe["model_mse"]):
        row = [str(layer), f"{e:.2e}"]
        for n in names:
            m = probe["methods"][n]
            row.append(f"{int(m['best_step'][layer])} ({m['best_similarity'][layer]:.3f}) / "
                       f"{m['equivalent_step'][layer]:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def probe_markdown_for(probe: dict, n: int, kappa: float, readout: str) -> str:
    what = "the query's x-slot after each layer" if readout == "query" else \
        "the last layer applied to the tokens after each layer"
    return probe_markdown(probe, f"## N = {n}, kappa = {kappa:g}: {what}")


def probe_page(name: str, result: dict) -> str:
    """``probe_<name>.md`` of ``python -m tf_impl.evaluate --probe`` from the contents of ``probe_<name>.json``:
    a probe table per (kappa, N, read-out), then the scalars beside the construction when there are any."""
    args = result["args"]
    md = [f"# Which algorithm did `{name}` learn?", "",
          f"{result['config']['n_layers']} layers; {args['n_systems']} systems per (kappa, N), seed {args['seed']}. "
          "Per layer: the model's MSE, then per algorithm the step k whose error vector points most nearly like "
          "the layer's (mean cosine over the systems) and the number of steps it needs to reach the layer's MSE.",
          ""]
    md += [probe_markdown_for(pr, pr["n"], pr["kappa"], pr["readout"]) for pr in result["probes"]]
    al = result["alignment"]
    if al is not None:
        md.append(alignment_markdown(al, f"## Scalars beside the Newton-Schulz construction for the spectrum "
                                         f"[1/{al['kappa']:g}, {al['upper']:g}]"))
    return "\n".join(md) + "\n"


def alignment_markdown(alignment: dict, title: str = "") -> str:
    """:func:`construction_alignment` as a table: per layer, the aligned scalars of at least a tenth of the
    largest, the construction's non-zero blocks (learned / construction), the invariants and the share
    of the scalars off the construction's blocks."""
    perm = ", ".join(f"h{k + 1} <- h{p + 1}" for k, p in enumerate(alignment["permutation"]))
    lines = ([title, ""] if title else []) + [
        f"Identity copies ({perm}); relative distance after alignment {alignment['distance']:.3g}.", "",
        "| layer | large scalars (aligned) | construction's blocks: learned / construction | invariants: "
        "learned / construction | off the construction's blocks |", "|---|---|---|---|---|"]
    for layer, a in enumerate(alignment["layers"]):
        large = ", ".join(f"{nm} {v:+.3g}" for nm, v in a["large"][:8]) + (" ..." if len(a["large"]) > 8 else "")
        sup = ", ".join(f"{nm} {u:+.3g} / {v:+.3g}" for nm, (u, v) in a["support"].items())
        inv = ", ".join(f"{nm.split(' =')[0]} {u:+.4g} / {v:+.4g}" for nm, (u, v) in a["invariants"].items())
        lines.append(f"| {layer} | {large} | {sup} | {inv} | {a['off_support']:.0%} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# figures


def plot_error_vs_n(records, models, kappa, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths_drawn = set()
    for i, (name, (_, cfg)) in enumerate(models.items()):
        rs = sorted((r for r in records if r["kappa"] == kappa and r["method"] == name), key=lambda r: r["n"])
        ns, mse = [r["n"] for r in rs], [r["mse"] for r in rs]
        ax.plot(ns, mse, "o-" if len(ns) > 1 else "o", color=colors[i % len(colors)],
                label=f"{name} (L={cfg.n_layers})")
        if cfg.n_layers not in depths_drawn:
            depths_drawn.add(cfg.n_layers)
            cg = sorted((r for r in records if r["kappa"] == kappa and r["method"] == "cg"
                         and r["iters"] == cfg.n_layers), key=lambda r: r["n"])
            ax.plot([r["n"] for r in cg], [max(r["mse"], 1e-32) for r in cg], "k--",
                    alpha=0.4 + 0.1 * len(depths_drawn), label=f"CG, {cfg.n_layers} iterations")
    zero = sorted((r for r in records if r["kappa"] == kappa and r["method"] == "zero"), key=lambda r: r["n"])
    ax.plot([r["n"] for r in zero], [r["mse"] for r in zero], ":", color="grey", label="zero predictor")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-8)
    shallowest = min(cfg.n_layers for _, cfg in models.values())
    ax.axvspan(min(r["n"] for r in records) - 0.5, shallowest + 0.5, color="grey", alpha=0.12,
               label=f"N <= {shallowest}: CG exact")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("system size N")
    ax.set_ylabel("MSE  (1/N)||x_hat - x||^2")
    ax.set_title(f"Error vs size, kappa = {kappa:g} (same systems for every method)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def plot_layers(analyses, path, title):
    """One panel per model (two per row, each large enough to read): MSE after each layer against CG
    after each iteration and the Krylov floor; integer layer ticks, the y-range fitted to the data."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(2, len(analyses))
    rows = -(-len(analyses) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.2 * rows + 0.6), squeeze=False)
    for ax, (name, a) in zip(axes.flat, analyses, strict=False):
        k = np.arange(len(a["model"]))
        ax.semilogy(k, a["model"], "o-", label=f"{name}: after layer k")
        ax.semilogy(k, np.maximum(a["cg"], 1e-32), "s--", label="CG: after iteration k")
        ax.semilogy(k, np.maximum(a["krylov_best"], 1e-32), "^:", label="best point of x0 + K_k (2-norm)")
        ax.set_title(f"{name}, N={a['n']}, kappa={a['kappa']:g}", fontsize=10)
        ax.set_xlabel("layer / iteration k")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        data = np.concatenate([np.asarray(a[key], dtype=float) for key in ("model", "cg", "krylov_best")])
        data = data[np.isfinite(data) & (data > 0)]
        if data.size:  # fitted to the data, floored where CG becomes exact (N <= k)
            ax.set_ylim(max(data.min(), 1e-12) / 3, data.max() * 3)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.flat[len(analyses):]:
        ax.axis("off")
    axes[0][0].set_ylabel("MSE")
    fig.suptitle(title, fontsize=11, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def plot_robustness(records, models, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in records))
    cols = 3
    rows = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, family in zip(axes.flat, families, strict=False):  # spare axes stay empty
        for name in models:
            pts = sorted((r["n"], r["rel"]) for r in records
                         if r["family"] == family and r["method"] == name and r["kind"] == "solve")
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"{name} (solve)")
        for method in sorted({r["method"] for r in records if r["kind"] in ("cg", "krylov")}):
            pts = sorted((r["n"], r["rel"]) for r in records if r["family"] == family and r["method"] == method)
            ax.plot(*zip(*pts, strict=True), ls="--" if method.startswith("CG") else ":", color="k", label=method)
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-5)  # CG is exact once N <= L: its ~1e-16 would squash the rest
        ax.set_title(family, fontsize=8)
        ax.set_xlabel("N")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat[len(families):]:
        ax.axis("off")
    axes[0][0].set_ylabel("relative error, one pass")
    axes[0][0].legend(fontsize=6)
    fig.suptitle("solve() off the training distribution: one pass at equal depth vs CG and the Krylov optimum",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spectrum_markdown(name: str, view: dict) -> str:
    """The spectral view (:func:`reference.spectral.spectral_view`) of one model as a Markdown table."""
    L = view["layers"]
    lines = [f"# Spectral view: {name}", "",
             f"Relative error of the eigen-component lambda in systems of condition number 1/lambda (N = 16); "
             f"rotation-equivariance error {view['equivariance']:.1e}.", "",
             f"| lambda | {name} | Newton-Schulz, {L} layers | CG-{L} | best polynomial of degree 3^{L - 1} |",
             "|---|---|---|---|---|"]
    for i, lam in enumerate(view["lam"]):
        lines.append(f"| {lam:.1e} | " + " | ".join(fmt(view[k][i]) for k in ("model", "construction", "cg", "bound"))
                     + " |")
    return "\n".join(lines) + "\n"


def plot_spectrum(views: dict, path):
    """One panel per model: its spectral view beside the construction, CG and the polynomial bound (log-log)."""
    import matplotlib.pyplot as plt

    names = list(views)
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat[: len(names)], names, strict=True):
        v, L = views[name], views[name]["layers"]
        for key, label, style in (("model", name, "-"), ("construction", f"Newton-Schulz, {L} layers", "--"),
                                  ("cg", f"CG-{L}", ":"), ("bound", f"best degree 3^{L - 1}", "-.")):
            ax.loglog(v["lam"], np.maximum(np.asarray(v[key], dtype=float), 1e-17), style, label=label)
        ax.set_title(f"{name} (equivariance {v['equivariance']:.0e})", fontsize=8)
        ax.set_xlabel("eigenvalue lambda")
        ax.legend(fontsize=6)
    for row in axes:
        row[0].set_ylabel("error of the eigen-component")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
