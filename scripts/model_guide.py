"""Which model when: every shipped model's sizes, spectra, one-pass accuracy and cost, measured the same way.

For each model of ``reference.pretrained.PRETRAINED`` (its checkpoint's ``train_config`` gives the sizes and the
condition numbers it was trained on, or built for; ``reference.pretrained.valid_sizes`` whether it is meant for
every size):

* ``n``: the size it is measured at, 9 for the models trained on N <= 9 (``full-n9``, ``block-n9``,
  ``block-mixed``), 15 for the others, inside every model's training sizes;
* accuracy: the mean relative error ``||x_hat - x|| / ||x||`` of ONE pass of ``reference.solve(A, b, model=NAME)``
  (float64; ``solve`` scales each system to the model's training law), on ``--systems`` fresh systems of the
  paper's law (``reference.evaluation.eval_systems``: uniform spectrum, ``b = A x``) at kappa 10 and 100, and
  that of conjugate gradient with as many iterations as the model has layers (CG-L) on the same systems;
* cost: the bare forward pass of the model (``tf_impl.model.forward``, float32, XLA, structured block path), on
  a batch of ``--batch`` systems of size ``n``, against ``np.linalg.cholesky`` and two triangular solves of the
  same batch (NumPy, float64): the best of ``--repeats`` timed runs after a warm-up, and their ratio. A call of
  ``solve`` costs more than the bare pass: it runs the model twice (its odd part) and computes the largest
  eigenvalue (docs/conventions.md, "Solving user systems").

Writes ``--out`` (JSON); the README and the home page render it (``docs_hooks/model_guide.py``; refresh them
with ``python scripts/make_results_page.py --readme``).

    python scripts/model_guide.py [--systems 300] [--batch 64] [--repeats 20] [--out results/models/models.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.baselines import conjugate_gradient  # noqa: E402
from reference.evaluation import eval_systems  # noqa: E402
from reference.pretrained import PRETRAINED, load_pretrained, valid_sizes  # noqa: E402
from reference.solve import solve  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_solve import best_ms, cholesky_solve  # noqa: E402  (the same timing and Cholesky as the solve benchmark)

KAPPAS = (10.0, 100.0)


def relative_error(x_hat, x) -> float:
    """Mean over the systems of ||x_hat - x|| / ||x||."""
    return float(np.mean(np.linalg.norm(x_hat - x, axis=1) / np.linalg.norm(x, axis=1)))


def trained_on(meta: dict) -> dict:
    """Sizes, condition numbers and optimiser of a shipped model, from its checkpoint's ``train_config``."""
    tc = meta["train_config"]
    hand_set = tc.get("init") == "newton-schulz" and tc["steps"] == 0
    return {"n_min": tc["n_min"], "n_max": tc["n_max"], "kappa": tc["kappa"],
            "kappa_max": tc.get("kappa_max") or tc["kappa"], "hand_set": hand_set,
            "optimizer": "none" if hand_set else tc.get("optimizer", "adam"), "steps": tc["steps"],
            "every_size": valid_sizes(meta)[1] == math.inf}  # as accurate at every size: the construction, ...


def accuracy(name: str, n_layers: int, n: int, systems: int) -> dict:
    """One pass of ``solve`` and CG-L at each kappa of :data:`KAPPAS`: mean relative errors."""
    out = {}
    for kappa in KAPPAS:
        A, b, x, _ = eval_systems(n, kappa, systems)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # above a model's training kappa solve warns: that is measured here
            x_hat = solve(A, b, model=name)
        out[f"{kappa:g}"] = {"model": relative_error(x_hat, x),
                             "cg": relative_error(conjugate_gradient(A, b, n_layers), x)}
    return out


def cost(params, cfg, n: int, batch: int, repeats: int) -> dict:
    """Milliseconds of one bare forward pass (TensorFlow, float32, XLA) and of Cholesky on the same batch."""
    from tf_impl.model import forward

    A, b, _, _ = eval_systems(n, 10.0, batch)
    Af, bf = A.astype(np.float32), b.astype(np.float32)
    structured = cfg.parametrization == "block"
    model_ms = best_ms(lambda: forward(params, cfg, Af, bf, structured=structured, dtype="float32"), repeats)
    cholesky_ms = best_ms(lambda: cholesky_solve(A, b), repeats)
    return {"batch": batch, "model_ms": model_ms, "cholesky_ms": cholesky_ms, "ratio": model_ms / cholesky_ms}


def measure(name: str, systems: int, batch: int, repeats: int) -> dict:
    params, cfg, meta = load_pretrained(name)
    trained = trained_on(meta)
    n = 9 if trained["n_max"] < 15 else 15
    return {"name": name, "layers": cfg.n_layers, "heads": cfg.n_heads, "parametrization": cfg.parametrization,
            "parameters": int(sum(v.size for v in params.values())), **trained, "n": n,
            "accuracy": accuracy(name, cfg.n_layers, n, systems), "cost": cost(params, cfg, n, batch, repeats)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", type=int, default=300, help="test systems per kappa (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="systems per timed batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs, the fastest kept (default: %(default)s)")
    p.add_argument("--models", nargs="*", default=list(PRETRAINED), help="default: every shipped model")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "models" / "models.json")
    args = p.parse_args(argv)
    rows = []
    for name in args.models:
        rows.append(measure(name, args.systems, args.batch, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    result = {"args": {"systems": args.systems, "batch": args.batch, "repeats": args.repeats,
                       "kappas": list(KAPPAS), "law": "paper (uniform spectrum, b = A x), eval_systems"},
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
              "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
