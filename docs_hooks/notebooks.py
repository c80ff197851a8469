"""MkDocs hook: publish the tutorial notebooks, which live in ``tutorials/`` outside ``docs_dir``.

* ``on_files`` adds every ``tutorials/*.ipynb`` to the site as the page ``tutorials/<name>.ipynb``
  (before mkdocs-jupyter, which then renders it), so ``mkdocs.yml``'s nav and Markdown links can
  name ``tutorials/01_tokens.ipynb`` as if the file were under ``docs/``; nothing is copied or linked.
* ``on_page_content`` fixes two things in a rendered notebook: links between notebooks
  (``02_one_layer.ipynb``, right in Jupyter) are pointed at the other notebook's page, and the
  MathJax 2 that nbconvert embeds is dropped, so that the site's one MathJax 3
  (``docs/javascripts/mathjax.js``) typesets notebooks and Markdown pages alike. It also ends
  the page with a link to download the ``.ipynb``.
* ``on_serve`` makes ``mkdocs serve`` reload when a notebook changes.

Hooks are plugins loaded from a file (``hooks:`` in ``mkdocs.yml``); this one sits outside
``docs/`` so MkDocs does not publish it as a static file.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

FOLDER = "tutorials"  # the notebooks' folder, relative to mkdocs.yml, and their place in the site

_MATHJAX2 = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)
_NB_LINK = re.compile(r'href="(?:\./)?([\w.-]+\.ipynb)(#[^"]*)?"')


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


@event_priority(100)  # run before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    root = _root(config)
    for nb in sorted((root / FOLDER).glob("*.ipynb")):
        # a real source file whose source root is the repository: src_uri "tutorials/<name>.ipynb".
        # (File.generated would not do: mkdocs-jupyter's wrapper loses its abs_src_path.)
        files.append(File(f"{FOLDER}/{nb.name}", src_dir=str(root), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    html = _MATHJAX2.sub("", html)

    def relink(m):
        target = files.get_file_from_path(f"{FOLDER}/{m.group(1)}")
        if target is None:
            return m.group(0)
        return f'href="{target.url_relative_to(page.file)}{m.group(2) or ""}"'

    html = _NB_LINK.sub(relink, html)
    name = Path(page.file.src_uri).name  # mkdocs-jupyter (include_source) copies it next to the page
    return html + (f'<p class="nb-source">This page is the notebook <a href="{name}" download><code>'
                   f"{FOLDER}/{name}</code></a>, rendered with its committed outputs; run it with "
                   f"<code>jupyter lab {FOLDER}/{name}</code>.</p>")


def on_serve(server, config, builder):
    server.watch(str(_root(config) / FOLDER))
    return server
