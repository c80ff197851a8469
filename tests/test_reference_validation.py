"""Bad input to the public functions raises ValueError with a message naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from reference import ModelConfig, check_systems, forward, forward_layers, init_params, loss_and_grads, sample_systems

B, M, SIZES = 5, 7, (3, 7)
BLOCK = ModelConfig(parametrization="block", n_layers=2, n_heads=2, init_scale=0.2)
FULL = ModelConfig(parametrization="full", n_layers=2, n_heads=2, embed_dim=4, n=5, init_scale=0.2)


def good_inputs(seed=0, cfg=BLOCK):
    sizes = SIZES if cfg.parametrization == "block" else cfg.n
    A, b, x, mask = sample_systems(B, sizes, seed=seed)
    x0 = 0.5 * np.random.default_rng([seed, 1]).standard_normal(x.shape) * mask
    return {"params": init_params(cfg, seed=seed), "cfg": cfg, "A": A, "b": b, "x": x, "mask": mask, "x0": x0}


def call(fn, d):
    if fn is loss_and_grads:
        return fn(d["params"], d["cfg"], d["A"], d["b"], d["x"], d["mask"], x0=d["x0"])
    return fn(d["params"], d["cfg"], d["A"], d["b"], d["mask"], d["x0"])


FUNCS = pytest.mark.parametrize("fn", [forward, forward_layers, loss_and_grads], ids=lambda f: f.__name__)


def first_padded(d):
    """(system, first padded index) of a system smaller than M."""
    n_s = d["mask"].sum(axis=1)
    s = int(np.flatnonzero(n_s < M)[0])
    return s, int(n_s[s])


def _nonsym(d):
    d["A"][0, 0, 1] += 1e-6
    return d


def _set(key, idx, value):
    def f(d):
        d[key] = d[key].astype(np.float64) if key != "mask" else d[key]
        d[key][idx] = value
        return d
    return f


def _pad_nonzero(key):
    def f(d):
        s, n = first_padded(d)
        if key == "A":
            d["A"][s, n, n] = 1.0  # stays symmetric
        else:
            d[key][s, n] = 0.5
        return d
    return f


def _mask_non_prefix(d):
    s, n = first_padded(d)
    d["mask"][s, n - 1], d["mask"][s, n] = False, True
    return d


def _mask_values(d):
    d["mask"] = d["mask"].astype(np.float64) * 2.0
    return d


def _mask_empty_row(d):
    d["mask"][0] = False
    return d


CASES = {
    "2-D A": (lambda d: d | {"A": d["A"][0]}, r"A must be a batch of square matrices \(B, M, M\)"),
    "non-square A": (lambda d: d | {"A": d["A"][:, :, :-1]}, "A must be a batch of square matrices"),
    "4-D A": (lambda d: d | {"A": d["A"][None]}, "A must be a batch of square matrices"),
    "empty batch": (lambda d: d | {"A": d["A"][:0], "b": d["b"][:0]}, "at least one system"),
    "non-symmetric A": (_nonsym, "A must be symmetric"),
    "complex A": (lambda d: d | {"A": d["A"] + 0j}, "A must hold real numbers"),
    "b wrong length": (lambda d: d | {"b": d["b"][:, :-1]}, r"b must have shape \(B, M\)"),
    "b 3-D": (lambda d: d | {"b": d["b"][:, :, None]}, r"b must have shape \(B, M\)"),
    "NaN in A": (_set("A", (0, 1, 1), np.nan), "A contains NaN or Inf"),
    "Inf in A": (_set("A", (1, 0, 0), np.inf), "A contains NaN or Inf"),
    "NaN in b": (_set("b", (2, 0), np.nan), "b contains NaN or Inf"),
    "Inf in b": (_set("b", (2, 1), -np.inf), "b contains NaN or Inf"),
    "NaN in x0": (_set("x0", (3, 0), np.nan), "x0 must be finite"),
    "Inf in x0": (_set("x0", (3, 0), np.inf), "x0 must be finite"),
    "x0 wrong shape": (lambda d: d | {"x0": d["x0"][:, :-1]}, r"x0 must have shape \(B, M\)"),
    "mask wrong shape": (lambda d: d | {"mask": d["mask"][:, :-1]}, r"mask must have shape \(B, M\)"),
    "mask non-prefix": (_mask_non_prefix, "mask must be a prefix of ones"),
    "mask not 0/1": (_mask_values, "mask must be boolean or hold only 0 and 1"),
    "mask empty row": (_mask_empty_row, "every system needs at least one real coordinate"),
    "A nonzero padding": (_pad_nonzero("A"), "A has nonzero entries outside its mask"),
    "b nonzero padding": (_pad_nonzero("b"), "b has nonzero entries outside its mask"),
    "x0 nonzero padding": (_pad_nonzero("x0"), "x0 has nonzero entries outside its mask"),
    "params missing key": (lambda d: d | {"params": {k: v for k, v in d["params"].items() if k != "layers.1.Q"}},
                           r"missing \['layers.1.Q'\]"),
    "params extra key": (lambda d: d | {"params": d["params"] | {"embedding": np.zeros((5, 4))}},
                         r"unexpected \['embedding'\]"),
    "params wrong shape": (lambda d: d | {"params": d["params"] | {"layers.0.P": np.zeros((2, 4, 4))}},
                           r"param 'layers.0.P' has shape \(2, 4, 4\), the config needs \(2, 5, 5\)"),
    "params NaN": (lambda d: d | {"params": d["params"] | {"layers.0.Q": np.full((2, 5, 5), np.nan)}},
                   "param 'layers.0.Q' contains NaN or Inf"),
    "params not a dict": (lambda d: d | {"params": list(d["params"].values())}, "params must be a dict"),
    "cfg not a ModelConfig": (lambda d: d | {"cfg": {"parametrization": "block"}}, "cfg must be a ModelConfig"),
}


@FUNCS
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(fn, case):
    mutate, match = CASES[case]
    d = mutate(good_inputs())
    with pytest.raises(ValueError, match=match):
        call(fn, d)


@FUNCS
def test_good_input_passes(fn):
    call(fn, good_inputs())
    d = good_inputs()
    d["mask"] = d["mask"].astype(np.int64)  # 0/1 numeric masks are accepted
    d["x0"] = None
    call(fn, d)


def test_mask_none_means_all_real():
    d = good_inputs()
    A, b, _, _ = sample_systems(3, 6, seed=1)
    out = forward(d["params"], BLOCK, A, b)
    # exact: mask=None becomes this very all-True mask, so both calls run the same arithmetic on the same batch
    np.testing.assert_array_equal(out, forward(d["params"], BLOCK, A, b, np.ones((3, 6), dtype=bool)))


def test_nearly_symmetric_is_accepted():
    """The symmetry tolerance is 1e-8 * max(1, max|A|): rounding-level asymmetry passes."""
    d = good_inputs()
    d["A"][0, 0, 1] += 1e-12
    forward(d["params"], BLOCK, d["A"], d["b"], d["mask"])


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d | {"x": d["x"][:, :-1]}, r"x must have shape \(B, M\)"),
    (_set("x", (0, 0), np.nan), "x must be finite"),
    (_pad_nonzero("x"), "x has nonzero entries outside its mask"),
])
def test_bad_target(mutate, match):
    d = mutate(good_inputs())
    with pytest.raises(ValueError, match=match):
        call(loss_and_grads, d)


@FUNCS
def test_full_model_wrong_size(fn):
    d = good_inputs(cfg=FULL)
    A, b, x, mask = sample_systems(B, 6, seed=3)
    with pytest.raises(ValueError, match="runs only on systems of size n=5"):
        call(fn, d | {"A": A, "b": b, "x": x, "mask": mask, "x0": None})
    A, b, x, mask = sample_systems(B, (3, 5), seed=4)  # padded to 5, but not every system is of size 5
    assert not mask.all()
    with pytest.raises(ValueError, match="runs only on systems of size n=5"):
        call(fn, d | {"A": A, "b": b, "x": x, "mask": mask, "x0": None})


def test_check_systems_returns_float64_and_bool():
    A, b, x, mask = sample_systems(2, 4, seed=0)
    A2, b2, mask2, x0, x2 = check_systems(A.astype(np.float32), b.astype(np.float32), mask.astype(np.int8), x=x)
    assert A2.dtype == b2.dtype == x0.dtype == x2.dtype == np.float64 and mask2.dtype == bool
    assert np.all(x0 == 0)


# ----------------------------------------------------------------------------------------------
# sample_systems and ModelConfig


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch": 4, "sizes": 1}, r"2 <= n_min <= n_max"),
    ({"batch": 4, "sizes": (5, 3)}, r"2 <= n_min <= n_max"),
    ({"batch": 4, "sizes": (0, 3)}, r"2 <= n_min <= n_max"),
    ({"batch": 4, "sizes": "abc"}, "sizes must be an int n or a pair"),
    ({"batch": 4, "sizes": (2, 3, 4)}, "sizes must be an int n or a pair"),
    ({"batch": 4, "sizes": None}, "sizes must be an int n or a pair"),
    ({"batch": 0, "sizes": 3}, "batch must be an int >= 1"),
    ({"batch": 2.5, "sizes": 3}, "batch must be an int >= 1"),
    ({"batch": True, "sizes": 3}, "batch must be an int >= 1"),
    ({"batch": 4, "sizes": 3, "kappa": 0.5}, "kappa must be a number in \\[1, 1e\\+15\\]"),
    ({"batch": 4, "sizes": 3, "kappa": float("nan")}, "kappa must be a number in \\[1, 1e\\+15\\]"),
    ({"batch": 4, "sizes": 3, "kappa": float("inf")}, "kappa must be a number in \\[1, 1e\\+15\\]"),
    ({"batch": 4, "sizes": 3, "kappa": 1e308}, "kappa must be a number in \\[1, 1e\\+15\\]"),
    ({"batch": 4, "sizes": 3, "kappa": (10.0, 1e16)}, "kappa_min <= kappa_max <= 1e\\+15"),
])
def test_sample_systems_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_systems(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"parametrization": "dense"}, "parametrization must be one of"),
    ({"parametrization": "block", "n": 5}, "n must be None"),
    ({"parametrization": "full"}, "full parametrization needs the system size n"),
    ({"parametrization": "full", "n": 0}, "full parametrization needs the system size n"),
    ({"parametrization": "full", "n": 5.0}, "full parametrization needs the system size n"),
    ({"n_layers": 0}, "n_layers must be an int >= 1"),
    ({"n_layers": 2.0}, "n_layers must be an int >= 1"),
    ({"n_layers": True}, "n_layers must be an int >= 1"),
    ({"n_heads": 0}, "n_heads must be an int >= 1"),
    ({"n_identity": -1}, "n_identity must be an int >= 0"),
    ({"embed_dim": -1}, "embed_dim must be an int >= 0"),
    ({"attention_norm": "sqrt"}, "attention_norm must be one of"),
    ({"attention_norm": None}, "attention_norm must be one of"),
    ({"init_scale": 0.0}, "init_scale must be a positive number"),
    ({"init_scale": -0.1}, "init_scale must be a positive number"),
    ({"init_scale": float("nan")}, "init_scale must be a positive number"),
])
def test_model_config_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_model_config_good_and_frozen():
    cfg = ModelConfig(parametrization="full", n=9, embed_dim=27)
    assert cfg.token_width(9) == 37
    assert ModelConfig().token_width(9) == 9 + 1 + 27 and ModelConfig().n_groups == 5
    with pytest.raises(AttributeError):
        cfg.n = 3  # frozen
