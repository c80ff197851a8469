"""Write the results pages from the measured numbers (``results/eval/eval.json``,
``results/robustness.json``, ``results/depth_study.json``).

    python scripts/make_results_page.py

Pages: ``docs/results.md`` (the shipped models, the paper's claims, the verdict against CG, solve off
the training distribution, in brief), ``docs/results-tables.md`` (every ratio and number, the
plots), ``docs/results-robustness.md`` (the robustness tables) and ``docs/results-tried.md``
(what we tried, the depth studies).

Each claim of the paper is checked by a rule written below, against the numbers of the JSON files,
so the verdicts on the page are computed, never typed by hand. The plots are copied to
``docs/assets/results/``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "results" / "eval"
DEPTH = ROOT / "results" / "depth_study.json"
ASSETS = ROOT / "docs" / "assets" / "results"
PAGE = ROOT / "docs" / "results.md"
TABLES = ROOT / "docs" / "results-tables.md"
ROBUST_PAGE = ROOT / "docs" / "results-robustness.md"
TRIED_PAGE = ROOT / "docs" / "results-tried.md"
ROBUST = ROOT / "results" / "robustness"
DEPTH_FAMILY = ROOT / "results" / "depth_family"
CLAIM3 = ROOT / "results" / "claim3" / "curves"  # scripts/train_claim3.sh, then scripts/training_curves.py
DEPTH_CURVES = ROOT / "results" / "depth_family_curves"
DEPTH_NS_CURVES = ROOT / "results" / "depth_ns_curves"
LEARNED = ROOT / "results" / "learned"  # the learned family: depth.json/.md/.png, learned_curves.json/.png, recipe.md


def final_mse(run: dict, n: int):
    """The model's MSE at size ``n`` in a run's final table (``training_curves.py`` JSON), or None."""
    for r in run.get("final_evaluation") or []:
        if r["n"] == n:
            return r["mse_model"]
    return None


def late_improvement(run: dict) -> float:
    """How much the evaluation loss fell over the last quarter of the run (a ratio, 1 = flat): the median of
    the evaluations in the third quarter over the median of those in the last one (medians: one noisy
    evaluation does not decide it)."""
    ev = run["eval_loss"]
    last = ev[-1][0]
    third = [v for s, v in ev if 0.5 * last < s <= 0.75 * last]
    fourth = [v for s, v in ev if s > 0.75 * last]
    if not third:  # too few evaluations: the last one before the final quarter
        third = [v for s, v in ev if s <= 0.75 * last][-1:]
    return float(np.median(third) / np.median(fourth)) if third and fourth else float("nan")


def trend(run: dict) -> str:
    """Words for :func:`late_improvement`: still falling (more than 1.2x) or flat within its noise."""
    r = late_improvement(run)
    return f"still fell {r:.1f}x" if r > 1.2 else f"was flat within its noise ({r:.1f}x)"


def claim3_lines() -> list[str]:
    """Claim 3 at longer budgets: one paragraph per ``results/claim3/curves*.json`` (``scripts/train_claim3.sh``
    then ``scripts/training_curves.py``), shortest budget first. Indented by four spaces: Markdown keeps
    them inside item 3 of the numbered list, so that claim 4 is numbered 4."""
    out = []
    paths = sorted(CLAIM3.parent.glob("curves*.json"),
                   key=lambda p: json.loads(p.read_text())["curves"]["full-n9"]["steps"])
    for path in paths:
        runs = json.loads(path.read_text())["curves"]
        full, block = runs["full-n9"], runs["block-n9"]
        f9, b9 = final_mse(full, 9), final_mse(block, 9)
        shutil.copy(path.with_suffix(".png"), ASSETS / f"claim3_{path.stem}.png")
        times = (f"{full['train_time_s'] / 60:.0f} and {block['train_time_s'] / 60:.0f} minutes (one thread each, "
                 "two runs sharing the 2 cores)")
        out += [f"    At {full['steps'] / 8000:g} times the presets' budget ({full['steps']} steps of "
                f"{full['train_config']['batch_size']} systems each, `bash scripts/train_claim3.sh {full['steps']} "
                f"...`): `full-n9` {f9:.2e}, `block-n9` {b9:.2e} at N = 9 (1000 fresh systems): the claim "
                f"{verdict(f9 < b9)} at this budget. Over the last quarter of the cosine schedule the evaluation "
                f"loss of `full-n9` {trend(full)}, that of `block-n9` {trend(block)}; training took {times}.", "",
                f"    ![claim 3: loss curves, {full['steps']} steps](assets/results/claim3_{path.stem}.png)", ""]
    return out


FAMILY_TEXT = {
    "depth": "trained from random weights (L = 2, 4; 4 heads, 1/N attention), 6 and 8 layers grown from the 4-layer "
             "one, 4000 steps each",
    "depth-ns": "trained from the Newton-Schulz construction (`--init newton-schulz`, attention norm 'none', "
                "4 heads): L = 2, 4 for 1500 steps, L = 6, 8 (at float32's floor from the start) 500 steps at lr 1e-7",
    "newton-schulz": "the construction itself, untrained (`reference.constructions.newton_schulz_params`, "
                     "kappa 10), in float64",
    "learned": "the shipped `learned-L2` ... `learned-L8`: trained from random weights with the right-hand side read "
               "by the last layer only (`b_last_layer`), L-BFGS on one float64 batch, N in [2, 16], 1 head "
               "(`bash scripts/train_learned_family.sh`; docs/concepts.md section 10)",
}


def learned_targets(rows) -> list[str]:
    """The targets for models learned from random weights, checked on the learned family's rows (kappa 10)."""
    by = {(r["layers"], r["n"]): r["model"] for r in rows if r["family"] == "learned"}
    depths = sorted({L for L, _ in by})
    if not depths or (depths[-1], 15) not in by or (depths[-1], 40) not in by:
        return []
    best = min(depths, key=lambda L: by[(L, 15)])
    falls = [by[(a, 15)] / by[(b, 15)] for a, b in zip(depths, depths[1:], strict=False)]
    return ["", f"`learned` (from random weights, at most {depths[-1]} layers): MSE <= 1e-8 at N = 15 "
            f"{verdict(by[(best, 15)] <= 1e-8)} ({by[(best, 15)]:.1e}, L = {best}); <= 1e-6 at N = 40, outside the "
            f"training sizes, {verdict(by[(best, 40)] <= 1e-6)} ({by[(best, 40)]:.1e}); the MSE at N = 15 falls at "
            f"least 10x for every 2 layers added {verdict(all(f >= 10 for f in falls))} (falls "
            + ", ".join(f"{f:.3g}x" for f in falls) + f" from L = {depths[0]}); stretch <= 1e-11 at N = 15 "
            f"{verdict(by[(best, 15)] <= 1e-11)}."]


