"""MkDocs hook: paste the live ``--help`` of a command-line module into a page at build time.

A line ``<!-- cli-help: tf_impl.train -->`` in a Markdown page becomes a ``text`` code block with
the output of ``python -m tf_impl.train --help`` (run from the repository root, 80 columns), so
the CLI reference can never drift from the code. A module whose ``--help`` fails stops the build.
Lines that argparse does not wrap (pre-formatted description and preset lists) are wrapped at
``WIDTH`` characters, the widest code line that fits the page's column at 1280 px, each continuation
indented under its line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

_MARKER = re.compile(r"^<!--\s*cli-help:\s*([\w.]+)\s*-->\s*$", re.M)
_cache: dict[str, str] = {}
WIDTH = 84  # characters of a code line that fit the content column at 1280 px (tests/test_docs.py)


def wrap(text: str, width: int = WIDTH) -> str:
    """Wrap every line of ``text`` longer than ``width`` after a space or a comma (a list of choices
    such as ``{small,full-n9,...}`` has no spaces); continuations are indented 4 more spaces."""
    out = []
    for line in text.splitlines():
        indent = " " * (len(line) - len(line.lstrip()))
        current = ""
        for piece in re.findall(r"[^ ,]*[ ,]*", line.strip()):
            if current and len(current) + len(piece.rstrip()) > width:
                out.append(current.rstrip())
                current = indent + "    "
            current = (current or indent) + piece
        out.append(current.rstrip())
    return "\n".join(out)


def _help(module: str, root: Path) -> str:
    if module not in _cache:
        env = dict(os.environ, COLUMNS="80", TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise PluginError(f"cli-help: `python -m {module} --help` failed ({proc.returncode}):\n{proc.stderr}")
        _cache[module] = wrap(proc.stdout.rstrip())
    return _cache[module]


def on_pre_build(config):
    _cache.clear()  # mkdocs serve: fresh help on every rebuild


def on_page_markdown(markdown, page, config, files):
    root = Path(config.config_file_path).resolve().parent

    def paste(m):
        return f"```text\n$ python -m {m.group(1)} --help\n{_help(m.group(1), root)}\n```"

    return _MARKER.sub(paste, markdown)
