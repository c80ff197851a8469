"""The tutorial notebooks: each one runs top to bottom, and each committed one was run that way.

Every ``tutorials/*.ipynb`` is picked up (new notebooks included) and is its own test. The
notebooks assert what they claim, so a change in the reference that breaks a tutorial fails
here. Refresh the committed outputs with ``python scripts/run_tutorials.py``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
# what a committed output must not show: a path of the machine that ran it (absolute POSIX paths of two or
# more parts, Windows drive paths, home-relative paths, installed packages) and warnings or log lines
MACHINE_PATH = re.compile(r"(?<![\w.~/])(?:/[\w.+-]+){2,}|\b[A-Za-z]:\\[\w.]|(?<![\w.])~/|site-packages")
WARNING = re.compile(r"\b\w*Warning\b|\bWARNING\b|^[IWE]\d{4} \d\d:\d\d", re.M)


def _runner():
    spec = importlib.util.spec_from_file_location("run_tutorials", ROOT / "scripts" / "run_tutorials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 4, f"expected the tutorial notebooks in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    """Run a temporary copy (the committed file is not touched) in the notebooks' own folder."""
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    nb = _runner().execute_notebook(copy, cwd=TUTORIALS)  # raises CellExecutionError on a failing cell
    nbformat.write(nb, copy)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert not output_problems(nb), f"{path.name}, run here:\n" + "\n".join(output_problems(nb))


def output_texts(nb):
    """(code cell number, kind, text) of every text output of the notebook's code cells (not images)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                yield i + 1, out.name, out.text
            elif out.output_type in ("execute_result", "display_data"):
                for mime, data in out.get("data", {}).items():
                    if mime.startswith("text/"):
                        yield i + 1, mime, data
            elif out.output_type == "error":
                yield i + 1, "error", "\n".join(out.get("traceback", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_show_no_machine_paths_or_warnings(path):
    """What a reader sees on the site is the same on every machine: no path of the machine that ran the
    notebook, no warning, no log line, nothing on stderr."""
    nb = nbformat.read(path, as_version=4)
    problems = output_problems(nb)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def output_problems(nb) -> list[str]:
    """A machine path, a warning or log line, or anything on stderr, in the notebook's text outputs."""
    problems = []
    for cell, kind, text in output_texts(nb):
        problems += [f"code cell {cell} ({kind}): a path: ...{text[max(0, m.start() - 30):m.end() + 10]}..."
                     for m in MACHINE_PATH.finditer(text)]
        problems += [f"code cell {cell} ({kind}): a warning or log line: ...{text[m.start():m.end() + 60]}..."
                     for m in WARNING.finditer(text)]
        if kind == "stderr":
            problems.append(f"code cell {cell}: writes to stderr: {text[:200]!r}")
    return problems


def test_the_output_rules_catch_paths_and_warnings():
    for text in ("/tmp/tmp11y91y68/final.npz", "saved to /home/me/runs", "C:\\Users\\me", "~/runs/x",
                 "lib/python3.11/site-packages/numpy/x.py", "(/root/.pyenv/versions)"):
        assert MACHINE_PATH.search(text), text
    for text in ("x.py:12: RuntimeWarning: overflow", "WARNING: All log messages", "W0000 00:00:17 cuda",
                 "UserWarning"):
        assert WARNING.search(text), text
    for text in ("1/N and N/A", "a/b/c", "ms/step", "(no warning)", "relative error inf", "results/eval/eval.json",
                 "OUT/final.npz"):
        assert not MACHINE_PATH.search(text) and not WARNING.search(text), text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_was_run_top_to_bottom(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernel must be python3"
    assert nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        "a notebook starts with a Markdown title"
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code, "no code cells"
    counts = [c.execution_count for c in code]
    hint = f"{path.name}: run `python scripts/run_tutorials.py {path.relative_to(ROOT)}` and commit the result"
    assert counts == list(range(1, len(code) + 1)), f"execution counts {counts} are not 1..{len(code)}: {hint}"
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"code cell {i + 1} has an error output: {hint}"
            if out.output_type == "stream" and out.name == "stderr":
                assert "Traceback" not in out.text, f"code cell {i + 1} printed a traceback: {hint}"
