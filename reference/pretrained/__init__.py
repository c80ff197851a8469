"""The shipped models: the paper's four experiments (``docs/concepts.md``, section 6), the broad model,
the depth family's 4-layer model on N in [2, 20] (``block-mixed-20``), the Newton-Schulz family's 8-layer model
(``block-ns-8``), the learned family ``learned-L2`` ... ``learned-L8`` (trained from random weights, the right-hand
side read by the last layer only: ``docs/concepts.md``, section 10) and ``learned-L8-k100`` (its 8-layer model
trained on kappa in [10, 100]), the general family ``learned-general-L6`` ... ``-L12`` (equivariant models fitted
layer by layer on spectra with kappa up to 1e4: sections 11-12), all trained by ``python -m tf_impl.train``, and
``newton-schulz``, the hand-set Newton-Schulz model (``docs/concepts.md``, section 9) that ``solve``'s
``model="auto"`` runs, exported by the same command with 0 training steps.

    from reference.pretrained import PRETRAINED, load_pretrained, training_sizes
    params, cfg, meta = load_pretrained("block-mixed")
    training_sizes(meta)                  # (2, 9): the sizes N it was trained on

Each model is one checkpoint ``reference/pretrained/<name>.npz`` (package data, the format of
:mod:`reference.checkpoint`). An install without a file raises a ``ValueError`` that says how to
train it. The numbers the models reach are on the documentation's results page.
"""

from __future__ import annotations

import math
from pathlib import Path

PRETRAINED = ("full-n9", "block-n9", "block-mixed", "block-finetune", "broad", "block-mixed-20", "block-ns-8",
              "newton-schulz", "learned-L2", "learned-L4", "learned-L6", "learned-L8",
              "learned-L8-k100", "learned-general-L6", "learned-general-L8", "learned-general-L10",
              "learned-general-L12")
"""Names of the shipped models, also the ``--preset`` names of ``python -m tf_impl.train``."""

PRETRAINED_DIR = Path(__file__).resolve().parent
"""Folder of the ``.npz`` files (a module attribute, so that tests can point it elsewhere)."""


def pretrained_path(name: str) -> Path:
    """Path of a shipped model's ``.npz``.

    Raises ``ValueError`` for a name not in :data:`PRETRAINED` (listing the valid names) and for a
    registered model whose file is not in this install (saying how to train it).
    """
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; the shipped ones are {', '.join(PRETRAINED)}")
    path = Path(PRETRAINED_DIR) / f"{name}.npz"
    if not path.is_file():
        raise ValueError(f"the weights of the pretrained model {name!r} are not shipped in this install "
                         f"(no file {path}); train them with `python -m tf_impl.train --preset {name}` "
                         "and pass the checkpoint it writes as model=PATH")
    return path


def load_pretrained(name: str):
    """``(params, cfg, meta)`` of a shipped model: weights, :class:`~reference.config.ModelConfig`
    and the checkpoint's metadata (training config, step, metrics)."""
    from reference.checkpoint import load_checkpoint, load_checkpoint_extra

    path = pretrained_path(name)
    params, cfg = load_checkpoint(path)
    meta, _ = load_checkpoint_extra(path)
    return params, cfg, meta


def training_sizes(meta) -> tuple[int, int] | None:
    """``(n_min, n_max)``: the sizes ``N`` a model was trained on, read from its checkpoint metadata
    (``meta["train_config"]["n_min"]`` and ``["n_max"]``, as ``tf_impl.train`` writes them);
    ``None`` if the metadata does not say."""
    from reference.config import is_real

    tc = meta.get("train_config") if isinstance(meta, dict) else None
    if not isinstance(tc, dict):
        return None
    lo, hi = tc.get("n_min"), tc.get("n_max")
    if not all(is_real(v) and float(v).is_integer() for v in (lo, hi)):
        return None
    lo, hi = int(lo), int(hi)
    return (lo, hi) if 1 <= lo <= hi else None


def valid_sizes(meta) -> tuple[int, float] | None:
    """The sizes ``N`` on which a model is expected to be as accurate as where it was trained: every size,
    ``(1, inf)``, for the Newton-Schulz construction exported untrained (``train_config`` with ``init``
    ``"newton-schulz"``, ``steps`` 0 and ``attention_norm`` ``"none"``: its weights are exact at every ``N``,
    ``docs/concepts.md`` section 9) and for an equivariant model with ``attention_norm`` ``"none"`` (one matrix
    function ``g(A)`` at every ``N``, section 11), else :func:`training_sizes`. ``model="auto"`` chooses by
    them."""
    tc = meta.get("train_config") if isinstance(meta, dict) else None
    if (isinstance(tc, dict) and tc.get("init") == "newton-schulz" and tc.get("steps") == 0
            and tc.get("attention_norm") == "none"):
        return (1, float("inf"))
    if isinstance(tc, dict) and tc.get("equivariant") is True and tc.get("attention_norm") == "none":
        return (1, float("inf"))  # x_hat = g(A) b with one g for every N (docs/concepts.md, section 11)
    return training_sizes(meta)


def training_law(meta) -> dict:
    """The data law a model was trained on, from its checkpoint metadata (``train_config``'s ``kappa``,
    ``kappa_max``, ``spectrum``, ``rhs``, ``normalize_rhs``), as keyword arguments of
    :func:`reference.data.rhs_rms`; fields the metadata lacks (older checkpoints, ``(params, cfg)``)
    take the paper's values (``kappa`` 10, uniform spectrum, ``b = A x``, not normalised)."""
    from reference.config import is_real

    tc = meta.get("train_config") if isinstance(meta, dict) else None
    tc = tc if isinstance(tc, dict) else {}
    kappa = tc.get("kappa", 10.0)
    kappa = float(kappa) if is_real(kappa) else 10.0
    k_max = tc.get("kappa_max")
    law = {"kappa": kappa if not is_real(k_max) or float(k_max) == kappa else (kappa, float(k_max))}
    for key, default in (("spectrum", "uniform"), ("rhs", "solution"), ("normalize_rhs", False)):
        v = tc.get(key, default)
        law[key] = v if isinstance(v, type(default)) else default
    return law


def recorded_accuracy(meta) -> float | None:
    """The accuracy a model's checkpoint records: the largest, over the sizes of its final table
    (``meta["evaluation"]``, written by ``tf_impl.train``), of the mean relative error ``rel_model`` of one
    pass on fresh systems of its training law. ``None`` when the metadata holds no such table (a checkpoint
    written mid-run, a ``(params, cfg)`` tuple) or no finite, non-negative entry in it. ``solve`` compares the
    residual of a pass with it (``docs/conventions.md``, "Solving user systems")."""
    from reference.config import is_real

    rows = meta.get("evaluation") if isinstance(meta, dict) else None
    values = [float(r["rel_model"]) for r in rows if isinstance(r, dict) and is_real(r.get("rel_model"))
              and math.isfinite(r["rel_model"]) and r["rel_model"] >= 0] if isinstance(rows, list) else []
    return max(values) if values else None
