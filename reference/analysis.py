"""What kind of algorithm did the Transformer learn? Krylov-space yardsticks and a per-layer probe.

After ``k`` iterations from ``x0`` every classical Krylov method (CG, Chebyshev, Richardson,
steepest descent) returns a point of ``x0 + K_k(A, r0)``, ``K_k = span{r0, A r0, ..., A^{k-1} r0}``:
``x0`` plus a polynomial of degree ``k - 1`` in ``A`` applied to the residual ``r0 = b - A x0``.
CG picks the best such point in the ``A``-norm; :func:`krylov_best_errors` gives the best one in
the 2-norm, the floor for *any* polynomial method of that degree. Comparing the model's error
after layer ``l`` with that floor tells whether the layer behaves like one polynomial step or like
several: :func:`effective_krylov_dimension` turns the comparison into a number of Krylov steps.

The per-layer probe (:func:`layer_probe`) reads the model's estimate after every layer and sets it
beside the iterates of four algorithms on the same systems: the Newton-Schulz iteration of
``docs/concepts.md`` section 9 (:func:`newton_schulz_iterates`, a plain matrix iteration), CG,
Chebyshev and the best 2-norm point of each Krylov dimension (:func:`krylov_best_points`). Besides
the errors it gives, after Fu, Chen, Jia and Sharan ("Transformers learn higher-order optimization
methods for in-context learning"), the *similarity of errors* (:func:`error_similarity`): for each
layer ``l`` and each step ``k`` the cosine of the two error vectors, averaged over the systems, and
the step that matches each layer best. :func:`construction_alignment` compares a block model's
scalars with the construction's, up to the symmetries of the parametrization.

Glossary of dimensions:
    B systems, M padded size, N size of one system, d Krylov dimension, L layers,
    k steps of an algorithm (0..K), G = K_id + 2 block groups, H heads
"""

from __future__ import annotations

import itertools

import numpy as np

from reference.baselines import chebyshev, conjugate_gradient
from reference.config import ModelConfig, is_int, is_real
from reference.constructions import newton_schulz_params, newton_schulz_schedule
from reference.data import check_systems, haar_q, sample_systems
from reference.layers import attention_forward, block_expand_forward, coordinate_mask, encode_forward
from reference.model import check_params, forward, forward_layers


def krylov_basis(A, r0, mask, d_max: int) -> np.ndarray:
    """Orthonormal basis ``V`` (B, d_max, M) of ``K_d(A, r0)`` for ``d = 1..d_max`` (Lanczos-type
    Arnoldi with two passes of full re-orthogonalisation). Once a system's space is exhausted
    (at most ``N`` dimensions) its further basis vectors are zero."""
    B, M = r0.shape
    V = np.zeros((B, d_max, M))
    w = r0.copy()  # (B, M)
    for k in range(d_max):
        before = np.linalg.norm(w, axis=1)  # (B,): the breakdown test is relative to the new vector itself
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            w -= np.einsum("bk,bkm->bm", np.einsum("bkm,bm->bk", V[:, :k], w), V[:, :k])
        nrm = np.linalg.norm(w, axis=1)  # (B,)
        alive = (nrm > 1e-10 * before) & (before > 0)  # space not yet exhausted (scale-invariant test)
        V[:, k] = np.where(alive[:, None], w / np.where(alive, nrm, 1.0)[:, None], 0.0)
        w = np.einsum("bij,bj->bi", A, V[:, k]) * mask  # (B, M)
    return V


def krylov_best_errors(A, b, x, mask=None, x0=None, d_max: int | None = None) -> np.ndarray:
    """Per-system MSE ``(1/N)||x - x_d||^2`` of the best 2-norm approximation ``x_d`` of ``x`` in
    ``x0 + K_d(A, b - A x0)``, for ``d = 0..d_max``: (B, d_max + 1). Column 0 is ``x0`` itself."""
    A, b, mask, x0, x = check_systems(A, b, mask=mask, x0=x0, x=x)
    d_max = A.shape[1] if d_max is None else d_max
    r0 = (b - np.einsum("bij,bj->bi", A, x0)) * mask  # (B, M)
    V = krylov_basis(A, r0, mask, d_max)  # (B, d, M)
    e0 = x - x0  # (B, M)
    coef = np.einsum("bkm,bm->bk", V, e0)  # (B, d): components of the error along the basis
    n_s = mask.sum(axis=1)  # (B,)
    # ||e0 - V_d V_d^T e0||^2, from the residual vectors themselves (subtracting the squared
    # components instead would leave a floor of eps * ||e0||^2 once the space is exhausted)
    resid = np.cumsum(coef[:, :, None] * V, axis=1)  # (B, d, M): V_d V_d^T e0 for d = 1..
    remaining = np.concatenate([(e0**2).sum(axis=1)[:, None], ((e0[:, None] - resid) ** 2).sum(axis=2)], axis=1)
    return remaining / n_s[:, None]  # (B, d+1)


