"""Hyper-network encoder: image -> latent grid at stride 16.

A strided-conv stem reduces the image to a token grid cheaply (attention at full
resolution would dominate the cost), then transformer blocks with neighbourhood
attention mix information between tokens. Works for any size that is a multiple of 16;
the codec pads images to that.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import LayerNorm2d, TransformerBlock

STRIDE = 16


class HyperEncoder(nn.Module):
    def __init__(self, latent_channels: int = 128, width: int = 192, depth: int = 2, heads: int = 4):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(64, 96, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(96, 128, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(128, width, 3, stride=2, padding=1),
        )
        self.blocks = nn.Sequential(*[TransformerBlock(width, heads) for _ in range(depth)])
        self.head = nn.Sequential(LayerNorm2d(width), nn.Conv2d(width, latent_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) in [0, 1], H and W multiples of 16 -> (B, C, H/16, W/16)."""
        h = self.blocks(self.stem(x - 0.5))
        # The latent is rounded to integers: under mixed precision it must still be float32
        # (bfloat16 keeps ~3 digits, coarser than the quantiser at high qualities).
        with torch.autocast(x.device.type, enabled=False):
            return self.head(h.float())
