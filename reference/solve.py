"""``solve(A, b)``: solve SPD systems with a trained linear Transformer (a shipped one by default).

    x = reference.solve(A, b)                       # A (N, N) or (B, N, N), b (N,) or (B, N)
    x = reference.solve(A, b, model="block-n9")     # a shipped model by name
    x = reference.solve(A, b, model="run/final.npz")
    x = reference.solve(A, b, model=(params, cfg))

All systems of one call have the same size ``N`` (mixed sizes: pad them yourself and call
:func:`reference.forward` with a mask). The model gives an approximation whose accuracy depends on
``N`` and ``cond(A)``: see the results page. ``tf_impl.solve`` is the same function running the
TensorFlow model.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from reference.checkpoint import load_checkpoint, load_checkpoint_extra
from reference.config import ModelConfig
from reference.data import check_systems
from reference.model import check_params, forward
from reference.pretrained import PRETRAINED, load_pretrained, pretrained_path, training_sizes


def prepare_inputs(A, b, x0=None):
    """Validate; returns ``(A, b, x0, single)`` batched float64, ``single`` if one system was given.

    ``ValueError`` naming the problem for shapes, NaN/Inf, asymmetry and a matrix that is not
    positive definite (a Cholesky attempt per system).
    """
    A, b = np.asarray(A), np.asarray(b)
    single = A.ndim == 2
    if single:
        A, b = A[None], b[None]
        x0 = None if x0 is None else np.asarray(x0)[None]
    A, b, _, x0, _ = check_systems(A, b, x0=x0)
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        bad = [s for s in range(len(A)) if np.any(np.linalg.eigvalsh(A[s]) <= 0)]
        raise ValueError(f"A is not positive definite (system {bad[0] if bad else '?'})") from None
    return A, b, x0, single


def resolve_model(model, n: int):
    """``(params, cfg, train_sizes)`` from a shipped name, ``"auto"``, a path or ``(params, cfg)``.

    ``"auto"``: ``block-mixed`` for ``N <= 9`` (its training range is [2, 9]), else ``block-finetune``.
    """
    if isinstance(model, str) and model == "auto":
        model = "block-mixed" if n <= 9 else "block-finetune"
    if isinstance(model, str) and model in PRETRAINED:
        params, cfg, meta = load_pretrained(model)
        return params, cfg, training_sizes(meta)
    if isinstance(model, (str, os.PathLike)):
        if isinstance(model, str) and not model.endswith(".npz") and not os.path.exists(model):
            pretrained_path(model)  # raises: an unknown name, with the list of the valid ones
        params, cfg = load_checkpoint(model)
        meta, _ = load_checkpoint_extra(model)
        return params, cfg, training_sizes(meta)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], ModelConfig):
        return check_params(model[0], model[1]), model[1], None
    raise ValueError(f"model must be 'auto', a shipped name {PRETRAINED}, a checkpoint path or (params, cfg); "
                     f"got {type(model).__name__}")


def solve_with(forward_fn, A, b, model="auto", x0=None):
    """The body of both ``solve`` functions: validate, pick the model, run ``forward_fn``."""
    A, b, x0, single = prepare_inputs(A, b, x0)
    n = A.shape[1]
    params, cfg, sizes = resolve_model(model, n)
    if cfg.parametrization == "full" and n != cfg.n:
        raise ValueError(f"this full-encoding model runs only on systems of size n={cfg.n}, got N={n}")
    if sizes is not None and not sizes[0] <= n <= sizes[1]:
        warnings.warn(f"N={n} is outside the model's training sizes [{sizes[0]}, {sizes[1]}]; "
                      "expect a larger error (see the results page)", UserWarning, stacklevel=3)
    x = np.asarray(forward_fn(params, cfg, A, b, x0=x0))
    return x[0] if single else x


def solve(A, b, model="auto", x0=None) -> np.ndarray:
    """Approximate ``x`` with ``A x = b`` (``A`` SPD) by a trained model; see the module docstring."""
    return solve_with(forward, A, b, model, x0)
