"""Bring dead latent channels back to life, without changing the architecture.

    python scripts/revive_channels.py IN.pt OUT.pt [--count 32]

Why: in the variable-rate model most latent channels collapse early in training (the
low-lambda qualities pay for every bit): at the highest quality only ~25 of anr-v1's 128
carry symbols (~50 of anr-v2's 192), and decoding the *unrounded* latent is no better than the rounded one. Quality
then stops rising with rate. A collapsed channel cannot recover by itself: its symbols are
always the prior's median, so the token network sees a constant and gives the encoder no
gradient to make it vary.

For each revived channel this script
- draws fresh encoder-head weights (row norm of a typical live channel), so it carries
  new features of the image;
- scales that output to the mean and spread of a live "donor" channel and copies the
  donor's per-quality gains and prior densities, so its symbols cost about what the
  donor's do from the first step (a blank prior would charge ~0.7 bpp more at first);
- gives the token network small random input weights for it, folding what the old
  constant input contributed into the bias, so the decoder starts where it was and
  learns to use the new input;
- with a hyperprior (anr-v2) instead of factorized priors: h_a stops reading it (z stays
  what it was) and h_s predicts it the donor's mean and spread (hyperprior_for_revived).
Check the result with benchmarks/compare_checkpoints.py after training on from it.

Tried on anr-v1 at 53,829 steps (16 channels, `--coupling 1.0`, then the CPU recipe of the
model card for ~4,000 one-thread steps beside a same-seed control): live channels at the
top quality went from 25 to 41, but PSNR stayed level with the control at ~18 % more rate
and the rate term collapsed the revived channels again (their spread at the top quality
3.6 -> 0.65 symbols); with `--coupling 0.1` they collapsed faster. So for that model the
token network, not the number of live channels, limits quality (as benchmarks/capacity.py
says: fitting the latent directly gains little). Worth retrying once the token network
has grown: anr-v2's conv token network is that, and its stage fits place the loss of
fidelity in its first stage, the one that reads the latent (docs/training-notes.md).

Tried on anr-v2 at 89,584 steps (32 channels, `--from-quality 5`, ~10,100 one-process
steps beside a same-seed control): the same collapse (revived spread at the top quality
2.88 -> 0.18 symbols) although only q5-q7 paid for them, for +0.01-0.03 dB at 7-10 % more
bits there (docs/training-notes.md, "Revived channels collapse again").
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_checkpoints import crops, load_checkpoint  # noqa: E402

DEAD_SPREAD = 0.05   # symbol spread of a channel kept dead at a quality: always rounds to its mean


def channel_stats(net, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of the encoder output (before the gains)."""
    with torch.no_grad():
        ys = torch.cat([net.encoder(x).flatten(2)[0] for x in images], 1)
    return ys.mean(1), ys.std(1)


