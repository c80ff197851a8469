"""The tutorial notebooks: each one runs top to bottom, and each committed one was run that way.

Every ``tutorials/*.ipynb`` is picked up (new notebooks included) and is its own test. The
notebooks assert what they claim, so a change in the reference that breaks a tutorial fails
here. Refresh the committed outputs with ``python scripts/run_tutorials.py``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


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
