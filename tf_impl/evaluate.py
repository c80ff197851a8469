"""``python -m tf_impl.evaluate CHECKPOINT [CHECKPOINT...]``: trained models against classical solvers.

For every ``kappa`` and every size ``N`` (a full-encoding model only at its own ``N``) it draws one
fixed set of fresh systems (seed :data:`reference.evaluation.EVAL_SEED`, never used in training)
and measures, on those same systems from ``x0 = 0``: each model, every baseline of
:mod:`reference.baselines` at as many iterations as the model has layers, the exact Cholesky
solve and the zero predictor. It also follows each model layer by layer against CG iteration by
iteration and the best point of the Krylov space of the same dimension.

Writes to ``--out``: ``eval.json`` (every number), ``eval.md`` (tables), ``error_vs_n_kappa*.png``
and ``layers_*.png``. ``--probe`` instead runs :func:`reference.analysis.layer_probe` (which algorithm
each layer follows) and writes ``probe_<model>.json`` and ``.md``. The models run in float64 through the
reference implementation, which the cross-tests prove equal to the TensorFlow model to 1e-10.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from reference.baselines import BASELINES
from reference.checkpoint import describe_lineage, lineage_of, load_checkpoint, load_checkpoint_extra
from reference.config import ModelConfig
from reference.evaluation import EVAL_SEED, evaluate, layer_analysis, model_can_run


def model_name(arg: str, taken: set) -> str:
    """How the tables name the model given as ``arg``, made unique: a shipped model by its name, a checkpoint by
    its file's stem, or by its run folder for a run's ``final.npz`` / ``ckpt.npz`` (``runs/depth-ns-L8/final.npz``
    -> ``depth-ns-L8``). Not the run's preset: a run started from a preset with other options is another model."""
    path = Path(arg)
    base = path.parent.name if path.suffix == ".npz" and path.stem in ("final", "ckpt") and path.parent.name \
        else path.stem if path.suffix == ".npz" else path.name
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tf_impl.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint .npz files written by tf_impl.train (or "
                   "save_checkpoint), or names of shipped models (e.g. block-mixed)")
    p.add_argument("--kappa", type=float, nargs="+", default=[10.0], help="condition numbers to evaluate at")
    p.add_argument("--n-min", type=int, default=2, help="smallest system size")
    p.add_argument("--n-max", type=int, default=30, help="largest system size")
    p.add_argument("--n-systems", type=int, default=1000, help="test systems per (kappa, N)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the test systems")
    p.add_argument("--layer-sizes", type=int, nargs="*", default=None,
                   help="sizes N of the layer-by-layer analysis (default: 9 and 20)")
    p.add_argument("--baselines", nargs="*", default=None, help="baseline names (default: all)")
    p.add_argument("--out", default=None, help="output folder, created (default: runs/eval, not tracked by git; "
                   "with --probe: results/probe)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--robustness", action="store_true",
                   help="instead: solve() on the families of reference.robustness (kappa, spectrum, right-hand side, "
                        "scale, Poisson), one pass and to --tol, against CG; writes robustness.json/.md/.png")
    p.add_argument("--probe", action="store_true",
                   help="instead: each model layer by layer against the iterates of Newton-Schulz, CG, Chebyshev and "
                        "the best Krylov point on the same systems (reference.analysis.layer_probe; the query's x-slot "
                        "and the last layer applied after each layer), at --layer-sizes and --kappa, and a block "
                        "model's scalars beside the Newton-Schulz construction's; writes probe_<model>.json/.md")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 9, 15, 20, 30],
                   help="--robustness: the sizes N")
    p.add_argument("--tol", type=float, default=1e-8, help="--robustness: the relative residual asked of solve and CG")
    args = p.parse_args(argv)
    if args.probe and args.robustness:
        p.error("--probe and --robustness are two different runs: give one")
    if args.out is None:
        args.out = "results/probe" if args.probe else "runs/eval"
    if any(n < 2 for n in args.sizes):
        p.error(f"--sizes must be >= 2, got {args.sizes}")
    if not 0 < args.tol < 1:
        p.error(f"--tol must be in (0, 1), got {args.tol}")
    if args.n_max > MAX_N:
        p.error(f"--n-max must be at most {MAX_N}, got {args.n_max}")
    if any(n > MAX_N for n in args.sizes) or any(n > MAX_N for n in args.layer_sizes or ()):
        p.error(f"sizes must be at most {MAX_N}")
    if not 0 <= args.seed < 2**63:
        p.error(f"--seed must be an int in [0, 2^63), got {args.seed}")
    if args.n_systems > 100000:
        p.error(f"--n-systems must be at most 100000, got {args.n_systems}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out!r} is a file, not a folder")
    if not 2 <= args.n_min <= args.n_max:
        p.error(f"need 2 <= --n-min <= --n-max, got {args.n_min}, {args.n_max}")
    if args.n_systems < 2:
        p.error("--n-systems must be >= 2")
    if any(not math.isfinite(k) or k < 1 for k in args.kappa):
        p.error(f"--kappa values must be finite and >= 1, got {args.kappa}")
    if args.layer_sizes is not None and any(n < 2 for n in args.layer_sizes):
        p.error(f"--layer-sizes must be >= 2, got {args.layer_sizes}")
    unknown = sorted(set(args.baselines or ()) - set(BASELINES))
    if unknown:
        p.error(f"unknown --baselines {unknown}; choose from {', '.join(BASELINES)}")
    return args


