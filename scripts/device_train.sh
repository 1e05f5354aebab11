#!/usr/bin/env bash
# One-shot training on the `device` GPU machine. Resumes from .device-run/ (the previous
# run's checkpoint, carried back in) or else from the shipped model, trains MINUTES of
# wall time, and leaves last.pt, last-opt.pt (each < 16 MiB) and log.jsonl under $OUT.
# Run `bash scripts/prepare_device.sh` here first; then call the device tool with
#   carry: [".whl", ".device-data", ".device-run"]
#   command: bash scripts/device_train.sh 9
set -euo pipefail
MINUTES=${1:-9}
shift || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
INIT=()
if [ -f .device-run/last.pt ]; then
  cp .device-run/last*.pt "$OUT"/
  [ -f .device-run/log.jsonl ] && cp .device-run/log.jsonl "$OUT"/
else
  INIT=(--init pretrained/anr-v1.pt)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m anr_codec.train --data .device-data --cache /tmp/pixel-cache --out "$OUT" \
  --minutes "$MINUTES" --batch 32 --crop 128 --ckpt-every 1000 "${INIT[@]}" "$@" 2>&1 | tail -n 40
ls -la "$OUT"
