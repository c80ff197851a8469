"""Which model when: the table of the shipped models in the README and on the home page, rendered from the
measured data of ``results/models/models.json`` (written by ``python scripts/model_guide.py``).

Nothing here holds a number: the sizes and condition numbers come from the shipped checkpoints' training
configurations (recorded in the JSON), the errors and costs from the measurement. What each model is for is
written here (:data:`PURPOSE`), one line a model. The block sits between :data:`START` and :data:`END` in
``README.md`` and ``docs/index.md``, committed, and a test checks that it is what the data renders now;
``python scripts/make_results_page.py --readme`` rewrites both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("results") / "models" / "models.json"
FILES = ("README.md", "docs/index.md")
START = "<!-- models: generated from results/models/models.json by `python scripts/make_results_page.py --readme` -->"
END = "<!-- /models -->"
PURPOSE = {
    "newton-schulz": "**the default** (`model=\"auto\"`): any SPD system, any size; hand-set weights",
    "learned-general-L12": "learned layer by layer (least squares) for spectra up to kappa 1e4; any size",
    "learned-general-L10": "the general family with fewer layers",
    "learned-general-L8": "the general family with fewer layers",
    "learned-general-L6": "the general family with fewer layers",
    "broad": "trained on every family of systems (spectra, right-hand sides) of the robustness study",
    "learned-L8": "trained from random weights (L-BFGS): what training finds with 8 layers",
    "learned-L8-k100": "the same on a range of spectra",
    "learned-L6": "the learned family with fewer layers (the depth study)",
    "learned-L4": "the learned family with fewer layers (the depth study)",
    "learned-L2": "the learned family with fewer layers (the depth study)",
    "block-ns-8": "the Newton–Schulz construction for kappa 10, trained further in float32",
    "full-n9": "the paper: full parametrization, one size",
    "block-n9": "the paper: block model, one size",
    "block-mixed": "the paper: block model on a range of sizes",
    "block-finetune": "the paper: `block-mixed` fine-tuned on larger sizes",
    "block-mixed-20": "the paper's recipe on sizes 2 to 20 (the depth study)",
}


def e(x: float) -> str:
    """``7.4e-04`` written ``7.4e-4``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), f"{x:.1e}")


def load(root: Path = ROOT) -> dict | None:
    path = Path(root) / DATA
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def sizes(m: dict) -> str:
    if m["every_size"]:  # trained (or built) on some sizes, as accurate on all (reference.pretrained.valid_sizes)
        return "any"
    return f"{m['n_min']}-{m['n_max']}" if m["n_min"] != m["n_max"] else f"{m['n_min']}"


def kappas(m: dict) -> str:
    if m["hand_set"]:
        return f"<= {m['kappa_max']:g}"
    return f"{m['kappa']:g}" if m["kappa_max"] == m["kappa"] else f"{m['kappa']:g}-{m['kappa_max']:g}"


def accuracy_cell(m: dict, kappa: float) -> str:
    """The model's mean relative error, bold where it is below CG-L's (given in brackets)."""
    a = m["accuracy"][f"{kappa:g}"]
    model = f"**{e(a['model'])}**" if a["model"] < a["cg"] else e(a["model"])
    return f"{model} ({e(a['cg'])})"


def order(models: list[dict]) -> list[dict]:
    """The table's rows in the order of :data:`PURPOSE` (the default first), then any other model."""
    rank = {name: i for i, name in enumerate(PURPOSE)}
    return sorted(models, key=lambda m: rank.get(m["name"], len(rank)))


def block(root: Path = ROOT) -> str:
    """The Markdown between :data:`START` and :data:`END`."""
    data = load(root)
    if data is None:
        raise ValueError(f"no {DATA}: run python scripts/model_guide.py")
    args, rows = data["args"], order(data["models"])
    k1, k2 = args["kappas"]
    head = f"| model | for | L | sizes N | kappa | N | error, kappa {k1:g} (CG-L) | error, kappa {k2:g} (CG-L) |"
    out = [START, head + " pass / Cholesky |", "|---|---|---:|---|---|---:|---|---|---:|"]
    for m in rows:
        out.append(f"| `{m['name']}` | {PURPOSE.get(m['name'], '')} | {m['layers']} | {sizes(m)} | {kappas(m)} | "
                   f"{m['n']} | {accuracy_cell(m, k1)} | {accuracy_cell(m, k2)} | {m['cost']['ratio']:.0f}x |")
    out += ["", f"Sizes and kappa: what each model was trained on (`newton-schulz`: built for; any: as accurate at "
            "every size). Error: mean relative "
            f"error of one pass of `solve` on {args['systems']} fresh systems of the paper's law (uniform spectrum, "
            "b = A x) of size N, bold where below conjugate gradient with as many iterations as the model has layers "
            "(CG-L, in brackets); kappa above a model's range is off its training distribution. Pass / Cholesky: time "
            f"of one bare forward pass (TensorFlow, float32, XLA) over that of a Cholesky solve, batch of "
            f"{args['batch']}, on {data['machine']['cpus']} CPU cores shared with other work (load average "
            f"{data['machine']['load_avg'][0]:.1f}: the times are noisy); a call of `solve` runs the model twice and "
            "adds an eigenvalue estimate. Measured by `python scripts/model_guide.py` (`results/models/models.json`).",
            END]
    return "\n".join(out)


def update(root: Path = ROOT, check: bool = False) -> list[str]:
    """Rewrite the block in every file of :data:`FILES`; with ``check``, only list the files where it is stale."""
    new_block, stale = block(root), []
    for rel in FILES:
        path = Path(root) / rel
        text = path.read_text(encoding="utf-8")
        start, end = text.index(START), text.index(END) + len(END)
        new = text[:start] + new_block + text[end:]
        if new != text:
            stale.append(rel)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale
