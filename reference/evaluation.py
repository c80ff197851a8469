"""Evaluate trained models against classical solvers on the same fresh systems.

Every method sees exactly the same systems (drawn once per ``(kappa, N)`` from a seed that no
training run uses), the same initial guess ``x0 = 0`` and, for iterative methods, as many
iterations as the model has layers. Metrics per system: ``mse = (1/N)||x_hat - x||^2`` and
``rel = ||x_hat - x|| / ||x||``; a record holds their means and the standard error of the MSE mean.

Glossary of dimensions: B systems, M padded size (= N here: one size at a time), L layers, k iterations.
"""

from __future__ import annotations

import inspect
import zlib

import numpy as np

from reference.analysis import effective_krylov_dimension, krylov_best_errors
from reference.baselines import BASELINES
from reference.config import ModelConfig
from reference.data import parse_kappa, sample_systems
from reference.model import forward_layers

EVAL_SEED = 20240721  # distinct from every training seed used by the presets


def system_errors(x_hat, x, mask):
    """Per-system ``(mse, rel)``: ``(1/N)||x_hat - x||^2`` and ``||x_hat - x|| / ||x||``, each (B,)."""
    m = mask.astype(np.float64)
    err2 = (((x_hat - x) * m) ** 2).sum(axis=-1)  # (B,)
    return err2 / m.sum(axis=-1), np.sqrt(err2 / (x**2).sum(axis=-1))


def summarize(mse, rel) -> dict:
    """Means of the per-system metrics and the standard error of the MSE mean."""
    return {"mse": float(np.mean(mse)), "mse_sem": float(np.std(mse) / np.sqrt(len(mse))),
            "rel": float(np.mean(rel))}


def eval_systems(n: int, kappa, n_systems: int, seed: int = EVAL_SEED, **law):
    """The fixed test set of size ``n`` at ``kappa`` (a number or ``(k_min, k_max)``) under ``law``
    (``spectrum``, ``rhs``, ``normalize_rhs`` of :func:`reference.data.sample_systems`):
    ``(A, b, x, mask)``, the same for every method."""
    k_lo, k_hi = parse_kappa(kappa)
    # stable across processes, unlike hash(); float() so that 10, 10.0 and np.float64(10) give the same set;
    # the paper's law keeps the key it had before the other laws existed
    key = f"{int(n)}:{k_lo!r}" + ("" if k_lo == k_hi else f":{k_hi!r}")
    key += "".join(f":{k}={law[k]!r}" for k in sorted(law) if law[k] != _LAW_DEFAULTS.get(k))
    return sample_systems(n_systems, n, kappa if k_lo == k_hi else (k_lo, k_hi), seed=[seed, zlib.crc32(key.encode())],
                          **law)


_LAW_DEFAULTS = {k: p.default for k, p in inspect.signature(sample_systems).parameters.items()
                 if k in ("spectrum", "rhs", "normalize_rhs")}  # the paper's law


def model_can_run(cfg: ModelConfig, n: int) -> bool:
    return cfg.parametrization == "block" or n == cfg.n


