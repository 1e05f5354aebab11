"""Encode/decode time, peak memory and decoder MACs per pixel of anr-codec.

    python benchmarks/speed.py [IMAGE] [--quality Q] [--threads N] [--runs R]

Times are medians over R runs with the model already loaded. Peak memory is the
process's maximum resident set size, measured in a fresh child process per operation
so each figure includes torch and the model but nothing from the other operations.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anr_codec import Codec  # noqa: E402
from anr_codec.container import parse  # noqa: E402
from anr_codec.images import open_image  # noqa: E402

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "anr_codec/samples/kodim23.png"


def timed(fn, runs):
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def decoder_macs_per_pixel(codec: Codec, data: bytes) -> tuple[float, float]:
    """(token network + ANR) MACs per output pixel at scale 1, and the encoder's per input pixel."""
    m = codec.model
    f = parse(data)
    hd = f.header
    sym = m.coder(hd.quality).decode(f.payload, hd.latent_shape)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        codec._render(m, sym, hd, hd.width, hd.height)
    dec = fc.get_total_flops() / 2 / (hd.width * hd.height)
    x = torch.rand(1, 3, -(-hd.height // 16) * 16, -(-hd.width // 16) * 16)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        m.net.analysis(x, hd.quality - 1)
    enc = fc.get_total_flops() / 2 / (hd.width * hd.height)
    return dec, enc


def peak_rss_child(op: str, image: Path, quality: int, threads: int) -> float:
    """Run one operation in a fresh process; return its peak RSS in MiB."""
    code = (
        "import resource, sys, torch; sys.path.insert(0, %r)\n"
        "torch.set_num_threads(%d)\n"
        "from anr_codec import Codec\n"
        "c = Codec(quality=%d, device='cpu'); d = c.encode(%r)\n"
        "%s\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    ) % (str(Path(__file__).resolve().parents[1]), threads, quality, str(image),
         {"decode1": "c.decode(d)", "decode4": "c.decode(d, scale=4)", "encode": "c.encode(%r)" % str(image)}[op])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path, nargs="?", default=DEFAULT_IMAGE)
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    codec = Codec(device="cpu")
    q = a.quality or codec.qualities()[len(codec.qualities()) // 2]
    img = open_image(a.image)
    data = codec.encode(img, quality=q)
    res = {"image": a.image.name, "size": f"{img.width}x{img.height}", "quality": q, "threads": a.threads,
           "encode_s": timed(lambda: codec.encode(img, quality=q), a.runs),
           "decode_s_scale1": timed(lambda: codec.decode(data), a.runs),
           "decode_s_scale4": timed(lambda: codec.decode(data, scale=4), max(1, a.runs // 2))}
    res["decoder_macs_per_px"], res["encoder_macs_per_px"] = decoder_macs_per_pixel(codec, data)
    for op in ("encode", "decode1", "decode4"):
        res[f"peak_rss_mib_{op}"] = peak_rss_child(op, a.image, q, a.threads)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
