"""Train a linear Transformer solver: ``python -m tf_impl.train --preset NAME [--key value ...]``.

Every setting is a field of the frozen dataclass :class:`tf_impl.config.TrainConfig`; presets,
overrides and the parser are in :mod:`tf_impl.config`. This module is the run itself.

What a run does:

* prints the resolved config (it is also stored in every checkpoint's ``__meta__`` JSON);
* trains with the XLA-compiled step of :class:`tf_impl.optim.Trainer` (on-device sampling of the
  batch of step ``t`` from the stateless seed ``(seed, t)``, forward, gradient, clipping, Adam),
  on every GPU with ``tf.distribute`` when there are several (:mod:`tf_impl.distribute`);
* shows a tqdm bar (loss, steps/s) and writes TensorBoard summaries to ``OUT/tb`` (``loss``,
  ``grad_norm``, ``learning_rate`` (Adam) or ``line_search_step`` (L-BFGS; :data:`RATES`) every step,
  ``eval_loss`` every ``eval_every`` steps, on a fixed batch drawn from the seed pair ``(seed, -1)`` that no
  training step uses);
* writes ``OUT/ckpt.npz`` every ``ckpt_every`` steps and at the end: parameters, config, meta
  and the resume state (``extra/adam_m/<name>``, ``extra/adam_v/<name>``, ``extra/step``; the data
  needs nothing else since it is a function of ``(seed, step)``). Writes are atomic.
  ``--resume`` continues the run found in ``OUT/ckpt.npz`` (or starts fresh if there is none),
  and gives the same final parameters as an uninterrupted run;
* at the end writes ``OUT/final.npz`` (parameters, config, meta with the evaluation; readable by
  :func:`reference.load_checkpoint`) and prints a table: for each training size N, the MSE of the
  model, of conjugate gradient with as many iterations as the model has layers, and of the zero
  predictor, on fresh systems (``reference.evaluation.eval_systems``: a seed no run trains on);
* stops with exit status 1, writing nothing, when the run diverges: a non-finite gradient norm, or
  the training loss above ``diverge_factor`` times the zero predictor's loss, and not below the lowest loss of
  the run so far, for ``diverge_patience`` steps in a row (a run whose loss keeps falling, as L-BFGS's does at
  every accepted step, has not diverged, however high it started; checkpoints are never written during such
  a streak);
* locks ``OUT`` for the run (an OS file lock on ``OUT/.lock``: a second run on the same folder stops
  with an error; the lock dies with the process, so a killed run never blocks ``--resume``), and
  removes the temporary files a killed run left in ``OUT``.

Exit status: 0 done, 1 the run diverged (non-finite loss or gradient, or the rule above), 2 bad
arguments, configuration or output folder, 130 interrupted by SIGINT (Ctrl-C) and 143 by SIGTERM (what a
scheduler or a cloud preemption sends): during training the signal is acted on at the end of the step under
way, which is written to ``OUT/ckpt.npz``; one line says so, and ``--resume`` continues (a second signal stops
at once, from the last checkpoint written).
The steps of :func:`run`: :func:`_load_start` (fresh, resumed or from a checkpoint), :func:`build_trainer`,
:func:`train_loop` (with :func:`step_problem`, the divergence rule) and :func:`finish` (the table, ``final.npz``).
``main(argv, on_step=f)`` / ``run(tcfg, on_step=f)`` call ``f(step)`` after every step (the tests
slow a run down this way, ``tests/slow_train.py``, to kill or interrupt it mid-way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from reference.config import ModelConfig
from tf_impl.config import PRESETS, RESUME_MAY_CHANGE, TrainConfig, build_parser, parse_config  # noqa: F401

# ----------------------------------------------------------------------------------------------
# the run


def _print_config(tcfg: TrainConfig) -> None:
    print("TrainConfig:")
    for f in dataclasses.fields(tcfg):
        print(f"  {f.name:16s} = {getattr(tcfg, f.name)!r}")
    sys.stdout.flush()


def _load_start(tcfg: TrainConfig, mcfg, ckpt_path: str):
    """``(params, extra, start_step, ancestors)``: resumed, initialised from a checkpoint, or fresh;
    ``ancestors`` is the lineage of the runs before this one, validated and cleaned as a new checkpoint may copy
    it (:func:`reference.checkpoint.clean_lineage`)."""
    from reference.checkpoint import clean_lineage, lineage_of, load_checkpoint, load_checkpoint_extra
    from reference.model import init_params

    if tcfg.resume and os.path.isfile(ckpt_path):
        params, cfg = load_checkpoint(ckpt_path)
        meta, extra = load_checkpoint_extra(ckpt_path)
        # a field the checkpoint does not record (written before the field existed) had its default
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        if not isinstance(meta.get("train_config", {}), dict):
            raise ValueError(f"--resume: {ckpt_path} has metadata whose train_config is not a JSON object")
        stored = {**defaults, **meta.get("train_config", {})}
        diff = sorted(k for k in set(stored) | set(tcfg.to_dict())
                      if k not in RESUME_MAY_CHANGE and stored.get(k) != tcfg.to_dict().get(k))
        if diff or cfg != mcfg:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {tcfg.to_dict().get(k)!r}" for k in diff)
            raise ValueError(f"--resume: {ckpt_path} was written by a run with other settings ({details}); "
                             f"resume with the same settings or use another --out")
        if "step" not in extra:
            raise ValueError(f"--resume: {ckpt_path} has no resume state (no extra/step); it is not a checkpoint "
                             "written during training (final.npz?) - use another --out, or --init-from it")
        step = extra["step"]
        if step.shape != () or step.dtype.kind not in "iuf" or not float(step).is_integer() or float(step) < 0:
            raise ValueError(f"--resume: {ckpt_path} has extra/step {step.tolist()!r:.60}, not one integer >= 0")
        step = int(step)
        print(f"resuming {ckpt_path} at step {step}")
        return params, extra, step, clean_lineage(lineage_of(meta, ckpt_path)[:-1], ckpt_path)  # last: this run
    if tcfg.resume:
        print(f"--resume: no checkpoint in {ckpt_path}; starting a fresh run")
    if tcfg.init_from is not None:
        from reference.model import start_from

        params, cfg = load_checkpoint(tcfg.init_from)
        try:  # the start computes exactly what the checkpoint does, or the run is refused
            params = start_from(params, cfg, mcfg, seed=tcfg.seed)
        except ValueError as e:
            raise ValueError(f"--init-from {tcfg.init_from}: {e}") from None
        ancestors = clean_lineage(lineage_of(load_checkpoint_extra(tcfg.init_from)[0], tcfg.init_from), tcfg.init_from)
        if cfg.n_layers < mcfg.n_layers:  # layer growth: new layers start as no-ops (P = 0)
            print(f"starting from {tcfg.init_from}, grown from {cfg.n_layers} to {mcfg.n_layers} layers "
                  "(new layers: P = 0, Q random; the grown model starts as the checkpoint's)")
        else:
            print(f"starting from {tcfg.init_from}")
        return params, None, 0, ancestors
    if tcfg.init == "newton-schulz":
        from reference.constructions import newton_schulz_init

        kappa = tcfg.kappa if tcfg.kappa_max is None else tcfg.kappa_max
        print(f"starting from the Newton-Schulz construction for the spectrum [1/{kappa:g}, {tcfg.init_upper:g}]")
        return newton_schulz_init(mcfg, kappa, n=tcfg.n_max, seed=tcfg.seed, upper=tcfg.init_upper), None, 0, []
    return init_params(mcfg, tcfg.seed), None, 0, []


def evaluation_table(params, mcfg, tcfg: TrainConfig) -> list[dict]:
    """Per training size N: MSE of the model, of CG with L iterations and of x_hat = 0, on fresh systems
    (:func:`reference.evaluation.model_vs_cg` with this twin's forward, in float64)."""
    from reference.evaluation import model_vs_cg
    from tf_impl.model import forward

    def tf_forward(params, mcfg, A, b, mask):
        return forward(params, mcfg, A, b, mask, structured=True, jit_compile=False)

    return model_vs_cg(params, mcfg, range(tcfg.n_min, tcfg.n_max + 1), tcfg.kappa_range, tcfg.eval_systems,
                       forward=tf_forward, **tcfg.law)


def format_table(rows: list[dict], n_layers: int, kappa, n_systems: int, metric: str = "mse") -> str:
    """The final table; ``metric`` "mse" (mean of (1/N)||x_hat - x||^2) or "rel" (mean of ||x_hat - x|| / ||x||)."""
    kappa = f"{kappa:g}" if isinstance(kappa, (int, float)) else f"log-uniform in [{kappa[0]:g}, {kappa[1]:g}]"
    what = "MSE = mean over systems of (1/N)||x_hat - x||^2" if metric == "mse" else \
        "relative error = mean over systems of ||x_hat - x|| / ||x||"
    lines = [f"final evaluation: {n_systems} fresh systems per N, kappa {kappa}, x0 = 0; {what}",
             f"{'N':>4s}  {f'model ({n_layers} layers)':>18s}  {f'CG-{n_layers}':>12s}  {'zero':>12s}  model/CG"]
    for r in rows:
        m, c, z = (r[f"{metric}_{k}"] for k in ("model", "cg", "zero"))
        ratio = f"{m / c:8.3g}" if r["mse_cg"] > 1e-20 else "  (CG exact: N <= L)"
        lines.append(f"{r['n']:4d}  {m:18.3e}  {c:12.3e}  {z:12.3e}  {ratio}")
    mean = {k: float(np.mean([r[f"{metric}_{k}"] for r in rows])) for k in ("model", "cg", "zero")}
    lines.append(f"{'mean':>4s}  {mean['model']:18.3e}  {mean['cg']:12.3e}  {mean['zero']:12.3e}")
    return "\n".join(lines)


def _scalar_summary(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar without the ``tensorboard`` package: ``tf.summary.write`` with the
    metadata of TensorBoard's "scalars" plugin (what ``tf.summary.scalar`` writes when it is installed)."""
    from tensorflow.core.framework import summary_pb2

    from tf_impl._quiet import tf

    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=md.SerializeToString())


def prepare_out(out: str):
    """Create ``out``, take its lock and remove temporary checkpoint files a killed run left there.

    Returns the open lock file (keep it open for the whole run: the OS lock dies with the process, so
    a run killed by any signal never blocks the next one). Raises ``ValueError`` with one clear line
    when ``out`` is a file, cannot be created or written, or another live run holds it.
    """
    import fcntl

    from reference.checkpoint import TMP_PATTERN

    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder")
    for name in ("ckpt.npz", "final.npz"):  # written at the end or every ckpt_every steps: refused now, not then
        if os.path.isdir(os.path.join(out, name)):
            raise ValueError(f"--out {out!r}: {os.path.join(out, name)} is a folder; the run writes its checkpoint "
                             "there: remove it or use another --out")
    try:
        os.makedirs(out, exist_ok=True)
        lock = open(os.path.join(out, ".lock"), "a+")  # noqa: SIM115 (held open for the run)
    except OSError as e:
        raise ValueError(f"cannot write to --out {out!r}: {e.strerror or e}") from None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ValueError(f"--out {out!r} is in use by a running training run ({holder}); wait for it or use "
                         "another --out") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    for name in os.listdir(out):
        if TMP_PATTERN.match(name):
            os.remove(os.path.join(out, name))
    return lock


@dataclasses.dataclass
class _Run:
    """What the steps of a run share: its config, model config, trainer, output folder, whether this process
    writes (the chief), the lineage of the runs before it and the metrics its checkpoints record."""

    tcfg: TrainConfig
    mcfg: ModelConfig
    trainer: object  # tf_impl.optim.Trainer or LbfgsTrainer
    out: str
    chief: bool
    ancestors: list
    metrics: dict = dataclasses.field(default_factory=dict)

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.out, "ckpt.npz")

    @property
    def final_path(self) -> str:
        return os.path.join(self.out, "final.npz")

    def save(self, path: str, with_state: bool, extra_meta: dict | None = None) -> None:
        """Write the trainer's parameters (and, ``with_state``, its resume state) with the run's metadata; the
        chief only."""
        from reference.checkpoint import lineage_entry, save_checkpoint

        if not self.chief:
            return
        p, state = self.trainer.get_state()
        step = int(state["step"])
        meta = {"train_config": self.tcfg.to_dict(), "step": step, "package": "tf_impl", "metrics": self.metrics,
                **(extra_meta or {}),
                "lineage": self.ancestors + [lineage_entry(self.tcfg.to_dict(), step, self.metrics.get("train_loss"))]}
        save_checkpoint(path, p, self.mcfg, meta=meta, extra=state if with_state else None)


