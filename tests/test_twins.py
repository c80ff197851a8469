"""The twins stay twins: every public name of ``reference.<module>`` has its TensorFlow twin of the same name in
``tf_impl.<module>`` for ``layers``, ``model``, ``data``, ``optim`` and ``solve`` (functions, classes and
module constants; in ``layers`` the reference's ``op_forward`` is TensorFlow's ``op`` and a hand-written
``op_backward`` has no twin, autodiff replaces it), defined in the same order, with the same arguments in the same
order and the same defaults. A name only one side has must be listed below with the reason; a new one fails
this test."""

from __future__ import annotations

import ast
import importlib
import inspect

# the modules themselves (``reference.solve`` and ``tf_impl.solve`` are also the packages' solve functions)
TWINS = {key: (importlib.import_module(f"reference.{key}"), importlib.import_module(f"tf_impl.{key}"))
         for key in ("layers", "model", "data", "optim", "solve", "spectral")}
ref_layers = TWINS["layers"][0]

_SHARED_SOLVE = "shared: tf_impl.solve is reference.solve.solve_with given the TensorFlow forward"

# names that exist on one side only, and why
REFERENCE_ONLY = {
    "layers": {"block_layout": "the constant S, C matrices; tf_impl.layers imports them from the reference",
               "block_apply": "TensorFlow applies the block scalars through block_matrices (interleaved layout)",
               "LOSSES": "the loss names, shared: tf_impl.config and the trainer read them (through check_loss)",
               "check_loss": "validation, shared: tf_impl.layers and tf_impl.model import it",
               "SparsePlan": "what a sparse layer computes, read from the NumPy weights: shared by both twins",
               "sparse_plan": "the plan of one sparse layer (NumPy, from the zero pattern), shared by both twins"},
    "model": {"param_shapes": "shared: tf_impl.model re-exports the reference's",
              "param_masks": "shared: tf_impl.model imports it and multiplies the masks out the same way",
              "init_params": "shared: both packages start from the same NumPy initialisation",
              "check_params": "validation, shared: tf_impl.model imports it",
              "grow_params": "NumPy-only layer growth, shared by both packages (checkpoints are NumPy)",
              "start_from": "the start of a run from a checkpoint (NumPy, as checkpoints are), used by tf_impl.train",
              "START_FIELDS": "the fields start_from compares, shared with it",
              "model_backward": "the hand-written backward; TensorFlow: loss_and_grads_tensors (autodiff)",
              "forward_bytes": "the NumPy forward's peak memory; TrainConfig and solve size batches with it",
              "masked_params": "NumPy: the weights times their masks, shared (sparse_plans, first_layer_reading_b)",
              "sparse_plans": "shared: tf_impl.model runs the reference's plans (static when a layer is traced)",
              "first_layer_reading_b": "a property of the NumPy weights, shared: tf_impl.model imports it"},
    "data": {"parse_sizes": "validation, shared: tf_impl.data imports it",
             "haar_orthogonal": "draws G from a NumPy Generator; the TF sampler draws G inside sample_systems_tf "
                                "from its stateless stream and calls haar_q",
             "EIGENVALUE_LAWS": "the law names, shared: tf_impl.data imports them",
             "RHS_LAWS": "the law names, shared (through check_law)",
             "CLUSTER_WIDTH": "a constant of the law, shared: tf_impl.data imports it",
             "KAPPA_LIMIT": "a bound of the law, shared: parse_kappa (through check_law) applies it in both samplers",
             "parse_kappa": "validation, shared (through check_law)",
             "check_law": "validation, shared: tf_impl.data imports it",
             "spd_spectrum": "draws and pins the eigenvalues from a NumPy Generator; sample_systems_tf draws its "
                             "uniforms from the stateless stream and pins in place",
             "rhs_rms": "a property of the law (exact formula), used by solve; not a sampler",
             "check_systems": "validation, shared: tf_impl.model and tf_impl.optim import it"},
    "optim": {"adam_init": "TensorFlow's Adam moments are tf.Variables created by Trainer",
              "batch_seed": "the Adam batch seed (seed, step); Trainer.sample_batch builds the same pair as a tensor",
              "train": "the NumPy training loop; TensorFlow's is the class Trainer (its compiled step needs its "
                       "variables to outlive one call)",
              "LBFGS_STREAM": "shared: LbfgsTrainer imports it (the same L-BFGS batch in both twins)",
              "flatten_params": "L-BFGS on the flat parameter vector is NumPy code, shared: LbfgsTrainer uses it",
              "unflatten_params": "shared with LbfgsTrainer, as flatten_params",
              "lbfgs_direction": "shared with LbfgsTrainer (through lbfgs_step)",
              "wolfe_search": "shared with LbfgsTrainer (through lbfgs_step)",
              "lbfgs_step": "shared: LbfgsTrainer runs the NumPy iteration on the TensorFlow loss and gradient",
              "check_lbfgs_memory": "shared: LbfgsTrainer.set_state checks a resumed memory of pairs with it",
              "train_lbfgs": "the NumPy L-BFGS loop; TensorFlow's is the class LbfgsTrainer"},
    "solve": {name: _SHARED_SOLVE for name in (
        "AUTO_MODELS", "ResolvedModel", "first_not_positive_definite", "prepare_inputs", "auto_model",
        "resolve_model", "spectrum_estimate", "largest_eigenvalue", "RESIDUAL_MARGIN",
        "SolveResult", "NotConvergedError", "DEFAULT_MAX_PASSES", "memory_limit",
        "solve_bytes", "chunk_size", "ROUNDING_FLOOR", "solve_with", "factorize_with", "Factorization")},
    "spectral": {**{name: "a hand-written op of the spectral path; TensorFlow: transfer_tensors, loss_tensors"
                    for name in ("layer_forward", "layer_backward", "readout_forward", "readout_backward",
                                 "loss_forward", "loss_backward", "initial_slabs", "model_forward", "model_backward")},
                 "wide_groups": "the group indices, shared: tf_impl.spectral and GreedyTrainer import them"},
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
    "data": {"sample_systems_tf": "the in-graph sampler (static shapes, a seed tensor) that sample_systems compiles; "
                                  "its arguments follow sample_systems (TWIN_ARGUMENTS)",
             "as_seed": "the stateless seed pair (seed, stream); the reference takes any NumPy seed"},
    "optim": {"Trainer": "the compiled Adam step and its tf.Variables: the twin of reference.optim.train",
              "LbfgsTrainer": "Trainer's interface around the reference's NumPy L-BFGS iteration "
                              "(the twin of reference.optim.train_lbfgs)",
              "GreedyTrainer": "Trainer's interface around the reference's layer-wise least squares "
                               "(reference.greedy, NumPy: a stage is a few small least-squares solves)"},
    "solve": {},
    "spectral": {"transfer_tensors": "g(lambda) on tensors: the twin of model_forward",
                 "loss_tensors": "the loss on tensors; GradientTape gives the twin of model_backward"},
}
# one-sided functions whose arguments still follow a reference function: name -> the reference's name
TWIN_ARGUMENTS = {"data": {"sample_systems_tf": "sample_systems"}}
# the tensor functions' float mask ``maskf`` is the reference's boolean ``mask``
RENAME = {"maskf": "mask"}


