#!/usr/bin/env bash
# The general family: equivariant block models with L = 6, 8, 10, 12 layers (1 head, 2 identity copies, attention
# norm "none", b read by the last layer only) fitted layer by layer by least squares on 256 spectra of 16
# eigenvalues log-uniform in [1e-4, 1.1] (presets learned-general-L6 ... learned-general-L12, tf_impl/config.py;
# docs/concepts.md, sections 11-12): one stage a step, the readout then each layer, about a second each.
# RUNS/learned-general-L<L> holds each run; it resumes where it stopped and is skipped once its final.npz exists.
# With --ship the runs are written to reference/pretrained/learned-general-L<L>.npz (without the resume state),
# replacing the shipped files.
#   bash scripts/train_general_family.sh [RUNS_DIR] ["6 8 10 12"] [--ship]
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
RUNS="${1:-runs}"
DEPTHS="${2:-6 8 10 12}"
SHIP="${3:-}"
for L in $DEPTHS; do
  out="$RUNS/learned-general-L$L"
  if [ ! -f "$out/final.npz" ]; then
    python -m tf_impl.train --preset "learned-general-L$L" --out "$out" --resume
  fi
  if [ "$SHIP" = "--ship" ]; then  # the weights and metadata, paths under RUNS written as runs/... (the default)
    python scripts/ship_checkpoint.py "$out/final.npz" "reference/pretrained/learned-general-L$L.npz" "$RUNS" --overwrite-shipped
  fi
done
