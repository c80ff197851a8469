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


# ----------------------------------------------------------------------------------------------
# bad data is refused with one line naming the file and the field


@pytest.fixture
def copy_root(tmp_path):
    """A copy of ``results/`` and ``README.md`` to break."""
    import shutil

    shutil.copytree(ROOT / "results", tmp_path / "results")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def _edit_json(path, change):
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _set(keys, value):
    def change(data):
        for k in keys[:-1]:
            data = data[k]
        data[keys[-1]] = value
    return change


@pytest.mark.parametrize("rel, damage, message", [
    ("eval/eval.json", lambda p: p.write_bytes(p.read_bytes()[:5000]),
     r"results/eval/eval\.json: not valid JSON \(.* at line \d+, column \d+\)"),
    ("robustness/robustness.json", lambda p: p.write_bytes(b""), r"results/robustness/robustness\.json: empty"),
    ("learned/depth.json", lambda p: p.write_bytes(b'{"rows": "\xff"}'),
     r"results/learned/depth\.json: not UTF-8 text \(byte 10: invalid start byte\)"),
    ("learned/depth.json", lambda p: p.write_text("[]"),
     r"results/learned/depth\.json: the file: expected an object with n_systems, rows, got a list"),
    ("learned/depth.json", lambda p: _edit_json(p, _set(["rows"], [])),
     r"results/learned/depth\.json: field rows: expected a non-empty list, got an empty list"),
    ("eval/eval.json", lambda p: _edit_json(p, _set(["records", 3, "mse"], "0.1")),
     r"results/eval/eval\.json: field records\[3\]\.mse: expected a finite number, got a str"),
    ("depth_family.json", lambda p: _edit_json(p, _set(["rows", 0, "model"], float("nan"))),
     r"results/depth_family\.json: field rows\[0\]\.model: expected a finite number, got nan"),
    ("robustness/robustness.json", lambda p: _edit_json(p, _set(["records", 0, "rel"], None)),
     r"results/robustness/robustness\.json: field records\[0\]\.rel: expected a finite number, got null"),
    ("learned/learned_curves.json", lambda p: _edit_json(p, _set(["curves", "learned-L2", "train_time_s"], [1])),
     r"results/learned/learned_curves\.json: field curves\.learned-L2\.train_time_s: expected a finite number, "
     r"got a list"),
])
def test_bad_results_data_is_refused_with_one_line(copy_root, capsys, monkeypatch, rel, damage, message):
    """Truncated, empty, non-UTF-8, mistyped or non-finite data under results/: the pages, the site's hook and the
    script refuse it with one line naming the file and the field (no page drops a section or prints "nan")."""
    import importlib
    import types

    damage(copy_root / "results" / rel)
    with pytest.raises(results_pages.ResultsError, match=f"^{message}$"):
        results_pages.render(copy_root)
    from mkdocs.exceptions import PluginError

    monkeypatch.syspath_prepend(str(ROOT / "docs_hooks"))  # as MkDocs loads a hook: its folder on sys.path
    spec = importlib.util.spec_from_file_location("results_hook", ROOT / "docs_hooks" / "results.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)

    with pytest.raises(PluginError, match=f"^results pages: {message}$"):
        hook.on_files([], types.SimpleNamespace(config_file_path=str(copy_root / "mkdocs.yml")))
    spec = importlib.util.spec_from_file_location("make_results_page", ROOT / "scripts" / "make_results_page.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.ROOT = copy_root
    assert script.main(["--out", str(copy_root / "preview")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(f"error: {message}\n", err), err


def test_a_damaged_shipped_checkpoint_is_an_error_not_a_missing_model(copy_root, tmp_path, monkeypatch):
    """A truncated shipped checkpoint used to read as "not shipped", and the pages then said every model was trained
    at kappa 10; it is an error naming the file. A checkpoint that is absent still only drops its rows."""
    import shutil

    import reference.pretrained as registry

    folder = tmp_path / "pretrained"
    shutil.copytree(registry.PRETRAINED_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", folder)
    assert "learned-L8-k100" in results_pages.Results(copy_root).shipped
    path = folder / "learned-L8-k100.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(results_pages.ResultsError, match=r"^reference/pretrained/learned-L8-k100\.npz: checkpoint "
                                                          r"'learned-L8-k100\.npz' is not a readable \.npz file"):
        _ = results_pages.Results(copy_root).shipped
    path.unlink()
    assert "learned-L8-k100" not in results_pages.Results(copy_root).shipped
