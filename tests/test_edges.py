"""Hostile inputs at the edges: float64's whole range of scales, graph Laplacians, ill-conditioned systems
without ``tol``, calls that would not fit in memory, and the flags and environment of the command lines.

Each test builds its case. ``solve`` runs on hand-set Newton-Schulz weights (exact up to rounding on the
spectra they are built for), so a wrong answer is the solver's, not the model's.
"""

import importlib
import math
import os
import re
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
import tf_impl  # imported here, not inside a property test (TensorFlow's import changes the recursion limit)
from reference.constructions import newton_schulz_params
from reference.data import sample_systems

solve_module = importlib.import_module("reference.solve")  # the module (reference.solve is also the function)
NS = newton_schulz_params(8, kappa=100.0, n_identity=2)  # exact to ~1e-9 per pass for cond(A) <= 100


def systems(batch=3, n=5, kappa=10.0, seed=0):
    A, b, x, _ = sample_systems(batch, n, kappa, seed)
    return A, b, x


def twins():
    return {"reference": reference.solve, "tf_impl": tf_impl.solve}


def scaled(x, c, s):
    """``(s / c) x`` without forming ``s / c`` (which can overflow or underflow where the product does not)."""
    (mc, ec), (ms, es) = math.frexp(c), math.frexp(s)
    return np.ldexp(x * (ms / mc), es - ec)


# ------------------------------------------------------------------------------------------------
# any scale: solve(c A, s b) = (s / c) solve(A, b), or one clear error


def check_scale(solve, A, b, x, c, s):
    """``solve(c A, s b)`` against ``(s / c) x``: equal to rounding where the answer is a normal float64 with
    room to spare, a ValueError saying so where it is far outside, either in the band between."""
    top = math.log10(np.abs(x).max()) + math.log10(s) - math.log10(c)  # decimal exponent of the answer's largest entry
    if -306 < top < 307:
        xs = solve(c * A, s * b, model=NS)
        want = scaled(x, c, s)
        assert np.all(np.isfinite(xs))
        err = np.abs(xs - want).max() / np.abs(want).max()
        assert err < 1e-10, (c, s, err)
    elif top < -309 or top > 309:
        with pytest.raises(ValueError, match="not representable in float64"):
            solve(c * A, s * b, model=NS)


exponents = st.floats(min_value=-300.0, max_value=300.0, allow_nan=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ec=exponents, es=exponents)
def test_scale_property_reference(ec, es):
    A, b, _ = systems()
    x = reference.solve(A, b, model=NS)
    check_scale(reference.solve, A, b, x, 10.0**ec, 10.0**es)


@pytest.fixture(scope="module")
def tf_answer():
    """``tf_impl.solve`` on the property test's systems, run once before it: the first trace of the compiled
    forward raises Python's recursion limit, which hypothesis would report if it happened inside the test."""
    A, b, _ = systems()
    return tf_impl.solve(A, b, model=NS)


@settings(max_examples=12, deadline=None)
@given(ec=exponents, es=exponents)
def test_scale_property_tf(tf_answer, ec, es):
    A, b, _ = systems()
    x = tf_answer
    check_scale(tf_impl.solve, A, b, x, 10.0**ec, 10.0**es)


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
@pytest.mark.parametrize("c, s", [(1.0, 1e-300), (1.0, 1e300), (1e300, 1e300), (1e-300, 1e-300), (1e-300, 1e-10),
                                  (1e150, 1e155), (2.0**-1040, 2.0**-1040)])
