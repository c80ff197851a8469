#!/usr/bin/env bash
# The learned family: block models with L = 2, 4, 6, 8 layers trained from random weights by the presets
# learned-L2 ... learned-L8 (tf_impl/config.py): 1 head, 2 identity copies, attention norm "none", the right-hand
# side read by the last layer only (b_last_layer), L-BFGS on one fixed float64 batch of 256 systems with N in
# [2, 16] and kappa 10, 3000 iterations. Each stage resumes where it stopped and is skipped once its final.npz
# exists; the final checkpoints are copied to reference/pretrained/ with --ship.
#   bash scripts/train_learned_family.sh [RUNS_DIR] ["L8 L6 L4 L2"] [--ship]
set -euo pipefail
RUNS="${1:-runs}"
STAGES="${2:-L8 L6 L4 L2}"
SHIP="${3:-}"
for name in $STAGES; do
  out="$RUNS/learned-$name"
  if [ ! -f "$out/final.npz" ]; then
    python -m tf_impl.train --preset "learned-$name" --out "$out" --resume
  fi
  if [ "$SHIP" = "--ship" ]; then cp "$out/final.npz" "reference/pretrained/learned-$name.npz"; fi
done