def effective_krylov_dimension(model_mse: float, best_mse_by_d: np.ndarray) -> float:
    """Smallest (log-linearly interpolated) Krylov dimension ``d`` whose best 2-norm error reaches
    ``model_mse``; ``inf`` if no ``d`` does. ``best_mse_by_d`` is the mean over systems, ``d = 0..``."""
    curve = np.asarray(best_mse_by_d, dtype=np.float64)
    if model_mse >= curve[0]:
        return 0.0
    below = np.flatnonzero(curve <= model_mse)
    if below.size == 0:
        return float("inf")
    d = int(below[0])
    hi, lo = np.log(curve[d - 1]), np.log(max(curve[d], 1e-300))
    frac = (hi - np.log(max(model_mse, 1e-300))) / (hi - lo) if hi > lo else 1.0  # model_mse = 0: d
    return float(d - 1 + frac)


# ----------------------------------------------------------------------------------------------
# the algorithms' iterates


def krylov_best_points(A, b, x, mask=None, x0=None, d_max: int | None = None) -> np.ndarray:
    """The best 2-norm approximation of ``x`` in ``x0 + K_d(A, b - A x0)`` for ``d = 0..d_max``:
    (B, d_max + 1, M). It is ``x_d = x0 + V_d V_d^T (x - x0)`` with ``V_d`` an orthonormal basis of
    ``K_d`` (:func:`krylov_basis`): the projection of the error onto the space. It uses the solution
    ``x``, so it is a yardstick, not a method; its errors are :func:`krylov_best_errors`."""
    A, b, mask, x0, x = check_systems(A, b, mask=mask, x0=x0, x=x)
    d_max = A.shape[1] if d_max is None else _check_steps(d_max, "d_max")
    r0 = (b - np.einsum("bij,bj->bi", A, x0)) * mask  # (B, M)
    V = krylov_basis(A, r0, mask, d_max)  # (B, d, M)
    coef = np.einsum("bkm,bm->bk", V, x - x0)  # (B, d)
    steps = np.cumsum(coef[:, :, None] * V, axis=1)  # (B, d, M): V_d V_d^T (x - x0) for d = 1..
    return np.concatenate([x0[:, None], x0[:, None] + steps], axis=1)  # (B, d+1, M)


def newton_schulz_iterates(A, b, mask=None, x0=None, n_steps: int = 4, kappa: float = 10.0,
                           upper: float = 1.0) -> np.ndarray:
    """The Newton-Schulz iteration of :func:`reference.constructions.newton_schulz_schedule` run as a
    plain matrix iteration (no model), read out after every step: (B, n_steps + 1, M).

    With ``X_0 = I`` (on each system's real coordinates) and the schedule's ``(gamma_l, beta_l)``,

        X_{l+1} = gamma_l X_l + beta_l X_l A X_l,      iterate k = x0 - X_{k-1} (A x0 - b)  (k >= 1),

    and iterate 0 is ``x0``. Iterate ``k >= 2`` is the answer of the ``k``-layer construction
    :func:`reference.constructions.newton_schulz_params` (its first ``k - 1`` layers build ``X_{k-1}``,
    its last applies it to the residual); iterate 1 is one Richardson step of length 1 (the 1-layer
    construction takes the best step ``2 / (upper + 1/kappa)`` instead). The error of iterate ``k`` is
    ``(I - X_{k-1} A)(x0 - x)``, at most ``newton_schulz_schedule(k, kappa, upper)[1][-1]`` times
    ``||x0 - x||`` for a spectrum in ``[1/kappa, upper]``.
    """
    A, b, mask, x0, _ = check_systems(A, b, mask=mask, x0=x0)
    n_steps = _check_steps(n_steps, "n_steps")
    coefficients = newton_schulz_schedule(n_steps, kappa, upper)[0] if n_steps > 1 else []
    r0 = (np.einsum("bij,bj->bi", A, x0) - b) * mask  # (B, M): A x0 - b
    X = np.eye(A.shape[1])[None] * mask[:, :, None]  # (B, M, M): X_0 = I on real coordinates
    iterates = [x0.copy()]
    for k in range(n_steps):
        iterates.append(x0 - np.einsum("bij,bj->bi", X, r0))  # (B, M): x0 - X_k (A x0 - b)
        if k < len(coefficients):
            gamma, beta = coefficients[k]
            X = gamma * X + beta * X @ A @ X  # (B, M, M)
    return np.stack(iterates, axis=1)  # (B, n_steps + 1, M)


