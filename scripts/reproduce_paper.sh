#!/usr/bin/env bash
# Regenerates every shipped model, table and plot of docs/results.md (CPU, ~1.5 hours on 2 cores).
#   bash scripts/reproduce_paper.sh            # train the four presets, evaluate, depth study
set -euo pipefail
cd "$(dirname "$0")/.."
python -m tf_impl.train --preset full-n9 --out runs/full-n9
python -m tf_impl.train --preset block-n9 --out runs/block-n9
python -m tf_impl.train --preset block-mixed --out runs/block-mixed
python -m tf_impl.train --preset block-finetune --init-from runs/block-mixed/final.npz --out runs/block-finetune
for m in full-n9 block-n9 block-mixed block-finetune; do
  cp "runs/$m/final.npz" "reference/pretrained/$m.npz"
done
python -m tf_impl.evaluate reference/pretrained/{full-n9,block-n9,block-mixed,block-finetune}.npz \
  --kappa 10 100 --out results/eval
python scripts/depth_study.py --preset block-mixed --depths 1 2 3 4 6 8 --steps 1500 --batch-size 256
