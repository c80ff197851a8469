"""Cross-tests: the TensorFlow twin (tf_impl) against the NumPy reference, the ground truth.

Random non-trivial parameters (init_scale 0.2-0.3) and inputs: both parametrizations, several
layers and heads, mixed sizes with masks, nonzero x0, both attention norms.

* forward, loss and every gradient in float64 agree to rtol 1e-10;
* float32 TF against float64 reference to a justified tolerance;
* ten Adam steps from the same start on the same batches stay equal (float64);
* a checkpoint written by either package loads in the other and gives the same outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import check_tensor, train_config

import reference as ref
import tf_impl
from reference.optim import clip_by_global_norm

tf.config.experimental.enable_tensor_float_32_execution(False)  # no TF32 matmuls on GPUs

# (name, ModelConfig kwargs, sizes): each case is a different corner of the model
CASES = [
    ("block-none-3L-2H", dict(parametrization="block", n_layers=3, n_heads=2, n_identity=3,
                              attention_norm="none", init_scale=0.25), (2, 7)),
    ("block-n-2L-3H-K1", dict(parametrization="block", n_layers=2, n_heads=3, n_identity=1,
                              attention_norm="n", init_scale=0.3), (2, 5)),
    ("full-none-3L-2H", dict(parametrization="full", n_layers=3, n_heads=2, embed_dim=4, n=5,
                             attention_norm="none", init_scale=0.2), 5),
    ("full-n-2L-1H", dict(parametrization="full", n_layers=2, n_heads=1, embed_dim=6, n=4,
                          attention_norm="n", init_scale=0.3), 4),
]
IDS = [c[0] for c in CASES]


def make_case(kwargs, sizes, batch=6, seed=0):
    cfg = ref.ModelConfig(**kwargs)
    params = ref.init_params(cfg, seed=seed + 11)
    A, b, x, mask = ref.sample_systems(batch, sizes, kappa=10.0, seed=seed)
    x0 = 0.5 * np.random.default_rng(seed + 1).standard_normal(b.shape) * mask  # nonzero initial guess
    return cfg, params, A, b, x, mask, x0


def close64(name, mine, want):
    """float64: 1e-10 elementwise, plus 1e-10 of the largest entry for entries that are themselves the
    result of cancellation (their rounding error scales with the summands, not with the result)."""
    want = np.asarray(want)
    return check_tensor(name, mine, want, rtol=1e-10, atol=1e-10 * float(np.max(np.abs(want))))


@pytest.mark.parametrize("name,kwargs,sizes", CASES, ids=IDS)
def test_forward_loss_grads_float64(name, kwargs, sizes):
    cfg, params, A, b, x, mask, x0 = make_case(kwargs, sizes)
    if cfg.parametrization == "block":
        assert 0 < mask.sum(axis=1).min() < mask.shape[1], "the block cases must mix sizes (padding)"
    close64(f"{name} forward_layers", tf_impl.forward_layers(params, cfg, A, b, mask, x0),
            ref.forward_layers(params, cfg, A, b, mask, x0))
    loss_r, grads_r = ref.loss_and_grads(params, cfg, A, b, x, mask, x0)
    loss_t, grads_t = tf_impl.loss_and_grads(params, cfg, A, b, x, mask, x0)
    assert isinstance(loss_t, float)
    close64(f"{name} loss", loss_t, loss_r)
    assert list(grads_t) == list(grads_r)
    for k in grads_r:
        assert grads_t[k].shape == grads_r[k].shape and grads_t[k].dtype == np.float64
        close64(f"{name} grad {k}", grads_t[k], grads_r[k])
    assert loss_r > 1e-3 and max(float(np.abs(g).max()) for g in grads_r.values()) > 1e-3, "non-trivial case"


@pytest.mark.parametrize("name,kwargs,sizes", CASES[:1] + CASES[2:3], ids=IDS[:1] + IDS[2:3])
def test_without_xla_matches(name, kwargs, sizes):
    """The same graph run without XLA (tf.function only) gives the same numbers."""
    cfg, params, A, b, x, mask, x0 = make_case(kwargs, sizes, seed=3)
    loss_r, grads_r = ref.loss_and_grads(params, cfg, A, b, x, mask, x0)
    loss_t, grads_t = tf_impl.loss_and_grads(params, cfg, A, b, x, mask, x0, jit_compile=False)
    close64(f"{name} loss (no XLA)", loss_t, loss_r)
    for k in grads_r:
        close64(f"{name} grad {k} (no XLA)", grads_t[k], grads_r[k])


# the two paths of a block model: the structured fast path (the default) and the dense D x D one
BLOCK_PATH_CASES = [  # (ModelConfig kwargs, sizes): heads, K, norms and padded sizes from 2 to 13
    (dict(n_layers=2, n_heads=4, n_identity=3, attention_norm="none", init_scale=0.2), (2, 13)),
    (dict(n_layers=3, n_heads=1, n_identity=2, attention_norm="n", init_scale=0.3), (3, 8)),
    (dict(n_layers=1, n_heads=2, n_identity=0, attention_norm="n", init_scale=0.3), 6),
]


@pytest.mark.parametrize("kwargs,sizes", BLOCK_PATH_CASES, ids=["4H-K3-M13", "1H-K2-M8-norm", "1L-K0-M6"])
@pytest.mark.parametrize("structured", [True, False], ids=["structured", "dense"])
def test_block_paths_match_reference(kwargs, sizes, structured):
    """dense == structured == reference in float64: every layer's estimate, the loss and every gradient."""
    cfg, params, A, b, x, mask, x0 = make_case(dict(parametrization="block", **kwargs), sizes, batch=5, seed=7)
    tag = f"{'structured' if structured else 'dense'} {kwargs['n_heads']}H"
    close64(f"{tag} forward_layers", tf_impl.forward_layers(params, cfg, A, b, mask, x0, structured=structured),
            ref.forward_layers(params, cfg, A, b, mask, x0))
    loss_r, grads_r = ref.loss_and_grads(params, cfg, A, b, x, mask, x0)
    loss_t, grads_t = tf_impl.loss_and_grads(params, cfg, A, b, x, mask, x0, structured=structured)
    close64(f"{tag} loss", loss_t, loss_r)
    for k in grads_r:
        close64(f"{tag} grad {k}", grads_t[k], grads_r[k])
    assert loss_r > 1e-3 and min(float(np.abs(g).max()) for g in grads_r.values()) > 1e-4, "non-trivial case"
    if structured:  # the reference's own structured pair (hand-written backward) agrees too
        close64("reference structured forward_layers", ref.forward_layers(params, cfg, A, b, mask, x0, structured=True),
                ref.forward_layers(params, cfg, A, b, mask, x0))
        loss_s, grads_s = ref.loss_and_grads(params, cfg, A, b, x, mask, x0, structured=True)
        close64("reference structured loss", loss_s, loss_r)
        for k in grads_r:
            close64(f"reference structured grad {k}", grads_s[k], grads_r[k])


