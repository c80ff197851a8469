"""The results pages and the README's results section, from the measured data in ``results/``.

The pages are not committed: ``mkdocs build`` renders them (``docs_hooks/results.py``). This command is for
the README, which is committed, and for reading the pages without building the site. ``--readme`` and ``--check``
also cover the "which model when" table of README.md and docs/index.md (``docs_hooks/model_guide.py``).

    python scripts/make_results_page.py --readme         # rewrite README.md's results section (and the tables)
    python scripts/make_results_page.py --check          # exit 1 if README.md's results section is stale
    python scripts/make_results_page.py --out preview    # the pages (Markdown) and their figures, in preview/

The rendering and its rules are in ``docs_hooks/results_pages.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docs_hooks import model_guide, results_pages  # noqa: E402  (the repository root is not a package)


def main(argv=None) -> int:
    """Exit status 0, 1 (``--check``: the README is stale) or 2 with one ``error:`` line naming the file and the
    field of bad data under ``results/`` (``results_pages.ResultsError``)."""
    try:
        return _main(argv)
    except results_pages.ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's results section")
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md's results section is not up to date")
    ap.add_argument("--out", type=Path, help="write the pages and their figures to this folder")
    args = ap.parse_args(argv)
    if not (args.readme or args.check or args.out):
        ap.error("nothing to do: give --readme, --check or --out")
    if args.check and not results_pages.update_readme(ROOT, check=True):
        print("README.md: the results section differs from results/; run "
              "python scripts/make_results_page.py --readme", file=sys.stderr)
        return 1
    if args.check and model_guide.update(ROOT, check=True):
        print(f"{', '.join(model_guide.update(ROOT, check=True))}: the model table differs from "
              f"{model_guide.DATA}; run python scripts/make_results_page.py --readme", file=sys.stderr)
        return 1
    if args.readme:
        results_pages.update_readme(ROOT)
        model_guide.update(ROOT)
        print("README.md: results section written; README.md, docs/index.md: model table written")
    if args.out:
        pages = results_pages.render(ROOT)
        for name, text in pages.items():
            (args.out / name).parent.mkdir(parents=True, exist_ok=True)
            (args.out / name).write_text(text, encoding="utf-8")
        for uri, path in results_pages.assets(ROOT).items():
            (args.out / uri).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, args.out / uri)
        words = sum(results_pages.words(t) for t in pages.values())
        print(f"wrote {', '.join(pages)} to {args.out} ({words} words; budget {results_pages.WORD_BUDGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