def run(tcfg: TrainConfig, on_step=None) -> int:
    """Train according to ``tcfg``; returns the exit status (0 done, 1 the run diverged or failed, 130
    interrupted). ``on_step``: called with the step number after every step (or None)."""
    from tf_impl._quiet import tf
    from tf_impl.distribute import describe, is_chief, select_strategy

    tf.get_logger().setLevel("ERROR")  # one retracing warning per evaluated size N is expected
    strategy = select_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF ops
    chief = is_chief()
    _print_config(tcfg)
    print(f"devices: {describe(strategy)}")
    mcfg, out = tcfg.model_config(), tcfg.out_dir
    lock = prepare_out(out) if chief else None  # noqa: F841 (held until the process ends)
    params, extra, step, ancestors = _load_start(tcfg, mcfg, os.path.join(out, "ckpt.npz"))
    trainer = build_trainer(tcfg, params, extra, strategy)
    state = _Run(tcfg, mcfg, trainer, out, chief, ancestors)
    status = train_loop(state, step, on_step)
    return status if status != 0 else finish(state)


def build_trainer(tcfg: TrainConfig, params: dict, extra: dict | None, strategy):
    """The trainer of ``tcfg.optimizer`` (:class:`tf_impl.optim.Trainer` for Adam, ``LbfgsTrainer``,
    ``GreedyTrainer``) from ``params``, given the resume state ``extra`` when there is one."""
    from tf_impl.optim import GreedyTrainer, LbfgsTrainer, Trainer

    kind = {"lbfgs": LbfgsTrainer, "greedy": GreedyTrainer}.get(tcfg.optimizer, Trainer)
    trainer = kind(tcfg, params, strategy=strategy)
    if extra is not None:
        trainer.set_state(params, extra)
    return trainer


