#!/usr/bin/env bash
# Regenerates every shipped model, table and plot of the results pages (CPU, ~3.5 hours on 2 cores).
#   bash scripts/reproduce_paper.sh            # train the four presets and broad, evaluate, robustness, depth study
set -euo pipefail
cd "$(dirname "$0")/.."
python -m tf_impl.train --preset full-n9 --out runs/full-n9
python -m tf_impl.train --preset block-n9 --out runs/block-n9
python -m tf_impl.train --preset block-mixed --out runs/block-mixed
python -m tf_impl.train --preset block-finetune --init-from runs/block-mixed/final.npz --out runs/block-finetune
python -m tf_impl.train --preset broad --out runs/broad    # ~80 min: the model for solve() on users' systems
for m in full-n9 block-n9 block-mixed block-finetune broad; do
  cp "runs/$m/final.npz" "reference/pretrained/$m.npz"
done
python -m tf_impl.evaluate reference/pretrained/{full-n9,block-n9,block-mixed,block-finetune}.npz \
  --kappa 10 100 --out results/eval
python -m tf_impl.evaluate --robustness block-mixed block-finetune block-n9 full-n9 broad \
  --sizes 3 5 9 15 20 30 --n-systems 100 --out results/robustness
python scripts/depth_study.py --preset block-mixed --depths 1 2 3 4 6 8 --steps 1500 --batch-size 256
python scripts/make_results_page.py