def depth_family_summary() -> list[str]:
    """The depth families in brief: model / CG-L at kappa 10 per depth and size, and the issue's targets per family."""
    if not DEPTH_FAMILY.with_suffix(".json").exists():
        return []
    rows = [r for r in json.loads(DEPTH_FAMILY.with_suffix(".json").read_text())["rows"] if r["kappa"] == 10.0]
    learned = LEARNED / "depth.json"
    if learned.exists():  # its own study: the learned family beside the others, at the same sizes
        rows += [r for r in json.loads(learned.read_text())["rows"] if r["kappa"] == 10.0]
    families = list(dict.fromkeys(r["family"] for r in rows))
    sizes = sorted({r["n"] for r in rows})
    by = {(r["name"], r["n"]): r for r in rows}
    out = ["## Depth: does a deeper model keep getting more accurate?", "",
           "Block models with 2 to 8 layers, kappa 10 (`bash scripts/train_depth_family.sh`, "
           "`python scripts/depth_family_study.py`); MSE and the ratio to CG with as many iterations as layers, on "
           "500 fresh systems per size (N = 40: outside every model's training sizes). The families:", ""]
    out += [f"- `{fam}`: {FAMILY_TEXT.get(fam, '')}" for fam in families]
    out += ["", "Full tables, kappa = 100, Chebyshev and the Krylov floor: [what we tried](results-tried.md).", "",
            "| run | L | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|---:|" + "---:|" * len(sizes)]
    for fam in families:
        for L, name in sorted({(r["layers"], r["name"]) for r in rows if r["family"] == fam}):
            cells = [f"{by[(name, n)]['model']:.1e} ({by[(name, n)]['model'] / by[(name, n)]['cg']:.2g})"
                     for n in sizes]
            out.append(f"| `{name}` | {L} | " + " | ".join(cells) + " |")
    out += ["", "Each cell: MSE (model / CG-L)."]
    out += learned_targets(rows)
    for fam in families:
        depth = {r["layers"]: r["name"] for r in rows if r["family"] == fam}
        if 4 not in depth or 8 not in depth:
            continue
        ratio = {(L, n): by[(depth[L], n)]["model"] / by[(depth[L], n)]["cg"] for L in (4, 8) for n in (15, 20)}
        ok = all(ratio[(8, n)] <= ratio[(4, n)] for n in (15, 20))
        stretch = by[(depth[8], 15)]["model"]
        out += ["", f"`{fam}`: target (model / CG-L at N = 15 and 20 no worse at L = 8 than at L = 4) {verdict(ok)} - "
                f"N = 15: {ratio[(4, 15)]:.2g} (L = 4) vs {ratio[(8, 15)]:.2g} (L = 8); N = 20: {ratio[(4, 20)]:.2g} "
                f"vs {ratio[(8, 20)]:.2g}. Stretch (L = 8 below CG-8 at N = 15, MSE <= 8e-6): "
                f"{verdict(stretch <= 8e-6)} ({stretch:.1e})."]
    return out + ["", ""]


