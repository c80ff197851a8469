"""``solve(A, b)``: solve SPD systems with a trained linear Transformer (a shipped one by default).

    x = reference.solve(A, b)                       # A (N, N) or (B, N, N), b (N,) or (B, N)
    x = reference.solve(A, b, tol=1e-8)             # passes of the model on the residual until met
    info = reference.solve(A, b, tol=1e-8, return_info=True)  # SolveResult: x, converged, passes, history
    x = reference.solve(A, b, model="block-n9")     # a shipped model by name
    x = reference.solve(A, b, model="run/final.npz")
    x = reference.solve(A, b, model=(params, cfg))
    f = reference.factorize(A); x = f.solve(b)       # A's share once (cho_factor / cho_solve), then any b

What a pass is (``docs/conventions.md``, "Solving user systems"): with ``x`` the current answer
(``x0``, zeros by default) and ``r = b - A x`` its residual, the model is run on the system brought
to the scale it was trained on, ``A / a`` with ``a`` the largest eigenvalue of ``A`` and ``r``
scaled to the rms ``rho`` of the model's training right-hand sides, and its answer is scaled back:

    d = (||r|| / (rho sqrt(N) a)) * (f(A/a, r_hat) - f(A/a, -r_hat)) / 2,   r_hat = rho sqrt(N) r / ||r||
    x <- x + d      if it lowers ||b - A x||, else the pass is rejected (x is kept) and the system stops

so ``solve(c A, s b) = (s/c) solve(A, b)`` (to rounding), ``solve(A, -b) = -solve(A, b)`` (exactly: the
model sees ``r`` with a canonical sign, its largest entry positive), an exact ``x0`` is returned
unchanged and a good one is improved. Without ``tol`` one pass is made; with ``tol``, passes until
``||b - A x|| <= tol ||b||`` or ``max_passes``, each system on its own, with a ``UserWarning``
(``strict=True``: :class:`NotConvergedError`) for those that did not get there.

At any scale: every system is first brought to ``max |A_ij|`` and ``max |b_i|`` in ``[0.5, 1)`` by
powers of two (exact), so no norm overflows or underflows, and the answer is scaled back; an answer
that float64 cannot hold (beyond 1.8e308, or below its smallest normal number 2.2e-308) is a
``ValueError``. Memory: a batch runs in chunks that fit :func:`memory_limit` (the environment variable
``LINEAR_TRANSFORMER_MEMORY_LIMIT``, else half of the machine's memory; the answer does not depend on the
chunks), and a size at which one system does not fit is refused before anything is allocated. Without ``tol``,
a ``UserWarning`` names the systems whose one pass may be far from the answer (:data:`RESIDUAL_MARGIN`).

Factor once (:func:`factorize`, :class:`Factorization`): a model that does not read ``b`` before its last layer
(``newton-schulz``, the ``learned-*`` models) computes its first ``L - 1`` layers from ``A`` alone, and its odd
part in ``b`` is a matrix times ``b``: ``solve`` computes that matrix once per ``A`` and applies it to both signs,
every pass and every right-hand side (columns of ``b``, ``(N, k)``); any other model runs at every pass.

All systems of one call have the same size ``N`` (mixed sizes: pad them yourself and call
:func:`reference.forward` with a mask). ``tf_impl.solve`` is the same function running the
TensorFlow model; both are :func:`solve_with` given a ``forward`` function, and share
:func:`prepare_inputs` (validation) and :func:`resolve_model` (which model, its training sizes and
right-hand-side scale).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import NamedTuple

import numpy as np

from reference.checkpoint import load_checkpoint, load_checkpoint_extra
from reference.config import MEMORY_LIMIT_HELP, ModelConfig, is_int, is_real, memory_budget
from reference.data import check_systems, rhs_rms
from reference.evaluation import model_can_run
from reference.model import approximate_inverse, check_params, first_layer_reading_b, forward, forward_bytes
from reference.pretrained import (
    PRETRAINED,
    load_pretrained,
    pretrained_path,
    recorded_accuracy,
    training_law,
    valid_sizes,
)

AUTO_MODELS = ("newton-schulz", "block-mixed", "block-finetune", "broad")
"""The shipped models ``model="auto"`` chooses from: the first whose sizes (:func:`~reference.pretrained.valid_sizes`)
cover ``N``, else the one whose sizes are nearest. ``newton-schulz`` (the hand-set Newton-Schulz model, exact at
every size) covers every ``N``; the trained models (``block-mixed`` [2, 9], ``block-finetune`` [10, 20],
``broad`` [2, 30]) are the choice of an install without it. The order is measured (``results/robustness``):
``newton-schulz`` has the smallest one-pass error on every family and size there; among the trained ones,
averaged over the families, ``block-mixed`` is best up to N = 5-9, ``block-finetune`` from 9 to 20, ``broad``
at 30."""


class ResolvedModel(NamedTuple):
    params: dict
    cfg: ModelConfig
    train_sizes: tuple[int, float] | None  # valid_sizes of the checkpoint: (n_min, n_max), (1, inf) or None
    label: str  # how error messages name the model
    law: dict  # the training data law (reference.pretrained.training_law): sets the rhs scale rho
    rho: float = 1.0  # rhs_rms(n, **law): the rms of the model's training right-hand sides at this n
    law_recorded: bool = False  # the checkpoint records its law (else the paper's is assumed, kappa unknown)
    accuracy: float | None = None  # recorded_accuracy: its mean relative error on its training law, if recorded


def first_not_positive_definite(A) -> int | None:
    """Index of the first system of the batch ``A`` (B, N, N) whose Cholesky factorisation fails, or ``None``."""
    A = np.asarray(A)
    n = A.shape[-1]
    step = max(1, 2**25 // max(n * n, 1))  # batched attempts of at most 256 MiB each
    for lo in range(0, len(A), step):
        # at unit scale (powers of two, exact): the factorisation neither overflows nor underflows
        chunk = np.ldexp(A[lo: lo + step], -_exponents(A[lo: lo + step], (1, 2))[:, None, None])
        try:
            np.linalg.cholesky(chunk)  # one batched attempt: the common case, every system is SPD
            continue
        except np.linalg.LinAlgError:
            pass
        for s in range(len(chunk)):
            try:
                np.linalg.cholesky(chunk[s])
            except np.linalg.LinAlgError:
                return lo + s
    return None


def prepare_inputs(A, b, x0=None):
    """Validate one system ``(N, N), (N,)`` or a batch ``(B, N, N), (B, N)``.

    Returns ``(A, b, x0, single)``: batched float64 arrays (``x0`` zeros if not given) and whether
    one unbatched system was given. Raises ``ValueError`` naming the problem: shapes (via
    :func:`reference.data.check_systems`, as are NaN/Inf and asymmetry) and a matrix that is not
    positive definite (a Cholesky attempt; the message names the first such system).
    """
    A, b = np.asarray(A), np.asarray(b)
    if x0 is not None and np.iscomplexobj(x0):  # A and b are refused the same way by check_systems
        raise ValueError(f"x0 must hold real numbers, got dtype {np.asarray(x0).dtype}")
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
    """The shipped block model for systems of size ``n``: the first of :data:`AUTO_MODELS` whose sizes
    cover ``n`` (``newton-schulz``: every size), else the one whose sizes are nearest. ``ValueError`` if
    none of them is shipped."""
    shipped = []
    for name in AUTO_MODELS:
        try:
            path = pretrained_path(name)
        except ValueError:  # not in this install
            continue
        meta, _ = load_checkpoint_extra(path)
        shipped.append((name, valid_sizes(meta)))
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
    unknown, data law assumed the paper's). Raises ``ValueError`` for an unknown name, a missing or
    unreadable file, parameters that do not match ``cfg``, and a model that cannot run size ``n``
    (a full-encoding model runs only at its own ``n``).
    """
    if isinstance(model, str) and model == "auto":
        model = auto_model(n)
    if isinstance(model, str) and model in PRETRAINED:
        params, cfg, meta = load_pretrained(model)
        label = f"shipped model {model!r}"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if isinstance(model, str) and not os.path.exists(path) and not path.endswith(".npz") and os.sep not in path:
            raise ValueError(f"unknown pretrained model {path!r}; the shipped ones are {', '.join(PRETRAINED)} "
                             "(or give 'auto', a checkpoint path or (params, cfg))")
        params, cfg = load_checkpoint(path)  # ValueError if missing or unreadable
        meta, _ = load_checkpoint_extra(path)
        label = f"checkpoint {path!r}"
    elif isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], ModelConfig):
        if isinstance(model[0], dict):
            for name, value in model[0].items():
                if np.iscomplexobj(value):  # converting to float64 would drop the imaginary part silently
                    raise ValueError(f"param {name!r} is complex; the parameters of a model are real numbers")
        params, cfg, meta = check_params(model[0], model[1]), model[1], {}  # unknown: the paper's law
        label = "the given (params, cfg)"
    else:
        raise ValueError(f"model must be 'auto', a shipped name ({', '.join(PRETRAINED)}), a checkpoint path "
                         f"or a (params, cfg) tuple; got {type(model).__name__}")
    if not model_can_run(cfg, n):
        raise ValueError(f"{label} is a full-encoding model: it runs only on systems of size n={cfg.n}, got N={n}")
    law = training_law(meta)
    try:
        rho = rhs_rms(n, **law)
    except ValueError as e:  # e.g. a kappa that is NaN in the metadata
        raise ValueError(f"{label}: the training data law its metadata records is unusable ({e})") from None
    tc = meta.get("train_config") if isinstance(meta, dict) else None
    recorded = isinstance(tc, dict) and is_real(tc.get("kappa"))
    return ResolvedModel(params, cfg, valid_sizes(meta), label, law, rho, recorded, recorded_accuracy(meta))


