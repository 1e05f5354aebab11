"""Speed, memory and cost of anr-codec beside compressai's bmshj2018-factorized, same run.

    python benchmarks/speed.py [IMAGE] [--quality Q] [--threads 1,2] [--runs R] [--json OUT] [--model M]

Times are medians over R runs with the model already loaded, for each torch thread
count. Peak memory is the maximum resident set size of a fresh child process that loads
the model, encodes once, and then runs only the measured operation (so each figure
includes torch and the model). MACs per pixel come from torch.utils.flop_counter.
compressai runs with untrained weights (timing does not depend on them) through its own
compress()/decompress(), which include its entropy coder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anr_codec import Codec  # noqa: E402
from anr_codec.container import parse  # noqa: E402
from anr_codec.images import open_image, to_planes  # noqa: E402
import check_checkout  # noqa: E402  (beside this script)

DEFAULT_IMAGE = ROOT / "anr_codec/samples/kodim23.png"


def median_time(fn, runs: int) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation are not what we measure
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def macs(fn) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 2


def anr_figures(img, q: int, runs: int, model: str | None = None) -> dict:
    codec = Codec(quality=q, device="cpu", model=model)
    data = codec.encode(img)
    f = parse(data)
    hd = f.header
    m = codec.model
    y_hat = codec._dequantised(m, f)
    px = hd.width * hd.height
    x = torch.rand(1, 3, -(-hd.height // 16) * 16, -(-hd.width // 16) * 16)
    return {"bytes": len(data),
            "encode_s": median_time(lambda: codec.encode(img), runs),
            "decode_s_scale1": median_time(lambda: codec.decode(data), runs),
            "decode_s_scale4": median_time(lambda: codec.decode(data, scale=4), max(1, runs // 2)),
            "encoder_macs_per_px": macs(lambda: m.net.analysis(x, q - 1)) / px,
            "decoder_macs_per_px": macs(lambda: codec._render(m, y_hat, hd, hd.width, hd.height)) / px}


def compressai_figures(rgb: np.ndarray, runs: int) -> dict:
    from compressai.zoo import bmshj2018_factorized
    net = bmshj2018_factorized(quality=3, pretrained=False).eval().requires_grad_(False)
    net.update(force=True)
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.pad(x, (0, (-w) % 64, 0, (-h) % 64), mode="replicate")
    with torch.inference_mode():
        enc = net.compress(x)

        def decode():
            return net.decompress(enc["strings"], enc["shape"])
        y = net.g_a(x)
        return {"encode_s": median_time(lambda: net.compress(x), runs),
                "decode_s_scale1": median_time(decode, runs),
                "encoder_macs_per_px": macs(lambda: net.g_a(x)) / (h * w),
                "decoder_macs_per_px": macs(lambda: net.g_s(torch.round(y))) / (h * w)}


CHILD = """
import resource, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from anr_codec import Codec
c = Codec(quality={q}, device='cpu', model={model!r})
data = c.encode({image!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{op}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before / 1024, after / 1024)
"""
OPS = {"encode": "c.encode({image!r})", "decode_scale1": "c.decode(data)", "decode_scale4": "c.decode(data, scale=4)"}


def peak_rss_mib(op: str, image: Path, q: int, threads: int, model: str | None = None) -> dict:
    code = CHILD.format(root=str(ROOT), threads=threads, q=q, image=str(image), model=model,
                        op=OPS[op].format(image=str(image)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split()[-2:])
    return {"peak_rss_mib": round(after, 1), "peak_before_op_mib": round(before, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path, nargs="?", default=DEFAULT_IMAGE)
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--model", help="model name or .pt file (default: the shipped default)")
    a = ap.parse_args()
    check_checkout.require()
    img = open_image(a.image)
    rgb = to_planes(img)[0]
    q = a.quality or Codec(device="cpu", model=a.model).qualities()[-1] // 2 + 1
    res = {"image": a.image.name, "size": f"{img.width}x{img.height}", "quality": q,
           "model": Codec(device="cpu", model=a.model).model.name,
           "cpu": f"{torch.get_num_threads()} torch threads available", "by_threads": {}}
    for t in [int(v) for v in a.threads.split(",")]:
        torch.set_num_threads(t)
        row = {"anr": anr_figures(img, q, a.runs, a.model), "bmshj2018_factorized": compressai_figures(rgb, a.runs)}
        row["anr"]["memory"] = {op: peak_rss_mib(op, a.image, q, t, a.model) for op in OPS}
        an, cz = row["anr"], row["bmshj2018_factorized"]
        row["ratio_anr_over_compressai"] = {k: round(an[k] / cz[k], 2) for k in cz}
        res["by_threads"][str(t)] = row
        print(f"threads={t}: " + json.dumps(row), file=sys.stderr)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