def eval_batch_of(tcfg: TrainConfig, trainer):
    """The fixed evaluation batch, drawn from the seed pair ``(seed, -1)`` that no training step uses."""
    from tf_impl.data import sample_systems

    return trainer.prepare_batch(*sample_systems(tcfg.batch_size, (tcfg.n_min, tcfg.n_max), tcfg.kappa_range,
                                                 (tcfg.seed, -1), **tcfg.law, dtype=tcfg.dtype, jit_compile=False))


def divergence_threshold(tcfg: TrainConfig, eval_batch) -> float:
    """``diverge_factor`` times the loss of ``x_hat = 0`` on the evaluation batch (the same loss as training's:
    1 for the relative loss); ``inf`` when ``diverge_factor`` is 0 (off)."""
    from tf_impl._quiet import tf

    _, _, x_eval, m_eval = eval_batch
    d_eval = tf.reduce_sum(x_eval * x_eval * m_eval, axis=1)  # (B,)
    zero_loss = 1.0 if tcfg.loss == "relative" else float(tf.reduce_mean(d_eval / tf.reduce_sum(m_eval, axis=1)))
    return tcfg.diverge_factor * zero_loss if tcfg.diverge_factor else math.inf


def step_problem(tcfg: TrainConfig, stats: dict, step: int, above: int, threshold: float) -> str | None:
    """Why the run must stop after ``step`` (a non-finite loss or gradient norm, or ``above`` steps in a row
    above the divergence ``threshold`` without a new lowest loss), or None."""
    if not math.isfinite(stats["loss"]):
        return f"non-finite loss ({stats['loss']}) at step {step}; the parameters were not updated"
    if not math.isfinite(stats["grad_norm"]):
        return (f"non-finite gradient norm ({stats['grad_norm']}) at step {step} (loss {stats['loss']:.3g}); the "
                "parameters were not updated")
    if above >= max(tcfg.diverge_patience, 1):
        return (f"the run diverged: the training loss stayed above {tcfg.diverge_factor:g} x the zero predictor's "
                f"loss ({threshold:.3g}), without a new lowest loss, for {above} steps, up to step {step} (loss "
                f"{stats['loss']:.3g})")
    return None