def public_names(module) -> list[str]:
    """Public functions, classes and constants defined in ``module`` itself, in order of definition (the
    reference's per-op ``...Cache`` named tuples are the hand-written backward's and have no twin)."""
    names = []
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                names += [t.id for t in elts if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")
            and not (inspect.isclass(vars(module)[n]) and n.endswith("Cache"))]


def reference_ops(module) -> list[str]:
    """The reference's names; in ``layers`` the op pairs count once, as their name without ``_forward``
    (``reference.model`` keeps ``model_forward`` / ``model_backward``, the same names in both packages)."""
    out = []
    for n in public_names(module):
        if module is ref_layers and n.endswith("_backward"):
            assert n[: -len("_backward")] + "_forward" in vars(module), f"{n} has no forward"
            continue
        out.append(n[: -len("_forward")] if module is ref_layers and n.endswith("_forward") else n)
    return out


def reference_function(module, name):
    """The reference function of the twin name ``name`` (in ``layers``: ``name_forward``)."""
    if module is ref_layers and name + "_forward" in vars(module):
        return vars(module)[name + "_forward"]
    return vars(module)[name]


def test_twin_names_and_order():
    for key, (ref_mod, tf_mod) in TWINS.items():
        ref_names = [n for n in reference_ops(ref_mod) if n not in REFERENCE_ONLY[key]]
        tf_names = [n for n in public_names(tf_mod) if n not in TF_ONLY[key]]
        assert ref_names == tf_names, f"{key}: reference {ref_names} vs tf_impl {tf_names}"
        for name, why in REFERENCE_ONLY[key].items():  # the lists themselves stay current
            assert name in reference_ops(ref_mod), f"{key}: {name} is listed but not a reference name"
            assert why, f"{key}.{name}: the reason is missing"
        for name, why in TF_ONLY[key].items():
            assert name in public_names(tf_mod), f"{key}: {name} is listed but not a tf_impl name"
            assert why, f"{key}.{name}: the reason is missing"


def _pairs():
    """``(label, reference function, tf_impl function)`` for every twin pair of functions."""
    for key, (ref_mod, tf_mod) in TWINS.items():
        for name in reference_ops(ref_mod):
            ref_fn = reference_function(ref_mod, name)
            if name in REFERENCE_ONLY[key] or not inspect.isfunction(ref_fn):
                continue
            yield f"{key}.{name}", ref_fn, vars(tf_mod)[name]
        for tf_name, ref_name in TWIN_ARGUMENTS.get(key, {}).items():
            yield f"{key}.{tf_name} (after {ref_name})", vars(ref_mod)[ref_name], vars(tf_mod)[tf_name]


def test_twin_arguments():
    """Every argument of the reference function, in the same order, in its twin (which may add its own:
    ``dtype``, ``jit_compile``); the reference's boolean ``mask`` is the float ``maskf`` of the tensor functions."""
    for label, ref_fn, tf_fn in _pairs():
        ref_args = list(inspect.signature(ref_fn).parameters)
        tf_args = [RENAME.get(a, a) for a in inspect.signature(tf_fn).parameters]
        missing = [a for a in ref_args if a not in tf_args]
        assert not missing, f"{label}: tf_impl lacks the reference's arguments {missing}"
        assert [a for a in tf_args if a in ref_args] == ref_args, \
            f"{label}: reference {ref_args} vs tf_impl {tf_args} (order)"


def test_twin_defaults():
    """An argument both twins have has the same default in both (``structured``, the law options, Adam's betas)."""
    for label, ref_fn, tf_fn in _pairs():
        ref_params = inspect.signature(ref_fn).parameters
        tf_params = {RENAME.get(a, a): p for a, p in inspect.signature(tf_fn).parameters.items()}
        for name, p in ref_params.items():
            assert p.default == tf_params[name].default, \
                f"{label}({name}=...): reference default {p.default!r} vs tf_impl {tf_params[name].default!r}"