def test_structured_layer_is_the_dense_layer_permuted():
    """One structured layer on interleaved tokens equals the dense layer on the usual tokens, coordinate by
    coordinate after the fixed permutation of the layout (not only at the read-out)."""
    from tf_impl import layers as L

    cfg, params, A, b, x, mask, x0 = make_case(dict(parametrization="block", n_layers=1, n_heads=3, n_identity=2,
                                                    init_scale=0.3), (2, 6), batch=4, seed=2)
    t = lambda a: tf.constant(a, tf.float64)  # noqa: E731
    maskf, M, W = t(mask.astype(np.float64)), A.shape[1], cfg.n_identity + 1
    p, q = t(params["layers.0.P"]), t(params["layers.0.Q"])
    scale = tf.ones([A.shape[0]], tf.float64)
    Zd = L.encode(t(A), t(b), t(x0), maskf, cfg)  # (B, T, D) layout [a, b, h^1, h^2]
    dense = L.attention(Zd, L.block_expand(p, M), L.block_expand(q, M), scale, L.coordinate_mask(maskf, cfg.n_groups))
    Zi = L.encode_interleaved(t(A), t(b), t(x0), maskf, cfg)  # (B, T, D) interleaved
    fast = L.block_attention(Zi, p, q, scale, L.interleaved_colmask(maskf, W))
    # interleaved coordinate (m, g) <- dense coordinate of group g (a, h^1, ...) at m; b last
    dense_index = [(0 if g == 0 else M + 1 + (g - 1) * M) + m for m in range(M) for g in range(W)] + [M]
    close64("interleaved tokens", Zi.numpy(), Zd.numpy()[:, :, dense_index])
    close64("one layer, every coordinate", fast.numpy(), dense.numpy()[:, :, dense_index])


