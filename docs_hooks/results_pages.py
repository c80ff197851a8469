"""The results pages and the README's results table, rendered from the measured data in ``results/``.

Nothing here holds a number: every figure on the pages is read from the JSON files under ``results/`` (and the
shipped checkpoints' training records, for the training times), and every verdict is computed by a rule written
below. Three pages, all rendered when the site is built (``docs_hooks/results.py``) and never committed:

* ``results.md``, the summary: the paper's claims, the depth story, where each model beats CG, what ``solve``
  does, one plot each;
* ``results-tables.md``, every number: the shipped models, the measured training times, and the big tables
  (collapsed);
* ``results-tried.md``, the lab notebook: dated entries, from ``results/learned/recipe.md`` and
  ``results/tried.md``, with the training curves of the runs they describe.

The figures are published from ``results/`` as they are (:func:`assets`), and so are the JSON files that hold
every number. :func:`readme_block` is the README's results section (committed, checked by a test against a fresh
rendering). Preview the pages without building the site: ``python scripts/make_results_page.py --out DIR``.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("results.md", "results-tables.md", "results-tried.md")
WORD_BUDGET = 7500  # all results pages together, counted as len(text.split()) on the rendered Markdown
README_START = "<!-- results: generated from results/ by `python scripts/make_results_page.py --readme` -->"
README_END = "<!-- /results -->"
# a figure or data file of the site (under assets/results/) -> its file in results/
ASSETS = {
    "error_vs_n_kappa10.png": "eval/error_vs_n_kappa10.png", "error_vs_n_kappa100.png": "eval/error_vs_n_kappa100.png",
    "layers_N9_kappa10.png": "eval/layers_N9_kappa10.png",
    "learned_depth.png": "learned/depth.png", "learned_curves.png": "learned/learned_curves.png",
    "depth_family.png": "depth_family.png", "depth_family_curves.png": "depth_family_curves.png",
    "depth_ns_curves.png": "depth_ns_curves.png", "robustness.png": "robustness/robustness.png",
    "claim3_curves.png": "claim3/curves.png", "claim3_curves_48k.png": "claim3/curves_48k.png",
    "eval.json": "eval/eval.json", "robustness.json": "robustness/robustness.json",
    "depth_family.json": "depth_family.json", "learned_depth.json": "learned/depth.json",
    "general_spectrum.png": "general/general_spectrum.png", "general.json": "general/general.json",
    "compute_fair.png": "compute_fair.png", "compute_fair.json": "compute_fair.json",
    "bench_factorize.json": "bench_factorize.json",
}
CURVES = {"claim3": "claim3/curves.json", "claim3_48k": "claim3/curves_48k.json",
          "depth_family_curves": "depth_family_curves.json", "depth_ns_curves": "depth_ns_curves.json",
          "learned_curves": "learned/learned_curves.json"}
FAMILY_TEXT = {
    "newton-schulz": "the Newton–Schulz construction, hand-set (float64)",
    "depth-ns": "trained from it (Adam, 4 heads)",
    "learned": "from random weights, L-BFGS, `b` read by the last layer only (1 head)",
    "learned-k100": "as `learned`, trained on kappa log-uniform in [10, 100] instead of kappa 10",
    "learned-general": "equivariant, fitted layer by layer by least squares on spectra in [1e-4, 1.1] (one model "
                       "for kappa up to 1e4)",
    "depth": "from random weights, Adam (4 heads; 6 and 8 layers grown from 4)",
}
_CURVES_MARKER = re.compile(r"^<!--\s*results-curves:\s*([\w]+)\s*-->\s*$", re.M)


# ---------------------------------------------------------------------------------------------------------------
# what the pages read, checked: bad data is refused with one line naming the file and the field


class ResultsError(ValueError):
    """Data under ``results/`` (or a shipped checkpoint) the pages cannot be rendered from; the message is one line
    naming the file and the field."""


NUMBER, INTEGER, TEXT = "number", "integer", "string"
_ROWS = [{"name": TEXT, "family": TEXT, "layers": INTEGER, "n": INTEGER, "kappa": NUMBER, "model": NUMBER,
          "cg": NUMBER}]
_CURVES = {"curves": {"*": {"train_time_s?": NUMBER, "steps?": INTEGER,
                            "final_evaluation?": [{"n": INTEGER, "mse_model": NUMBER}]}}}
SCHEMAS = {
    "eval/eval.json": {"args": {"seed": INTEGER}, "models": {"*": {"config": {"n_layers": INTEGER}}},
                       "records": [{"method": TEXT, "n": INTEGER, "kappa": NUMBER, "iters": INTEGER, "mse": NUMBER}],
                       "layers": [{"name": TEXT, "n": INTEGER, "kappa": NUMBER, "effective_krylov_dim": [NUMBER]}]},
    "robustness/robustness.json": {"args": {"tol": NUMBER, "n_systems": INTEGER},
                                   "records": [{"family": TEXT, "n": INTEGER, "method": TEXT, "kind": TEXT,
                                                "layers": INTEGER}]},
    "depth_family.json": {"n_systems": INTEGER, "rows": _ROWS},
    "learned/depth.json": {"n_systems": INTEGER, "rows": _ROWS},
    "general/general.json": {"kappas": [NUMBER], "models": {"*": {
        "layers": INTEGER, "one_pass": [{"kappa": NUMBER, "n": INTEGER, "mse": NUMBER, "cg_mse": NUMBER}],
        "to_tol": [{"max_passes": INTEGER}]}}},
    **{rel: _CURVES for rel in ("claim3/curves.json", "claim3/curves_48k.json", "depth_family_curves.json",
                                "depth_ns_curves.json", "learned/learned_curves.json")},
}
"""What the pages read from each JSON file: an object lists its keys (``key?``: optional; ``*``: every value of a
non-empty mapping), a one-element list means a non-empty list of such elements, and the leaves are finite numbers,
integers and strings (``|null``: or null). Other keys are not read and not checked."""
ROBUST_KINDS = {"solve": {"rel": NUMBER}, "cg": {"rel": NUMBER}, "to_tol": {"converged": NUMBER}}
"""What a robustness record holds besides :data:`SCHEMAS`', by its kind (a ``bare`` pass that overflowed records
``rel`` null, and the pages do not read it); a ``to_tol`` record also holds ``iters_median`` (CG) or
``layers_median`` (a model)."""
SHIPPED_SCHEMA = {"train_config": {"parametrization": TEXT, "n_layers": INTEGER, "n_heads": INTEGER, "n_min": INTEGER,
                                   "n_max": INTEGER, "kappa": NUMBER, "kappa_max?": NUMBER + "|null",
                                   "steps": INTEGER, "batch_size": INTEGER, "loss?": TEXT + "|null"},
                  "metrics": {"train_time_s?": NUMBER, "train_loss?": NUMBER}}
"""What the pages read from a shipped checkpoint's metadata (the shipped-models table, the training times)."""


