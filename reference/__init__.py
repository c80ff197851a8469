"""NumPy reference of the linear Transformer that solves ``A x = b``: float64, hand-written gradients.

The ground truth of the project: the TensorFlow twin (:mod:`tf_impl`) is tested against it.
"""

from reference.checkpoint import load_checkpoint, load_checkpoint_extra, save_checkpoint
from reference.config import ModelConfig
from reference.data import check_systems, sample_systems
from reference.model import forward, forward_layers, init_params, loss_and_grads, param_shapes
from reference.optim import adam_init, adam_update, lr_at, train
from reference.solve import factorize, solve

__all__ = [
    "ModelConfig", "init_params", "param_shapes", "forward", "forward_layers", "loss_and_grads",
    "save_checkpoint", "load_checkpoint", "load_checkpoint_extra", "sample_systems", "check_systems",
    "adam_init", "adam_update", "lr_at", "train", "solve", "factorize",
]
