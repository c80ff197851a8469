"""reference.checkpoint: exact round trips, clear errors for every kind of bad file, atomic writes."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from reference import ModelConfig, init_params, load_checkpoint, load_checkpoint_extra, save_checkpoint
from reference.checkpoint import FORMAT

CONFIGS = {
    "block": ModelConfig(parametrization="block", n_layers=3, n_heads=2, n_identity=3,
                         attention_norm="n", init_scale=0.2),
    "full": ModelConfig(parametrization="full", n_layers=2, n_heads=2, embed_dim=4, n=5, init_scale=0.2),
}


def raw_arrays(cfg, params, fmt=FORMAT, config_json=None, meta="{}"):
    """The arrays of a checkpoint written by hand, for crafting bad files."""
    arrays = {"__format__": np.array(fmt), "__config__": np.array(config_json or cfg.to_json()),
              "__meta__": np.array(meta)}
    arrays.update(params)
    return arrays


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_round_trip_is_exact(tmp_path, kind):
    cfg = CONFIGS[kind]
    params = init_params(cfg, seed=1)
    meta = {"step": 1234, "train": {"lr": 1e-3, "sizes": [2, 9]}, "metrics": {"mse": 2.5e-3}}
    extra = {"adam/m/layers.0.P": np.arange(6.0).reshape(2, 3), "rng": np.array([7, 8], dtype=np.uint64)}
    path = tmp_path / "sub" / "ckpt.npz"  # the folder is created
    save_checkpoint(path, params, cfg, meta=meta, extra=extra)
    params2, cfg2 = load_checkpoint(path)
    assert cfg2 == cfg
    assert list(params2) == list(params)
    for k in params:
        assert params2[k].dtype == np.float64
        assert np.array_equal(params2[k], params[k]), k  # bit-identical
    meta2, extra2 = load_checkpoint_extra(str(path))
    assert meta2 == meta
    assert sorted(extra2) == sorted(extra)
    for k, v in extra.items():
        assert extra2[k].dtype == v.dtype and np.array_equal(extra2[k], v), k


def test_no_meta_gives_empty_dict_and_overwrite(tmp_path):
    cfg = CONFIGS["block"]
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, init_params(cfg, seed=1), cfg)
    save_checkpoint(path, init_params(cfg, seed=2), cfg)  # overwrite in place
    params, _ = load_checkpoint(path)
    assert np.array_equal(params["layers.0.P"], init_params(cfg, seed=2)["layers.0.P"])
    assert load_checkpoint_extra(path) == ({}, {})


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    cfg = CONFIGS["full"]
    for i in range(3):
        save_checkpoint(tmp_path / "ckpt.npz", init_params(cfg, seed=i), cfg, meta={"i": i})
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def test_save_rejects_bad_params_and_writes_nothing(tmp_path):
    cfg = CONFIGS["block"]
    params = init_params(cfg, seed=1)
    del params["layers.2.Q"]
    with pytest.raises(ValueError, match=r"missing \['layers.2.Q'\]"):
        save_checkpoint(tmp_path / "ckpt.npz", params, cfg)
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint_extra(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match="is a directory, not a .npz file"):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint


def test_random_bytes(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_checkpoint(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_checkpoint(path)


def test_truncated_zip(tmp_path):
    cfg = CONFIGS["block"]
    good = tmp_path / "good.npz"
    save_checkpoint(good, init_params(cfg, seed=1), cfg)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable .npz file"):
            load_checkpoint(bad)


def test_plain_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="not a linear-transformer-solver/1 checkpoint|not a readable"):
        load_checkpoint(path)


def test_pickled_object_array(tmp_path):
    cfg = CONFIGS["block"]
    arrays = raw_arrays(cfg, init_params(cfg, seed=1))
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    path = tmp_path / "pickle.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_checkpoint(path)


@pytest.mark.parametrize(("fmt", "match"), [("linear-transformer-solver/0", "not a linear-transformer-solver/1"),
                                            ("something else", "something else")])
def test_wrong_format(tmp_path, fmt, match):
    cfg = CONFIGS["block"]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(cfg, init_params(cfg, seed=1), fmt=fmt))
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize(("key", "match"), [("__format__", "no format tag"), ("__config__", "lacks __config__"),
                                            ("__meta__", "lacks __meta__")])
def test_missing_reserved_entry(tmp_path, key, match):
    cfg = CONFIGS["block"]
    arrays = raw_arrays(cfg, init_params(cfg, seed=1))
    del arrays[key]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_params_missing_key(tmp_path, kind):
    cfg = CONFIGS[kind]
    params = init_params(cfg, seed=1)
    del params["layers.1.P"]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(cfg, params))
    with pytest.raises(ValueError, match=r"ckpt.npz.*missing \['layers.1.P'\]"):
        load_checkpoint(path)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_params_wrong_shape(tmp_path, kind):
    cfg = CONFIGS[kind]
    params = init_params(cfg, seed=1)
    params["layers.0.Q"] = params["layers.0.Q"][:, :-1]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(cfg, params))
    with pytest.raises(ValueError, match=r"'layers.0.Q' has shape"):
        load_checkpoint(path)


def test_params_unexpected_key(tmp_path):
    cfg = CONFIGS["block"]
    params = init_params(cfg, seed=1)
    params["layers.9.P"] = params["layers.0.P"]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(cfg, params))
    with pytest.raises(ValueError, match=r"unexpected \['layers.9.P'\]"):
        load_checkpoint(path)


def test_params_of_another_config(tmp_path):
    """Full-model weights saved under a block config (shapes differ, embedding unexpected)."""
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(CONFIGS["block"], init_params(CONFIGS["full"], seed=1)))
    with pytest.raises(ValueError, match="params do not match the config"):
        load_checkpoint(path)


def test_unknown_config_field(tmp_path):
    cfg = CONFIGS["block"]
    fields = json.loads(cfg.to_json()) | {"dropout": 0.1}
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(cfg, init_params(cfg, seed=1), config_json=json.dumps(fields)))
    with pytest.raises(ValueError, match=r"unknown fields \['dropout'\]"):
        load_checkpoint(path)


@pytest.mark.parametrize(("config_json", "match"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"parametrization": "block", "n_layers": 0}), "n_layers must be an int >= 1"),
])
def test_bad_config_json(tmp_path, config_json, match):
    cfg = CONFIGS["block"]
    path = tmp_path / "ckpt.npz"
    np.savez(path, **raw_arrays(cfg, init_params(cfg, seed=1), config_json=config_json))
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


def test_config_json_round_trip():
    for cfg in CONFIGS.values():
        assert ModelConfig.from_json(cfg.to_json()) == cfg


# ------------------------------------------------------------------------------------------------
# hostile files: refused quickly, without allocating what they declare, with a ValueError naming the file


def _zip_with(path, entries: dict):
    """A zip of raw ``name.npy`` entries: ``entries`` maps names to bytes (an .npy header, data...)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(f"{name}.npy", data)


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _valid_entries(cfg=None, meta="{}"):
    cfg = cfg or CONFIGS["block"]
    params = init_params(cfg, seed=0)
    out = {"__format__": _npy_bytes(np.array(FORMAT)), "__config__": _npy_bytes(np.array(cfg.to_json())),
           "__meta__": _npy_bytes(np.array(meta))}
    out.update({k: _npy_bytes(v) for k, v in params.items()})
    return out


