#!/usr/bin/env bash
# The experiments of the lab notebook's entry "Learning a general solver": each method of scripts/general_probe.py
# on the 8-layer model and spectra with kappa up to 1000, seeds 0 and 1; one JSON line each into OUT.
#   bash scripts/general_probe.sh [OUT (default runs/general/probe.jsonl)]
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then  # the comment above, and nothing else
  sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d;s/^# \{0,1\}//;p;}' "$0"; exit 0
fi
OUT="${1:-runs/general/probe.jsonl}"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for seed in 0 1; do
  python scripts/general_probe.py greedy --seed "$seed" >> "$OUT"
  python scripts/general_probe.py greedy-no-constant --seed "$seed" >> "$OUT"
  python scripts/general_probe.py greedy-descent --seed "$seed" --iters 200 >> "$OUT"
  python scripts/general_probe.py lbfgs --seed "$seed" --iters 3000 >> "$OUT"
  python scripts/general_probe.py lbfgs-log --seed "$seed" --iters 3000 >> "$OUT"
done