def _kind(v) -> str:
    return "null" if v is None else "a bool" if isinstance(v, bool) else f"a {type(v).__name__}"


def check_fields(value, spec, where: str, field: str = "") -> None:
    """``value`` against ``spec`` (:data:`SCHEMAS`); :class:`ResultsError` ``"WHERE: field F: expected ..., got
    ..."`` at the first mismatch."""
    def fail(expected: str, got: str):
        raise ResultsError(f"{where}: {'field ' + field if field else 'the file'}: expected {expected}, got {got}")

    if isinstance(spec, dict):
        if not isinstance(value, dict):
            fail("an object" + (f" with {', '.join(k.rstrip('?') for k in spec)}" if "*" not in spec else ""),
                 _kind(value))
        if "*" in spec:
            if not value:
                fail("a non-empty object", "an empty one")
            for k, v in value.items():
                check_fields(v, spec["*"], where, f"{field}.{k}" if field else k)
            return
        for k, sub in spec.items():
            key = k.rstrip("?")
            if key not in value:
                if not k.endswith("?"):
                    fail(f"an object with {key!r}", f"one without it (keys: {', '.join(list(value)[:8])})")
                continue
            check_fields(value[key], sub, where, f"{field}.{key}" if field else key)
    elif isinstance(spec, list):
        if not isinstance(value, list) or not value:
            fail("a non-empty list", "an empty list" if value == [] else _kind(value))
        for i, v in enumerate(value):
            check_fields(v, spec[0], where, f"{field}[{i}]")
    else:
        kind, _, null = spec.partition("|")
        if value is None and null:
            return
        ok = {NUMBER: isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value),
              INTEGER: isinstance(value, int) and not isinstance(value, bool), TEXT: isinstance(value, str)}[kind]
        if not ok:
            got = repr(value) if isinstance(value, float) else _kind(value)
            fail(("a finite number" if kind == NUMBER else f"an {kind}" if kind == INTEGER else f"a {kind}")
                 + (" or null" if null else ""), got)


def read_json(path: Path, where: str):
    """The JSON of ``path`` (``where`` names it in errors): :class:`ResultsError` for a file that cannot be read, is
    not UTF-8 or is not JSON (an empty or truncated one), in one line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsError(f"{where}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ResultsError(f"{where}: cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        raise ResultsError(f"{where}: {what}") from None
    except RecursionError:
        raise ResultsError(f"{where}: nested too deeply to be JSON the pages read") from None


def e(x: float, digits: int = 1) -> str:
    """``7.4e-04`` written ``7.4e-4``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "+") + m.group(2),
                  f"{x:.{digits}e}").replace("e+", "e")


def ranges(ns) -> str:
    """[2, 3, 4, 7] -> '2-4, 7'; [] -> 'none'."""
    out: list[list[int]] = []
    for n in ns:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in out) or "none"


def verdict(ok: bool) -> str:
    return "**holds here**" if ok else "**does not hold here**"


def words(text: str) -> int:
    return len(text.split())


