"""Decoder-side token network: dequantised latent (stride 16) -> ANR data tokens (stride 4).

Transformer blocks work on the coarse grid where they are cheap per pixel; two
pixel-shuffle upsampling steps then give a denser token grid, so each output pixel draws
on tokens that are close to it.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import TransformerBlock

TOKEN_STRIDE = 4


class TokenNetwork(nn.Module):
    def __init__(self, latent_channels: int = 128, width: int = 192, depth: int = 2,
                 heads: int = 4, token_dim: int = 64):
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

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.up(self.blocks(self.inp(y_hat)))