def spectrum_estimate(A) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, cond)`` of each SPD matrix of the batch ``A`` (B, N, N): ``lambda_max``, the number ``solve``
    divides ``A`` by, and ``cond(A) = lambda_max / lambda_min`` (``inf`` where rounding puts ``lambda_min`` at or
    below 0), from every eigenvalue (``np.linalg.eigvalsh``) at every ``N``.

    The warnings of a one-pass ``solve`` rest on ``cond``, so it is computed, not estimated: a few Lanczos steps
    cost less but their smallest Ritz value can be orders of magnitude above ``lambda_min`` (a spectrum spread
    over ``[1e-6, 1]``, or small eigenvalues in a cluster, at ``N = 128``), which would hide exactly the systems
    one pass cannot solve. ``O(N^3)``, about a hundredth of one pass of the default model (which runs a 12-layer
    ``O(N^3)`` forward twice). Scale-equivariant: ``2^j A`` gives ``2^j scale`` and the same ``cond`` exactly.
    """
    ev = np.linalg.eigvalsh(A)  # (B, N), ascending
    lo, hi = ev[:, 0], ev[:, -1]
    return hi, np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.inf)


def largest_eigenvalue(A) -> np.ndarray:
    """The scale ``solve`` divides each SPD matrix of the batch ``A`` (B, N, N) by: ``lambda_max``
    (:func:`spectrum_estimate`)."""
    return spectrum_estimate(A)[0]


class SolveResult(NamedTuple):
    """What ``solve(..., return_info=True)`` returns (one system: scalars and a 1-D history)."""

    x: np.ndarray  # (B, N) the answer: the iterate with the smallest residual
    converged: np.ndarray  # (B,) bool: ||b - A x|| <= tol ||b|| (tol=None: True, nothing was asked)
    passes: np.ndarray  # (B,) int: passes accepted for each system
    residual: np.ndarray  # (B,) ||b - A x|| / ||b|| of the answer (0 where b = 0)
    history: np.ndarray  # (B, K + 1), K the most passes a system of the call accepted: relative residual
    #                      after each accepted pass (column 0: at x0), NaN after a system's last
    model: str  # which model ran


class NotConvergedError(RuntimeError):
    """``solve(..., tol=..., strict=True)`` did not reach ``tol`` on every system; ``.result`` holds the
    :class:`SolveResult` (the best answers found)."""

    def __init__(self, message: str, result: SolveResult):
        super().__init__(message)
        self.result = result


DEFAULT_MAX_PASSES = 100

def memory_limit() -> int:
    """Bytes one ``solve`` call may hold for the model's arrays: :func:`reference.config.memory_budget` (the
    environment variable ``LINEAR_TRANSFORMER_MEMORY_LIMIT`` when set, else half of the physical memory), read at
    every call. A batch is split into chunks that fit (systems are independent: the answer does not depend on the
    split); a size at which one system does not fit is refused before anything is allocated."""
    return memory_budget()


def solve_bytes(cfg: ModelConfig, n: int, batch: int) -> int:
    """Bytes a chunk of ``batch`` systems of size ``n`` holds in ``solve``: the forward on both signs
    (``2 batch`` systems) and about six ``n x n`` matrices per system (the scaled ``A``, ``A / a`` twice for the
    two signs, the Cholesky check)."""
    return forward_bytes(cfg, n, 2 * batch) + 8 * 6 * batch * n * n


def chunk_size(cfg: ModelConfig, n: int, batch: int, label: str = "the model") -> int:
    """The most systems of size ``n`` (at most ``batch``) one chunk of ``solve`` may hold within
    :func:`memory_limit`; ``ValueError`` naming the sizes and the limit when not even one fits."""
    limit = memory_limit()
    one = solve_bytes(cfg, n, 1)
    if one > limit:
        raise ValueError(f"solve with {label} on one system of size N={n} needs about {one / 2**30:.1f} GiB, above "
                         f"the limit of {limit / 2**30:.3g} GiB ({MEMORY_LIMIT_HELP}): solve smaller systems, or "
                         "raise the limit if the memory is there")
    per = solve_bytes(cfg, n, 2) - one
    return int(max(1, min(batch, 1 + (limit - one) // max(per, 1))))


def _apply(M, owner, v) -> np.ndarray:
    """``M[owner[s]] v[s]`` for every row ``s`` of ``v`` (S, N), ``M`` (F, N, N) the distinct matrices: one matrix
    product when every system shares one matrix (the right-hand sides of one factorization)."""
    if len(M) == 1:
        return v @ M[0].T  # (S, N)
    return np.einsum("bij,bj->bi", M[owner], v)  # (S, N)


def _rel_residual(A, owner, b, x, b_norm):
    r = b - _apply(A, owner, x) if x.any() else b.copy()  # (B, N): x = 0 (the default start) needs no product
    r_norm = np.linalg.norm(r, axis=1)  # (B,)
    return r, r_norm / np.where(b_norm > 0, b_norm, 1.0)


def _exponents(M, axes) -> np.ndarray:
    """``e`` with ``max |M| = f 2^e``, ``f`` in ``[0.5, 1)``, over ``axes`` (0 where ``M`` is all zero)."""
    return np.frexp(np.max(np.abs(M), axis=axes))[1].astype(np.int64)


ROUNDING_FLOOR = 4.0
"""A residual within this many times ``N eps (a ||x|| + ||b||) / ||b||`` (the rounding of ``b - A x`` itself) is
already as small as float64 can show: a pass rejected there is not the model failing."""


class _Passes(NamedTuple):
    x: np.ndarray  # (B, N) at unit scale
    residual: np.ndarray  # (B,)
    passes: np.ndarray  # (B,)
    history: np.ndarray  # (B, K + 1)
    at_floor: np.ndarray  # (B,) the starting residual was already at rounding level
    cond: np.ndarray  # (B,) cond(A)
    floor: np.ndarray  # (B,) the rounding level of the answer's relative residual (ROUNDING_FLOOR)


def _odd_part_fn(forward_fn, resolved, factor, owner):
    """``r_hat (S, N) -> (f(A/a, r_hat) - f(A/a, -r_hat)) / 2`` for the systems ``owner`` of a chunk of ``factor``: the
    cached matrix of the model applied to ``r_hat`` (N^2 each), or, for a model that reads ``b`` before its last
    layer, the forward on both signs in one batch (every system, every pass: one shape, so a compiled forward is
    traced once)."""
    if factor.inverse is not None:
        return lambda r_hat: _apply(factor.inverse, owner, r_hat)
    A_hat = (factor.A / factor.a[:, None, None])[owner]  # (S, N, N): largest eigenvalue about 1, as in training
    A_both = np.concatenate([A_hat, A_hat])  # (2S, N, N): the model runs on r_hat and -r_hat in one batch

    def odd(r_hat):
        both = forward_fn(resolved.params, resolved.cfg, A_both, np.concatenate([r_hat, -r_hat]))
        both = np.asarray(both, dtype=np.float64)  # (2S, N): f(r_hat) and f(-r_hat)
        return 0.5 * (both[: len(r_hat)] - both[len(r_hat):])

    return odd


def _run_passes(odd_fn, rho_sqrt_n, factor, owner, b, x, tol, max_passes) -> _Passes:
    """The passes on one chunk of systems, each brought to unit scale (``max |A|``, ``max |b|`` in ``[0.5, 1)``:
    no norm below can overflow or underflow); system ``s`` has the matrix ``factor.A[owner[s]]``."""
    B, n = b.shape
    A = factor.A  # (F, N, N)
    a, cond = factor.a[owner], factor.cond[owner]  # (B,)
    b_norm = np.linalg.norm(b, axis=1)  # (B,)
    r, rel_res = _rel_residual(A, owner, b, x, b_norm)  # (B, N), (B,)
    at_floor = rel_res <= _rounding_level(a, x, b_norm)
    cap = min(max_passes, 8)  # buffers grow with the passes that run (max_passes may be huge)
    history = np.full((B, cap + 1), np.nan)
    history[:, 0] = rel_res
    passes = np.zeros(B, dtype=int)
    goal = 0.0 if tol is None else tol
    active = rel_res > goal  # (B,): b = 0 or an exact x0 needs no pass
    dirs = np.zeros((B, cap, n))  # accepted search directions d, scaled so that their images A d are orthonormal
    images = np.zeros((B, cap, n))  # their images A d
    rows = np.arange(B)
    for _ in range(max_passes):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        k = passes[idx]  # (b,): directions so far
        if k.max() >= cap:
            grow = min(cap, max_passes - cap)
            dirs, images = (np.concatenate([buf, np.zeros((B, grow, n))], axis=1) for buf in (dirs, images))
            history = np.concatenate([history, np.full((B, grow), np.nan)], axis=1)
            cap += grow
        # the model runs on the whole batch every pass (finished systems too, their rows unused).
        # It sees the residual with a canonical sign (its largest entry, the first on ties, positive): r and
        # -r give the model the very same input, so solve(A, -b) runs the arithmetic of solve(A, b) with
        # every sign flipped and is exactly its negative, whatever the kernels do at each batch position
        r_norm_all = np.linalg.norm(r, axis=1)  # (B,)
        sign = np.where(r[rows, np.argmax(np.abs(r), axis=1)] < 0, -1.0, 1.0)  # (B,)
        r_hat_all = r * (sign * rho_sqrt_n / np.where(r_norm_all > 0, r_norm_all, 1.0))[:, None]  # (B, N): rms rho
        r_norm = r_norm_all[idx]  # (b,) > 0 for an active system
        d = odd_fn(r_hat_all)[idx]  # (b, N): odd part, normalised scale
        d = d * (sign[idx] * r_norm / (rho_sqrt_n * a[idx]))[:, None]  # (b, N): the model's correction
        w = _apply(A, owner[idx], d)  # (b, N): its image A d
        w_norm0 = np.linalg.norm(w, axis=1)  # (b,)
        for _ in range(2):  # Gram-Schmidt of A d against the earlier images, twice (orthogonal to rounding)
            beta = np.einsum("bkn,bn->bk", images[idx], w)  # (b, cap): zero rows beyond k
            w = w - np.einsum("bkn,bk->bn", images[idx], beta)
            d = d - np.einsum("bkn,bk->bn", dirs[idx], beta)
        w_norm = np.linalg.norm(w, axis=1)  # (b,)
        fresh = np.isfinite(w_norm) & (w_norm > 1e-12 * w_norm0)  # not in the span of the earlier directions
        w_norm = np.where(fresh, w_norm, 1.0)
        w, d = w / w_norm[:, None], d / w_norm[:, None]
        alpha = np.einsum("bn,bn->b", w, r[idx])  # (b,): the step that minimises ||r - alpha A d||
        x_new = x[idx] + alpha[:, None] * d
        r_new, rel_res_new = _rel_residual(A, owner[idx], b[idx], x_new, b_norm[idx])
        # a pass that does not help is rejected
        better = fresh & np.isfinite(rel_res_new) & (rel_res_new < rel_res[idx])
        take = idx[better]
        x[take], r[take], rel_res[take] = x_new[better], r_new[better], rel_res_new[better]
        dirs[take, k[better]], images[take, k[better]] = d[better], w[better]
        passes[take] += 1
        history[take, passes[take]] = rel_res[take]
        active[idx[~better]] = False  # the same residual would give the same rejected pass again
        active[take] = rel_res[take] > goal
        if tol is None:
            break
    return _Passes(x, rel_res, passes, history[:, : passes.max() + 1], at_floor, cond, _rounding_level(a, x, b_norm))


def _rounding_level(a, x, b_norm) -> np.ndarray:
    """``ROUNDING_FLOOR N eps (a ||x|| + ||b||) / ||b||`` per system: the relative residual that rounding alone leaves
    in ``b - A x`` (``a`` about ``||A||``)."""
    n = x.shape[1]
    return ROUNDING_FLOOR * n * np.finfo(float).eps * (a * np.linalg.norm(x, axis=1) / np.where(b_norm > 0, b_norm, 1.0)
                                                       + 1.0)


def _model_kappa(resolved: ResolvedModel) -> float | None:
    """The largest condition number the model was trained (or built) for, if its checkpoint records one."""
    if not resolved.law_recorded:
        return None
    kappa = resolved.law["kappa"]
    return float(kappa[1] if isinstance(kappa, tuple) else kappa)


RESIDUAL_MARGIN = 5.0
"""A pass is suspect when it leaves more than this many times the residual its model's accuracy predicts
(:func:`reference.pretrained.recorded_accuracy`, the mean relative error on its training law). Measured on the
shipped models' own laws (200 fresh systems at each of up to 7 training sizes): the one-pass relative residual is
above 5 times the recorded accuracy for 0.25% of ``block-mixed``'s systems and for none of the other models',
and it follows the error off the law (``docs/conventions.md``, "Solving user systems")."""


def _warn_untrusted_pass(resolved: ResolvedModel, B: int, cond, rel_res, start, passes, at_floor, floor,
                         stacklevel: int) -> None:
    """The warning of a one-pass ``solve`` on the systems whose answer may be far from the solution. A system is
    flagged when its pass left a residual above what the model's accuracy predicts (``RESIDUAL_MARGIN`` times
    the recorded accuracy, times the starting residual, and above rounding), or when ``cond(A)`` is above the
    ``kappa`` the model was built for and the error bound ``cond(A) * ||b - A x|| / ||b||`` is above that
    residual too (a system outside the model's spectrum whose answer is provably accurate is not flagged). So a
    system without a warning either is like the model's training systems (``cond`` within its ``kappa`` and the
    residual within the margin) or has a relative error provably within the margin times the accuracy. Passes
    rejected outright (``passes == 0``) have their own warning; an ``x0`` already exact to rounding (``at_floor``)
    rests on no pass. ``stacklevel`` is counted from this function, so that the warning names the user's line."""
    kappa, acc = _model_kappa(resolved), resolved.accuracy
    ran = (passes > 0) & ~at_floor
    bound = cond * rel_res  # (B,): the relative error is at most this (||A^-1|| ||r|| / (||b|| / ||A||))
    none = np.zeros(B, dtype=bool)
    high = ran & (rel_res > np.maximum(RESIDUAL_MARGIN * acc * start, floor)) if acc is not None else none
    wide = ran & (cond > kappa * (1 + 1e-6)) if kappa is not None else none
    if acc is not None:
        wide &= bound > RESIDUAL_MARGIN * acc
    flagged = np.flatnonzero(high | wide)
    if not len(flagged):
        return
    why = [f"{np.sum(wide)} have a condition number above the {kappa:g} it was built for"] if wide.any() else []
    if high.any():
        why.append(f"{np.sum(high)} a residual above {RESIDUAL_MARGIN:g} times its recorded accuracy ({acc:.3g}, the "
                   "mean relative error of one pass on its training law)")
    s = flagged[0]
    warnings.warn(f"one pass of {resolved.label} may be far from the answer on {len(flagged)} of {B} system(s): "
                  f"{'; '.join(why)}. First: system {s}, condition number {cond[s]:.3g}, relative residual "
                  f"{rel_res[s]:.3g}, so its relative error is at most {bound[s]:.3g}. Give tol= to have solve check "
                  "the residual and add passes", UserWarning, stacklevel=stacklevel)


