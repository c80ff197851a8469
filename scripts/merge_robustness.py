"""Merge the outputs of several ``python -m tf_impl.evaluate --robustness`` runs into one folder.

The runs see the same systems (a family's systems depend only on the family, N and the seed), so the
records of different models can be joined; the baseline records (CG, Krylov, CG to tol), equal in
every run, are kept once. Writes ``OUT/robustness.{json,md,png}``.

    python scripts/merge_robustness.py runs/robustness-shipped runs/robustness-broad --out results/robustness
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reference.robustness import markdown
from tf_impl.evaluate import plot_robustness, write_json


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="folders holding robustness.json")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    models, records, seen, first = {}, [], set(), None
    for run in args.runs:
        data = json.loads((Path(run) / "robustness.json").read_text())
        first = first or data["args"]
        for key in ("seed", "n_systems", "tol", "sizes"):
            if data["args"][key] != first[key]:
                raise SystemExit(f"error: {run} was run with another {key} ({data['args'][key]} vs {first[key]})")
        models.update(data["models"])
        for r in data["records"]:
            key = (r["family"], r["n"], r["method"], r["kind"])
            if key not in seen:
                seen.add(key)
                records.append(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "robustness.json", {"args": first, "models": models, "records": records,
                                         "merged_from": list(args.runs)})
    md = ["# solve() off the training distribution", "",
          f"Models: {', '.join(f'`{m}`' for m in models)}; {first['n_systems']} systems per (family, N), seed "
          f"{first['seed']}. `solve`: one pass of `reference.solve` (normalised, odd part); `bare`: the model on the "
          "system as given (the paper's use).", "", markdown(records, models, first["sizes"], tol=first["tol"])]
    (out / "robustness.md").write_text("\n".join(md) + "\n")
    plot_robustness(records, models, out / "robustness.png")
    print(f"wrote {out}/robustness.json, robustness.md, robustness.png ({len(records)} records, models {list(models)})")


if __name__ == "__main__":
    main()
