"""reference.solve / tf_impl.solve: shipped models, checkpoints, shapes, validation, warnings."""

import warnings

import numpy as np
import pytest

import reference
from reference.constructions import richardson_params
from reference.data import sample_systems
from reference.evaluation import system_errors
from reference.pretrained import PRETRAINED, load_pretrained, pretrained_path, training_sizes
from tests.helpers import check_tensor


def one_size(batch, n, seed=0, kappa=10.0):
    A, b, x, _ = sample_systems(batch, n, kappa, seed)
    return A, b, x


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_models_load_and_beat_the_zero_predictor(name):
    params, cfg, meta = load_pretrained(name)
    n = cfg.n if cfg.parametrization == "full" else training_sizes(meta)[1]
    A, b, x = one_size(64, n, seed=3)
    mse = system_errors(reference.solve(A, b, model=name), x, np.ones_like(x, dtype=bool))[0].mean()
    assert mse < 0.05, f"{name} at N={n}: MSE {mse}"


def test_auto_picks_by_size_and_matches_the_named_model():
    A, b, _ = one_size(8, 6)
    check_tensor("auto N=6", reference.solve(A, b), reference.solve(A, b, model="block-mixed"), rtol=0, atol=0)
    A, b, _ = one_size(8, 15)
    check_tensor("auto N=15", reference.solve(A, b), reference.solve(A, b, model="block-finetune"), rtol=0, atol=0)


def test_single_system_and_batch_shapes_agree_with_forward(tmp_path):
    params, cfg = richardson_params(0.5)
    path = tmp_path / "rich.npz"
    reference.save_checkpoint(path, params, cfg)
    A, b, _ = one_size(5, 7, seed=1)
    xb = reference.solve(A, b, model=(params, cfg))
    assert xb.shape == (5, 7)
    check_tensor("batch vs forward", xb, reference.forward(params, cfg, A, b), rtol=0, atol=0)
    check_tensor("by path", reference.solve(A, b, model=str(path)), xb, rtol=0, atol=0)
    x1 = reference.solve(A[2], b[2], model=(params, cfg))
    assert x1.shape == (7,)
    check_tensor("single", x1, xb[2], rtol=1e-14, atol=1e-15)
    check_tensor("Richardson step", x1, 0.5 * b[2], rtol=1e-12, atol=1e-14)  # x0 = 0: x = eta b


def test_tf_solve_equals_reference_solve():
    import tf_impl

    A, b, _ = one_size(6, 12, seed=2)
    check_tensor("tf vs reference", tf_impl.solve(A, b), reference.solve(A, b), rtol=1e-10, atol=1e-12)


def test_out_of_range_warns_and_in_range_does_not():
    A, b, _ = one_size(4, 25)
    with pytest.warns(UserWarning, match=r"outside the model's training sizes \[10, 20\]"):
        reference.solve(A, b)
    A, b, _ = one_size(4, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference.solve(A, b)


@pytest.mark.parametrize("make, match", [
    (lambda A, b: (A[:, :, :-1], b), "square"),
    (lambda A, b: (A + np.triu(np.ones_like(A), 1), b), "symmetric"),
    (lambda A, b: (A - 2 * np.eye(A.shape[1]), b), "not positive definite"),
    (lambda A, b: (np.where(A > 0.1, np.nan, A), b), "NaN"),
    (lambda A, b: (A, b[:, :-1]), "b must have shape"),
])
def test_bad_input_raises_a_named_error(make, match):
    A, b, _ = one_size(3, 5)
    with pytest.raises(ValueError, match=match):
        reference.solve(*make(A, b))


def test_bad_models_raise():
    A, b, _ = one_size(3, 5)
    with pytest.raises(ValueError, match="full-encoding model runs only on systems of size n=9"):
        reference.solve(A, b, model="full-n9")
    with pytest.raises(ValueError, match="unknown pretrained model 'block-n10'"):
        reference.solve(A, b, model="block-n10")
    with pytest.raises(ValueError, match="does not exist"):
        reference.solve(A, b, model="/nonexistent/model.npz")
    with pytest.raises(ValueError, match="model must be"):
        reference.solve(A, b, model=42)
    with pytest.raises(ValueError, match="unknown pretrained model"):
        pretrained_path("nope")
