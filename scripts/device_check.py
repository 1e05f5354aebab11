"""GPU checks for the `device` machine: exact decoding across devices, and GPU decode speed.

    python scripts/device_check.py [--sizes 768x512,3840x2160] [--json OUT]

1. Cross-device symbols: each test image is encoded on CUDA and on the CPU; each file is
   entropy-decoded by a codec on the other device, and the symbols and their CRC
   must match the header (the entropy decoder never sees a float from the network, so
   this holds by construction; this script checks it on real hardware).
2. Decode time on the GPU (and on the CPU for comparison) at scale 1 and scale 4 for a
   768x512 image and a 4K image, model loaded, median of 3 (CUDA synchronised).
Runs on a CPU-only machine too (then only the CPU columns are filled), which is how it is
tried before spending device time. Exit status 1 if any symbol check fails.

On the device machine (after `bash scripts/prepare_device.sh` here), with carry [".whl"]:
    python3 -c "import compressai" 2>/dev/null || python3 -m pip install -q --no-index --no-deps \
      --target /tmp/site .whl/*.whl; PYTHONPATH=/tmp/site:$PWD python3 scripts/device_check.py --json $OUT/check.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anr_codec import Codec  # noqa: E402
from anr_codec.container import parse  # noqa: E402
from anr_codec.entropy import symbols_checksum  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "anr_codec/samples/kodim23.png"


def test_image(w: int, h: int) -> np.ndarray:
    """The bundled sample tiled/cropped to w x h: real photo statistics at any size."""
    from PIL import Image
    src = np.asarray(Image.open(SAMPLE).convert("RGB"))
    reps = (-(-h // src.shape[0]), -(-w // src.shape[1]), 1)
    return np.ascontiguousarray(np.tile(src, reps)[:h, :w])


def symbols_ok(codec: Codec, data: bytes) -> bool:
    f = parse(data)
    hd = f.header
    sym = codec.model.coder(hd.quality).decode(f.payload, hd.latent_shape)
    return symbols_checksum(sym) == hd.symbols_crc


def timed(fn, device: str, runs: int = 3) -> float:
    fn()
    ts = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="768x512,3840x2160")
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--skip-cpu-timing", action="store_true", help="CPU timing of a 4K scale-4 decode is slow")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    codecs = {d: Codec(quality=a.quality, device=d) for d in devices}
    report = {"devices": devices, "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
              "cross_device": [], "decode_s": {}}
    ok = True
    for size in a.sizes.split(","):
        w, h = map(int, size.split("x"))
        img = test_image(w, h)
        files = {d: codecs[d].encode(img) for d in devices}
        for enc_dev, data in files.items():
            for dec_dev in devices:
                good = symbols_ok(codecs[dec_dev], data)
                ok &= good
                report["cross_device"].append({"size": size, "encoded_on": enc_dev, "decoded_on": dec_dev,
                                               "symbols_match_crc": good})
        data = files[devices[-1]]
        for d in devices:
            for scale in (1, 4):
                if d == "cpu" and a.skip_cpu_timing and scale == 4 and w * h > 1_000_000:
                    continue
                report["decode_s"][f"{size} {d} scale {scale}"] = round(
                    timed(lambda: codecs[d].decode(data, scale=scale), d), 3)
        print(json.dumps(report), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