def _passes_limit(tol, max_passes) -> int:
    """``max_passes`` checked (default 1 without ``tol``, :data:`DEFAULT_MAX_PASSES` with it); ``tol`` checked."""
    if tol is not None and not (is_real(tol) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1) or None, got {tol!r}")
    if max_passes is None:
        max_passes = 1 if tol is None else DEFAULT_MAX_PASSES
    if not is_int(max_passes) or max_passes < 1:
        raise ValueError(f"max_passes must be an int >= 1, got {max_passes!r}")
    return int(max_passes)


def _resolve_early(A, model) -> ResolvedModel | None:
    """Before validating (a copy of ``A`` and its Cholesky factorisation): the model, and a size it cannot hold in
    memory refused at once."""
    shape = np.shape(A)
    if len(shape) in (2, 3) and shape[-1] == shape[-2] and shape[-1] > 0:
        resolved = resolve_model(model, shape[-1])
        chunk_size(resolved.cfg, shape[-1], 1, resolved.label)
        return resolved
    return None


def solve_with(forward_fn, A, b, model="auto", x0=None, *, tol=None, max_passes=None, return_info=False,
               strict=False, operator_fn=None) -> np.ndarray | SolveResult:
    """The body of both ``solve`` functions: validate, resolve the model, factorize ``A`` (:func:`factorize_with`:
    unit scale, spectrum, and the model's matrix where ``operator_fn(params, cfg, A)`` gives one), then run passes
    on the residuals (module docstring), each system until it meets ``tol``, stops improving or reaches
    ``max_passes``, in chunks that fit :func:`memory_limit`, scale the answers back, and warn where an answer may
    be far from the solution. ``b`` with as many axes as ``A`` holds columns: right-hand sides sharing one
    factorization (``Factorization.solve``)."""
    max_passes = _passes_limit(tol, max_passes)
    resolved = _resolve_early(A, model)
    columns = np.ndim(b) == np.ndim(A) and np.ndim(A) in (2, 3)
    if columns:  # A (N, N) with b (N, k), or A (B, N, N) with b (B, N, k)
        A, _, _, single = prepare_inputs(A, np.zeros(np.shape(A)[:-1]))
    else:
        A, b, x0, single = prepare_inputs(A, b, x0)
    n = A.shape[-1]
    resolved = resolve_model(model, n) if resolved is None else resolved
    factorization = _factorize(forward_fn, operator_fn, A, resolved, single)
    kwargs = dict(tol=tol, max_passes=max_passes, return_info=return_info, strict=strict)
    if columns:
        return factorization._solve(b, x0, stacklevel=4, **kwargs)
    shape = (lambda result: _single(result)) if single else (lambda result: result)
    return factorization._run(b, x0, np.arange(len(b)), shape, stacklevel=4, **kwargs)


