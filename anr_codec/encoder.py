"""Hyper-network encoder: image -> latent grid at stride 16.

A strided-conv stem reduces the image to a token grid cheaply (attention at full
resolution would dominate the cost), then transformer blocks with neighbourhood
attention mix information between tokens. Works for any size that is a multiple of 16;
the codec pads images to that.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import GDN, LayerNorm2d, TransformerBlock

STRIDE = 16


def light_stem(width: int) -> nn.Sequential:
    """anr-v1's stem: thin GELU convs (~8 k MAC per pixel)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 5, stride=2, padding=2), nn.GELU(),
        nn.Conv2d(64, 96, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(96, 128, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(128, width, 3, stride=2, padding=1),
    )


def gdn_stem(width: int, channels: int = 128) -> nn.Sequential:
    """Ballé et al.'s analysis transform (5x5 strided convs with GDN), the best-studied
    small analysis for transform coding: it learns far faster per step than the light
    stem (docs/paper-study.md, part 4b)."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 5, stride=2, padding=2), GDN(channels),
        nn.Conv2d(channels, channels, 5, stride=2, padding=2), GDN(channels),
        nn.Conv2d(channels, channels, 5, stride=2, padding=2), GDN(channels),
        nn.Conv2d(channels, width, 5, stride=2, padding=2),
    )


class HyperEncoder(nn.Module):
    def __init__(self, latent_channels: int = 128, width: int = 192, depth: int = 2, heads: int = 4,
                 stem: str = "light", stem_channels: int = 128):
        super().__init__()
        if stem == "light":
            self.stem = light_stem(width)
        elif stem == "gdn":
            self.stem = gdn_stem(width, stem_channels)
        else:
            raise ValueError(f"unknown encoder stem {stem!r}")
        # Latent rows a tile needs around its core to be exact (see tiling): the stem's
        # receptive field reaches 1 latent row (light: 33 px) or 2 (gdn: 61 px), and
        # each 5x5 attention block 2 more.
        self.margin = (1 if stem == "light" else 2) + 2 * depth
        self.blocks = nn.Sequential(*[TransformerBlock(width, heads) for _ in range(depth)])
        self.head = nn.Sequential(LayerNorm2d(width), nn.Conv2d(width, latent_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) in [0, 1], H and W multiples of 16 -> (B, C, H/16, W/16)."""
        h = self.blocks(self.stem(x - 0.5))
        # The latent is rounded to integers: under mixed precision it must still be float32
        # (bfloat16 keeps ~3 digits, coarser than the quantiser at high qualities).
        with torch.autocast(x.device.type, enabled=False):
            return self.head(h.float())
