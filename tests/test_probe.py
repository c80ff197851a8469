"""The per-layer probe of reference.analysis (which algorithm a model follows layer by layer), the
comparison of block scalars with the Newton-Schulz construction, and ``python -m tf_impl.evaluate --probe``."""

import json

import numpy as np
import pytest

import reference
from reference.analysis import (
    PROBE_METHODS,
    construction_alignment,
    error_similarity,
    krylov_best_errors,
    krylov_best_points,
    layer_probe,
    lens_layers,
    match_iterates,
    newton_schulz_iterates,
)
from reference.baselines import chebyshev, conjugate_gradient
from reference.config import ModelConfig
from reference.constructions import newton_schulz_params, newton_schulz_schedule
from reference.data import sample_systems
from reference.model import forward, forward_layers, init_params
from reference.report import as_plain, probe_markdown
from tests.helpers import check_tensor

KAPPA = 10.0
H1 = 2  # group index of h^1


def systems(batch=30, sizes=(3, 12), seed=4, with_x0=False):
    A, b, x, mask = sample_systems(batch, sizes, KAPPA, seed=seed)
    x0 = np.random.default_rng(seed).standard_normal(x.shape) * mask if with_x0 else None
    return A, b, x, mask, x0


# ------------------------------------------------------------------------------------------------
# the algorithms' iterates


@pytest.mark.parametrize("with_x0", [False, True])
def test_newton_schulz_iterates_are_chebyshev_with_doubling_steps(with_x0):
    """Iterate k >= 2 has the residual polynomial T_2 o ... o T_2 (k - 1 times), each normalised on the
    interval of the spectrum: the degree-2^(k-1) Chebyshev polynomial, so iterate k is 2^(k-1) steps of the
    Chebyshev iteration, computed here by another code path (three-term recurrence on vectors)."""
    A, b, x, mask, x0 = systems(with_x0=with_x0)
    ns = newton_schulz_iterates(A, b, mask, x0, n_steps=5, kappa=KAPPA)  # (B, 6, M)
    assert ns.shape == (30, 6, 12)
    check_tensor("iterate 0 is x0", ns[:, 0], np.zeros_like(b) if x0 is None else x0, rtol=0)
    cheb = chebyshev(A, b, 16, mask, x0, return_history=True, kappa=KAPPA)  # (B, 17, M)
    for k in range(2, 6):
        check_tensor(f"NS iterate {k} vs Chebyshev {2 ** (k - 1)}", ns[:, k], cheb[:, 2 ** (k - 1)],
                     rtol=1e-9, atol=1e-11)
    r = b - np.einsum("bij,bj->bi", A, np.zeros_like(b) if x0 is None else x0)
    check_tensor("iterate 1: a step of length 1", ns[:, 1], (np.zeros_like(b) if x0 is None else x0) + r, rtol=1e-14)
    assert np.all(ns[~mask[:, None].repeat(6, 1)] == 0)  # padded coordinates stay zero


def test_newton_schulz_iterates_meet_the_schedule_bounds():
    A, b, x, mask, _ = systems(batch=200, sizes=15, seed=8)
    ns = newton_schulz_iterates(A, b, mask, n_steps=6, kappa=KAPPA)
    bounds = newton_schulz_schedule(6, KAPPA)[1]
    err0 = np.linalg.norm(x, axis=1)
    for k in range(2, 7):
        ratio = np.linalg.norm(ns[:, k] - x, axis=1) / err0
        assert np.all(ratio <= bounds[k - 1] * (1 + 1e-6) + 1e-14), (k, ratio.max(), bounds[k - 1])
        assert ratio.max() > 0.2 * bounds[k - 1] or bounds[k - 1] < 1e-12  # and the bound is not vacuous
    assert newton_schulz_iterates(A, b, mask, n_steps=0).shape == (200, 1, 15)


@pytest.mark.parametrize("with_x0", [False, True])
def test_krylov_best_points_give_the_krylov_floor(with_x0):
    A, b, x, mask, x0 = systems(with_x0=with_x0)
    pts = krylov_best_points(A, b, x, mask, x0, d_max=8)  # (B, 9, M)
    errs = krylov_best_errors(A, b, x, mask, x0, d_max=8)  # (B, 9)
    mine = ((pts - x[:, None]) ** 2).sum(axis=2) / mask.sum(axis=1)[:, None]
    check_tensor("errors of the points", mine, errs, rtol=1e-8, atol=1e-24)
    cg = conjugate_gradient(A, b, 8, mask, x0, return_history=True)
    assert np.all(mine <= ((cg - x[:, None]) ** 2).sum(axis=2) / mask.sum(axis=1)[:, None] * (1 + 1e-9) + 1e-20)