def factorize_with(forward_fn, operator_fn, A, model="auto") -> Factorization:
    """The body of both ``factorize`` functions: validate ``A`` (one matrix or a batch, SPD), resolve the model, and
    compute what every right-hand side shares (:class:`Factorization`)."""
    resolved = _resolve_early(A, model)
    A, _, _, single = prepare_inputs(A, np.zeros(np.shape(A)[:-1]))
    resolved = resolve_model(model, A.shape[-1]) if resolved is None else resolved
    factorization = _factorize(forward_fn, operator_fn, A, resolved, single)
    if factorization.reason is not None:
        warnings.warn(f"factorize: {factorization.reason}", UserWarning, stacklevel=3)
    return factorization


def _factorize(forward_fn, operator_fn, A, resolved: ResolvedModel, single: bool) -> Factorization:
    """:class:`Factorization` of the validated batch ``A`` (F, N, N): the power of two that brings each matrix to
    unit scale, its spectrum (largest eigenvalue and condition number), and the model's matrix of ``A / a`` where
    the model has one, in chunks that fit :func:`memory_limit`."""
    F, n, _ = A.shape
    cfg = resolved.cfg
    layer = first_layer_reading_b(resolved.params, cfg)
    reason = None
    if operator_fn is None:
        reason = "this solver has no matrix form of the model; every pass runs the model"
    elif cfg.parametrization != "block" or layer is not None:
        where = f"layer {layer} of {cfg.n_layers} reads b" if layer is not None else "it is a full-encoding model"
        reason = (f"nothing of {resolved.label} can be cached ({where}: its answer is not a matrix times b); "
                  ".solve runs the whole model on both signs at every pass (the scale and spectrum of A are cached)")
    ea = _exponents(A, (1, 2))  # (F,): A = 2^ea A', exact
    As = np.ldexp(A, -ea[:, None, None])  # (F, N, N), max |A'| in [0.5, 1)
    a, cond = np.zeros(F), np.zeros(F)
    inverse = None if reason is not None else np.zeros((F, n, n))
    chunk = chunk_size(cfg, n, F, resolved.label)
    for lo in range(0, F, chunk):
        s = slice(lo, lo + chunk)
        a[s], cond[s] = spectrum_estimate(As[s])
        if inverse is not None:  # the model's odd part in r_hat is inverse @ r_hat, for A / a
            inverse[s] = operator_fn(resolved.params, cfg, As[s] / a[s, None, None])
    return Factorization(forward_fn, resolved, _Factor(As, ea, a, cond, inverse), single, reason)


