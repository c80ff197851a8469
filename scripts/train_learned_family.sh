#!/usr/bin/env bash
# The learned family: block models with L = 2, 4, 6, 8 layers trained from random weights by the presets
# learned-L2 ... learned-L8 (tf_impl/config.py), and learned-L8-k100, the 8-layer one on a range of spectra: 1 head,
# 2 identity copies, attention norm "none", the right-hand side read by the last layer only (b_last_layer), L-BFGS
# on one fixed float64 batch of 256 systems with N in [2, 16] and kappa 10 (L8-k100: kappa log-uniform in
# [10, 100]), 6000 iterations (measured times: the results pages, "Every number"). Every stage is trained with
# each seed of SEEDS (RUNS/learned-<stage>-s<seed>) and the run with the lowest final training loss is kept; the
# 8-layer ones then run twice 6000 more iterations, each from the previous run's final weights
# (RUNS/learned-<stage>-cont, then RUNS/learned-<stage>-cont2: --init-from, one more run in the lineage each, with
# a fresh L-BFGS memory). With --ship the kept runs are written to reference/pretrained/learned-<stage>.npz
# (without the resume state).
# A run resumes where it stopped and is skipped once its final.npz exists.
#   bash scripts/train_learned_family.sh [RUNS_DIR] ["L8 L6 L4 L2 L8-k100"] ["0 1"] [--ship]
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then  # the comment above, and nothing else
  sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d;s/^# \{0,1\}//;p;}' "$0"; exit 0
fi
RUNS="${1:-runs}"
STAGES="${2:-L8 L6 L4 L2 L8-k100}"
SEEDS="${3:-0 1}"
SHIP="${4:-}"
lowest() {  # the checkpoint with the lowest final training loss
  python -c "
import sys
from reference.checkpoint import load_checkpoint_extra
print(min(sys.argv[1:], key=lambda p: load_checkpoint_extra(p)[0]['metrics']['train_loss']))" "$@"
}
for name in $STAGES; do
  for seed in $SEEDS; do
    out="$RUNS/learned-$name-s$seed"
    if [ ! -f "$out/final.npz" ]; then
      python -m tf_impl.train --preset "learned-$name" --seed "$seed" --out "$out" --resume
    fi
  done
  best=$(lowest $(for seed in $SEEDS; do echo "$RUNS/learned-$name-s$seed/final.npz"; done))
  if [[ "$name" == L8* ]]; then
    seed=$(python -c "import sys, json; from reference.checkpoint import load_checkpoint_extra as l
print(l(sys.argv[1])[0]['train_config']['seed'])" "$best")
    for cont in "learned-$name-cont" "learned-$name-cont2"; do
      if [ ! -f "$RUNS/$cont/final.npz" ]; then
        python -m tf_impl.train --preset "learned-$name" --seed "$seed" --init-from "$best" --out "$RUNS/$cont" --resume
      fi
      best="$RUNS/$cont/final.npz"
    done
  fi
  echo "learned-$name: $best"
  if [ "$SHIP" = "--ship" ]; then  # the weights and metadata, paths under RUNS written as runs/... (the default)
    python scripts/ship_checkpoint.py "$best" "reference/pretrained/learned-$name.npz" "$RUNS" --overwrite-shipped
  fi
done