def train_loop(run: _Run, step: int, on_step=None) -> int:
    """Train from ``step`` to ``tcfg.steps``, with TensorBoard summaries, evaluations and checkpoints on the way:
    0 when done, 1 when the run diverged (nothing written), 130 when interrupted."""
    from tqdm import tqdm

    from tf_impl._quiet import tf

    tcfg, trainer = run.tcfg, run.trainer
    eval_batch = eval_batch_of(tcfg, trainer)
    threshold = divergence_threshold(tcfg, eval_batch)
    if run.chief:
        writer = tf.summary.create_file_writer(os.path.join(run.out, "tb"))
    else:
        writer = tf.summary.create_noop_writer()
    above, lowest = 0, math.inf  # steps in a row above the threshold without a new lowest loss; the lowest loss
    start_step, t_start = step, time.time()
    print("compiling the train step..." if tcfg.mode != "eager" else "first step...", flush=True)
    bar = None  # created after the first (compiled) step, so that its rate and time estimate are real
    try:
        with writer.as_default(), deferred_signals() as received:
            while step < tcfg.steps:
                stats = trainer.train_step()
                if bar is None:
                    bar = tqdm(total=tcfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                               mininterval=0.5)
                above = above + 1 if stats["loss"] > threshold and not stats["loss"] < lowest else 0
                lowest = min(lowest, stats["loss"])
                problem = step_problem(tcfg, stats, step, above, threshold)
                if problem is not None:
                    bar.close()
                    _say_stopped(problem, run.ckpt_path, tcfg)
                    return 1
                _scalar_summary("loss", stats["loss"], step=step)
                _scalar_summary("grad_norm", stats["grad_norm"], step=step)
                for rate, tag in _rates_of(stats):
                    _scalar_summary(tag, stats[rate], step=step)
                run.metrics["train_loss"] = stats["loss"]
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3e}", refresh=False)
                if tcfg.eval_every and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                    evaluate_now(run, eval_batch, stats, step, bar)
                if tcfg.ckpt_every and step % tcfg.ckpt_every == 0 and step < tcfg.steps and above == 0:
                    run.save(run.ckpt_path, with_state=True)  # never while the loss is above the divergence threshold
                if on_step is not None:
                    on_step(step)
                if received:  # SIGINT or SIGTERM during this step: keep it, and stop
                    if bar is not None:
                        bar.close()
                    if above == 0:  # never while the loss is above the divergence threshold
                        run.save(run.ckpt_path, with_state=True)
                    _say_interrupted(step, start_step, run.ckpt_path, received[0])
                    return _exit_status(received[0])
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        _say_interrupted(step, start_step, run.ckpt_path, signal.SIGTERM if isinstance(e, Terminated) else None)
        return _exit_status(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    if bar is not None:
        bar.close()
    writer.flush()
    run.metrics["train_time_s"] = time.time() - t_start
    if above:
        print(f"error: the run ended with the training loss above the divergence threshold ({threshold:.3g}) for "
              f"the last {above} steps; nothing written. Last good checkpoint: {run.ckpt_path}", file=sys.stderr)
        return 1
    return 0


def _say_stopped(problem: str, ckpt_path: str, tcfg: TrainConfig) -> None:
    last = f"{ckpt_path} (step {_ckpt_step(ckpt_path)})" if os.path.isfile(ckpt_path) else "none written"
    hint = "a smaller --lr or --init-scale" if tcfg.optimizer == "adam" else \
        f"a smaller --init-scale ({tcfg.optimizer} takes no --lr)"
    print(f"error: {problem}; stopping without writing. Last good checkpoint: {last}. Try {hint}.", file=sys.stderr)


RATES = {"lr": ("learning_rate", "lr"), "step_length": ("line_search_step", "line-search step")}
"""A step's rate, by the key a trainer reports it under: Adam's learning rate ``lr``, L-BFGS's line-search step
``step_length`` (not a learning rate, never printed as one); the greedy fit reports none. Key -> (TensorBoard tag,
printed name)."""


def _rates_of(stats: dict) -> list[tuple[str, str]]:
    """``[(key, TensorBoard tag)]`` of the rates a step reported (:data:`RATES`)."""
    return [(k, tag) for k, (tag, _) in RATES.items() if k in stats]


def _say_interrupted(step, start_step, ckpt_path: str, signum=None) -> None:
    """The one line of an interrupted run: where it stopped, which signal, the last checkpoint (``step`` None:
    before the first step or after the last)."""
    last = f"at step {_ckpt_step(ckpt_path)} ({ckpt_path})" if os.path.isfile(ckpt_path) else "none written yet"
    by = f" by {signal.Signals(signum).name}" if signum is not None else ""
    where = f"at step {step} (started at {start_step})" if step is not None else "outside the training steps"
    print(f"interrupted{by} {where}; last checkpoint {last}; continue with the same options and --resume",
          file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as Ctrl-C's ``KeyboardInterrupt`` is (outside the training steps: :func:`main`)."""


def _exit_status(signum) -> int:
    """``128 + signal``: 130 for SIGINT, 143 for SIGTERM (the shells' convention)."""
    return 128 + int(signum)


@contextlib.contextmanager
def deferred_signals():
    """While the training steps run, SIGINT and SIGTERM are recorded in the yielded list instead of stopping the
    step under way, so that the loop can write a consistent checkpoint at its end; a second signal raises
    ``KeyboardInterrupt`` at once. A signal the process ignores (a background job's SIGINT) stays ignored, and
    outside the main thread (where handlers cannot be set) nothing changes."""
    received = []

    def record(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in old.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, record)
    try:
        yield received
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), as SIGINT raises ``KeyboardInterrupt``; unless
    the process ignores it or this is not the main thread."""
    def raise_terminated(signum, frame):
        raise Terminated

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def evaluate_now(run: _Run, eval_batch, stats: dict, step: int, bar) -> None:
    """The loss on the evaluation batch after ``step`` steps: recorded in the metrics and TensorBoard, printed."""
    ev = run.trainer.eval_loss(eval_batch)
    run.metrics["eval_loss"] = ev
    _scalar_summary("eval_loss", ev, step=step)
    rates = "".join(f"  {name} {stats[k]:.2e}" for k, (_, name) in RATES.items() if k in stats)
    bar.write(f"step {step:6d}  train loss {stats['loss']:.4e}  eval loss {ev:.4e}{rates}")


def finish(run: _Run) -> int:
    """After the last step: the resume checkpoint, the final table (printed and stored) and ``final.npz``."""
    tcfg = run.tcfg
    run.save(run.ckpt_path, with_state=True)
    rows = evaluation_table(run.trainer.get_params(), run.mcfg, tcfg)
    print(format_table(rows, run.mcfg.n_layers, tcfg.kappa_range, tcfg.eval_systems,
                       "rel" if tcfg.loss == "relative" else "mse"))
    run.save(run.final_path, with_state=False, extra_meta={"evaluation": rows})
    if run.chief:
        print(f"final checkpoint: {run.final_path}  (resume state: {run.ckpt_path}; TensorBoard: "
              f"{os.path.join(run.out, 'tb')})")
    return 0


def _ckpt_step(path: str):
    from reference.checkpoint import load_checkpoint_extra

    try:
        return json.dumps(load_checkpoint_extra(path)[0].get("step"))
    except ValueError:
        return "?"


def main(argv=None, on_step=None) -> int:
    try:
        tcfg = parse_config(argv)
        from tf_impl.distribute import check_tf_config

        check_tf_config()  # before TensorFlow starts
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quiet_tensorflow(tcfg.verbose)
    try:
        with terminate_as_interrupt():
            return run(tcfg, on_step)
    except KeyboardInterrupt as e:  # before the first step or after the last (the loop handles its own)
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        _say_interrupted(None, None, os.path.join(tcfg.out_dir, "ckpt.npz"), signum)
        return _exit_status(signum)
    except ValueError as e:  # a bad checkpoint, an incompatible --resume / --init-from, an unusable --out
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk, during the run
        print(f"error: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}", file=sys.stderr)
        return 1


def quiet_tensorflow(verbose: bool) -> None:
    """Before TensorFlow is imported: hide its C++ log lines (a ``cuInit`` error on machines without a
    GPU, XLA notices) unless ``verbose`` or the user set ``TF_CPP_MIN_LOG_LEVEL``."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


if __name__ == "__main__":
    sys.exit(main())