class _Factor(NamedTuple):
    A: np.ndarray  # (F, N, N) the matrices at unit scale, max |A| in [0.5, 1)
    ea: np.ndarray  # (F,) their powers of two: the user's A is 2^ea A
    a: np.ndarray  # (F,) the scale solve divides each by (about lambda_max)
    cond: np.ndarray  # (F,) cond(A)
    inverse: np.ndarray | None  # (F, N, N) the model's odd part as a matrix of r_hat, for A / a; None: not cached


def _check_rhs(name, v, shapes, expected) -> np.ndarray:
    """``v`` as float64 if its shape is one of ``shapes`` and it holds finite real numbers; else a ``ValueError``
    naming ``name`` and the ``expected`` shapes."""
    v = np.asarray(v)
    if v.shape not in shapes:
        raise ValueError(f"{name} must have shape {expected}, got {v.shape}")
    if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise ValueError(f"{name} must hold real numbers, got dtype {v.dtype}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or Inf")
    return v.astype(np.float64)


class Factorization:
    """What :func:`factorize` returns: the part of ``solve(A, b)`` that depends on ``A`` alone, computed once, and
    :meth:`solve` for any number of right-hand sides (SciPy's ``cho_factor`` / ``cho_solve``).

    Cached: ``A`` validated (symmetric, positive definite), its power-of-two unit scale, its largest eigenvalue
    and condition number, and -- for a model that does not read ``b`` before its last layer (``b_last_layer``,
    the Newton-Schulz construction: :func:`reference.model.first_layer_reading_b`) -- the model itself as a
    matrix: its answer is ``M b`` (:attr:`inverse`), so every pass of every right-hand side costs a few ``N^2``
    products instead of two runs of the model. For any other model :attr:`reason` says why nothing of the model is
    cached (``factorize`` warns it), and :meth:`solve` runs the model at every pass.
    """

    def __init__(self, forward_fn, resolved: ResolvedModel, factor: _Factor, single: bool, reason: str | None):
        self._forward_fn, self._resolved, self._factor, self._single = forward_fn, resolved, factor, single
        self.reason = reason  # None when the model is cached as a matrix, else why it is not
        self.model = resolved.label  # which model runs

    @property
    def cached(self) -> bool:
        """The model is cached as a matrix (:attr:`inverse`): a pass costs ``O(N^2)``."""
        return self._factor.inverse is not None

    @property
    def inverse(self) -> np.ndarray | None:
        """The model's approximate inverse of ``A`` at the user's scale, ``(N, N)`` (or ``(B, N, N)``): the odd part
        in ``b`` of the model run on ``A`` is ``inverse @ b``, and one pass of ``solve`` from ``x0 = 0`` is
        ``alpha * inverse @ b`` with ``alpha`` the step length that minimises ``||b - A x||``. Its eigenvalues
        against those of ``A`` are the model's spectral view. ``None`` where the model reads ``b`` before its last
        layer (:attr:`reason`)."""
        f = self._factor
        if f.inverse is None:
            return None
        inv = np.ldexp(f.inverse / f.a[:, None, None], -f.ea[:, None, None])  # (F, N, N): 2^-ea M / a
        return inv[0] if self._single else inv

    def solve(self, b, x0=None, *, tol=None, max_passes=None, return_info=False,
              strict=False) -> np.ndarray | SolveResult:
        """``solve(A, b, model, x0, tol=..., ...)`` for the factorized ``A``: the same keywords, answers, warnings and
        errors. ``b``: ``(N,)`` or ``(N, k)`` (``k`` right-hand sides as columns) for one matrix, ``(B, N)`` or
        ``(B, N, k)`` for a batch; ``x0`` shaped like ``b``; ``x`` comes back shaped like ``b`` (a
        :class:`SolveResult` with one entry per right-hand side, ``history`` last)."""
        return self._solve(b, x0, tol=tol, max_passes=_passes_limit(tol, max_passes), return_info=return_info,
                           strict=strict, stacklevel=3)

    def _solve(self, b, x0, *, tol, max_passes, return_info, strict, stacklevel):
        """Validate ``b``/``x0``, lay their right-hand sides out as systems (each with its matrix), run them."""
        F, n, _ = self._factor.A.shape
        lead = () if self._single else (F,)
        names = "(N,) = {} or (N, k)" if self._single else "(B, N) = {} or (B, N, k)"
        expected = names.format(lead + (n,)) + f" to match A {lead + (n, n)}"
        b = _check_rhs("b", b, (lead + (n,), lead + (n, np.shape(b)[-1] if np.ndim(b) else 0)), expected)
        x0 = np.zeros_like(b) if x0 is None else _check_rhs("x0", x0, (b.shape,), f"{b.shape} (that of b)")
        k = b.shape[-1] if b.ndim == len(lead) + 2 else None  # columns, or one right-hand side per matrix
        rows = (lambda v: np.moveaxis(v, -1, -2).reshape(-1, n)) if k is not None else (lambda v: v.reshape(-1, n))
        owner = np.repeat(np.arange(F), 1 if k is None else k)  # (S,): the matrix of each system

        def shape(result: SolveResult) -> SolveResult:  # one entry per right-hand side, shaped like b
            x = result.x.reshape(lead + (-1, n) if k is not None else lead + (n,))
            x = np.moveaxis(x, -1, -2) if k is not None else x
            if k is not None:
                per = lambda v: v.reshape(lead + (k,) + v.shape[1:])  # noqa: E731
            else:
                per = (lambda v: v.reshape(lead + v.shape[1:])) if lead else (lambda v: v[0])
            return SolveResult(x, *(per(v) for v in result[1:5]), result.model)

        return self._run(rows(b), rows(x0), owner, shape, tol=tol, max_passes=max_passes, return_info=return_info,
                         strict=strict, stacklevel=stacklevel + 1)

    def _run(self, b, x0, owner, shape, *, tol, max_passes, return_info, strict, stacklevel):
        """Passes on the systems ``b``, ``x0`` (S, N), system ``s`` with matrix ``owner[s]``, in chunks that fit
        :func:`memory_limit`; then the answers at the user's scale, the warnings, and ``shape`` of the result."""
        resolved, f = self._resolved, self._factor
        S, n = b.shape
        chunk = chunk_size(resolved.cfg, n, S, resolved.label)
        eb = _exponents(b, 1)  # (S,): b = 2^eb b', x = 2^(eb - ea) x'
        e = eb - f.ea[owner]
        parts = []
        for lo in range(0, S, chunk):
            s = slice(lo, lo + chunk)
            bs = np.ldexp(b[s], -eb[s, None])
            with np.errstate(over="ignore"):
                xs = np.ldexp(x0[s], -e[s, None])
            start = np.linalg.norm(bs - _apply(f.A, owner[s], np.where(np.isfinite(xs), xs, 0.0))
                                   if xs.any() else bs, axis=1)  # (S,): ||b - A x0||, no product for x0 = 0
            far = ~np.isfinite(xs).all(axis=1) | ~np.isfinite(start)
            if far.any():
                raise ValueError(f"x0 of system {lo + np.flatnonzero(far)[0]} is so far from the solution that its "
                                 "residual b - A x0 overflows float64; start from zeros (x0=None)")
            odd_fn = _odd_part_fn(self._forward_fn, resolved, f, owner[s])
            parts.append(_run_passes(odd_fn, resolved.rho * math.sqrt(n), f, owner[s], bs, xs, tol, max_passes))
        width = max(p.history.shape[1] for p in parts)
        history = np.concatenate([np.pad(p.history, ((0, 0), (0, width - p.history.shape[1])),
                                         constant_values=np.nan) for p in parts])
        xs, rel_res, passes, at_floor, cond, floor = (np.concatenate([getattr(p, name) for p in parts])
                                                      for name in ("x", "residual", "passes", "at_floor", "cond",
                                                                   "floor"))
        converged = np.ones(S, dtype=bool) if tol is None else rel_res <= tol
        result = SolveResult(_to_user_scale(xs, e), converged, passes, rel_res, history, resolved.label)
        _warn_passes(resolved, result, at_floor, cond, floor, tol, max_passes, strict, shape, stacklevel + 1)
        return shape(result) if return_info else shape(result).x