class Results:
    """The measured data of one checkout, read once."""

    def __init__(self, root: Path = ROOT):
        self.root = Path(root)
        self.dir = self.root / "results"

    def json(self, rel: str):
        """The data of ``results/REL``, checked against :data:`SCHEMAS`; None when the file is absent (its section
        is left out)."""
        path = self.dir / rel
        if not path.exists():
            return None
        data = read_json(path, f"results/{rel}")
        if rel in SCHEMAS:
            check_fields(data, SCHEMAS[rel], f"results/{rel}")
        return data

    def text(self, rel: str) -> str:
        path = self.dir / rel
        return path.read_text(encoding="utf-8").strip() if path.exists() else ""

    @cached_property
    def eval(self) -> dict:
        data = self.json("eval/eval.json")
        if data is None:
            raise ResultsError("results/eval/eval.json: missing (the summary and its claims are rendered from it)")
        return data

    @cached_property
    def robustness(self) -> dict | None:
        data = self.json("robustness/robustness.json")
        for i, r in enumerate((data or {}).get("records", [])):
            spec = dict(ROBUST_KINDS.get(r["kind"], {}))
            if r["kind"] == "to_tol":
                spec["iters_median" if r["method"] == "CG" else "layers_median"] = NUMBER
            check_fields(r, spec, "results/robustness/robustness.json", f"records[{i}]")
        return data

    @cached_property
    def robust(self) -> tuple[dict | None, list[dict], dict[tuple, dict]]:
        """The robustness study, its records, and the records by (family, N, method, kind)."""
        recs = self.robustness["records"] if self.robustness else []
        return self.robustness, recs, {(r["family"], r["n"], r["method"], r["kind"]): r for r in recs}

    @cached_property
    def depth_rows(self) -> list[dict]:
        """The depth studies' rows: the depth families, then the learned family (its newton-schulz rows repeat
        the depth families' and are dropped)."""
        rows = (self.json("depth_family.json") or {"rows": []})["rows"]
        seen = {(r["name"], r["n"], r["kappa"]) for r in rows}
        learned = (self.json("learned/depth.json") or {"rows": []})["rows"]
        return rows + [r for r in learned if (r["name"], r["n"], r["kappa"]) not in seen]

    @cached_property
    def curves(self) -> dict[str, dict]:
        return {key: data["curves"] for key, rel in CURVES.items() if (data := self.json(rel))}

    @cached_property
    def shipped(self) -> dict[str, dict]:
        """Every shipped model's training record: ``train_config`` and ``metrics`` of its checkpoint."""
        from reference import pretrained

        out = {}
        for name in pretrained.PRETRAINED:
            path = Path(pretrained.PRETRAINED_DIR) / f"{name}.npz"
            if not path.exists():  # not shipped in this install
                continue
            where = f"reference/pretrained/{name}.npz"
            try:  # a file that is there but cannot be read is an error, never "not shipped"
                meta = pretrained.load_pretrained(name)[2]
            except ValueError as e:
                raise ResultsError(f"{where}: {str(e).replace(str(path), name + '.npz')}") from None
            check_fields({"metrics": {}, **meta}, SHIPPED_SCHEMA, where)
            out[name] = {"train_config": meta["train_config"], **meta.get("metrics", {})}
        return out

    @cached_property
    def shipped_as(self) -> dict[str, str]:
        """Study run name -> the shipped model that is a copy of it (the same measured training time)."""
        out = {}
        for runs in self.curves.values():
            for run, c in runs.items():
                for name, t in self.shipped.items():
                    if c.get("train_time_s") and abs(t.get("train_time_s", -1) - c["train_time_s"]) < 1e-6:
                        out[run] = name
        return out

    # ---- the evaluation of the paper's models (results/eval)
    def mse(self, method: str, n: int, kappa: float = 10.0, iters: int | None = None):
        for r in self.eval["records"]:
            if r["method"] == method and r["n"] == n and r["kappa"] == kappa and (iters is None or r["iters"] == iters):
                return r["mse"]
        return None

    @cached_property
    def models(self) -> list[str]:
        return list(self.eval["models"])

    @cached_property
    def sizes(self) -> list[int]:
        return sorted({r["n"] for r in self.eval["records"]})

    @cached_property
    def kappas(self) -> list[float]:
        return sorted({r["kappa"] for r in self.eval["records"]})

    def depth(self, name: str) -> int:
        return self.eval["models"][name]["config"]["n_layers"]

    def cg(self, name: str, n: int, kappa: float = 10.0):
        return self.mse("cg", n, kappa, self.depth(name))

    def beats_cg(self, name: str, kappa: float = 10.0) -> tuple[list[int], list[int]]:
        """Sizes where the model's MSE is below CG's at equal depth, and where not (CG exact: left out)."""
        wins, loses = [], []
        for n in self.sizes:
            a, c = self.mse(name, n, kappa), self.cg(name, n, kappa)
            if a is not None and c >= 1e-20:
                (wins if a < c else loses).append(n)
        return wins, loses

    # ---- the depth studies
    def depth_row(self, name: str, n: int, kappa: float = 10.0) -> dict | None:
        for r in self.depth_rows:
            if r["name"] == name and r["n"] == n and r["kappa"] == kappa:
                return r
        return None

    def family_runs(self, family: str) -> dict[int, str]:
        return {r["layers"]: r["name"] for r in self.depth_rows if r["family"] == family}

    @cached_property
    def depth_systems(self) -> int:
        return (self.json("depth_family.json") or self.json("learned/depth.json"))["n_systems"]

    @cached_property
    def families(self) -> list[str]:
        present = list(dict.fromkeys(r["family"] for r in self.depth_rows))
        return [f for f in FAMILY_TEXT if f in present] + [f for f in present if f not in FAMILY_TEXT]

    @cached_property
    def depth_sizes(self) -> list[int]:
        return sorted({r["n"] for r in self.depth_rows})


# ---------------------------------------------------------------------------------------------------------------
# measured training times: the one source of every time the pages, the README and the scripts quote


def run_times(res: Results) -> list[tuple[str, float]]:
    """(what ``scripts/reproduce_paper.sh`` trains, measured seconds): the checkpoints' ``train_time_s``."""
    out = []
    paper = [m for m in ("full-n9", "block-n9", "block-mixed", "block-finetune") if m in res.shipped]
    if paper:
        out.append(("the paper's four models", sum(res.shipped[m]["train_time_s"] for m in paper)))
    if "broad" in res.shipped:
        out.append(("`broad`", res.shipped["broad"]["train_time_s"]))
    labels = {"claim3": "claim 3 at 24000 steps (`full-n9`, `block-n9`)",
              "claim3_48k": "claim 3 at 48000 steps (`full-n9`, `block-n9`)",
              "depth_family_curves": "the depth family (`depth-L2` ... `depth-L8`)",
              "depth_ns_curves": "the Newton–Schulz family (`depth-ns-L2` ... `depth-ns-L8`)",
              "learned_curves": "the learned family (the kept run of each depth)"}
    for key, label in labels.items():
        if key in res.curves:
            out.append((label, sum(c.get("train_time_s") or 0.0 for c in res.curves[key].values())))
    return out


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def total_training(res: Results) -> str:
    return duration(sum(s for _, s in run_times(res)))


# ---------------------------------------------------------------------------------------------------------------
# the summary page


