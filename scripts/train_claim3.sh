#!/usr/bin/env bash
# Claim 3 ("the full parametrization is the best at N = 9"), settled at a longer budget than the
# presets' 8000 steps: full-n9 and block-n9 each trained STEPS steps (same batch 512, same data law),
# their loss curves in OUT/tb and their final tables compared on the results page.
# (24000 steps: full-n9 ~30 min, block-n9 ~20 min alone on 2 cores.)
#   bash scripts/train_claim3.sh [STEPS] [RUNS_DIR]
set -euo pipefail
STEPS="${1:-24000}"
RUNS="${2:-runs}"
for preset in full-n9 block-n9; do
  if [ -f "$RUNS/$preset-long/final.npz" ]; then echo "$preset-long: done"; continue; fi
  python -m tf_impl.train --preset "$preset" --steps "$STEPS" --eval-every 1000 --ckpt-every 2000 \
    --out "$RUNS/$preset-long" --resume
done
