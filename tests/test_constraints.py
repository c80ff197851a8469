"""constraints.txt, the versions CI installs: one pin a package, and a pin for every requirement of
pyproject.toml (dependencies and the test and docs extras) that satisfies it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def freeze_script():
    spec = importlib.util.spec_from_file_location("freeze_constraints", ROOT / "scripts" / "freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"constraints.txt: not a pin name==version: {line!r}"
        name = freeze_script().canonical(m.group(1))
        assert name not in out, f"constraints.txt pins {name} twice"
        out[name] = m.group(2)
    return out


def test_every_requirement_is_pinned_to_a_version_it_allows():
    script, pinned = freeze_script(), pins()
    requirements = script.project_requirements()
    assert len(requirements) >= 10
    for req in requirements:
        name = script.canonical(req.name)
        assert name in pinned, f"{req} has no pin in constraints.txt: run python scripts/freeze_constraints.py"
        assert req.specifier.contains(Version(pinned[name]), prereleases=True), f"{name}=={pinned[name]} vs {req}"
    assert {"numpy", "tensorflow", "pytest", "nbclient", "mkdocs", "jinja2"} <= set(pinned)  # jinja2: transitive


def test_a_requirement_the_pins_violate_is_caught():
    assert not Requirement("numpy>=99").specifier.contains(Version(pins()["numpy"]))