def claims_section(res: Results) -> list[str]:
    """The paper's four claims, each with the rule that decides it."""
    m, ns, have = res.mse, res.sizes, set(res.models)
    out = ["## The paper's claims, checked", ""]
    if {"block-mixed"} <= have:
        beyond = [n for n in ns if n > 9]
        errs = [m("block-mixed", n) for n in beyond]
        zero = m("zero", max(ns))
        ok = all(b <= 3 * a for a, b in zip(errs, errs[1:], strict=False)) and errs[-1] < 0.1 * zero
        out += [f"1. *Block trained on N in [2, 9] generalizes beyond its sizes*: {verdict(ok)}. MSE "
                f"{e(m('block-mixed', 9))} at N = 9, {e(errs[-1])} at N = {max(ns)} (zero predictor {zero:.2f}); "
                "rule: no step N to N+1 multiplies the error by more than 3, and the last is below a tenth of the "
                "zero predictor's."]
    if {"block-mixed", "block-n9"} <= have:
        others = [n for n in ns if n != 9]
        worse = [n for n in others if m("block-n9", n) > m("block-mixed", n)]
        out += [f"2. *Block trained on N = 9 alone generalizes less*: {verdict(len(worse) > len(others) / 2)}. "
                f"`block-n9` is worse than `block-mixed` at {len(worse)} of the {len(others)} other sizes; rule: "
                "at more than half."]
    if "full-n9" in have:
        at9 = {name: m(name, 9) for name in res.models if m(name, 9) is not None}
        best = min(at9, key=at9.get)
        out += [f"3. *Full N = 9 is best at N = 9*: {verdict(best == 'full-n9')}. At N = 9: "
                + ", ".join(f"`{k}` {e(v)}" for k, v in sorted(at9.items(), key=lambda kv: kv[1]))
                + f"; CG-{res.depth('full-n9')} {e(res.cg('full-n9', 9))}." + claim3_longer(res)]
    if {"block-mixed", "block-finetune"} <= have:
        rng = [n for n in ns if 10 <= n <= 20]
        better = [n for n in rng if m("block-finetune", n) < m("block-mixed", n)]
        out += [f"4. *Fine-tuning on [10, 20] helps there*: {verdict(len(better) == len(rng))}. `block-finetune` "
                f"beats `block-mixed` at {len(better)} of the {len(rng)} sizes (N = 15: {e(m('block-finetune', 15))} "
                f"vs {e(m('block-mixed', 15))}); rule: at every one."]
    return out + ["", "![MSE against N at kappa 10: the paper's models, CG-4 and the zero predictor]"
                  "(assets/results/error_vs_n_kappa10.png)", ""]


def final_mse(run: dict, n: int):
    """The model's MSE at size ``n`` in a run's final table (``scripts/training_curves.py``), or None."""
    return next((r["mse_model"] for r in run.get("final_evaluation") or [] if r["n"] == n), None)


def claim3_longer(res: Results) -> str:
    """Claim 3 at the longer budgets of ``scripts/train_claim3.sh``, in one sentence each."""
    out = []
    for key in ("claim3", "claim3_48k"):
        if key in res.curves:
            full, block = res.curves[key]["full-n9"], res.curves[key]["block-n9"]
            f9, b9 = final_mse(full, 9), final_mse(block, 9)
            out.append(f"At {full['steps']} steps ({full['steps'] / 8000:g}x the presets' budget) `full-n9` "
                       f"{e(f9)}, `block-n9` {e(b9)}: {verdict(f9 < b9)}.")
    return (" " + " ".join(out) + " Curves: [what we tried](results-tried.md).") if out else ""


def depth_section(res: Results) -> list[str]:
    """The depth story: the construction, trained from it, learned from random weights, against CG-L."""
    if not res.depth_rows:
        return []
    fams = res.families
    runs = {f: res.family_runs(f) for f in fams}
    depths = sorted({L for f in fams for L in runs[f]})
    head = "| L | CG-L | " + " | ".join(f"`{f}`" for f in fams) + " |"
    sizes = {f: "-".join(str(res.shipped[m]["train_config"][k]) for k in ("n_min", "n_max"))
             for f, m in (("learned", "learned-L8"), ("depth", "block-mixed-20")) if m in res.shipped}
    count = {3: "Three", 4: "Four", 5: "Five", 6: "Six"}.get(len(fams), str(len(fams)))
    out = ["## Depth: does a deeper model keep getting more accurate?", "",
           f"{count} ways to make an L-layer block model, at kappa 10 unless said otherwise" + (
               f" (trained on N = {sizes['depth']}; the learned family on {sizes['learned']})" if len(sizes) == 2
               else "") + ":", ""]
    out += [f"- `{f}`: {FAMILY_TEXT.get(f, 'a depth family')}" for f in fams]
    out += ["", f"MSE at N = 15, kappa 10, {res.depth_systems} fresh systems, against CG with L iterations:", "",
            head, "|---:|---:|" + "---:|" * len(fams)]
    for L in depths:
        cg = next(res.depth_row(runs[f][L], 15)["cg"] for f in fams if L in runs[f])
        cells = [e(res.depth_row(runs[f][L], 15)["model"]) if L in runs[f] else "-" for f in fams]
        out.append(f"| {L} | {e(cg)} | " + " | ".join(cells) + " |")
    out += ["", " ".join(learned_story(res)[:1] + [
        "The construction gains far more per layer (its error is squared at each), and training from it keeps that "
        "up to float32's floor (shipped: `block-ns-8`)."] + learned_story(res)[1:]),
        "", "![MSE against depth, the learned family and the construction, kappa 10 and "
            "100](assets/results/learned_depth.png)", ""]
    return out


