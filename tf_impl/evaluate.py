"""``python -m tf_impl.evaluate CHECKPOINT [CHECKPOINT...]``: trained models against classical solvers.

For every ``kappa`` and every size ``N`` (a full-encoding model only at its own ``N``) it draws one
fixed set of fresh systems (seed :data:`reference.evaluation.EVAL_SEED`, never used in training)
and measures, on those same systems from ``x0 = 0``: each model, every baseline of
:mod:`reference.baselines` at as many iterations as the model has layers, the exact Cholesky
solve and the zero predictor. It also follows each model layer by layer against CG iteration by
iteration and the best point of the Krylov space of the same dimension.

Writes to ``--out`` (default ``runs/eval``, ``runs/robustness`` or ``runs/probe``; a folder of the committed
``results/`` only with ``--overwrite-shipped``): ``eval.json`` (every number), ``eval.md`` (tables),
``error_vs_n_kappa*.png`` and ``layers_*.png``. ``--probe`` instead runs :func:`reference.analysis.layer_probe`
(which algorithm each layer follows) and writes ``probe_<model>.json`` and ``.md``. The records name a checkpoint
by its path in the repository where it lies there (:func:`reference.report.recorded_path`). The models run in
float64 through the reference implementation, which the cross-tests prove equal to the TensorFlow model to 1e-10.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from reference.baselines import BASELINES
from reference.checkpoint import describe_lineage, lineage_of, load_checkpoint, load_checkpoint_extra
from reference.data import parse_kappa
from reference.evaluation import EVAL_SEED, evaluate, layer_analysis, model_can_run
from reference.report import (
    OVERWRITE_FLAG,
    check_output,
    eval_markdown,
    plot_error_vs_n,
    plot_layers,
    plot_robustness,
    probe_page,
    recorded_path,
    robustness_page,
    write_json,
)


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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once: appended to its help unless the help already says what it is."""

    def _get_help_string(self, action):
        return action.help if "default" in (action.help or "") else super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tf_impl.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=_HelpFormatter)
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
    p.add_argument("--out", default=None, help="output folder, created (default: runs/eval, runs/robustness with "
                   "--robustness, runs/probe with --probe; runs/ is not tracked by git)")
    p.add_argument(OVERWRITE_FLAG, action="store_true", help="allow --out inside results/, whose files are "
                   "committed with the project (scripts/reproduce_paper.sh gives it)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--robustness", action="store_true",
                   help="instead: solve() on the families of reference.robustness (kappa, spectrum, right-hand side, "
                        "scale, Poisson), one pass and to --tol, against CG; writes robustness.json/.md/.png")
    p.add_argument("--probe", action="store_true",
                   help="instead: each model layer by layer against the iterates of Newton-Schulz, CG, Chebyshev and "
                        "the best Krylov point on the same systems (reference.analysis.layer_probe; the query's x-slot "
                        "and the last layer applied after each layer), at --layer-sizes and --kappa, and a block "
                        "model's scalars beside the Newton-Schulz construction's; writes probe_<model>.json/.md")
    p.add_argument("--spectrum", action="store_true",
                   help="instead: the spectral view of each model (reference.analysis.spectral_view): the error of the "
                        "eigen-component lambda in [1e-4, 1] beside the Newton-Schulz construction of the same depth, "
                        "CG and the best polynomial of degree 3^(L-1), and its rotation-equivariance error; writes "
                        "spectrum_<model>.json/.md and spectrum.png")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 9, 15, 20, 30],
                   help="--robustness: the sizes N")
    p.add_argument("--tol", type=float, default=1e-8, help="--robustness: the relative residual asked of solve and CG")
    args = p.parse_args(argv)
    if sum((args.probe, args.robustness, args.spectrum)) > 1:
        p.error("--probe, --robustness and --spectrum are different runs: give one")
    if args.out is None:
        args.out = ("runs/probe" if args.probe else "runs/robustness" if args.robustness else "runs/spectrum"
                    if args.spectrum else "runs/eval")
    try:
        check_output(args.out, args.overwrite_shipped)
    except ValueError as e:
        p.error(str(e))
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
    for k in args.kappa:
        try:
            parse_kappa(k)  # the samplers' rule: finite, in [1, KAPPA_LIMIT]
        except ValueError as e:
            p.error(f"--kappa {k:g}: {e}")
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
    (:func:`reference.model.forward_bytes`) at the largest size, within :func:`reference.solve.memory_limit`."""
    from reference.config import MEMORY_LIMIT_HELP
    from reference.model import forward_bytes
    from reference.solve import memory_limit

    sizes = args.sizes if args.robustness else [args.n_max, *(args.layer_sizes if args.layer_sizes is not None
                                                              else [9, 20])]
    n = max(sizes)
    need = 8 * 8 * args.n_systems * n * n + max(
        (forward_bytes(cfg, cfg.n if cfg.parametrization == "full" else n, args.n_systems) for cfg in cfgs),
        default=0)
    limit = memory_limit()
    if need > limit:
        raise ValueError(f"--n-systems {args.n_systems} at N = {n} needs about {need / 2**30:.3g} GiB, above the "
                         f"limit of {limit / 2**30:.3g} GiB ({MEMORY_LIMIT_HELP}): give a smaller --n-systems or "
                         "smaller sizes")


def recorded_args(args) -> dict:
    """The arguments as the written records keep them: the output folder and checkpoint paths relative to the
    repository where they lie in it (:func:`reference.report.recorded_path`), so that committed results name no
    folder of the machine that made them."""
    return {**vars(args), "out": recorded_path(args.out),
            "checkpoints": [a if not os.path.exists(a) else recorded_path(a) for a in args.checkpoints]}


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


def main_robustness(args) -> dict:
    from tqdm import tqdm

    from reference.robustness import FAMILIES, robustness

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
    result = {"args": recorded_args(args), "models": {name: recorded_path(path) for name, path in models.items()},
              "records": records}
    write_json(out / "robustness.json", result)
    (out / "robustness.md").write_text(robustness_page(result))
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
    models = {}
    for arg in args.checkpoints:
        path = checkpoint_path(arg)
        params, cfg = load_checkpoint(path)  # raises ValueError naming the problem
        models[model_name(arg, set(models))] = (path, params, cfg)
    check_memory(args, [cfg for _, _, cfg in models.values()])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (path, params, cfg) in models.items():
        try:  # an error of one model's probe names its checkpoint
            results[name] = probe_one(args, path, params, cfg)
        except ValueError as e:
            raise ValueError(f"--probe {recorded_path(path)}: {e}") from None
        write_json(out / f"probe_{name}.json", {"args": recorded_args(args), **results[name]})
        md = probe_page(name, {"args": recorded_args(args), **results[name]})
        (out / f"probe_{name}.md").write_text(md)
        print(md)
    print(f"wrote {', '.join(f'{out}/probe_{name}.json' for name in models)} and the .md beside each")
    return results


def main_spectrum(args) -> dict:
    """``--spectrum``: :func:`reference.analysis.spectral_view` of each model on 33 eigenvalues log-spaced in
    ``[1e-4, 1]`` (systems of ``N = 16``, a full-encoding model's own ``N``); writes ``spectrum_<model>.json`` /
    ``.md`` per model and ``spectrum.png``."""
    import numpy as np

    from reference.analysis import spectral_view
    from reference.report import plot_spectrum, spectrum_markdown

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    views = {}
    for arg in args.checkpoints:
        params, cfg = load_checkpoint(checkpoint_path(arg))  # raises ValueError naming the problem
        name = model_name(arg, set(views))
        n = cfg.n if cfg.parametrization == "full" else 16
        views[name] = spectral_view(params, cfg, np.logspace(-4, 0, 33), n=n, seed=args.seed)
        write_json(out / f"spectrum_{name}.json", views[name])
        (out / f"spectrum_{name}.md").write_text(spectrum_markdown(name, views[name]))
        print(spectrum_markdown(name, views[name]))
    if not args.no_plots:
        plot_spectrum(views, out / "spectrum.png")
    print(f"wrote {', '.join(f'{out}/spectrum_{name}.json' for name in views)}, the .md beside each"
          + ("" if args.no_plots else f" and {out}/spectrum.png"))
    return views


def probe_one(args, path, params, cfg) -> dict:
    """One model's probe record: :func:`reference.analysis.layer_probe` per ``--kappa`` and ``--layer-sizes`` size
    (both read-outs), and the alignment with the construction of its training spectrum where it has one."""
    from reference.analysis import READOUTS, construction_alignment, layer_probe
    from reference.evaluation import eval_systems
    from reference.report import as_plain

    probes = []
    for kappa in args.kappa:
        for n in args.layer_sizes if args.layer_sizes is not None else [9, 20]:
            if not model_can_run(cfg, n):
                continue
            A, b, x, mask = eval_systems(n, kappa, args.n_systems, args.seed)
            for readout in READOUTS:
                pr = layer_probe(params, cfg, A, b, x, mask, kappa=kappa, readout=readout)
                probes.append({"n": int(n), **as_plain(pr)})
    alignment = None
    if cfg.parametrization == "block" and cfg.n_identity >= 2 and cfg.attention_norm == "none":
        kappa, upper = construction_spectrum(path, max(args.kappa))
        alignment = {**as_plain(construction_alignment(params, cfg, kappa=kappa, upper=upper)),
                     "kappa": kappa, "upper": upper}
    return {"path": recorded_path(path), "config": json.loads(cfg.to_json()), "probes": probes,
            "alignment": alignment}


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
    try:
        parse_kappa(kappa)
    except ValueError as e:
        raise ValueError(f"its train_config records a kappa the construction cannot be built for ({e})") from None
    return kappa, upper


def evaluate_cli(argv=None) -> dict:
    """Parse ``argv`` and run: the result (``records`` and more). Bad arguments exit 2 (argparse);
    a bad checkpoint raises ``ValueError``."""
    args = parse_args(argv)
    if args.probe:
        return main_probe(args)
    if args.spectrum:
        return main_spectrum(args)
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


def evaluate_checkpoints(args) -> dict:
    from tqdm import tqdm

    models, metas = {}, {}
    for arg in args.checkpoints:
        path = checkpoint_path(arg)
        params, cfg = load_checkpoint(path)  # raises ValueError naming the problem
        meta, _ = load_checkpoint_extra(path)
        # a model may not take a baseline's name: records are keyed by (kappa, N, method, iters)
        name = model_name(arg, set(models) | set(BASELINES) | {"zero"})
        models[name], metas[name] = (params, cfg), {"path": recorded_path(path), "config": json.loads(cfg.to_json()),
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
    result = {"args": recorded_args(args), "models": metas, "records": records,
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
