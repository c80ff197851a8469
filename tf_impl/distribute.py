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


def _tf_config() -> dict:
    """``TF_CONFIG`` parsed and checked (``{}`` when unset): ``ValueError`` naming it when it is not JSON, not
    an object, its ``cluster`` is not an object of lists of ``"host:port"`` strings, or its ``task`` does not
    name a job of the cluster and an integer index within it."""
    try:
        cfg = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e})") from None

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"TF_CONFIG: {what} (docs/cli.md, 'Several machines')")

    need(isinstance(cfg, dict), f"must be a JSON object, got a {type(cfg).__name__}")
    cluster, task = cfg.get("cluster", {}), cfg.get("task", {})
    need(isinstance(cluster, dict), f"'cluster' must be an object (job -> list of 'host:port'), got {cluster!r:.80}")
    for job, hosts in cluster.items():
        need(isinstance(hosts, list) and all(isinstance(h, str) for h in hosts),
             f"cluster[{job!r}] must be a list of 'host:port' strings, got {hosts!r:.80}")
    need(isinstance(task, dict), f"'task' must be an object with 'type' and 'index', got {task!r:.80}")
    if task:
        kind, index = task.get("type"), task.get("index", 0)
        need(isinstance(kind, str) and kind in cluster,
             f"task type {kind!r} is not a job of the cluster ({', '.join(map(repr, cluster)) or 'none'})")
        need(isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(cluster[kind]),
             f"task index {index!r} must be an integer in [0, {len(cluster[kind])}) for job {kind!r}")
    return cfg


def check_tf_config() -> None:
    """Raise ``ValueError`` (one line naming ``TF_CONFIG``) if it is set and malformed; before TensorFlow starts."""
    _tf_config()


def n_cluster_tasks() -> int:
    """Number of workers (plus chief) that ``TF_CONFIG`` names; 0 if it names none."""
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def select_strategy():
    """MultiWorkerMirrored if ``TF_CONFIG`` names several tasks, Mirrored if several GPUs, else the default."""
    from tf_impl._quiet import tf

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
    task = cfg.get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    if kind is None or n_cluster_tasks() <= 1:
        return True
    if kind == "chief":
        return True
    has_chief = bool(cfg.get("cluster", {}).get("chief"))
    return kind == "worker" and index == 0 and not has_chief


def describe(strategy) -> str:
    """One line: the strategy's class and its replica count."""
    name = type(strategy).__name__.lstrip("_")
    return f"{name} with {strategy.num_replicas_in_sync} replica(s)"
