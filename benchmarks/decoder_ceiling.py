"""How much fidelity can a model's decoder give at all, whatever the rate?

    python benchmarks/decoder_ceiling.py [--model pretrained/anr-v2.pt] [--data ../shared/data/train]
        [--factors 1,1.5,2,3,4,6] [--stages latent,stride 8,stride 4,tokens]

On the first 10 of compare_checkpoints' training crops (256x256): PSNR and estimated bpp
at the top quality with its gain multiplied by k (a finer quantiser than any trained
quality; the hyperprior is conditioned on the gain, so the bits stay honest), and PSNR of
the decoded *unrounded* latent. When PSNR stops rising with k, bits cannot buy quality:
the encoder/decoder pair is the ceiling, not the quantiser. Then, on 4 crops of 128x128,
the input of each decoder stage is fitted by gradient descent (no rate, no rounding): the
latent itself (a small gain over the encoder's latent means the decoder, not the encoder,
sets that ceiling), then the token network's activations at stride 8 and 4, then the
tokens. The stage after which the fitted PSNR jumps is where the decoder loses most.
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
from anr_codec.tokens import ConvTokenNetwork


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


# Where fit_stage's free variable sits: the input of each part of _pipeline, in order.
STAGES = ("latent", "stride 8", "stride 4", "tokens")


def _pipeline(net):
    """ConvTokenNetwork.forward cut at each resolution: inp -> blocks -> up[0:2] (stride 8),
    up[2:4] (stride 4), up[4:6] (stride 2, the tokens); the ANR renders from those."""
    t = net.token_net
    if not isinstance(t, ConvTokenNetwork):
        # anr-v1's TokenNetwork has other stages: cutting it the same way would fit the wrong thing.
        raise SystemExit("stage fits need the conv-token design (anr-v2)")
    return [lambda y: t.up[:2](t.blocks(t.inp(y))), t.up[2:4], t.up[4:6]]


def fit_stage(net, x, stage: int, steps: int, lr: float) -> tuple[float, float]:
    """Fit the activation entering decoder stage `stage` (index into STAGES) by gradient
    descent, no rate, no rounding -> (PSNR of the encoder's value there, PSNR fitted).
    A stage whose fitted PSNR is far above the one before it is where capacity is lost."""
    parts = _pipeline(net)
    with torch.no_grad():
        h = net.encoder(x)
        for f in parts[:stage]:
            h = f(h)
    h = h.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([h], lr=lr)

    def mse():
        t = h
        for f in parts[stage:]:
            t = f(t)
        return ((net.anr.render_grid(t, 1) - x) ** 2).mean()

    start = mse().item()
    for _ in range(steps):
        loss = mse()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return psnr_from_mse(start, 1.0), psnr_from_mse(mse().item(), 1.0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pretrained/anr-v2.pt", help="checkpoint or exported model")
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--factors", default="1,1.5,2,3,4,6", help="gain multipliers ('' skips the sweep)")
    p.add_argument("--stages", default=",".join(STAGES), help="where to fit: " + ", ".join(STAGES))
    p.add_argument("--fit-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    net, step = load_checkpoint(a.model)
    net.requires_grad_(False)
    files = paths(a.data)
    print(f"{a.model} (step {step})")
    if a.factors:
        gain_sweep(net, [load_crop(str(f), 256, 256) for f in files[:10]], [float(v) for v in a.factors.split(",")])
    stages = [STAGES.index(s) for s in a.stages.split(",")] if a.stages else range(len(STAGES))
    for f in files[:4]:
        x = load_crop(str(f), 128, 128)
        for k in stages:
            before, after = fit_stage(net, x, k, a.fit_steps, 0.02)
            print(f"{f.name}: {STAGES[k]}: encoder's {before:.2f} dB -> fitted {after:.2f} dB", flush=True)


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    main()
