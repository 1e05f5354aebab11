"""Building blocks shared by the hyper-network encoder and the decoder-side token network.

Attention here is *neighbourhood* attention on a token grid: every token attends to the
k x k tokens around it. Unlike windowed attention it has no window borders (so no seams)
and its cost is linear in the image area, which lets one model code images of any size.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():
    # compressai's import runs torch.jit.script, which warns on every start: noise on stderr.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from compressai.layers import GDN  # noqa: F401  (re-exported for the encoder and token network)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class NeighborhoodAttention(nn.Module):
    """Multi-head self-attention of each grid token over its k x k neighbours.

    Neighbours outside the grid are masked, so the result does not depend on padding.
    A learned relative-position bias per head tells the heads where a neighbour sits.
    """

    def __init__(self, dim: int, heads: int = 4, kernel: int = 5):
        super().__init__()
        if dim % heads:
            raise ValueError("dim must be divisible by heads")
        self.dim, self.heads, self.kernel = dim, heads, kernel
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.rel_bias = nn.Parameter(torch.zeros(heads, kernel * kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, nh = self.kernel, self.heads
        dh = c // nh
        q, key, val = self.qkv(x).chunk(3, dim=1)
        pad = k // 2
        # (B, C*k*k, H*W) -> (B, heads, dh, k*k, H*W)
        key = F.unfold(key, k, padding=pad).view(b, nh, dh, k * k, h * w)
        val = F.unfold(val, k, padding=pad).view(b, nh, dh, k * k, h * w)
        q = q.reshape(b, nh, dh, 1, h * w)
        logits = (q * key).sum(2) / math.sqrt(dh)  # (B, heads, k*k, H*W)
        logits = logits + self.rel_bias[None, :, :, None]
        inside = F.unfold(x.new_ones(1, 1, h, w), k, padding=pad) > 0.5  # (1, k*k, H*W)
        logits = logits.masked_fill(~inside[:, None], float("-inf"))
        attn = logits.softmax(dim=2)
        out = (attn[:, :, None] * val).sum(3)  # (B, heads, dh, H*W)
        return self.proj(out.reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: neighbourhood attention then a pointwise MLP."""

    def __init__(self, dim: int, heads: int = 4, kernel: int = 5, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = NeighborhoodAttention(dim, heads, kernel)
        self.norm2 = LayerNorm2d(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def fourier_features(u: torch.Tensor, n_freqs: int, max_freq: float) -> torch.Tensor:
    """Encode coordinates (..., d) as [u, sin(2^k pi u), cos(2^k pi u)] for geometric frequencies.

    As in the ANR paper the frequencies run geometrically from 1 to `max_freq` (sigma).
    """
    # float32 always: at 32 * pi radians, bfloat16 coordinates would alias the top frequencies.
    u = u.float()
    freqs = torch.logspace(0.0, math.log2(max_freq), n_freqs, base=2.0, device=u.device)
    angles = (u[..., None] * freqs * math.pi).flatten(-2)
    return torch.cat([u, angles.sin(), angles.cos()], dim=-1)
