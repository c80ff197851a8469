"""What a newcomer relies on before reading any code: the README's commands are what CI runs, plain
``pytest`` works like ``python -m pytest``, the README's snippet runs, and the licence and the citation
are there and agree with the package metadata."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_ci_runs_exactly_the_readme_test_command():
    commands = [line for block in bash_blocks(README) for line in block.splitlines() if "pytest" in line]
    assert len(commands) == 1, commands
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == commands[0], (ci[-1], commands[0])
    for page in ("index.md", "quickstart.md"):  # the pages that repeat it
        assert commands[0] in (ROOT / "docs" / page).read_text(encoding="utf-8"), page


def test_plain_pytest_collects_from_anywhere():
    """The ``pytest`` script, unlike ``python -m pytest``, does not put the working directory on ``sys.path``:
    the tests' imports (``tests.helpers``, ``helpers``, the packages) must come from the configuration. Run
    from another folder, so that nothing is importable by accident."""
    files = [str(ROOT / "tests" / name) for name in ("test_evaluation.py", "test_reference_helpers.py")]
    code = "import sys, pytest; sys.exit(pytest.console_main())"
    res = subprocess.run([sys.executable, "-c", code, "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                         cwd=ROOT / "docs", capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert not re.search(r"^ERROR|\d+ errors?\b", res.stdout, flags=re.M), res.stdout[-2000:]
    assert re.search(r"\d+ tests collected", res.stdout), res.stdout[-2000:]


def test_readme_snippet_runs_and_keeps_the_ground_truth():
    (block,) = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)
    namespace: dict = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    import reference

    _, _, x, _ = reference.sample_systems(4, 9, kappa=10, seed=0)
    assert np.array_equal(namespace["x"], x), "the snippet rebinds x, the true solution it compares with"
    assert namespace["res"].converged.all()


def test_licence_and_citation():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = \{ text = "Apache-2.0" \}$', pyproject, flags=re.M)
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in licence and len(licence) > 10000
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0" and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Efficient Linear System Solver with Transformers" and paper["year"] == 2024
    assert [a["family-names"] for a in paper["authors"]] == ["Vladymyrov", "von Oswald", "Miller", "Sandler"]
    assert paper["url"] in README and paper["title"] in README


def test_no_function_is_longer_than_80_lines():
    """The code stays readable: every function in the twins, the scripts and the docs hooks fits a screen or two."""
    long = []
    for folder in ("reference", "tf_impl", "scripts", "docs_hooks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({size} lines)")
    assert long == [], long


def test_results_and_shipped_checkpoints_name_no_machine_path():
    """Measured data and shipped metadata are read on other machines: paths in them are relative to the
    repository (``runs/...``, ``reference/pretrained/...``), never a folder of the machine that made them."""
    from reference.checkpoint import load_checkpoint_extra
    from tests.test_tutorials import MACHINE_PATH

    texts = {p: p.read_text(encoding="utf-8") for p in sorted((ROOT / "results").rglob("*"))
             if p.suffix in (".json", ".md")}
    texts |= {p: json.dumps(load_checkpoint_extra(p)[0]) for p in sorted((ROOT / "reference/pretrained").glob("*.npz"))}
    found = {str(p.relative_to(ROOT)): m.group(0) for p, t in texts.items() for m in [MACHINE_PATH.search(t)] if m}
    assert not found, found
    assert MACHINE_PATH.search(json.dumps({"models": {"a": "/tmp/snap3/reference/pretrained/a.npz"}}))


def test_every_script_takes_help_and_writes_nothing(tmp_path):
    """``--help`` of every script prints its usage and exits 0, writing nothing (``bash scripts/reproduce_paper.sh
    --help`` started the whole retrain); the retrain itself refuses to start without ``--overwrite-shipped``; and a
    script's output inside a committed folder needs that flag."""
    import os

    def tree():
        return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True,
                              text=True).stdout

    before = tree()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    scripts = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "scripts").glob("*.sh"))
    procs = {p.name: subprocess.Popen(([sys.executable] if p.suffix == ".py" else ["bash"]) + [str(p), "--help"],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for p in scripts}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() and "Traceback" not in err, (name, err[-1000:])
    refused = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_paper.sh")], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "give --overwrite-shipped" in refused.stderr
    assert list(tmp_path.iterdir()) == [] and tree() == before


@pytest.mark.parametrize("script, args", [
    ("depth_family_study", ["--out", "results/depth_family"]),
    ("training_curves", ["runs/x", "--out", "results/claim3/curves"]),
    ("make_doc_figures", ["--out", "docs/assets"]),
    ("make_headline_figure", ["--out", "docs/assets/headline.png"]),
    ("bench_solve", ["--out", "results/bench_solve.json"]),
    ("bench_factorize", ["--out", "results/bench_factorize.json"]),
    ("bench_compute_fair", ["--out", "results/compute_fair.json"]),
])
def test_a_script_writes_into_a_committed_folder_only_when_told(script, args, capsys, monkeypatch):
    """Defaults are under runs/ (ignored by git); an --out in results/, reference/pretrained/ or docs/assets/ is
    refused before any work unless --overwrite-shipped is given."""
    from tests.test_benchmarks import load_script

    monkeypatch.chdir(ROOT)
    module = load_script(script)
    with pytest.raises(SystemExit) as stop:
        module.main(args)
    assert stop.value.code == 2
    assert "is committed with the project: give --overwrite-shipped" in capsys.readouterr().err
