"""Choosing a ``tf.distribute`` strategy for training.

* ``TF_CONFIG`` naming several tasks (workers and/or a chief) -> ``MultiWorkerMirroredStrategy``
  (must be created before any other TensorFlow op: call :func:`select_strategy` first);
* several visible GPUs -> ``MirroredStrategy`` over them;
* otherwise the default strategy (one device; the trainer then compiles the whole step as one
  XLA program).

How a step is split across replicas is described in :mod:`tf_impl.optim`. Only the chief
(:func:`is_chief`) writes checkpoints and summaries.
"""

from __future__ import annotations

import json
import os

from tf_impl._quiet import tf


def _tf_config() -> dict:
    try:
        cfg = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def n_cluster_tasks() -> int:
    """Number of workers (plus chief) that ``TF_CONFIG`` names; 0 if it names none."""
    cluster = _tf_config().get("cluster", {}) or {}
    return len(cluster.get("worker", []) or []) + len(cluster.get("chief", []) or [])


def select_strategy():
    """MultiWorkerMirrored if ``TF_CONFIG`` names several tasks, Mirrored if several GPUs, else the default."""
    if n_cluster_tasks() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` makes this process a non-chief task (a worker other than worker 0
    when there is no chief, or any worker when there is one)."""
    cfg = _tf_config()
    task = cfg.get("task", {}) or {}
    kind, index = task.get("type"), int(task.get("index", 0) or 0)
    if kind is None or n_cluster_tasks() <= 1:
        return True
    if kind == "chief":
        return True
    has_chief = bool((cfg.get("cluster", {}) or {}).get("chief"))
    return kind == "worker" and index == 0 and not has_chief


def describe(strategy) -> str:
    """One line: the strategy's class and its replica count."""
    name = type(strategy).__name__.lstrip("_")
    return f"{name} with {strategy.num_replicas_in_sync} replica(s)"
