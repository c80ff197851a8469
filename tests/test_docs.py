"""The documentation site: ``mkdocs build --strict`` succeeds and has its key pages.

Strict mode turns every MkDocs warning into an error: a broken link, a page missing from the nav
(``validation.omitted_files``), a docstring mkdocstrings cannot parse, a failing ``--help``
pasted into the CLI page. The Python snippets of the quickstart page are run too.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
pytestmark = pytest.mark.xdist_group("docs-site")  # one worker builds the site (module fixture) and reads it

API_PAGES = sorted(p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs" / "api").rglob("*.md")
                   if p.name != "index.md")
# Characters of a code line that fit the content column at 1280 px: measured in headless Chromium on the
# built site, the column is 733 px, a code line 13.6 px DejaVu Sans Mono (8.19 px a character) with 16 px
# of padding each side, so 85 characters fit; one less leaves room for a slightly wider monospace font.
CODE_COLUMNS = 84
CODE_BLOCK = re.compile(r'<div class="([^"]*\bhighlight\b[^"]*)"><pre>(?:<span></span>)?<code>(.*?)</code></pre>', re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout[-5000:])
        print(proc.stderr[-20000:], file=sys.stderr)
    assert proc.returncode == 0, "mkdocs build --strict failed; its log is printed above"
    return out


def test_build_has_key_pages(site):
    for page in ["index.html", "quickstart/index.html", "concepts/index.html", "conventions/index.html",
                 "cli/index.html", "api/index.html", "assets/token_matrix.png", "search/search_index.json",
                 "results/index.html", "results-tables/index.html", "results-tried/index.html",
                 "assets/results/learned_depth.png", "assets/results/eval.json"]:
        assert (site / page).is_file(), page


def test_every_tutorial_is_a_page_with_its_outputs(site):
    assert NOTEBOOKS
    for nb in NOTEBOOKS:
        page = site / "tutorials" / nb.stem / "index.html"
        assert page.is_file(), f"no page for {nb.name}: add it to the nav of mkdocs.yml"
        html = page.read_text(encoding="utf-8")
        assert "data:image/png;base64" in html, f"{nb.name}: no figure rendered (committed without outputs?)"
        assert "cdnjs.cloudflare.com/ajax/libs/mathjax/2" not in html, "nbconvert's MathJax 2 should be removed"
        assert f'href="{nb.name}" download' in html, "no download link"
        assert (site / "tutorials" / nb.stem / nb.name).is_file(), "the .ipynb download is missing"
        # links between notebooks point at pages, not at .ipynb files that are not there
        for target in re.findall(r'href="([\w.-]+\.ipynb)"', html):
            assert target == nb.name, f"{nb.name}: link to {target} was not turned into a page link"


def test_home_page_roadmap_lists_every_tutorial_in_order():
    """The home page's table "what you will learn" has one row per notebook, in the order of their numbers."""
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    roadmap = text.split("## Tutorials: what you will learn", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"^\| \d+ \| \[[^]]+\]\(tutorials/([\w.-]+\.ipynb)\)", roadmap, flags=re.M)
    assert linked == [nb.name for nb in NOTEBOOKS], f"roadmap rows {linked}, notebooks {[nb.name for nb in NOTEBOOKS]}"


def test_every_api_page_documents_its_module(site):
    assert API_PAGES
    for rel in API_PAGES:
        module = ".".join(rel.parts[1:])  # api/reference/model -> reference.model
        html = (site / rel / "index.html").read_text(encoding="utf-8")
        assert f'id="{module}"' in html, f"{rel}: no heading for {module}"
    model = (site / "api" / "reference" / "model" / "index.html").read_text(encoding="utf-8")
    for name in ["forward", "loss_and_grads", "init_params"]:
        assert f'id="reference.model.{name}"' in model


def test_cli_page_has_the_live_help(site):
    html = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "cli-help:" not in html, "a cli-help marker was not replaced"
    assert "python -m tf_impl.train --help" in html and "--preset" in html
    assert "python -m tf_impl.evaluate --help" in html and "--n-systems" in html


