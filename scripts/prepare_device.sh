#!/usr/bin/env bash
# Prepare what a GPU training run on the `device` machine needs, inside the repo (ignored):
#   .whl/          cp312 wheels of the packages that machine lacks
#   .device-data/  the training images, compact enough to travel (< 64 MiB with the rest):
#                  BSDS500 JPEGs byte-for-byte, the Wikipedia PNGs as JPEG quality 85 (4:4:4);
#                  q85 keeps a first call at ~57 MiB (the repo itself is ~15 MB with the
#                  13 MB model). A second call carrying .device-run (~11 MB since the token
#                  network grew) goes over 64 MiB: move .device-data/wiki aside for it.
# Usage (repo root): bash scripts/prepare_device.sh [../shared/data/train]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data/train}
for p in /.whl/ /.device-data/ /.device-run/; do
  grep -qxF "$p" .git/info/exclude || echo "$p" >> .git/info/exclude
done
if [ ! -d .whl ]; then
  pip_dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$@"; }
  pip_dl compressai==1.2.8 constriction pytorch-msssim
fi
if [ ! -d .device-data/bsds ]; then
  mkdir -p .device-data/bsds
  cp "$SRC"/bsds500/train/*.jpg "$SRC"/bsds500/test/*.jpg .device-data/bsds/ 2>/dev/null || \
    find "$SRC" -name '*.jpg' -exec cp {} .device-data/bsds/ \;
fi
if [ ! -d .device-data/wiki ]; then
  mkdir -p .device-data/wiki
  python3 - "$SRC" <<'PY'
import sys
from pathlib import Path
from PIL import Image
for p in sorted(Path(sys.argv[1]).rglob("*.png")):
    Image.open(p).convert("RGB").save(Path(".device-data/wiki") / (p.stem + ".jpg"), quality=85, subsampling=0)
PY
fi
du -sh .whl .device-data
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -scb .whl .device-data $( [ -d .device-run ] && echo .device-run ) | tail -1 | cut -f1)
echo "travels: $(( (tracked + carried) / 1048576 )) MiB of 64 (tracked $tracked + carried $carried bytes)"