def _check_steps(n, name: str) -> int:
    if not is_int(n) or n < 0:
        raise ValueError(f"{name} must be an int >= 0, got {n!r}")
    return int(n)


# ----------------------------------------------------------------------------------------------
# the model's estimate after each layer


READOUTS = ("query", "lens")
"""How :func:`layer_probe` reads a model's estimate after layer ``l``: ``"query"``, the query token's
``x``-slot (:func:`reference.model.forward_layers`); ``"lens"``, the model's *last* layer applied to the
tokens after layer ``l`` (:func:`lens_layers`)."""


def lens_layers(params, cfg: ModelConfig, A, b, mask=None, x0=None) -> np.ndarray:
    """The model's last layer applied to the tokens after each earlier layer: (B, L+1, M).

    Entry 0 is ``x0``; entry ``k`` (``1 <= k <= L``) is the answer of the ``k``-layer model made of
    layers ``0..k-2`` and the last layer ``L-1`` (the layers in between skipped), read from the query's
    ``x``-slot; entry ``L`` is the model's own answer. A model whose last layer reads out a quantity
    that the earlier layers refine (the Newton-Schulz construction keeps ``X_l`` in the equation tokens
    and its query's ``x``-slot moves only in the last layer) shows that refinement here, where the
    query's ``x``-slot (:func:`reference.model.forward_layers`) stays at ``x0``. For the construction,
    entry ``k`` is :func:`newton_schulz_iterates`' iterate ``k`` (``k >= 2``).
    """
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    params = check_params(params, cfg)
    A, b, mask, x0, _ = check_systems(A, b, mask=mask, x0=x0, n_fixed=cfg.n if cfg.parametrization == "full" else None)
    B, M, _ = A.shape
    scale = 1.0 / mask.sum(axis=1) if cfg.attention_norm == "n" else np.ones(B)  # (B,)
    colmask = coordinate_mask(mask, cfg.n_groups) if cfg.parametrization == "block" \
        else np.ones((B, cfg.token_width(M)))  # (B, D)

    def apply(layer, Z):  # one layer, as reference.model.model_forward's dense path
        P, Q = params[f"layers.{layer}.P"], params[f"layers.{layer}.Q"]
        if cfg.parametrization == "block":
            P, Q = block_expand_forward(P, M)[0], block_expand_forward(Q, M)[0]  # (H, D, D)
        return attention_forward(Z, P, Q, scale, colmask)[0]  # (B, T, D)

    Z, _ = encode_forward(A, b, x0, mask, cfg, params.get("embedding"))  # (B, T, D)
    last = cfg.n_layers - 1
    out = [x0.copy()]
    for layer in range(last):
        out.append(apply(last, Z)[:, M, :M])  # (B, M): layers 0..layer-1, then the last one
        Z = apply(layer, Z)
    out.append(apply(last, Z)[:, M, :M])  # the model's answer
    return np.stack(out, axis=1)  # (B, L+1, M)


# ----------------------------------------------------------------------------------------------
# similarity of errors