# ------------------------------------------------------------------------------------------------
# the construction reproduces the Newton-Schulz iterates


@pytest.mark.parametrize("n_layers", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("n_identity", [2, 3])
def test_construction_layers_are_the_newton_schulz_iterates(n_layers, n_identity):
    """The last layer applied after layer l of the construction is Newton-Schulz iterate l + 1 (the matrix
    iteration in NumPy, not the model); the query's x-slot stays x0 until the last layer; padded systems of
    mixed sizes and a nonzero x0."""
    A, b, x, mask, x0 = systems(with_x0=True)
    params, cfg = newton_schulz_params(n_layers, KAPPA, n_identity=n_identity)
    ns = newton_schulz_iterates(A, b, mask, x0, n_steps=n_layers, kappa=KAPPA)  # (B, L+1, M)
    lens = lens_layers(params, cfg, A, b, mask, x0)  # (B, L+1, M)
    scale = np.abs(x0 - x).max()
    check_tensor("lens vs Newton-Schulz", lens, ns, rtol=0, atol=1e-12 * scale)
    query = forward_layers(params, cfg, A, b, mask, x0)
    check_tensor("query before the last layer", query[:, :-1], np.repeat(x0[:, None], n_layers, 1), rtol=0,
                 atol=1e-14 * scale)
    check_tensor("the model's answer", query[:, -1], ns[:, -1], rtol=0, atol=1e-12 * scale)


def test_one_layer_construction_is_one_chebyshev_step():
    A, b, x, mask, _ = systems()
    params, cfg = newton_schulz_params(1, KAPPA, n_identity=2)
    check_tensor("L = 1", forward(params, cfg, A, b, mask), chebyshev(A, b, 1, mask, kappa=KAPPA), rtol=1e-12)


def test_probe_of_the_construction_matches_newton_schulz_and_a_perturbed_one_does_not():
    A, b, x, mask, _ = systems(batch=100, sizes=(6, 12), seed=11)
    L = 5
    params, cfg = newton_schulz_params(L, KAPPA, n_identity=2)
    probe = layer_probe(params, cfg, A, b, x, mask, kappa=KAPPA, readout="lens", keep_iterates=True)
    ns = probe["methods"]["newton_schulz"]
    assert ns["similarity"].shape == (L + 1, L + 3)  # default: L + 2 steps
    check_tensor("similarity on the diagonal", np.diagonal(ns["similarity"]), np.ones(L + 1), rtol=0, atol=1e-9)
    assert list(ns["best_step"]) == list(range(L + 1))
    check_tensor("equivalent steps", ns["equivalent_step"], np.arange(L + 1.0), rtol=0, atol=1e-6)
    check_tensor("model MSE = NS MSE", probe["model_mse"], ns["mse"][:L + 1], rtol=1e-8, atol=1e-30)
    # the query's x-slot: x0 until the last layer, then iterate L
    q = layer_probe(params, cfg, A, b, x, mask, kappa=KAPPA, readout="query")["methods"]["newton_schulz"]
    assert list(q["best_step"]) == [0] * L + [L] and q["best_similarity"][-1] > 1 - 1e-9

    # the same construction with beta of layer 1 off by 1%: layers 0-1 still match, the later ones do not
    broken = {k: v.copy() for k, v in params.items()}
    broken["layers.1.P"][0, H1, H1] *= 1.01
    lens = lens_layers(broken, cfg, A, b, mask)
    it = probe["iterates"]["newton_schulz"]
    check_tensor("unchanged layers", lens[:, :3], it[:, :3], rtol=0, atol=1e-12)
    for k in range(3, L + 1):
        rel = np.linalg.norm(lens[:, k] - it[:, k]) / np.linalg.norm(it[:, k] - x)
        assert rel > 1e-3, (k, rel)
    bad = layer_probe(broken, cfg, A, b, x, mask, kappa=KAPPA, readout="lens")
    assert bad["methods"]["newton_schulz"]["best_similarity"][L] < 1 - 1e-3
    assert abs(bad["model_mse"][L] / ns["mse"][L] - 1) > 1e-3


# ------------------------------------------------------------------------------------------------
# similarity of errors


def test_similarity_is_one_on_identical_and_scaled_errors():
    rng = np.random.default_rng(0)
    E = rng.standard_normal((7, 4, 5))
    S = error_similarity(E, E)
    check_tensor("diagonal", np.diagonal(S), np.ones(4), rtol=0, atol=1e-14)
    assert np.all(S <= 1) and np.all(S - np.eye(4) < 0.9)  # random directions are not alike
    check_tensor("scale-free", error_similarity(E, 3e-200 * E), S, rtol=0, atol=1e-14)
    check_tensor("huge", error_similarity(1e300 * E, E), S, rtol=0, atol=1e-14)
    check_tensor("opposite", np.diagonal(error_similarity(E, -E)), -np.ones(4), rtol=0, atol=1e-14)


def test_similarity_of_orthogonal_zero_and_padded_errors():
    E = np.zeros((2, 2, 3))
    E[:, 1, 0] = 1.0
    F = np.zeros((2, 2, 3))
    F[:, 1, 1] = 2.0
    check_tensor("zero / orthogonal", error_similarity(E, F), np.array([[1.0, 0.0], [0.0, 0.0]]), rtol=0)
    # padded coordinates do not count: the mask removes what differs there
    G = E.copy()
    G[:, :, 2] = 5.0
    mask = np.array([[True, True, False]] * 2)
    check_tensor("masked", error_similarity(G, E, mask), error_similarity(E, E), rtol=0, atol=1e-15)


def test_cg_matches_itself_step_by_step():
    A, b, x, mask, _ = systems(sizes=12, seed=3)
    hist = conjugate_gradient(A, b, 8, mask, return_history=True)  # (B, 9, M), 8 < N
    res = match_iterates(hist, {"cg": hist, "chebyshev": chebyshev(A, b, 8, mask, return_history=True)}, x, mask)
    cg = res["methods"]["cg"]
    assert list(cg["best_step"]) == list(range(9))
    check_tensor("best similarity", cg["best_similarity"], np.ones(9), rtol=0, atol=1e-12)
    check_tensor("equivalent step", cg["equivalent_step"], np.arange(9.0), rtol=0, atol=1e-9)
    check_tensor("mse", res["model_mse"], cg["mse"], rtol=0)
    off = cg["similarity"] - np.diag(np.diagonal(cg["similarity"]))
    assert off.max() < 0.99  # CG's errors at different steps point different ways
    assert list(res["methods"]["chebyshev"]["best_step"]) != list(range(9))  # another method does not match


# ------------------------------------------------------------------------------------------------
# shapes, read-outs and bad input


def test_lens_of_a_random_model_ends_at_its_answer():
    A, b, x, mask, x0 = systems(with_x0=True)
    cfg = ModelConfig(parametrization="block", n_layers=3, n_heads=2, n_identity=2, attention_norm="n", init_scale=0.3)
    params = init_params(cfg, 1)
    lens = lens_layers(params, cfg, A, b, mask, x0)
    assert lens.shape == (30, 4, 12)
    check_tensor("entry 0", lens[:, 0], x0, rtol=0)
    check_tensor("entry L", lens[:, -1], forward(params, cfg, A, b, mask, x0), rtol=1e-10, atol=1e-14)
    skip = {"layers.0.P": params["layers.0.P"], "layers.0.Q": params["layers.0.Q"],
            "layers.1.P": params["layers.2.P"], "layers.1.Q": params["layers.2.Q"]}  # layers 0 and 2
    check_tensor("entry 2: layer 1 skipped", lens[:, 2],
                 forward(skip, ModelConfig(**{**cfg.__dict__, "n_layers": 2}), A, b, mask, x0), rtol=1e-10, atol=1e-14)
    one = ModelConfig(parametrization="full", n_layers=1, n=12, embed_dim=3, init_scale=0.1)
    p1 = init_params(one, 2)
    A, b, x, mask, _ = systems(sizes=12)
    check_tensor("full, one layer", lens_layers(p1, one, A, b, mask)[:, 1], forward(p1, one, A, b, mask), rtol=1e-12)


def test_probe_shapes_record_and_table():
    A, b, x, mask, _ = systems(batch=20, sizes=(3, 9))
    cfg = ModelConfig(parametrization="block", n_layers=4, n_heads=1, n_identity=2, init_scale=0.1)
    probe = layer_probe(init_params(cfg, 0), cfg, A, b, x, mask, kappa=KAPPA, keep_iterates=True)
    assert probe["model_mse"].shape == (5,) and list(probe["methods"]) == list(PROBE_METHODS)
    K = max(9, 2 ** 3)  # the default steps of the Krylov methods
    for name, m in probe["methods"].items():
        k = 6 + 1 if name == "newton_schulz" else K + 1
        assert m["similarity"].shape == (5, k) and m["mse"].shape == (k,) and m["best_step"].shape == (5,)
        assert probe["iterates"][name].shape == (20, k, 9)
        assert np.all(np.abs(m["similarity"]) <= 1)
    check_tensor("layer 0 is x0 = 0", probe["model_mse"][0], np.mean((x**2).sum(1) / mask.sum(1)), rtol=1e-12)
    rec = json.loads(json.dumps(as_plain(probe)))
    assert "iterates" not in rec and len(rec["methods"]["cg"]["similarity"]) == 5
    table = probe_markdown(probe, "## t")
    assert table.startswith("## t") and table.count("\n| ") == 6  # header + 5 layers
    small = layer_probe(init_params(cfg, 0), cfg, A, b, x, mask, ns_steps=1, krylov_steps=2)
    assert small["methods"]["newton_schulz"]["similarity"].shape == (5, 2)
    assert small["methods"]["cg"]["similarity"].shape == (5, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"readout": "middle"}, "readout must be one of"),
    ({"kappa": 0.5}, "kappa must be"),
    ({"kappa": float("nan")}, "kappa must be"),
    ({"ns_steps": -1}, "ns_steps must be an int"),
    ({"krylov_steps": 2.5}, "krylov_steps must be an int"),
    ({"upper": 0.5}, "upper must be"),
])
def test_probe_rejects_bad_options(kwargs, message):
    A, b, x, mask, _ = systems(batch=3, sizes=4)
    params, cfg = newton_schulz_params(2, KAPPA, n_identity=2)
    with pytest.raises(ValueError, match=message):
        layer_probe(params, cfg, A, b, x, mask, **kwargs)


def test_probe_rejects_bad_input():
    A, b, x, mask, _ = systems(batch=3, sizes=4)
    params, cfg = newton_schulz_params(2, KAPPA, n_identity=2)
    with pytest.raises(ValueError, match="x must have shape"):
        layer_probe(params, cfg, A, b, x[:, :3], mask)
    with pytest.raises(ValueError, match="cfg must be a ModelConfig"):
        layer_probe(params, None, A, b, x, mask)
    with pytest.raises(ValueError, match="missing"):
        lens_layers({}, cfg, A, b, mask)
    with pytest.raises(ValueError, match="b must have shape"):
        newton_schulz_iterates(A, b[:, :2], mask)
    with pytest.raises(ValueError, match="n_steps must be an int"):
        newton_schulz_iterates(A, b, mask, n_steps=True)
    E = np.zeros((3, 2, 4))
    for F, message in ((np.zeros((2, 2, 4)), "same B and M"), (np.zeros((3, 2, 5)), "same B and M"),
                       (np.zeros((3, 4)), "same B and M"), (np.full((3, 2, 4), np.nan), "finite")):
        with pytest.raises(ValueError, match=message):
            error_similarity(E, F)
    with pytest.raises(ValueError, match="mask must have shape"):
        error_similarity(E, E, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="iterates of 'cg'"):
        match_iterates(E, {"cg": np.zeros((3, 2, 3))}, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="model iterates"):
        match_iterates(np.zeros((3, 4)), {}, np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------------
# block scalars beside the construction


def _swap_copies(params):
    """The model with its identity copies h1 and h2 exchanged in every layer (the same function)."""
    idx = np.array([0, 1, 3, 2])
    return {k: v[:, idx][:, :, idx] for k, v in params.items()}


def test_alignment_finds_the_construction_through_its_symmetries():
    A, b, x, mask, _ = systems()
    L = 4
    params, cfg = newton_schulz_params(L, KAPPA, n_identity=2)
    same = construction_alignment(params, cfg, KAPPA)
    assert same["distance"] < 1e-12 and same["permutation"] == [0, 1]
    for a in same["layers"]:
        assert a["off_support"] == 0 and all(abs(u - v) < 1e-12 for u, v in a["invariants"].values())
    # exchanged identity copies, each layer's head scaled by its own factor (signs included), a second head
    moved = _swap_copies(params)
    cfg2 = ModelConfig(parametrization="block", n_layers=L, n_heads=2, n_identity=2)
    hidden = {}
    for layer, c in enumerate((-3.0, 0.25, 7.0, -0.5)):
        P, Q = moved[f"layers.{layer}.P"], moved[f"layers.{layer}.Q"]
        rng = np.random.default_rng(layer)
        P2 = np.concatenate([1e-3 * rng.standard_normal(P.shape), c * P])  # the construction in head 1
        Q2 = np.concatenate([np.zeros_like(Q), Q / c])  # head 0 adds nothing (Q = 0)
        hidden[f"layers.{layer}.P"], hidden[f"layers.{layer}.Q"] = P2, Q2
    check_tensor("the same function", forward(hidden, cfg2, A, b, mask), forward(params, cfg, A, b, mask),
                 rtol=1e-10, atol=1e-13)
    found = construction_alignment(hidden, cfg2, KAPPA)
    assert found["permutation"] == [1, 0] and found["distance"] < 1e-12
    assert [a["head"] for a in found["layers"]] == [1] * L
    check_tensor("scales", np.array([a["scale"] for a in found["layers"]]), 1 / np.array([-3.0, 0.25, 7.0, -0.5]),
                 rtol=1e-10)
    assert all(a["other_heads"] == [0.0] for a in found["layers"])


def test_alignment_of_other_models_is_far_and_names_their_blocks():
    params, cfg = newton_schulz_params(3, KAPPA, n_identity=2)
    broken = {k: v.copy() for k, v in params.items()}
    broken["layers.0.P"][0, H1, H1] *= 1.5
    al = construction_alignment(broken, cfg, KAPPA)
    beta, beta_ref = al["layers"][0]["invariants"]["beta = p[h1,h1] q[a,h1]"]
    assert abs(beta / beta_ref - 1.5) < 1e-9 and al["distance"] > 0.01
    assert al["layers"][1]["off_support"] == 0
    rnd_cfg = ModelConfig(parametrization="block", n_layers=3, n_heads=1, n_identity=2, init_scale=1.0)
    rnd = construction_alignment(init_params(rnd_cfg, 5), rnd_cfg, KAPPA)
    assert rnd["distance"] > 0.3 and all(a["off_support"] > 0.5 for a in rnd["layers"])
    assert all(len(a["large"]) >= 1 for a in rnd["layers"])
    json.dumps(as_plain(rnd))  # the record is plain data
    with pytest.raises(ValueError, match="block model"):
        full = ModelConfig(parametrization="full", n_layers=1, n=3, embed_dim=2)
        construction_alignment(init_params(full, 0), full)
    with pytest.raises(ValueError, match="n_identity >= 2"):
        one = ModelConfig(parametrization="block", n_layers=2, n_identity=1)
        construction_alignment(init_params(one, 0), one)


# ------------------------------------------------------------------------------------------------
# the CLI


def test_evaluate_probe_cli(tmp_path, capsys):
    from tf_impl import evaluate as ev

    params, cfg = newton_schulz_params(3, KAPPA, n_identity=2)
    reference.save_checkpoint(tmp_path / "ns3.npz", params, cfg, meta={"train_config": {"kappa": KAPPA}})
    out = tmp_path / "out"
    res = ev.evaluate_cli([str(tmp_path / "ns3.npz"), "--probe", "--layer-sizes", "6", "--n-systems", "20",
                           "--out", str(out)])
    data = json.loads((out / "probe_ns3.json").read_text())
    assert [p["readout"] for p in data["probes"]] == ["query", "lens"] and data["probes"][0]["n"] == 6
    assert data["probes"][1]["methods"]["newton_schulz"]["best_step"] == [0, 1, 2, 3]
    assert data["alignment"]["distance"] < 1e-12 and res["ns3"]["alignment"]["permutation"] == [0, 1]
    md = (out / "probe_ns3.md").read_text()
    assert "Which algorithm did `ns3` learn?" in md and "| 3 |" in md and "construction" in md
    assert "probe_ns3.json" in capsys.readouterr().out
    assert ev.parse_args(["x.npz", "--probe"]).out == "runs/probe"
    assert ev.parse_args(["x.npz"]).out == "runs/eval"
    with pytest.raises(SystemExit) as e:
        ev.main([str(tmp_path / "ns3.npz"), "--probe", "--robustness"])
    assert e.value.code == 2