def general_section(res: Results) -> list[str]:
    """One model for every kappa: the general family's one-pass MSE through ``solve`` at N = 15 and every kappa of
    ``results/general/general.json``, beside CG-L, and its passes to ``tol = 1e-10``."""
    data = res.json("general/general.json")
    if not data:
        return []
    kappas = data["kappas"]
    out = ["## One learned model for every condition number", "",
           "Equivariant models fitted layer by layer by least squares on spectra with kappa up to 1e4 "
           "([what we tried](results-tried.md)). MSE of one pass through `solve` at N = 15 (CG-L in brackets), and "
           "the most passes `solve(tol=1e-10)` took on the robustness families and kappa 1e4:", "",
           "| model | " + " | ".join(f"kappa {k:g}" for k in kappas) + " | passes to 1e-10 |",
           "|---|" + "---:|" * (len(kappas) + 1)]
    for name, rec in data["models"].items():
        if not name.startswith("learned-general") and name not in ("learned-L8", "learned-L8-k100"):
            continue
        cells = [f"{e(r['mse'])} ({e(r['cg_mse'])})" for r in rec["one_pass"] if r["n"] == 15]
        out.append(f"| `{name}` | " + " | ".join(cells) + f" | {max(r['max_passes'] for r in rec['to_tol'])} |")
    out += ["", "![The error per eigen-component of each model, beside the construction of the same depth, CG and "
                "the best polynomial](assets/results/general_spectrum.png)", ""]
    return out


def general_story(res: Results) -> list[str]:
    """One sentence: the deepest general model's one-pass MSE at N = 15 over every kappa of the study, against CG-L."""
    data = res.json("general/general.json")
    names = [n for n in (data or {}).get("models", {}) if n.startswith("learned-general")]
    if not names:
        return []
    name = max(names, key=lambda n: data["models"][n]["layers"])
    rows = [r for r in data["models"][name]["one_pass"] if r["n"] == 15]
    L = data["models"][name]["layers"]
    return [f"One model for every kappa, fitted layer by layer on spectra: `{name}` reaches, in one pass through "
            f"`solve` at N = 15, MSE {e(rows[0]['mse'])} at kappa {rows[0]['kappa']:g} to {e(rows[-1]['mse'])} at "
            f"kappa {rows[-1]['kappa']:g} (CG-{L}: {e(rows[0]['cg_mse'])} to {e(rows[-1]['cg_mse'])})."]


def learned_story(res: Results) -> list[str]:
    """The learned family in two sentences: its headline against CG at kappa 10, and kappa 100, outside its
    training distribution. Empty without the learned family's rows."""
    runs = res.family_runs("learned")
    if not runs:
        return []
    top = max(runs)
    r15, r40 = res.depth_row(runs[top], 15), res.depth_row(runs[top], 40)
    head = (f"Trained from random weights, depth pays: `{runs[top]}` reaches MSE {e(r15['model'])} at N = 15 "
            f"against CG-{top}'s {e(r15['cg'])}" + (f", and {e(r40['model'])} at N = 40, outside its training sizes"
                                                 if r40 else ""))
    adam = res.family_runs("depth")
    if top in adam:
        head += f"; Adam from random weights stopped at {e(res.depth_row(adam[top], 15)['model'])} with {top} layers"
    hard = [r for L in sorted(runs) if (r := res.depth_row(runs[L], 15, 100.0))]
    if not hard:
        return [head + "."]
    ratios = [r["model"] / r["cg"] for r in hard]
    tail = (f"At kappa 100, outside their training distribution, the learned models are no better than CG: their "
            f"MSE at N = 15 is {min(ratios):.2g}x to {max(ratios):.2g}x CG-L's (`{runs[top]}` {e(hard[-1]['model'])}"
            f" vs CG-{top} {e(hard[-1]['cg'])})")
    wide = res.family_runs("learned-k100")
    if not wide:
        return [head + ".", tail + "."]
    run = wide[max(wide)]
    w100, w10 = res.depth_row(run, 15, 100.0), res.depth_row(run, 15)
    tail += (f"; trained on {trained_kappa(res, run)}, `{run}` reaches {e(w100['model'])} at kappa 100 "
             f"(CG-{max(wide)}: {e(w100['cg'])}) and {e(w10['model'])} at kappa 10")
    return [head + ".", tail + "."]


def trained_kappa(res: Results, name: str) -> str | None:
    """``"kappa in [10, 100]"`` for a shipped model trained on a kappa range; ``None`` for one kappa (or unknown)."""
    tc = res.shipped.get(name, {}).get("train_config", {})
    return f"kappa in [{tc['kappa']:g}, {tc['kappa_max']:g}]" if tc.get("kappa_max") else None


def beats_cg_section(res: Results) -> list[str]:
    """Where each model's MSE is below CG's at equal depth."""
    rows = []
    for name in res.models:
        cells = [ranges(res.beats_cg(name, k)[0]) for k in (10.0, 100.0)]
        rows.append((name, res.depth(name), cells))
    for fam in res.families:
        for L, run in sorted(res.family_runs(fam).items()):
            cells = [ranges([n for n in res.depth_sizes if (r := res.depth_row(run, n, k)) and r["model"] < r["cg"]])
                     for k in (10.0, 100.0)]
            if fam.startswith("learned") or run in res.shipped_as:
                rows.append((res.shipped_as.get(run, run), L, cells))
    ranged = [f"`{name}` ({k})" for name, _, _ in rows if (k := trained_kappa(res, name))]
    out = ["## Where each model beats CG", "",
           "Sizes where the model's MSE is below CG-L's (for N <= L CG is exact and left out); every model was "
           "trained at kappa 10" + (f" but {', '.join(ranged)}" if ranged else "") + ".", "",
           "| model | L | kappa 10 | kappa 100 |", "|---|---:|---|---|"]
    out += [f"| `{name}` | {L} | N = {cells[0]} | N = {cells[1]} |" for name, L, cells in rows]
    sizes = ", ".join(map(str, res.depth_sizes))
    out += ["", f"The paper's models: every N from {min(res.sizes)} to {max(res.sizes)}; the others: N = {sizes}. "
            + no_single_model(res), ""]
    return out + worse_than_zero(res)