def curves_section(path: Path, intro: str) -> list[str]:
    """A training-curves table (final evaluation loss, fall over the last quarter, minutes) and its plot."""
    if not path.with_suffix(".json").exists():
        return []
    shutil.copy(path.with_suffix(".png"), ASSETS / f"{path.name}.png")
    curves = json.loads(path.with_suffix(".json").read_text())["curves"]
    out = [intro, "", "| run | final evaluation loss | fall over the last quarter | minutes |", "|---|---:|---:|---:|"]
    out += [f"| `{name}` | {c['eval_loss'][-1][1]:.2e} | {late_improvement(c):.2f}x | "
            f"{c['train_time_s'] / 60:.0f} |" if c.get("train_time_s") else
            f"| `{name}` | {c['eval_loss'][-1][1]:.2e} (step {c['eval_loss'][-1][0]}) | "
            "no final checkpoint (stopped early) | - |" for name, c in curves.items()]
    return out + ["", "Fall over the last quarter: the median evaluation loss of the run's third quarter over that of "
                  "its last quarter (1 = flat).", "", f"![{path.name}](assets/results/{path.name}.png)", ""]


def mse(records, method, n, kappa=10.0, iters=None):
    for r in records:
        if r["method"] == method and r["n"] == n and r["kappa"] == kappa and (iters is None or r["iters"] == iters):
            return r["mse"]
    return None


def verdict(ok: bool) -> str:
    return "**holds here**" if ok else "**does not hold here**"


