"""Short experiments on training block models from random weights: the runs behind "Learning the algorithm
from random weights" on the tried page (docs/results-tried.md). One JSON line per progress report and a final
line with the MSE at N = 6, 9, 15, 20, 40 (kappa 10, 200 fresh systems each) beside CG with as many iterations.

The model is a block model with 1 head and 2 identity copies, attention norm "none" (docs/concepts.md), the
loss and its gradient compiled with XLA in float64 (tf_impl.model.model_forward); the optimiser runs on the flat
parameter vector:

* ``--method lbfgs``: reference.optim.lbfgs_step (the --optimizer lbfgs of the training CLI) on one fixed batch;
* ``--method scipy``: scipy's L-BFGS-B (memory 50) on the same batch;
* ``--method lm``: Levenberg-Marquardt (forward-mode Jacobian) on the same batch;
* ``--method adam``: Adam on a fresh batch every step (cosine decay to 0.1 lr, clipping at 10).

``--b-last 1`` fixes the b group of P, Q at zero in every layer but the last (ModelConfig.b_last_layer);
``--bscale s`` multiplies b and x of every training system by 10^u, u ~ U[-s, s] (with ``--relative 1``, the
relative loss); ``--init-from FILE.npz`` (a ``--save`` of this script) starts from a shallower model grown with
P = 0 layers. The commands of the table on the tried page:

    python scripts/learn_probe.py --layers 3 --method scipy --iters 3000 --batch 512 --n-max 8
    python scripts/learn_probe.py --layers 4 --method scipy --iters 3000 --batch 512 --n-max 8
    python scripts/learn_probe.py --layers 3 --method scipy --iters 3000 --batch 256 --n-max 16 --save L3.npz
    python scripts/learn_probe.py --layers 4 --method scipy --iters 2000 --batch 256 --n-max 16 --init-from L3.npz
    python scripts/learn_probe.py --layers 3 --method lbfgs --iters 3000 --batch 256 --n-max 16 --bscale 1 --relative 1
    python scripts/learn_probe.py --layers 4 --method lbfgs --iters 3000 --batch 256 --n-max 16 --b-last 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import tensorflow as tf

from reference.baselines import conjugate_gradient
from reference.config import ModelConfig
from reference.data import sample_systems
from reference.model import init_params, param_masks, param_shapes
from reference.optim import flatten_params
from tf_impl.layers import mse
from tf_impl.model import model_forward

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


BSCALE = [0.0]
BLAST = [False]
MASK = [1.0]
LOSS = ["mse"]  # the loss, one of reference.layers.LOSSES


def batch_tensors(batch, sizes, kappa, seed, dtype=tf.float64):
    A, b, x, mask = sample_systems(batch, sizes, kappa, seed)
    if BSCALE[0] > 0:  # log-uniform scale of b (and x) per system in [10^-s, 10^s]
        s = 10.0 ** np.random.default_rng(list(np.atleast_1d(seed)) + [7]).uniform(-BSCALE[0], BSCALE[0], batch)
        b, x = b * s[:, None], x * s[:, None]
    return tuple(tf.constant(t, dtype) for t in (A, b, x, mask.astype(np.float64)))


def make_fns(cfg, shapes, dtype):
    names = list(shapes)
    sizes = [int(np.prod(shapes[k])) for k in names]

    # the b group enters only the last layer: the masks of ModelConfig.b_last_layer
    masks = param_masks(dataclasses.replace(cfg, b_last_layer=True)) if BLAST[0] else {}
    mask = flatten_params({k: masks.get(k, np.ones(shapes[k])) for k in names}, names)
    maskt = tf.constant(mask, tf.float64)
    MASK[0] = mask

    def unflat(theta):
        parts = tf.split(theta * maskt, sizes)
        return {k: tf.reshape(p, shapes[k]) for k, p in zip(names, parts, strict=True)}

    @tf.function(jit_compile=True)
    def loss_grad(theta, A, b, x, m):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            xh = model_forward(unflat(theta), cfg, A, b, m, tf.zeros_like(b), structured=True)
            loss = mse(xh, x, m, LOSS[0])
        return loss, tape.gradient(loss, theta)

    def resid_raw(theta, A, b, x, m):
        xh = model_forward(unflat(theta), cfg, A, b, m, tf.zeros_like(b), structured=True)
        d = tf.sqrt((tf.reduce_sum(x * x * m, axis=1, keepdims=True) if LOSS[0] == "relative" else
                     tf.reduce_sum(m, axis=1, keepdims=True)) * tf.cast(tf.shape(b)[0], b.dtype))
        return tf.reshape((xh - x) * m / d, [-1])

    resid = tf.function(resid_raw, jit_compile=True)

    P = sum(sizes)

    @tf.function
    def jac(theta, A, b, x, m):
        def jvp(v):
            with tf.autodiff.ForwardAccumulator(theta, v) as acc:
                r = resid_raw(theta, A, b, x, m)
            return acc.jvp(r)
        J = tf.vectorized_map(jvp, tf.eye(P, dtype=theta.dtype))  # (P, R)
        return resid_raw(theta, A, b, x, m), tf.transpose(J)

    @tf.function(jit_compile=True)
    def predict(theta, A, b, m):
        return model_forward(unflat(theta), cfg, A, b, m, tf.zeros_like(b), structured=True)

    return loss_grad, resid, jac, predict


def evaluate(predict, theta, cfg, ns=(6, 9, 15, 20, 40), kappa=10.0, n_sys=200):
    out = {}
    for n in ns:
        A, b, x, mask = sample_systems(n_sys, n, kappa, seed=10_000 + n)
        xh = predict(tf.constant(theta), *(tf.constant(t) for t in (A, b)), tf.constant(mask.astype(np.float64)))
        xh = xh.numpy()
        out[f"N{n}"] = float(np.mean(np.sum((xh - x) ** 2, 1) / n))
        xc = conjugate_gradient(A, b, cfg.n_layers, mask)
        out[f"cg{n}"] = float(np.mean(np.sum((xc - x) ** 2, 1) / n))
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--n-identity", type=int, default=2)
    ap.add_argument("--norm", default="none")
    ap.add_argument("--init-scale", type=float, default=0.02)
    ap.add_argument("--n-min", type=int, default=2)
    ap.add_argument("--n-max", type=int, default=8)
    ap.add_argument("--kappa", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--method", default="lbfgs")  # lbfgs | adam | lm | adam+lbfgs ...
    ap.add_argument("--adam-steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", default=None)
    ap.add_argument("--save", default=None)
    ap.add_argument("--tag", default="")
    ap.add_argument("--bscale", type=float, default=0.0)
    ap.add_argument("--b-last", type=int, default=0)
    ap.add_argument("--relative", type=int, default=0)  # 1: the loss "relative" (reference.layers.LOSSES)
    return ap.parse_args(argv)


def start_theta(a, cfg, shapes) -> np.ndarray:
    """The flat start: ``init_params(cfg, seed)``, or the layers of ``--init-from`` then layers with P = 0."""
    p0 = init_params(cfg, a.seed)
    if a.init_from:
        z = np.load(a.init_from)
        src = {k: z[k] for k in z.files}
        L0 = sum(1 for k in src if k.endswith(".P"))
        for k in src:
            p0[k] = src[k]
        for layer in range(L0, a.layers):
            p0[f"layers.{layer}.P"] = np.zeros(shapes[f"layers.{layer}.P"])
    return np.concatenate([p0[k].ravel() for k in shapes])


def report(record: dict, t0: float) -> None:
    print(json.dumps({**record, "s": round(time.time() - t0)}), flush=True)


def run_adam(a, theta, loss_grad, sizes, t0):
    """Adam on a fresh batch every step: warm-up over 100 steps, cosine decay to 0.1 lr, clipping at 10."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, a.adam_steps + 1):
        batch = batch_tensors(a.batch, sizes, a.kappa, seed=(a.seed, t))
        lv, g = loss_grad(tf.constant(theta), *batch)
        g, lv = g.numpy(), float(lv)
        gn = np.linalg.norm(g)
        if gn > 10:
            g *= 10 / gn
        lr = a.lr * min(1.0, t / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / a.adam_steps)))
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        theta = theta - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        if t % 250 == 0:
            report({"m": "adam", "t": t, "loss": lv}, t0)
    return theta