def error_similarity(E, F, mask=None) -> np.ndarray:
    """Cosine similarity of error vectors, averaged over systems: (L+1, K+1).

    ``E`` (B, L+1, M) and ``F`` (B, K+1, M) are errors ``x_hat - x`` of two sequences of estimates of
    the same ``B`` systems (a model's layers, an algorithm's steps);

        S[l, k] = mean_s  <E[s, l], F[s, k]> / (||E[s, l]|| ||F[s, k]||)

    over each system's real coordinates (Fu et al.'s similarity of errors). ``S[l, k] = 1`` when the two
    errors point the same way (the same estimate, or the same error at another scale), 0 when they are
    orthogonal; a zero error has similarity 1 with another zero error and 0 with anything else.
    """
    E = np.asarray(E, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    if E.ndim != 3 or F.ndim != 3 or E.shape[0] != F.shape[0] or E.shape[2] != F.shape[2]:
        raise ValueError(f"E and F must be (B, L+1, M) and (B, K+1, M) with the same B and M, "
                         f"got {E.shape} and {F.shape}")
    if not (np.all(np.isfinite(E)) and np.all(np.isfinite(F))):
        raise ValueError("E and F must be finite")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (E.shape[0], E.shape[2]):
            raise ValueError(f"mask must have shape (B, M) = {(E.shape[0], E.shape[2])}, got {mask.shape}")
        E, F = E * mask[:, None], F * mask[:, None]
    # scale first, then normalise: no overflow or underflow in the norms at any error size
    E, F = E / _max_abs(E), F / _max_abs(F)
    nE, nF = np.linalg.norm(E, axis=2), np.linalg.norm(F, axis=2)  # (B, L+1), (B, K+1)
    U = E / np.where(nE > 0, nE, 1.0)[:, :, None]  # (B, L+1, M) unit vectors (or 0)
    V = F / np.where(nF > 0, nF, 1.0)[:, :, None]  # (B, K+1, M)
    cos = np.einsum("blm,bkm->blk", U, V)  # (B, L+1, K+1)
    both_zero = (nE == 0)[:, :, None] & (nF == 0)[:, None, :]  # (B, L+1, K+1)
    cos = np.where(both_zero, 1.0, np.clip(cos, -1.0, 1.0))
    return cos.mean(axis=0)  # (L+1, K+1)


def _max_abs(E):
    """Largest ``|entry|`` of each vector ``E[s, l]`` (1 where it is 0): (B, L+1, 1)."""
    m = np.abs(E).max(axis=2, keepdims=True)  # (B, L+1, 1)
    return np.where(m > 0, m, 1.0)


def match_iterates(model, algorithms: dict, x, mask=None) -> dict:
    """Each layer of ``model`` (B, L+1, M) against each step of every algorithm ``name -> (B, K+1, M)``,
    on the systems with solutions ``x`` (B, M).

    Returns ``{"model_mse": (L+1,), "methods": {name: {...}}}`` with, per algorithm:

    * ``mse`` (K+1,): the mean over systems of ``(1/N)||x_k - x||^2``;
    * ``similarity`` (L+1, K+1): :func:`error_similarity` of the model's and the algorithm's errors;
    * ``best_step`` (L+1,): the step ``k`` whose error points most nearly like layer ``l``'s
      (the first one at a tie), and ``best_similarity`` (L+1,) its similarity;
    * ``equivalent_step`` (L+1,): the (log-linearly interpolated) number of steps the algorithm needs
      to reach the model's mean MSE after layer ``l`` (:func:`effective_krylov_dimension` on its
      curve; ``inf`` if it never does within its ``K`` steps).
    """
    model = np.asarray(model, dtype=np.float64)
    if model.ndim != 3:
        raise ValueError(f"model iterates must be (B, L+1, M), got shape {model.shape}")
    B, _, M = model.shape
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (B, M):
        raise ValueError(f"x must have shape (B, M) = {(B, M)}, got {x.shape}")
    mask = np.ones((B, M), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != (B, M):
        raise ValueError(f"mask must have shape (B, M) = {(B, M)}, got {mask.shape}")
    n_s = mask.sum(axis=1)  # (B,)

    def mse(it):  # (B, k, M) -> (k,)
        return ((((it - x[:, None]) * mask[:, None]) ** 2).sum(axis=2) / n_s[:, None]).mean(axis=0)

    model_mse = mse(model)  # (L+1,)
    methods = {}
    for name, it in algorithms.items():
        it = np.asarray(it, dtype=np.float64)
        if it.ndim != 3 or it.shape[0] != B or it.shape[2] != M:
            raise ValueError(f"iterates of {name!r} must be (B, K+1, M) with B = {B}, M = {M}, got {it.shape}")
        sim = error_similarity(model - x[:, None], it - x[:, None], mask)  # (L+1, K+1)
        curve = mse(it)  # (K+1,)
        best = np.argmax(sim, axis=1)  # (L+1,)
        methods[name] = {"mse": curve, "similarity": sim, "best_step": best,
                         "best_similarity": sim[np.arange(sim.shape[0]), best],
                         "equivalent_step": np.array([effective_krylov_dimension(e, curve) for e in model_mse])}
    return {"model_mse": model_mse, "methods": methods}


PROBE_METHODS = ("newton_schulz", "cg", "chebyshev", "krylov_best")
"""The algorithms :func:`layer_probe` compares a model with, in its order."""


def layer_probe(params, cfg: ModelConfig, A, b, x, mask=None, x0=None, *, kappa: float = 10.0,
                upper: float = 1.0, readout: str = "query", ns_steps: int | None = None,
                krylov_steps: int | None = None, keep_iterates: bool = False) -> dict:
    """Which algorithm does the model follow, layer by layer?

    Reads the model's estimate ``x_l`` after each layer ``l = 0..L`` (``readout``, see :data:`READOUTS`)
    and compares it on the same systems (``A x = b`` with solution ``x``, from ``x0``) with

    * ``newton_schulz``: :func:`newton_schulz_iterates` for the spectrum ``[1/kappa, upper]``, steps
      ``0..ns_steps`` (default ``L + 2``);
    * ``cg``: conjugate gradient, :func:`reference.baselines.conjugate_gradient`;
    * ``chebyshev``: the Chebyshev iteration on ``[1/kappa, 1]``, :func:`reference.baselines.chebyshev`;
    * ``krylov_best``: the best 2-norm point of ``x0 + K_d``, :func:`krylov_best_points`;

    the last three for steps ``0..krylov_steps`` (default ``max(M, min(2^(L-1), 256))``: CG is exact
    after ``N`` steps, and ``L`` layers of the construction are ``2^(L-1)`` Chebyshev steps).
    Returns :func:`match_iterates`' dictionary (errors per layer and step, similarity matrices, the
    best-matching step per layer) with ``readout``, ``kappa``, ``upper``, ``n_layers`` and, with
    ``keep_iterates``, ``iterates``: ``{"model": (B, L+1, M), name: (B, K+1, M)}``.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if not (is_real(kappa) and np.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    A, b, mask, x0, x = check_systems(A, b, mask=mask, x0=x0, x=x)
    L, M = cfg.n_layers, A.shape[1]
    ns_steps = L + 2 if ns_steps is None else _check_steps(ns_steps, "ns_steps")
    krylov_steps = (max(M, min(2 ** (L - 1), 256)) if krylov_steps is None
                    else _check_steps(krylov_steps, "krylov_steps"))
    read = forward_layers if readout == "query" else lens_layers
    model = read(params, cfg, A, b, mask, x0)  # (B, L+1, M)
    iterates = {
        "newton_schulz": newton_schulz_iterates(A, b, mask, x0, ns_steps, kappa, upper),  # (B, ns+1, M)
        "cg": conjugate_gradient(A, b, krylov_steps, mask, x0, return_history=True),  # (B, K+1, M)
        "chebyshev": chebyshev(A, b, krylov_steps, mask, x0, return_history=True, kappa=kappa),
        "krylov_best": krylov_best_points(A, b, x, mask, x0, krylov_steps),
    }
    out = {"readout": readout, "kappa": float(kappa), "upper": float(upper), "n_layers": L,
           **match_iterates(model, iterates, x, mask)}
    if keep_iterates:
        out["iterates"] = {"model": model, **iterates}
    return out


# ----------------------------------------------------------------------------------------------
# the learned block scalars against the construction's


def group_names(n_identity: int) -> list[str]:
    """Names of the block groups ``[a, b, h1, ..., hK]``, the order of the scalars' rows and columns."""
    return ["a", "b"] + [f"h{k + 1}" for k in range(n_identity)]


def _align_scale(P, Q, P_ref, Q_ref) -> tuple[float, float]:
    """The factor ``c`` that brings the head ``(c P, Q / c)`` (the same layer: every update is a product
    of a ``Q`` score and a ``P`` value) nearest to ``(P_ref, Q_ref)`` in the Frobenius norm, and that
    squared distance. ``d/dc [c^2 |P|^2 - 2 c <P, P_ref> + |Q|^2 / c^2 - 2 <Q, Q_ref> / c] = 0`` is the
    quartic ``|P|^2 c^4 - <P, P_ref> c^3 + <Q, Q_ref> c - |Q|^2 = 0``; the best of its real roots."""
    pp, qq = float((P**2).sum()), float((Q**2).sum())
    p_r, q_r = float((P * P_ref).sum()), float((Q * Q_ref).sum())

    def dist(c):
        return float(((c * P - P_ref) ** 2).sum() + ((Q / c - Q_ref) ** 2).sum())

    if pp == 0 or qq == 0:  # a head that adds nothing: no scale to choose
        return 1.0, dist(1.0)
    roots = np.roots([pp, -p_r, 0.0, q_r, -qq])  # (4,)
    real = [float(r.real) for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r)) and r.real != 0]
    c = min(real, key=dist) if real else 1.0  # a positive and a negative root always exist (f(0) = -|Q|^2)
    return c, dist(c)