def revive(net, images: list[torch.Tensor], count: int, max_spread: float = 8.0, seed: int = 0,
           coupling: float = 0.1, from_quality: int = 1) -> list[int]:
    """Revive up to `count` dead channels in place; returns their indices.

    Each revived channel copies a live "donor" channel's statistics (its output is scaled
    to the donor's mean and spread), gains and prior densities, so its symbols cost about
    what the donor's cost from the first step rather than what a blank prior charges.
    Qualities below `from_quality` (1-based) keep the channel dead: their gain shrinks
    its symbols' spread to DEAD_SPREAD, so it is always the predicted mean and costs
    nothing there, and their rate term never pushes the shared encoder to collapse it."""
    if not 1 <= from_quality <= net.n_qualities:
        # 0 would slice log_gain[:-1] and keep every quality but the top one dead.
        raise ValueError(f"from_quality {from_quality} out of 1..{net.n_qualities}")
    g = torch.Generator().manual_seed(seed)
    mean, std = channel_stats(net, images)
    top = net.n_qualities - 1
    spread = std * net.gain(top).detach()  # value spread at the highest quality
    live = spread >= 0.5
    dead = torch.nonzero(~live).flatten()
    chosen = dead[torch.argsort(spread[dead])][:count].tolist()  # the most collapsed first
    donors = torch.nonzero(live & (spread <= max_spread)).flatten().tolist()
    if not chosen or not donors:
        return []
    head = net.encoder.head[1]
    inp = net.token_net.inp
    with torch.no_grad():
        row_norm = head.weight[live].flatten(1).norm(dim=1).median()
        col_norm = inp.weight[:, live].flatten(1).norm(dim=0).median()
        for c in chosen:
            # The old input was (nearly) the constant `mean[c]`: keep its effect as bias.
            inp.bias += inp.weight[:, c, 0, 0] * mean[c]
            w = torch.randn(head.weight[c].shape, generator=g)
            head.weight[c] = w * (row_norm / w.norm())
            head.bias[c] = 0.0
            v = torch.randn(inp.weight[:, c].shape, generator=g)
            inp.weight[:, c] = v * (coupling * col_norm / v.norm())
        new_mean, new_std = channel_stats(net, images)
        pairs = [(c, donors[i % len(donors)]) for i, c in enumerate(chosen)]
        for c, d in pairs:
            a = std[d] / new_std[c]
            head.weight[c] *= a
            head.bias[c] = mean[d] - a * new_mean[c]
            inp.weight[:, c] /= a  # the token network's view of the channel keeps its size
            net.log_gain[:, c] = net.log_gain[:, d]
            net.log_gain[:from_quality - 1, c] = math.log(DEAD_SPREAD / float(std[d].clamp_min(1e-6)))
        for prior in net.priors:   # per-quality factorized priors (none with a hyperprior)
            prior_state = prior.state_dict()
            for t in prior_state.values():
                if t.dim() and t.shape[0] == net.config.latent_channels:
                    for c, d in pairs:
                        t[c] = t[d]
            prior.load_state_dict(prior_state)
        if net.hyper is not None:
            hyperprior_for_revived(net.hyper, pairs, mean, std)
    return chosen


def hyperprior_for_revived(hyper, pairs: list[tuple[int, int]], old_mean: torch.Tensor,
                           std: torch.Tensor) -> None:
    """A hyperprior's view of the revived channels, in place (the analogue of copying a
    factorized prior): h_a stops reading them (their old constant is folded into its bias,
    so z stays what it was), and h_s predicts each one a fixed mean and scale, its donor's
    mean and spread, until training teaches both to read and predict the new features.
    (Without this h_s keeps predicting the collapsed channel: a scale at the floor, and a
    varying channel coded against it costs tens of bits per symbol.) `pairs` are
    (revived, donor) channels; `old_mean` and `std` the channel statistics from before."""
    first, last = hyper.h_a[0], hyper.h_s[-1]
    n = last.out_channels // 2   # h_s gives the means, then the log scales
    for c, d in pairs:
        first.bias += first.weight[:, c].sum((1, 2)) * old_mean[c]
        first.weight[:, c] = 0.0
        last.weight[c] = 0.0
        last.bias[c] = old_mean[d]
        last.weight[n + c] = 0.0
        last.bias[n + c] = std[d].clamp_min(1e-6).log()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="training checkpoint or exported model")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=32)
    p.add_argument("--max-spread", type=float, default=8.0,
                   help="donors are live channels with at most this symbol spread at the top quality")
    p.add_argument("--coupling", type=float, default=0.1,
                   help="token-network input weights of a revived channel, as a fraction of a live one's")
    p.add_argument("--from-quality", type=int, default=1,
                   help="revive only at this quality and above (1-based); lower ones keep the channels dead")
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    net, step = load_checkpoint(a.src)
    state = torch.load(a.src, map_location="cpu", weights_only=True)
    images = crops(a.data, 384, 320)
    chosen = revive(net, images, a.count, a.max_spread, a.seed, a.coupling, a.from_quality)
    print(f"revived {len(chosen)} channels: {chosen}")
    torch.save({"config": state["config"], "model": net.state_dict(), "step": step or 0,
                "elapsed": float(state.get("elapsed", 0.0))},
               a.out)


if __name__ == "__main__":
    main()
