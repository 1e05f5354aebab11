#!/usr/bin/env bash
# Prepare what a GPU training run on the `device` machine needs, inside the repo (ignored):
#   .whl/          cp312 wheels of the packages that machine lacks
#   .device-data/  the training images that fit beside the rest (< 64 MiB travel in all):
#                  BSDS500 JPEGs byte-for-byte, then the Wikipedia PNGs as JPEG quality 85
#                  (4:4:4), up to BUDGET_MIB. A second call carrying .device-run needs room:
#                  rm -r .device-data and run this again after copying .device-run in.
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
# The training images go in until what travels reaches BUDGET_MIB (default 62 of the 64):
# BSDS500 JPEGs byte-for-byte first, then the Wikipedia PNGs as JPEG q85 (4:4:4), each
# in a fixed order, so a bigger repo (two shipped models) simply carries fewer images.
if [ ! -d .device-data/bsds ]; then
  mkdir -p .device-data
  python3 - "$SRC" "${BUDGET_MIB:-62}" <<'PY'
import io, os, subprocess, sys
from pathlib import Path
from PIL import Image
src, budget = Path(sys.argv[1]), int(sys.argv[2]) << 20
tracked = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.split(b"\0")
used = sum(os.path.getsize(p) for p in tracked if p and os.path.isfile(p))
used += sum(p.stat().st_size for d in (".whl", ".device-run") if Path(d).is_dir() for p in Path(d).rglob("*") if p.is_file())
def add(name, data):
    global used
    if used + len(data) > budget:
        return False
    out = Path(".device-data") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    used += len(data)
    return True
n = 0
for p in sorted(src.glob("bsds500/*/*.jpg")):
    n += add(f"bsds/{p.name}", p.read_bytes())
for p in sorted(src.rglob("*.png")):
    buf = io.BytesIO()
    Image.open(p).convert("RGB").save(buf, "JPEG", quality=85, subsampling=0)
    n += add(f"wiki/{p.stem}.jpg", buf.getvalue())
print(f"{n} training images, {used / 2**20:.1f} MiB travels")
PY
fi
du -sh .whl .device-data
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -scb .whl .device-data $( [ -d .device-run ] && echo .device-run ) | tail -1 | cut -f1)
echo "travels: $(( (tracked + carried) / 1048576 )) MiB of 64 (tracked $tracked + carried $carried bytes)"