def construction_alignment(params, cfg: ModelConfig, kappa: float = 10.0, upper: float = 1.0,
                           n: int | None = None) -> dict:
    """A block model's scalars beside those of :func:`reference.constructions.newton_schulz_params` of the
    same depth (spectrum ``[1/kappa, upper]``; ``n``: the size, for ``attention_norm="n"``).

    The construction's head 0 has, in layer ``l < L - 1``, ``q_{a h1} = 1``, ``q_{h2 h2} = (gamma_l - 1) /
    beta_l``, ``p_{h1 h1} = beta_l``, and in the last layer ``q_aa = 1``, ``q_bb = -1``, ``p_{a h1} = -1``;
    every other scalar is 0. A model computes the same function after any of these changes, so they are
    undone before comparing:

    * scaling a head, ``(c P_h, Q_h / c)`` for any ``c != 0`` (the sign included): each layer's head is
      scaled by the ``c`` that brings it nearest to the construction's (:func:`_align_scale`);
    * permuting the identity copies ``h1..hK`` (they are equal in the input): the permutation, one for
      all layers, with the smallest total distance (tried for ``K <= 5``);
    * permuting heads: the head nearest to the construction's is compared, the others are reported by
      their size ``||P_h|| ||Q_h||``.

    Two further equivalences are *not* undone: mixing the identity copies by any ``K x K`` matrix ``T``
    with ``T 1 = 1`` (the copies are equal in the input, so only the mixture matters), and, because
    ``A`` is symmetric, the transposed score blocks (``q_{h a}`` gives ``A X^T`` where ``q_{a h}`` gives
    ``X A``; the same while ``X`` is a symmetric polynomial in ``A``). A model that uses them differs
    from the construction in its scalars while computing the same iterates; :func:`layer_probe`
    compares the functions. Hence also the scale-free invariants, products of one ``Q`` and one ``P``
    scalar, that give the construction's coefficients: ``beta = p_{h1 h1} q_{a h1}``, ``gamma = 1 +
    p_{h1 h1} q_{h2 h2}`` (layers ``< L - 1``) and the read-out step ``-p_{a h1} q_aa = p_{a h1} q_bb``
    (1, or the best Richardson step for ``L = 1``).

    Returns ``{"groups", "permutation", "distance", "layers"}``: ``permutation[k]`` is the model's copy
    that plays the construction's ``h(k+1)``; ``distance`` is ``sqrt(sum of squared differences / sum of
    the construction's squares)`` after alignment; per layer ``{"head", "scale", "p", "q" (G, G) aligned,
    "p_construction", "q_construction", "support": {name: (learned, construction)}, "off_support"
    (the aligned scalars' share, in the Frobenius norm, off the construction's non-zero blocks),
    "large": [(name, value)] (aligned scalars of at least a tenth of the largest), "invariants":
    {name: (learned, construction)}, "other_heads": [||P_h|| ||Q_h||]}``.
    """
    if not isinstance(cfg, ModelConfig) or cfg.parametrization != "block":
        raise ValueError("construction_alignment compares the scalars of a block model (a block ModelConfig)")
    if cfg.n_identity < 2:
        raise ValueError(f"the construction needs n_identity >= 2 (X in h1, I in h2), the model has {cfg.n_identity}")
    params = check_params(params, cfg)
    ref, _ = newton_schulz_params(cfg.n_layers, kappa, n_heads=1, n_identity=cfg.n_identity,
                                  attention_norm=cfg.attention_norm, n=n, upper=upper)
    names = group_names(cfg.n_identity)
    total, perm, layers = _best_alignment(params, cfg, ref)
    ref_sq = sum(float((ref[k] ** 2).sum()) for k in ref)
    out_layers = []
    for layer, (h, c, P, Q, P_ref, Q_ref) in enumerate(layers):
        others = [float(np.linalg.norm(params[f"layers.{layer}.P"][k]) * np.linalg.norm(params[f"layers.{layer}.Q"][k]))
                  for k in range(cfg.n_heads) if k != h]
        last = layer == cfg.n_layers - 1
        out_layers.append({"head": int(h), "scale": float(c), "p": P, "q": Q, "p_construction": P_ref,
                           "q_construction": Q_ref, **_layer_comparison(P, Q, P_ref, Q_ref, names, last),
                           "other_heads": others})
    return {"groups": names, "permutation": [int(k) for k in perm],
            "distance": float(np.sqrt(total / ref_sq)), "layers": out_layers}


