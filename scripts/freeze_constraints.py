"""Write ``constraints.txt``: the installed version of every package the project needs, directly or through
another package, for its ``test`` and ``docs`` extras (the packages of ``pyproject.toml`` and everything they
require, as installed now), one ``name==version`` a line.

CI installs with it (``.ci/run``: ``pip install -c constraints.txt -e ".[test]"``), so that the suite runs on the
versions it last passed with. Update it deliberately: install the new versions, run the whole suite, then

    python scripts/freeze_constraints.py          # rewrite constraints.txt from this environment
    python scripts/freeze_constraints.py --check  # exit 1 if constraints.txt differs from this environment
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "docs")
HEADER = ("# The versions the test suite passed with (python -m pytest -n 2), for CI and reproducible installs:\n"
          '#   pip install -c constraints.txt -e ".[test]"\n'
          "# Written by python scripts/freeze_constraints.py from the environment that ran the suite.\n")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(root: Path = ROOT) -> list[Requirement]:
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """``{name: installed version}`` of the requirements and, recursively, of what they require (with the extras
    they name; environment markers evaluated for this interpreter). A requirement not installed is an error."""
    found: dict[str, str] = {}
    done: set[tuple[str, tuple[str, ...]]] = set()
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req = todo.pop()
        key = (canonical(req.name), tuple(sorted(req.extras)))
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is required ({req}) but not installed: install the project's extras "
                             f"{', '.join(EXTRAS)} first") from None
        found[key[0]] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": x}) for x in ("", *req.extras)):
                todo.append(sub)
    return found


def render(root: Path = ROOT) -> str:
    own = canonical(tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"])
    pins = {k: v for k, v in closure(project_requirements(root)).items() if k != own}
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if constraints.txt differs from this environment")
    args = p.parse_args(argv)
    path, text = ROOT / "constraints.txt", render()
    if args.check:
        same = path.exists() and path.read_text(encoding="utf-8") == text
        print("constraints.txt " + ("matches this environment" if same else "differs from this environment"))
        return 0 if same else 1
    path.write_text(text, encoding="utf-8")
    print(f"constraints.txt: {text.count(chr(10)) - HEADER.count(chr(10))} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
