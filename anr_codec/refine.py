"""Encoder-side latent refinement: spend encode time to find symbols that decode better per bit.

The hyper-network predicts the latent in one pass, so its latent is good on average but
not the best one for each image (the "amortisation gap" of learned codecs). Refinement
descends this image's own rate-distortion loss, lambda * 255^2 * MSE + bpp, with respect
to the latent, through the real decoder (token network and ANR), as in Campos et al.
2019 and Yang et al. 2020. Only the encoder changes: the file format and the decoder
are the same, so a refined file decodes anywhere.

The rounding is relaxed by stochastic Gumbel annealing (SGA, Yang et al. 2020): each
step the decoder and the rate see every latent as a soft, random mix of the two integers
around it (relative to its mean or median), weighted by closeness, with a temperature
that falls towards hard rounding over the steps. Unlike a straight-through rounding, the
gradient then tells a latent which integer to move to; on training crops this measured
-16.8 % BD-rate at 40 steps where straight-through rounding with a noisy rate gave
-14.9 % (docs/training-notes.md). For a hyperprior model the side
information z stays what the unrefined latent gave, so each latent's mean and scale
are fixed: the exact ones the file will be coded with. Each step renders a random quarter of
the token cells, which keeps a step cheap and is unbiased for the MSE. Big images are
refined in tiles of the latent grid with a margin (block coordinate descent in raster
order), so memory stays bounded; a fixed seed keeps encoding deterministic.
"""

from __future__ import annotations

import math

import torch

from .tiling import tiles

REFINE_TILE = 64       # latent positions per tile side (1024 pixels), margin excluded
# Adam step in quantiser steps at the highest quality, cosine-decayed to zero over the
# steps; lower qualities take smaller steps, (lambda / lambda_max)^(1/4), as on training
# images larger ones there traded more rate than they saved distortion.
LEARNING_RATE = 0.04
CELL_FRACTION = 0.25   # share of token cells rendered per step
# SGA temperature: 0.5 at the first step, falling by e^-4 (to ~0.01) over the steps, so the
# last steps see nearly the hard rounding the file will hold, whatever the step count.
TEMPERATURE_START = 0.5
TEMPERATURE_DECAY = 4.0


def bits_map(prior, v: torch.Tensor) -> torch.Tensor:
    """Bits of each latent value under a factorized prior: (C, h, w) -> (C, h, w)."""
    c = v.shape[0]
    # Not prior(v, training=True): that adds noise drawn from the global RNG, and encoding
    # must not depend on (or disturb) it; the caller passes its own seeded relaxed values.
    lik, _, _ = prior._likelihood(v.reshape(c, 1, -1))
    lik = prior.likelihood_lower_bound(lik)
    return -torch.log2(lik).reshape(v.shape)


def gaussian_bits(v: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bits of each value's unit bin under N(mean, scale), elementwise."""
    d = (v - mean).abs()
    c = -(2 ** -0.5)
    lik = 0.5 * torch.erfc(c * (0.5 - d) / scale) - 0.5 * torch.erfc(c * (-0.5 - d) / scale)
    return -torch.log2(lik.clamp_min(1e-9))


def soft_round(y: torch.Tensor, centre: torch.Tensor, temperature: float,
               gen: torch.Generator) -> torch.Tensor:
    """SGA: a relaxed sample of y rounded to the integer grid around `centre`. Each value
    becomes a Gumbel-softmax mix of the integers below and above it, the nearer one more
    likely; as the temperature falls the mix becomes a hard, nearest-integer choice."""
    u = y - centre
    below = torch.floor(u).detach()
    frac = (u - below).clamp(1e-4, 1 - 1e-4)
    # Closeness logits as in Yang et al.: -atanh(distance) is 0 at the integer itself and
    # -inf a whole step away.
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)]) / temperature
    uniform = torch.rand(logits.shape, generator=gen).clamp(1e-9, 1 - 1e-9).to(y.device)
    weights = torch.softmax(logits - torch.log(-torch.log(uniform)), dim=0)
    return below + weights[1] + centre


