"""Adam, the learning-rate schedule and the XLA-compiled train step, in TensorFlow.

Formula for formula the twin of :mod:`reference.optim` (the cross-tests run ten steps of both on
the same batches and compare)::

    lr_t  = lr (t+1)/warmup                                  t < warmup   (t: 0-based step)
          = lr                                               "constant"
          = lr (0.1 + 0.9 * 0.5 (1 + cos(pi u))),  u = min(1, (t - warmup) / max(1, T - warmup))   "cosine"
    g    <- g * min(1, clip / ||g||)                         global norm over all parameters (optional)
    m    <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2     b1 = 0.9, b2 = 0.999
    p    <- p - lr_t * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^(t+1)),  v_hat = v / (1 - b2^(t+1))

Adam is written out by hand (Keras's Adam puts epsilon elsewhere). The learning rate is computed
from the step variable inside the compiled step.

Where this file must differ from :mod:`reference.optim`: the parameters, the moments and the step are
``tf.Variable`` s, in the order of ``model.trainable_variables`` (what ``tf.GradientTape`` and the
distribution strategies work on), so :func:`adam_update` takes and returns lists where the reference
has dicts, and :class:`Trainer` assigns its results to the variables; and the loop is a class
(:class:`Trainer`) rather than the reference's ``train()`` function, because a compiled step needs its
variables to outlive one call.

:class:`Trainer` (``Trainer(tcfg, params)``, ``tcfg`` a run's :class:`tf_impl.config.TrainConfig`) holds the model
(:class:`tf_impl.model.LinearTransformer`), the Adam moments and the step counter as ``tf.Variable`` s and runs
one training step:

* single device (the default strategy): the whole step -- sampling the batch of step ``t`` from
  the stateless seed ``(seed, t)``, forward, ``tf.GradientTape``, global-norm clipping, Adam --
  is ONE ``tf.function(jit_compile=True)`` (``mode="xla"``); ``mode="graph"`` is the same function
  without XLA and ``mode="eager"`` runs the same Python function eagerly (for debugging);
* several replicas (``tf.distribute.MirroredStrategy`` / ``MultiWorkerMirroredStrategy``): every
  replica samples the same global batch (same seed) and takes its slice, computes the loss of its
  systems divided by the GLOBAL batch size and its gradients (XLA-compiled per replica), the
  losses and gradients are summed across replicas (so they are the global mean's), and the same
  clip + Adam update is applied to the mirrored variables (the cross-replica sum and this small
  update run in the enclosing ``tf.function``, outside XLA). The data of a step therefore does not
  depend on the number of devices (tests/test_tf_distribute.py: two logical CPUs = one device).

A step whose loss or gradient norm is not finite changes nothing (parameters, moments and step
stay as they were); the caller sees the non-finite loss and stops.

Glossary: B global batch, R replicas, B/R systems per replica, M padded size n_max.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from reference.config import ModelConfig, is_real
from reference.data import check_law, check_systems, parse_sizes
from reference.model import check_params
from tf_impl._quiet import tf
from tf_impl.config import SCHEDULES, TrainConfig
from tf_impl.data import sample_systems_tf
from tf_impl.layers import mse_sum
from tf_impl.model import LinearTransformer, as_float_dtype, loss_and_grads_tensors, model_forward


def lr_at(step, lr: float, total_steps: int, warmup: int = 0, schedule: str = "constant") -> tf.Tensor:
    """Learning rate (float64 scalar tensor) at the 0-based ``step`` (a tensor or int); see the module doc."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    s = tf.cast(step, tf.float64)
    if schedule == "constant":
        after = tf.zeros_like(s) + lr
    else:
        u = tf.minimum(tf.constant(1.0, tf.float64), (s - warmup) / max(1, total_steps - warmup))
        after = lr * (0.1 + 0.9 * 0.5 * (1.0 + tf.cos(math.pi * u)))
    if warmup > 0:
        return tf.where(s < warmup, lr * (s + 1) / warmup, after)
    return after


def clip_by_global_norm(grads: list, max_norm: float | None):
    """Scale every gradient by ``min(1, max_norm / ||g||)``, ``||g||`` over all of them; returns ``(grads, ||g||)``."""
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads]))
    if max_norm is None:
        return grads, norm
    factor = tf.where(norm > max_norm, max_norm / norm, tf.ones_like(norm))
    return [g * factor for g in grads], norm