def run_lbfgs(a, method, theta, loss_grad, sizes, t0):
    """``--iters`` iterations of reference.optim.lbfgs_step (``lbfgs``) or scipy's L-BFGS-B (``scipy``) on one
    fixed batch."""
    batch = batch_tensors(a.batch, sizes, a.kappa, seed=(a.seed, 999_999))
    it = [0]

    def fg(th):
        lv, g = loss_grad(tf.constant(th), *batch)
        return float(lv), g.numpy()

    def cb(th):
        it[0] += 1
        if it[0] % 200 == 0:
            report({"m": method, "t": it[0], "loss": float(fg(th)[0])}, t0)

    if method == "scipy":
        import scipy.optimize

        res = scipy.optimize.minimize(fg, theta, jac=True, method="L-BFGS-B", callback=cb,
                                      options=dict(maxiter=a.iters, maxcor=50, ftol=0, gtol=0))
        theta, f = res.x, res.fun
    else:
        from reference.optim import lbfgs_step

        f, g = fg(theta)
        S = Y = np.zeros((0, theta.size))
        for _ in range(a.iters):
            theta, f, g, S, Y, _ = lbfgs_step(fg, theta, f, g, S, Y, 50)
            cb(theta)
    print(json.dumps({"m": method, "end": "done", "loss": float(f)}))
    return theta