MAX_N = 512  # largest size evaluated (test sets are n_systems x N x N float64 arrays)


def check_memory(args, cfgs) -> None:
    """Refuse, before sampling anything, an evaluation whose arrays would not fit: the test set and the
    baselines' copies of it (about 8 ``n_systems x N x N`` arrays) and each model's forward on it
    (:func:`reference.solve.forward_bytes`) at the largest size, within :func:`reference.solve.memory_limit`."""
    from reference.solve import forward_bytes, memory_limit

    sizes = args.sizes if args.robustness else [args.n_max, *(args.layer_sizes if args.layer_sizes is not None
                                                              else [9, 20])]
    n = max(sizes)
    need = 8 * 8 * args.n_systems * n * n + max(
        (forward_bytes(cfg, cfg.n if cfg.parametrization == "full" else n, args.n_systems) for cfg in cfgs),
        default=0)
    limit = memory_limit()
    if need > limit:
        raise ValueError(f"--n-systems {args.n_systems} at N = {n} needs about {need / 2**30:.3g} GiB, above the "
                         f"limit of {limit / 2**30:.1f} GiB (reference.solve.memory_limit(): half of this machine's "
                         "memory): give a smaller --n-systems or smaller sizes")


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


def fmt(v: float) -> str:
    return f"{v:.2e}"


def markdown_tables(records, models, kappas, sizes) -> str:
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


def checkpoint_path(arg: str) -> str:
    """A checkpoint path as given, or the file of a shipped model given by its name; ``ValueError``
    naming the shipped models for anything else."""
    from reference.pretrained import PRETRAINED, pretrained_path

    if arg in PRETRAINED and not os.path.exists(arg):
        return os.fspath(pretrained_path(arg))
    if not os.path.exists(arg):
        raise ValueError(f"no checkpoint {arg!r}: give a .npz written by tf_impl.train or a shipped model "
                         f"({', '.join(PRETRAINED)})")
    return arg


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


def main_robustness(args) -> dict:
    from tqdm import tqdm

    from reference.robustness import FAMILIES, markdown, robustness

    models = {}
    for arg in args.checkpoints:
        path = checkpoint_path(arg)
        load_checkpoint_extra(path)  # raises ValueError naming the problem
        models[model_name(arg, set(models) | {"CG"})] = path
    check_memory(args, [])  # solve splits its batches itself; the test set and CG's copies are what count
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(FAMILIES) * len(args.sizes), desc="robustness", unit="size") as bar:
        records = robustness(models, args.sizes, n_systems=args.n_systems, tol=args.tol, progress=bar.update)
    write_json(out / "robustness.json", {"args": vars(args), "models": models, "records": records})
    md = ["# solve() off the training distribution", "",
          f"Models: {', '.join(f'`{m}`' for m in models)}; {args.n_systems} systems per (family, N), seed "
          f"{args.seed}. `solve`: one pass of `reference.solve` (normalised, odd part); `bare`: the model on the "
          "system as given (the paper's use).", "", markdown(records, models, args.sizes, tol=args.tol)]
    (out / "robustness.md").write_text("\n".join(md) + "\n")
    if not args.no_plots:
        plot_robustness(records, models, out / "robustness.png")
    print((out / "robustness.md").read_text())
    print(f"wrote {out}/robustness.json, robustness.md" + ("" if args.no_plots else " and robustness.png"))
    return {"records": records}


