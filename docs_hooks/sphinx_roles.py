"""MkDocs hook: turn the Sphinx roles of the docstrings into links on the API pages.

The docstrings use reStructuredText roles (:func:`sample_systems`, :mod:`reference.layers`, ...),
which mkdocstrings renders literally, as ``:func:<code>sample_systems</code>``. After every page
is rendered (and before mkdocs-autorefs resolves cross-references), this hook replaces each role
by an optional autorefs reference to the object it names: a dotted name as is, a bare name
looked up first in the page's own module, then among the documented objects of the same package
whose name ends with it, then among all of them (if exactly one matches). Names it cannot resolve stay plain ``<code>``.
"""

from __future__ import annotations

import re

from mkdocs.plugins import event_priority

_ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|obj|exc|const):<code>(~?)([\w.]+)</code>")
_ANCHOR = re.compile(r'<h\d id="([\w.]+)" class="doc doc-heading')


def _resolve(name: str, module: str, known: set[str], by_last: dict[str, list[str]]) -> str | None:
    """The documented identifier ``name`` refers to from a page documenting ``module``, if any."""
    for cand in (name, f"{module}.{name}" if module else None):
        if cand and cand in known:
            return cand
    hits = [h for h in by_last.get(name.rsplit(".", 1)[-1], []) if h.endswith("." + name)]
    package = module.split(".", 1)[0] + "."
    for group in ([h for h in hits if h.startswith(package)], hits):  # the same package first
        if len(group) == 1:
            return group[0]
    return None


def _link(m: re.Match, module: str, known: set[str], by_last: dict[str, list[str]]) -> str:
    tilde, name = m.group(1), m.group(2)
    shown = f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"  # Sphinx: ~a.b shows b
    ident = _resolve(name, module, known, by_last)
    return shown if ident is None else f'<autoref identifier="{ident}" optional>{shown}</autoref>'


@event_priority(0)  # mkdocs-autorefs resolves references in its own on_env, at priority -50
def on_env(env, config, files):
    pages = [f.page for f in files.documentation_pages() if f.page is not None and f.page.content]
    known: set[str] = set()
    for page in pages:
        known.update(_ANCHOR.findall(page.content))
    by_last: dict[str, list[str]] = {}
    for ident in known:
        by_last.setdefault(ident.rsplit(".", 1)[-1], []).append(ident)
    for page in pages:
        if ":<code>" in page.content:
            anchors = _ANCHOR.findall(page.content)
            module = anchors[0] if anchors else ""
            page.content = _ROLE.sub(lambda m, mod=module: _link(m, mod, known, by_last), page.content)
    return env