def refine(net, x: torch.Tensor, y0: torch.Tensor, qi: int, width: int, height: int, steps: int,
           lr: float | None = None, cell_fraction: float | None = None, seed: int = 0,
           gaussian: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """x (1, 3, 16h, 16w) the padded image in [0, 1]; y0 (C, h, w) its scaled latent for
    quality index qi; width x height the real image inside the padding; `gaussian`: a
    hyperprior model's fixed (means, scales) (C, h, w). Returns the refined scaled latent
    (C, h, w), to be rounded around the prior's medians (or the means) as usual."""
    lambdas = net.config.lambdas
    lr = LEARNING_RATE * (lambdas[qi] / max(lambdas)) ** 0.25 if lr is None else lr
    cell_fraction = CELL_FRACTION if cell_fraction is None else cell_fraction
    y = y0.detach().clone()
    if steps <= 0:
        return y
    gen = torch.Generator().manual_seed(seed)
    _, h, w = y.shape
    margin = net.token_net.margin + 1  # + 1: a pixel attends to the tokens around its cell
    with torch.enable_grad():
        for a, b, c, d, a0, b0, c0, d0 in tiles(h, w, REFINE_TILE, margin):
            core = (slice(a - a0, b - a0), slice(c - c0, d - c0))
            g = None if gaussian is None else tuple(t[:, a0:b0, c0:d0] for t in gaussian)
            y[:, a:b, c:d] = _refine_tile(net, x[:, :, 16 * a0:16 * b0, 16 * c0:16 * d0], y[:, a0:b0, c0:d0],
                                          core, qi, width - 16 * c0, height - 16 * a0, steps, lr,
                                          cell_fraction, gen, g)[:, core[0], core[1]]
    return y


def _refine_tile(net, x, y_tile, core, qi, width, height, steps, lr, cell_fraction, gen, gaussian):
    """One tile: only the core latents move and only core pixels inside the image count.
    width/height: how far the real image reaches from the tile's top-left corner."""
    dev = x.device
    _, _, th, tw = x.shape
    st = net.token_stride
    ch, cw = th // st, tw // st
    # Target pixels grouped by token cell, in render_cells' order, and which are real.
    target = x.view(3, ch, st, cw, st).permute(1, 3, 2, 4, 0).reshape(ch * cw, -1, 3)
    rows = torch.arange(th, device=dev) < height
    cols = torch.arange(tw, device=dev) < width
    real = (rows[:, None] & cols[None, :]).float()
    real = real.view(ch, st, cw, st).permute(0, 2, 1, 3).reshape(ch * cw, -1, 1)
    s = 16 // st
    in_core = torch.zeros(ch, cw, dtype=torch.bool, device=dev)
    in_core[core[0].start * s:core[0].stop * s, core[1].start * s:core[1].stop * s] = True
    cells = (in_core.flatten() & (real.sum((1, 2)) > 0)).nonzero().squeeze(1)
    if cells.numel() == 0:
        return y_tile
    n_pick = max(1, round(cell_fraction * cells.numel()))
    core_mask = torch.zeros_like(y_tile[:1])
    core_mask[:, core[0], core[1]] = 1.0
    core_pixels = float(real[cells].sum())

    lam = float(net.config.lambdas[qi])
    if gaussian is None:
        med, prior = net.medians(qi)[:, None, None], net.priors[qi]
        rate = lambda v: bits_map(prior, v)  # noqa: E731
    else:
        med = gaussian[0]
        rate = lambda v: gaussian_bits(v, *gaussian)  # noqa: E731
    y = y_tile.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        pick = cells[torch.randperm(cells.numel(), generator=gen)[:n_pick].to(dev)]
        temperature = TEMPERATURE_START * math.exp(-TEMPERATURE_DECAY * step / steps)
        y_soft = soft_round(y, med, temperature, gen)
        pred = net.anr.render_cells(net.tokens(y_soft[None], qi), pick)[0]
        weight = real[pick]
        mse = (((pred - target[pick]) ** 2) * weight).sum() / (3 * weight.sum())
        bpp = (rate(y_soft) * core_mask).sum() / core_pixels
        loss = lam * 255 ** 2 * mse + bpp
        opt.zero_grad(set_to_none=False)
        loss.backward()
        y.grad.mul_(core_mask)  # margin latents are context, fixed (Adam then leaves them)
        opt.step()
    return y.detach()
