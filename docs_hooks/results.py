"""MkDocs hook: the results pages, rendered from ``results/`` at build time.

``on_files`` adds ``results.md``, ``results-tables.md`` and ``results-tried.md`` as generated pages (their
Markdown comes from :mod:`results_pages`, next to this file) and publishes the figures and JSON files they show
or link straight from ``results/`` under ``assets/results/``: nothing generated is committed, so nothing can
drift from the measured data. ``on_serve`` makes ``mkdocs serve`` rebuild when ``results/`` changes.
"""

from __future__ import annotations

from pathlib import Path

import results_pages  # docs_hooks/results_pages.py: MkDocs puts a hook's folder on sys.path while loading it
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files, config):
    root = _root(config)
    try:
        pages = results_pages.render(root)
    except results_pages.ResultsError as e:  # bad data: MkDocs stops with this one line, not a traceback
        raise PluginError(f"results pages: {e}") from None
    for uri, markdown in pages.items():
        files.append(File.generated(config, uri, content=markdown))
    for uri, path in results_pages.assets(root).items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_serve(server, config, builder):
    server.watch(str(_root(config) / "results"))
    return server