def evaluate(models: dict, sizes, kappas, n_systems=1000, seed=EVAL_SEED, baselines=None, progress=None):
    """Error of each model and each baseline, per ``(kappa, N)``.

    ``models``: name -> ``(params, cfg)``. ``baselines``: names from :data:`BASELINES` (default all),
    each run with every depth some model has. Returns a list of records
    ``{"kappa", "n", "method", "kind": "model"|"baseline"|"zero", "iters", "mse", "mse_sem", "rel"}``.
    ``progress`` is an optional callable invoked once per ``(kappa, N)``.
    """
    baselines = list(BASELINES) if baselines is None else list(baselines)
    clash = sorted(set(models) & (set(BASELINES) | {"zero"}))
    if clash:  # records are keyed by (kappa, N, method, iters): a clash would mix a model with a baseline
        raise ValueError(f"model names {clash} are taken by baselines; rename the models")
    depths = sorted({cfg.n_layers for _, cfg in models.values()})
    records = []
    for kappa in kappas:
        for n in sizes:
            A, b, x, mask = eval_systems(n, kappa, n_systems, seed)
            rec = {"kappa": float(kappa), "n": int(n)}
            records.append({**rec, "method": "zero", "kind": "zero", "iters": 0,
                            **summarize(*system_errors(np.zeros_like(x), x, mask))})
            for name, (params, cfg) in models.items():
                if not model_can_run(cfg, n):
                    continue
                x_hat = forward_layers(params, cfg, A, b, mask)[:, -1]
                records.append({**rec, "method": name, "kind": "model", "iters": cfg.n_layers,
                                **summarize(*system_errors(x_hat, x, mask))})
            for base in baselines:
                for k in depths if base != "cholesky" else [0]:
                    x_hat = BASELINES[base](A, b, k, mask=mask, kappa=kappa)
                    records.append({**rec, "method": base, "kind": "baseline", "iters": k,
                                    **summarize(*system_errors(x_hat, x, mask))})
            if progress is not None:
                progress()
    return records


def model_vs_cg(params, cfg: ModelConfig, sizes, kappa, n_systems: int, forward=None, seed: int = EVAL_SEED,
                **law) -> list[dict]:
    """Per size N: the model against CG with as many iterations as it has layers and against
    ``x_hat = 0``, on the fixed test set :func:`eval_systems` ``(n, kappa, n_systems, seed, **law)``.

    ``forward``: the twin's ``forward(params, cfg, A, b, mask) -> x_hat`` (default the reference's).
    Returns ``[{"n", "mse_model", "rel_model", "mse_cg", "rel_cg", "mse_zero", "rel_zero"}]``: means over
    the systems of ``(1/N)||x_hat - x||^2`` and ``||x_hat - x|| / ||x||``.
    """
    from reference.baselines import conjugate_gradient
    from reference.model import forward as reference_forward

    forward = reference_forward if forward is None else forward
    rows = []
    for n in sizes:
        A, b, x, mask = eval_systems(n, kappa, n_systems, seed, **law)
        row = {"n": int(n)}
        for name, x_hat in (("model", forward(params, cfg, A, b, mask)),
                            ("cg", conjugate_gradient(A, b, cfg.n_layers, mask=mask)), ("zero", np.zeros_like(x))):
            mse, rel = system_errors(x_hat, x, mask)
            row[f"mse_{name}"], row[f"rel_{name}"] = float(np.mean(mse)), float(np.mean(rel))
        rows.append(row)
    return rows


def layer_analysis(params, cfg: ModelConfig, n: int, kappa: float, n_systems=1000, seed=EVAL_SEED) -> dict:
    """Error after each layer of the model vs after each CG iteration and vs the best 2-norm point
    of the Krylov space of the same dimension, with the model's effective Krylov dimension per layer.

    Returns lists indexed by layer / iteration ``0..L`` (entry 0 is ``x0 = 0``).
    """
    A, b, x, mask = eval_systems(n, kappa, n_systems, seed)
    L = cfg.n_layers
    iterates = forward_layers(params, cfg, A, b, mask)  # (B, L+1, M)
    model = [float(np.mean(system_errors(iterates[:, k], x, mask)[0])) for k in range(L + 1)]
    cg_hist = BASELINES["cg"](A, b, L, mask=mask, kappa=kappa, return_history=True)  # (B, L+1, M)
    cg = [float(np.mean(system_errors(cg_hist[:, k], x, mask)[0])) for k in range(L + 1)]
    best = krylov_best_errors(A, b, x, mask, d_max=n).mean(axis=0)  # (n+1,)
    return {"n": int(n), "kappa": float(kappa), "model": model, "cg": cg,
            "krylov_best": [float(best[min(k, n)]) for k in range(L + 1)],
            "krylov_best_all": best.tolist(),
            "effective_krylov_dim": [effective_krylov_dimension(e, best) for e in model]}
