"""How much fidelity can a model's decoder give at all, whatever the rate?

    python benchmarks/decoder_ceiling.py [--model ../pretrained/anr-v2.pt] [--data ../shared/data/train]

On the first 10 of compare_checkpoints' training crops (256x256): PSNR and estimated bpp
at the top quality with its gain multiplied by k (a finer quantiser than any trained
quality; the hyperprior is conditioned on the gain, so the bits stay honest), and PSNR of
the decoded *unrounded* latent. When PSNR stops rising with k, bits cannot buy quality:
the encoder/decoder pair is the ceiling, not the quantiser. Then, on 4 crops of 128x128,
the latent itself is fitted by gradient descent (no rate, no rounding): a small gain over
the encoder's latent means the decoder, not the encoder, sets that ceiling.
Training images only: this guides design, it is not an evaluation.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from capacity import load_crop
from compare_checkpoints import load_checkpoint, paths

from anr_codec.metrics import psnr_from_mse


@torch.no_grad()
def gain_sweep(net, images, factors) -> None:
    top = net.n_qualities - 1
    g = net.log_gain.data[top].clone()
    for k in factors:
        net.log_gain.data[top] = g + math.log(k)
        mse, bpp = [], []
        for x in images:
            y_hat, _, bits = net.estimate(x, top)
            x_hat = net.anr.render_grid(net.tokens(y_hat, top), 1).clamp(0, 1)
            mse.append(((torch.round(x_hat * 255) / 255 - x) ** 2).mean().item())
            bpp.append(bits.item() / x[0, 0].numel())
        print(f"top quality, gain x{k:g}: PSNR {psnr_from_mse(np.mean(mse), 1.0):.2f} dB at {np.mean(bpp):.3f} bpp", flush=True)
    net.log_gain.data[top] = g
    mse = [((net.anr.render_grid(net.token_net(net.encoder(x)), 1).clamp(0, 1) - x) ** 2).mean().item()
           for x in images]
    print(f"unrounded latent: PSNR {psnr_from_mse(np.mean(mse), 1.0):.2f} dB", flush=True)


def fit_latent(net, x, steps: int, lr: float) -> tuple[float, float]:
    """-> (PSNR of the encoder's latent, PSNR after fitting the latent), unrounded."""
    y = net.encoder(x).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)

    def mse():
        return ((net.anr.render_grid(net.token_net(y), 1) - x) ** 2).mean()

    start = mse().item()
    for _ in range(steps):
        loss = mse()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return psnr_from_mse(start, 1.0), psnr_from_mse(mse().item(), 1.0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="../pretrained/anr-v2.pt", help="checkpoint or exported model")
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--factors", default="1,1.5,2,3,4,6")
    p.add_argument("--fit-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    net, step = load_checkpoint(a.model)
    net.requires_grad_(False)
    files = paths(a.data)
    print(f"{a.model} (step {step})")
    gain_sweep(net, [load_crop(str(f), 256, 256) for f in files[:10]], [float(v) for v in a.factors.split(",")])
    for f in files[:4]:
        before, after = fit_latent(net, load_crop(str(f), 128, 128), a.fit_steps, 0.02)
        print(f"{f.name}: encoder's latent {before:.2f} dB -> fitted latent {after:.2f} dB", flush=True)


if __name__ == "__main__":
    main()