def adam_update(params: list, grads: list, state: dict, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step on lists of tensors (:func:`reference.optim.adam_update`): ``state`` holds the moments
    ``"m"``, ``"v"`` (lists like ``params``) and ``"t"``, the steps taken so far (float64 scalar); ``lr`` is a
    scalar of the parameters' dtype. Pure: returns new ``(params, state)``."""
    dtype = params[0].dtype
    t = state["t"] + 1.0  # this step's 1-based count
    c1 = tf.cast(1.0 - tf.pow(tf.constant(beta1, tf.float64), t), dtype)  # bias corrections
    c2 = tf.cast(1.0 - tf.pow(tf.constant(beta2, tf.float64), t), dtype)
    new_p, new_m, new_v = [], [], []
    for p, g, m_, v_ in zip(params, grads, state["m"], state["v"], strict=True):
        m1 = beta1 * m_ + (1 - beta1) * g
        v1 = beta2 * v_ + (1 - beta2) * g * g
        m_hat = m1 / c1
        v_hat = v1 / c2
        new_p.append(p - lr * m_hat / (tf.sqrt(v_hat) + eps))
        new_m.append(m1)
        new_v.append(v1)
    return new_p, {"m": new_m, "v": new_v, "t": t}


def _is_default_strategy(strategy) -> bool:
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def _config_from_kwargs(cfg: ModelConfig, *, sizes, kappa=10.0, spectrum: str = "uniform", rhs: str = "solution",
                        normalize_rhs: bool = False, relative_loss: bool = False, batch_size: int = 64,
                        lr: float = 1e-3, total_steps: int = 1000, warmup: int = 0, schedule: str = "constant",
                        clip_norm: float | None = None, seed: int = 0, dtype=tf.float32,
                        mode: str = "xla") -> TrainConfig:
    """The ``TrainConfig`` of the deprecated ``Trainer(cfg, params, sizes=..., ...)``: the model ``cfg`` and these
    keyword arguments, with these defaults (``sizes`` is ``n_min, n_max``, ``kappa`` a number or ``(kappa,
    kappa_max)``, ``relative_loss`` is ``loss="relative"``, ``total_steps`` is ``steps``)."""
    n_min, n_max = parse_sizes(sizes)
    if cfg.parametrization == "full" and not n_min == n_max == cfg.n:
        raise ValueError(f"the full-encoding model trains on N = {cfg.n} only, got sizes {sizes!r}")
    k_min, k_max = check_law(kappa, spectrum, rhs, normalize_rhs)
    model = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "n"}
    return TrainConfig(**model, n_min=n_min, n_max=n_max, kappa=float(k_min),
                       kappa_max=None if is_real(kappa) else float(k_max), spectrum=spectrum, rhs=rhs,
                       normalize_rhs=bool(normalize_rhs), loss="relative" if relative_loss else "mse",
                       batch_size=int(batch_size), lr=float(lr), steps=int(total_steps), warmup=int(warmup),
                       schedule=schedule, clip_norm=None if clip_norm is None else float(clip_norm), seed=int(seed),
                       dtype=as_float_dtype(dtype).name, mode=mode)


class Trainer(tf.Module):
    """Model + Adam state + compiled train step (see the module docstring).

    ``tcfg`` is the run (:class:`tf_impl.config.TrainConfig`): the model is ``tcfg.model_config()``, and the data
    law (``n_min``, ``n_max``, ``kappa_range``, ``spectrum``, ``rhs``, ``normalize_rhs``: see
    :func:`reference.data.sample_systems`), the ``loss`` (:data:`reference.layers.LOSSES`), ``batch_size`` (global),
    ``lr``, the lr schedule (``steps``, ``warmup``, ``schedule``), ``clip_norm`` (``None``: off), ``seed``
    (initialisation and data: batch ``t`` comes from ``(seed, t)``), ``dtype`` and ``mode`` ("xla", "graph",
    "eager") are its fields; ``tcfg.optimizer`` must be ``"adam"`` (L-BFGS: :class:`LbfgsTrainer`).
    ``params``: NumPy start (``None``: ``init_params(model, seed)``, the run's ``init = "random"``; another
    start, a construction or a checkpoint, is passed as ``params``, as :mod:`tf_impl.train` does).
    Not settings of the run: ``strategy`` (``None``: the current/default one) and ``structured`` (block models:
    the structured fast path, default; ``False``: the dense D x D path, same numbers).

    Deprecated, for one release: ``Trainer(model_config, params, sizes=..., ...)``, the model and the settings as
    keyword arguments (those of :func:`_config_from_kwargs`, with its defaults), warns and builds the
    ``TrainConfig`` from them.
    """

    def __init__(self, tcfg: TrainConfig, params: dict | None = None, *, strategy=None, structured: bool = True,
                 **deprecated):
        super().__init__(name="trainer")
        if isinstance(tcfg, ModelConfig):
            warnings.warn("Trainer(model_config, sizes=..., ...) is deprecated: pass a tf_impl.config.TrainConfig, "
                          "Trainer(tcfg, params)", DeprecationWarning, stacklevel=2)
            tcfg = _config_from_kwargs(tcfg, **deprecated)
        elif deprecated:
            raise ValueError(f"Trainer reads the run's settings from its TrainConfig; got the keyword arguments "
                             f"{sorted(deprecated)} (use dataclasses.replace(tcfg, ...))")
        if not isinstance(tcfg, TrainConfig):
            raise ValueError(f"Trainer takes a tf_impl.config.TrainConfig, got {type(tcfg).__name__}")
        if tcfg.optimizer != "adam":
            raise ValueError(f"Trainer runs Adam; a TrainConfig with optimizer {tcfg.optimizer!r} is LbfgsTrainer's")
        if params is None and (tcfg.init != "random" or tcfg.init_from is not None):
            raise ValueError(f"the run starts from init {tcfg.init!r}, init_from {tcfg.init_from!r}: pass its "
                             "parameters as params (params=None is init 'random')")
        self.tcfg = tcfg
        self.cfg = cfg = tcfg.model_config()
        self.n_min, self.n_max = tcfg.n_min, tcfg.n_max
        self.kappa = check_law(tcfg.kappa_range, **tcfg.law)  # (k_min, k_max)
        self.dtype = as_float_dtype(tcfg.dtype)
        self.structured = bool(structured)  # block models: the fast path (tf_impl.layers.block_attention)
        self.strategy = tf.distribute.get_strategy() if strategy is None else strategy
        self.n_replicas = int(self.strategy.num_replicas_in_sync)
        self.distributed = not _is_default_strategy(self.strategy)
        if tcfg.batch_size % self.n_replicas:
            raise ValueError(f"batch_size {tcfg.batch_size} must be a multiple of the {self.n_replicas} replicas")
        params = None if params is None else check_params(params, cfg)
        with self.strategy.scope():
            self.model = LinearTransformer(cfg, params, seed=tcfg.seed, dtype=self.dtype)
            self.adam_m = {k: tf.Variable(tf.zeros_like(v), name=f"adam_m/{k}") for k, v in self.model.params.items()}
            self.adam_v = {k: tf.Variable(tf.zeros_like(v), name=f"adam_v/{k}") for k, v in self.model.params.items()}
            self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.names = self.model.names
        self._compile(tcfg.mode)

    def _compile(self, mode: str) -> None:
        """The step, the gradient and the evaluation as ``tf.function`` s (XLA per ``mode``), or eager."""
        jit = mode == "xla"
        if not self.distributed:
            core = self._single_step
            self._grads_fn = (tf.function(self._local_loss_and_grads, jit_compile=jit)
                              if mode != "eager" else self._local_loss_and_grads)
        else:
            core = self._dist_step
            self._grads_fn = tf.function(self._local_loss_and_grads, jit_compile=jit)
        self._step_fn = tf.function(core, jit_compile=jit and not self.distributed) if mode != "eager" else core
        self._global_grads_fn = (tf.function(self._global_loss_and_grads) if mode != "eager"
                                 else self._global_loss_and_grads)
        self._eval_fn = (tf.function(self._eval_loss, jit_compile=jit and not self.distributed)
                         if mode != "eager" else self._eval_loss)

    # ------------------------------------------------------------------ pieces of a step

    def sample_batch(self, step):
        """The global batch of ``step``: ``sample_systems_tf(..., seed=(seed, step))`` -> ``(A, b, x, maskf)``."""
        seed = tf.stack([tf.constant(self.tcfg.seed, tf.int64), tf.cast(step, tf.int64)])  # (2,)
        return sample_systems_tf(self.tcfg.batch_size, (self.n_min, self.n_max), self.kappa, seed, self.dtype,
                                 **self.tcfg.law)

    def _local_loss_and_grads(self, weights: dict, step, replica, batch=None):
        """This replica's share of the loss, ``sum_{s in slice} (1/N_s)||x_hat_s - x_s||^2 / B`` (``"relative"``:
        ``||x_s||^2`` for ``N_s``), and its gradients; the slice is rows ``[replica * B/R, (replica + 1) * B/R)`` of
        the global batch."""
        if batch is None:
            batch = self.sample_batch(step)
        A, b, x, maskf = batch  # (B, M, M), (B, M) x 3
        if self.n_replicas > 1:
            n = self.tcfg.batch_size // self.n_replicas
            start = tf.cast(replica, tf.int32) * n
            A = tf.slice(A, tf.stack([start, 0, 0]), [n, self.n_max, self.n_max])  # (B/R, M, M)
            b, x, maskf = (tf.slice(t, tf.stack([start, 0]), [n, self.n_max]) for t in (b, x, maskf))  # (B/R, M)
        inv_b = 1.0 / self.tcfg.batch_size

        def loss_fn(x_hat, x, maskf):
            return mse_sum(x_hat, x, maskf, self.tcfg.loss) * inv_b

        return loss_and_grads_tensors(weights, self.cfg, A, b, x, maskf, tf.zeros_like(b), loss_fn,
                                      structured=self.structured)

    def _global_loss_and_grads(self, step, batch=None):
        """Loss and gradients of the global batch: one call, or a sum over replicas."""
        if not self.distributed:
            weights = {k: v.read_value() for k, v in self.model.params.items()}
            return self._grads_fn(weights, step, 0, batch)

        def replica_fn(step, batch):
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            weights = {k: v.read_value() for k, v in self.model.params.items()}  # this replica's copies
            return self._grads_fn(weights, step, tf.cast(rid, tf.int32), batch)

        loss, grads = self.strategy.run(replica_fn, args=(step, batch))
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        grads = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, grads[k], axis=None) for k in self.names}
        return loss, grads

    def _update(self, loss, grads: dict, step) -> dict:
        """Clip, Adam, assign (only if loss and gradient norm are finite), advance the step."""
        tcfg = self.tcfg
        g, gnorm = clip_by_global_norm([grads[k] for k in self.names], tcfg.clip_norm)
        ok = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(gnorm))
        lr = tf.cast(lr_at(step, tcfg.lr, tcfg.steps, tcfg.warmup, tcfg.schedule), self.dtype)
        pv = [self.model.params[k] for k in self.names]
        mv = [self.adam_m[k] for k in self.names]
        vv = [self.adam_v[k] for k in self.names]
        state = {"m": [m.read_value() for m in mv], "v": [v.read_value() for v in vv], "t": tf.cast(step, tf.float64)}
        new_p, new_state = adam_update([p.read_value() for p in pv], g, state, lr)
        for var, new in zip(pv + mv + vv, new_p + new_state["m"] + new_state["v"], strict=True):
            var.assign(tf.where(ok, new, var.read_value()))
        self.step.assign_add(tf.cast(ok, tf.int64))
        return {"loss": loss, "grad_norm": gnorm, "lr": lr}

    def _single_step(self, batch=None):
        step = self.step.read_value()
        weights = {k: v.read_value() for k, v in self.model.params.items()}
        loss, grads = self._local_loss_and_grads(weights, step, 0, batch)
        return self._update(loss, grads, step)

    def _dist_step(self, batch=None):
        step = self.step.read_value()
        loss, grads = self._global_loss_and_grads(step, batch)
        return self._update(loss, grads, step)

    def _eval_loss(self, batch):
        A, b, x, maskf = batch
        weights = {k: v.read_value() for k, v in self.model.params.items()}
        x_hat = model_forward(weights, self.cfg, A, b, maskf, tf.zeros_like(b), structured=self.structured)  # (B, M)
        return mse_sum(x_hat, x, maskf, self.tcfg.loss) / tf.cast(tf.shape(b)[0], self.dtype)

    # ------------------------------------------------------------------ public

    def prepare_batch(self, A, b, x, mask):
        """Validate a NumPy batch and convert it to the tensors a step takes ``(A, b, x, maskf)``."""
        A, b, mask, _, x = check_systems(A, b, mask=mask, x=x)
        if A.shape[:2] != (self.tcfg.batch_size, self.n_max):
            raise ValueError(f"a batch must be (batch_size, n_max) = {(self.tcfg.batch_size, self.n_max)}, "
                             f"got {A.shape[:2]}")
        return tuple(tf.constant(a, dtype=self.dtype) for a in (A, b, x, mask.astype(np.float64)))

    def _as_batch(self, batch):
        if batch is None:
            return None
        if all(isinstance(t, tf.Tensor) for t in batch):
            return tuple(batch)
        return self.prepare_batch(*batch)

    def train_step(self, batch=None) -> dict[str, float]:
        """One step on the batch of the current step (sampled on device), or on ``batch``
        ``(A, b, x, mask)`` (NumPy, or tensors from :meth:`prepare_batch`). Returns floats
        ``loss`` (before the update), ``grad_norm`` (before clipping) and ``lr``."""
        out = self._step_fn(self._as_batch(batch))
        return {k: float(v.numpy()) for k, v in out.items()}

    def loss_and_grads(self, batch=None):
        """``(loss, {name: grad})`` (NumPy) of the current step's batch or of ``batch``, without updating."""
        loss, grads = self._global_grads_fn(self.step.read_value(), self._as_batch(batch))
        return float(loss.numpy()), {k: grads[k].numpy() for k in self.names}

    def eval_loss(self, batch) -> float:
        """Mean loss of the current parameters on ``batch`` ``(A, b, x, mask)``."""
        return float(self._eval_fn(self._as_batch(batch)).numpy())

    def get_params(self) -> dict[str, np.ndarray]:
        return self.model.get_params()

    def get_state(self):
        """``(params, extra)``: float64 NumPy parameters and what resuming needs
        (``adam_m/<name>``, ``adam_v/<name>``, ``step``), for :func:`reference.save_checkpoint`."""
        extra = {f"adam_m/{k}": v.numpy() for k, v in self.adam_m.items()}
        extra.update({f"adam_v/{k}": v.numpy() for k, v in self.adam_v.items()})
        extra["step"] = np.asarray(int(self.step.numpy()), dtype=np.int64)
        return self.get_params(), extra

    def set_state(self, params: dict, extra: dict) -> None:
        """Restore :meth:`get_state`'s output (e.g. read back from a checkpoint)."""
        self.model.set_params(params)
        for k in self.names:
            for slot, var in (("adam_m", self.adam_m[k]), ("adam_v", self.adam_v[k])):
                key = f"{slot}/{k}"
                if key not in extra or tuple(extra[key].shape) != tuple(var.shape):
                    raise ValueError(f"resume state lacks {key!r} of shape {tuple(var.shape)}")
                var.assign(tf.constant(extra[key], dtype=self.dtype))
        if "step" not in extra:
            raise ValueError("resume state lacks 'step'")
        self.step.assign(int(extra["step"]))


class _AroundTrainer:
    """What a trainer built around an Adam :class:`Trainer` (``self.inner``: its compiled loss, evaluation batch and
    variables) takes from it unchanged."""

    def eval_loss(self, batch) -> float:
        return self.inner.eval_loss(batch)

    def prepare_batch(self, A, b, x, mask):
        return self.inner.prepare_batch(A, b, x, mask)

    def get_params(self) -> dict[str, np.ndarray]:
        return self.inner.get_params()


class LbfgsTrainer(_AroundTrainer):
    """L-BFGS on one fixed batch (:func:`reference.optim.lbfgs_step`), with :class:`Trainer`'s interface.

    Arguments as :class:`Trainer`'s; ``tcfg.optimizer`` must be ``"lbfgs"`` and ``tcfg.lbfgs_memory`` is the
    number of pairs kept (``lr``, ``warmup``, ``schedule`` and ``clip_norm`` are not used).
    The batch is drawn once from ``(seed, reference.optim.LBFGS_STREAM)``; a step is one L-BFGS iteration
    (a few compiled loss-and-gradient evaluations of that batch, the line search's). The iteration
    itself is the reference's NumPy code on the flat parameter vector (a few hundred numbers for a block
    model): only the loss and its gradient run in TensorFlow, compiled as in :class:`Trainer`. What
    resuming needs is the memory of pairs ``extra/lbfgs/s``, ``extra/lbfgs/y`` (k, P) and ``extra/step``;
    the loss and gradient at the resumed point are recomputed from the same batch.
    ``train_step`` reports the line search's step length ``t`` as ``step_length`` (it has no learning rate).
    """

    def __init__(self, tcfg: TrainConfig, params: dict | None = None, *, strategy=None, structured: bool = True):
        from reference.optim import LBFGS_STREAM
        from tf_impl.data import sample_systems

        if not isinstance(tcfg, TrainConfig):
            raise ValueError(f"LbfgsTrainer takes a tf_impl.config.TrainConfig, got {type(tcfg).__name__}")
        if tcfg.optimizer != "lbfgs":
            raise ValueError(f"LbfgsTrainer runs L-BFGS; a TrainConfig with optimizer {tcfg.optimizer!r} is Trainer's")
        # the loss and gradient are the Adam trainer's compiled ones (its lr, schedule and clipping are not used)
        self.inner = t = Trainer(dataclasses.replace(tcfg, optimizer="adam"), params, strategy=strategy,
                                 structured=structured)
        self.tcfg, self.cfg, self.names, self.memory = tcfg, t.cfg, t.names, tcfg.lbfgs_memory
        self.batch = t.prepare_batch(*sample_systems(tcfg.batch_size, (tcfg.n_min, tcfg.n_max), t.kappa,
                                                     (tcfg.seed, LBFGS_STREAM), **tcfg.law, dtype=t.dtype,
                                                     jit_compile=False))
        self.shapes = {k: tuple(t.model.params[k].shape) for k in self.names}
        self.step = 0
        self.S = self.Y = np.zeros((0, sum(int(np.prod(s)) for s in self.shapes.values())))
        self._f = self._g = None

    def _fg(self, theta):
        from reference.optim import flatten_params, unflatten_params

        self.inner.model.set_params(unflatten_params(theta, self.shapes))
        loss, grads = self.inner.loss_and_grads(self.batch)
        return loss, flatten_params(grads, self.names)

    def train_step(self, batch=None) -> dict[str, float]:
        from reference.optim import flatten_params, lbfgs_step, unflatten_params

        if batch is not None:
            raise ValueError("the L-BFGS trainer works on its own fixed batch")
        theta = flatten_params(self.get_params(), self.names)
        if self._f is None:
            self._f, self._g = self._fg(theta)
        f0, gnorm = self._f, float(np.linalg.norm(self._g))
        if not (math.isfinite(f0) and math.isfinite(gnorm)):
            return {"loss": f0, "grad_norm": gnorm, "step_length": 0.0}
        theta, self._f, self._g, self.S, self.Y, t = lbfgs_step(self._fg, theta, f0, self._g, self.S, self.Y,
                                                                self.memory)
        self.inner.model.set_params(unflatten_params(theta, self.shapes))  # the line search left its last trial
        self.step += 1
        return {"loss": f0, "grad_norm": gnorm, "step_length": float(t)}

    def get_state(self):
        """``(params, extra)``: parameters and ``lbfgs/s``, ``lbfgs/y``, ``step`` (see the class docstring)."""
        extra = {"lbfgs/s": self.S.copy(), "lbfgs/y": self.Y.copy(),
                 "step": np.asarray(self.step, dtype=np.int64)}
        return self.get_params(), extra

    def set_state(self, params: dict, extra: dict) -> None:
        from reference.optim import check_lbfgs_memory

        for key in ("lbfgs/s", "lbfgs/y", "step"):
            if key not in extra:
                raise ValueError(f"resume state lacks {key!r} (a checkpoint of an L-BFGS run has it)")
        S, Y = check_lbfgs_memory(extra["lbfgs/s"], extra["lbfgs/y"], self.S.shape[1], self.memory)
        self.inner.model.set_params(params)
        self.S, self.Y, self.step = S, Y, int(extra["step"])
        self._f = self._g = None


