"""The tutorial notebooks: each one runs top to bottom, and each committed one was run that way.

Every ``tutorials/*.ipynb`` is picked up (new notebooks included) and is its own test. The
notebooks assert what they claim, so a change in the reference that breaks a tutorial fails
here; and the numbers a fresh run prints are the committed ones (:func:`stale_numbers`), so that
the committed outputs, which the site shows, cannot go stale. Refresh them with
``python scripts/run_tutorials.py``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
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
    stale = stale_numbers(nbformat.read(path, as_version=4), nb)
    assert not stale, (f"{path.name}: the committed outputs differ from a fresh run (run `python "
                       f"scripts/run_tutorials.py {path.relative_to(ROOT)}`, check its text, commit):\n"
                       + "\n".join(stale))


# a number as printed: 3, -0.5, 1.4e-03, 2e-14, ~8e-06 (not part of a name such as layers.0.P, float32 or learned-L4)
NUMBER = re.compile(r"(?<![\w.~])(~?)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.]*\w)")
# what is not compared: a version (2.21.0) and a timing, a number followed by its unit of time (40 s, 3.1 ms/step)
NOT_COMPARED = re.compile(r"\d+(?:\.\d+){2,}|[-+]?\d[\d.]*(?:[eE][-+]?\d+)?\s?(?:s|ms|µs|us|min|h|seconds?|minutes?"
                          r"|hours?)\b")
ROUNDING = 1e-12  # numbers below this in magnitude on both sides are rounding errors: not compared
# a number marked ~ depends on the path of a training run that amplifies rounding (tutorial 9 says so where it
# prints one): on another machine it may come out a few times larger or smaller; it is compared to this factor
APPROX_FACTOR = 10.0


def numbers(text: str) -> list[tuple[float, bool]]:
    """(value, marked ~) of every number of an output text, in order, versions and timings left out
    (:data:`NOT_COMPARED`)."""
    return [(float(m.group(2)), m.group(1) == "~") for m in NUMBER.finditer(NOT_COMPARED.sub(" ", text))]


def same_to_2_digits(a: float, b: float) -> bool:
    """``a`` and ``b`` agree to 2 significant digits (within half a unit of the second), or both are at
    rounding level (below :data:`ROUNDING` in magnitude)."""
    big = max(abs(a), abs(b))
    if a == b or big < ROUNDING:
        return True
    return abs(a - b) <= 0.5 * 10.0 ** (np.floor(np.log10(big)) - 1)


def same_number(a: tuple[float, bool], b: tuple[float, bool]) -> bool:
    """Two printed numbers agree: both marked ~ and within :data:`APPROX_FACTOR` of each other (same sign), or
    both unmarked and equal to 2 significant digits (:func:`same_to_2_digits`)."""
    (x, approx_x), (y, approx_y) = a, b
    if approx_x != approx_y:
        return False
    if approx_x:
        return x == y or (x * y > 0 and max(x / y, y / x) <= APPROX_FACTOR)
    return same_to_2_digits(x, y)


def stale_numbers(committed, fresh) -> list[str]:
    """Where the numbers of a fresh run's outputs differ from the committed ones, code cell by code cell: a
    different count of numbers, or a pair that does not agree (:func:`same_number`)."""
    def by_cell(nb):
        out: dict[int, list[tuple[float, bool]]] = {}
        for cell, _, text in output_texts(nb):
            out.setdefault(cell, []).extend(numbers(text))
        return out

    old, new = by_cell(committed), by_cell(fresh)
    problems = []
    for cell in sorted(set(old) | set(new)):
        a, b = old.get(cell, []), new.get(cell, [])
        if len(a) != len(b):
            problems.append(f"code cell {cell}: {len(a)} numbers committed, {len(b)} printed now")
            continue
        problems += [f"code cell {cell}, number {i + 1}: {'~' * x[1]}{x[0]:g} committed, {'~' * y[1]}{y[0]:g} now"
                     for i, (x, y) in enumerate(zip(a, b, strict=True)) if not same_number(x, y)]
    return problems


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


def test_the_stale_output_rule_compares_numbers_to_2_digits():
    def nb(*texts):
        cells = [nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output("stream", text=t)]) for t in texts]
        return nbformat.v4.new_notebook(cells=cells)

    values = [v for v, _ in numbers("MSE 1.4e-03 at N = 15, ratio <= 0.33; layers.0.P (2, 5, 5) float32 CG-4")]
    assert values == [1.4e-3, 15, 0.33, 2, 5, 5, 4]
    assert numbers("TensorFlow 2.21.0, 40 s, 3.1 ms per step, 12 min, 29 minutes; 7 steps") == [(7, False)]
    assert numbers("L-BFGS ~8e-06, Adam 7.2e-03 (~3e+02 iterations)") == [(8e-6, True), (7.2e-3, False), (300, True)]
    base = nb("MSE 1.43e-03, 256 systems", "error 2.2e-16")
    assert not stale_numbers(base, nb("MSE 1.41e-03, 256 systems", "error 4.4e-16"))  # 2 digits; rounding level
    assert not stale_numbers(base, base)
    for text in ("MSE 1.52e-03, 256 systems", "MSE 1.43e-03, 266 systems", "MSE 1.43e-03"):
        assert stale_numbers(base, nb(text, "error 2.2e-16")), text
    assert stale_numbers(base, nb("MSE 1.43e-03, 256 systems", "error 3.0e-02"))
    assert stale_numbers(nb("ratio <= 0.33"), nb("ratio <= 0.00"))
    assert not stale_numbers(nb("L-BFGS ~8e-06"), nb("L-BFGS ~2e-05"))  # marked ~: within a factor 10
    for text in ("L-BFGS ~2e-04", "L-BFGS 8e-06", "L-BFGS ~-8e-06"):
        assert stale_numbers(nb("L-BFGS ~8e-06"), nb(text)), text
