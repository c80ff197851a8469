"""What the equivariance restriction costs the learned family's recipe: L-BFGS on one fixed batch of systems
(reference.optim.train_lbfgs), with and without ModelConfig.equivariant, same seed, batch and budget; one JSON line
per run with the MSE on fresh systems at N = 15 and N = 40 (kappa 10).

    python scripts/equivariance_cost.py [--layers 4] [--iters 500] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.config import ModelConfig  # noqa: E402
from reference.evaluation import eval_systems, system_errors  # noqa: E402
from reference.model import forward  # noqa: E402
from reference.optim import train_lbfgs  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args(argv)
    for seed in args.seeds:
        for equivariant in (False, True):
            cfg = ModelConfig(n_layers=args.layers, n_heads=1, n_identity=2, b_last_layer=True,
                              equivariant=equivariant)
            t = time.time()
            params, losses = train_lbfgs(cfg, (2, 16), steps=args.iters, batch_size=256, kappa=10.0, seed=seed)
            row = {"layers": args.layers, "equivariant": equivariant, "seed": seed, "iters": args.iters,
                   "seconds": round(time.time() - t, 1), "train_loss": float(losses[-1])}
            for n in (15, 40):
                A, b, x, mask = eval_systems(n, 10.0, 200)
                row[f"mse_n{n}"] = float(system_errors(forward(params, cfg, A, b, mask), x, mask)[0].mean())
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
