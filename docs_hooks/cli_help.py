"""MkDocs hook: paste the live ``--help`` of a command-line module into a page at build time.

A line ``<!-- cli-help: tf_impl.train -->`` in a Markdown page becomes a ``text`` code block with
the output of ``python -m tf_impl.train --help`` (run from the repository root, 80 columns), so
the CLI reference can never drift from the code. A module whose ``--help`` fails stops the build.
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


def _help(module: str, root: Path) -> str:
    if module not in _cache:
        env = dict(os.environ, COLUMNS="80", TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise PluginError(f"cli-help: `python -m {module} --help` failed ({proc.returncode}):\n{proc.stderr}")
        _cache[module] = proc.stdout.rstrip()
    return _cache[module]


def on_pre_build(config):
    _cache.clear()  # mkdocs serve: fresh help on every rebuild


def on_page_markdown(markdown, page, config, files):
    root = Path(config.config_file_path).resolve().parent

    def paste(m):
        return f"```text\n$ python -m {m.group(1)} --help\n{_help(m.group(1), root)}\n```"

    return _MARKER.sub(paste, markdown)