class GreedyTrainer(_AroundTrainer):
    """Layer-wise least squares on spectra (:func:`reference.greedy.greedy_fit`), with :class:`Trainer`'s interface.

    For an equivariant model (``ModelConfig.equivariant``; docs/concepts.md, sections 11-12). The training data are
    ``batch_size`` spectra of ``n_max`` eigenvalues, drawn once from ``(seed, reference.optim.LBFGS_STREAM)``,
    log-uniform on ``[1/kappa_max, init_upper]`` (``kappa`` without ``kappa_max``); the loss is their expected MSE
    over ``x ~ N(0, I)``, ``mean (1 - lambda g(lambda))^2`` (:func:`reference.spectral.loss_and_grads`). Step 0
    fits the readout alone, step ``l >= 1`` fits layer ``l - 1`` with the earlier ones fixed; layers not fitted yet
    are exact no-ops, so the parameters after any step are a complete model. ``train_step`` reports the loss
    before the step (as the other trainers) and the gradient norm of the loss before the step; no rate (there is
    none: ``tf_impl.train`` logs Adam's ``lr`` and L-BFGS's ``step_length`` only). The resume state is
    ``extra/step``: the fitted layers are read back from the parameters.
    """

    def __init__(self, tcfg: TrainConfig, params: dict | None = None, *, strategy=None):
        from reference.greedy import check_greedy_config
        from reference.optim import LBFGS_STREAM

        if not isinstance(tcfg, TrainConfig) or tcfg.optimizer != "greedy":
            raise ValueError("GreedyTrainer takes a tf_impl.config.TrainConfig with optimizer 'greedy'")
        # the evaluation is the Adam trainer's compiled loss (its optimiser settings are not used)
        self.inner = Trainer(dataclasses.replace(tcfg, optimizer="adam", init_upper=1.0), params, strategy=strategy)
        self.tcfg, self.cfg = tcfg, self.inner.cfg
        check_greedy_config(self.cfg)
        kappa_max = tcfg.kappa if tcfg.kappa_max is None else tcfg.kappa_max
        rng = np.random.default_rng([tcfg.seed, LBFGS_STREAM])
        self.lam = np.exp(rng.uniform(math.log(1.0 / kappa_max), math.log(tcfg.init_upper),
                                      (tcfg.batch_size, tcfg.n_max)))  # (B, n_max)
        self.step = 0
        self.layers, self.w = [], None
        if params is None:  # a fresh fit: every layer a no-op until fitted (the random start is not used)
            self.inner.model.set_params(self._params())

    def _params(self) -> dict:
        from reference.greedy import to_params

        w = np.zeros(self.cfg.n_identity + 1) if self.w is None else self.w
        return to_params(self.cfg, self.layers, w)

    def _loss_and_gnorm(self) -> tuple[float, float]:
        from reference.spectral import loss_and_grads

        loss, grads = loss_and_grads(self.get_params(), self.cfg, self.lam)
        return loss, float(math.sqrt(sum(float((g * g).sum()) for g in grads.values())))

    def train_step(self, batch=None) -> dict[str, float]:
        from reference.greedy import greedy_stage

        if batch is not None:
            raise ValueError("the greedy trainer fits its own fixed spectra")
        loss, gnorm = self._loss_and_gnorm()
        self.layers, self.w, _ = greedy_stage(self.cfg, self.lam, self.layers, self.w, seed=self.tcfg.seed)
        self.inner.model.set_params(self._params())
        self.step += 1
        return {"loss": loss, "grad_norm": gnorm}

    def get_state(self):
        """``(params, extra)``: the parameters (which hold the fitted layers and readout) and ``step``."""
        return self.get_params(), {"step": np.asarray(self.step, dtype=np.int64)}

    def set_state(self, params: dict, extra: dict) -> None:
        """Continue a fit: ``step`` stages done, read back from ``params`` (the wide blocks of the fitted layers, the
        readout in the last layer's ``a`` row of ``P``)."""
        if "step" not in extra:
            raise ValueError("resume state lacks 'step' (a checkpoint of a greedy run has it)")
        step = int(extra["step"])
        if not 0 <= step <= self.cfg.n_layers:
            raise ValueError(f"resume state step {step} is not in [0, {self.cfg.n_layers}]")
        from reference.spectral import wide_groups

        wi = wide_groups(self.cfg)
        H = self.cfg.n_heads
        sub = np.ix_(range(H), wi, wi)
        self.layers = [(np.asarray(params[f"layers.{l}.P"])[sub], np.asarray(params[f"layers.{l}.Q"])[sub])
                       for l in range(max(step - 1, 0))]
        self.w = np.asarray(params[f"layers.{self.cfg.n_layers - 1}.P"])[0, 0, wi] if step >= 1 else None
        self.step = step
        self.inner.model.set_params(self._params())
