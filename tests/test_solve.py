"""reference.solve / tf_impl.solve and the registry of shipped models (reference.pretrained).

Most tests run on a small block model trained here (2 layers, N in [2, 5], 150 steps) and on
hand-set Richardson weights, through checkpoints in ``tmp_path``; the ``"auto"`` choice and the
missing-weights errors run on a registry pointed at ``tmp_path`` (``PRETRAINED_DIR``
monkeypatched). The last tests use the real shipped weights, and are skipped where they are absent.
"""

import warnings

import numpy as np
import pytest

import reference
import reference.pretrained as registry_module
from reference.baselines import conjugate_gradient
from reference.constructions import newton_schulz_params, newton_schulz_schedule, richardson_params
from reference.data import rhs_rms, sample_systems
from reference.evaluation import system_errors
from reference.pretrained import PRETRAINED, load_pretrained, pretrained_path, training_sizes, valid_sizes
from reference.solve import (
    AUTO_MODELS,
    RESIDUAL_MARGIN,
    NotConvergedError,
    auto_model,
    largest_eigenvalue,
    prepare_inputs,
    resolve_model,
    spectrum_estimate,
)
from tests.helpers import check_tensor


def one_size(batch, n, seed=0, kappa=10.0):
    A, b, x, _ = sample_systems(batch, n, kappa, seed)
    return A, b, x


def sizes_meta(n_min, n_max, preset="test"):
    return {"train_config": {"preset": preset, "n_min": n_min, "n_max": n_max}}


@pytest.fixture(scope="module")
def small():
    """``(params, cfg)`` of a block model (2 layers, norm "n") trained 150 steps on N in [2, 5]."""
    cfg = reference.ModelConfig("block", n_layers=2, n_heads=1, attention_norm="n", init_scale=0.05)
    params, losses = reference.train(cfg, (2, 5), steps=150, batch_size=64, lr=1e-2, seed=0)
    assert np.mean(losses[-10:]) < 0.5 * losses[0]  # it learned something: not all-zero weights
    return params, cfg


@pytest.fixture
def small_ckpt(small, tmp_path):
    path = tmp_path / "small.npz"
    reference.save_checkpoint(path, *small, meta=sizes_meta(2, 5))
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """An empty registry folder; ``ship(name, eta, n_min, n_max)`` puts a Richardson model in it
    (one step ``x = eta b`` from ``x0 = 0``, so ``eta`` tells which model ran)."""
    folder = tmp_path / "registry"
    folder.mkdir()
    monkeypatch.setattr(registry_module, "PRETRAINED_DIR", folder)

    def ship(name, eta, n_min=None, n_max=None):
        params, cfg = richardson_params(eta)
        meta = sizes_meta(n_min, n_max, name) if n_min is not None else {}
        reference.save_checkpoint(folder / f"{name}.npz", params, cfg, meta=meta)

    return ship


def shipped(name):
    try:
        pretrained_path(name)
        return True
    except ValueError:
        return False


def ran(A, b, **kwargs):
    """The name of the shipped model ``solve`` ran (read from the result's label)."""
    return reference.solve(A, b, return_info=True, **kwargs).model.split("'")[1]


# ------------------------------------------------------------------------------------------------
# registry


def test_training_sizes_from_metadata():
    assert training_sizes(sizes_meta(2, 9)) == (2, 9)
    assert training_sizes(sizes_meta(10.0, 20.0)) == (10, 20)
    for meta in ({}, None, {"train_config": {"n_min": 2}}, {"train_config": "x"}, sizes_meta(True, 9),
                 sizes_meta(9, 2), sizes_meta(2.5, 9), {"step": 3}):
        assert training_sizes(meta) is None, meta


def test_valid_sizes_every_size_for_the_untrained_construction_only():
    """The Newton-Schulz construction exported with 0 steps and attention norm "none" is exact at every N;
    trained further, or with the 1/N norm, it has its training sizes like any model."""
    tc = {"n_min": 2, "n_max": 30, "init": "newton-schulz", "steps": 0, "attention_norm": "none"}
    assert valid_sizes({"train_config": tc}) == (1, float("inf"))
    for change in ({"steps": 500}, {"attention_norm": "n"}, {"init": "random"}):
        assert valid_sizes({"train_config": {**tc, **change}}) == (2, 30), change
    assert valid_sizes(sizes_meta(2, 9)) == (2, 9) and valid_sizes({}) is None


def test_unknown_name_lists_the_registry():
    listing = "the shipped ones are full-n9, block-n9, block-mixed, block-finetune"
    for name in ("nope", "block-n10", None):
        with pytest.raises(ValueError, match=f"unknown pretrained model .*; {listing}"):
            pretrained_path(name)
    A, b, _ = one_size(2, 4)
    with pytest.raises(ValueError, match="unknown pretrained model 'block-n10'"):
        reference.solve(A, b, model="block-n10")