def _best_alignment(params, cfg: ModelConfig, ref) -> tuple[float, tuple, list]:
    """``(total squared distance, permutation, per layer (head, c, c P, Q / c, P_ref, Q_ref))`` for the
    permutation of the identity copies (tried for ``K <= 5``) and, per layer, the head and scale nearest to
    the construction's ``ref``."""
    K = cfg.n_identity
    best = None
    for perm in (itertools.permutations(range(K)) if K <= 5 else [tuple(range(K))]):
        idx = np.array([0, 1] + [2 + k for k in perm])  # construction's group g <- the model's group idx[g]
        total, layers = 0.0, []
        for layer in range(cfg.n_layers):
            P_ref, Q_ref = ref[f"layers.{layer}.P"][0], ref[f"layers.{layer}.Q"][0]  # (G, G)
            heads = []
            for h in range(cfg.n_heads):
                P = params[f"layers.{layer}.P"][h][np.ix_(idx, idx)]  # (G, G)
                Q = params[f"layers.{layer}.Q"][h][np.ix_(idx, idx)]  # (G, G)
                c, d = _align_scale(P, Q, P_ref, Q_ref)
                heads.append((d, h, c, c * P, Q / c))
            d, h, c, P, Q = min(heads, key=lambda t: t[0])
            total += d
            layers.append((h, c, P, Q, P_ref, Q_ref))
        if best is None or total < best[0]:
            best = (total, perm, layers)
    return best