# float32 against the float64 reference. Unit roundoff is eps = 2^-24 ~ 6e-8. Inputs and weights
# are rounded to it, every product sums D <= 30 terms (error ~ sqrt(D) eps), and each layer is cubic
# in the tokens, so a relative perturbation can grow ~3x per layer: for L = 3 layers the forward is
# off by up to ~ eps * sqrt(30) * 3^3 ~ 9e-6 of its largest entry; the backward runs the chain again
# (another factor up to ~3^L / L). Bounds relative to the largest entry: 2e-5 (forward, loss) and
# 2e-4 (gradients). Measured: ~3e-7 and ~6e-7 (the growth factors are worst cases).
F32_FWD, F32_GRAD = 2e-5, 2e-4


@pytest.mark.parametrize("name,kwargs,sizes", CASES, ids=IDS)
def test_float32_close_to_reference(name, kwargs, sizes):
    cfg, params, A, b, x, mask, x0 = make_case(kwargs, sizes, seed=5)
    want = ref.forward(params, cfg, A, b, mask, x0)
    got = tf_impl.forward(params, cfg, A, b, mask, x0, dtype=tf.float32)
    assert got.dtype == np.float32
    check_tensor(f"{name} f32 forward", got, want, rtol=0, atol=F32_FWD * np.abs(want).max())
    loss_r, grads_r = ref.loss_and_grads(params, cfg, A, b, x, mask, x0)
    loss_t, grads_t = tf_impl.loss_and_grads(params, cfg, A, b, x, mask, x0, dtype="float32")
    check_tensor(f"{name} f32 loss", loss_t, loss_r, rtol=F32_FWD)
    for k in grads_r:
        assert grads_t[k].dtype == np.float32
        check_tensor(f"{name} f32 grad {k}", grads_t[k], grads_r[k], rtol=0,
                     atol=F32_GRAD * np.abs(grads_r[k]).max())


# ----------------------------------------------------------------------------------------------
# training: ten Adam steps of both packages from the same start on the same batches


