"""The results pipeline: the pages are rendered from ``results/`` (never committed), fit their word budget and show
only figures that exist; the README's results section, which is committed, is what ``results/`` renders today;
every training time quoted comes from the measured runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs_hooks import results_pages

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return results_pages.render(ROOT)


def test_readme_results_section_is_rendered_from_results():
    """README.md's results section is the one ``results/`` renders now (``--readme`` rewrites it)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(results_pages.README_START) == 1 and readme.count(results_pages.README_END) == 1
    assert results_pages.update_readme(ROOT, check=True), (
        "README.md's results section differs from results/: run python scripts/make_results_page.py --readme")


def test_pages_are_generated_not_committed():
    for name in results_pages.PAGES:
        assert not (ROOT / "docs" / name).exists(), f"docs/{name} is rendered at build time: delete the copy"
    assert not (ROOT / "docs" / "assets" / "results").exists(), "the figures are published from results/"


def test_word_budget(pages):
    counts = {name: results_pages.words(text) for name, text in pages.items()}
    assert set(counts) == set(results_pages.PAGES)
    assert sum(counts.values()) <= results_pages.WORD_BUDGET, counts


def test_every_figure_and_file_a_page_links_exists(pages):
    published = results_pages.assets(ROOT)
    expected = {f"assets/results/{name}" for name in results_pages.ASSETS}
    assert set(published) == expected, f"missing in results/: {sorted(expected - set(published))}"
    for name, text in pages.items():
        for target in re.findall(r"\]\((assets/results/[^)#]+)\)", text):
            assert target in published, f"{name} links {target}, which results/ does not have"


def test_summary_tells_the_five_stories(pages):
    summary = pages["results.md"]
    for heading in ("## The paper's claims, checked", "## Depth: does a deeper model keep getting more accurate?",
                    "## One learned model for every condition number", "## Where each model beats CG",
                    "## What `solve` does"):
        assert heading in summary, heading  # concepts.md links the depth section's anchor
    assert summary.count("![") == 4 and "**holds here**" in summary
    assert "no better than CG" in summary  # the learned family at kappa 100, outside its training distribution
    # and the 8-layer one trained on that spectrum, beside it
    assert re.search(r"trained on kappa in \[10, 100\], `learned-L8-k100` reaches \S+ at kappa 100", summary)
    assert summary.count("??? note") == 0 and pages["results-tables.md"].count("??? note") >= 10


def test_lab_notebook_has_dated_entries_and_renders_the_recipe(pages):
    tried = pages["results-tried.md"]
    dates = re.findall(r"^## .+ \((\d{4}-\d{2}-\d{2})\)$", tried, flags=re.M)
    assert len(dates) >= 5 and dates == sorted(dates, reverse=True), dates  # newest first
    recipe = (ROOT / "results" / "learned" / "recipe.md").read_text(encoding="utf-8").strip()
    assert recipe in tried, "results/learned/recipe.md is rendered as it is"
    assert "results-curves:" not in tried, "a curves marker of results/tried.md names no curves file"


def test_training_times_come_from_the_measured_runs(pages):
    """Every duration the pages quote is a measured one; README.md and the scripts quote none of their own."""
    times = results_pages.run_times(results_pages.Results(ROOT))
    assert times and all(s > 0 for _, s in times)
    total = results_pages.total_training(results_pages.Results(ROOT))
    assert total in pages["results.md"] and total in pages["results-tables.md"]
    estimate = re.compile(r"~ ?\d[\d.]* ?(h|hours?|min|minutes)\b|\babout \d[\d.]* ?(h|hours?|min|minutes)\b")
    files = [ROOT / "README.md", *sorted((ROOT / "scripts").glob("*.sh")), *sorted((ROOT / "scripts").glob("*.py"))]
    stale = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files if f.name != "learn_probe.py"
             for m in estimate.finditer(f.read_text(encoding="utf-8"))]
    assert not stale, stale