def main():
    ev = json.loads((EVAL / "eval.json").read_text())
    recs = ev["records"]
    models = ev["models"]
    depth = {name: m["config"]["n_layers"] for name, m in models.items()}
    ns = sorted({r["n"] for r in recs})
    kappas = sorted({r["kappa"] for r in recs})
    ASSETS.mkdir(parents=True, exist_ok=True)
    pngs = sorted(EVAL.glob("*.png"))
    for p in pngs:
        shutil.copy(p, ASSETS / p.name)
    if DEPTH.exists():
        shutil.copy(ROOT / "results" / "depth_study.png", ASSETS / "depth_study.png")

    def m(name, n, kappa=10.0):
        return mse(recs, name, n, kappa)

    def cg(name, n, kappa=10.0):
        return mse(recs, "cg", n, kappa, depth[name])

    lines = ["# Results", "",
             "Every number on this page was measured by the commands at the bottom and is regenerated by "
             "`bash scripts/reproduce_paper.sh`; the verdicts below are computed from those numbers by "
             "`scripts/make_results_page.py` (the rules are in that file). Test systems are fresh "
             f"(seed {ev['args']['seed']}, never used in training), {ev['args']['n_systems']} per (kappa, N), the same "
             "systems for every method, all started from x0 = 0; each iterative baseline runs as many iterations "
             "as the model has layers.", ""]

    # ---- training summary
    tr = {}
    for name, info in models.items():
        meta = info["meta"]
        if "train_config" in meta:
            tr[name] = {"train_config": meta["train_config"], **meta.get("metrics", {})}
    from reference.pretrained import PRETRAINED, load_pretrained

    for name in PRETRAINED:  # models outside the paper's evaluation (broad, deep): records from their checkpoints
        if name not in tr:
            try:
                meta = load_pretrained(name)[2]
            except ValueError:  # not shipped in this install
                continue
            tr[name] = {"train_config": meta["train_config"], **meta.get("metrics", {})}
    if tr:
        lines += ["## The shipped models", "",
                  "| model | layers x heads | sizes | kappa | steps x batch | time (2 cores) | final loss |",
                  "|---|---|---|---|---|---|---|"]
        for name, t in tr.items():
            c = t["train_config"]
            kap = f"{c['kappa']:g}" if c.get("kappa_max") is None else f"{c['kappa']:g}-{c['kappa_max']:g}"
            if c["steps"] == 0:  # exported untrained: the hand-set construction
                lines.append(f"| `{name}` | {c['n_layers']} x {c['n_heads']} ({c['parametrization']}) | every N | "
                             f"<= {c.get('kappa_max') or c['kappa']:g} (built for) | 0: hand-set ({c.get('init')}) "
                             "| - | - |")
                continue
            lines.append(f"| `{name}` | {c['n_layers']} x {c['n_heads']} ({c['parametrization']}) | "
                         f"{c['n_min']}-{c['n_max']} | {kap} | {c['steps']} x {c['batch_size']} | "
                         f"{t['train_time_s'] / 60:.0f} min | {t['train_loss']:.1e} ({c.get('loss', 'mse')}) |")
        lines += ["", "Weights: `reference/pretrained/<model>.npz` (package data; `reference.solve(A, b)` uses them).",
                  ""]

    # ---- claims
    lines += ["## The paper's claims, checked", ""]
    have = set(models)
    beyond = [n for n in ns if n > 9]
    if {"block-mixed"} <= have and beyond:
        errs = [m("block-mixed", n) for n in beyond]
        zero30 = mse(recs, "zero", max(ns))
        smooth = all(b <= 3 * a for a, b in zip(errs, errs[1:], strict=False)) and errs[-1] < 0.1 * zero30
        lines += [f"1. *Block trained on N in [2, 9] generalizes beyond its sizes.* {verdict(smooth)}: "
                  f"its MSE goes from {m('block-mixed', 9):.2e} at N = 9 to {errs[-1]:.2e} at N = {max(ns)} "
                  f"(zero predictor {zero30:.2f}); rule: no step from N to N+1 multiplies the error by "
                  f"more than 3, and the error at N = {max(ns)} is below a tenth of the zero predictor's.", ""]
    if {"block-mixed", "block-n9"} <= have:
        others = [n for n in ns if n != 9]
        worse = [n for n in others if m("block-n9", n) > m("block-mixed", n)]
        ok = len(worse) > len(others) / 2
        lines += [f"2. *Block trained on N = 9 alone generalizes less.* {verdict(ok)}: `block-n9` is worse than "
                  f"`block-mixed` at {len(worse)} of the {len(others)} sizes other than 9 "
                  f"(at N = 30: {m('block-n9', max(ns)):.2e} vs {m('block-mixed', max(ns)):.2e}); "
                  "rule: worse at more than half of them.", ""]
    if "full-n9" in have:
        at9 = {name: m(name, 9) for name in have if m(name, 9) is not None}
        best = min(at9, key=at9.get)
        lines += [f"3. *Full N = 9 is best at N = 9.* {verdict(best == 'full-n9')}: MSE at N = 9: "
                  + ", ".join(f"`{k}` {v:.2e}" for k, v in sorted(at9.items(), key=lambda kv: kv[1]))
                  + f"; CG with {depth['full-n9']} iterations {cg('full-n9', 9):.2e}.", ""]
        lines += claim3_lines()
    if {"block-mixed", "block-finetune"} <= have:
        rng = [n for n in ns if 10 <= n <= 20]
        better = [n for n in rng if m("block-finetune", n) < m("block-mixed", n)]
        lines += [f"4. *Fine-tuning on [10, 20] helps there.* {verdict(len(better) == len(rng))}: `block-finetune` "
                  f"beats `block-mixed` at {len(better)} of the {len(rng)} sizes in [10, 20] (N = 15: "
                  f"{m('block-finetune', 15):.2e} vs {m('block-mixed', 15):.2e}); rule: at every one of them.", ""]

    lines += depth_family_summary()

    # ---- per-N wins and losses against CG
    tables = ["# Results: every number", "", "Ratio of each model's MSE to CG's at equal depth, then every table "
              "`python -m tf_impl.evaluate` wrote, then the plots. The summary is on the [results page](results.md).",
              ""]
    lines += ["## Against conjugate gradient at equal depth", "",
              "Where each model's MSE is below CG's with as many iterations as the model has layers (same systems; "
              "the per-N ratios are on the [tables page](results-tables.md)). For N <= layers CG is exact, which no "
              "fixed polynomial map can match. Every model was trained at kappa = 10 only: kappa = 100 is outside "
              "their training distribution.", ""]
    for kappa in kappas:
        head = [name for name in models]
        tables += [f"## Model / CG MSE ratio, kappa = {kappa:g}" + (" (outside the training distribution)"
                                                                    if kappa != 10 else ""), "",
                   "| N | " + " | ".join(f"`{h}`" for h in head) + " |", "|---|" + "---|" * len(head)]
        for n in ns:
            row = []
            for name in head:
                a, c = m(name, n, kappa), cg(name, n, kappa)
                row.append("—" if a is None else ("CG exact" if c < 1e-20 else
                                                   (f"**{a / c:.2g}**" if a < c else f"{a / c:.3g}")))
            tables.append(f"| {n} | " + " | ".join(row) + " |")
        tables.append("")
        lines += [f"**kappa = {kappa:g}**" + (" (outside the training distribution)" if kappa != 10 else "") + ":",
                  ""]
        for name in head:
            wins = [n for n in ns if m(name, n, kappa) is not None and cg(name, n, kappa) >= 1e-20
                    and m(name, n, kappa) < cg(name, n, kappa)]
            loses = [n for n in ns if m(name, n, kappa) is not None and cg(name, n, kappa) >= 1e-20
                     and m(name, n, kappa) >= cg(name, n, kappa)]
            lines.append(f"- `{name}` beats CG at N = {_ranges(wins) or 'none'}; "
                         f"loses at N = {_ranges(loses) or 'none'}.")
        lines.append("")
    # no single model everywhere; worse than the zero predictor where that happens
    span = [n for n in ns if 5 <= n <= 20]
    single = [name for name in models if all(m(name, n) is not None and m(name, n) < cg(name, n) for n in span)]
    auto_ok = {"block-mixed", "block-finetune"} <= set(models) and all(
        m(name, n) < cg(name, n) for n in span for name in ["block-mixed" if n <= 9 else "block-finetune"])
    lines += [("No single model of the paper beats CG at every N from 5 to 20 at kappa = 10"
               if not single else f"`{'`, `'.join(single)}` beat(s) CG at every N from 5 to 20 at kappa = 10")
              + ": `block-mixed` up to N = 9 and `block-finetune` from 10 to 20 (`model=\"auto\"`'s choice when "
              "the `newton-schulz` model is not installed) "
              + ("together do." if auto_ok else "together do not either.")
              + " `model=\"auto\"` runs `newton-schulz`, the hand-set 12-layer Newton-Schulz model (next sections).",
              ""]
    bad = []
    for name in models:
        worse = [n for n in ns if m(name, n) is not None and m(name, n) > mse(recs, "zero", n)]
        if worse:
            worst = max(worse, key=lambda n: m(name, n))
            bad.append(f"`{name}` is worse than the zero predictor at N = {_ranges(worse)} (MSE {m(name, worst):.3g} "
                       f"at N = {worst}, zero predictor {mse(recs, 'zero', worst):.2f})")
    if bad:
        lines += ["Far outside their training sizes the bare models can be worse than predicting 0: "
                  + "; ".join(bad) + ". `solve` never returns an answer with a larger residual than its start (a pass "
                  "that does not lower the residual is rejected), but a smaller residual is not a smaller error: "
                  "one pass of `block-n9` through `solve` still has a relative error above 1 at N = 3 (the "
                  "[robustness page](results-robustness.md)). Use the model made for the size, or `tol`.", ""]
    lines += _robustness_summary()

    lines += ["## What the model learned", "",
              "The estimate can be read from the query token after every layer. Each layer is a polynomial map of "
              "the tokens, so it can be compared with Krylov methods: after k iterations CG (and any method built "
              "from k matrix-vector products) lies in x0 + K_k(A, b), and the best 2-norm point of that space is a "
              "floor for all of them. The *effective Krylov dimension* of a layer is the k at which that floor "
              "reaches the layer's error (interpolated).", "",
              "| model | N | kappa | MSE after layers 0..L | CG after 0..L iterations | effective Krylov dim. |",
              "|---|---|---|---|---|---|"]
    for a in ev["layers"]:
        lines.append(f"| `{a['name']}` | {a['n']} | {a['kappa']:g} | " + ", ".join(f"{v:.1e}" for v in a["model"])
                     + " | " + ", ".join(f"{v:.1e}" for v in a["cg"]) + " | "
                     + ", ".join(f"{v:.1f}" for v in a["effective_krylov_dim"]) + " |")
    lines.append("")
    for a in ev["layers"]:
        if a["kappa"] != kappas[0]:
            continue
        L = len(a["model"]) - 1
        last, dims = a["model"][-1], a["effective_krylov_dim"]
        jump = a["model"][-2] / last if last > 0 else float("inf")
        lines.append(f"- `{a['name']}` at N = {a['n']}: the last layer divides the error by {jump:.0f}; "
                     f"the final estimate is worth {dims[-1]:.1f} Krylov steps for {L} layers"
                     + (", more than any method with as many matrix-vector products can reach"
                        if dims[-1] > L else "") + ".")
    lines += ["", "The block models trained on several sizes barely move the query's estimate in their first "
              "layers and make almost all the progress in the last one: rather than iterating like CG, the "
              "early layers transform the equation tokens, and the final layer reads a solution out of them "
              "(see the plots below and tutorial 6).", ""]
    tables += ["## Plots", ""]
    for p in pngs:
        tables += [f"![{p.stem}](assets/results/{p.name})", ""]
    tried_lines = ["# What we tried", ""]
    if DEPTH.exists():
        d = json.loads(DEPTH.read_text())
        tried_lines += ["## Loss vs depth (short equal budget)", "", (ROOT / "results" / "depth_study.md").read_text(),
                  "![depth study](assets/results/depth_study.png)", "",
                  f"Command: `python scripts/depth_study.py --preset {d['args']['preset']} --depths "
                  f"{' '.join(map(str, d['args']['depths']))} --steps {d['args']['steps']} "
                  f"--batch-size {d['args']['batch_size']} {' '.join(d['args'].get('extra', []))}".rstrip() + "`",
                  ""]
    if (LEARNED / "recipe.md").exists():
        tried_lines += [(LEARNED / "recipe.md").read_text(), ""]
        if (LEARNED / "depth.md").exists():
            tried_lines += ["### The learned family against depth", "", (LEARNED / "depth.md").read_text(), ""]
        if (LEARNED / "depth.png").exists():
            shutil.copy(LEARNED / "depth.png", ASSETS / "learned_depth.png")
            tried_lines += ["![learned family](assets/results/learned_depth.png)", ""]
        tried_lines += curves_section(LEARNED / "learned_curves", "Training of the learned family (L-BFGS iterations on one "
                                      "batch; evaluation on the fixed evaluation batch of fresh systems):")
    if (DEPTH_FAMILY.with_suffix(".md")).exists():
        tried_lines += ["## The depth families", "",
                        "Three families on N in [2, 20] (results page, \"Depth\"): `depth-L*` trained from random "
                        "weights (6 and 8 layers grown from 4), `depth-ns-L*` trained from the Newton-Schulz "
                        "construction, `newton-schulz-L*` the construction itself (untrained, float64).", "",
                        DEPTH_FAMILY.with_suffix(".md").read_text(), ""]
        if DEPTH_FAMILY.with_suffix(".png").exists():
            shutil.copy(DEPTH_FAMILY.with_suffix(".png"), ASSETS / "depth_family.png")
            tried_lines += ["![depth family](assets/results/depth_family.png)", ""]
        tried_lines += curves_section(DEPTH_CURVES, "Training of the depth family (4000 steps per run, cosine "
                                      "schedule; the grown runs start from the 4-layer model, so their curves start "
                                      "low):")
        tried_lines += curves_section(DEPTH_NS_CURVES, "Training of the Newton-Schulz family (`--init newton-schulz`; "
                                      "cosine schedule; the 6- and 8-layer runs start at float32's floor, where "
                                      "Adam's warm-up steps first add noise):")
    tried = ROOT / "results" / "tried.md"
    if tried.exists():
        tried_lines += [tried.read_text().replace("## What we tried, and why the presets are what they are",
                                                  "## Why the presets are what they are"), ""]
    tables += ["## All numbers", "",
               "The full tables written by `python -m tf_impl.evaluate` (every baseline, every N):",
               "", (EVAL / "eval.md").read_text().replace("# Evaluation", "", 1), ""]
    lines += ["## More", "", "- [Every number and plot](results-tables.md)",
              "- [solve() off the training distribution](results-robustness.md)",
              "- [What we tried, and the depth studies](results-tried.md)", "",
              "## Regenerate", "", "```{.bash .wrap}",  # a listing: long lines wrap (docs/stylesheets/extra.css)
              (ROOT / "scripts" / "reproduce_paper.sh").read_text().strip(), "```", ""]
    for page, text in ((PAGE, lines), (TABLES, tables), (TRIED_PAGE, tried_lines)):
        page.write_text("\n".join(text))
        print(f"wrote {page}")
    if (ROBUST / "robustness.md").exists():
        if (ROBUST / "robustness.png").exists():
            shutil.copy(ROBUST / "robustness.png", ASSETS / "robustness.png")
        body = (ROBUST / "robustness.md").read_text().replace("# solve() off the training distribution", "", 1)
        ROBUST_PAGE.write_text("\n".join([
            "# solve() off the training distribution", "",
            "Each family changes one thing of the paper's law (uniform spectrum, kappa = 10, b = A x). One pass of "
            "each model through `solve` (normalised, odd part) and bare (the paper's use), against CG and the best "
            "point of the Krylov space at equal depth; then the work to reach a relative residual of 1e-8. Written "
            "by `python -m tf_impl.evaluate --robustness` (command at the bottom).", "",
            "![robustness](assets/results/robustness.png)", "", body, "", "```bash",
            _robustness_command(json.loads((ROBUST / "robustness.json").read_text())), "```", ""]))
        print(f"wrote {ROBUST_PAGE}")