@pytest.mark.parametrize("kwargs,sizes,sched", [
    (dict(parametrization="block", n_layers=3, n_heads=2, attention_norm="n", init_scale=0.2), (2, 6),
     dict(lr=0.02, warmup=3, schedule="cosine", clip_norm=0.5)),
    (dict(parametrization="full", n_layers=2, n_heads=2, embed_dim=3, n=4, attention_norm="none",
          init_scale=0.2), 4, dict(lr=0.01, warmup=0, schedule="constant", clip_norm=None)),
], ids=["block-cosine-clip", "full-constant"])
def test_ten_adam_steps_match_reference(kwargs, sizes, sched):
    from tf_impl.optim import Trainer

    cfg = ref.ModelConfig(**kwargs)
    p0 = ref.init_params(cfg, seed=21)
    steps, batch = 10, 8
    batches = [ref.sample_systems(batch, sizes, 10.0, seed=[77, t]) for t in range(steps)]
    trainer = Trainer(train_config(cfg, sizes, batch_size=batch, steps=steps, dtype="float64", **sched), p0)
    params, state = p0, ref.adam_init(p0)
    clipped = 0
    for t, (A, b, x, mask) in enumerate(batches):
        loss, grads = ref.loss_and_grads(params, cfg, A, b, x, mask)
        grads, norm = clip_by_global_norm(grads, sched["clip_norm"])
        clipped += sched["clip_norm"] is not None and norm > sched["clip_norm"]
        lr = ref.lr_at(t, sched["lr"], steps, sched["warmup"], sched["schedule"])
        params, state = ref.adam_update(params, grads, state, lr)
        out = trainer.train_step((A, b, x, mask))  # the jitted step, fed the same batch
        close64(f"step {t} loss", out["loss"], loss)
        close64(f"step {t} grad norm", out["grad_norm"], norm)
        close64(f"step {t} lr", out["lr"], lr)
        mine, extra = trainer.get_state()
        for k in params:
            close64(f"step {t} {k}", mine[k], params[k])
            close64(f"step {t} adam m {k}", extra[f"adam_m/{k}"], state["m"][k])
            close64(f"step {t} adam v {k}", extra[f"adam_v/{k}"], state["v"][k])
        assert int(extra["step"]) == state["t"] == t + 1
    if sched["clip_norm"] is not None:
        assert clipped >= 3, "the test should exercise clipping"


# ----------------------------------------------------------------------------------------------
# one checkpoint format


def test_checkpoint_round_trip_between_packages(tmp_path):
    from tf_impl.optim import Trainer

    cfg = ref.ModelConfig(parametrization="block", n_layers=2, n_heads=2, attention_norm="n", init_scale=0.2)
    A, b, x, mask = ref.sample_systems(5, (2, 6), 10.0, seed=8)
    x0 = 0.3 * np.random.default_rng(2).standard_normal(b.shape) * mask
    # written by tf_impl (a trained model's float32 variables, through the trainer's state) ...
    trainer = Trainer(train_config(cfg, (2, 6), batch_size=8, lr=0.01, steps=3, seed=4, mode="graph"))
    for _ in range(3):
        trainer.train_step()
    params, extra = trainer.get_state()
    tf_impl.save_checkpoint(tmp_path / "tf.npz", params, cfg, meta={"step": 3}, extra=extra)
    p_ref, cfg_ref = ref.load_checkpoint(tmp_path / "tf.npz")
    assert cfg_ref == cfg
    meta, extra_back = ref.load_checkpoint_extra(tmp_path / "tf.npz")
    assert meta == {"step": 3} and int(extra_back["step"]) == 3
    close64("tf ckpt -> reference forward", ref.forward(p_ref, cfg_ref, A, b, mask, x0),
            tf_impl.forward(params, cfg, A, b, mask, x0))
    # ... and by the reference
    p2 = ref.init_params(cfg, seed=9)
    ref.save_checkpoint(tmp_path / "ref.npz", p2, cfg)
    p_tf, cfg_tf = tf_impl.load_checkpoint(tmp_path / "ref.npz")
    close64("reference ckpt -> tf forward", tf_impl.forward(p_tf, cfg_tf, A, b, mask, x0),
            ref.forward(p2, cfg, A, b, mask, x0))
    # and the trainer resumes from what it wrote
    t2 = Trainer(train_config(cfg, (2, 6), batch_size=8, lr=0.01, steps=3, seed=0, mode="graph"))
    t2.set_state(p_ref, extra_back)
    again, extra2 = t2.get_state()
    for k in params:
        check_tensor(f"resumed {k}", again[k], params[k], rtol=0)
        check_tensor(f"resumed adam m {k}", extra2[f"adam_m/{k}"], extra[f"adam_m/{k}"], rtol=0)
