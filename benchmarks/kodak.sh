#!/usr/bin/env bash
# The numbers in the README and the model card: Kodak RD of every shipped quality beside
# Pillow's JPEG, WebP, JPEG 2000 and AVIF measured in the same run, plus the published
# CompressAI curves for reference, and the super-resolution table on Set5 + Set14.
# Usage (repo root): bash benchmarks/kodak.sh [../shared]
# MODEL=anr-v2 (a name or .pt file) measures that model instead of the default one;
# OUT=DIR writes elsewhere than benchmarks/results.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/check_checkout.py
SHARED=${1:-../shared}
OUT=${OUT:-benchmarks/results}
MODEL_ARGS=()
[ -n "${MODEL:-}" ] && MODEL_ARGS=(--model "$MODEL")
mkdir -p "$OUT"
# The super-resolution sets run beside the Kodak sweep (each is mostly one core's work), so
# the per-image seconds in these results come from a shared 2-core machine.
(
  for set in Set5 Set14; do
    python -m anrc eval-sr "$SHARED/data/sr/$set" --scale 2,3,4 "${MODEL_ARGS[@]}" --json "$OUT/sr-$set.json" -f > "$OUT/sr-$set.txt"
  done
) &
sr=$!
python -m anrc eval "$SHARED/data/kodak" "${MODEL_ARGS[@]}" --progress --baselines jpeg,webp,jpeg2000,avif \
  --reference "$SHARED/anchors/kodak_compressai_published.tsv" \
  --json "$OUT/kodak.json" --plot "$OUT/kodak.png" -f | tee "$OUT/kodak.txt"
wait "$sr"
cat "$OUT/sr-Set5.txt" "$OUT/sr-Set14.txt"