def _warn_passes(resolved, result, at_floor, cond, floor, tol, max_passes, strict, shape, stacklevel) -> None:
    """Without ``tol``, say where the one pass cannot be trusted; with it, where ``tol`` was not met (``strict``:
    raise :class:`NotConvergedError` carrying ``shape(result)``). ``stacklevel`` is counted from this function:
    the warnings name the user's line."""
    _, converged, passes, rel_res, _, _ = result
    B = len(passes)
    if tol is None:  # one pass asked, no accuracy checked: say where it cannot be trusted
        rejected = np.flatnonzero((passes == 0) & (rel_res > 0) & ~at_floor)
        if len(rejected):
            warnings.warn(f"the pass of {resolved.label} did not reduce the residual of {len(rejected)} of {B} "
                          f"system(s) (first: system {rejected[0]}): their answer is x0 (relative residual "
                          f"{rel_res[rejected[0]]:.3g}); the model cannot handle these systems", UserWarning,
                          stacklevel=stacklevel)
        _warn_untrusted_pass(resolved, B, cond, rel_res, result.history[:, 0], passes, at_floor, floor, stacklevel + 1)
    if not converged.all():
        bad = np.flatnonzero(~converged)
        msg = (f"solve did not reach tol={tol:g} on {len(bad)} of {B} system(s) (first: system {bad[0]}, relative "
               f"residual {rel_res[bad[0]]:.3g} after {passes[bad[0]]} pass(es); worst {rel_res[bad].max():.3g}); "
               f"{np.sum(passes[bad] == max_passes)} reached max_passes={max_passes}, "
               f"{np.sum(passes[bad] < max_passes)} stopped when a pass no longer reduced the residual; model: "
               f"{resolved.label}. The best answer found is returned.")
        if strict:
            raise NotConvergedError(msg, shape(result))
        warnings.warn(msg, UserWarning, stacklevel=stacklevel)


