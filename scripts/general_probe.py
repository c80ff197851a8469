"""Short experiments on learning one equivariant model for a range of kappa, on spectra (docs/concepts.md, 11-12).

    python scripts/general_probe.py METHOD [--layers 8] [--kappa-max 1000] [--seed 0] [--iters 1000]

Every method trains the same model (block, 1 head, 2 identity copies, attention norm "none", equivariant) on the
same 256 spectra of 16 eigenvalues log-uniform in [1/kappa_max, 1.1] (1.1: as the presets, so that the pinned
largest eigenvalue 1 of the test spectra lies inside) and prints one JSON line: the final training
loss, the time, and the MSE on fresh uniform spectra (the project's law: both ends pinned) at kappa 10, 1000, 1e4
(the expectation over x ~ N(0, I), reference.spectral). Methods:

* ``lbfgs``: end to end from random weights (std 0.02), L-BFGS (reference.optim.lbfgs_step), the MSE loss;
* ``lbfgs-log``: the same on the mean over spectra of the log of each spectrum's MSE (every spectrum counts by its
  orders of magnitude);
* ``greedy``: layer-wise least squares (reference.greedy), the recipe of the learned-general presets;
* ``greedy-descent``: the same stages, each layer fitted by L-BFGS from P = 0, Q random (``--iters`` per stage)
  instead of alternating least squares;
* ``greedy-no-constant``: the same stages with the last identity copy writable too (no constant slab).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import greedy, spectral  # noqa: E402
from reference.config import ModelConfig  # noqa: E402
from reference.model import init_params, param_masks  # noqa: E402
from reference.optim import flatten_params, lbfgs_step, unflatten_params  # noqa: E402

METHODS = ("lbfgs", "lbfgs-log", "greedy", "greedy-descent", "greedy-no-constant")


def model_config(layers: int) -> ModelConfig:
    return ModelConfig(n_layers=layers, n_heads=1, n_identity=2, b_last_layer=True, equivariant=True)


def fresh_mse(params, cfg, kappa: float, systems: int = 500, n: int = 15) -> float:
    rng = np.random.default_rng(12345)
    lam = rng.uniform(1.0 / kappa, 1.0, (systems, n))
    lam[:, 0], lam[:, 1] = 1.0 / kappa, 1.0
    with np.errstate(all="ignore"):
        r = 1.0 - lam * spectral.transfer(params, cfg, lam)
    return float(np.mean(r * r))


def _lbfgs(params, cfg, fg_of_params, names, iters):
    """L-BFGS on the entries of ``names`` that the spectral path reaches; a non-finite loss is an infinite one."""
    shapes = {k: params[k].shape for k in names}

    def fg(theta):
        p = {**params, **unflatten_params(theta, shapes)}
        with np.errstate(all="ignore"):
            value, grads = fg_of_params(p)
        if not math.isfinite(value):
            return math.inf, np.zeros_like(theta)
        return value, flatten_params(grads, names)

    theta = flatten_params(params, names)
    f, g = fg(theta)
    S = Y = np.zeros((0, theta.size))
    for _ in range(iters):
        theta, f, g, S, Y, t = lbfgs_step(fg, theta, f, g, S, Y, 30)
        if t == 0.0 and S.shape[0] == 0:
            break
    return {**params, **unflatten_params(theta, shapes)}


def end_to_end(cfg, lam, seed, iters, log):
    params = init_params(cfg, seed)

    def loss(p):
        g, cache, _ = spectral.model_forward(p, cfg, lam, np.ones(lam.shape, bool))
        r = lam * g - 1.0
        ms = np.mean(r * r, axis=1)  # (B,) each spectrum's MSE
        dms = 1.0 / (ms * len(ms)) if log else np.full(len(ms), 1.0 / len(ms))
        value = float(np.mean(np.log(ms))) if log else float(np.mean(ms))
        return value, spectral.model_backward(dms[:, None] * 2.0 * r * lam / r.shape[1], cache, cfg)

    return _lbfgs(params, cfg, loss, list(params), iters)


def greedy_descent(cfg, lam, seed, iters):
    """The greedy stages with each new layer (and the readout) fitted by L-BFGS, the earlier layers fixed."""
    params, _ = greedy.greedy_fit(dataclasses.replace(cfg, n_layers=1), lam, seed)  # the readout alone
    last = params["layers.0.P"], params["layers.0.Q"]
    full = {k: np.zeros_like(v) for k, v in init_params(cfg, seed).items()}
    rng = np.random.default_rng(seed)
    masks = param_masks(cfg)
    for layer in range(cfg.n_layers - 1):
        sub = dataclasses.replace(cfg, n_layers=layer + 2)
        p = {k: full[k] for k in list(full)[: 2 * (layer + 1)]}
        p[f"layers.{layer}.Q"] = 0.02 * rng.standard_normal(full["layers.0.Q"].shape) * masks["layers.0.Q"]
        p[f"layers.{layer + 1}.P"], p[f"layers.{layer + 1}.Q"] = last
        names = [f"layers.{layer}.P", f"layers.{layer}.Q", f"layers.{layer + 1}.P", f"layers.{layer + 1}.Q"]
        p = _lbfgs(p, sub, lambda q, sub=sub: spectral.loss_and_grads(q, sub, lam), names, iters)
        full.update({k: p[k] for k in names[:2]})
        last = p[names[2]], p[names[3]]
    full[f"layers.{cfg.n_layers - 1}.P"], full[f"layers.{cfg.n_layers - 1}.Q"] = last
    return full


def greedy_no_constant(cfg, lam, seed):
    """The greedy stages with every identity copy writable: nothing keeps the constant 1 among the slabs."""
    f = greedy.initial_slabs(lam.ravel(), cfg.n_identity)
    w, layers = greedy.fit_readout(f, lam.ravel()), []
    for layer in range(cfg.n_layers - 1):
        p, q, _ = greedy.fit_layer(f, w, lam.ravel(), cfg.n_heads, list(range(1, cfg.n_identity + 1)),
                                   np.random.default_rng([seed, layer]))
        layers.append((p, q))
        f = greedy.layer_update(f, p, q)
        w_new = greedy.fit_readout(f, lam.ravel())
        if np.mean((1 - lam.ravel() * (f @ w_new)) ** 2) < np.mean((1 - lam.ravel() * (f @ w)) ** 2):
            w = w_new
    return greedy.to_params(cfg, layers, w)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=METHODS)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--kappa-max", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=1000, help="L-BFGS iterations (per stage for greedy-descent)")
    args = p.parse_args(argv)
    cfg = model_config(args.layers)
    rng = np.random.default_rng([args.seed, 7])
    lam = np.exp(rng.uniform(math.log(1 / args.kappa_max), math.log(1.1), (256, 16)))
    t = time.time()
    if args.method in ("lbfgs", "lbfgs-log"):
        params = end_to_end(cfg, lam, args.seed, args.iters, args.method == "lbfgs-log")
    elif args.method == "greedy":
        params, _ = greedy.greedy_fit(cfg, lam, args.seed)
    elif args.method == "greedy-descent":
        params = greedy_descent(cfg, lam, args.seed, args.iters)
    else:
        params = greedy_no_constant(cfg, lam, args.seed)
    seconds = time.time() - t
    loss, _ = spectral.loss_and_grads(params, cfg, lam)
    print(json.dumps({"method": args.method, "layers": args.layers, "kappa_max": args.kappa_max, "seed": args.seed,
                      "iters": args.iters, "seconds": round(seconds, 1), "train_loss": loss,
                      **{f"mse_kappa_{k:g}": fresh_mse(params, cfg, k) for k in (10.0, 1000.0, 1e4)}}), flush=True)


if __name__ == "__main__":
    main()
