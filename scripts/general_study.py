"""The general family against the targets of a general learned solver; writes OUT.json, OUT.md and OUT_*.png.

    python scripts/general_study.py [--out runs/general/general] [--systems 100]
    python scripts/general_study.py --out results/general/general --overwrite-shipped   # the committed results

Measured on fresh systems of the project's sampler (uniform spectrum on [1/kappa, 1], both ends pinned, b = A x,
seed reference.evaluation.EVAL_SEED + 25), for every shipped model named below:

* ``one_pass``: MSE of one pass through ``reference.solve`` at kappa 10, 100, 1000, 1e4 and N = 15, 64, with CG as many
  iterations as the model has layers, and the warnings ``solve`` gave;
* ``to_tol``: ``solve(tol=1e-10)`` on the robustness families (reference.robustness) and a kappa 1e4 family, N = 15 and
  64: passes, converged, the worst relative error, and the answers worse than 1e-6 that came without a warning;
* ``spectrum``: the relative error per eigen-component (reference.spectral.component_errors) on lambda in [1e-4, 1]
  of each model, of the Newton-Schulz construction of the same depth, of CG with as many iterations, and the bound
  of the best polynomial of degree 3^(L-1); ``equivariance``: each model's rotation-equivariance error.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.analysis import spectral_view  # noqa: E402
from reference.baselines import conjugate_gradient  # noqa: E402
from reference.data import sample_systems  # noqa: E402
from reference.evaluation import EVAL_SEED  # noqa: E402
from reference.pretrained import load_pretrained  # noqa: E402
from reference.report import add_output_args, checked_output, plot_spectrum, write_json  # noqa: E402
from reference.robustness import FAMILIES, family_systems, relative_errors  # noqa: E402
from reference.solve import solve  # noqa: E402

MODELS = ("learned-general-L6", "learned-general-L8", "learned-general-L10", "learned-general-L12", "learned-L8",
          "learned-L8-k100", "newton-schulz")
KAPPAS = (10.0, 100.0, 1000.0, 1e4)
SIZES = (15, 64)
SEED = EVAL_SEED + 25


def _solve_recording(A, b, **kw):
    """``(x or SolveResult, [warning messages])`` of ``reference.solve``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = solve(A, b, **kw)
    return out, sorted({str(w.message)[:160] for w in caught})


def one_pass(name, L, systems):
    rows = []
    for kappa in KAPPAS:
        for n in SIZES:
            A, b, x, _ = sample_systems(systems if n < 32 else max(systems // 4, 8), n, kappa, seed=[SEED, n])
            t = time.perf_counter()
            x_hat, warned = _solve_recording(A, b, model=name)
            seconds = time.perf_counter() - t
            cg = conjugate_gradient(A, b, L)
            rows.append(dict(kappa=kappa, n=n, mse=float(np.mean((x_hat - x) ** 2)),
                             cg_mse=float(np.mean((cg - x) ** 2)), seconds=seconds, warnings=warned))
    return rows


def _families():
    fams = {f: None for f in FAMILIES}
    fams["kappa 1e4"] = dict(kappa=1e4)
    return fams


def to_tol(name, systems, tol=1e-10):
    rows = []
    for family, opts in _families().items():
        for n in SIZES:
            count = systems if n < 32 else max(systems // 4, 8)
            if opts is None:
                A, b, x = family_systems(family, n, count)
            else:
                A, b, x, _ = sample_systems(count, n, seed=[SEED, n, 4], **opts)
            res, warned = _solve_recording(A, b, model=name, tol=tol, return_info=True)
            err = relative_errors(res.x, x)
            bad = err > 1e-6
            rows.append(dict(family=family, n=n, max_passes=int(np.max(res.passes)),
                             converged=float(np.mean(res.converged)), max_rel_error=float(np.max(err)),
                             bad=int(bad.sum()), silent_bad=int(bad.sum()) if not warned else 0, warnings=warned))
    return rows


def markdown(result) -> str:
    lines = ["# The general family against the targets", "",
             "One pass through `solve`, MSE on fresh systems (uniform spectrum, both ends pinned, `b = A x`):", "",
             "| model | layers | " + " | ".join(f"kappa {k:g}, N {n}" for k in KAPPAS for n in SIZES) + " |",
             "|---|---|" + "---|" * (len(KAPPAS) * len(SIZES))]
    for name, rec in result["models"].items():
        cells = [f"{r['mse']:.1e}" + (" (w)" if r["warnings"] else "") for r in rec["one_pass"]]
        lines.append(f"| {name} | {rec['layers']} | " + " | ".join(cells) + " |")
    lines += ["", "(w): `solve` warned. `solve(tol=1e-10)`: worst passes / converged fraction / answers worse than "
              "1e-6 without a warning, over the robustness families and kappa 1e4, N 15 and 64:", ""]
    for name, rec in result["models"].items():
        rows = rec["to_tol"]
        lines.append(f"- {name}: at most {max(r['max_passes'] for r in rows)} passes, converged "
                     f"{min(r['converged'] for r in rows):.2f} (worst family), silent wrong answers "
                     f"{sum(r['silent_bad'] for r in rows)}; equivariance error {rec['equivariance']:.1e}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_args(p, "runs/general/general", "output path stem (results/general/general: the committed results)")
    p.add_argument("--systems", type=int, default=100, help="systems per (kappa, N) at N = 15 (a quarter at N = 64)")
    p.add_argument("--models", nargs="*", default=list(MODELS))
    args = p.parse_args(argv)
    out = checked_output(p, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    lam = np.logspace(-4, 0, 33)
    result = {"lam": lam.tolist(), "kappas": list(KAPPAS), "sizes": list(SIZES), "models": {}}
    for name in args.models:
        t = time.time()
        params, cfg, _ = load_pretrained(name)
        rec = dict(layers=cfg.n_layers, one_pass=one_pass(name, cfg.n_layers, args.systems),
                   to_tol=to_tol(name, args.systems // 2))
        rec["spectrum"] = spectral_view(params, cfg, lam)
        rec["equivariance"] = rec["spectrum"]["equivariance"]
        result["models"][name] = rec
        print(f"{name}: {time.time() - t:.0f} s", flush=True)
    write_json(out.with_suffix(".json"), result)
    out.with_suffix(".md").write_text(markdown(result))
    plot_spectrum({name: rec["spectrum"] for name, rec in result["models"].items() if name.startswith("learned")},
                  out.parent / (out.name + "_spectrum.png"))
    print(markdown(result))


if __name__ == "__main__":
    main()