def _huge_header(shape) -> bytes:
    """An .npy header declaring a float64 array of ``shape``, followed by only a few bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def test_a_zip_bomb_is_refused_before_allocating(tmp_path):
    import time

    for shape, what in (((2**29,), "declares 4096 MiB"), ((2**40, 7), "declares"), ((1024, 1024, 300), "MiB")):
        entries = _valid_entries()
        entries["extra/bomb"] = _huge_header(shape)
        path = tmp_path / "bomb.npz"
        _zip_with(path, entries)
        t = time.perf_counter()
        for load in (load_checkpoint, load_checkpoint_extra):
            with pytest.raises(ValueError, match=f"checkpoint .*bomb.npz.*{what}"):
                load(path)
        assert time.perf_counter() - t < 2.0


def test_a_truncated_entry_and_an_object_array_are_refused(tmp_path):
    entries = _valid_entries()
    entries["layers.0.P"] = _npy_bytes(init_params(CONFIGS["block"], 0)["layers.0.P"])[:-8]
    _zip_with(tmp_path / "short.npz", entries)
    with pytest.raises(ValueError, match="holds .* bytes, its header declares"):
        load_checkpoint(tmp_path / "short.npz")
    entries = _valid_entries()
    entries["extra/o"] = _npy_bytes(np.array([{"a": 1}], dtype=object))
    _zip_with(tmp_path / "obj.npz", entries)
    with pytest.raises(ValueError, match="object arrays are never loaded"):
        load_checkpoint_extra(tmp_path / "obj.npz")


def test_an_object_array_is_refused_at_save_time(tmp_path):
    cfg = CONFIGS["block"]
    with pytest.raises(ValueError, match=r"extra\['o'\] has dtype object"):
        save_checkpoint(tmp_path / "c.npz", init_params(cfg, 0), cfg, extra={"o": np.array([None, 1], dtype=object)})
    assert os.listdir(tmp_path) == []


def test_huge_configs_are_refused_before_building_anything(tmp_path):
    import time

    for n_layers in (10**9, 10**7, 2000):
        fields = json.loads(CONFIGS["block"].to_json())
        fields["n_layers"] = n_layers
        entries = _valid_entries()
        entries["__config__"] = _npy_bytes(np.array(json.dumps(fields)))
        _zip_with(tmp_path / "big.npz", entries)
        t = time.perf_counter()
        with pytest.raises(ValueError, match=r"checkpoint .*big.npz.*n_layers = \d+ is above the limit 1024"):
            load_checkpoint(tmp_path / "big.npz")
        assert time.perf_counter() - t < 1.0
    fields["n_layers"] = 7  # within the limits, but not what the file holds
    entries["__config__"] = _npy_bytes(np.array(json.dumps(fields)))
    _zip_with(tmp_path / "big.npz", entries)
    with pytest.raises(ValueError, match="the config has 7 layers, the file holds 3"):
        load_checkpoint(tmp_path / "big.npz")


def test_deeply_nested_json_is_a_value_error(tmp_path):
    _zip_with(tmp_path / "deep.npz", _valid_entries(meta="[" * 100000 + "]" * 100000))
    with pytest.raises(ValueError, match="__meta__ is nested too deeply"):
        load_checkpoint_extra(tmp_path / "deep.npz")
    params, cfg = load_checkpoint(tmp_path / "deep.npz")  # the parameters themselves are fine
    assert cfg == CONFIGS["block"]


def _patch_entry(path, name: str, *, method: int | None = None, flag_bits: int | None = None,
                 garble: bool = False) -> None:
    """Rewrite, in place, the zip fields of entry ``name`` (local header and central directory) or garble the
    middle of its compressed data: what a damaged or foreign file holds."""
    import struct

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        central = zf.start_dir
    raw = bytearray(open(path, "rb").read())
    local = info.header_offset
    cd = raw.index(b"PK\x01\x02", central)
    while raw[cd + 46: cd + 46 + len(name)] != name.encode():  # this entry's central record
        cd = raw.index(b"PK\x01\x02", cd + 4)
    if method is not None:
        struct.pack_into("<H", raw, local + 8, method)
        struct.pack_into("<H", raw, cd + 10, method)
    if flag_bits is not None:
        struct.pack_into("<H", raw, local + 6, flag_bits)
        struct.pack_into("<H", raw, cd + 8, flag_bits)
    if garble:  # deflate: block type 3 (reserved) at once; lzma: 40 bytes of the stream after its properties
        n_name, n_extra = struct.unpack_from("<HH", raw, local + 26)
        start = local + 30 + n_name + n_extra + (9 if info.compress_type == zipfile.ZIP_LZMA else 0)
        raw[start: start + 40] = b"\xff" * 40
    open(path, "wb").write(bytes(raw))


def _zip_compressed(path, compression) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in _valid_entries().items():
            zf.writestr(f"{name}.npy", data)


@pytest.mark.parametrize("case, match", [
    ("encrypted", "entry 'layers.0.P' is encrypted"),
    ("method 99", "entry 'layers.0.P' uses zip compression method 99"),
    ("corrupt deflate", r"is not a readable .npz file \(Error -3 while decompressing data: invalid block type"),
    ("corrupt lzma", r"is not a readable .npz file \(Corrupt input data"),
])
def test_damaged_zip_entries_are_value_errors_naming_the_file(tmp_path, case, match):
    """Each failed with the zip layer's own exception (RuntimeError, NotImplementedError, zlib.error, LZMAError)."""
    path = tmp_path / "damaged.npz"
    _zip_compressed(path, zipfile.ZIP_LZMA if case == "corrupt lzma" else zipfile.ZIP_DEFLATED)
    load_checkpoint(path)  # intact, it loads
    _patch_entry(path, "layers.0.P.npy", flag_bits=0x1 if case == "encrypted" else None,
                 method=99 if case == "method 99" else None, garble=case.startswith("corrupt"))
    for load in (load_checkpoint, load_checkpoint_extra):
        with pytest.raises(ValueError, match=f"checkpoint '.*damaged.npz'.*{match}"):
            load(path)


