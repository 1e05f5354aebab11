#!/usr/bin/env bash
# Kodak RD with encoder-side refinement (`--refine`), compared with the baselines and the
# plain anr curve of benchmarks/kodak.sh's last run (run that first, same model).
# Slow: ~30 s per image and quality for 20 steps on one CPU core, so a subset of qualities.
# Usage (repo root): STEPS=20 QUALITIES=1,3,5,7 bash benchmarks/kodak_refine.sh [../shared]
# MODEL=anr-v2 OUT=benchmarks/results/anr-v2 measures that model against its own kodak.sh run.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/check_checkout.py
SHARED=${1:-../shared}
STEPS=${STEPS:-20}
QUALITIES=${QUALITIES:-1,3,5,7}
OUT=${OUT:-benchmarks/results}
MODEL_ARGS=()
[ -n "${MODEL:-}" ] && MODEL_ARGS=(--model "$MODEL")
python -m anrc eval "$SHARED/data/kodak" "${MODEL_ARGS[@]}" -q "$QUALITIES" --refine "$STEPS" --progress --baselines none \
  --json "$OUT/kodak-refine$STEPS.json" -f | tee "$OUT/kodak-refine$STEPS.txt"
python benchmarks/bd_table.py "$OUT/kodak.json" "$OUT/kodak-refine$STEPS.json" | tee -a "$OUT/kodak-refine$STEPS.txt"