def _robustness_summary() -> list[str]:
    """The brief version of the robustness page: for each family, at N = 9 and 20, the best model through
    ``solve`` against CG at equal depth, and the work to 1e-8."""
    path = ROBUST / "robustness.json"
    if not path.exists():
        return []
    recs = json.loads(path.read_text())["records"]
    by = {(r["family"], r["n"], r["method"], r["kind"]): r for r in recs}
    families = list(dict.fromkeys(r["family"] for r in recs))
    models = list(dict.fromkeys(r["method"] for r in recs if r["kind"] == "solve"))
    depth = {r["method"]: r["layers"] for r in recs if r["kind"] == "solve"}
    out = ["## solve() on the systems users bring", "",
           "One pass of `solve` (relative error) with the best model for each case and with the best trained "
           "4-layer model, each against CG with as many iterations as the model has layers, and what reaching a "
           "relative residual of 1e-8 costs with the best model: layers (passes x L) vs CG iterations. Full "
           "tables: [robustness page](results-robustness.md).", "",
           "| family | N | best model, one pass | CG, same depth | best 4-layer model | CG-4 | layers to 1e-8 "
           "(share met) | CG its |", "|---|---|---|---|---|---|---|---|"]

    def cell(rel, cg, name):
        star = "**" if rel < cg else ""
        return f"{star}{rel:.1e}{star} (`{name}`)"

    for family in families:
        for n in (9, 20):
            cands = [(by[(family, n, mdl, "solve")]["rel"], mdl) for mdl in models if (family, n, mdl, "solve") in by]
            if not cands:
                continue
            rel, best = min(cands)
            cg = by[(family, n, f"CG-{depth[best]}", "cg")]["rel"]
            four = [c for c in cands if depth[c[1]] == 4]
            rel4, best4 = min(four) if four else (None, None)
            cg4 = by[(family, n, "CG-4", "cg")]["rel"] if four else None
            tt = by[(family, n, best, "to_tol")]
            cgt = by[(family, n, "CG", "to_tol")]
            out.append(f"| {family} | {n} | {cell(rel, cg, best)} | {cg:.1e} (CG-{depth[best]}) | "
                       + (f"{cell(rel4, cg4, best4)} | {cg4:.1e} | " if four else "- | - | ")
                       + f"{tt['layers_median']:.0f} ({100 * tt['converged']:.0f}%) | {cgt['iters_median']:.0f} |")
    out.append("")
    return out


def _robustness_command(data) -> str:
    a = data["args"]
    names = " ".join(data["models"])
    return (f"python -m tf_impl.evaluate --robustness \\\n    {names} \\\n"
            f"    --sizes {' '.join(map(str, a['sizes']))} --n-systems {a['n_systems']} --tol {a['tol']:g} \\\n"
            "    --out results/robustness")


def _ranges(ns):
    """[2, 3, 4, 7] -> '2-4, 7'."""
    out, start, prev = [], None, None
    for n in ns:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = n
    if start is not None:
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ", ".join(out)


if __name__ == "__main__":
    main()