def test_missing_weights_say_how_to_train_them(registry):
    for name in PRETRAINED:
        with pytest.raises(ValueError, match=f"not shipped in this install.*python -m tf_impl.train --preset {name}"):
            pretrained_path(name)
    with pytest.raises(ValueError, match="not shipped"):
        load_pretrained("block-n9")
    A, b, _ = one_size(2, 4)
    with pytest.raises(ValueError, match="not shipped.*--preset full-n9"):
        reference.solve(A, b, model="full-n9")
    with pytest.raises(ValueError, match="none of their weights is shipped"):
        reference.solve(A, b)  # "auto"


def test_load_pretrained_from_the_registry(registry):
    registry("block-n9", 0.25, 9, 9)
    params, cfg, meta = load_pretrained("block-n9")
    assert cfg.parametrization == "block" and training_sizes(meta) == (9, 9)
    assert pretrained_path("block-n9").name == "block-n9.npz"
    check_tensor("P", params["layers.0.P"], richardson_params(0.25)[0]["layers.0.P"], rtol=0)


# ------------------------------------------------------------------------------------------------
# "auto"


def test_auto_picks_the_model_whose_sizes_cover_n(registry):
    registry("block-mixed", 0.1, 2, 5)
    registry("block-finetune", 0.2, 6, 8)
    assert AUTO_MODELS == ("newton-schulz", "block-mixed", "block-finetune", "broad")  # 1st, 4th not shipped here
    for n, name in ((2, "block-mixed"), (5, "block-mixed"), (6, "block-finetune"), (8, "block-finetune")):
        assert auto_model(n) == name
        A, b, _ = one_size(3, n, seed=n)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # in range: no warning
            assert ran(A, b) == name, n
    A, b, _ = one_size(3, 12)
    assert ran(A, b) == "block-finetune"  # beyond every range: the nearest one


def test_auto_takes_the_newton_schulz_model_at_every_size(registry):
    """Shipped, the untrained construction (valid at every size) is auto's choice everywhere, without a
    size warning, ahead of trained models whose sizes cover N."""
    registry("block-mixed", 0.1, 2, 5)
    params, cfg = newton_schulz_params(6, kappa=100.0)
    tc = {"n_min": 2, "n_max": 4, "init": "newton-schulz", "steps": 0, "attention_norm": "none"}
    reference.save_checkpoint(registry_module.PRETRAINED_DIR / "newton-schulz.npz", params, cfg,
                              meta={"train_config": tc})
    for n in (3, 40):
        assert auto_model(n) == "newton-schulz"
        A, b, x = one_size(3, n, seed=n, kappa=50.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # N = 40 is outside n_max = 4, yet no warning: valid at every size
            res = reference.solve(A, b, return_info=True)
        assert res.model == "shipped model 'newton-schulz'"
        bound = newton_schulz_schedule(6, 100.0)[1][-1]  # 3.3e-3, kappa 50 <= 100
        rel = np.linalg.norm(res.x - x, axis=1) / np.linalg.norm(x, axis=1)
        assert rel.max() <= bound * (1 + 1e-6), (n, rel, bound)


@pytest.mark.parametrize("shipped, n", [("block-finetune", 3), ("block-mixed", 7)])
def test_auto_falls_back_to_the_one_shipped_model(registry, shipped, n):
    registry(shipped, 0.3, *((2, 5) if shipped == "block-mixed" else (6, 8)))
    A, b, _ = one_size(3, n)
    assert ran(A, b) == shipped


def test_auto_takes_a_model_without_recorded_sizes_last(registry):
    registry("block-mixed", 0.1)  # no train_config in its metadata: no range, no warning
    A, b, _ = one_size(3, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ran(A, b) == "block-mixed"
    registry("block-finetune", 0.2, 6, 8)
    assert auto_model(3) == "block-finetune"  # a known range, even far away, beats an unknown one


# ------------------------------------------------------------------------------------------------
# shapes, model forms, equality with forward


def one_pass(params, cfg, A, b, x0=None, rho=None):
    """The documented pass, written out independently of ``solve_with``: normalise, odd part, scale
    back, best step along the correction, kept only if it lowers the residual."""
    x0 = np.zeros_like(b) if x0 is None else x0
    n = b.shape[1]
    rho = rhs_rms(n) if rho is None else rho  # the paper's law: kappa 10, b = A x
    a = np.linalg.eigvalsh(A)[:, -1]
    r = b - np.einsum("bij,bj->bi", A, x0)
    r_norm = np.linalg.norm(r, axis=1)
    r_hat = r * (rho * np.sqrt(n) / r_norm)[:, None]
    A_hat = A / a[:, None, None]
    d = 0.5 * (reference.forward(params, cfg, A_hat, r_hat) - reference.forward(params, cfg, A_hat, -r_hat))
    d *= (r_norm / (rho * np.sqrt(n) * a))[:, None]
    Ad = np.einsum("bij,bj->bi", A, d)
    alpha = np.einsum("bi,bi->b", Ad, r) / np.einsum("bi,bi->b", Ad, Ad)
    x = x0 + alpha[:, None] * d
    better = np.linalg.norm(b - np.einsum("bij,bj->bi", A, x), axis=1) < r_norm
    return np.where(better[:, None], x, x0)


def test_one_pass_is_the_documented_formula(small, small_ckpt):
    params, cfg = small
    A, b, _ = one_size(5, 4, seed=1)
    xb = reference.solve(A, b, model=(params, cfg))
    assert xb.shape == (5, 4) and xb.dtype == np.float64
    check_tensor("batch vs formula", xb, one_pass(params, cfg, A, b), rtol=1e-11, atol=1e-13)
    check_tensor("by str path", reference.solve(A, b, model=str(small_ckpt)), xb, rtol=0)
    check_tensor("by Path", reference.solve(A, b, model=small_ckpt), xb, rtol=0)
    for s in range(5):
        x1 = reference.solve(A[s], b[s], model=small_ckpt)
        assert x1.shape == (4,)
        check_tensor(f"single {s}", x1, xb[s], rtol=1e-12, atol=1e-14)
    # plain lists and integer matrices are accepted (converted to float64)
    check_tensor("lists", reference.solve(A[0].tolist(), b[0].tolist(), model=small_ckpt), xb[0], rtol=1e-12)
    Ai = np.array([[4, 1], [1, 3]])
    check_tensor("ints", reference.solve(Ai, [1, 2], model=small_ckpt),
                 one_pass(params, cfg, Ai[None] * 1.0, np.array([[1.0, 2.0]]))[0], rtol=1e-12)


def test_initial_guess_corrects_its_residual(small):
    params, cfg = small
    A, b, x = one_size(4, 5, seed=2)
    x0 = np.random.default_rng(0).standard_normal(b.shape)
    check_tensor("x0 batch", reference.solve(A, b, model=(params, cfg), x0=x0),
                 one_pass(params, cfg, A, b, x0), rtol=1e-11, atol=1e-13)
    check_tensor("x0 single", reference.solve(A[1], b[1], model=(params, cfg), x0=x0[1]),
                 one_pass(params, cfg, A, b, x0)[1], rtol=1e-11, atol=1e-13)
    # the exact solution is returned unchanged (no pass can lower a rounding-level residual much)
    check_tensor("x0 = x", reference.solve(A, b, model=(params, cfg), x0=x), x, rtol=1e-12, atol=1e-14)
    # a good guess is improved, never lost: start from CG-3 (N = 5)
    x_cg = conjugate_gradient(A, b, 3)
    err0 = np.linalg.norm(x_cg - x, axis=1)
    res = reference.solve(A, b, model=(params, cfg), x0=x_cg, return_info=True)
    assert np.all(res.residual <= res.history[:, 0]) and np.all(res.passes == 1)
    assert np.all(np.linalg.norm(res.x - x, axis=1) < err0), "the model's correction did not improve CG-3"


def test_tf_solve_equals_reference_solve(small, small_ckpt, measured_ckpt):
    import tf_impl

    A, b, _ = one_size(6, 4, seed=2)
    x0 = np.random.default_rng(1).standard_normal(b.shape)
    # float64 in both (tf_impl.solve fixes dtype="float64"): only the order of summation differs
    ref = reference.solve(A, b, model=small_ckpt, x0=x0)
    check_tensor("tf vs reference, batch", tf_impl.solve(A, b, model=small_ckpt, x0=x0), ref, rtol=1e-10, atol=1e-12)
    check_tensor("tf vs reference, single", tf_impl.solve(A[3], b[3], model=small, x0=x0[3]), ref[3],
                 rtol=1e-10, atol=1e-12)
    mine = tf_impl.solve(A, b, model=small_ckpt, tol=1e-9, return_info=True)
    theirs = reference.solve(A, b, model=small_ckpt, tol=1e-9, return_info=True)
    # the pass counts are integers that could differ only if a residual sat within rounding (the twins agree to
    # ~1e-10) of tol; none is within 1% of it, so equal counts are guaranteed, not a property of the CPU
    h = theirs.history[np.isfinite(theirs.history)]
    assert np.all(np.abs(np.log(h / 1e-9)) > 0.01)
    assert mine.converged.all() and np.array_equal(mine.passes, theirs.passes)
    check_tensor("tf vs reference, to tol", mine.x, theirs.x, rtol=1e-8, atol=1e-12)
    with pytest.warns(UserWarning, match=r"may be far from the answer on 2 of 2 system\(s\): 2 have a condition "):
        tf_impl.solve(*one_size(2, 5, kappa=1e3)[:2], model=measured_ckpt)
    with pytest.raises(ValueError, match=r"not positive definite \(system 0\)"):
        tf_impl.solve(-A, b, model=small_ckpt)


# ------------------------------------------------------------------------------------------------
# warnings


@pytest.fixture
def measured_ckpt(small, tmp_path):
    """The small model as ``tf_impl.train`` would write it: its training law (sizes 2 to 5, kappa 10) and its final
    table (the mean relative error of one pass per size, on 200 fresh systems), which is its recorded accuracy."""
    from reference.evaluation import model_vs_cg

    path = tmp_path / "measured.npz"
    meta = {"train_config": {"n_min": 2, "n_max": 5, "kappa": 10.0},
            "evaluation": model_vs_cg(*small, range(2, 6), 10.0, 200)}
    reference.save_checkpoint(path, *small, meta=meta)
    return path


def flagged_by_the_warning(caught) -> int:
    """How many systems the one-pass warning names (0 without it)."""
    import re

    said = [str(w.message) for w in caught if "may be far from the answer" in str(w.message)]
    return int(re.search(r"on (\d+) of \d+ system", said[0]).group(1)) if said else 0


@pytest.mark.skipif(not shipped("block-mixed"), reason="block-mixed not shipped")
def test_a_residual_above_what_the_accuracy_predicts_is_warned_about():
    """Without tol, exactly the systems whose pass leaves a relative residual above RESIDUAL_MARGIN times the
    recorded accuracy are named (kappa 10: inside block-mixed's spectrum, so the residual is the only reason): none
    on its sizes, most at N = 30, where its error is ten times that on its sizes. The same weights as a
    (params, cfg) tuple record no accuracy and get no such warning."""
    acc = resolve_model("block-mixed", 9).accuracy
    assert 0 < acc < 0.1
    counts = []
    for n in (5, 9, 20, 30):
        A, b, _ = one_size(40, n, seed=n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = reference.solve(A, b, model="block-mixed", return_info=True)
        counts.append(int(np.sum(res.residual > RESIDUAL_MARGIN * acc)))
        assert flagged_by_the_warning(caught) == counts[-1], n
    assert counts[0] == counts[1] == 0 and counts[-1] >= 30, counts
    params, cfg, _ = load_pretrained("block-mixed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference.solve(A, b, model=(params, cfg))


@pytest.mark.skipif(not shipped("learned-L8") or not shipped("block-mixed"), reason="not shipped")
def test_the_size_alone_says_nothing_the_residual_does():
    """learned-L8 (trained on N <= 16) is as accurate at N = 256 as at N = 15: no warning at either. block-mixed
    (N <= 9) is ten times less accurate at N = 30 than on its own sizes: the residual says so for most systems."""
    for n, count in ((15, 8), (256, 2)):
        A, b, x = one_size(count, n, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = reference.solve(A, b, model="learned-L8")
        assert (np.linalg.norm(got - x, axis=1) / np.linalg.norm(x, axis=1)).max() < 1e-5, n
    A, b, x = one_size(40, 30, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = reference.solve(A, b, model="block-mixed")
    err = np.linalg.norm(got - x, axis=1) / np.linalg.norm(x, axis=1)
    assert err.mean() > 5 * resolve_model("block-mixed", 30).accuracy and flagged_by_the_warning(caught) >= 30


# ------------------------------------------------------------------------------------------------
# errors


def _indefinite(A, b):
    A = A.copy()
    A[1] -= 0.5 * np.eye(A.shape[1])  # eigenvalues of A[1] now span [-0.4, 0.5]: symmetric, indefinite
    return A, b


def _singular(A, b):
    A = A.copy()
    A[2] = np.outer(b[2], b[2])  # rank one: positive semi-definite, not definite
    return A, b


@pytest.mark.parametrize("make, match", [
    (lambda A, b: (A[:, :, :-1], b), "square"),
    (lambda A, b: (A[0, :, :-1], b[0]), "square"),
    (lambda A, b: (A[0, 0], b[0]), r"one matrix \(N, N\) or a batch \(B, N, N\)"),
    (lambda A, b: (A[None], b[None]), r"one matrix \(N, N\) or a batch \(B, N, N\)"),
    (lambda A, b: (A + np.triu(np.ones_like(A), 1), b), "symmetric"),
    (_indefinite, r"A is not positive definite \(system 1\)"),
    (_singular, r"A is not positive definite \(system 2\)"),
    (lambda A, b: (-A[0], b[0]), r"A is not positive definite \(system 0\)"),
    (lambda A, b: (np.where(A > 0.1, np.nan, A), b), "A contains NaN"),
    (lambda A, b: (A, np.where(b > 0, np.inf, b)), "b contains NaN or Inf"),
    (lambda A, b: (A, b[:, :-1]), r"b must have shape \(B, M\)"),
    (lambda A, b: (A, b[:2]), r"b must have shape \(B, M\)"),
    (lambda A, b: (A[0], b[0, :-1]), r"b must have shape \(N,\) = \(5,\)"),
    (lambda A, b: (A[0], b[:1]), r"b must have shape \(N,\)"),
    (lambda A, b: (A.astype(complex), b), "real numbers"),
])
def test_bad_input_raises_a_named_error(small, make, match):
    A, b, _ = one_size(3, 5)
    with pytest.raises(ValueError, match=match):
        reference.solve(*make(A, b), model=small)
    with pytest.raises(ValueError, match=match):  # the shared validation alone
        prepare_inputs(*make(A, b))


def test_bad_initial_guess(small):
    A, b, _ = one_size(3, 5)
    with pytest.raises(ValueError, match=r"x0 must have shape"):
        reference.solve(A, b, model=small, x0=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"x0 must have shape \(N,\)"):
        reference.solve(A[0], b[0], model=small, x0=np.zeros(4))
    with pytest.raises(ValueError, match="x0 must be finite"):
        reference.solve(A, b, model=small, x0=np.full((3, 5), np.nan))


def test_full_model_runs_only_at_its_size(tmp_path):
    cfg = reference.ModelConfig("full", n_layers=2, n_heads=1, n=4, embed_dim=3, init_scale=0.05)
    params = reference.init_params(cfg, 0)
    path = tmp_path / "full.npz"
    reference.save_checkpoint(path, params, cfg, meta=sizes_meta(4, 4))
    A, b, _ = one_size(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_tensor("full at n=4", reference.solve(A, b, model=path), one_pass(params, cfg, A, b), rtol=1e-11,
                     atol=1e-13)
    A, b, _ = one_size(3, 5)
    for model in (path, (params, cfg)):
        with pytest.raises(ValueError, match="full-encoding model: it runs only on systems of size n=4, got N=5"):
            reference.solve(A, b, model=model)


def test_bad_models_raise(small, tmp_path):
    params, cfg = small
    A, b, _ = one_size(3, 5)
    with pytest.raises(ValueError, match="does not exist"):
        reference.solve(A, b, model=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="does not exist"):
        reference.solve(A, b, model=str(tmp_path / "missing"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        reference.solve(A, b, model=tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="params do not match the config"):
        reference.solve(A, b, model=({"layers.0.P": params["layers.0.P"]}, cfg))
    for bad in (42, (params,), (params, cfg, None), [params, cfg], (cfg, params)):
        with pytest.raises(ValueError, match="model must be 'auto', a shipped name"):
            reference.solve(A, b, model=bad)
    resolved = resolve_model((params, cfg), 5)
    assert resolved.train_sizes is None and resolved.cfg is cfg


# ------------------------------------------------------------------------------------------------
# the real shipped weights (skipped where they are not in this install)


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_models_load_and_beat_the_zero_predictor(name):
    if not shipped(name):
        pytest.skip(f"{name} weights not shipped")
    params, cfg, meta = load_pretrained(name)
    lo, hi = training_sizes(meta)
    n = cfg.n if cfg.parametrization == "full" else hi
    assert lo <= n <= hi
    A, b, x = one_size(64, n, seed=3)
    mse = system_errors(reference.solve(A, b, model=name), x, np.ones_like(x, dtype=bool))[0].mean()
    assert mse < 0.05, f"{name} at N={n}: MSE {mse}"


@pytest.mark.skipif(not all(shipped(n) for n in AUTO_MODELS), reason="the auto models are not all shipped")
def test_shipped_auto_choice():
    """auto runs the shipped newton-schulz model at every size, without a size warning, to ~1e-12 in one pass
    on systems far from the paper's law (kappa 1000, N = 70)."""
    for n in (2, 9, 20, 70):
        assert auto_model(n) == "newton-schulz"
        A, b, x = one_size(4, n, kappa=1000.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = reference.solve(A, b)
        check_tensor(f"auto N={n}", got, reference.solve(A, b, model="newton-schulz"), rtol=0)
        rel = np.linalg.norm(got - x, axis=1) / np.linalg.norm(x, axis=1)
        assert rel.max() < 1e-10, (n, rel)


@pytest.mark.skipif(not shipped("newton-schulz"), reason="newton-schulz not shipped")
def test_shipped_newton_schulz_is_the_construction_exactly():
    """The shipped file is what `--preset newton-schulz` writes: the construction of its config, bit for bit
    (0 training steps, float64), so its bound is the schedule's."""
    from reference.constructions import newton_schulz_init

    params, cfg, meta = load_pretrained("newton-schulz")
    tc = meta["train_config"]
    want = newton_schulz_init(cfg, kappa=tc["kappa_max"], n=tc["n_max"], seed=tc["seed"], upper=tc["init_upper"])
    assert tc["steps"] == 0 and tc["dtype"] == "float64" and cfg.n_layers == 12
    for name in want:  # exact: the construction is scalar IEEE arithmetic and a seeded generator, no kernel
        assert np.array_equal(params[name], want[name]), name
    assert newton_schulz_schedule(12, tc["kappa_max"], tc["init_upper"])[1][-1] < 1e-16


@pytest.mark.skipif(not shipped("newton-schulz"), reason="newton-schulz not shipped")
def test_newton_schulz_beyond_its_range_converges_with_tol_or_says_so():
    """Built for cond(A) <= 1e4: at 1e6 one pass is far from the answer, tol adds passes that get there;
    at 1e12 float64 cannot get there, and solve warns instead of returning a wrong answer silently."""
    A, b, x, _ = sample_systems(4, 20, kappa=1e6, seed=2, spectrum="loguniform", rhs="normal")
    with pytest.warns(UserWarning, match=r"on 4 of 4 system\(s\): 4 have a condition number above the 10000"):
        one = reference.solve(A, b, model="newton-schulz", return_info=True)  # one pass, no tol: said, not silent
    assert one.residual.max() > 1e-3
    res = reference.solve(A, b, model="newton-schulz", tol=1e-8, return_info=True)
    assert res.converged.all() and res.passes.max() <= 30
    A, b, x, _ = sample_systems(2, 20, kappa=1e12, seed=3, spectrum="loguniform", rhs="normal")
    with pytest.warns(UserWarning, match="did not reach tol=1e-12"):
        res = reference.solve(A, b, model="newton-schulz", tol=1e-12, max_passes=20, return_info=True)
    assert not res.converged.all()


@pytest.mark.skipif(not shipped("broad"), reason="broad not shipped")
def test_broad_model_reads_its_law_and_solves_ill_conditioned_systems_to_tol():
    """broad was trained on normalised right-hand sides (rho = 1) and every family; on kappa = 1000 systems
    of size 25 one pass beats the zero predictor and the passes reach 1e-8."""
    params, cfg, meta = load_pretrained("broad")
    assert training_sizes(meta) == (2, 30)
    resolved = resolve_model("broad", 25)
    assert resolved.law["normalize_rhs"] and resolved.law["kappa"] == (2.0, 1000.0)
    A, b, x = one_size(16, 25, seed=5, kappa=1000.0)
    res = reference.solve(A, b, model="broad", tol=1e-8, return_info=True)
    assert res.converged.all() and np.all(res.residual <= 1e-8)
    one = reference.solve(A, b, model="broad")
    assert np.mean(np.linalg.norm(one - x, axis=1) / np.linalg.norm(x, axis=1)) < 0.5
    if shipped("full-n9"):
        with pytest.raises(ValueError, match="runs only on systems of size n=9"):
            reference.solve(*one_size(2, 5)[:2], model="full-n9")


# ------------------------------------------------------------------------------------------------
# any scale, any sign, passes to a tolerance (both twins)


def solvers():
    import tf_impl

    return [("reference", reference.solve), ("tf_impl", tf_impl.solve)]


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
def test_scale_equivariant_and_odd(small, twin):
    solve = dict(solvers())[twin]
    A, b, _ = one_size(6, 5, seed=4)
    x = solve(A, b, model=small)
    for c, s in ((10.0, 10.0), (1e4, 1.0), (1.0, 100.0), (1e-3, 1e-3), (3e-120, 7e90), (2.5e100, 1e-80)):
        xs = solve(c * A, s * b, model=small)
        assert np.all(np.isfinite(xs))
        check_tensor(f"solve({c:g} A, {s:g} b) * {c:g}/{s:g}", xs * (c / s), x, rtol=1e-12,
                     atol=1e-12 * np.abs(x).max())
    # odd part: exact, not only to rounding, by construction: the model sees the residual with a canonical sign,
    # so solve(A, -b) runs the arithmetic of solve(A, b) with every sign flipped (same inputs, same batch positions)
    assert np.array_equal(solve(A, -b, model=small), -x)
    assert np.array_equal(solve(A, -b, model=small, tol=1e-10), -solve(A, b, model=small, tol=1e-10))
    xt = solve(A, b, model=small, tol=1e-10)
    check_tensor("to tol, scaled", solve(1e6 * A, -1e-3 * b, model=small, tol=1e-10) * -1e9, xt, rtol=1e-9,
                 atol=1e-12)


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
def test_passes_reach_tol_and_never_raise_the_residual(small, twin):
    solve = dict(solvers())[twin]
    A, b, x = one_size(8, 5, seed=6, kappa=100.0)  # kappa 100: far outside the small model's training
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        res = solve(A, b, model=small, tol=1e-10, return_info=True)
    assert res.converged.all() and np.all(res.residual <= 1e-10)
    true = np.linalg.norm(b - np.einsum("bij,bj->bi", A, res.x), axis=1) / np.linalg.norm(b, axis=1)
    check_tensor("reported residual", res.residual, true, rtol=1e-6, atol=1e-16)
    assert np.all(res.passes >= 2) and np.all(res.passes <= 5 + 2)  # N = 5 fresh directions span the space
    for s in range(8):  # the history is the residual after each accepted pass: decreasing, then NaN
        h = res.history[s]
        k = res.passes[s]
        assert np.all(np.diff(h[: k + 1]) < 0) and np.all(np.isnan(h[k + 1:])) and h[k] == res.residual[s]
    assert np.max(np.linalg.norm(res.x - x, axis=1) / np.linalg.norm(x, axis=1)) < 1e-7
    assert res.model == "the given (params, cfg)" and res.history.shape == (8, res.passes.max() + 1)


def test_each_system_stops_on_its_own(small):
    A, b, x = one_size(4, 5, seed=7)
    b[1] = 0.0  # b = 0: x = 0 with no pass
    x0 = np.zeros_like(b)
    x0[2] = np.linalg.solve(A[2], b[2])  # exact start: no pass needed beyond rounding
    res = reference.solve(A, b, model=small, x0=x0, tol=1e-9, return_info=True)
    assert res.converged.all()
    assert res.passes[1] == 0 and np.all(res.x[1] == 0) and res.residual[1] == 0
    assert res.passes[2] == 0 and np.array_equal(res.x[2], x0[2])
    assert res.passes[0] >= 2 and res.passes[3] >= 2
    one = reference.solve(A[3], b[3], model=small, tol=1e-9, return_info=True)  # alone: the same passes
    assert one.passes == res.passes[3] and one.x.shape == (5,) and one.history.shape == (one.passes + 1,)
    check_tensor("alone vs in a batch", one.x, res.x[3], rtol=1e-10, atol=1e-14)


def test_a_useless_model_warns_or_raises_and_keeps_the_start(small):
    params, cfg = small
    zero = {k: np.zeros_like(v) for k, v in params.items()}  # predicts x0 = 0 whatever the system
    A, b, _ = one_size(3, 5, seed=8)
    x0 = 0.1 * np.ones_like(b)
    with pytest.warns(UserWarning, match=r"did not reach tol=1e-06 on 3 of 3 system\(s\).*0 reached max_passes"
                                         r".*3 stopped when a pass no longer reduced the residual"):
        x = reference.solve(A, b, model=(zero, cfg), x0=x0, tol=1e-6)
    assert np.array_equal(x, x0)  # the best answer found: the start
    with pytest.raises(NotConvergedError, match="did not reach tol") as err:
        reference.solve(A[0], b[0], model=(zero, cfg), tol=1e-6, strict=True)
    assert err.value.result.passes == 0 and not err.value.result.converged and err.value.result.x.shape == (5,)
    with pytest.warns(UserWarning, match=r"1 reached max_passes=1"):
        reference.solve(A[:1], b[:1], model=small, tol=1e-12, max_passes=1)
    # no tol: one pass, no accuracy asked; but a pass that did not help at all is said, never silent
    with pytest.warns(UserWarning, match=r"did not reduce the residual of 3 of 3 system\(s\).*answer is x0"):
        x1 = reference.solve(A, b, model=(zero, cfg))
    assert np.array_equal(x1, np.zeros_like(b))


def test_a_pass_that_does_not_lower_the_residual_is_rejected(small):
    """A correction whose image A d is orthogonal to the residual (exactly, in floating point): the best
    step along it is 0, the residual stays the same, so only the keep-best guard (``res_new < res``)
    rejects the pass; without it the pass would count and the history would repeat the residual."""
    from reference.solve import solve_with

    A = np.diag([1.0, 2.0, 3.0, 4.0])  # b = e_0, so r = e_0 at x0 = 0
    b = np.array([1.0, 0.0, 0.0, 0.0])

    def sideways(params, cfg, A_hat, r_hat):  # odd in r_hat, and A_hat d = e_1 (orthogonal to e_0) exactly
        e1 = np.zeros_like(r_hat)
        e1[:, 1] = 1.0
        return np.sign(r_hat[:, :1]) * np.linalg.solve(A_hat, e1[..., None])[..., 0]

    with pytest.warns(UserWarning, match="1 stopped when a pass no longer reduced the residual"):
        res = solve_with(sideways, A, b, model=small, tol=1e-6, return_info=True)
    assert res.passes == 0 and np.array_equal(res.x, np.zeros(4)) and res.residual == 1.0
    assert np.isnan(res.history[1:]).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(tol=0.0), r"tol must be a number in \(0, 1\)"), (dict(tol=1.5), "tol must be"),
    (dict(tol="1e-8"), "tol must be"), (dict(tol=True), "tol must be"),
    (dict(max_passes=0), "max_passes must be an int >= 1"), (dict(max_passes=2.0), "max_passes must be"),
])
def test_bad_tolerance_arguments(small, kwargs, match):
    A, b, _ = one_size(2, 4)
    with pytest.raises(ValueError, match=match):
        reference.solve(A, b, model=small, **kwargs)


def test_scale_and_condition_number_are_exact_at_every_size():
    """lambda_max and cond(A) from every eigenvalue, at every N, and a power of two scales them exactly."""
    for n in (5, 64, 90):
        A, _, _, _ = sample_systems(3, n, 50.0, seed=n)
        A = A * np.array([1.0, 7.5, 1e-30])[:, None, None]
        ev = np.linalg.eigvalsh(A)
        scale, cond = spectrum_estimate(A)
        check_tensor(f"scale at n={n}", scale, ev[:, -1], rtol=1e-14)
        check_tensor(f"cond at n={n}", cond, ev[:, -1] / ev[:, 0], rtol=1e-12)
        assert np.array_equal(largest_eigenvalue(A), scale)
        assert np.array_equal(largest_eigenvalue(4.0 * A), 4.0 * scale)


def spread_spectrum(rng, n):
    """Eigenvalues uniform on [1e-6, 1], both ends pinned (cond 1e6)."""
    lam = rng.uniform(1e-6, 1.0, n)
    lam[0], lam[-1] = 1e-6, 1.0
    return lam


def small_cluster(rng, n):
    """Four eigenvalues in [1e-6, 1.05e-6], the others uniform on [1e-3, 1], the largest pinned at 1 (cond 1e6)."""
    lam = np.r_[1e-6, rng.uniform(1e-6, 1.05e-6, 3), rng.uniform(1e-3, 1.0, n - 5), 1.0]
    return rng.permutation(lam)


def haar_systems(rng, count, n, spectrum):
    """``count`` systems ``U diag(lam) U^T``, ``U`` Haar (QR of a Gaussian, signs of diag R), ``b = A x``,
    ``x ~ N(0, I)``, drawn in that order from ``rng`` for each system."""
    out = []
    for _ in range(count):
        Q, R = np.linalg.qr(rng.standard_normal((n, n)))
        Q = Q * np.sign(np.diag(R))
        A = (Q * spectrum(rng, n)) @ Q.T
        A = 0.5 * (A + A.T)
        x = rng.standard_normal(n)
        out.append((A, A @ x, x))
    return tuple(np.stack(v) for v in zip(*out, strict=True))


@pytest.mark.skipif(not shipped("newton-schulz"), reason="newton-schulz not shipped")
@pytest.mark.parametrize("spectrum", [spread_spectrum, small_cluster], ids=["spread", "small cluster"])
def test_one_pass_of_the_default_model_is_never_silently_wrong_above_n_64(spectrum):
    """N = 128, cond 1e6 (the default model is built for 1e4): spectra on which a few Lanczos steps see a condition
    number orders of magnitude too low (the first spread system, from default_rng(6), was answered with relative
    error 0.09 and no warning). Every answer is far from the solution, and every one is named; cond(A) is exact,
    and the error bound of the warning holds."""
    A, b, x = haar_systems(np.random.default_rng(6), 6, 128, spectrum)
    _, cond = spectrum_estimate(A)
    ev = np.linalg.eigvalsh(A)
    check_tensor("cond", cond, ev[:, -1] / ev[:, 0], rtol=1e-6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = reference.solve(A, b, return_info=True)
    err = np.linalg.norm(res.x - x, axis=1) / np.linalg.norm(x, axis=1)
    assert err.min() > 1e-3, err  # far from the answer, each one
    assert flagged_by_the_warning(caught) == 6
    assert np.all(err <= cond * res.residual * (1 + 1e-6))  # the bound the warning quotes


def ring_laplacian(n):
    return 2 * np.eye(n) - np.roll(np.eye(n), 1, 0) - np.roll(np.eye(n), -1, 0)


def torus_laplacian(m1, m2):
    return np.kron(ring_laplacian(m1), np.eye(m2)) + np.kron(np.eye(m1), ring_laplacian(m2))


@pytest.mark.parametrize("name, L", [("ring 128", ring_laplacian(128)), ("torus 8 x 16", torus_laplacian(8, 16)),
                                     ("ring 256", ring_laplacian(256)), ("torus 16 x 16", torus_laplacian(16, 16))])
def test_scale_on_graph_laplacians(name, L):
    """Graph Laplacians plus a shift (eigenvalue 1e-3 here): the scale is lambda_max, so A / scale has its spectrum
    inside the [1e-4, 1.1] the Newton-Schulz model is built for (cond 4e3 and 8e3 here), and one pass of that model
    solves the system."""
    A = L + 1e-3 * np.eye(len(L))
    lmax = np.linalg.eigvalsh(A)[-1]
    scale = largest_eigenvalue(A[None])[0]
    assert abs(scale / lmax - 1) < 1e-12, (name, scale, lmax)
    params, cfg = newton_schulz_params(12, kappa=1e4, n_identity=2, upper=1.1)
    b = np.random.default_rng(0).standard_normal(len(A))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rejected pass, no warning
        x = reference.solve(A, b, model=(params, cfg))
    x_true = np.linalg.solve(A, b)
    assert np.linalg.norm(x - x_true) < 1e-9 * np.linalg.norm(x_true), name
