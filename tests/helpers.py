"""Shared test helpers: one tensor comparison (in the spirit of llm.c's ``check_tensor``) and a
finite-difference vector-Jacobian product usable for every op.

Import from a test module as ``from helpers import check_tensor, fd_vjp, check_grad`` (or
``from tests.helpers import ...``): the ``pythonpath`` setting of pyproject.toml puts ``tests/`` and the
repository root on ``sys.path``, for ``pytest`` as for ``python -m pytest``.
"""

from __future__ import annotations

import numpy as np

_SHOW = 5  # mismatching entries printed


def check_tensor(name, mine, ref, rtol=1e-10, atol=0.0):
    """Compare ``mine`` to ``ref`` elementwise: ``|mine - ref| <= atol + rtol * |ref|``.

    Prints ``name: maxdiff=..., max|ref|=...`` (pytest shows it on failure), then the first
    mismatching entries as ``index: mine vs ref``, and raises ``AssertionError`` if any entry
    fails (or the shapes differ). Returns the max absolute difference.
    """
    mine = np.asarray(mine, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if mine.shape != ref.shape:
        raise AssertionError(f"{name}: shape mismatch, mine {mine.shape} vs ref {ref.shape}")
    same = (mine == ref) | (np.isnan(mine) & np.isnan(ref))  # equal infinities and NaN in both places
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(mine - ref))  # NaN/inf where one side is NaN/inf
        bad = ~same & ~(np.isfinite(diff) & (diff <= atol + rtol * np.abs(ref)))
    maxdiff = float(np.max(diff)) if diff.size else 0.0  # NaN if any entry is NaN
    maxref = float(np.nanmax(np.abs(ref))) if ref.size and not np.isnan(ref).all() else 0.0
    print(f"{name}: maxdiff={maxdiff:.3e}, max|ref|={maxref:.3e}, shape={ref.shape}")
    if bad.any():
        idx = np.argwhere(bad)
        for i in idx[:_SHOW]:
            t = tuple(int(k) for k in i)
            print(f"  {name}{list(t)}: {float(mine[t])!r} vs {float(ref[t])!r}")
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{bad.size} entries differ (rtol={rtol:g}, atol={atol:g}); "
            f"maxdiff={maxdiff:.3e}, max|ref|={maxref:.3e}")
    return maxdiff


def fd_vjp(fn, args, dout, wrt=None, eps=1e-6):
    """Numerical vector-Jacobian products: gradients of ``sum(fn(*args) * dout)`` by centred differences.

    ``args`` is a list of arrays (or other objects); ``wrt`` the indices of the float arrays to
    differentiate (default: every ``np.ndarray`` in ``args``). ``fn`` may return an array or a
    scalar (use ``dout=1.0``). Each entry is perturbed by ``+-eps`` in float64, one at a time.
    Returns one gradient array per index in ``wrt``, in that order.
    """
    args = [np.array(a, dtype=np.float64) if isinstance(a, np.ndarray) else a for a in args]
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    dout = np.asarray(dout, dtype=np.float64)

    def objective():
        return float(np.sum(np.asarray(fn(*args), dtype=np.float64) * dout))

    grads = []
    for i in wrt:
        x = args[i]
        g = np.zeros_like(x)
        flat, gflat = x.reshape(-1), g.reshape(-1)  # views
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            fp = objective()
            flat[k] = old - eps
            fm = objective()
            flat[k] = old
            gflat[k] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def rel_error(num, ana) -> float:
    """Relative error of an analytic gradient: ``max|num - ana| / max|num|`` (over all entries)."""
    num = np.asarray(num, dtype=np.float64)
    ana = np.asarray(ana, dtype=np.float64)
    scale = float(np.max(np.abs(num))) if num.size else 0.0
    return float(np.max(np.abs(num - ana))) / max(scale, 1e-300) if num.size else 0.0


def check_grad(name, ana, num, tol=1e-6):
    """Assert ``rel_error(num, ana) <= tol`` (see :func:`rel_error`); shapes must match exactly.

    A gradient that is identically zero numerically must also be zero analytically (to 1e-12).
    """
    ana = np.asarray(ana, dtype=np.float64)
    num = np.asarray(num, dtype=np.float64)
    if ana.shape != num.shape:
        raise AssertionError(f"{name}: shape mismatch, analytic {ana.shape} vs numeric {num.shape}")
    maxnum = float(np.max(np.abs(num))) if num.size else 0.0
    if maxnum < 1e-12:
        return check_tensor(name, ana, num, rtol=0.0, atol=1e-12)
    err = rel_error(num, ana)
    print(f"{name}: rel_error={err:.3e} (max|num|={maxnum:.3e})")
    if not err <= tol:
        check_tensor(name, ana, num, rtol=0.0, atol=tol * maxnum)  # prints the worst entries, raises
        raise AssertionError(f"{name}: rel_error {err:.3e} > {tol:g}")
    return err


TEST_RUN = dict(batch_size=64, lr=1e-3, steps=1000, warmup=0, schedule="constant", clip_norm=None, seed=0,
                dtype="float32")
"""The optimiser settings of :func:`train_config` unless a test gives others: a constant learning rate without
warm-up or clipping (the lr schedule's length is ``steps``)."""


def train_config(cfg, sizes, **fields):
    """The :class:`tf_impl.config.TrainConfig` of the model ``cfg`` trained on ``sizes`` (``n`` or ``(n_min,
    n_max)``) with :data:`TEST_RUN` and ``fields`` (TrainConfig's names: ``kappa``, ``loss``, ``mode``, ...);
    its ``model_config()`` is ``cfg``."""
    import dataclasses

    from tf_impl.config import TrainConfig

    n_min, n_max = (sizes, sizes) if isinstance(sizes, int) else sizes
    model = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "n"}
    tcfg = TrainConfig(**model, n_min=n_min, n_max=n_max, **{**TEST_RUN, **fields})
    if tcfg.model_config() != cfg:
        raise ValueError(f"sizes {sizes!r} do not fit the model {cfg} (a full model trains on its own n)")
    return tcfg
