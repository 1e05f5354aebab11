"""Peak memory and time of encoding and decoding one big photo (default 6000x4000).

    python benchmarks/big_image.py [--size 6000x4000] [--quality 5] [--threads 1] [--keep DIR]

A synthetic photo-like image (smooth gradients, edges, noise) is written as a PNG; then
encode (PNG path -> .anr) and decode (.anr -> PIL image at the coded size) each run in a
fresh child process, which reports its wall time and peak resident set size (getrusage
ru_maxrss: torch, the model and everything the operation allocated). "baseline" is the
peak after importing and loading the model, before the operation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {root!r})
from anr_codec import Codec
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
codec = Codec(device="cpu")
codec.model
base = peak()
t = time.perf_counter()
if {op!r} == "encode":
    data = codec.encode({src!r}, quality={quality})
    open({dst!r}, "wb").write(data)
    extra = {{"bytes": len(data)}}
else:
    img = codec.decode({src!r})
    extra = {{"size": list(img.size), "mode": img.mode}}
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_rss": peak(), "baseline_rss": base, **extra}}))
"""


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields, a few hard edges and sensor-like noise, built in row bands."""
    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint8)
    x = np.arange(w, dtype=np.float32)
    for r0 in range(0, h, 256):
        y = np.arange(r0, min(h, r0 + 256), dtype=np.float32)[:, None]
        for c in range(3):
            v = 128 + 90 * np.sin(x / (300 + 40 * c) + c) * np.cos(y / (210 - 30 * c) - c)
            v += 30 * np.sign(np.sin(x / 500 + y / 700 + c))             # edges
            v += rng.normal(0, 4, v.shape).astype(np.float32)             # noise
            out[r0:r0 + len(y), :, c] = np.clip(v, 0, 255)
    return out


def run_child(op: str, src: Path, dst: Path, quality: int, threads: int) -> dict:
    code = CHILD.format(threads=threads, root=str(ROOT), op=op, src=str(src), dst=str(dst), quality=quality)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{op} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--quality", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="folder to keep the PNG and .anr in")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        d = a.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        png, anr = d / f"photo-{w}x{h}.png", d / f"photo-{w}x{h}.anr"
        t = time.perf_counter()
        Image.fromarray(photo(w, h)).save(png, compress_level=1)
        print(f"{w}x{h} test image written in {time.perf_counter() - t:.1f} s ({png.stat().st_size / 1e6:.0f} MB PNG)")
        gb = 1 << 30
        for op, src in (("encode", png), ("decode", anr)):
            r = run_child(op, src, anr, a.quality, a.threads)
            more = f"{r['bytes']} bytes, {8 * r['bytes'] / (w * h):.3f} bpp" if op == "encode" else \
                f"{r['size'][0]}x{r['size'][1]} {r['mode']}"
            print(f"{op}: {r['seconds']:.1f} s, peak RSS {r['peak_rss'] / gb:.2f} GiB "
                  f"(baseline after loading the model {r['baseline_rss'] / gb:.2f} GiB); {more}")
    return 0


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    sys.exit(main())
