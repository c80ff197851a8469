"""TensorFlow twin of :mod:`reference` (XLA-compiled training).

Same public names and signatures as the reference (``docs/concepts.md``, section 7)::

    ModelConfig                      re-exported from reference (one config class)
    init_params(cfg, seed)           re-exported: the reference's NumPy initialisation
    forward(params, cfg, A, b, mask=None, x0=None, *, dtype=tf.float64) -> x_hat (B, M)
    forward_layers(...)              the estimate after every layer (B, L+1, M)
    loss_and_grads(params, cfg, A, b, x, mask=None, x0=None, *, dtype=tf.float64) -> (float, dict)
    save_checkpoint / load_checkpoint  re-exported: one .npz format for both packages
    sample_systems(batch, sizes, kappa, seed) -> (A, b, x, mask)   TF sampler, NumPy out

plus the idiomatic layer: :class:`tf_impl.model.LinearTransformer` (a ``tf.Module``),
:class:`tf_impl.optim.Trainer` (the XLA-compiled train step) and ``python -m tf_impl.train``.

Modules: ``layers`` (tensor ops), ``model`` (module + public API), ``data`` (on-device sampler),
``optim`` (Adam, schedule, Trainer), ``distribute`` (strategy choice), ``train`` (the CLI).
TensorFlow is imported on first use of a TensorFlow-backed name (so ``python -m tf_impl.train
--help`` answers at once).
"""

from __future__ import annotations

import importlib
import os
import sys
import types

# TensorFlow's C++ log lines (a cuInit error without a GPU, XLA notices) are hidden unless the user set
# TF_CPP_MIN_LOG_LEVEL themselves; python -m tf_impl.train --verbose shows them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from reference.checkpoint import load_checkpoint, load_checkpoint_extra, save_checkpoint
from reference.config import ModelConfig
from reference.model import init_params, param_shapes

_LAZY = {"forward": "tf_impl.model", "forward_layers": "tf_impl.model", "loss_and_grads": "tf_impl.model",
         "LinearTransformer": "tf_impl.model", "sample_systems": "tf_impl.data", "Trainer": "tf_impl.optim",
         "solve": "tf_impl.solve", "factorize": "tf_impl.solve"}

__all__ = [
    "ModelConfig", "init_params", "param_shapes", "forward", "forward_layers", "loss_and_grads",
    "save_checkpoint", "load_checkpoint", "load_checkpoint_extra", "sample_systems", "LinearTransformer", "Trainer",
    "solve", "factorize",
]


class _Package(types.ModuleType):
    """The package's module type: importing the submodule ``tf_impl.solve`` binds the attribute ``solve`` of the
    package to that module; the package's ``solve`` stays the function (as in :mod:`reference`)."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tf_impl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
