#!/usr/bin/env bash
# The depth family: block models (4 heads, 1/N attention) on N in [2, 20], kappa 10, grown layer by layer:
# L = 2 from scratch, then each model starts from the previous one with two no-op layers appended
# (--init-from a shallower checkpoint; see reference.model.grow_params) and trains again.
# Re-running continues where it stopped (--resume; a stage with its final.npz is skipped).
#   bash scripts/train_depth_family.sh [STEPS_PER_STAGE] [RUNS_DIR]
set -euo pipefail
STEPS="${1:-8000}"
RUNS="${2:-runs}"
COMMON=(--preset block-mixed --n-min 2 --n-max 20 --batch-size 512 --eval-every 500 --ckpt-every 1000 --resume)
stage() {  # stage L: train runs/depth-L<L> with the extra arguments
  local L="$1"; shift
  if [ -f "$RUNS/depth-L$L/final.npz" ]; then echo "depth-L$L: done"; return; fi
  python -m tf_impl.train "${COMMON[@]}" --n-layers "$L" --steps "$STEPS" --out "$RUNS/depth-L$L" "$@"
}
stage 2
prev=2
for L in 4 6 8; do
  stage "$L" --lr 1e-3 --warmup 200 --init-from "$RUNS/depth-L$prev/final.npz"
  prev=$L
done