def _layer_comparison(P, Q, P_ref, Q_ref, names: list[str], last: bool) -> dict:
    """One aligned layer against the construction's: ``support``, ``off_support``, ``large`` and
    ``invariants`` of :func:`construction_alignment`."""
    both = np.concatenate([P.ravel(), Q.ravel()])  # (2 G^2,)
    both_ref = np.concatenate([P_ref.ravel(), Q_ref.ravel()])  # (2 G^2,)
    on = both_ref != 0
    labels = [f"p[{u},{v}]" for u in names for v in names] + [f"q[{u},{v}]" for u in names for v in names]
    big = np.abs(both).max()
    order = np.argsort(-np.abs(both), kind="stable")
    g = {nm: i for i, nm in enumerate(names)}
    if not last:
        gamma, beta = 1.0 + P_ref[2, 2] * Q_ref[3, 3], P_ref[2, 2] * Q_ref[0, 2]
        inv = {"beta = p[h1,h1] q[a,h1]": (P[g["h1"], g["h1"]] * Q[g["a"], g["h1"]], beta),
               "gamma = 1 + p[h1,h1] q[h2,h2]": (1.0 + P[g["h1"], g["h1"]] * Q[g["h2"], g["h2"]], gamma)}
    else:
        step = -P_ref[0, 2] * Q_ref[0, 0]
        inv = {"step = -p[a,h1] q[a,a]": (-P[g["a"], g["h1"]] * Q[g["a"], g["a"]], step),
               "step = p[a,h1] q[b,b]": (P[g["a"], g["h1"]] * Q[g["b"], g["b"]], step)}
    return {"support": {labels[i]: (float(both[i]), float(both_ref[i])) for i in np.flatnonzero(on)},
            "off_support": float(np.linalg.norm(both[~on]) / max(np.linalg.norm(both), 1e-300)),
            "large": [(labels[i], float(both[i])) for i in order if big > 0 and abs(both[i]) >= 0.1 * big],
            "invariants": {k: (float(a), float(b)) for k, (a, b) in inv.items()}}


# ----------------------------------------------------------------------------------------------
# the spectral view of any solver (docs/concepts.md, section 11): relative error per eigen-component


