"""Model configuration shared by the NumPy reference and the TensorFlow twin.

One frozen dataclass describes the architecture; it is stored as JSON inside every
checkpoint, so a checkpoint alone is enough to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np


def is_int(v, allow_numpy: bool = True) -> bool:
    """An integer (Python, or NumPy unless ``allow_numpy=False``), not a bool: ``True`` is an ``int`` in
    Python, never a size here."""
    kinds = (int, np.integer) if allow_numpy else int
    return isinstance(v, kinds) and not isinstance(v, (bool, np.bool_))


def is_real(v) -> bool:
    """A real number (Python or NumPy int/float), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


PARAMETRIZATIONS = ("block", "full")
LIMITS = {"n_layers": 1024, "n_heads": 256, "n_identity": 64, "embed_dim": 4096, "n": 4096}
"""Largest accepted value of each size field: far above any model here, low enough that a hostile or
corrupt config (``n_layers = 10**9``) is refused before anything is built from it."""
ATTENTION_NORMS = ("none", "n")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a linear Transformer that solves ``A x = b``.

    Token of equation ``i``: ``e_i = (a_i, b_i, h_i)``; query token ``(x0, 1, 1...)``.
    Each layer adds ``sum_h sum_j (e_j^T Q_h e_i) P_h e_j`` to every token ``e_i``.
    """

    parametrization: str = "block"  # "block": P, Q made of scalar*I / scalar*1 blocks; "full": free D x D
    n_layers: int = 4  # layers, no weight sharing
    n_heads: int = 1  # heads per layer, summed
    n_identity: int = 3  # block: copies K_id of u_i in h_i (token width N + 1 + K_id*N)
    embed_dim: int = 27  # full: width d_h of the learned per-equation embedding h_i
    n: int | None = None  # full: the one system size the model runs on; block: must be None
    attention_norm: str = "none"  # "none": plain sum over the N keys; "n": the sum divided by N
    init_scale: float = 0.02  # std of the Gaussian initial weights (see docs/conventions.md)
    b_last_layer: bool = False  # block: the b group's rows and columns of P, Q are zero in all layers but the last
    equivariant: bool = False  # block, with b_last_layer: the query's ones vectors never reach the output (exact
    # rotation equivariance, x_hat = g(A) b; docs/concepts.md, section 11)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"ModelConfig: {msg}")

        need(self.parametrization in PARAMETRIZATIONS,
             f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        for name in ("n_layers", "n_heads"):
            v = getattr(self, name)
            need(is_int(v, allow_numpy=False) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
        for name in ("n_identity", "embed_dim"):
            v = getattr(self, name)
            need(is_int(v, allow_numpy=False) and v >= 0, f"{name} must be an int >= 0, got {v!r}")
        for name, limit in LIMITS.items():
            v = getattr(self, name)
            need(v is None or v <= limit, f"{name} = {v} is above the limit {limit} (reference.config.LIMITS)")
        need(self.attention_norm in ATTENTION_NORMS,
             f"attention_norm must be one of {ATTENTION_NORMS}, got {self.attention_norm!r}")
        need(isinstance(self.init_scale, (int, float)) and not isinstance(self.init_scale, bool)
             and math.isfinite(self.init_scale) and self.init_scale > 0,
             f"init_scale must be a positive number, got {self.init_scale!r}")
        need(isinstance(self.b_last_layer, bool), f"b_last_layer must be a bool, got {self.b_last_layer!r}")
        need(not self.b_last_layer or self.parametrization == "block",
             "b_last_layer is an option of the block parametrization")
        need(isinstance(self.equivariant, bool), f"equivariant must be a bool, got {self.equivariant!r}")
        need(not self.equivariant or self.b_last_layer,
             "equivariant needs b_last_layer=True (the b group is read by the last layer only)")
        if self.parametrization == "full":
            need(is_int(self.n, allow_numpy=False) and self.n >= 1,
                 f"the full parametrization needs the system size n (an int >= 1), got {self.n!r}")
        else:
            need(self.n is None, f"the block parametrization runs on any size; n must be None, got {self.n!r}")

    @property
    def n_groups(self) -> int:
        """Block parametrization: number of token groups ``[a, b, h^1..h^K]``."""
        return self.n_identity + 2

    def token_width(self, n_max: int) -> int:
        """Width ``D`` of a token for systems padded to ``n_max`` (full: ``n_max`` must be ``n``)."""
        if self.parametrization == "block":
            return n_max + 1 + self.n_identity * n_max
        return self.n + 1 + self.embed_dim

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ModelConfig: stored config is not valid JSON ({e})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"ModelConfig: stored config must be a JSON object, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown} in stored config")
        return cls(**fields)


MEMORY_LIMIT_ENV = "LINEAR_TRANSFORMER_MEMORY_LIMIT"
"""The environment variable that sets :func:`memory_budget`: bytes, or a number with a unit ``K``, ``M``, ``G``,
``T`` (powers of 1024; ``KiB``, ``MB`` and the like read the same), e.g. ``8G`` or ``512MiB``."""
MEMORY_LIMIT_HELP = (f"set it with the environment variable {MEMORY_LIMIT_ENV}, e.g. 8G; default half of this "
                     "machine's memory")
"""How every message that quotes the limit says where it comes from."""
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_budget() -> int:
    """Bytes a run may hold for the model's arrays: the environment variable :data:`MEMORY_LIMIT_ENV` when set
    (read at every call), else half of the physical memory (4 GiB where the system does not say). ``TrainConfig``
    refuses a batch above it, ``solve`` splits its batches to fit it and refuses a size that does not,
    ``python -m tf_impl.evaluate`` refuses a test set above it. ``ValueError`` naming the variable when its value
    is not a positive size."""
    text = os.environ.get(MEMORY_LIMIT_ENV)
    if text is not None:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*", text, flags=re.IGNORECASE)
        value = float(m.group(1)) * _UNITS[m.group(2).upper()] if m else 0.0
        if not (m and 1 <= value < 2**63):
            raise ValueError(f"the environment variable {MEMORY_LIMIT_ENV}={text[:40]!r} is not a memory size: give "
                             "bytes, or a number with K, M, G or T (powers of 1024), e.g. 8G")
        return int(value)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30
