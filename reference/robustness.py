"""Robustness of ``solve`` off the training distribution: families of systems users bring.

Each family changes one thing of the paper's law (uniform spectrum, ``kappa = 10``, ``b = A x``):
the condition number, the spectrum, the right-hand side, the scale, or the matrix itself (a 1-D
Poisson matrix). On every family and size ``N`` the same fixed systems (seed
:data:`reference.evaluation.EVAL_SEED`) are given to

* each model through :func:`reference.solve.solve_with` (one pass: the model's answer, normalised
  and odd, see ``docs/conventions.md``, "Solving user systems"), and to the bare model
  (``forward`` on the system as given, the paper's use), both at depth ``L``;
* conjugate gradient with ``L`` iterations and the best 2-norm point of the Krylov space of
  dimension ``L`` (what any method with ``L`` products by ``A`` could reach at best);
* passes to a tolerance: each model's ``solve(tol=...)`` (layers used = passes x L) against CG's
  iterations to the same relative residual.

Metric: the relative error ``||x_hat - x|| / ||x||`` (scale-free, unlike the MSE, so families of
different scales compare). Glossary: B systems, N size, L layers.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np

from reference.analysis import krylov_best_errors
from reference.baselines import conjugate_gradient
from reference.data import sample_systems
from reference.evaluation import EVAL_SEED

FAMILIES: dict[str, dict] = {
    # name: sampler options (reference.data.sample_systems), or "poisson"; "scale": (c_A, c_b) applied after
    "paper (uniform, kappa 10, b = Ax)": dict(kappa=10.0),
    "kappa 100": dict(kappa=100.0),
    "kappa 1000": dict(kappa=1000.0),
    "log-uniform spectrum, kappa 100": dict(kappa=100.0, spectrum="loguniform"),
    "clustered spectrum, kappa 100": dict(kappa=100.0, spectrum="clustered"),
    "b ~ N(0, I), kappa 10": dict(kappa=10.0, rhs="normal"),
    "b ~ N(0, I), log-uniform, kappa 100": dict(kappa=100.0, spectrum="loguniform", rhs="normal"),
    "scaled: 1e4 A, 1e-3 b": dict(kappa=10.0, scale=(1e4, 1e-3)),
    "1-D Poisson (N+1)^2 tridiag(-1, 2, -1), b ~ N(0, I)": dict(poisson=True),
}


def family_systems(family: str, n: int, n_systems: int, seed: int = EVAL_SEED):
    """``(A, b, x)`` of one family at size ``n``: (B, n, n), (B, n), (B, n), the same on every call."""
    opts = dict(FAMILIES[family])
    sub = zlib.crc32(f"robustness:{family}:{int(n)}".encode())
    if opts.pop("poisson", False):
        A1 = (n + 1) ** 2 * (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1))  # 1-D Laplacian, h = 1/(n+1)
        A = np.broadcast_to(A1, (n_systems, n, n)).copy()
        b = np.random.default_rng([seed, sub]).standard_normal((n_systems, n))
        return A, b, np.linalg.solve(A, b[..., None])[..., 0]
    c_a, c_b = opts.pop("scale", (1.0, 1.0))
    A, b, x, _ = sample_systems(n_systems, n, seed=[seed, sub], **opts)
    return c_a * A, c_b * b, (c_b / c_a) * x


def relative_errors(x_hat, x) -> np.ndarray:
    """``||x_hat - x|| / ||x||`` per system (B,)."""
    return np.linalg.norm(x_hat - x, axis=1) / np.linalg.norm(x, axis=1)


def cg_iterations_to(A, b, tol: float, max_iter: int) -> np.ndarray:
    """Iterations CG needs (from 0) until ``||b - A x_k|| <= tol ||b||``, per system; ``max_iter + 1``
    where it does not get there (rounding can stall CG before ``tol`` on ill-conditioned systems)."""
    hist = conjugate_gradient(A, b, max_iter, return_history=True)  # (B, k+1, N)
    r = b[:, None, :] - np.einsum("bij,bkj->bki", A, hist)  # (B, k+1, N)
    rel = np.linalg.norm(r, axis=2) / np.linalg.norm(b, axis=1)[:, None]  # (B, k+1)
    ok = rel <= tol
    return np.where(ok.any(axis=1), ok.argmax(axis=1), max_iter + 1)


def robustness(models: dict, sizes, families=None, n_systems: int = 200, tol: float = 1e-8, max_passes: int = 100,
               forward_fn=None, progress=None) -> list[dict]:
    """Records ``{"family", "n", "method", "kind", ...}`` for every family, size and method.

    ``models``: name -> what :func:`reference.solve.solve_with` accepts as ``model`` (a shipped name,
    a checkpoint path, ``(params, cfg)``); a model that cannot run size ``n`` (full encoding) is skipped.
    Kinds: ``"solve"`` (one pass; ``rel``, ``rel_median``), ``"bare"`` (the bare model), ``"cg"``,
    ``"krylov"`` (both at the model depth ``L``), ``"to_tol"`` (model: ``passes_median``,
    ``layers_median``, ``converged``; CG: ``iters_median``, ``converged``).
    """
    from reference.model import forward
    from reference.solve import resolve_model, solve_with

    forward_fn = forward if forward_fn is None else forward_fn
    families = list(FAMILIES) if families is None else list(families)
    records = []
    for family in families:
        for n in sizes:
            A, b, x = family_systems(family, n, n_systems)
            runnable = {}
            for name, model in models.items():
                try:
                    runnable[name] = (model, resolve_model(model, n))
                except ValueError as e:  # a full-encoding model at another size: skipped, say nothing else
                    if "full-encoding" not in str(e):
                        raise
            depths = sorted({r.cfg.n_layers for _, r in runnable.values()})
            for name, (model, resolved) in runnable.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # answers off the models' data and unmet tol are what we measure
                    one = solve_with(forward_fn, A, b, model)
                    full = solve_with(forward_fn, A, b, model, tol=tol, max_passes=max_passes, return_info=True)
                bare = np.asarray(forward_fn(resolved.params, resolved.cfg, A, b), dtype=np.float64)
                L = resolved.cfg.n_layers
                for kind, x_hat in (("solve", one), ("bare", bare)):
                    e = relative_errors(x_hat, x)
                    e = np.where(np.isfinite(e), e, np.inf)
                    records.append(dict(family=family, n=n, method=name, kind=kind, layers=L,
                                        rel=float(np.mean(e)), rel_median=float(np.median(e))))
                records.append(dict(family=family, n=n, method=name, kind="to_tol", layers=L,
                                    passes_median=float(np.median(full.passes)),
                                    layers_median=float(np.median(full.passes) * L),
                                    converged=float(np.mean(full.converged)),
                                    rel=float(np.mean(relative_errors(full.x, x)))))
            for L in depths:
                e = relative_errors(conjugate_gradient(A, b, L), x)
                records.append(dict(family=family, n=n, method=f"CG-{L}", kind="cg", layers=L,
                                    rel=float(np.mean(e)), rel_median=float(np.median(e))))
                best = np.sqrt(krylov_best_errors(A, b, x, d_max=min(L, n))[:, -1] * n) / np.linalg.norm(x, axis=1)
                records.append(dict(family=family, n=n, method=f"Krylov-{L}", kind="krylov", layers=L,
                                    rel=float(np.mean(best)), rel_median=float(np.median(best))))
            its = cg_iterations_to(A, b, tol, max_iter=4 * n + 20)
            records.append(dict(family=family, n=n, method="CG", kind="to_tol", layers=1,
                                iters_median=float(np.median(its)), converged=float(np.mean(its <= 4 * n + 20))))
            if progress is not None:
                progress()
    return records