def main_probe(args) -> dict:
    """``--probe``: :func:`reference.analysis.layer_probe` of each model, per ``--kappa`` and ``--layer-sizes``
    size, with both read-outs, on the evaluation's fixed test systems, and for a block model with at least
    two identity copies :func:`reference.analysis.construction_alignment`; prints the tables and writes
    ``probe_<model>.json`` / ``.md`` per model."""
    from reference.analysis import READOUTS, alignment_markdown, as_plain, construction_alignment, layer_probe
    from reference.evaluation import eval_systems

    models = {}
    for arg in args.checkpoints:
        path = checkpoint_path(arg)
        params, cfg = load_checkpoint(path)  # raises ValueError naming the problem
        models[model_name(arg, set(models))] = (path, params, cfg)
    check_memory(args, [cfg for _, _, cfg in models.values()])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = args.layer_sizes if args.layer_sizes is not None else [9, 20]
    results = {}
    for name, (path, params, cfg) in models.items():
        md = [f"# Which algorithm did `{name}` learn?", "",
              f"{cfg.n_layers} layers; {args.n_systems} systems per (kappa, N), seed {args.seed}. Per layer: the "
              "model's MSE, then per algorithm the step k whose error vector points most nearly like the layer's "
              "(mean cosine over the systems) and the number of steps it needs to reach the layer's MSE.", ""]
        probes = []
        for kappa in args.kappa:
            for n in sizes:
                if not model_can_run(cfg, n):
                    continue
                A, b, x, mask = eval_systems(n, kappa, args.n_systems, args.seed)
                for readout in READOUTS:
                    pr = layer_probe(params, cfg, A, b, x, mask, kappa=kappa, readout=readout)
                    probes.append({"n": int(n), **as_plain(pr)})
                    md.append(probe_markdown_for(pr, n, kappa, readout))
        alignment = None
        if cfg.parametrization == "block" and cfg.n_identity >= 2 and cfg.attention_norm == "none":
            kappa, upper = construction_spectrum(path, max(args.kappa))
            alignment = construction_alignment(params, cfg, kappa=kappa, upper=upper)
            md += [alignment_markdown(alignment, f"## Scalars beside the Newton-Schulz construction for the spectrum "
                                                 f"[1/{kappa:g}, {upper:g}]")]
        results[name] = {"path": os.fspath(path), "config": json.loads(cfg.to_json()), "probes": probes,
                         "alignment": None if alignment is None else as_plain(alignment)}
        write_json(out / f"probe_{name}.json", {"args": vars(args), **results[name]})
        (out / f"probe_{name}.md").write_text("\n".join(md) + "\n")
        print("\n".join(md))
    print(f"wrote {', '.join(f'{out}/probe_{name}.json' for name in models)} and the .md beside each")
    return results


def construction_spectrum(path, default_kappa: float) -> tuple[float, float]:
    """``(kappa, upper)`` of the spectrum a model was trained on, from its checkpoint's ``train_config``
    (``kappa_max`` or ``kappa``, and ``init_upper``), else ``(default_kappa, 1)``: the construction to set its
    scalars beside."""
    from reference.config import is_real

    meta, _ = load_checkpoint_extra(path)
    tc = meta.get("train_config") if isinstance(meta, dict) else None
    tc = tc if isinstance(tc, dict) else {}
    kappa = next((float(tc[k]) for k in ("kappa_max", "kappa") if is_real(tc.get(k)) and tc[k] >= 1), default_kappa)
    upper = float(tc["init_upper"]) if is_real(tc.get("init_upper")) and tc["init_upper"] >= 1 else 1.0
    return kappa, upper


def probe_markdown_for(probe: dict, n: int, kappa: float, readout: str) -> str:
    from reference.analysis import probe_markdown

    what = "the query's x-slot after each layer" if readout == "query" else \
        "the last layer applied to the tokens after each layer"
    return probe_markdown(probe, f"## N = {n}, kappa = {kappa:g}: {what}")


