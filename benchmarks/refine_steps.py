"""What encoder-side refinement buys per step count, on training crops (never Kodak).

    python benchmarks/refine_steps.py [--steps 0,10,20,40] [--qualities 1,3,5,7] [--count 6]
                                      [--cell-fraction 0.25] [--lr 0.04]

Codes fixed centre crops of training images (those of compare_checkpoints.py) with real
files and decodes, then prints mean bpp, PSNR (of the mean MSE) and encode seconds per
quality and step count, and the BD-rate / BD-PSNR of each step count against none.
This is where the refinement's settings were chosen; Kodak only measures the result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from compare_checkpoints import crops

from anr_codec import Codec
from anr_codec import refine as anr_refine
from anr_codec.metrics import bd_psnr, bd_rate, psnr_from_mse


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--steps", default="0,10,20,40")
    p.add_argument("--qualities", default="1,3,5,7")
    p.add_argument("--count", type=int, default=6, help="how many crops (spread over both sources)")
    p.add_argument("--size", default="384x320", help="centre crop WxH")
    p.add_argument("--model", default=None)
    p.add_argument("--cell-fraction", type=float, default=None,
                   help="share of token cells rendered per refinement step (default: the library's)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam step at the highest quality, in quantiser steps (default: the library's)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    images = crops(args.data, w, h)
    images = images[:: max(1, len(images) // args.count)][: args.count]
    images = [(x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for x in images]
    steps = [int(s) for s in args.steps.split(",")]
    qs = [int(q) for q in args.qualities.split(",")]
    if args.cell_fraction is not None:
        # Not an encoder option users need: set the module default that refine() reads.
        anr_refine.CELL_FRACTION = args.cell_fraction
    if args.lr is not None:
        anr_refine.LEARNING_RATE = args.lr
    codec = Codec(device="cpu", model=args.model)
    print(f"{len(images)} crops of {w}x{h}; model {codec.model.name}; {torch.get_num_threads()} threads; "
          f"cell fraction {anr_refine.CELL_FRACTION}; lr {anr_refine.LEARNING_RATE}")
    curves = {}
    for st in steps:
        bpp, psnr = [], []
        for q in qs:
            bits, mse, secs = [], [], []
            for img in images:
                t = time.perf_counter()
                data = codec.encode(img, quality=q, refine=st)
                secs.append(time.perf_counter() - t)
                out = np.asarray(codec.decode(data)).astype(np.float64)
                bits.append(8 * len(data) / (img.shape[0] * img.shape[1]))
                mse.append(((out - img) ** 2).mean())
            bpp.append(float(np.mean(bits)))
            psnr.append(psnr_from_mse(float(np.mean(mse)), 255.0))
            print(f"steps {st:>3} q{q}: {bpp[-1]:.4f} bpp {psnr[-1]:.2f} dB  encode {np.mean(secs):.2f} s", flush=True)
        curves[st] = (bpp, psnr)
    base = curves[steps[0]]
    for st in steps[1:]:
        r = bd_rate(base[0], base[1], *curves[st])
        d = bd_psnr(base[0], base[1], *curves[st])
        print(f"steps {st} against {steps[0]}: BD-rate {r:+.1f}%, BD-PSNR {d:+.3f} dB")


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    main()