def test_quickstart_snippets_run(tmp_path, monkeypatch):
    """Every ```python block of quickstart.md, in order, in one namespace, in a scratch folder."""
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "quickstart"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"quickstart.md block {i + 1}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "demo.npz").is_file() and list(tmp_path.iterdir()) == [tmp_path / "runs"], \
        "the quickstart writes runs/demo.npz and nothing else"


def code_lines(block_html: str) -> list[str]:
    """The text of a highlighted code block, line by line, as the reader sees it."""
    return html.unescape(re.sub(r"<[^>]+>", "", block_html)).splitlines()


def test_code_blocks_fit_the_column_at_1280px(site):
    """No code block of the hand-written pages (and the pasted ``--help``) is wider than its column on a
    1280 px screen, where the end of a longer line hides behind a scroll bar. Blocks marked ``{.wrap}``
    wrap their lines instead (a listing of a whole script). Not covered: the API pages, whose code is
    the source itself (120 columns), and the tutorials, whose code and outputs wrap."""
    pages = [p for p in site.rglob("index.html") if p.relative_to(site).parts[0] not in ("api", "tutorials")]
    assert len(pages) >= 8
    too_wide, checked = [], 0
    for page in pages:
        for classes, block in CODE_BLOCK.findall(page.read_text(encoding="utf-8")):
            checked += 1
            if "wrap" in classes.split():
                continue
            too_wide += [f"{page.relative_to(site).parent}: {len(line)} chars: {line}" for line in code_lines(block)
                         if len(line) > CODE_COLUMNS]
    assert checked >= 20, checked
    assert not too_wide, "\n".join(too_wide)


def test_no_page_loads_a_script_from_the_network(site):
    """The site works offline: MathJax is vendored, no page pulls a script from a CDN."""
    assert (site / "javascripts" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert (site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        external = re.findall(r'<script[^>]+src="(https?://[^"]+)"', html)
        assert not external, f"{page.relative_to(site)} loads {external}"


ANCHOR = re.compile(r'\b(?:id|name)="([^"]+)"')
LINK_WITH_FRAGMENT = re.compile(r'<a\b[^>]*\bhref="([^"]*#[^"]+)"')


def missing_anchors(site: Path) -> list[str]:
    """Every link of the built site to a ``#fragment`` of one of its own pages that has no element with that id
    (or name), and every such link to a page that is not there. MkDocs checks the anchors of Markdown links only,
    and only warns; the contents of a tutorial page, the API pages and the hooks' HTML are checked here."""
    pages = {p: {html.unescape(a) for a in ANCHOR.findall(p.read_text(encoding="utf-8"))} for p in site.rglob("*.html")}
    problems = []
    for page in pages:
        url = "/" + page.relative_to(site).as_posix()
        for href in map(html.unescape, LINK_WITH_FRAGMENT.findall(page.read_text(encoding="utf-8"))):
            link = urlparse(href)
            if link.scheme or link.netloc:
                continue  # another site
            path = unquote(urljoin(url, link.path) if link.path else url)
            target = site / path.lstrip("/")
            if path.endswith("/") or target.is_dir():
                target = target / "index.html"
            if target not in pages:
                problems.append(f"{url}: {href}: no page {target.relative_to(site)}")
            elif unquote(link.fragment) not in pages[target]:
                problems.append(f"{url}: {href}: no such anchor on {target.relative_to(site)}")
    return problems


def test_no_link_points_at_a_missing_anchor(site):
    problems = missing_anchors(site)
    assert not problems, "\n".join(sorted(set(problems)))


def test_the_anchor_check_finds_dead_anchors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text('<h2 id="x">X</h2><a href="#x">ok</a><a href="a/#y">ok</a>'
                                         '<a href="https://example.org/#z">another site</a>', encoding="utf-8")
    (tmp_path / "a" / "index.html").write_text('<p id="y"></p><a href="../#x">ok</a>', encoding="utf-8")
    assert missing_anchors(tmp_path) == []
    (tmp_path / "a" / "index.html").write_text('<p id="y"></p><a href="../#3-what-makes-of-it">dead</a>'
                                               '<a href="../b/#y">no page</a>', encoding="utf-8")
    assert len(missing_anchors(tmp_path)) == 2
