#!/usr/bin/env bash
# The depth family: block models (4 heads, 1/N attention) on N in [2, 20], kappa 10, batch 512.
#   L = 4 from scratch (the block-mixed recipe on the wider size range);
#   L = 8 grown from L = 4 (--init-from a shallower checkpoint appends no-op layers, see
#   reference.model.grow_params) at the full learning rate, and L = 8 from scratch, to compare;
#   L = 16 grown from the better L = 8.
# The previous recipe (L = 2 from scratch, then grown by 2 layers at lr 1e-3) left L = 4 worse than
# CG-4 (docs/results.md, "what we tried"). Re-running continues where it stopped (--resume; a stage
# with its final.npz is skipped).
#   bash scripts/train_depth_family.sh [STEPS_PER_STAGE] [RUNS_DIR]
set -euo pipefail
STEPS="${1:-8000}"
RUNS="${2:-runs}"
COMMON=(--preset block-mixed --n-min 2 --n-max 20 --batch-size 512 --lr 3e-3 --eval-every 500 --ckpt-every 1000
        --resume)
stage() {  # stage NAME L [extra arguments]: train RUNS/depth-NAME with L layers
  local name="$1" L="$2"; shift 2
  if [ -f "$RUNS/depth-$name/final.npz" ]; then echo "depth-$name: done"; return; fi
  python -m tf_impl.train "${COMMON[@]}" --n-layers "$L" --steps "$STEPS" --out "$RUNS/depth-$name" "$@"
}
stage L4 4
stage L8-grown 8 --init-from "$RUNS/depth-L4/final.npz"
stage L8 8
best=$(python - "$RUNS" <<'PY'
import json, sys
from reference.checkpoint import load_checkpoint_extra
loss = {n: load_checkpoint_extra(f"{sys.argv[1]}/depth-{n}/final.npz")[0]["metrics"]["eval_loss"] for n in ("L8", "L8-grown")}
print(min(loss, key=loss.get))
PY
)
stage L16-grown 16 --init-from "$RUNS/depth-$best/final.npz"
