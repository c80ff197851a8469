"""The twins stay twins: every op of ``reference.layers`` / ``reference.model`` has its TensorFlow twin of the
same name in ``tf_impl.layers`` / ``tf_impl.model`` (the reference's ``op_forward`` is TensorFlow's ``op``; a
hand-written ``op_backward`` has no twin, autodiff replaces it), defined in the same order, with the same
arguments. A name only one side has must be listed below with the reason; a new one fails this test."""

from __future__ import annotations

import inspect

import reference.layers as ref_layers
import reference.model as ref_model
import tf_impl.layers as tf_layers
import tf_impl.model as tf_model

# names that exist on one side only, and why
REFERENCE_ONLY = {
    "layers": {"block_layout": "the constant S, C matrices; tf_impl.layers imports them from the reference",
               "block_apply": "TensorFlow applies the block scalars through block_matrices (interleaved layout)"},
    "model": {"param_shapes": "shared: tf_impl.model re-exports the reference's",
              "init_params": "shared: both packages start from the same NumPy initialisation",
              "check_params": "validation, shared: tf_impl.model imports it",
              "grow_params": "NumPy-only layer growth, shared by both packages (checkpoints are NumPy)",
              "model_backward": "the hand-written backward; TensorFlow: loss_and_grads_tensors (autodiff)"},
}
TF_ONLY = {
    "layers": {"attention_readout": "fast path: the last layer computes only the query's x-slot",
               "block_attention_readout": "fast path: the same for the structured block layer",
               "block_matrices": "fast path: the block scalars as small matrices for the interleaved layout",
               "encode_interleaved": "fast path: the interleaved token layout of the structured block layer",
               "interleaved_colmask": "fast path: the coordinate mask in that layout",
               "interleaved_readout": "fast path: the read-out in that layout",
               "mse_sum": "the summed loss of the distributed train step"},
    "model": {"as_float_dtype": "dtype argument checking of the TensorFlow API",
              "loss_and_grads_tensors": "GradientTape on tensors: the twin of model_backward",
              "LinearTransformer": "the tf.Module holding the variables (the reference has plain dicts)"},
}


def public_functions(module):
    """Public functions/classes defined in ``module`` itself, in order of definition."""
    items = [(n, inspect.unwrap(o)) for n, o in vars(module).items() if not n.startswith("_")]
    items = [(n, o) for n, o in items if (inspect.isfunction(o) or inspect.isclass(o))
             and o.__module__ == module.__name__ and not (inspect.isclass(o) and n.endswith("Cache"))]
    return [n for n, o in sorted(items, key=lambda item: inspect.getsourcelines(item[1])[1])]


def reference_ops(module):
    """The reference's names; in ``layers`` the op pairs count once, as their name without ``_forward``
    (``reference.model`` keeps ``model_forward`` / ``model_backward``, the same names in both packages)."""
    out = []
    for n in public_functions(module):
        if module is ref_layers and n.endswith("_backward"):
            assert n[: -len("_backward")] + "_forward" in vars(module), f"{n} has no forward"
            continue
        out.append(n[: -len("_forward")] if module is ref_layers and n.endswith("_forward") else n)
    return out


def test_twin_names_and_order():
    for key, ref_mod, tf_mod in (("layers", ref_layers, tf_layers), ("model", ref_model, tf_model)):
        ref_names = [n for n in reference_ops(ref_mod) if n not in REFERENCE_ONLY[key]]
        tf_names = [n for n in public_functions(tf_mod) if n not in TF_ONLY[key]]
        assert ref_names == tf_names, f"{key}: reference {ref_names} vs tf_impl {tf_names}"
        for name in REFERENCE_ONLY[key]:  # the lists themselves stay current
            assert name in reference_ops(ref_mod), f"{key}: {name} is listed but not a reference op"
        for name in TF_ONLY[key]:
            assert name in public_functions(tf_mod), f"{key}: {name} is listed but not a tf_impl function"


def test_twin_arguments():
    """Every argument of the reference op, in the same order, in its twin (which may add its own: ``dtype``,
    ``jit_compile``); the reference's boolean ``mask`` is the float ``maskf`` of the tensor functions."""
    rename = {"maskf": "mask"}
    for key, ref_mod, tf_mod in (("layers", ref_layers, tf_layers), ("model", ref_model, tf_model)):
        for name in reference_ops(ref_mod):
            if name in REFERENCE_ONLY[key]:
                continue
            ref_fn = vars(ref_mod).get(name + "_forward") if ref_mod is ref_layers else None
            ref_fn = ref_fn or vars(ref_mod)[name]
            ref_args = list(inspect.signature(ref_fn).parameters)
            tf_args = [rename.get(a, a) for a in inspect.signature(vars(tf_mod)[name]).parameters]
            missing = [a for a in ref_args if a not in tf_args]
            assert not missing, f"{key}.{name}: tf_impl lacks the reference's arguments {missing}"
            assert [a for a in tf_args if a in ref_args] == ref_args, \
                f"{key}.{name}: reference {ref_args} vs tf_impl {tf_args} (order)"
