"""One ``.npz`` checkpoint format for both packages.

Layout of the archive:
    ``__format__``        the string ``FORMAT`` (a version tag checked on load)
    ``__config__``        the :class:`ModelConfig` as JSON
    ``__meta__``          free JSON (training config, step, metrics...); ``{}`` if none
    ``<param name>``      every parameter, float64 (e.g. ``layers.0.P``)
    ``extra/<name>``      optional arrays a trainer needs to resume (optimizer slots, RNG state)

Writes are atomic: the archive is written to a temporary file in the same folder, flushed to
disk, then renamed over ``path``, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from reference.config import ModelConfig
from reference.model import check_params

FORMAT = "linear-transformer-solver/1"
_RESERVED = ("__format__", "__config__", "__meta__")


def save_checkpoint(path, params, cfg: ModelConfig, meta: dict | None = None, extra: dict | None = None) -> None:
    """Write ``params`` (validated against ``cfg``), ``cfg``, optional JSON ``meta`` and ``extra`` arrays."""
    params = check_params(params, cfg)
    arrays = {"__format__": np.array(FORMAT), "__config__": np.array(cfg.to_json()),
              "__meta__": np.array(json.dumps(meta or {}, sort_keys=True))}
    arrays.update(params)
    for name, value in (extra or {}).items():
        arrays[f"extra/{name}"] = np.asarray(value)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _open(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            contents = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"checkpoint {path!r} is not a readable .npz file ({e})") from None
    if "__format__" not in contents or str(contents["__format__"]) != FORMAT:
        got = str(contents["__format__"]) if "__format__" in contents else "no format tag"
        raise ValueError(f"checkpoint {path!r} is not a {FORMAT} checkpoint ({got})")
    for key in ("__config__", "__meta__"):
        if key not in contents:
            raise ValueError(f"checkpoint {path!r} lacks {key}")
    return path, contents


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """Read ``(params, cfg)``; raises ``ValueError`` if the file is missing, corrupt or inconsistent."""
    path, contents = _open(path)
    cfg = ModelConfig.from_json(str(contents["__config__"]))
    params = {k: v for k, v in contents.items() if k not in _RESERVED and not k.startswith("extra/")}
    try:
        params = check_params(params, cfg)
    except ValueError as e:
        raise ValueError(f"checkpoint {path!r}: {e}") from None
    return params, cfg


def load_checkpoint_extra(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read ``(meta, extra)``: the JSON metadata and the ``extra/`` arrays (for resuming)."""
    path, contents = _open(path)
    try:
        meta = json.loads(str(contents["__meta__"]))
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {path!r}: __meta__ is not valid JSON ({e})") from None
    extra = {k[len("extra/"):]: v for k, v in contents.items() if k.startswith("extra/")}
    return meta, extra
