#!/usr/bin/env bash
# Claim 3 ("the full parametrization is the best at N = 9"), settled at a longer budget than the
# presets' 8000 steps: full-n9 and block-n9 each trained STEPS steps (same batch 512, same data law),
# their loss curves in RUNS/<preset>-<NAME>/tb and their final tables compared on the results page.
# (Measured training times: the results pages, "Every number", Training times.)
#   bash scripts/train_claim3.sh [STEPS] [RUNS_DIR] [NAME] [PRESETS]
#   bash scripts/train_claim3.sh 24000 runs                 # runs/full-n9-long, runs/block-n9-long
#   bash scripts/train_claim3.sh 48000 runs 48k full-n9     # one preset only: runs/full-n9-48k
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then  # the comment above, and nothing else
  sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d;s/^# \{0,1\}//;p;}' "$0"; exit 0
fi
STEPS="${1:-24000}"
RUNS="${2:-runs}"
NAME="${3:-long}"
PRESETS="${4:-full-n9 block-n9}"
for preset in $PRESETS; do
  if [ -f "$RUNS/$preset-$NAME/final.npz" ]; then echo "$preset-$NAME: done"; continue; fi
  python -m tf_impl.train --preset "$preset" --steps "$STEPS" --eval-every 1000 --ckpt-every 2000 \
    --out "$RUNS/$preset-$NAME" --resume
done