def test_a_negative_shape_is_refused_from_the_header(tmp_path):
    """Shape (-1,) has a negative declared size, below every limit: the old check let it through and the
    loader read the whole entry (600 MiB in the case found) before refusing it."""
    import time

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (-1,)})
    entries = _valid_entries()
    entries["extra/neg"] = buf.getvalue() + b"\0" * (64 * 2**20)  # compresses to a small file
    _zip_with(tmp_path / "neg.npz", entries)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"checkpoint '.*neg.npz'.*entry 'extra/neg' declares the shape \(-1,\)"):
        load_checkpoint_extra(tmp_path / "neg.npz")
    assert time.perf_counter() - t < 0.5


def test_complex_parameters_are_refused(tmp_path):
    entries = _valid_entries()
    P = init_params(CONFIGS["block"], 0)["layers.0.P"]
    entries["layers.0.P"] = _npy_bytes(P + 1j * P)
    _zip_with(tmp_path / "complex.npz", entries)
    with pytest.raises(ValueError, match=r"checkpoint '.*complex.npz': parameter 'layers.0.P' has dtype complex128"):
        load_checkpoint(tmp_path / "complex.npz")


@pytest.mark.parametrize("meta", ["[1, 2]", '"text"', "3"])
def test_metadata_that_is_not_an_object_is_refused(tmp_path, meta):
    _zip_with(tmp_path / "m.npz", _valid_entries(meta=meta))
    with pytest.raises(ValueError, match=r"checkpoint '.*m.npz': __meta__ must be a JSON object"):
        load_checkpoint_extra(tmp_path / "m.npz")
