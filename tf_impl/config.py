"""The configuration of a training run: :class:`TrainConfig`, the presets, the command-line parser.

Every setting is a field of the frozen dataclass :class:`TrainConfig` (model, data, optimisation,
bookkeeping). A run starts from the preset's values (:data:`PRESETS`, default ``small``; the block
presets extend one base), then applies the ``--key value`` overrides (``--batch-size 512`` or
``--batch_size 512``); unknown keys and values of the wrong type are errors. ``--help`` lists every
field with its meaning and default. The run itself is :mod:`tf_impl.train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field

from reference.config import ATTENTION_NORMS, PARAMETRIZATIONS, ModelConfig
from reference.constructions import INITS
from reference.data import EIGENVALUE_LAWS, KAPPA_LIMIT, RHS_LAWS
from reference.layers import LOSSES

FIELD_GROUPS = ("run", "model", "data", "optimisation", "bookkeeping")


# the choices of the training options (tf_impl.optim checks SCHEDULES and MODES with these too; LOSSES, the loss
# names, is reference.layers.LOSSES, the one list both twins check)
OPTIMIZERS = ("adam", "lbfgs", "greedy")
SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "float64")
MODES = ("xla", "graph", "eager")


def _f(default, help: str, group: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices})


def _model(name: str, help: str, choices: tuple | None = None):
    """A model field: its default is :class:`reference.config.ModelConfig`'s (one set of defaults)."""
    return _f(ModelConfig.__dataclass_fields__[name].default, help, "model", choices)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. The model fields are those of :class:`reference.config.ModelConfig`
    (same defaults, validated by it); a run from the command line starts from a preset (``small`` by default)."""

    preset: str = _f("small", "preset the other values start from (see PRESETS below)", "run")
    # model: the fields of reference.ModelConfig, with its defaults and its validation
    parametrization: str = _model("parametrization", "'block': P, Q of scalar*I / scalar*1 blocks, any N; "
                                                     "'full': free D x D, one N", PARAMETRIZATIONS)
    n_layers: int = _model("n_layers", "layers (no weight sharing); the baseline CG gets as many iterations")
    n_heads: int = _model("n_heads", "attention heads per layer, summed")
    n_identity: int = _model("n_identity", "block: copies K of the basis vector u_i in the token")
    embed_dim: int = _model("embed_dim", "full: width d_h of the learned per-equation embedding")
    attention_norm: str = _model("attention_norm", "'none': plain sum over the N keys; 'n': the sum divided by N",
                                 ATTENTION_NORMS)
    init_scale: float = _model("init_scale", "std of the Gaussian initial P, Q entries")
    b_last_layer: bool = _model("b_last_layer", "block: the b group of P, Q is zero in all layers but the last, so "
                                                "the first L-1 layers compute from A alone (docs/concepts.md 10)")
    equivariant: bool = _model("equivariant", "block, with b_last_layer: the query's ones vectors never reach the "
                                              "output, so x_hat = g(A) b exactly (docs/concepts.md 11)")
    # data
    n_min: int = _f(2, "smallest system size N (each system draws N uniformly in [n_min, n_max])", "data")
    n_max: int = _f(6, "largest system size N (the padded size); full: n_min = n_max = n", "data")
    kappa: float = _f(10.0, "condition number of every training system (the smallest one with --kappa-max)", "data")
    kappa_max: float | None = _f(None, "largest condition number: kappa log-uniform in [kappa, kappa_max] per "
                                       "system ('none': every system has kappa)", "data")
    spectrum: str = _f("uniform", "eigenvalues on [1/kappa, 1]: 'uniform', 'loguniform', 'clustered' (two clusters "
                                  "at the ends) or 'mix' (one of the three per system)", "data", EIGENVALUE_LAWS)
    rhs: str = _f("solution", "right-hand side: 'solution' (x ~ N(0, I), b = A x), 'normal' (b ~ N(0, I)) or "
                              "'mix' (one of the two per system)", "data", RHS_LAWS)
    normalize_rhs: bool = _f(False, "scale b (and x) to ||b|| = sqrt(N), as solve() feeds a model", "data")
    loss: str = _f("mse", "'mse': mean of ||x_hat - x||^2 / N; 'relative': mean of ||x_hat - x||^2 / ||x||^2",
                   "optimisation", LOSSES)
    # optimisation
    optimizer: str = _f("adam", "'adam': a fresh batch every step; 'lbfgs': L-BFGS iterations on ONE fixed batch of "
                                "batch_size systems (steps = iterations; lr, warmup, schedule, clip_norm unused; "
                                "docs/conventions.md, 'Optimiser'); 'greedy': layer-wise least squares on spectra, "
                                "one layer a step (equivariant models; steps = n_layers; docs/concepts.md 12)",
                       "optimisation", OPTIMIZERS)
    lbfgs_memory: int = _f(50, "lbfgs: pairs (s, y) kept for the inverse-Hessian estimate", "optimisation")
    batch_size: int = _f(256, "systems per step (global, over all replicas)", "optimisation")
    steps: int = _f(3000, "training steps", "optimisation")
    lr: float = _f(5e-3, "peak Adam learning rate", "optimisation")
    warmup: int = _f(150, "linear warm-up steps", "optimisation")
    schedule: str = _f("cosine", "after warm-up: 'constant' or 'cosine' decay to 0.1 lr", "optimisation",
                       SCHEDULES)
    clip_norm: float | None = _f(10.0, "global-norm gradient clipping ('none': off)", "optimisation")
    seed: int = _f(0, "initialisation and data seed (batch t is drawn from (seed, t))", "optimisation")
    init: str = _f("random", "start: 'random' (Gaussian, std init_scale) or 'newton-schulz' (block: the hand-set "
                             "model whose layers run Newton-Schulz for the spectrum [1/kappa, 1], kappa_max if set; "
                             "docs/concepts.md)", "optimisation", INITS)
    init_upper: float = _f(1.0, "newton-schulz start: the largest eigenvalue its weights allow for; greedy: the "
                                "largest training eigenvalue (>= 1; above it they fail; the shipped models take 1.1, "
                                "a margin above the largest eigenvalue solve divides by)", "optimisation")
    dtype: str = _f("float32", "'float32' (training) or 'float64' (checking)", "optimisation", DTYPES)
    mode: str = _f("xla", "'xla': one XLA-compiled step; 'graph': tf.function without XLA; 'eager': debug",
                   "optimisation", MODES)
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
        for f in dataclasses.fields(self):
            allowed = f.metadata["choices"]
            need(allowed is None or getattr(self, f.name) in allowed,
                 f"{f.name} must be one of {allowed}, got {getattr(self, f.name)!r}")
        for name in ("batch_size", "eval_systems", "lbfgs_memory"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(0 <= self.seed < 2**63, f"seed (--seed) must be an int in [0, 2^63), got {self.seed}")
        for name in ("steps", "warmup", "eval_every", "ckpt_every", "diverge_patience"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(2 <= self.n_min <= self.n_max, f"sizes must satisfy 2 <= n_min <= n_max, got ({self.n_min}, {self.n_max})")
        need(math.isfinite(self.kappa) and 1 <= self.kappa <= KAPPA_LIMIT,
             f"kappa must be a number in [1, {KAPPA_LIMIT:g}], got {self.kappa}")
        need(self.kappa_max is None or (math.isfinite(self.kappa_max) and self.kappa <= self.kappa_max <= KAPPA_LIMIT),
             f"kappa_max must be a number in [kappa ({self.kappa}), {KAPPA_LIMIT:g}] or none, got {self.kappa_max}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.clip_norm is None or self.clip_norm > 0, f"clip_norm must be > 0 or none, got {self.clip_norm}")
        need(math.isfinite(self.diverge_factor) and (self.diverge_factor == 0 or self.diverge_factor > 1),
             f"diverge_factor must be 0 (off) or > 1, got {self.diverge_factor}")
        need(self.out is None or self.out.strip() != "", "out must name a folder (got an empty string)")
        try:  # the model fields: ModelConfig's own validation (sizes, limits, init_scale)
            self.model_config()
        except ValueError as e:
            need(False, str(e).removeprefix("ModelConfig: "))
        if self.parametrization == "full":
            need(self.n_min == self.n_max, f"the full parametrization trains on one size: n_min = n_max, "
                                           f"got ({self.n_min}, {self.n_max})")
        if self.init == "newton-schulz":
            need(self.parametrization == "block" and self.n_identity >= 2,
                 f"--init newton-schulz builds a block model with n_identity >= 2, got {self.parametrization!r} "
                 f"with n_identity {self.n_identity}")
            need(self.attention_norm == "none" or self.n_min == self.n_max,
                 "--init newton-schulz with attention_norm 'n' is exact at one size only: use attention_norm "
                 "'none' or n_min = n_max")
            need(self.init_from is None, "--init newton-schulz and --init-from are two starts: give one")
        need(math.isfinite(self.init_upper) and self.init_upper >= 1, f"init_upper must be >= 1, got {self.init_upper}")
        need(self.init_upper == 1 or self.init == "newton-schulz" or self.optimizer == "greedy",
             "init_upper is an option of --init newton-schulz and --optimizer greedy")
        if self.optimizer == "greedy":
            self._check_greedy(need)
        self._check_memory(need)
        if self.preset == "block-finetune":
            need(self.init_from is not None, "the block-finetune preset starts from a trained model: give "
                                             "--init-from CHECKPOINT (e.g. runs/block-mixed/final.npz)")

    def _check_greedy(self, need) -> None:
        """Layer-wise least squares fits an equivariant block model from scratch, one stage a step, in float64, on
        log-uniform spectra (:class:`tf_impl.optim.GreedyTrainer`)."""
        from reference.greedy import check_greedy_config

        try:
            check_greedy_config(self.model_config())
        except ValueError as e:
            need(False, f"--optimizer greedy: {e}")
        need(self.steps <= self.n_layers, f"--optimizer greedy fits one stage a step (the readout, then each layer): "
                                          f"steps must be <= n_layers ({self.n_layers}), got {self.steps}")
        need(self.init == "random" and self.init_from is None, "--optimizer greedy fits every layer from scratch: "
                                                               "no --init newton-schulz or --init-from")
        need(self.dtype == "float64", "--optimizer greedy fits in float64: use --dtype float64")
        need(self.spectrum == "loguniform", "--optimizer greedy trains on log-uniform spectra: use --spectrum "
                                            "loguniform (the law of its final table too)")

    def _check_memory(self, need) -> None:
        """A training step holds the model's arrays for ``batch_size`` systems of size ``n_max`` (kept for the
        gradient), the final table those of ``eval_systems`` systems per size: each must fit
        :func:`reference.config.memory_budget` (``LINEAR_TRANSFORMER_MEMORY_LIMIT``, else half of the physical
        memory), or the run is refused now, not after compiling or training."""
        from reference.config import MEMORY_LIMIT_HELP, memory_budget
        from reference.model import forward_bytes

        limit, mcfg = memory_budget(), self.model_config()
        for flag, count in (("--batch-size", self.batch_size), ("--eval-systems", self.eval_systems)):
            need_bytes = forward_bytes(mcfg, self.n_max, count) + 8 * 8 * count * self.n_max**2  # + the systems
            need(need_bytes <= limit, f"{flag} {count}: the model's arrays for {count} systems of size n_max = "
                                      f"{self.n_max} need about {need_bytes / 2**30:.3g} GiB, above the limit of "
                                      f"{limit / 2**30:.3g} GiB ({MEMORY_LIMIT_HELP})")

    @property
    def out_dir(self) -> str:
        return self.out if self.out is not None else os.path.join("runs", self.preset)

    def model_config(self) -> ModelConfig:
        return ModelConfig(parametrization=self.parametrization, n_layers=self.n_layers, n_heads=self.n_heads,
                           n_identity=self.n_identity, embed_dim=self.embed_dim,
                           n=self.n_max if self.parametrization == "full" else None,
                           attention_norm=self.attention_norm, init_scale=self.init_scale,
                           b_last_layer=self.b_last_layer, equivariant=self.equivariant)

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
    # default: block, 3 layers, N in [2, 6]: a run that finishes in minutes on a 2-core CPU (README)
    "small": dict(parametrization="block", n_layers=3, n_heads=1, attention_norm="none", init_scale=0.05,
                  n_min=2, n_max=6, kappa=10.0, batch_size=256, steps=3000, lr=5e-3, warmup=150,
                  schedule="cosine", clip_norm=10.0, eval_every=250, ckpt_every=500),
    # the paper's four experiments (docs/concepts.md, section 6): the values that trained reference/pretrained/*.npz
    # (4 heads and attention_norm "n" for the block models, "none" for full: the results pages' lab notebook)
    "full-n9": dict(parametrization="full", n_layers=4, n_heads=1, embed_dim=27, attention_norm="none",
                    init_scale=0.02, n_min=9, n_max=9, kappa=10.0, batch_size=512, steps=8000, lr=1e-3,
                    warmup=300, schedule="cosine", clip_norm=10.0, eval_every=1000, ckpt_every=1000),
    "block-n9": {**_PAPER_BLOCK, "n_min": 9, "n_max": 9},
    "block-mixed": {**_PAPER_BLOCK, "n_min": 2, "n_max": 9},
    # fine-tunes block-mixed (same architecture) on larger systems: --init-from runs/block-mixed/final.npz
    "block-finetune": {**_PAPER_BLOCK, "n_min": 10, "n_max": 20, "batch_size": 256, "steps": 1200, "lr": 1e-3,
                       "warmup": 50, "eval_every": 200, "ckpt_every": 200},
    # the depth family's 4-layer model (scripts/train_depth_family.sh): block-mixed's recipe on N in [2, 20],
    # the deepest model of the family that beats CG with as many iterations on average over its sizes
    "block-mixed-20": {**_PAPER_BLOCK, "n_min": 2, "n_max": 20, "steps": 4000, "eval_every": 500, "eval_systems": 200},
    # the Newton-Schulz family's 8-layer model (scripts/train_depth_family.sh, stage NS-L8): the construction
    # (docs/concepts.md, section 9) for kappa 10, trained 500 steps at lr 1e-7 (it starts at float32's floor)
    "block-ns-8": {**_PAPER_BLOCK, "n_min": 2, "n_max": 20, "n_layers": 8, "attention_norm": "none",
                   "init": "newton-schulz", "lr": 1e-7, "warmup": 20, "steps": 500, "eval_every": 250,
                   "eval_systems": 200},
    # solve()'s model="auto": the Newton-Schulz construction exported untrained (0 steps, float64), 12 layers,
    # error bound 2e-17 per pass for spectra in [1e-4, 1.1] (1.1: a margin above the scale solve divides by),
    # at every size; the data fields are broad's law, read by solve (rhs scale) and by the final table only
    "newton-schulz": dict(parametrization="block", n_layers=12, n_heads=1, n_identity=2, attention_norm="none",
                          init="newton-schulz", init_upper=1.1, n_min=2, n_max=30, kappa=2.0, kappa_max=1e4,
                          spectrum="mix", rhs="mix", normalize_rhs=True, loss="relative", steps=0, dtype="float64",
                          eval_every=0, ckpt_every=0, eval_systems=100),
    # the trained model for solve() on users' systems (auto's fallback): every family, sizes to 30, kappa
    # log-uniform in [2, 1000], right-hand sides normalised as solve() feeds them, relative loss (no family dominates)
    "broad": {**_PAPER_BLOCK, "n_min": 2, "n_max": 30, "kappa": 2.0, "kappa_max": 1000.0, "spectrum": "mix",
              "rhs": "mix", "normalize_rhs": True, "loss": "relative", "eval_every": 500, "ckpt_every": 500},
}

# the learned family (docs/concepts.md section 10; scripts/train_learned_family.sh): trained from random weights,
# the right-hand side read by the last layer only, L-BFGS on one fixed float64 batch, sizes to 16, kappa 10;
# the script trains seeds 0 and 1 of each depth, keeps the lower final training loss, and continues the 8-layer
# one twice by 6000 iterations (--init-from: one more run in its lineage each)
_LEARNED = dict(parametrization="block", n_heads=1, n_identity=2, attention_norm="none", init_scale=0.02,
                b_last_layer=True, n_min=2, n_max=16, kappa=10.0, batch_size=256, optimizer="lbfgs", steps=6000,
                dtype="float64", eval_every=250, ckpt_every=250, eval_systems=200)
PRESETS.update({f"learned-L{L}": {**_LEARNED, "n_layers": L} for L in (2, 4, 6, 8)})
# the 8-layer one trained on kappa log-uniform in [10, 100] (the same script, stage L8-k100): the learned family is
# accurate only on the spectrum it was trained on
PRESETS["learned-L8-k100"] = {**_LEARNED, "n_layers": 8, "kappa_max": 100.0}
# the general family (docs/concepts.md, sections 11-12; scripts/train_general_family.sh): equivariant models fitted
# layer by layer by least squares on spectra log-uniform in [1e-4, 1.1] (1.1: room for solve's scale estimate),
# one stage a step; the final table draws systems with kappa log-uniform in [10, 1e4]
_GENERAL = dict(parametrization="block", n_heads=1, n_identity=2, attention_norm="none", init_scale=0.02,
                b_last_layer=True, equivariant=True, n_min=2, n_max=16, kappa=10.0, kappa_max=1e4,
                spectrum="loguniform", init_upper=1.1, batch_size=256, optimizer="greedy", dtype="float64",
                eval_every=1, ckpt_every=1, eval_systems=200)
PRESETS.update({f"learned-general-L{L}": {**_GENERAL, "n_layers": L, "steps": L} for L in (6, 8, 10, 12)})

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
    default_run = TrainConfig(**PRESETS["small"])  # what a run without --preset uses
    for f in dataclasses.fields(TrainConfig):
        base, optional = _base_type(_field_types()[f.name])
        opts = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        kwargs = dict(dest=f.name, type=_parser_for(f.name), default=argparse.SUPPRESS,
                      help=f.metadata["help"] if "default" in f.metadata["help"] else
                      f"{f.metadata['help']} (default: {getattr(default_run, f.name)!r})")
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
