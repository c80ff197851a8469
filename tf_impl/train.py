"""Train a linear Transformer solver: ``python -m tf_impl.train --preset NAME [--key value ...]``.

Every setting is a field of the frozen dataclass :class:`TrainConfig` (model and training). A run
starts from the preset's values (:data:`PRESETS`, default ``small``), then applies the
``--key value`` overrides (``--batch-size 512`` or ``--batch_size 512``); unknown keys and values
of the wrong type are errors. ``--help`` lists every field with its meaning and default.

What a run does:

* prints the resolved config (it is also stored in every checkpoint's ``__meta__`` JSON);
* trains with the XLA-compiled step of :class:`tf_impl.optim.Trainer` (on-device sampling of the
  batch of step ``t`` from the stateless seed ``(seed, t)``, forward, gradient, clipping, Adam),
  on every GPU with ``tf.distribute`` when there are several (:mod:`tf_impl.distribute`);
* shows a tqdm bar (loss, steps/s) and writes TensorBoard summaries to ``OUT/tb`` (``loss``,
  ``grad_norm``, ``lr`` every step, ``eval_loss`` every ``eval_every`` steps, on a fixed batch
  drawn from the seed pair ``(seed, -1)`` that no training step uses);
* writes ``OUT/ckpt.npz`` every ``ckpt_every`` steps and at the end: parameters, config, meta
  and the resume state (``extra/adam_m/<name>``, ``extra/adam_v/<name>``, ``extra/step``; the data
  needs nothing else since it is a function of ``(seed, step)``). Writes are atomic.
  ``--resume`` continues the run found in ``OUT/ckpt.npz`` (or starts fresh if there is none),
  and gives the same final parameters as an uninterrupted run;
* stops with exit status 1 and a message if the loss becomes NaN/Inf, without writing anything:
  ``OUT/ckpt.npz`` stays the last good checkpoint;
* at the end writes ``OUT/final.npz`` (parameters, config, meta with the evaluation; readable by
  :func:`reference.load_checkpoint`) and prints a table: for each training size N, the MSE of the
  model, of conjugate gradient with as many iterations as the model has layers, and of the zero
  predictor, on fresh systems (``reference.evaluation.eval_systems``: a seed no run trains on).

* stops with exit status 1, writing nothing, when the run diverges: a non-finite gradient norm, or
  the training loss above ``diverge_factor`` times the zero predictor's loss for ``diverge_patience``
  steps in a row (checkpoints are never written while the loss is above that threshold);
* locks ``OUT`` for the run (an OS file lock on ``OUT/.lock``: a second run on the same folder stops
  with an error; the lock dies with the process, so a killed run never blocks ``--resume``), and
  removes the temporary files a killed run left in ``OUT``.

Exit status: 0 done, 1 the run diverged (non-finite loss or gradient, or the rule above), 2 bad
arguments, configuration or output folder, 130 interrupted (Ctrl-C: one line says where the last
checkpoint is; ``--resume`` continues).
The environment variable ``TF_IMPL_TRAIN_STEP_DELAY`` (seconds) sleeps after every step: a hook
for the resume test, which kills a run mid-way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
import types
import typing
from dataclasses import dataclass, field

import numpy as np

FIELD_GROUPS = ("run", "model", "data", "optimisation", "bookkeeping")


def _f(default, help: str, group: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; the defaults are the ``small`` preset."""

    preset: str = _f("small", "preset the other values start from (see PRESETS below)", "run")
    # model (reference.ModelConfig)
    parametrization: str = _f("block", "'block': P, Q of scalar*I / scalar*1 blocks, any N; 'full': free D x D, "
                                       "one N", "model",
                                 ("block", "full"))
    n_layers: int = _f(3, "layers (no weight sharing); the baseline CG gets as many iterations", "model")
    n_heads: int = _f(1, "attention heads per layer, summed", "model")
    n_identity: int = _f(3, "block: copies K of the basis vector u_i in the token", "model")
    embed_dim: int = _f(27, "full: width d_h of the learned per-equation embedding", "model")
    attention_norm: str = _f("none", "'none': plain sum over the N keys; 'n': the sum divided by N", "model",
                             ("none", "n"))
    init_scale: float = _f(0.05, "std of the Gaussian initial P, Q entries", "model")
    # data
    n_min: int = _f(2, "smallest system size N (each system draws N uniformly in [n_min, n_max])", "data")
    n_max: int = _f(6, "largest system size N (the padded size); full: n_min = n_max = n", "data")
    kappa: float = _f(10.0, "condition number of every training system (the smallest one with --kappa-max)", "data")
    kappa_max: float | None = _f(None, "largest condition number: kappa log-uniform in [kappa, kappa_max] per "
                                       "system ('none': every system has kappa)", "data")
    spectrum: str = _f("uniform", "eigenvalues on [1/kappa, 1]: 'uniform', 'loguniform', 'clustered' (two clusters "
                                  "at the ends) or 'mix' (one of the three per system)", "data",
                       ("uniform", "loguniform", "clustered", "mix"))
    rhs: str = _f("solution", "right-hand side: 'solution' (x ~ N(0, I), b = A x), 'normal' (b ~ N(0, I)) or "
                              "'mix' (one of the two per system)", "data", ("solution", "normal", "mix"))
    normalize_rhs: bool = _f(False, "scale b (and x) to ||b|| = sqrt(N), as solve() feeds a model", "data")
    loss: str = _f("mse", "'mse': mean of ||x_hat - x||^2 / N; 'relative': mean of ||x_hat - x||^2 / ||x||^2",
                   "optimisation", ("mse", "relative"))
    # optimisation
    batch_size: int = _f(256, "systems per step (global, over all replicas)", "optimisation")
    steps: int = _f(3000, "training steps", "optimisation")
    lr: float = _f(5e-3, "peak Adam learning rate", "optimisation")
    warmup: int = _f(150, "linear warm-up steps", "optimisation")
    schedule: str = _f("cosine", "after warm-up: 'constant' or 'cosine' decay to 0.1 lr", "optimisation",
                       ("constant", "cosine"))
    clip_norm: float | None = _f(10.0, "global-norm gradient clipping ('none': off)", "optimisation")
    seed: int = _f(0, "initialisation and data seed (batch t is drawn from (seed, t))", "optimisation")
    dtype: str = _f("float32", "'float32' (training) or 'float64' (checking)", "optimisation",
                    ("float32", "float64"))
    mode: str = _f("xla", "'xla': one XLA-compiled step; 'graph': tf.function without XLA; 'eager': debug",
                   "optimisation", ("xla", "graph", "eager"))
    # bookkeeping
    eval_every: int = _f(250, "steps between evaluations on the fixed eval batch (0: never)", "bookkeeping")
    ckpt_every: int = _f(500, "steps between checkpoints OUT/ckpt.npz (0: only at the end)", "bookkeeping")
    eval_systems: int = _f(1000, "fresh systems per N in the final table", "bookkeeping")
    out: str | None = _f(None, "output folder (default runs/<preset>)", "bookkeeping")
    init_from: str | None = _f(None, "checkpoint to start from (block-finetune: required); one with fewer "
                                     "layers is grown: its layers first, then no-op layers (P = 0)", "bookkeeping")
    resume: bool = _f(False, "continue the run in OUT/ckpt.npz if there is one", "bookkeeping")
    verbose: bool = _f(False, "show TensorFlow's own log lines (hidden by default)", "bookkeeping")
    diverge_factor: float = _f(10.0, "divergence: stop (exit 1) when the training loss stays above this many times "
                                     "the zero predictor's loss (x_hat = 0) on the evaluation batch for "
                                     "diverge_patience steps in a row (0: off)", "bookkeeping")
    diverge_patience: int = _f(20, "steps in a row above the divergence threshold before the run stops",
                               "bookkeeping")

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")

        for f in dataclasses.fields(self):  # types first (the dataclass may be built from Python)
            v = getattr(self, f.name)
            need(_type_ok(v, _field_types()[f.name]), f"{f.name} must be {_type_name(f.name)}, got {v!r}")
        need(self.preset in PRESETS, f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        need(self.parametrization in ("block", "full"), f"parametrization must be 'block' or 'full', got "
                                                        f"{self.parametrization!r}")
        need(self.attention_norm in ("none", "n"), f"attention_norm must be 'none' or 'n', got {self.attention_norm!r}")
        need(self.schedule in ("constant", "cosine"), f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        need(self.dtype in ("float32", "float64"), f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        need(self.mode in ("xla", "graph", "eager"), f"mode must be 'xla', 'graph' or 'eager', got {self.mode!r}")
        for name in ("n_layers", "n_heads", "batch_size", "eval_systems"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_identity", "embed_dim", "steps", "warmup", "eval_every", "ckpt_every", "diverge_patience"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(2 <= self.n_min <= self.n_max, f"sizes must satisfy 2 <= n_min <= n_max, got ({self.n_min}, {self.n_max})")
        need(math.isfinite(self.kappa) and self.kappa >= 1, f"kappa must be a finite number >= 1, got {self.kappa}")
        need(self.kappa_max is None or (math.isfinite(self.kappa_max) and self.kappa_max >= self.kappa),
             f"kappa_max must be a finite number >= kappa ({self.kappa}) or none, got {self.kappa_max}")
        for name, allowed in (("spectrum", ("uniform", "loguniform", "clustered", "mix")),
                              ("rhs", ("solution", "normal", "mix")), ("loss", ("mse", "relative"))):
            need(getattr(self, name) in allowed, f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.init_scale > 0, f"init_scale must be > 0, got {self.init_scale}")
        need(self.clip_norm is None or self.clip_norm > 0, f"clip_norm must be > 0 or none, got {self.clip_norm}")
        need(math.isfinite(self.diverge_factor) and (self.diverge_factor == 0 or self.diverge_factor > 1),
             f"diverge_factor must be 0 (off) or > 1, got {self.diverge_factor}")
        need(self.out is None or self.out.strip() != "", "out must name a folder (got an empty string)")
        if self.parametrization == "full":
            need(self.n_min == self.n_max, f"the full parametrization trains on one size: n_min = n_max, "
                                           f"got ({self.n_min}, {self.n_max})")
        if self.preset == "block-finetune":
            need(self.init_from is not None, "the block-finetune preset starts from a trained model: give "
                                             "--init-from CHECKPOINT (e.g. runs/block-mixed/final.npz)")

    @property
    def out_dir(self) -> str:
        return self.out if self.out is not None else os.path.join("runs", self.preset)

    def model_config(self):
        from reference.config import ModelConfig

        return ModelConfig(parametrization=self.parametrization, n_layers=self.n_layers, n_heads=self.n_heads,
                           n_identity=self.n_identity, embed_dim=self.embed_dim,
                           n=self.n_max if self.parametrization == "full" else None,
                           attention_norm=self.attention_norm, init_scale=self.init_scale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def kappa_range(self):
        """``kappa`` as the samplers take it: a number, or ``(kappa, kappa_max)`` (log-uniform)."""
        return self.kappa if self.kappa_max is None else (self.kappa, self.kappa_max)

    @property
    def law(self) -> dict:
        """The data options of :func:`reference.data.sample_systems` other than ``kappa``."""
        return dict(spectrum=self.spectrum, rhs=self.rhs, normalize_rhs=self.normalize_rhs)


# The presets: first guesses, all in one place (docs/concepts.md, section 6; docs/conventions.md, "Optimiser").
# Each lists every field it sets; fields it does not list keep the TrainConfig defaults above.
# attention_norm: "n" for every block preset (they are compared on size generalization; "none" is
# ~10x more accurate in range but explodes beyond it, docs/concepts.md section 3), "none" for the one-size full model.
_PAPER_BLOCK = dict(parametrization="block", n_layers=4, n_heads=4, n_identity=3, attention_norm="n", init_scale=0.05,
                    kappa=10.0, batch_size=512, steps=8000, lr=3e-3, warmup=300, schedule="cosine", clip_norm=10.0,
                    eval_every=1000, ckpt_every=1000)
"""What the paper's block experiments share; each block preset below extends it."""

PRESETS: dict[str, dict] = {
    # default: block, 3 layers, N in [2, 6]; ~1-2 minutes on a 2-core CPU
    "small": dict(parametrization="block", n_layers=3, n_heads=1, attention_norm="none", init_scale=0.05,
                  n_min=2, n_max=6, kappa=10.0, batch_size=256, steps=3000, lr=5e-3, warmup=150,
                  schedule="cosine", clip_norm=10.0, eval_every=250, ckpt_every=500),
    # the paper's four experiments (docs/concepts.md, section 6): the values that trained reference/pretrained/*.npz
    # (docs/results.md says why: 4 heads and attention_norm "n" for the block models, "none" for full)
    "full-n9": dict(parametrization="full", n_layers=4, n_heads=1, embed_dim=27, attention_norm="none",
                    init_scale=0.02, n_min=9, n_max=9, kappa=10.0, batch_size=512, steps=8000, lr=1e-3,
                    warmup=300, schedule="cosine", clip_norm=10.0, eval_every=1000, ckpt_every=1000),
    "block-n9": {**_PAPER_BLOCK, "n_min": 9, "n_max": 9},
    "block-mixed": {**_PAPER_BLOCK, "n_min": 2, "n_max": 9},
    # fine-tunes block-mixed (same architecture) on larger systems: --init-from runs/block-mixed/final.npz
    "block-finetune": {**_PAPER_BLOCK, "n_min": 10, "n_max": 20, "batch_size": 256, "steps": 1200, "lr": 1e-3,
                       "warmup": 50, "eval_every": 200, "ckpt_every": 200},
    # the model for solve() on users' systems: every family, sizes to 30, kappa log-uniform in [2, 1000],
    # right-hand sides normalised as solve() feeds them, relative loss (no system family dominates)
    "broad": {**_PAPER_BLOCK, "n_min": 2, "n_max": 30, "kappa": 2.0, "kappa_max": 1000.0, "spectrum": "mix",
              "rhs": "mix", "normalize_rhs": True, "loss": "relative", "eval_every": 500, "ckpt_every": 500},
}

# fields that may differ between an interrupted run and its --resume (they change no number)
RESUME_MAY_CHANGE = ("resume", "verbose", "eval_every", "ckpt_every", "eval_systems", "mode", "diverge_factor",
                     "diverge_patience", "out")  # out: the folder the checkpoint was read from, however spelled


# ----------------------------------------------------------------------------------------------
# command line


def _field_types() -> dict:
    return typing.get_type_hints(TrainConfig)


def _base_type(tp):
    """``(base, optional)`` for ``int``, ``float``, ``str``, ``bool`` and ``X | None``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def _type_ok(v, tp) -> bool:
    base, optional = _base_type(tp)
    if v is None:
        return optional
    if base is bool:
        return isinstance(v, bool)
    if base is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if base is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, base)


def _type_name(name: str) -> str:
    base, optional = _base_type(_field_types()[name])
    return f"{'an' if base is int else 'a'} {base.__name__}" + (" or none" if optional else "")


def _parser_for(name: str):
    base, optional = _base_type(_field_types()[name])

    def parse(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        try:
            if base is int:
                return int(text)
            if base is float:
                return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_type_name(name)}, got {text!r}") from None
        return text

    parse.__name__ = base.__name__  # argparse names the type in its messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    presets = "\n".join(f"  {name:15s} " + ", ".join(f"{k}={v}" for k, v in values.items())
                        for name, values in PRESETS.items())
    parser = argparse.ArgumentParser(
        prog="python -m tf_impl.train", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a linear Transformer that solves A x = b (TensorFlow/XLA). Options are the fields "
                    "of tf_impl.train.TrainConfig; a run starts from --preset's values, then applies the "
                    "other options.",
        epilog=f"presets:\n{presets}\n\noutputs: OUT/ckpt.npz (resume), OUT/final.npz, OUT/tb (TensorBoard)")
    groups = {g: parser.add_argument_group(g) for g in FIELD_GROUPS}
    for f in dataclasses.fields(TrainConfig):
        base, optional = _base_type(_field_types()[f.name])
        opts = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        kwargs = dict(dest=f.name, type=_parser_for(f.name), default=argparse.SUPPRESS,
                      help=f"{f.metadata['help']} (default: {f.default!r})")
        if base is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        else:
            kwargs["metavar"] = base.__name__.upper() + ("|none" if optional else "")
        choices = list(PRESETS) if f.name == "preset" else f.metadata["choices"]
        if choices:
            kwargs["choices"] = list(choices)
            kwargs.pop("metavar")
        groups[f.metadata["group"]].add_argument(*opts, **kwargs)
    return parser


def parse_config(argv=None) -> TrainConfig:
    """``TrainConfig`` from command-line arguments: preset values, then overrides.

    Raises ``SystemExit(2)`` (argparse) on an unknown option or a value of the wrong type, and
    ``ValueError`` on an invalid combination.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        names = ", ".join(sorted(f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(TrainConfig)))
        parser.error(f"unknown option(s) {' '.join(unknown)}; the options are the TrainConfig fields: {names}")
    given = vars(args)
    preset = given.pop("preset", "small")
    return TrainConfig(**{**PRESETS[preset], **given, "preset": preset})


# ----------------------------------------------------------------------------------------------
# the run


def _print_config(tcfg: TrainConfig) -> None:
    print("TrainConfig:")
    for f in dataclasses.fields(tcfg):
        print(f"  {f.name:16s} = {getattr(tcfg, f.name)!r}")
    sys.stdout.flush()


def _load_start(tcfg: TrainConfig, mcfg, ckpt_path: str):
    """``(params, extra, start_step)``: resumed, initialised from a checkpoint, or fresh."""
    from reference.checkpoint import load_checkpoint, load_checkpoint_extra
    from reference.model import init_params

    if tcfg.resume and os.path.isfile(ckpt_path):
        params, cfg = load_checkpoint(ckpt_path)
        meta, extra = load_checkpoint_extra(ckpt_path)
        # a field the checkpoint does not record (written before the field existed) had its default
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
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
        step = int(extra["step"])
        print(f"resuming {ckpt_path} at step {step}")
        return params, extra, step
    if tcfg.resume:
        print(f"--resume: no checkpoint in {ckpt_path}; starting a fresh run")
    if tcfg.init_from is not None:
        params, cfg = load_checkpoint(tcfg.init_from)
        fields = ("parametrization", "n_heads", "n_identity", "embed_dim", "n", "attention_norm")
        diff = [f"{k}: {getattr(cfg, k)!r} (checkpoint) vs {getattr(mcfg, k)!r}" for k in fields
                if getattr(cfg, k) != getattr(mcfg, k)]
        if cfg.n_layers > mcfg.n_layers:
            diff.append(f"n_layers: {cfg.n_layers} (checkpoint) > {mcfg.n_layers}")
        if diff:
            raise ValueError(f"--init-from {tcfg.init_from}: the checkpoint's model differs from this run's: "
                             + "; ".join(diff))
        if cfg.n_layers < mcfg.n_layers:  # layer growth: new layers start as no-ops (P = 0)
            from reference.model import grow_params

            params, _ = grow_params(params, cfg, mcfg.n_layers, seed=tcfg.seed)
            print(f"starting from {tcfg.init_from}, grown from {cfg.n_layers} to {mcfg.n_layers} layers "
                  "(new layers: P = 0, Q random; the grown model starts as the checkpoint's)")
        else:
            print(f"starting from {tcfg.init_from}")
        return params, None, 0
    return init_params(mcfg, tcfg.seed), None, 0


def evaluation_table(params, mcfg, tcfg: TrainConfig) -> list[dict]:
    """Per training size N: MSE of the model, of CG with L iterations and of x_hat = 0, on fresh systems."""
    from reference.baselines import conjugate_gradient
    from reference.evaluation import eval_systems, system_errors
    from tf_impl.model import forward

    rows = []
    for n in range(tcfg.n_min, tcfg.n_max + 1):
        A, b, x, mask = eval_systems(n, tcfg.kappa_range, tcfg.eval_systems, **tcfg.law)
        x_model = forward(params, mcfg, A, b, mask, jit_compile=False)  # float64
        x_cg = conjugate_gradient(A, b, mcfg.n_layers, mask=mask)
        row = {"n": n}
        for name, x_hat in (("model", x_model), ("cg", x_cg), ("zero", np.zeros_like(x))):
            mse, rel = system_errors(x_hat, x, mask)
            row[f"mse_{name}"], row[f"rel_{name}"] = float(np.mean(mse)), float(np.mean(rel))
        rows.append(row)
    return rows


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


TMP_PATTERN = re.compile(r"^\.tmp-[A-Za-z0-9_]+\.npz$")  # reference.checkpoint's temporary files


def prepare_out(out: str):
    """Create ``out``, take its lock and remove temporary checkpoint files a killed run left there.

    Returns the open lock file (keep it open for the whole run: the OS lock dies with the process, so
    a run killed by any signal never blocks the next one). Raises ``ValueError`` with one clear line
    when ``out`` is a file, cannot be created or written, or another live run holds it.
    """
    import fcntl

    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder")
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


def run(tcfg: TrainConfig) -> int:
    """Train according to ``tcfg``; returns the exit status (0 done, 1 the run diverged or failed)."""
    from tqdm import tqdm

    from reference.checkpoint import save_checkpoint
    from tf_impl._quiet import tf
    from tf_impl.data import sample_systems
    from tf_impl.distribute import describe, is_chief, select_strategy
    from tf_impl.optim import Trainer

    tf.get_logger().setLevel("ERROR")  # one retracing warning per evaluated size N is expected
    strategy = select_strategy()  # first: MultiWorkerMirroredStrategy must precede other TF ops
    chief = is_chief()
    _print_config(tcfg)
    print(f"devices: {describe(strategy)}")
    mcfg = tcfg.model_config()
    out = tcfg.out_dir
    ckpt_path, final_path = os.path.join(out, "ckpt.npz"), os.path.join(out, "final.npz")
    lock = prepare_out(out) if chief else None  # noqa: F841 (held until the process ends)
    params, extra, step = _load_start(tcfg, mcfg, ckpt_path)
    trainer = Trainer(mcfg, params, sizes=(tcfg.n_min, tcfg.n_max), kappa=tcfg.kappa_range, **tcfg.law,
                      relative_loss=tcfg.loss == "relative", batch_size=tcfg.batch_size,
                      lr=tcfg.lr, total_steps=tcfg.steps, warmup=tcfg.warmup, schedule=tcfg.schedule,
                      clip_norm=tcfg.clip_norm, seed=tcfg.seed, dtype=tcfg.dtype, mode=tcfg.mode,
                      strategy=strategy)
    if extra is not None:
        trainer.set_state(params, extra)
    eval_batch = trainer.prepare_batch(*sample_systems(tcfg.batch_size, (tcfg.n_min, tcfg.n_max), tcfg.kappa_range,
                                                       (tcfg.seed, -1), **tcfg.law, dtype=tcfg.dtype,
                                                       jit_compile=False))
    if chief:
        writer = tf.summary.create_file_writer(os.path.join(out, "tb"))
    else:
        writer = tf.summary.create_noop_writer()
    delay = float(os.environ.get("TF_IMPL_TRAIN_STEP_DELAY", "0") or 0)
    metrics: dict = {}
    # divergence threshold: the loss of x_hat = 0 on the evaluation batch (the same loss as training's)
    _, _, x_eval, m_eval = eval_batch
    d_eval = tf.reduce_sum(x_eval * x_eval * m_eval, axis=1)
    zero_loss = 1.0 if tcfg.loss == "relative" else float(tf.reduce_mean(d_eval / tf.reduce_sum(m_eval, axis=1)))
    threshold = tcfg.diverge_factor * zero_loss if tcfg.diverge_factor else math.inf
    above = 0  # steps in a row with the loss above the threshold
    t_start = time.time()

    def save(path, with_state: bool, extra_meta: dict | None = None):
        if not chief:
            return
        p, state = trainer.get_state()
        meta = {"train_config": tcfg.to_dict(), "step": int(state["step"]), "package": "tf_impl",
                "metrics": metrics, **(extra_meta or {})}
        save_checkpoint(path, p, mcfg, meta=meta, extra=state if with_state else None)

    start_step = step
    print("compiling the train step..." if tcfg.mode != "eager" else "first step...", flush=True)
    bar = None  # created after the first (compiled) step, so that its rate and time estimate are real
    try:
        with writer.as_default():
            while step < tcfg.steps:
                res = trainer.train_step()
                if bar is None:
                    bar = tqdm(total=tcfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                               mininterval=0.5)
                above = above + 1 if res["loss"] > threshold else 0
                problem = None
                if not math.isfinite(res["loss"]):
                    problem = f"non-finite loss ({res['loss']}) at step {step}; the parameters were not updated"
                elif not math.isfinite(res["grad_norm"]):
                    problem = (f"non-finite gradient norm ({res['grad_norm']}) at step {step} (loss "
                               f"{res['loss']:.3g}); the parameters were not updated")
                elif above >= max(tcfg.diverge_patience, 1):
                    problem = (f"the run diverged: the training loss stayed above {tcfg.diverge_factor:g} x the zero "
                               f"predictor's loss ({threshold:.3g}) for {above} steps, up to step {step} (loss "
                               f"{res['loss']:.3g})")
                if problem is not None:
                    bar.close()
                    last = (f"{ckpt_path} (step {_ckpt_step(ckpt_path)})" if os.path.isfile(ckpt_path)
                            else "none written")
                    print(f"error: {problem}; stopping without writing. Last good checkpoint: {last}. Try a smaller "
                          "--lr or --init-scale.", file=sys.stderr)
                    return 1
                _scalar_summary("loss", res["loss"], step=step)
                _scalar_summary("grad_norm", res["grad_norm"], step=step)
                _scalar_summary("learning_rate", res["lr"], step=step)
                metrics["train_loss"] = res["loss"]
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{res['loss']:.3e}", refresh=False)
                if tcfg.eval_every and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                    ev = trainer.eval_loss(eval_batch)
                    metrics["eval_loss"] = ev
                    _scalar_summary("eval_loss", ev, step=step)
                    bar.write(f"step {step:6d}  train loss {res['loss']:.4e}  eval loss {ev:.4e}  lr {res['lr']:.2e}")
                if tcfg.ckpt_every and step % tcfg.ckpt_every == 0 and step < tcfg.steps and above == 0:
                    save(ckpt_path, with_state=True)  # never while the loss is above the divergence threshold
                if delay:
                    time.sleep(delay)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        last = f"at step {_ckpt_step(ckpt_path)} ({ckpt_path})" if os.path.isfile(ckpt_path) else "none written yet"
        print(f"interrupted at step {step} (started at {start_step}); last checkpoint {last}; continue with the same "
              "options and --resume", file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    writer.flush()
    metrics["train_time_s"] = time.time() - t_start
    if above:
        print(f"error: the run ended with the training loss above the divergence threshold ({threshold:.3g}) for "
              f"the last {above} steps; nothing written. Last good checkpoint: {ckpt_path}", file=sys.stderr)
        return 1
    save(ckpt_path, with_state=True)
    p = trainer.get_params()
    rows = evaluation_table(p, mcfg, tcfg)
    print(format_table(rows, mcfg.n_layers, tcfg.kappa_range, tcfg.eval_systems,
                       "rel" if tcfg.loss == "relative" else "mse"))
    save(final_path, with_state=False, extra_meta={"evaluation": rows})
    if chief:
        print(f"final checkpoint: {final_path}  (resume state: {ckpt_path}; TensorBoard: {os.path.join(out, 'tb')})")
    return 0


def _ckpt_step(path: str):
    from reference.checkpoint import load_checkpoint_extra

    try:
        return json.dumps(load_checkpoint_extra(path)[0].get("step"))
    except ValueError:
        return "?"


def main(argv=None) -> int:
    try:
        tcfg = parse_config(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quiet_tensorflow(tcfg.verbose)
    try:
        return run(tcfg)
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
