"""Which model when: the table of README.md and docs/index.md is what ``results/models/models.json`` renders now,
it has a row for every shipped model, and the script that measures it runs."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

from docs_hooks import model_guide

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_is_rendered_from_the_measured_data():
    for rel in model_guide.FILES:
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert text.count(model_guide.START) == 1 and text.count(model_guide.END) == 1, rel
    assert model_guide.update(ROOT, check=True) == [], (
        "the model table differs from results/models/models.json: run python scripts/make_results_page.py --readme")


def test_every_shipped_model_is_measured_and_has_a_purpose():
    from reference.pretrained import PRETRAINED, load_pretrained

    data = model_guide.load(ROOT)
    assert [m["name"] for m in model_guide.order(data["models"])] == list(model_guide.PURPOSE)
    assert set(model_guide.PURPOSE) == set(PRETRAINED)
    for m in data["models"]:  # the sizes and spectra recorded are those of the shipped checkpoint
        tc = load_pretrained(m["name"])[2]["train_config"]
        assert (m["n_min"], m["n_max"], m["kappa"]) == (tc["n_min"], tc["n_max"], tc["kappa"]), m["name"]
        assert m["n_min"] <= m["n"] <= m["n_max"] and m["cost"]["ratio"] > 0
    block = model_guide.block(ROOT)
    assert all(f"| `{name}` |" in block for name in PRETRAINED)


def test_the_rendering_follows_the_data(tmp_path):
    data = model_guide.load(ROOT)
    changed = copy.deepcopy(data)
    row = next(m for m in changed["models"] if m["name"] == "block-mixed")
    row["accuracy"]["10"] = {"model": 0.5, "cg": 0.25}  # worse than CG: not bold
    (tmp_path / "results" / "models").mkdir(parents=True)
    (tmp_path / "results" / "models" / "models.json").write_text(json.dumps(changed), encoding="utf-8")
    line = next(x for x in model_guide.block(tmp_path).splitlines() if x.startswith("| `block-mixed` |"))
    assert "| 5.0e-1 (2.5e-1) |" in line
    assert "| **" in next(x for x in model_guide.block(ROOT).splitlines() if x.startswith("| `newton-schulz` |"))


def test_the_measuring_script_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("model_guide_script", ROOT / "scripts" / "model_guide.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main(["--models", "block-mixed", "--systems", "4", "--batch", "2", "--repeats", "1",
                          "--out", str(tmp_path / "m.json")])
    (row,) = result["models"]
    assert row["n"] == 9 and (row["n_min"], row["n_max"]) == (2, 9) and row["layers"] == 4
    assert 0 < row["accuracy"]["10"]["model"] < 1 and row["cost"]["model_ms"] > 0
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == json.loads(json.dumps(result))