def test_extreme_scales_give_the_answer(twin, c, s):
    """The cases that returned zeros (1e-300 b, 1e300 b, both at 1e300) or reported convergence with x = 0
    (both at 1e-300); the last one has A and b subnormal."""
    solve = twins()[twin]
    A, b, x = systems(seed=1)
    res = solve(c * A, s * b, model=NS, tol=1e-8, return_info=True)
    assert res.converged.all() and np.all(res.passes >= 1) and np.all(res.residual <= 1e-8), (res.passes, res.residual)
    want = scaled(x, c, s)
    assert np.abs(res.x - want).max() < 1e-7 * np.abs(want).max()
    one = solve(c * A, s * b, model=NS)
    assert np.abs(one - want).max() < 1e-6 * np.abs(want).max()


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
def test_unrepresentable_answers_are_one_clear_error(twin):
    solve = twins()[twin]
    A, b, _ = systems(seed=2)
    for c, s in ((1e-300, 1e300), (1e300, 1e-300)):  # answers near 1e600 and 1e-600
        with pytest.raises(ValueError, match=r"solution of system 0 is not representable in float64.*3 of 3"):
            solve(c * A, s * b, model=NS, tol=1e-8)
    b_sub = np.where(b > 0, 5e-324, -5e-324)  # a subnormal b: never "converged" with x = 0
    with pytest.raises(ValueError, match="not representable"):
        solve(A, b_sub, model=NS, tol=1e-8, return_info=True)
    x = solve(1e-300 * A, b_sub, model=NS, tol=1e-8)  # here the answer is a normal number: it comes back
    assert np.all(np.abs(x).max(axis=1) > 1e-30)
    with pytest.raises(ValueError, match="x0 of system 1 is so far from the solution that its residual"):
        solve(A, b, model=NS, x0=np.array([[0.0] * 5, [1e308] * 5, [0.0] * 5]))


# ------------------------------------------------------------------------------------------------
# one pass that cannot be trusted is said; an exact x0 is not a failure


