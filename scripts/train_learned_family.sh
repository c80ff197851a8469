#!/usr/bin/env bash
# The learned family: block models with L = 2, 4, 6, 8 layers trained from random weights by the presets
# learned-L2 ... learned-L8 (tf_impl/config.py): 1 head, 2 identity copies, attention norm "none", the right-hand
# side read by the last layer only (b_last_layer), L-BFGS on one fixed float64 batch of 256 systems with N in
# [2, 16] and kappa 10, 6000 iterations (L8 ~12 min, two runs side by side on 2 cores). Every depth is trained
# with each seed of SEEDS (RUNS/learned-L<L>-s<seed>); with --ship the run with the lowest final training loss
# is copied to reference/pretrained/learned-L<L>.npz (its lineage records the seed). A run resumes where it
# stopped and is skipped once its final.npz exists.
#   bash scripts/train_learned_family.sh [RUNS_DIR] ["L8 L6 L4 L2"] ["0 1"] [--ship]
set -euo pipefail
RUNS="${1:-runs}"
STAGES="${2:-L8 L6 L4 L2}"
SEEDS="${3:-0 1}"
SHIP="${4:-}"
for name in $STAGES; do
  for seed in $SEEDS; do
    out="$RUNS/learned-$name-s$seed"
    if [ ! -f "$out/final.npz" ]; then
      python -m tf_impl.train --preset "learned-$name" --seed "$seed" --out "$out" --resume
    fi
  done
  if [ "$SHIP" = "--ship" ]; then
    best=$(python -c "
import sys
from reference.checkpoint import load_checkpoint_extra
runs = sys.argv[1:]
print(min(runs, key=lambda p: load_checkpoint_extra(p)[0]['metrics']['train_loss']))
" $(for seed in $SEEDS; do echo "$RUNS/learned-$name-s$seed/final.npz"; done))
    echo "learned-$name: shipping $best"
    cp "$best" "reference/pretrained/learned-$name.npz"
  fi
done
