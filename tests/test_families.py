"""System families (both samplers): kappa log-uniform per system, uniform / log-uniform / clustered /
mixed spectra, b = A x or b ~ N(0, I), normalised right-hand sides; and the relative loss (both twins).

The two samplers draw the same law from different random streams: each law is checked on each twin
(exact properties per system, statistics against their expected values), and the twins' statistics
are compared with each other.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_grad, check_tensor, fd_vjp, train_config

import reference as ref
from reference.data import CLUSTER_WIDTH, EIGENVALUE_LAWS, RHS_LAWS, rhs_rms
from reference.layers import LOSSES, mse_backward, mse_forward
from tf_impl import data as tf_data

B = 600  # systems per law and twin: enough for the statistics below (their tolerances are ~5 sigma)


def sample(twin, *args, **kwargs):
    if twin == "reference":
        return ref.sample_systems(*args, **kwargs)
    return tf_data.sample_systems(*args, jit_compile=False, **kwargs)


def spectra(A, mask):
    return [np.linalg.eigvalsh(A[s][: mask[s].sum(), : mask[s].sum()]) for s in range(len(A))]


def test_the_papers_law_keeps_its_stream():
    """The options added draws only when used: the paper's systems (and so every shipped number) are
    those of the sampler before the options existed (values recorded from it)."""
    A, b, _, _ = ref.sample_systems(2, 4, 10.0, seed=0)
    check_tensor("b[0]", b[0], [-1.358960835846401, 0.964107027193298, 0.802703700417932, -0.378015689530221],
                 rtol=1e-12)
    check_tensor("A[1, 0]", A[1, 0], [0.795509192860904, -0.02585913641676, 0.333536807897948,
                                      -0.161390871848243], rtol=1e-12)


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
@pytest.mark.parametrize("spectrum", EIGENVALUE_LAWS)
def test_spectrum_law(twin, spectrum):
    kappa = 50.0
    A, b, x, mask = sample(twin, B, (3, 12), kappa, seed=3, spectrum=spectrum)
    lo = 1.0 / kappa
    inner = []
    for lam in spectra(A, mask):
        check_tensor("extremes", lam[[0, -1]], [lo, 1.0], rtol=1e-10)
        assert np.all(lam >= lo * (1 - 1e-10)) and np.all(lam <= 1 + 1e-10)
        inner.append(lam[1:-1])
    inner = np.concatenate(inner)
    t = np.log(inner) / np.log(lo)  # log-uniform -> uniform on [0, 1]
    in_bottom = inner <= lo * (1 + CLUSTER_WIDTH) + 1e-12
    in_top = inner >= 1 - CLUSTER_WIDTH * (1 - lo) - 1e-12
    bottom, top = np.mean(in_bottom), np.mean(in_top)
    if spectrum == "uniform":
        assert abs(np.mean(inner) - (1 + lo) / 2) < 0.02 and abs(np.mean(inner < 0.5) - (0.5 - lo) / (1 - lo)) < 0.03
    elif spectrum == "loguniform":
        assert abs(np.mean(t) - 0.5) < 0.02 and abs(np.mean(t < 0.25) - 0.25) < 0.03
    elif spectrum == "clustered":
        assert np.all(in_bottom | in_top) and abs(bottom - 0.5) < 0.03  # every eigenvalue in one of two clusters
    else:  # "mix": a third of the systems per family: clusters hold ~1/3 of the eigenvalues and a bit more
        assert 0.30 < bottom + top < 0.45
    check_tensor("b = A x", b, np.einsum("bij,bj->bi", A, x), rtol=0, atol=1e-11)


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
def test_kappa_log_uniform_per_system(twin):
    A, _, _, mask = sample(twin, B, (4, 10), (2.0, 1000.0), seed=4, spectrum="mix", rhs="mix")
    k = np.array([lam[-1] / lam[0] for lam in spectra(A, mask)])
    assert np.all(k >= 2.0 * (1 - 1e-9)) and np.all(k <= 1000.0 * (1 + 1e-9))
    u = np.log(k / 2.0) / np.log(500.0)  # uniform on [0, 1]
    for q in (0.1, 0.5, 0.9):
        assert abs(np.mean(u < q) - q) < 0.05, q
    assert len(np.unique(k.round(6))) > 0.99 * B  # one kappa per system


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
@pytest.mark.parametrize("rhs", RHS_LAWS)
@pytest.mark.parametrize("normalize", [False, True])
def test_rhs_law(twin, rhs, normalize):
    A, b, x, mask = sample(twin, B, (3, 8), 10.0, seed=5, rhs=rhs, normalize_rhs=normalize)
    check_tensor("b = A x", b, np.einsum("bij,bj->bi", A, x), rtol=0, atol=1e-10)
    n = mask.sum(axis=1)
    if normalize:
        check_tensor("||b||^2 = N", np.sum(b * b, axis=1), n, rtol=1e-12)
        return
    # b = A x with x ~ N(0, I): ||x||^2 / N has mean 1; b ~ N(0, I): ||b||^2 / N has mean 1
    x_unit = np.sum(x * x, axis=1) / n
    b_unit = np.sum(b * b, axis=1) / n
    if rhs == "solution":
        assert abs(np.mean(x_unit) - 1) < 0.06 and np.mean(b_unit) < 0.6
    elif rhs == "normal":
        assert abs(np.mean(b_unit) - 1) < 0.06 and np.mean(x_unit) > 2
    else:
        assert abs(np.mean(np.abs(x_unit - 1) < np.abs(b_unit - 1)) - 0.5) < 0.2
        assert 0.55 < np.mean(b_unit) < 0.95  # halfway between the two laws (~0.37 and 1)


def test_twins_draw_the_same_law():
    """Statistics of the broad law, reference vs TF: means and quartiles of kappa, of the eigenvalues
    and of ||x|| agree to sampling error."""
    stats = {}
    for twin in ("reference", "tf_impl"):
        A, b, x, mask = sample(twin, 2000, (2, 10), (2.0, 1000.0), seed=6, spectrum="mix", rhs="mix",
                               normalize_rhs=True)
        lams = spectra(A, mask)
        k = np.log([lam[-1] / lam[0] for lam in lams])
        inner = np.concatenate([lam[1:-1] for lam in lams])
        xn = np.log(np.linalg.norm(x, axis=1) ** 2 / mask.sum(axis=1))
        stats[twin] = np.array([np.mean(k), *np.quantile(k, [0.25, 0.75]), np.mean(inner),
                                *np.quantile(inner, [0.25, 0.5, 0.75]), np.mean(mask.sum(1)), np.median(xn)])
    check_tensor("reference vs tf statistics", stats["tf_impl"], stats["reference"], rtol=0.06, atol=0.05)


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
def test_bad_law_options(twin):
    for kwargs, match in ((dict(spectrum="gauss"), "spectrum must be one of"), (dict(rhs="ones"), "rhs must be"),
                          (dict(normalize_rhs=1), "normalize_rhs must be a bool"),
                          (dict(kappa=(100.0, 10.0)), "kappa_min <= kappa_max"),
                          (dict(kappa=(10.0,)), "pair"), (dict(kappa=0.5), "a number in \\[1, 1e\\+15\\]")):
        kwargs = {"kappa": 10.0, **kwargs}
        with pytest.raises(ValueError, match=match):
            sample(twin, 4, 5, seed=0, **kwargs)


def test_rhs_rms_is_the_law_average():
    for n, kw in ((2, {}), (9, {}), (20, dict(kappa=100.0)), (7, dict(spectrum="loguniform", kappa=30.0)),
                  (12, dict(kappa=(10.0, 1000.0))), (5, dict(spectrum="loguniform", kappa=(2.0, 100.0)))):
        _, b, _, _ = ref.sample_systems(20000, n, seed=n, **kw)
        check_tensor(f"rms n={n} {kw}", rhs_rms(n, **kw), np.sqrt(np.mean(b * b)), rtol=0.01)
    assert rhs_rms(9, normalize_rhs=True) == rhs_rms(9, rhs="normal") == 1.0
    # a range of one kappa is that kappa (to rounding: the quadrature sums the same value 32 times)
    check_tensor("range of one", rhs_rms(9, kappa=(30.0, 30.0 * (1 + 1e-12))), rhs_rms(9, kappa=30.0), rtol=1e-10)
    with pytest.raises(ValueError, match="rms of b is known"):
        rhs_rms(9, kappa=10.0, spectrum="clustered")


# ------------------------------------------------------------------------------------------------
# the relative loss


def test_relative_loss_gradient():
    rng = np.random.default_rng(0)
    x_hat, x = rng.standard_normal((2, 5, 7))
    mask = np.arange(7)[None, :] < np.array([7, 3, 5, 2, 6])[:, None]
    x = x * mask
    for name in LOSSES:
        loss, cache = mse_forward(x_hat, x, mask, name)
        d = (x * x).sum(1) if name == "relative" else mask.sum(1)
        check_tensor("loss", loss, np.mean((((x_hat - x) * mask) ** 2).sum(1) / d), rtol=1e-14)
        (num,) = fd_vjp(lambda xh, name=name: mse_forward(xh, x, mask, name)[0], [x_hat], 1.0)
        check_grad(f"dL/dx_hat loss={name}", mse_backward(cache), num, tol=1e-8)


def test_relative_loss_twins_agree():
    from tf_impl.optim import Trainer

    cfg = ref.ModelConfig("block", n_layers=2, n_heads=2, n_identity=1, attention_norm="n", init_scale=0.3)
    params = ref.init_params(cfg, 3)
    batch = ref.sample_systems(16, (2, 6), (2.0, 100.0), seed=9, rhs="normal", normalize_rhs=True)
    tr = Trainer(train_config(cfg, (2, 6), batch_size=16, loss="relative", dtype="float64", mode="graph"), params)
    loss, grads = tr.loss_and_grads(batch)
    loss_ref, grads_ref = ref.loss_and_grads(params, cfg, *batch, loss="relative")
    check_tensor("relative loss", loss, loss_ref, rtol=1e-12)
    for k in grads_ref:
        check_tensor(k, grads[k], grads_ref[k], rtol=1e-9, atol=1e-12)
    assert abs(ref.loss_and_grads(params, cfg, *batch)[0] - loss_ref) > 0.1 * loss_ref  # not the MSE
    import tf_impl

    loss_tf, grads_tf = tf_impl.loss_and_grads(params, cfg, *batch, loss="relative")  # the public twin too
    check_tensor("relative loss, tf_impl.loss_and_grads", loss_tf, loss_ref, rtol=1e-12)
    for k in grads_ref:
        check_tensor(k, grads_tf[k], grads_ref[k], rtol=1e-9, atol=1e-12)


def test_an_unknown_loss_is_a_value_error():
    """One list of loss names, reference.layers.LOSSES, checked by every function that takes a loss and by the
    training config (hence the command line's --loss)."""
    import tensorflow as tf

    import tf_impl
    from reference.optim import train, train_lbfgs
    from tf_impl.config import LOSSES as CONFIG_LOSSES
    from tf_impl.config import TrainConfig
    from tf_impl.layers import mse

    assert CONFIG_LOSSES is LOSSES == ("mse", "relative")
    cfg = ref.ModelConfig("block", n_layers=1, n_heads=1, n_identity=1)
    params = ref.init_params(cfg, 0)
    A, b, x, mask = ref.sample_systems(2, 3, 10.0, seed=0)
    calls = {"reference.layers.mse_forward": lambda loss: mse_forward(x, x, mask, loss),
             "tf_impl.layers.mse": lambda loss: mse(tf.constant(x), tf.constant(x), tf.ones_like(x), loss),
             "reference.loss_and_grads": lambda loss: ref.loss_and_grads(params, cfg, A, b, x, mask, loss=loss),
             "tf_impl.loss_and_grads": lambda loss: tf_impl.loss_and_grads(params, cfg, A, b, x, mask, loss=loss),
             "reference.optim.train": lambda loss: train(cfg, 3, steps=1, batch_size=2, loss=loss),
             "reference.optim.train_lbfgs": lambda loss: train_lbfgs(cfg, 3, steps=1, batch_size=2, loss=loss),
             "TrainConfig": lambda loss: TrainConfig(loss=loss)}
    for label, call in calls.items():
        for bad in ("MSE", "l1", True, None):
            with pytest.raises(ValueError, match="loss must be "):  # TrainConfig: "a str" for True and None
                call(bad)
                raise AssertionError(f"{label} took loss={bad!r}")
