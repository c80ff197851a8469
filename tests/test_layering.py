"""The lesson core and the application (docs/conventions.md, "Lesson core and application").

The core is what a student reads to learn the model: configuration, data, layers, model, optimisers,
constructions and the checkpoint format, in both twins. It must not import the application (solving user
systems, shipped models, baselines, evaluation, robustness, analysis, reporting, the command lines), at the top
of a file or inside a function; and figures are drawn in one module only, :mod:`reference.report`.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE = ["reference.config", "reference.data", "reference.layers", "reference.model", "reference.optim",
        "reference.constructions", "reference.checkpoint", "reference.spectral", "reference.greedy",
        "tf_impl.config", "tf_impl.data", "tf_impl.layers", "tf_impl.model", "tf_impl.optim", "tf_impl._quiet",
        "tf_impl.spectral"]
APPLICATION = ["reference.solve", "reference.pretrained", "reference.baselines", "reference.evaluation",
               "reference.robustness", "reference.analysis", "reference.report",
               "tf_impl.solve", "tf_impl.train", "tf_impl.evaluate", "tf_impl.distribute"]


def module_file(name: str) -> Path:
    path = ROOT / name.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in the file: ``(line, dotted name)``; ``from a import b`` gives
    both ``a`` and ``a.b`` (``b`` may be a submodule)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def test_every_module_is_core_or_application():
    found = {f"{p.parent.parent.name}.{p.parent.name}" if p.stem == "__init__" else f"{p.parent.name}.{p.stem}"
             for d in ("reference", "tf_impl") for p in [*(ROOT / d).glob("*.py"), *(ROOT / d).glob("*/__init__.py")]
             if p.parent.name != d or p.stem != "__init__"}
    assert found == set(CORE) | set(APPLICATION), "a module missing from CORE or APPLICATION: " \
        f"{sorted(found ^ (set(CORE) | set(APPLICATION)))} (docs/conventions.md lists both)"


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_nothing_from_the_application(module):
    bad = [(line, name) for line, name in imported_modules(module_file(module)) if name in APPLICATION]
    assert not bad, f"{module} imports the application: {bad}"


def test_the_scanner_sees_a_lazy_import(tmp_path):
    """The check above can fail: an import inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from reference.solve import solve\n    return solve\n")
    assert (2, "reference.solve") in imported_modules(f)


def test_figures_are_drawn_in_the_reporting_module_only():
    drawing = [f"{p.parent.name}/{p.name}" for d in ("reference", "tf_impl") for p in sorted((ROOT / d).glob("*.py"))
               if any(name.split(".")[0] == "matplotlib" for _, name in imported_modules(p))]
    assert drawing == ["reference/report.py"], drawing
