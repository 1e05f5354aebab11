"""Decoder-side token network: dequantised latent (stride 16) -> ANR data tokens.

Transformer blocks work on the coarse grid where they are cheap per pixel; upsampling
steps then give a denser token grid, so each output pixel draws on tokens that are close
to it. Two designs:

- `TokenNetwork` (anr-v1): two pixel-shuffle steps of 1x1 convs to tokens at stride 4,
  with optional residual conv blocks at stride 8 and stride 4 (their last layer starts
  at zero, so a trained model grown with them computes the same function until training
  moves them). It saturates: fed the best possible latent it cannot pass ~26 dB on a
  training image (benchmarks/capacity.py, model card).
- `ConvTokenNetwork`: three sub-pixel 3x3 convolutions with inverse GDN, the synthesis
  transform of Ballé et al.'s codecs minus its last layer, to tokens at stride 2. The
  ANR decoder takes the place of that last layer, so any output resolution remains.
  Optional residual conv blocks at stride 8 grow it where the stage fits place the loss of
  fidelity (docs/training-notes.md), again starting as the identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import GDN, TransformerBlock

TOKEN_STRIDE = 4  # of TokenNetwork


class ResidualConv(nn.Module):
    """x + conv3x3(GELU(conv3x3(x))) with an `expand` x wider middle; zero-initialised output."""

    def __init__(self, channels: int, expand: int = 2):
        super().__init__()
        mid = expand * channels
        self.body = nn.Sequential(nn.Conv2d(channels, mid, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(mid, channels, 3, padding=1))
        nn.init.zeros_(self.body[2].weight)
        nn.init.zeros_(self.body[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TokenNetwork(nn.Module):
    stride = TOKEN_STRIDE

    def __init__(self, latent_channels: int = 128, width: int = 192, depth: int = 2,
                 heads: int = 4, token_dim: int = 64, res8: int = 0, res4: int = 0):
        super().__init__()
        self.inp = nn.Conv2d(latent_channels, width, 1)
        self.blocks = nn.Sequential(*[TransformerBlock(width, heads) for _ in range(depth)])
        mid = 96
        self.up = nn.Sequential(
            nn.Conv2d(width, 4 * mid, 1), nn.PixelShuffle(2), nn.GELU(),   # stride 8
            nn.Conv2d(mid, mid, 3, padding=1), nn.GELU(),
            nn.Conv2d(mid, 4 * token_dim, 1), nn.PixelShuffle(2), nn.GELU(),  # stride 4
            nn.Conv2d(token_dim, token_dim, 3, padding=1),
        )
        self.res8 = nn.Sequential(*[ResidualConv(mid) for _ in range(res8)])
        self.res4 = nn.Sequential(*[ResidualConv(token_dim) for _ in range(res4)])
        # Receptive-field reach in latent rows (tiles need this margin to be exact): each
        # 5x5 attention block reaches 2 rows; a 3x3 conv reaches 1/2 row at stride 8 and
        # 1/4 at stride 4 (one up-path conv plus two per residual block at each stride).
        self.margin = 2 * depth + math.ceil((1 + 2 * res8) / 2 + (1 + 2 * res4) / 4)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        h = self.up[:5](self.blocks(self.inp(y_hat)))   # stride 8, after its activation
        return self.res4(self.up[5:](self.res8(h)))


def subpel_conv(cin: int, cout: int) -> nn.Sequential:
    """2x upsampling: a 3x3 conv to 4x the channels, then pixel shuffle (no checkerboard
    artefacts, unlike a strided transposed conv, and oneDNN runs it fast on CPUs)."""
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2))


class ConvTokenNetwork(nn.Module):
    stride = 2

    def __init__(self, latent_channels: int = 192, width: int = 192, depth: int = 1, heads: int = 4,
                 token_dim: int = 64, channels: int = 128, res8: int = 0):
        super().__init__()
        self.inp = nn.Conv2d(latent_channels, width, 1)
        self.blocks = nn.Sequential(*[TransformerBlock(width, heads) for _ in range(depth)])
        self.up = nn.Sequential(
            subpel_conv(width, channels), GDN(channels, inverse=True),        # stride 8
            subpel_conv(channels, channels), GDN(channels, inverse=True),     # stride 4
            subpel_conv(channels, token_dim), GDN(token_dim, inverse=True),   # stride 2
        )
        # Middle no wider than the input: one block costs ~4,600 MAC per output pixel.
        self.res8 = nn.Sequential(*[ResidualConv(channels, expand=1) for _ in range(res8)])
        # Reach in latent rows: 2 per 5x5 attention block; each 3x3 conv reaches one row
        # of its input grid: 1 + 1/2 + 1/4 latent rows, plus 2 x 1/2 per residual block.
        self.margin = 2 * depth + math.ceil(1.75 + res8)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        h = self.up[:2](self.blocks(self.inp(y_hat)))   # stride 8, after its inverse GDN
        return self.up[2:](self.res8(h))
