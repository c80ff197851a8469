#!/usr/bin/env bash
# Regenerates every shipped model and the measured data of the results pages (CPU, 2 cores; the measured training
# time of each step: the results pages, "Every number", Training times).
# It replaces the shipped models (reference/pretrained/) and the committed results/, so it asks for the flag:
#   bash scripts/reproduce_paper.sh --overwrite-shipped   # train the four presets and broad, evaluate, robustness,
#                                                         # claim 3 at longer budgets, the depth families, the learned
#                                                         # family; every run in runs/
#   bash scripts/reproduce_paper.sh --help                # this text
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then  # the comment above, and nothing else
  sed -n '2,/^set -euo pipefail$/{/^set -euo pipefail$/d;s/^# \{0,1\}//;p;}' "$0"; exit 0
fi
if [ "${1:-}" != "--overwrite-shipped" ]; then
  echo "error: this script retrains every model and replaces reference/pretrained/ and results/; give" \
    "--overwrite-shipped to do that (--help: what it runs)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
python -m tf_impl.train --preset full-n9 --out runs/full-n9
python -m tf_impl.train --preset block-n9 --out runs/block-n9
python -m tf_impl.train --preset block-mixed --out runs/block-mixed
python -m tf_impl.train --preset block-finetune --init-from runs/block-mixed/final.npz --out runs/block-finetune
python -m tf_impl.train --preset broad --out runs/broad    # the trained model for solve() on users' systems
python -m tf_impl.train --preset newton-schulz --out runs/newton-schulz   # solve's default: hand-set, 0 steps
for m in full-n9 block-n9 block-mixed block-finetune broad newton-schulz; do
  cp "runs/$m/final.npz" "reference/pretrained/$m.npz"
done
python -m tf_impl.evaluate reference/pretrained/{full-n9,block-n9,block-mixed,block-finetune}.npz \
  --kappa 10 100 --out results/eval --overwrite-shipped
python -m tf_impl.evaluate --robustness block-mixed block-finetune block-n9 full-n9 broad newton-schulz \
  --sizes 3 5 9 15 20 30 --n-systems 100 --out results/robustness --overwrite-shipped
# claim 3 at three times the presets' budget, with the loss curves
bash scripts/train_claim3.sh 24000 runs
python scripts/training_curves.py runs/full-n9-long runs/block-n9-long --labels full-n9 block-n9 \
  --title "Claim 3: full vs block at N = 9, 24000 steps" --out results/claim3/curves --overwrite-shipped
bash scripts/train_claim3.sh 48000 runs 48k   # twice that: full-n9 still improves at 24000
python scripts/training_curves.py runs/full-n9-48k runs/block-n9-48k --labels full-n9 block-n9 \
  --title "Claim 3: full vs block at N = 9, 48000 steps" --out results/claim3/curves_48k --overwrite-shipped
# the depth family on N in [2, 20]: L = 2, 4 from scratch, 6 and 8 grown from 4
bash scripts/train_depth_family.sh 4000 runs
cp runs/depth-L4/final.npz reference/pretrained/block-mixed-20.npz   # = python -m tf_impl.train --preset block-mixed-20
# the Newton-Schulz family: L = 2, 4, 6, 8 trained from the construction (--init newton-schulz)
bash scripts/train_depth_family.sh 0 runs "NS-L4 NS-L2 NS-L8 NS-L6"
cp runs/depth-ns-L8/final.npz reference/pretrained/block-ns-8.npz   # = python -m tf_impl.train --preset block-ns-8
python scripts/depth_family_study.py runs/depth-L{2,4,6,8}/final.npz runs/depth-ns-L{2,4,6,8}/final.npz \
  --newton-schulz 2 4 6 8 --out results/depth_family --overwrite-shipped
python scripts/training_curves.py runs/depth-L{2,4,6,8} \
  --title "Depth family: evaluation loss (N in [2, 20])" --out results/depth_family_curves --overwrite-shipped
python scripts/training_curves.py runs/depth-ns-L{2,4,6,8} \
  --title "Newton-Schulz family: evaluation loss (N in [2, 20])" --out results/depth_ns_curves --overwrite-shipped
# the learned family from random weights (L-BFGS, float64): two seeds per stage, the lower training loss shipped
bash scripts/train_learned_family.sh runs "L8 L6 L4 L2 L8-k100" "0 1" --ship
# the general family: fitted layer by layer on spectra (about a minute a model), then its study
bash scripts/train_general_family.sh runs "6 8 10 12" --ship
python scripts/general_study.py --out results/general/general --overwrite-shipped
bash scripts/general_probe.sh results/general/probe.jsonl
python scripts/depth_family_study.py reference/pretrained/learned-L{2,4,6,8}.npz \
  reference/pretrained/learned-L8-k100.npz reference/pretrained/learned-general-L{6,8,10,12}.npz \
  --newton-schulz 2 4 6 8 10 12 --out results/learned/depth --overwrite-shipped \
  --title "Learned (N in [2, 16]; learned-L8-k100: kappa in [10, 100]; learned-general: spectra to 1e4) and the construction"
# the kept run of each stage (the family script prints them; these are the seeds it kept here)
python scripts/training_curves.py runs/learned-L2-s1 runs/learned-L4-s0 runs/learned-L6-s1 runs/learned-L8-s1 \
  runs/learned-L8-cont runs/learned-L8-cont2 runs/learned-L8-k100-s1 runs/learned-L8-k100-cont \
  runs/learned-L8-k100-cont2 \
  --labels learned-L2 learned-L4 learned-L6 learned-L8 learned-L8-cont learned-L8-cont2 learned-L8-k100 \
  learned-L8-k100-cont learned-L8-k100-cont2 --window 50 \
  --title "The learned family: the kept run of each stage (L-BFGS, float64)" --out results/learned/learned_curves \
  --overwrite-shipped
python scripts/make_results_page.py --readme   # the README's results section (mkdocs build renders the pages)