def test_exact_start_is_not_a_model_failure():
    A, b, _ = systems(4, 6, seed=3)
    x0 = np.linalg.solve(A, b[..., None])[..., 0]
    zero = {k: np.zeros_like(v) for k, v in NS[0].items()}  # a model whose every pass is rejected
    for model in (NS, (zero, NS[1])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = reference.solve(A, b, model=model, x0=x0)
        assert np.abs(x - x0).max() <= 1e-12 * np.abs(x0).max()
    with pytest.warns(UserWarning, match="the model cannot handle these systems"):  # a real failure still is said
        reference.solve(A, b, model=(zero, NS[1]), x0=x0 + 1e-3)


@pytest.fixture
def ns_checkpoint(tmp_path):
    """The Newton-Schulz weights for cond <= 100 as a checkpoint whose metadata records kappa 100."""
    path = tmp_path / "ns100.npz"
    reference.save_checkpoint(path, *NS, meta={"train_config": {"kappa": 100.0, "normalize_rhs": True}})
    return path


@pytest.mark.parametrize("n", [10, 80])
def test_one_pass_outside_the_models_condition_numbers_warns(ns_checkpoint, n):
    """Without tol, a system whose cond(A) is above the model's kappa gets a warning (its checkpoint records no
    accuracy: nothing else is judged); inside it, and with tol, none."""
    A, b, _, _ = sample_systems(3, n, 50.0, seed=4, spectrum="loguniform")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference.solve(A, b, model=ns_checkpoint)
    A, b, _, _ = sample_systems(3, n, 1e4, seed=4, spectrum="loguniform")
    with pytest.warns(UserWarning, match=r"checkpoint .*ns100.npz' may be far from the answer on 3 of 3 "
                                         r"system\(s\): 3 have a condition number above the 100 it was built for"):
        reference.solve(A, b, model=ns_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tol: the residual is checked, and this one is met
        reference.solve(A, b, model=ns_checkpoint, tol=1e-6, max_passes=200)
        # an exact x0: nothing rests on the pass, nothing to say
        reference.solve(A, b, model=ns_checkpoint, x0=np.linalg.solve(A, b[..., None])[..., 0])


def test_kappa_nan_in_the_metadata_names_the_file(tmp_path):
    path = tmp_path / "nan-kappa.npz"
    reference.save_checkpoint(path, *NS, meta={"train_config": {"kappa": float("nan")}})
    A, b, _ = systems()
    with pytest.raises(ValueError, match=r"checkpoint '.*nan-kappa.npz': the training data law"):
        reference.solve(A, b, model=path)


def test_complex_initial_guess_and_parameters_are_refused():
    A, b, _ = systems()
    with pytest.raises(ValueError, match="x0 must hold real numbers"):
        reference.solve(A, b, model=NS, x0=np.zeros(b.shape, dtype=complex))
    with pytest.raises(ValueError, match="x0 must hold real numbers"):
        reference.solve(A[0], b[0], model=NS, x0=np.zeros(5) + 0j)
    params = {k: v.astype(complex) for k, v in NS[0].items()}
    with pytest.raises(ValueError, match="is complex; the parameters of a model are real"):
        reference.solve(A, b, model=(params, NS[1]))


# ------------------------------------------------------------------------------------------------
# memory: estimated before allocating, chunked, buffers as large as the passes that ran


def test_max_passes_does_not_preallocate():
    A, b, _ = systems(4, 5, kappa=1e3, seed=5)
    tracemalloc.start()
    try:
        res = reference.solve(A, b, model=NS, tol=1e-10, max_passes=10**9, return_info=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.converged.all() and res.history.shape == (4, res.passes.max() + 1)
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_a_size_that_does_not_fit_is_refused_before_anything_is_allocated(monkeypatch):
    monkeypatch.setenv("LINEAR_TRANSFORMER_MEMORY_LIMIT", "8G")
    n = 5000
    A = np.lib.stride_tricks.as_strided(np.ones(1), shape=(n, n), strides=(0, 0))  # no memory behind it
    b = np.lib.stride_tricks.as_strided(np.ones(1), shape=(n,), strides=(0,))
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"one system of size N=5000 needs about \d+\.\d GiB, above the limit of "
                                         r"8 GiB \(set it with the environment variable "
                                         r"LINEAR_TRANSFORMER_MEMORY_LIMIT"):
        reference.solve(A, b, model=NS)
    assert time.perf_counter() - t < 5.0


def test_the_memory_limit_is_one_environment_variable(monkeypatch):
    """LINEAR_TRANSFORMER_MEMORY_LIMIT, read at every call, is the limit of solve, of training's batch check and of
    the evaluation's test set; the message of a refusal names it, and a value that is not a size is an error naming
    it. (A module attribute could not be the knob: ``reference.solve`` is the function, and an assignment to it
    would be ignored.)"""
    from reference.config import MEMORY_LIMIT_ENV, memory_budget
    from tf_impl.config import PRESETS, TrainConfig
    from tf_impl.evaluate import check_memory, parse_args

    assert MEMORY_LIMIT_ENV == "LINEAR_TRANSFORMER_MEMORY_LIMIT"
    A, b, _ = systems(3, 40)
    reference.solve(A, b, model=NS)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1M")
    assert memory_budget() == solve_module.memory_limit() == 2**20
    for call in (lambda: reference.solve(A, b, model=NS), lambda: tf_impl.solve(A, b, model=NS),
                 lambda: TrainConfig(**PRESETS["small"]),
                 lambda: check_memory(parse_args(["block-mixed", "--n-max", "40"]), [NS[1]])):
        with pytest.raises(ValueError, match=r"above the limit of 0\.000977 GiB \(set it with the environment variable "
                                             r"LINEAR_TRANSFORMER_MEMORY_LIMIT, e\.g\. 8G"):
            call()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2.5 GiB")
    assert memory_budget() == 5 * 2**29
    for bad in ("", "lots", "-1G", "0", "8X"):
        monkeypatch.setenv(MEMORY_LIMIT_ENV, bad)
        with pytest.raises(ValueError, match=f"the environment variable {MEMORY_LIMIT_ENV}=.* is not a memory size"):
            reference.solve(A, b, model=NS)


@pytest.mark.parametrize("twin", ["reference", "tf_impl"])
def test_chunks_give_the_answer_of_one_batch(monkeypatch, twin):
    """A limit that holds 2 systems at a time: 7 systems in 4 chunks. The systems are independent, so the answers
    are those of one batch (to rounding: a kernel may round differently at another batch position)."""
    solve = twins()[twin]
    A, b, _ = systems(7, 6, kappa=50.0, seed=6)
    whole = solve(A, b, model=NS, tol=1e-10, return_info=True)
    cfg = NS[1]
    monkeypatch.setenv("LINEAR_TRANSFORMER_MEMORY_LIMIT", str(solve_module.solve_bytes(cfg, 6, 2)))
    assert solve_module.chunk_size(cfg, 6, 7) == 2
    parts = solve(A, b, model=NS, tol=1e-10, return_info=True)
    assert np.array_equal(parts.passes, whole.passes) and parts.history.shape == whole.history.shape
    np.testing.assert_allclose(parts.x, whole.x, rtol=1e-12, atol=1e-14 * np.abs(whole.x).max())


def test_memory_estimate_bounds_the_forward():
    """The estimate is above the measured peak of the NumPy forward, and not far above it."""
    params, cfg = newton_schulz_params(4, kappa=10.0, n_identity=2)
    A, b, _ = systems(2, 60)
    tracemalloc.start()
    try:
        reference.forward(params, cfg, A, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    est = solve_module.forward_bytes(cfg, 60, 2)
    assert peak <= est <= 3 * peak, (peak, est)


# ------------------------------------------------------------------------------------------------
# the command lines: flags and environment refused at once, in one line


TINY = ["--n-layers", "1", "--n-min", "2", "--n-max", "3", "--batch-size", "8", "--mode", "graph", "--eval-every", "0",
        "--eval-systems", "10"]


def run_cli(args, env=None, module="tf_impl.train"):
    """``python -m module args`` in a fresh process: (exit status, stderr, whether TensorFlow was imported)."""
    code = (f"import sys; from {module} import main; rc = main({args!r}); "
            "print('tensorflow' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=os.path.dirname(os.path.dirname(__file__)))
    return proc.returncode, proc.stderr.strip(), proc.stdout.strip().endswith("True")


@pytest.mark.parametrize("tf_config, match", [
    ('{"cluster": "abc"}', "'cluster' must be an object"),
    ('{"cluster": {"worker": "host0:2222"}}', r"cluster\['worker'\] must be a list"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}}', "task index '1' must be"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', r"in \[0, 2\)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task type 'ps' is not a job"),
    ('["worker"]', "must be a JSON object, got a list"),
    ("{not json", "is not valid JSON"),
])
def test_malformed_tf_config_is_one_line(monkeypatch, tf_config, match):
    from tf_impl import distribute

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=f"TF_CONFIG.*{match}"):
        distribute.check_tf_config()
    for call in (distribute.n_cluster_tasks, distribute.is_chief):
        with pytest.raises(ValueError, match="TF_CONFIG"):
            call()


def test_bad_flags_and_tf_config_exit_2_before_tensorflow_starts(tmp_path):
    out = str(tmp_path / "run")
    cases = [
        (TINY + ["--out", out], {"TF_CONFIG": '{"cluster": "abc"}'}, "error: TF_CONFIG: 'cluster' must be an object"),
        (TINY + ["--out", out, "--seed", "-1"], {}, r"error: TrainConfig: seed \(--seed\) must be an int in \[0,"),
        (TINY + ["--out", out, "--batch-size", "10000000000000"], {},
         r"--batch-size 10000000000000: .* GiB, above the limit of .* GiB"),
        (TINY + ["--out", out, "--eval-systems", "1000000000000"], {},
         r"--eval-systems 1000000000000: .* GiB, above the limit of .* GiB"),
        (TINY + ["--out", out, "--kappa-max", "1e308"], {},  # it ended with a table of inf and nan
         r"error: TrainConfig: kappa_max must be a number in \[kappa \(10.0\), 1e\+15\] or none, got 1e\+308"),
    ]
    for args, env, match in cases:
        t = time.perf_counter()
        rc, err, tf_started = run_cli(args, env)
        assert rc == 2 and len(err.splitlines()) == 1 and re.search(match, err), (args, rc, err)
        assert not tf_started and time.perf_counter() - t < 60, args
    assert not os.path.exists(out)


def test_evaluate_refuses_a_test_set_that_does_not_fit(tmp_path):
    rc, err, _ = run_cli(["block-mixed", "--n-min", "512", "--n-max", "512", "--n-systems", "100000", "--out",
                          str(tmp_path / "ev")], module="tf_impl.evaluate")
    assert rc == 2 and re.fullmatch(r"error: --n-systems 100000 at N = 512 needs about .* GiB, above the limit .*", err)
    assert not (tmp_path / "ev").exists()


def test_a_folder_where_the_checkpoint_goes_is_refused_up_front(tmp_path):
    from tf_impl.train import prepare_out

    for name in ("ckpt.npz", "final.npz"):
        out = tmp_path / name.split(".")[0]
        (out / name).mkdir(parents=True)
        with pytest.raises(ValueError, match=f"--out .*: .*{name} is a folder; the run writes its checkpoint there"):
            prepare_out(str(out))


@pytest.mark.parametrize("case", ["meta is a list", "train_config is a list", "step is not a scalar", "step is 2.5"])
def test_resume_from_bad_metadata_is_one_line(tmp_path, capsys, case):
    from tf_impl.config import parse_config
    from tf_impl.train import main

    out = tmp_path / "run"
    args = TINY + ["--steps", "4", "--out", str(out)]
    tcfg = parse_config(args)
    mcfg = tcfg.model_config()
    meta = {"train_config": tcfg.to_dict(), "step": 2}
    extra = {"step": np.array(2)}
    if case == "meta is a list":
        meta = [meta]
    elif case == "train_config is a list":
        meta["train_config"] = [1]
    else:
        extra["step"] = np.array([2, 3]) if case == "step is not a scalar" else np.array(2.5)
    reference.save_checkpoint(out / "ckpt.npz", reference.init_params(mcfg, 0), mcfg, meta=meta, extra=extra)
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ckpt.npz" in err and "Traceback" not in err, err


def test_small_edges_of_the_command_lines_and_the_law(tmp_path, capsys):
    """rhs_rms of a size that is not one (0: ZeroDivisionError, -3: a number); --kappa 1e308 accepted by the probe;
    a probe error that did not name its checkpoint; evaluate --help writing a default twice."""
    from reference.data import KAPPA_LIMIT, rhs_rms
    from tf_impl import evaluate as ev

    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"rhs_rms: n must be an int >= 1 \\(a system size\\), got {n!r}"):
            rhs_rms(n, 10.0)
    assert rhs_rms(1, 10.0) == 1.0 and KAPPA_LIMIT == 1e15
    for argv in (["learned-L2", "--probe", "--kappa", "1e308"], ["learned-L2", "--kappa", "10", "1e16"]):
        with pytest.raises(SystemExit):
            ev.parse_args(argv)
        assert re.search(r"error: --kappa 1e\+(308|16): kappa must be a number in \[1, 1e\+15\]",
                         capsys.readouterr().err)
    NS3 = newton_schulz_params(3, kappa=10.0, n_identity=2)
    reference.save_checkpoint(tmp_path / "odd.npz", *NS3, meta={"train_config": {"kappa": 1e300}})
    assert ev.main([str(tmp_path / "odd.npz"), "--probe", "--layer-sizes", "4", "--n-systems", "4", "--out",
                    str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(f"error: --probe {re.escape(str(tmp_path / 'odd.npz'))}: its train_config records a kappa "
                        "the construction cannot be built for .*\n", err), err
    with pytest.raises(SystemExit) as stop:
        ev.parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "20) (default" not in text and "(default: all) (default" not in text
    assert all(line.count("(default:") <= 1 for line in re.split(r"\n  -", text))
