"""One ``.npz`` checkpoint format for both packages.

Layout of the archive:
    ``__format__``        the string ``FORMAT`` (a version tag checked on load)
    ``__config__``        the :class:`ModelConfig` as JSON
    ``__meta__``          free JSON (training config, step, metrics...); ``{}`` if none
    ``<param name>``      every parameter, float64 (e.g. ``layers.0.P``)
    ``extra/<name>``      optional arrays a trainer needs to resume (optimizer slots, RNG state)

Loading is defensive (hostile or corrupt files): every entry's header is checked before its data
is read (dtype, declared size against :data:`MAX_ARRAY_BYTES` / :data:`MAX_TOTAL_BYTES`), the JSON
texts are bounded, the config's sizes are bounded (:data:`reference.config.LIMITS`) and checked
against the arrays present; every failure is a ``ValueError`` naming the file.

Writes are atomic: the archive is written to a temporary file in the same folder, flushed to
disk, then renamed over ``path``, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import tempfile
import zipfile
import zlib

import numpy as np

from reference.config import ModelConfig
from reference.model import check_params

FORMAT = "linear-transformer-solver/1"
TMP_PREFIX, TMP_SUFFIX = ".tmp-", ".npz"  # the temporary file of an atomic write (tempfile.mkstemp's random middle)
TMP_PATTERN = re.compile(rf"^{re.escape(TMP_PREFIX)}[A-Za-z0-9_]+{re.escape(TMP_SUFFIX)}$")
"""Names of the temporary files a write killed mid-way can leave (``tf_impl.train`` removes them)."""
_RESERVED = ("__format__", "__config__", "__meta__")


def save_checkpoint(path, params, cfg: ModelConfig, meta: dict | None = None, extra: dict | None = None) -> None:
    """Write ``params`` (validated against ``cfg``), ``cfg``, optional JSON ``meta`` and ``extra`` arrays
    (numeric or bool; an object array is refused here, since the loader would refuse it)."""
    params = check_params(params, cfg)
    arrays = {"__format__": np.array(FORMAT), "__config__": np.array(cfg.to_json()),
              "__meta__": np.array(json.dumps(meta or {}, sort_keys=True))}
    arrays.update(params)
    for name, value in (extra or {}).items():
        value = np.asarray(value)
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            raise ValueError(f"extra[{name!r}] has dtype {value.dtype}: only numeric or bool arrays can be saved "
                             "(the loader never reads object arrays)")
        arrays[f"extra/{name}"] = value
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=folder)
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


MAX_ARRAY_BYTES = 256 * 2**20
"""Largest array a checkpoint may hold (the biggest model here needs well under 1 MiB per array)."""
MAX_TOTAL_BYTES = 1024 * 2**20
"""Largest total of the arrays of one checkpoint."""
MAX_JSON_CHARS = 16 * 2**20
"""Longest ``__config__`` / ``__meta__`` JSON text."""


_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                 zipfile.ZIP_LZMA: "lzma"}
"""The zip compression methods an entry may use (``np.savez``: stored; ``np.savez_compressed``: deflate)."""


def _read_entries(path: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` entry of the zip at ``path``, each header checked before its data is read:
    not encrypted, a known compression method, a numeric, bool or string dtype (never an object
    array), a shape of non-negative sizes, a declared size within :data:`MAX_ARRAY_BYTES`, a running
    total within :data:`MAX_TOTAL_BYTES` and no larger than the entry itself, so that a small file
    declaring a huge array (a zip bomb) is refused without allocating or reading it."""
    out, total = {}, 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected entry {info.filename!r} (not an .npy array)")
            name = info.filename[: -len(".npy")]
            if info.flag_bits & 0x1:
                raise ValueError(f"entry {name!r} is encrypted (a checkpoint never is)")
            if info.compress_type not in _COMPRESSIONS:
                raise ValueError(f"entry {name!r} uses zip compression method {info.compress_type}; a checkpoint "
                                 f"uses one of {', '.join(_COMPRESSIONS.values())}")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f, max_header_size=10000)
                if dtype.hasobject or dtype.kind not in "biufcSU":
                    raise ValueError(f"entry {name!r} has dtype {dtype} (object arrays are never loaded)")
                if any(d < 0 for d in shape):
                    raise ValueError(f"entry {name!r} declares the shape {shape} (a negative size)")
                size = int(np.prod(shape, dtype=object)) * dtype.itemsize
                total += size
                if size > MAX_ARRAY_BYTES or total > MAX_TOTAL_BYTES:
                    raise ValueError(f"entry {name!r} declares {size / 2**20:.0f} MiB (shape {shape}); the limits "
                                     f"are {MAX_ARRAY_BYTES // 2**20} MiB per array and {MAX_TOTAL_BYTES // 2**20} "
                                     "MiB per checkpoint")
                if size > info.file_size:  # the zip directory's size of the entry, header included
                    raise ValueError(f"entry {name!r} declares {size} bytes (shape {shape}), more than the "
                                     f"{info.file_size} the entry holds")
                data = f.read(size + 1)
                if len(data) != size:
                    raise ValueError(f"entry {name!r} holds {len(data)} bytes, its header declares {size}")
                arr = np.frombuffer(data, dtype=dtype)
                out[name] = (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()
    return out


def _open(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a directory, not a .npz file")
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist")
    try:
        contents = _read_entries(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, MemoryError, RuntimeError, NotImplementedError,
            zlib.error, lzma.LZMAError) as e:  # the zip layer's own errors: a corrupt stream, an unknown method
        raise ValueError(f"checkpoint {path!r} is not a readable .npz file ({e})") from None
    if "__format__" not in contents or str(contents["__format__"]) != FORMAT:
        got = str(contents["__format__"])[:100] if "__format__" in contents else "no format tag"
        raise ValueError(f"checkpoint {path!r} is not a {FORMAT} checkpoint ({got})")
    for key in ("__config__", "__meta__"):
        if key not in contents:
            raise ValueError(f"checkpoint {path!r} lacks {key}")
        if contents[key].dtype.kind != "U" or contents[key].shape != () or len(str(contents[key])) > MAX_JSON_CHARS:
            raise ValueError(f"checkpoint {path!r}: {key} must be one JSON string of at most {MAX_JSON_CHARS} chars")
    return path, contents


def _json(path, key: str, text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else f"not valid JSON ({e})"
        raise ValueError(f"checkpoint {path!r}: {key} is {what}") from None


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """Read ``(params, cfg)``; raises ``ValueError`` if the file is missing, corrupt or inconsistent."""
    path, contents = _open(path)
    params = {k: v for k, v in contents.items() if k not in _RESERVED and not k.startswith("extra/")}
    for k, v in params.items():
        if v.dtype.kind == "c":  # complex would lose its imaginary part in float64, silently
            raise ValueError(f"checkpoint {path!r}: parameter {k!r} has dtype {v.dtype}; parameters are real numbers")
    try:
        fields = _json(path, "__config__", str(contents["__config__"]))
        cfg = ModelConfig.from_json(json.dumps(fields))
        n_stored = len({k.split(".")[1] for k in params if k.startswith("layers.")})
        if cfg.n_layers > n_stored:  # before building anything of the config's size
            raise ValueError(f"params do not match the config: the config has {cfg.n_layers} layers, the file "
                             f"holds {n_stored}")
        params = check_params(params, cfg)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(f"checkpoint {path!r}") else f"checkpoint {path!r}: {msg}") from None
    return params, cfg


def load_checkpoint_extra(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read ``(meta, extra)``: the JSON metadata and the ``extra/`` arrays (for resuming)."""
    path, contents = _open(path)
    meta = _json(path, "__meta__", str(contents["__meta__"]))
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {path!r}: __meta__ must be a JSON object, got a {type(meta).__name__}")
    extra = {k[len("extra/"):]: v for k, v in contents.items() if k.startswith("extra/")}
    return meta, extra


# ----------------------------------------------------------------------------------------------
# lineage: where a model's weights come from (docs/conventions.md, "Checkpoints")

LINEAGE_FIELDS = ("preset", "init", "init_from", "optimizer", "n_layers", "steps", "seed", "dtype", "loss")
"""The keys of one lineage entry: a training run (``steps`` done; ``loss`` its last training loss)."""
LINEAGE_TEXT_FIELDS = ("preset", "init", "init_from", "optimizer", "dtype")
"""The fields that hold a string (or ``null``); ``n_layers``, ``steps``, ``seed`` hold integers, ``loss`` a number or
``null``."""
MAX_LINEAGE_RUNS = 1000
"""The most runs a lineage may hold: a longer one is refused when read, and a run whose lineage would pass it
(``--init-from`` or ``--resume`` of a checkpoint at the limit) is refused before it starts."""
MAX_LINEAGE_TEXT = 300
"""The longest string a lineage entry keeps when it is copied into a new checkpoint (longer ones are cut)."""
SHOW_TEXT, SHOW_RUNS = 80, 12
"""What ``describe_lineage`` prints at most: characters of one string, and runs (the first and the last ones)."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on (escape sequences, carriage returns, bidirectional overrides): never printed nor
copied as they are."""


def lineage_entry(train_config: dict, steps: int, loss) -> dict:
    """The lineage entry of a run with ``train_config`` (a ``TrainConfig.to_dict()``) after ``steps`` steps.
    A config written before the ``optimizer`` or ``init`` field existed trained with Adam from random weights
    (``tf_impl.train`` had no other optimizer or start then, but ``--init-from``, which ``init_from`` records)."""
    entry = {k: train_config.get(k) for k in LINEAGE_FIELDS if k not in ("steps", "loss")}
    entry["optimizer"] = entry["optimizer"] or "adam"
    entry["init"] = entry["init"] or "random"
    entry["steps"] = int(steps)
    entry["loss"] = None if loss is None else float(loss)
    return entry


def _entry_problem(e) -> str | None:
    """What is wrong with one lineage entry, or None."""
    from reference.config import is_int, is_real

    if not isinstance(e, dict):
        return f"is a {type(e).__name__}, not an object"
    missing = [k for k in LINEAGE_FIELDS if k not in e]
    if missing:
        return f"lacks {', '.join(missing)}"
    for k in LINEAGE_TEXT_FIELDS:
        if e[k] is not None and not isinstance(e[k], str):
            return f"{k!r} must be a string or null, got a {type(e[k]).__name__}"
    for k in ("n_layers", "steps", "seed"):
        if not (is_int(e[k], allow_numpy=False) and e[k] >= 0):
            return f"{k!r} must be an integer >= 0, got a {type(e[k]).__name__}"
    if e["loss"] is not None and not is_real(e["loss"]):
        return f"'loss' must be a number or null, got a {type(e['loss']).__name__}"
    return None


def lineage_of(meta: dict, path=None) -> list[dict]:
    """The chain of runs that made a checkpoint, root first: ``meta["lineage"]`` as the training CLI writes
    it, or, for a checkpoint written without one, a single entry rebuilt from its ``train_config`` (its own
    ancestors then unknown: an ``init_from`` entry names the file it started from). A checkpoint with no
    training config at all gives ``[]``. Raises ``ValueError`` (naming ``path``, the entry and the field) on a
    malformed lineage: not a list, more than :data:`MAX_LINEAGE_RUNS` runs, an entry that is not an object with
    the keys :data:`LINEAGE_FIELDS`, or a field of the wrong type (strings, integers, a number)."""
    lineage = meta.get("lineage")
    if lineage is None:
        tc = meta.get("train_config")
        if not isinstance(tc, dict):
            return []
        from reference.config import is_int, is_real

        step, metrics = meta.get("step") or 0, meta.get("metrics")
        loss = metrics.get("train_loss") if isinstance(metrics, dict) else None
        if not (is_int(step) and step >= 0):
            raise ValueError(f"checkpoint {path!r}: meta step must be an integer >= 0, got a {type(step).__name__}")
        lineage = [lineage_entry(tc, step, loss if is_real(loss) else None)]  # checked below: free JSON too
    where = f"checkpoint {path!r}: meta lineage"
    if not isinstance(lineage, list):
        raise ValueError(f"{where} must be a list of objects with the keys {LINEAGE_FIELDS}, got a "
                         f"{type(lineage).__name__}")
    if len(lineage) > MAX_LINEAGE_RUNS:
        raise ValueError(f"{where} holds {len(lineage)} runs, more than the {MAX_LINEAGE_RUNS} a lineage may hold")
    for i, e in enumerate(lineage):
        problem = _entry_problem(e)
        if problem:
            raise ValueError(f"{where} must be a list of objects with the keys {LINEAGE_FIELDS}: entry {i} {problem}")
    return lineage


def clean_lineage(lineage: list[dict], path=None) -> list[dict]:
    """A lineage as a new checkpoint may copy it (``--init-from``, ``--resume``): validated by :func:`lineage_of`,
    with every string's terminal control characters written as escapes and cut to :data:`MAX_LINEAGE_TEXT`
    characters, and room for one more run (``ValueError`` naming ``path`` otherwise)."""
    lineage = lineage_of({"lineage": lineage}, path)
    if len(lineage) >= MAX_LINEAGE_RUNS:
        raise ValueError(f"checkpoint {path!r}: its lineage holds {len(lineage)} runs; a run started from it would "
                         f"record one more, above the {MAX_LINEAGE_RUNS} a lineage may hold")
    return [{k: _clean_text(e[k], MAX_LINEAGE_TEXT) if k in LINEAGE_TEXT_FIELDS else e[k] for k in LINEAGE_FIELDS}
            for e in lineage]


def _clean_text(v, limit: int):
    """``v`` with terminal control characters escaped (``\\x1b``) and cut to ``limit`` characters (``None`` kept)."""
    if v is None:
        return None
    text = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), v)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def describe_lineage(lineage: list[dict]) -> str:
    """One line per run, root first (at most :data:`SHOW_RUNS`: the first and last ones, the count of those
    between), every string escaped and cut as :func:`clean_lineage` does (to :data:`SHOW_TEXT`), and a verdict:
    ``learned from random weights`` (the root run started from a random initialisation and every later run from
    its predecessor), ``constructed`` (the root is a hand-set construction of
    ``reference.constructions.INITS``, trained or not) or ``unknown origin`` (a run started from a file whose
    own lineage was not recorded, or a start the lineage does not name)."""
    from reference.constructions import INITS

    if not lineage:
        return "lineage: not recorded"

    def show(v):
        return _clean_text(v, SHOW_TEXT)

    lines = []
    for i, e in enumerate(lineage):
        if SHOW_RUNS // 2 <= i < len(lineage) - SHOW_RUNS // 2:
            if i == SHOW_RUNS // 2:
                lines.append(f"  ... {len(lineage) - 2 * (SHOW_RUNS // 2)} runs ...")
            continue
        start = f"from {show(e['init_from'])}" if e["init_from"] else f"init {show(e['init'])}"
        loss = "?" if e["loss"] is None else f"{e['loss']:.3g}"
        lines.append(f"  {i}. {show(e['preset'])}: {e['n_layers']} layers, {start}, {show(e['optimizer'])} "
                     f"{e['steps']} steps, seed {e['seed']}, {show(e['dtype'])}, final training loss {loss}")
    root = lineage[0]
    if root["init_from"]:
        verdict = "unknown origin (the first recorded run started from a file without a lineage)"
    elif root["init"] == "random":
        depths = [e["n_layers"] for e in lineage]
        grown = f", grown from {depths[0]} to {depths[-1]} layers" if depths[0] != depths[-1] else ""
        verdict = "learned from random weights" + (f" (over {len(lineage)} runs{grown})" if len(lineage) > 1 else "")
    elif root["init"] in INITS:
        verdict = f"constructed ({root['init']})" + (", then trained" if any(e["steps"] for e in lineage) else "")
    else:
        verdict = f"unknown origin (the first recorded run names no known start: init {show(root['init'])})"
    return f"lineage: {verdict}\n" + "\n".join(lines)