def no_single_model(res: Results) -> str:
    span = [n for n in res.sizes if 5 <= n <= 20]
    single = [m for m in res.models if all((res.mse(m, n) or np.inf) < res.cg(m, n) for n in span)]
    pair = {"block-mixed", "block-finetune"} <= set(res.models) and all(
        res.mse(m, n) < res.cg(m, n) for n in span for m in ["block-mixed" if n <= 9 else "block-finetune"])
    return (("No single model of the paper beats CG at every N from 5 to 20 at kappa 10" if not single else
             f"{', '.join(f'`{s}`' for s in single)} beat CG at every N from 5 to 20 at kappa 10")
            + "; `block-mixed` up to N = 9 and `block-finetune` above " + ("together do." if pair else
                                                                             "together do not either."))


def worse_than_zero(res: Results) -> list[str]:
    bad = []
    for name in res.models:
        worse = [n for n in res.sizes if (res.mse(name, n) or 0.0) > res.mse("zero", n)]
        if worse:
            worst = max(worse, key=lambda n: res.mse(name, n))
            bad.append(f"`{name}` at N = {ranges(worse)} (MSE {e(res.mse(name, worst))} at N = {worst})")
    if not bad:
        return []
    return ["Far outside their training sizes the bare models can be worse than predicting 0: " + "; ".join(bad)
            + ".", ""]


def solve_section(res: Results) -> list[str]:
    """What ``solve`` does on the robustness families, at N = 20 (else the largest size)."""
    data, recs, by = res.robust
    if not data:
        return []
    n = 20 if any(r["n"] == 20 for r in recs) else max(r["n"] for r in recs)
    four = [m for m in dict.fromkeys(r["method"] for r in recs if r["kind"] == "solve" and r["layers"] == 4)]
    out = ["## What `solve` does", "",
           "`solve` repeats passes of the model (its odd part, at its training scale) on the residual (flexible GCR) "
           "until `tol`; the default, `newton-schulz`, is the 12-layer construction. Measured at N = "
           f"{', '.join(map(str, sorted({r['n'] for r in recs})))}; other sizes: "
           f"[warnings](conventions.md#solving-user-systems). One pass at N = {n} (mean relative error; bold: below CG "
           f"at equal depth), and the work to a relative residual of {data['args']['tol']:g}:", "",
           "| family | `newton-schulz` | CG-12 | best 4-layer model | CG-4 | layers to tol | CG iterations |",
           "|---|---:|---:|---|---:|---:|---:|"]
    for fam in dict.fromkeys(r["family"] for r in recs):
        ns, cg12 = by[(fam, n, "newton-schulz", "solve")]["rel"], by[(fam, n, "CG-12", "cg")]["rel"]
        rel4, best = min((by[(fam, n, m, "solve")]["rel"], m) for m in four if (fam, n, m, "solve") in by)
        cg4 = by[(fam, n, "CG-4", "cg")]["rel"]
        tol = by[(fam, n, "newton-schulz", "to_tol")]
        out.append(f"| {fam} | {bold(ns, cg12)} | {e(cg12)} | {bold(rel4, cg4)} (`{best}`) | {e(cg4)} | "
                   f"{tol['layers_median']:.0f} ({100 * tol['converged']:.0f}%) | "
                   f"{by[(fam, n, 'CG', 'to_tol')]['iters_median']:.0f} |")
    return out + ["", "![solve off the training distribution](assets/results/robustness.png)", ""]


def bold(x: float, ref: float) -> str:
    return f"**{e(x)}**" if x < ref else e(x)


