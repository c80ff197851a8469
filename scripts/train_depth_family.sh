#!/usr/bin/env bash
# The depth family: block models (4 heads, 1/N attention) on N in [2, 20], kappa 10, batch 512,
# lr 3e-3 with cosine decay to 3e-4, STEPS steps per stage (measured times:
# the results pages, "Every number", Training times).
#   L = 4 and L = 2 from scratch (the block-mixed recipe on the wider size range);
#   L = 6 and L = 8 grown from L = 4 (--init-from a shallower checkpoint appends no-op layers,
#   see reference.model.grow_params), at lr 1e-3 (at lr 3e-3 the grown L = 8 diverges); L = 8 from scratch
#   (L8-scratch) at lr 1e-3, to compare. L = 4 is trained from scratch, not grown from L = 2: grown by 2 layers
#   at lr 1e-3 it stays worse than CG-4 (the results pages, "What we tried"). Re-running continues where it stopped
#   (--resume; a stage with its final.npz is skipped).
# Then: python scripts/depth_family_study.py RUNS/depth-L*/final.npz
#   bash scripts/train_depth_family.sh [STEPS_PER_STAGE] [RUNS_DIR] [STAGES]   (STAGES e.g. "L2 L8-scratch")
# The Newton-Schulz family (stages NS-L2 NS-L4 NS-L6 NS-L8, RUNS/depth-ns-L*): attention_norm "none" (the
# construction is exact at every N with it only), --init newton-schulz (reference.constructions), 4 heads, N in
# [2, 20], kappa 10, batch 512; lr scaled to the start's accuracy (Adam moves every weight by ~lr per step, which
# is noise once the model is more accurate than that): L2 1e-3 and L4 1e-4 for 1500 steps; L6 and L8 start at
# float32's floor (MSE ~1e-13), lr 1e-7 for 500 steps (at 1e-5 the MSE of L8 rises from 8e-14 to 1.1e-6 in 50 steps).
#   bash scripts/train_depth_family.sh 0 runs "NS-L4 NS-L2 NS-L8 NS-L6"   (STEPS_PER_STAGE is not used by them)
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then  # the comment above, and nothing else
  sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d;s/^# \{0,1\}//;p;}' "$0"; exit 0
fi
STEPS="${1:-4000}"
RUNS="${2:-runs}"
STAGES="${3:-L4 L8 L6 L2}"  # L8-scratch: optional, a comparison that diverges at this lr (the results pages, "What we tried")
COMMON=(--preset block-mixed --n-min 2 --n-max 20 --batch-size 512 --lr 3e-3 --eval-every 500 --ckpt-every 1000
        --eval-systems 200 --resume)
stage() {  # stage NAME L [extra arguments]: train RUNS/depth-NAME with L layers
  local name="$1" L="$2"; shift 2
  if [ -f "$RUNS/depth-$name/final.npz" ]; then echo "depth-$name: done"; return; fi
  python -m tf_impl.train "${COMMON[@]}" --n-layers "$L" --steps "$STEPS" --out "$RUNS/depth-$name" "$@"
}
for name in $STAGES; do
  case "$name" in
    L4) stage L4 4 ;;
    L2) stage L2 2 ;;
    L6) stage L6 6 --init-from "$RUNS/depth-L4/final.npz" --lr 1e-3 ;;
    L8) stage L8 8 --init-from "$RUNS/depth-L4/final.npz" --lr 1e-3 ;;
    L8-scratch) stage L8-scratch 8 --lr 1e-3 ;;
    NS-L*) L="${name#NS-L}"
      case "$L" in 2) lr=1e-3 steps=1500 ;; 4) lr=1e-4 steps=1500 ;; *) lr=1e-7 steps=500 ;; esac
      if [ -f "$RUNS/depth-ns-L$L/final.npz" ]; then echo "depth-ns-L$L: done"; continue; fi
      python -m tf_impl.train "${COMMON[@]}" --attention-norm none --init newton-schulz --n-layers "$L" \
        --lr "$lr" --warmup 20 --steps "$steps" --eval-every 250 --out "$RUNS/depth-ns-L$L" ;;
    *) echo "unknown stage $name" >&2; exit 2 ;;
  esac
done
