"""Hyperprior: side information z (stride 64) that predicts each latent's mean and scale.

A factorized prior codes every latent of a channel with one distribution; photographs are
not like that (flat sky next to foliage). As in Minnen et al.'s mean-scale hyperprior, a
small analysis h_a summarises the latent into z, z is coded with a factorized prior, and
a synthesis h_s turns the decoded z into a Gaussian (mean, scale) per latent.

Variable rate: quality q scales the latent by its gains g_q (model.py) and z by its own
gains. h_a sees the unscaled latent and h_s predicts the unscaled latent's statistics,
so both are shared by every quality: mean_q = g_q * mean, log scale_q = log g_q +
log scale.

Only the scale decides which table codes a symbol, so h_s must give bit-identical
scales on every machine: at export its weights are rounded to a fixed-point grid and it
runs in exact integer arithmetic (anr_codec/fixedpoint.py); the float h_s here is what
training sees.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .tokens import subpel_conv

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck
    from compressai.ops import LowerBound

SCALE_MIN = 0.11    # lowest scale of the coding tables (as compressai's scale table)
SCALE_MAX = 64.0
SCALE_LEVELS = 64   # tables, log-spaced from SCALE_MIN to SCALE_MAX


def factorized_train(priors: nn.ModuleList, v: torch.Tensor, qi: torch.Tensor):
    """v (B, C, h, w) coded by per-quality factorized priors (compressai EntropyBottleneck):
    -> (v rounded around the priors' medians, straight-through; bits per sample, with
    additive noise as the rate's smooth proxy)."""
    bits = v.new_zeros(v.shape[0], dtype=torch.float32)
    v_hat = torch.empty_like(v)
    for q in qi.unique().tolist():
        sel = (qi == q).nonzero().squeeze(1)
        vs = v[sel]
        _, lik = priors[q](vs, training=True)
        bits = bits.index_put((sel,), -torch.log2(lik).flatten(1).sum(1))
        m = priors[q].quantiles[:, 0, 1].detach()[None, :, None, None]
        v_hat[sel] = vs + (torch.round(vs - m) + m - vs).detach()
    return v_hat, bits


def scale_table() -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS, dtype=torch.float64))


class HyperPrior(nn.Module):
    def __init__(self, latent_channels: int = 192, channels: int = 128, n_qualities: int = 7):
        super().__init__()
        c, n = latent_channels, channels
        self.h_a = nn.Sequential(
            nn.Conv2d(c, n, 3, padding=1), nn.ReLU(),
            nn.Conv2d(n, n, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(n, n, 5, stride=2, padding=2),
        )
        # Only 3x3/1x1 convolutions, ReLU and pixel shuffle: what fixedpoint.py evaluates.
        self.h_s = nn.Sequential(
            subpel_conv(n, n), nn.ReLU(),
            subpel_conv(n, n), nn.ReLU(),
            nn.Conv2d(n, 2 * c, 1),
        )
        self.z_log_gain = nn.Parameter(torch.zeros(n_qualities, n))
        self.z_priors = nn.ModuleList(EntropyBottleneck(n) for _ in range(n_qualities))
        self.lower_bound = LowerBound(SCALE_MIN)

    def z_gain(self, qi: torch.Tensor | int) -> torch.Tensor:
        g = self.z_log_gain[qi].exp()
        return g if g.dim() == 1 else g[:, :, None, None]

    def z_medians(self, qi: int) -> torch.Tensor:
        return self.z_priors[qi].quantiles[:, 0, 1].detach()

    def params(self, z_hat: torch.Tensor, log_gain: torch.Tensor, size: tuple[int, int]):
        """Unscaled dequantised z -> (mean_q, log scale_q) of the scaled latent of `size`
        (h, w); log_gain (C,) or (B, C, 1, 1) are the latent's log gains for the quality."""
        if log_gain.dim() == 1:
            log_gain = log_gain[None, :, None, None]
        mean, log_scale = self.h_s(z_hat).chunk(2, dim=1)
        h, w = size
        # z has ceil(h/4) x ceil(w/4) positions: h_s gives a little more than the latent.
        return mean[..., :h, :w] * log_gain.exp(), log_scale[..., :h, :w] + log_gain

    def likelihood(self, y_q: torch.Tensor, mean_q: torch.Tensor, log_scale_q: torch.Tensor) -> torch.Tensor:
        """Probability of each rounded value's bin under N(mean_q, scale_q) (float32)."""
        scale = self.lower_bound(log_scale_q.clamp(max=math.log(1e4)).exp())
        v = (y_q - mean_q).abs()
        c = -(2 ** -0.5)
        upper = 0.5 * torch.erfc(c * (0.5 - v) / scale)
        lower = 0.5 * torch.erfc(c * (-0.5 - v) / scale)
        return (upper - lower).clamp_min(1e-9)

    def forward_train(self, y: torch.Tensor, qi: torch.Tensor, log_gain: torch.Tensor):
        """y (B, C, h, w) unscaled latent; log_gain (B, C, 1, 1). Returns (y_hat_q for the
        decoder (straight-through rounding around the predicted means), bits per sample).
        Rates use additive noise, as for the factorized prior."""
        z_hat, z_bits = factorized_train(self.z_priors, self.h_a(y) * self.z_gain(qi), qi)
        mean_q, log_scale_q = self.params(z_hat / self.z_gain(qi), log_gain, y.shape[-2:])
        y_q = y * log_gain.exp()
        noisy = y_q + torch.empty_like(y_q).uniform_(-0.5, 0.5)
        y_bits = -torch.log2(self.likelihood(noisy, mean_q, log_scale_q)).flatten(1).sum(1)
        y_hat_q = y_q + (torch.round(y_q - mean_q) + mean_q - y_q).detach()
        return y_hat_q, y_bits + z_bits

    def aux_loss(self) -> torch.Tensor:
        return sum(p.loss() for p in self.z_priors)
