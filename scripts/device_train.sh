#!/usr/bin/env bash
# One-shot training on the `device` GPU machine: start from the newest weights, train
# MINUTES of wall time, leave last.pt (weights + step count, < 16 MiB) and log.jsonl
# under $OUT. The newest weights are .device-run/last.pt when carried (a checkpoint that
# came back from an earlier call), else the shipped model $MODEL (default
# pretrained/anr-v2.pt, else pretrained/anr-v1.pt; its step count continues). Adam's moments do not travel (they would not fit beside the data), so each
# call restarts them, which costs a few hundred steps of warm-up at most.
#
# Here, first: bash scripts/prepare_device.sh
# Then the device tool: carry [".whl", ".device-data"] (+ ".device-run" if you made one),
#   command: bash scripts/device_train.sh 8 --anneal-minutes 1.2
# A second call while the machine is still warm (it waits only ~30 s): copy the returned
# last.pt to .device-run/ and carry that too. On an H200 a step (batch 64, 128x128) takes
# ~0.11 s: the model is small and the loop is launch-bound, so a bigger batch costs little.
# Afterwards: python -m anr_codec.export <files_at>/last.pt pretrained/anr-v1.pt --name anr-v1 \
#     --context-data ../shared/data/train ...
set -euo pipefail
MINUTES=${1:-9}
shift || true
# The GPU machine lacks these packages; elsewhere (a CPU trial run) they are installed.
python3 -c "import compressai, constriction" 2>/dev/null || \
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device-out}
# Train straight into $OUT: if the call is cut off at its time limit, the checkpoints
# written so far (every 500 steps) still come back. last-opt.pt (Adam's moments) is
# larger than what comes back and is left behind.
mkdir -p "$OUT"
if [ -f .device-run/last.pt ]; then
  cp .device-run/last.pt "$OUT"/
  INIT=()
else
  MODEL=${MODEL:-$( [ -f pretrained/anr-v2.pt ] && echo pretrained/anr-v2.pt || echo pretrained/anr-v1.pt )}
  INIT=(--init "$MODEL")
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m anr_codec.train --data .device-data --cache /tmp/pixel-cache --out "$OUT" \
  --minutes "$MINUTES" --batch "${BATCH:-64}" --crop 128 --ckpt-every 500 --log-every 100 \
  "${INIT[@]}" "$@" 2>&1 | tee "$OUT"/train.log || true
tail -n 5 "$OUT"/log.jsonl
rm -f "$OUT"/last-opt.pt
ls -la "$OUT"
