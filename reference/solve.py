"""``solve(A, b)``: solve SPD systems with a trained linear Transformer (a shipped one by default).

    x = reference.solve(A, b)                       # A (N, N) or (B, N, N), b (N,) or (B, N)
    x = reference.solve(A, b, model="block-n9")     # a shipped model by name
    x = reference.solve(A, b, model="run/final.npz")
    x = reference.solve(A, b, model=(params, cfg))

All systems of one call have the same size ``N`` (mixed sizes: pad them yourself and call
:func:`reference.forward` with a mask). The model gives an approximation whose accuracy depends on
``N`` and ``cond(A)``: see the results page. ``tf_impl.solve`` is the same function running the
TensorFlow model; both are :func:`solve_with` given a ``forward`` function, and share
:func:`prepare_inputs` (validation) and :func:`resolve_model` (which model, and its training sizes).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import NamedTuple

import numpy as np

from reference.checkpoint import load_checkpoint, load_checkpoint_extra
from reference.config import ModelConfig
from reference.data import check_systems
from reference.evaluation import model_can_run
from reference.model import check_params, forward
from reference.pretrained import PRETRAINED, load_pretrained, pretrained_path, training_sizes

AUTO_MODELS = ("block-mixed", "block-finetune")
"""The shipped models ``model="auto"`` chooses from, by their training sizes."""


class ResolvedModel(NamedTuple):
    params: dict
    cfg: ModelConfig
    train_sizes: tuple[int, int] | None  # (n_min, n_max) from the checkpoint's metadata, None if unknown
    label: str  # how error messages name the model


def first_not_positive_definite(A) -> int | None:
    """Index of the first system of the batch ``A`` (B, N, N) whose Cholesky factorisation fails, or ``None``."""
    try:
        np.linalg.cholesky(A)  # one batched attempt: the common case, every system is SPD
        return None
    except np.linalg.LinAlgError:
        pass
    for s in range(len(A)):
        try:
            np.linalg.cholesky(A[s])
        except np.linalg.LinAlgError:
            return s
    return None  # unreachable unless the batched and per-system LAPACK calls disagree


def prepare_inputs(A, b, x0=None):
    """Validate one system ``(N, N), (N,)`` or a batch ``(B, N, N), (B, N)``.

    Returns ``(A, b, x0, single)``: batched float64 arrays (``x0`` zeros if not given) and whether
    one unbatched system was given. Raises ``ValueError`` naming the problem: shapes (via
    :func:`reference.data.check_systems`, as are NaN/Inf and asymmetry) and a matrix that is not
    positive definite (a Cholesky attempt; the message names the first such system).
    """
    A, b = np.asarray(A), np.asarray(b)
    if A.ndim not in (2, 3):
        raise ValueError(f"A must be one matrix (N, N) or a batch (B, N, N), got shape {A.shape}")
    single = A.ndim == 2
    if single:
        for name, v in (("b", b), ("x0", x0)):
            if v is not None and np.shape(v) != A.shape[:1]:
                raise ValueError(f"{name} must have shape (N,) = {A.shape[:1]} to match A {A.shape}, "
                                 f"got {np.shape(v)}")
        A, b = A[None], b[None]
        x0 = None if x0 is None else np.asarray(x0)[None]
    A, b, _, x0, _ = check_systems(A, b, x0=x0)
    bad = first_not_positive_definite(A)
    if bad is not None:
        raise ValueError(f"A is not positive definite (system {bad}): its Cholesky factorisation fails")
    return A, b, x0, single


def auto_model(n: int) -> str:
    """The shipped block model for systems of size ``n``: the one of :data:`AUTO_MODELS` whose
    training sizes cover ``n``, else the one whose sizes are nearest (``block-mixed`` [2, 9] for
    ``N <= 9``, ``block-finetune`` [10, 20] above). ``ValueError`` if none of them is shipped."""
    shipped = []
    for name in AUTO_MODELS:
        try:
            path = pretrained_path(name)
        except ValueError:  # not in this install
            continue
        meta, _ = load_checkpoint_extra(path)
        shipped.append((name, training_sizes(meta)))
    if not shipped:
        raise ValueError(f"model='auto' picks one of the shipped models {', '.join(AUTO_MODELS)}, and none of "
                         "their weights is shipped in this install; train one with `python -m tf_impl.train "
                         "--preset block-mixed` and pass the checkpoint it writes as model=PATH")

    def gap(sizes):
        return math.inf if sizes is None else max(sizes[0] - n, n - sizes[1], 0)

    return min(shipped, key=lambda item: gap(item[1]))[0]  # min keeps the first on ties


def resolve_model(model, n: int) -> ResolvedModel:
    """The model ``solve`` runs on systems of size ``n``, and the sizes it was trained on.

    ``model``: ``"auto"`` (:func:`auto_model`), a name of :data:`~reference.pretrained.PRETRAINED`,
    a checkpoint path (``str`` or ``os.PathLike``) or a ``(params, cfg)`` tuple (training sizes
    unknown). Raises ``ValueError`` for an unknown name, a missing or unreadable file, parameters
    that do not match ``cfg``, and a model that cannot run size ``n`` (a full-encoding model runs
    only at its own ``n``).
    """
    if isinstance(model, str) and model == "auto":
        model = auto_model(n)
    if isinstance(model, str) and model in PRETRAINED:
        params, cfg, meta = load_pretrained(model)
        out = ResolvedModel(params, cfg, training_sizes(meta), f"shipped model {model!r}")
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if isinstance(model, str) and not os.path.exists(path) and not path.endswith(".npz") and os.sep not in path:
            raise ValueError(f"unknown pretrained model {path!r}; the shipped ones are {', '.join(PRETRAINED)} "
                             "(or give 'auto', a checkpoint path or (params, cfg))")
        params, cfg = load_checkpoint(path)  # ValueError if missing or unreadable
        meta, _ = load_checkpoint_extra(path)
        out = ResolvedModel(params, cfg, training_sizes(meta), f"checkpoint {path!r}")
    elif isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], ModelConfig):
        out = ResolvedModel(check_params(model[0], model[1]), model[1], None, "the given (params, cfg)")
    else:
        raise ValueError(f"model must be 'auto', a shipped name ({', '.join(PRETRAINED)}), a checkpoint path "
                         f"or a (params, cfg) tuple; got {type(model).__name__}")
    if not model_can_run(out.cfg, n):
        raise ValueError(f"{out.label} is a full-encoding model: it runs only on systems of size n={out.cfg.n}, "
                         f"got N={n}")
    return out


def solve_with(forward_fn, A, b, model="auto", x0=None) -> np.ndarray:
    """The body of both ``solve`` functions: validate, resolve the model, warn outside its training
    sizes, run ``forward_fn(params, cfg, A, b, x0=x0)`` (NumPy in, NumPy out) on the batch."""
    A, b, x0, single = prepare_inputs(A, b, x0)
    n = A.shape[1]
    resolved = resolve_model(model, n)
    sizes = resolved.train_sizes
    if sizes is not None and not sizes[0] <= n <= sizes[1]:
        warnings.warn(f"N={n} is outside the training sizes [{sizes[0]}, {sizes[1]}] of {resolved.label}; "
                      "expect a larger error (see the results page)", UserWarning, stacklevel=3)
    x = np.asarray(forward_fn(resolved.params, resolved.cfg, A, b, x0=x0))
    return x[0] if single else x


def solve(A, b, model="auto", x0=None) -> np.ndarray:
    """Approximate the solution of ``A x = b`` (``A`` symmetric positive definite) with a trained model.

    Args:
        A (array_like): one matrix ``(N, N)`` or a batch ``(B, N, N)``. Every system of a call has
            the same size ``N`` (for mixed sizes, pad and call :func:`reference.forward` with a mask).
        b (array_like): ``(N,)`` or ``(B, N)``, matching ``A``.
        model (str | os.PathLike | tuple): ``"auto"`` (the shipped block model trained on sizes
            around ``N``: ``block-mixed`` for ``N <= 9``, ``block-finetune`` above), a shipped name
            (``"full-n9"``, ``"block-n9"``, ``"block-mixed"``, ``"block-finetune"``), a checkpoint
            path, or a ``(params, cfg)`` tuple.
        x0 (array_like | None): optional initial guess, shaped like ``b`` (default zeros).

    Returns:
        ``x_hat`` shaped like ``b``, float64: the model's approximation (not an exact solve; its
        error depends on ``N`` and ``cond(A)``, see the results page).

    Raises:
        ValueError: naming the problem: ``A`` not square, ``b``/``x0`` of the wrong shape, NaN/Inf,
            ``A`` not symmetric or not positive definite (the first such system is named), an
            unknown model name, a missing or unreadable checkpoint, weights not shipped in this
            install, a full-encoding model given another size than its own.

    Warns:
        UserWarning: ``N`` is outside the sizes the model was trained on (when its checkpoint
            records them): the model still runs, but expect a larger error.
    """
    return solve_with(forward, A, b, model, x0)
