"""Can a super-resolution head learn at all? Clean x2 super-resolution, no codec.

    python benchmarks/sr_head_readouts.py [--steps 400]

Two heads on the same conv body (3x3 stem, 4 residual blocks, 64 channels) learn the
residual over bicubic upscaling of uncoded 48x48 training crops (antialiased bicubic
downscale, 8-bit), batch 8, Adam 1e-3, from zero-initialised outputs: one reads out with
a stride-1 ANR (the readout of anr_codec.detail), one with a sub-pixel convolution (fixed
scale). Printed: the mean gain over bicubic per 100 steps. Set against the same head on
coded inputs (`python -m anr_codec.train_detail`'s log), it tells whether the head or
its input limits super-resolution. Training crops only.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anr_codec.anr import ANRDecoder
from anr_codec.data import CropSampler, downscale
from anr_codec.detail import ResBlock

SCALE, LR, BATCH = 2, 48, 8


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(64) for _ in range(4)))

    def features(self, lr):
        return F.relu(self.body(self.stem(lr - 0.5)))


class ShuffleHead(Body):
    def __init__(self):
        super().__init__()
        self.out = nn.Conv2d(64, 3 * SCALE * SCALE, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, lr):
        return F.pixel_shuffle(self.out(self.features(lr)), SCALE)


class AnrHead(Body):
    def __init__(self):
        super().__init__()
        self.to_tokens = nn.Conv2d(64, 32, 1)
        self.anr = ANRDecoder(32, 4, 64, n_freqs=6, max_freq=8.0, stride=1, offset_values=True)
        nn.init.zeros_(self.anr.mlp[-1].weight)
        nn.init.zeros_(self.anr.mlp[-1].bias)

    def forward(self, lr):
        return self.anr.render_grid(self.to_tokens(self.features(lr)), SCALE) - 0.5


def run(name: str, head: nn.Module, cache: str, steps: int) -> None:
    sampler = CropSampler(cache, seed=7)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    gains = []
    for step in range(1, steps + 1):
        hr = sampler.batch(BATCH, LR * SCALE)
        lr = torch.round(downscale(hr, (LR, LR)) * 255) / 255
        base = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        mse = ((base + head(lr) - hr) ** 2).mean()
        opt.zero_grad()
        mse.backward()
        opt.step()
        gains.append(10 * np.log10(((base - hr) ** 2).mean().item() / mse.item()))
        if step % 100 == 0:
            print(f"{name} step {step}: gain over bicubic {np.mean(gains):.3f} dB", flush=True)
            gains = []


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default="../.cache/train-pixels", help="pixel cache of anr_codec.train")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for name, make in (("sub-pixel conv", ShuffleHead), ("stride-1 ANR", AnrHead)):
        torch.manual_seed(0)
        run(name, make(), a.cache, a.steps)


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    main()