def summary_page(res: Results) -> str:
    ev = res.eval["args"]
    lines = ["# Results", "",
             "Rendered from the measured data in `results/` when the site is built; every verdict is computed by a "
             "rule in `docs_hooks/results_pages.py`. Test systems are fresh (seed "
             f"{ev['seed']}), the same for every method, x0 = 0; CG-L is conjugate gradient with L iterations, as "
             "many as the model has layers. Also: [every number](results-tables.md), [what we tried](results-tried.md)"
             " (the lab notebook, and why the presets are what they are).", ""]
    lines += claims_section(res) + depth_section(res) + general_section(res) + beats_cg_section(res)
    lines += solve_section(res)
    lines += ["## Regenerate", "",
              f"`bash scripts/reproduce_paper.sh` retrains and re-evaluates everything: {total_training(res)} of "
              "measured training on 2 CPU cores (per step: [every number](results-tables.md#training-times)).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# every number


def collapsed(title: str, lines: list[str]) -> list[str]:
    """A collapsed admonition (pymdownx.details) holding ``lines``."""
    return [f'??? note "{title}"', ""] + [("    " + line) if line else "" for line in lines] + [""]


def shipped_section(res: Results) -> list[str]:
    out = ["## The shipped models", "",
           "`reference/pretrained/<model>.npz`, package data (`reference.solve(A, b, model=...)`). Training time: "
           "wall clock on 2 CPU cores, as recorded in the checkpoint.", "",
           "| model | layers x heads | sizes | kappa | steps x batch | time | final loss |",
           "|---|---|---|---|---|---:|---|"]
    for name, t in res.shipped.items():
        c = t["train_config"]
        kappa = f"{c['kappa']:g}" if c.get("kappa_max") is None else f"{c['kappa']:g}-{c['kappa_max']:g}"
        shape = f"{c['n_layers']} x {c['n_heads']} ({c['parametrization']})"
        if c["steps"] == 0:  # exported untrained: a hand-set construction
            built_for = c.get("kappa_max") or c["kappa"]
            out.append(f"| `{name}` | {shape} | every N | <= {built_for:g} | 0 (hand-set) | - | - |")
            continue
        out.append(f"| `{name}` | {shape} | {c['n_min']}-{c['n_max']} | {kappa} | {c['steps']} x {c['batch_size']} "
                   f"| {duration(t['train_time_s'])} | {e(t['train_loss'])} "
                   f"({c.get('loss', 'mse')}) |")
    return out + [""]


def times_section(res: Results) -> list[str]:
    rows = run_times(res)
    return ["## Training times", "",
            "What `bash scripts/reproduce_paper.sh` trains: the runs' recorded wall-clock training times on 2 CPU "
            "cores (some runs shared them), the source of every time the README and the scripts quote. Evaluations "
            "are not timed.", "",
            "| step | training time |", "|---|---:|"] + [f"| {label} | {duration(s)} |" for label, s in rows] + [
            f"| **all** | **{total_training(res)}** |", ""]


def ratio_section(res: Results) -> list[str]:
    cols = [(m, res.kappas[0]) for m in res.models]
    lines = [f"Model MSE / CG-L MSE at every N at which CG-L is not exact, kappa {res.kappas[0]:g} (bold: the model "
             "wins; kappa 100: `eval.json` and the plot):", "",
             "| N | " + " | ".join(f"`{m}`" for m, k in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for n in res.sizes:
        if all(res.cg(m, n, k) < 1e-20 for m, k in cols):
            continue
        cells = []
        for m, k in cols:
            a, c = res.mse(m, n, k), res.cg(m, n, k)
            cells.append("-" if a is None else "CG exact" if c < 1e-20 else
                         f"**{a / c:.2g}**" if a < c else f"{a / c:.2g}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "![MSE against N at kappa 100](assets/results/error_vs_n_kappa100.png)"]
    return ["## The paper's models against CG, every N", ""] + collapsed("Model / CG at equal depth, N = "
                                                                          f"{min(res.sizes)} to {max(res.sizes)}",
                                                                          lines)


def layers_section(res: Results) -> list[str]:
    """The error layer by layer, in one sentence: the effective Krylov dimension of each model's final estimate."""
    first = [a for a in res.eval["layers"] if a["kappa"] == res.kappas[0]]
    dims = "; ".join(f"`{a['name']}` at N = {a['n']}: {a['effective_krylov_dim'][-1]:.1f}" for a in first)
    return ["## Layer by layer", "",
            "The estimate read from the query token after each layer, against the best point of x0 + K_k(A, b), a "
            "floor for every method of k matrix-vector products. The k at which that floor reaches the final "
            f"error (the effective Krylov dimension; kappa {res.kappas[0]:g}, 4 layers): {dims}. The block models "
            "trained on several sizes make almost all their progress in the last layer (tutorial 6; every layer: "
            "`eval.json`).", "", "![layer by layer, N = 9](assets/results/layers_N9_kappa10.png)", ""]


def depth_tables(res: Results) -> list[str]:
    if not res.depth_rows:
        return []
    cols = [(k, n) for k in (10.0, 100.0) for n in (15, max(res.depth_sizes))]
    lines = [f"MSE on {res.depth_systems} fresh systems per size; CG-L: conjugate gradient with L iterations. "
             "kappa 100 is outside every model's training distribution.", "",
             "| run | " + " | ".join(f"k{k:g}, N = {n}" for k, n in cols) + " |", "|---|" + "---:|" * len(cols)]
    depths = sorted({r["layers"] for r in res.depth_rows})
    for L in depths:
        row = {(r["kappa"], r["n"]): r["cg"] for r in res.depth_rows if r["layers"] == L}
        lines.append(f"| CG-{L} | " + " | ".join(e(row[c]) if c in row else "-" for c in cols) + " |")
    for fam in res.families:
        for _, run in sorted(res.family_runs(fam).items()):
            cells = [bold(r["model"], r["cg"]) if (r := res.depth_row(run, n, k)) else "-" for k, n in cols]
            lines.append(f"| `{run}` | " + " | ".join(cells) + " |")
    lines += ["", "Bold: below CG-L.", "", "![the depth families](assets/results/depth_family.png)"]
    return ["## The depth studies", ""] + collapsed("Every family and depth at kappa 10 and 100, N = 15 and "
                                                    f"{max(res.depth_sizes)}", lines)


def robustness_tables(res: Results) -> list[str]:
    data, recs, by = res.robust
    if not data:
        return []
    depth = {r["method"]: r["layers"] for r in recs if r["kind"] == "solve"}
    sizes = {m: {r["n"] for r in recs if r["method"] == m} for m in depth}
    # the models trained on one size (full-n9, block-n9) are left to the JSON: far from N = 9 they are not used
    rows = [m for m in depth if not res.shipped.get(m) or res.shipped[m]["train_config"]["n_min"] !=
            res.shipped[m]["train_config"]["n_max"]] if res.shipped else [m for m in depth if len(sizes[m]) > 1]
    rows.append("CG-4")
    out = ["## `solve` off the training distribution, per family", "",
           f"One pass of `solve`, mean relative error over {data['args']['n_systems']} systems per family and N "
           "(bold: below CG at the model's depth, CG-4 or CG-12), at the sizes at which CG-4 is not exact. Each "
           "family changes one thing of the paper's law (uniform "
           "spectrum, kappa 10, b = A x). The models trained at N = 9 only, the bare passes and the work to a "
           "tolerance at every size are in `robustness.json`.", ""]
    for fam in dict.fromkeys(r["family"] for r in recs):
        sizes = sorted({r["n"] for r in recs if r["family"] == fam and r["method"] == "CG-4" and r["rel"] > 1e-12})
        lines = ["| | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for m in rows:
            cells = [("-" if (r := by.get((fam, n, m, "solve" if m in depth else "cg"))) is None else
                      bold(r["rel"], by[(fam, n, f"CG-{depth[m]}", "cg")]["rel"]) if m in depth else e(r["rel"]))
                     for n in sizes]
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        out += collapsed(fam, lines)
    return out


def tables_page(res: Results) -> str:
    files = ", ".join(f"[`{name}`](assets/results/{name})" for name in ASSETS if name.endswith(".json"))
    lines = ["# Results: every number", "",
             "The summary is on the [results page](results.md). The tables below are collapsed: click one to open "
             f"it. Every number measured, in the files the pages are rendered from: {files}.", ""]
    lines += shipped_section(res) + times_section(res) + ratio_section(res) + layers_section(res)
    lines += depth_tables(res) + robustness_tables(res)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the lab notebook


def curves_figure(res: Results, key: str) -> str:
    """The plot of the training curves ``key`` (:data:`CURVES`): the runs' losses are in their entries' text."""
    figure = {"claim3": "claim3_curves", "claim3_48k": "claim3_curves_48k"}.get(key, key)
    if key not in res.curves:
        raise ValueError(f"results/tried.md: no training curves named {key!r} (known: {', '.join(CURVES)})")
    return f"![training curves: {', '.join(res.curves[key])}](assets/results/{figure}.png)"


def tried_page(res: Results) -> str:
    """The lab notebook: ``results/learned/recipe.md`` (with the learned family's training curves), then
    ``results/tried.md``, whose ``<!-- results-curves: KEY -->`` lines become the plot of the curves ``KEY``."""
    lines = ["# What we tried", "",
             "The lab notebook: one dated entry per question, newest first: what was asked, what was run, what it "
             "showed. Training times: [every number](results-tables.md#training-times).", ""]
    general = res.text("general/recipe.md")
    if general:
        lines += [general, ""]
    recipe = res.text("learned/recipe.md")
    if recipe:
        lines += [recipe, ""]
        if "learned_curves" in res.curves:
            lines += ["![training curves of the shipped learned family](assets/results/learned_curves.png)", ""]
    tried = res.text("tried.md")
    lines.append(_CURVES_MARKER.sub(lambda m: curves_figure(res, m.group(1)), tried))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# the README's results section


def readme_block(root: Path = ROOT) -> str:
    """The README's results section, between :data:`README_START` and :data:`README_END`."""
    res = Results(root)
    rows = [(m, "eval") for m in ("block-mixed", "block-finetune", "full-n9") if m in res.models]
    rows += [(run, "depth") for fam in ("depth", "depth-ns") for run in res.family_runs(fam).values()
             if run in res.shipped_as]
    rows += [(run, "depth") for fam in ("learned", "learned-k100")
             for L, run in sorted(res.family_runs(fam).items()) if L >= 4]
    out = [README_START, "## Results at a glance", "",
           "MSE of one pass on fresh systems at kappa 10 (`results/eval`: 1000 systems per N; the depth studies: "
           f"{res.depth_systems}), against CG with as many iterations as the model has layers (CG-L). Every number "
           "and how it was measured: the Results section of the documentation, rendered from `results/` when the site "
           "is built.", "",
           "| model | L | trained on N | N = 9 | N = 15 | N = 20 | CG-L at N = 15 |", "|---|---:|---|---|---|---|---|"]
    for run, source in rows:
        name = res.shipped_as.get(run, run)
        c = res.shipped[name]["train_config"]
        if source == "eval":
            L, cells, cg = res.depth(run), [res.mse(run, n) for n in (9, 15, 20)], res.cg(run, 15)
        else:
            L, cells, cg = c["n_layers"], [(r or {}).get("model") for r in
                                           (res.depth_row(run, n) for n in (9, 15, 20))], res.depth_row(run, 15)["cg"]
        sizes = f"{c['n_min']}-{c['n_max']}" if c["n_min"] != c["n_max"] else f"{c['n_min']}"
        out.append(f"| `{name}` | {L} | {sizes} | " + " | ".join(e(v) if v is not None else "—" for v in cells)
                   + f" | {e(cg)} |")
    out += ["", readme_sentences(res), README_END]
    return "\n".join(out)


def readme_sentences(res: Results) -> str:
    wins = "; ".join(f"`{m}` at N = {ranges(res.beats_cg(m)[0])}" for m in ("block-mixed", "block-finetune")
                     if m in res.models)
    text = f"No trained 4-layer model of the paper beats CG at equal depth everywhere ({wins}; kappa 10). "
    text += " ".join(learned_story(res) + general_story(res))
    return text + (f" Retraining everything (`bash scripts/reproduce_paper.sh`) took {total_training(res)} of "
                   "measured training on 2 CPU cores.")


def update_readme(root: Path = ROOT, check: bool = False) -> bool:
    """Rewrite the README's results section; with ``check``, only say whether it is up to date."""
    path = Path(root) / "README.md"
    text = path.read_text(encoding="utf-8")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    new = text[:start] + readme_block(root) + text[end:]
    if not check and new != text:
        path.write_text(new, encoding="utf-8")
    return new == text


# ---------------------------------------------------------------------------------------------------------------
# what the site gets


def render(root: Path = ROOT) -> dict[str, str]:
    """``{page: Markdown}`` for :data:`PAGES`."""
    res = Results(root)
    return {"results.md": summary_page(res), "results-tables.md": tables_page(res), "results-tried.md": tried_page(res)}


def assets(root: Path = ROOT) -> dict[str, Path]:
    """``{site path: file in results/}``: the figures and data files the pages show or link."""
    return {f"assets/results/{name}": Path(root) / "results" / rel for name, rel in ASSETS.items()
            if (Path(root) / "results" / rel).exists()}