def evaluate_cli(argv=None) -> dict:
    """Parse ``argv`` and run: the result (``records`` and more). Bad arguments exit 2 (argparse);
    a bad checkpoint raises ``ValueError``."""
    args = parse_args(argv)
    if args.probe:
        return main_probe(args)
    return main_robustness(args) if args.robustness else evaluate_checkpoints(args)


def main(argv=None) -> int:
    """The command line: exit status 0, or 2 with one ``error:`` line (bad arguments, a bad checkpoint or
    output folder)."""
    try:
        evaluate_cli(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}", file=sys.stderr)
        return 2
    return 0


def eval_markdown(result: dict) -> str:
    """``eval.md`` from the contents of ``eval.json`` (so it can be rendered again from the file)."""
    args = result["args"]
    models = {name: (None, ModelConfig(**m["config"])) for name, m in result["models"].items()}
    sizes = list(range(args["n_min"], args["n_max"] + 1))
    md = ["# Evaluation", "", f"Checkpoints: {', '.join(f'`{m}`' for m in models)}; {args['n_systems']} systems per "
          f"(kappa, N), seed {args['seed']}; iterative baselines run as many iterations as the model has layers.", "",
          markdown_tables(result["records"], models, args["kappa"], sizes), "### Layer by layer", "",
          "| model | N | kappa | MSE after each layer | CG after each iteration | effective Krylov dim. per layer |",
          "|---|---|---|---|---|---|"]
    for a in result["layers"]:
        dims = ", ".join(f"{d:.2f}" for d in a["effective_krylov_dim"])
        md.append(f"| {a['name']} | {a['n']} | {a['kappa']:g} | {', '.join(fmt(v) for v in a['model'])} | "
                  f"{', '.join(fmt(v) for v in a['cg'])} | {dims} |")
    return "\n".join(md) + "\n"


def evaluate_checkpoints(args) -> dict:
    from tqdm import tqdm

    models, metas = {}, {}
    for arg in args.checkpoints:
        path = checkpoint_path(arg)
        params, cfg = load_checkpoint(path)  # raises ValueError naming the problem
        meta, _ = load_checkpoint_extra(path)
        # a model may not take a baseline's name: records are keyed by (kappa, N, method, iters)
        name = model_name(arg, set(models) | set(BASELINES) | {"zero"})
        models[name], metas[name] = (params, cfg), {"path": os.fspath(path), "config": json.loads(cfg.to_json()),
                                                    "meta": meta}
        print(f"{name}: {describe_lineage(lineage_of(meta, path))}")
    sizes = list(range(args.n_min, args.n_max + 1))
    check_memory(args, [cfg for _, cfg in models.values()])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(args.kappa) * len(sizes), desc="evaluate", unit="size") as bar:
        records = evaluate(models, sizes, args.kappa, args.n_systems, args.seed, args.baselines, bar.update)
    layer_sizes = args.layer_sizes if args.layer_sizes is not None else [9, 20]
    analyses = []
    for kappa in args.kappa:
        for n in layer_sizes:
            for name, (params, cfg) in models.items():
                if model_can_run(cfg, n):
                    analyses.append((name, layer_analysis(params, cfg, n, kappa, args.n_systems, args.seed)))
    result = {"args": vars(args), "models": metas, "records": records,
              "layers": [{"name": name, **a} for name, a in analyses]}  # a["model"]: its MSE per layer
    write_json(out / "eval.json", result)
    (out / "eval.md").write_text(eval_markdown(result))
    if not args.no_plots:
        for kappa in args.kappa:
            plot_error_vs_n(records, models, float(kappa), out / f"error_vs_n_kappa{kappa:g}.png")
        for kappa in args.kappa:
            for n in layer_sizes:
                sel = [(nm, a) for nm, a in analyses if a["n"] == n and a["kappa"] == float(kappa)]
                if sel:
                    plot_layers(sel, out / f"layers_N{n}_kappa{kappa:g}.png",
                                "What the model learned: error per layer vs CG and the Krylov floor")
    print((out / "eval.md").read_text())
    print(f"wrote {out}/eval.json, eval.md" + ("" if args.no_plots else " and the plots"))
    return result


if __name__ == "__main__":
    sys.exit(main())
