#!/usr/bin/env bash
# The depth family: block models (4 heads, 1/N attention) on N in [2, 20], kappa 10, grown layer by layer:
# L = 2 from scratch, then each model starts from the previous one with two no-op layers appended
# (--init-from a shallower checkpoint; see reference.model.grow_params) and trains again.
#   bash scripts/train_depth_family.sh [STEPS_PER_STAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-8000}"
COMMON=(--preset block-mixed --n-min 2 --n-max 20 --batch-size 512 --eval-every 500 --ckpt-every 1000)
python -m tf_impl.train "${COMMON[@]}" --n-layers 2 --steps "$STEPS" --out runs/depth-L2
prev=2
for L in 4 6 8; do
  python -m tf_impl.train "${COMMON[@]}" --n-layers "$L" --steps "$STEPS" --lr 1e-3 --warmup 200 \
    --init-from "runs/depth-L$prev/final.npz" --out "runs/depth-L$L"
  prev=$L
done