def _to_user_scale(xs, e) -> np.ndarray:
    """``2^e xs`` per system; ``ValueError`` where the answer is not representable in float64: its largest
    entry would overflow, or fall below the smallest normal number (where precision is lost)."""
    big = np.max(np.abs(xs), axis=1)
    top = np.frexp(big)[1] + e  # exponent of the largest entry of the answer
    info = np.finfo(float)
    bad = np.flatnonzero((big > 0) & ((top > info.maxexp) | (top <= info.minexp)))
    if len(bad):
        s = bad[0]
        magnitude = float(np.log10(big[s]) + e[s] * math.log10(2.0))
        raise ValueError(f"the solution of system {s} is not representable in float64: its largest entry would be "
                         f"about 1e{magnitude:.0f} (float64 holds normal numbers from 2.2e-308 to 1.8e308); "
                         f"{len(bad)} of {len(xs)} system(s) are so. Rescale A or b")
    return np.ldexp(xs, e[:, None])


def _single(result: SolveResult) -> SolveResult:
    return SolveResult(*(v[0] for v in result[:5]), result.model)


def solve(A, b, model="auto", x0=None, *, tol=None, max_passes=None, return_info=False,
          strict=False) -> np.ndarray | SolveResult:
    """Solve ``A x = b`` (``A`` symmetric positive definite) with a linear Transformer, to ``tol`` if asked.

    Args:
        A (array_like): one matrix ``(N, N)`` or a batch ``(B, N, N)``, of any scale. Every system of a
            call has the same size ``N`` (for mixed sizes, pad and call :func:`reference.forward` with a mask).
        b (array_like): ``(N,)`` or ``(B, N)``, matching ``A``, any scale and direction; or ``(N, k)`` (``(B, N, k)``
            for a batch): ``k`` right-hand sides as columns, sharing one factorization of ``A`` (:func:`factorize`).
        model (str | os.PathLike | tuple): ``"auto"`` (``newton-schulz``, the hand-set Newton-Schulz model:
            one pass has error at most ``2e-17`` times the initial one for ``cond(A) <= 1e4``, any ``N``; without
            it in the install, the trained ``block-mixed`` for ``N <= 9``, ``block-finetune`` for 10 to 20,
            ``broad`` above: :data:`AUTO_MODELS`), a shipped name (``"full-n9"``, ``"block-n9"``,
            ``"block-mixed"``, ``"block-finetune"``, ``"broad"``, ``"block-mixed-20"``, ``"block-ns-8"``,
            ``"newton-schulz"``), a checkpoint path, or a ``(params, cfg)`` tuple.
        x0 (array_like | None): initial guess, shaped like ``b`` (default zeros): the passes correct its
            residual, so the exact solution is returned unchanged and a good guess is improved.
        tol (float | None): ``None`` (default): one pass, the model's approximation. A number in (0, 1):
            passes until the relative residual ``||b - A x|| / ||b||`` is at most ``tol``.
        max_passes (int | None): at most this many passes (default 1 without ``tol``, 100 with it); the
            buffers grow with the passes that run, so a huge value costs nothing until it is used.
        return_info (bool): return a :class:`SolveResult` instead of ``x``.
        strict (bool): raise :class:`NotConvergedError` instead of warning when ``tol`` is not met.

    Returns:
        ``x`` shaped like ``b`` (float64), of all the iterates (``x0`` included) the one with the smallest
        residual; or a :class:`SolveResult` when ``return_info=True``.

    Raises:
        ValueError: naming the problem: ``A`` not square, ``b``/``x0`` of the wrong shape, NaN/Inf,
            ``A`` not symmetric or not positive definite (the first such system is named), an
            unknown model name, a missing or unreadable checkpoint, weights not shipped in this
            install, a full-encoding model given another size than its own, a bad ``tol``/``max_passes``,
            complex ``x0`` or parameters, an answer float64 cannot hold, an ``x0`` whose residual
            overflows, a size ``N`` at which one system does not fit :func:`memory_limit`.
        NotConvergedError: ``strict=True`` and some system did not reach ``tol``.

    Warns:
        UserWarning: ``tol`` was not reached on some system (how many, the worst residual, why); without
            ``tol``, a pass that did not reduce the residual (unless ``x0`` was already exact to rounding), or
            one that may be far from the answer: a relative residual above ``RESIDUAL_MARGIN`` times what the
            model's accuracy predicts (:func:`~reference.pretrained.recorded_accuracy`, its final table), or a
            ``cond(A)`` above the largest its checkpoint records (``kappa``/``kappa_max`` of its
            ``train_config``) with an error bound ``cond(A) ||b - A x|| / ||b||`` above that residual. The size
            ``N`` alone is not warned about: the residual says whether the model still works there.

    Limits: each pass reduces the residual by a factor that depends on the model and on ``cond(A)``:
    about 10x per 4-layer pass at ``cond(A) = 10``, far less at ``1000``, where ``tol`` may not be
    reached (then the warning says so). See the results page.
    """
    return solve_with(forward, A, b, model, x0, tol=tol, max_passes=max_passes, return_info=return_info,
                      strict=strict, operator_fn=approximate_inverse)


def factorize(A, model="auto") -> Factorization:
    """Factor ``A`` once for :func:`solve`: ``factorize(A, model).solve(b, x0, tol=...)`` equals
    ``solve(A, b, model, x0, tol=...)`` (to rounding) for any ``b``, as SciPy's ``cho_factor`` / ``cho_solve``.

    Args:
        A (array_like): one SPD matrix ``(N, N)`` or a batch ``(B, N, N)``, of any scale.
        model (str | os.PathLike | tuple): as for :func:`solve`.

    Returns:
        A :class:`Factorization`. For a model that does not read ``b`` before its last layer (``b_last_layer``,
        the Newton-Schulz construction: ``newton-schulz`` and ``learned-*``), its first ``L - 1`` layers run
        here, once, and the model becomes the matrix :attr:`Factorization.inverse`: every later pass costs
        ``O(N^2)``. For any other model nothing of the model can be cached: a ``UserWarning`` says so and
        :meth:`Factorization.solve` runs the model at every pass (the validation, scale and spectrum of ``A``
        are still computed once).

    Raises:
        ValueError: as :func:`solve` for ``A`` and ``model``.
    """
    return factorize_with(forward, approximate_inverse, A, model)