def run_lm(a, theta, resid, jac, sizes, t0):
    """Levenberg-Marquardt on one fixed batch: ``--iters`` accepted steps, or until the damping passes 1e12."""
    batch = batch_tensors(a.batch, sizes, a.kappa, seed=(a.seed, 999_999))
    mu = 1e-3
    r, J = (arr.numpy() for arr in jac(tf.constant(theta), *batch))
    f = r @ r
    for t in range(1, a.iters + 1):
        JtJ, g = J.T @ J, J.T @ r
        while True:
            step = np.linalg.solve(JtJ + mu * (np.diag(np.diag(JtJ)) + 1e-12 * np.eye(len(g))), -g)
            th2 = theta + step
            r2 = resid(tf.constant(th2), *batch).numpy()
            f2 = r2 @ r2
            if np.isfinite(f2) and f2 < f:
                theta, mu = th2, max(mu / 3, 1e-12)
                break
            mu *= 4
            if mu > 1e12:
                return theta
        r, J = (arr.numpy() for arr in jac(tf.constant(theta), *batch))
        f = r @ r
        if t % 20 == 0:
            report({"m": "lm", "t": t, "loss": float(f), "mu": mu}, t0)
    return theta


def main(argv=None):
    a = parse_args(argv)
    BSCALE[0] = a.bscale
    BLAST[0] = bool(a.b_last)
    LOSS[0] = "relative" if a.relative else "mse"
    cfg = ModelConfig(parametrization="block", n_layers=a.layers, n_heads=a.heads, n_identity=a.n_identity,
                      attention_norm=a.norm, init_scale=a.init_scale)
    shapes = param_shapes(cfg)
    theta = start_theta(a, cfg, shapes)
    loss_grad, resid, jac, predict = make_fns(cfg, shapes, tf.float64)
    t0 = time.time()
    sizes = (a.n_min, a.n_max)
    for method in a.method.split("+"):
        if method == "adam":
            theta = run_adam(a, theta, loss_grad, sizes, t0)
        elif method in ("lbfgs", "scipy"):
            theta = run_lbfgs(a, method, theta, loss_grad, sizes, t0)
        elif method == "lm":
            theta = run_lm(a, theta, resid, jac, sizes, t0)
    ev = evaluate(predict, theta, cfg, kappa=a.kappa)
    report({"final": True, "tag": a.tag, "args": vars(a), "eval": ev}, t0)
    if a.save:  # the parameters as the model reads them (entries fixed at zero set to zero)
        from reference.optim import unflatten_params

        np.savez(a.save, **unflatten_params(theta * MASK[0], shapes))


if __name__ == "__main__":
    main()
