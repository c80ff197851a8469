"""The shipped models: the paper's four experiments trained by ``python -m tf_impl.train``.

``load_pretrained(name)`` returns ``(params, cfg, meta)``; the numbers they reach are on the
documentation's results page.
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED = ("full-n9", "block-n9", "block-mixed", "block-finetune")


def pretrained_path(name: str) -> Path:
    """Path of a shipped model's ``.npz``; ``ValueError`` for an unknown name or a missing file."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; the shipped ones are {', '.join(PRETRAINED)}")
    path = Path(__file__).resolve().parent / f"{name}.npz"
    if not path.is_file():
        raise ValueError(f"the weights of {name!r} are not in this install ({path}); "
                         f"train them with `python -m tf_impl.train --preset {name}`")
    return path


def load_pretrained(name: str):
    """``(params, cfg, meta)`` of a shipped model."""
    from reference.checkpoint import load_checkpoint, load_checkpoint_extra

    path = pretrained_path(name)
    params, cfg = load_checkpoint(path)
    meta, _ = load_checkpoint_extra(path)
    return params, cfg, meta


def training_sizes(meta: dict):
    """``(n_min, n_max)`` a model was trained on, from its checkpoint metadata, or ``None``."""
    tc = meta.get("train_config") if isinstance(meta, dict) else None
    if not isinstance(tc, dict) or "n_min" not in tc or "n_max" not in tc:
        return None
    return int(tc["n_min"]), int(tc["n_max"])