def component_errors(solver, lam, n: int = 16, draws: int = 4, seed: int = 0) -> np.ndarray:
    """``E |1 - (U^T x_hat)_1|`` (len(lam),): the relative error of ``solver`` on the eigen-component ``lam[i]`` of
    systems with condition number ``1 / lam[i]``, drawn as the training data (docs/concepts.md, section 11).

    For each ``lambda`` and each of ``draws`` draws: ``A = U diag(mu) U^T`` (Haar ``U``) with ``mu_1 = lambda``,
    ``mu_2 = 1`` and ``n - 2`` eigenvalues uniform on ``[lambda, 1]``; ``x = U 1_n`` (every component 1),
    ``b = A x``. ``solver(A, b)`` maps (B, n, n), (B, n) to ``x_hat`` (B, n). For an equivariant model the value is
    ``|1 - lambda g(lambda)|`` exactly, whatever the other eigenvalues and ``U``; for any other solver it is what
    it achieves on that component of such systems (CG's residual polynomial, for one, depends on all of ``mu``).
    """
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim != 1 or not np.all((lam > 0) & (lam <= 1)):
        raise ValueError("lam must be a 1-d array of eigenvalues in (0, 1]")
    if n < 2:
        raise ValueError(f"n must be >= 2 (the component and the largest eigenvalue 1), got {n!r}")
    rng = np.random.default_rng(seed)
    errs = np.zeros((draws, lam.size))
    for d in range(draws):
        mu = rng.uniform(size=(lam.size, n))  # (B, n)
        mu = lam[:, None] + (1.0 - lam[:, None]) * mu
        mu[:, 0], mu[:, 1] = lam, 1.0
        G = rng.standard_normal((lam.size, n, n))
        U, R = np.linalg.qr(G)
        U = U * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]  # Haar: the sign fix
        A = U @ (mu[:, :, None] * np.swapaxes(U, 1, 2))  # (B, n, n)
        A = 0.5 * (A + np.swapaxes(A, 1, 2))
        x = U.sum(axis=2)  # (B, n): U 1
        b = np.einsum("bij,bj->bi", A, x)
        x_hat = np.asarray(solver(A, b), dtype=np.float64)  # (B, n)
        errs[d] = np.abs(1.0 - np.einsum("bi,bi->b", U[:, :, 0], x_hat))  # component 1: (U^T x_hat)_1
    return errs.mean(axis=0)


def equivariance_error(solver, n: int = 12, systems: int = 16, kappa: float = 10.0, seed: int = 0) -> float:
    """``max_s ||f(Q A Q^T, Q b) - Q f(A, b)|| / ||f(A, b)||`` over ``systems`` training-law systems and Haar ``Q``:
    zero (to rounding) for a rotation-equivariant solver, as ``A x = b -> x`` is."""
    A, b, _, _ = sample_systems(systems, n, kappa, seed=seed)
    Q = haar_q(np.random.default_rng(seed + 1).standard_normal((systems, n, n)))  # (B, n, n)
    x1 = np.asarray(solver(A, b), dtype=np.float64)
    x2 = np.asarray(solver(Q @ A @ np.swapaxes(Q, 1, 2), np.einsum("bij,bj->bi", Q, b)), dtype=np.float64)
    num = np.linalg.norm(x2 - np.einsum("bij,bj->bi", Q, x1), axis=1)
    return float(np.max(num / np.linalg.norm(x1, axis=1)))


def best_polynomial_bound(lam, degree: int) -> np.ndarray:
    """``1 / T_d((1 + lambda) / (1 - lambda))``: the smallest ``max |1 - mu p(mu)|`` over ``mu in [lambda, 1]`` of any
    polynomial ``mu p(mu)`` of degree ``d`` (Chebyshev); in log form, so that ``d`` in the thousands does not
    overflow."""
    lam = np.asarray(lam, dtype=np.float64)
    t = (1.0 + lam) / np.maximum(1.0 - lam, np.finfo(float).tiny)
    # T_d(t) = cosh(d arccosh t) for t >= 1; 1 / cosh(y) = 2 exp(-y) / (1 + exp(-2y))
    y = degree * np.arccosh(np.maximum(t, 1.0))
    return 2.0 * np.exp(-y) / (1.0 + np.exp(-2.0 * y))


def spectral_view(params, cfg: ModelConfig, lam, n: int = 16, draws: int = 2, seed: int = 0) -> dict:
    """The spectral view of a block model on the eigenvalues ``lam``: :func:`component_errors` of the model, of the
    Newton-Schulz construction of the same depth (for the spectrum ``[1e-4, 1.1]``, as the shipped default), and of
    CG with as many iterations; :func:`best_polynomial_bound` of degree ``3^(L-1)``; and the model's
    :func:`equivariance_error`. Lists of floats (JSON-ready)."""
    L = cfg.n_layers
    ns_params, ns_cfg = newton_schulz_params(L, kappa=1e4, upper=1.1)

    def view(solver):
        return component_errors(solver, lam, n=n, draws=draws, seed=seed).tolist()

    model = lambda A, b: forward(params, cfg, A, b)  # noqa: E731
    return dict(lam=np.asarray(lam, dtype=np.float64).tolist(), layers=L, model=view(model),
                construction=view(lambda A, b: forward(ns_params, ns_cfg, A, b)),
                cg=view(lambda A, b: conjugate_gradient(A, b, L)),
                bound=best_polynomial_bound(lam, 3 ** (L - 1)).tolist(), equivariance=equivariance_error(model))
