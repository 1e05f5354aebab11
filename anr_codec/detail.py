"""Super-resolution detail: what a decode above the coded size adds to its scale-1 image.

Trained end to end, the coding ANR renders at scale s almost exactly what bicubic
upscaling of its own scale-1 decode gives (40-43 dB apart on training crops): its
tokens serve rate-distortion at scale 1, and more super-resolution batches did not move
that (benchmarks/compare_checkpoints.py --sr). This head is a second ANR whose tokens
sit on the decoded pixel grid (stride 1), made by a small residual conv net from the
scale-1 decode and the coding tokens; it renders a residual over bicubic upscaling at any
point, so any scale works, and a zero-initialised readout starts exactly at bicubic.
It changes nothing at scale <= 1 and nothing in the bitstream; its own training
(anr_codec.train_detail) leaves the codec frozen.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .anr import ANRDecoder

LR_TILE = 192    # decoded pixels per tile side (margin excluded) when upscaling big images


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def bicubic_at(img: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """img (B, 3, h, w); xy (B, N, 2) points in pixels (centres at i + 0.5) -> (B, N, 3).
    Border coordinates clamp, so points past the edge repeat it."""
    h, w = img.shape[-2:]
    grid = torch.stack([xy[..., 0] / w, xy[..., 1] / h], -1) * 2 - 1
    out = F.grid_sample(img, grid[:, None], mode="bicubic", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)


class DetailHead(nn.Module):
    def __init__(self, token_dim: int, token_stride: int, width: int = 64, blocks: int = 4,
                 dim: int = 32, heads: int = 4, mlp_hidden: int = 64):
        super().__init__()
        self.token_stride = token_stride
        self.blocks = blocks
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        # The coding tokens enter through a zero-initialised branch: concatenated with the
        # image (std ~1.5 over 64 channels against ~0.25 over 3) they drowned its edges, and
        # that head gained 0.08 dB in 300 steps on uncoded x2-x4 inputs where one fed the
        # image alone gained 0.9 dB on x2.
        self.from_tokens = nn.Conv2d(token_dim, width, 1)
        nn.init.zeros_(self.from_tokens.weight)
        nn.init.zeros_(self.from_tokens.bias)
        self.body = nn.Sequential(*(ResBlock(width) for _ in range(blocks)))
        self.to_tokens = nn.Conv2d(width, dim, 1)
        self.anr = ANRDecoder(dim, heads, mlp_hidden, n_freqs=6, max_freq=8.0, stride=1, offset_values=True)
        last = self.anr.mlp[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @property
    def margin(self) -> int:
        """Decoded pixels a tile needs around its core: the convs reach 1 + 2 * blocks, the
        ANR's neighbours and the bicubic taps 2 more; a multiple of any token stride."""
        m = 3 + 2 * self.blocks
        return -(-m // 8) * 8

    def detail_tokens(self, lr: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """lr (B, 3, h, w) the scale-1 decode in [0, 1]; tokens (B, D, h/st, w/st) (covering
        at least h x w) -> detail tokens (B, dim, h, w)."""
        h, w = lr.shape[-2:]
        t = F.interpolate(tokens, scale_factor=self.token_stride, mode="nearest")[..., :h, :w]
        x = self.stem(lr - 0.5) + self.from_tokens(t.to(lr.dtype))
        return self.to_tokens(F.relu(self.body(x)))

    def residual_at(self, detail_tokens: torch.Tensor, xy: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
        """What the head adds to bicubic at points xy (B, N, 2) in decoded pixels -> (B, N, 3)."""
        return self.anr.render_points(detail_tokens, xy, footprint) - 0.5   # the ANR's output is centred on 0.5

    def render_points(self, lr, tokens, xy, footprint) -> torch.Tensor:
        """Upscaled RGB at points xy (B, N, 2) in decoded pixels, footprint (2,) -> (B, N, 3)."""
        return bicubic_at(lr, xy) + self.residual_at(self.detail_tokens(lr, tokens), xy, footprint)


@torch.no_grad()
def upscale(head: DetailHead, lr_rgb: np.ndarray, tokens: torch.Tensor, ow: int, oh: int,
            queries_per_chunk: int) -> np.ndarray:
    """The scale-1 decode (HxWx3 uint8) and its tokens -> ow x oh RGB uint8 (ow > W or oh > H),
    in tiles of the decoded image, each with its margin, so memory stays bounded."""
    from .tiling import pixels_tensor, tiles, to_uint8   # here: tiling imports model, which imports this

    height, width = lr_rgb.shape[:2]
    dev = tokens.device
    lr = pixels_tensor(lr_rgb, dev)
    sx, sy = width / ow, height / oh
    fp = torch.tensor([sx, sy], device=dev)
    xs_all = (torch.arange(ow, device=dev, dtype=torch.float64) + 0.5) * sx
    ys_all = (torch.arange(oh, device=dev, dtype=torch.float64) + 0.5) * sy
    out = np.empty((oh, ow, 3), np.uint8)
    st, m = head.token_stride, head.margin
    for a, b, c, d, a0, b0, c0, d0 in tiles(height, width, LR_TILE, m):
        # Output pixels whose centres fall in this tile's core.
        r0, r1 = int(torch.searchsorted(ys_all, a)), int(torch.searchsorted(ys_all, b))
        q0, q1 = int(torch.searchsorted(xs_all, c)), int(torch.searchsorted(xs_all, d))
        if r0 >= r1 or q0 >= q1:
            continue
        lr_t = lr[:, :, a0:b0, c0:d0]
        dt = head.detail_tokens(lr_t, tokens[:, :, a0 // st:-(-b0 // st), c0 // st:-(-d0 // st)])
        rows = max(1, queries_per_chunk // (q1 - q0))
        for y0 in range(r0, r1, rows):
            y1 = min(r1, y0 + rows)
            gy, gx = torch.meshgrid(ys_all[y0:y1] - a0, xs_all[q0:q1] - c0, indexing="ij")
            xy = torch.stack([gx, gy], -1).reshape(1, -1, 2).float()
            rgb = bicubic_at(lr_t, xy) + head.residual_at(dt, xy, fp)
            out[y0:y1, q0:q1] = to_uint8(rgb[0].T.reshape(3, y1 - y0, q1 - q0))
    return out
