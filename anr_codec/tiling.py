"""Running the networks on big images in tiles, so that their activations take bounded memory.

Measured on a 6000x4000 photo (benchmarks/big_image.py), one pass over the whole image
peaked at 6.7 GiB (encode) and 6.5 GiB (decode): the neighbourhood attention unfolds 25
neighbours of every latent position, and the first stem convolution holds 64 channels
at half resolution. In tiles: 2.1 and 2.6 GiB.

Every stage is local, so a tile computed with a margin gives the same values as the
whole image (up to float summation order in the convolutions):
- Encoder: the strided stem makes latent position i depend on pixel rows 16i-16 ..
  16i+16, so a tile's outermost latent row is wrong (zero padding where the image goes
  on); each of the two 5x5 neighbourhood-attention blocks spreads that by 2 rows. A
  margin of 5 latent rows/columns leaves the tile's inside exact (the GDN stem's 5x5
  convolutions reach 2 rows: 6; `HyperEncoder.margin`).
- Token network: two attention blocks (2 + 2 rows), then 3x3 convolutions at strides 8
  and 4 (less than one latent row): again 5; a grown token network reaches further
  (`TokenNetwork.margin`, `ConvTokenNetwork.margin`).
- ANR: an output pixel attends to the 3x3 tokens around its cell: a margin of 1 token
  (2 for the arbitrary-point path, where cells come from float coordinates).
Tiles start at multiples of 16 pixels, so the stem's strides line up with the whole
image's, and the image's own edges are padded exactly as in one pass.

Images up to NET_SINGLE latent positions (about 6.5 megapixels) and outputs up to
RENDER_SINGLE pixels run in one pass, as before.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import pad_to_multiple

NET_SINGLE = 160 * 160  # latent positions computed in one pass (~2.5 GB peak)
NET_TILE = 128          # latent positions per tile side, margin excluded
RENDER_SINGLE = 1 << 22  # output pixels rendered in one pass
RENDER_TILE = 64        # tokens per tile side, margin excluded


def tiles(h: int, w: int, core: int, margin: int):
    """(a, b, c, d, a0, b0, c0, d0): core rows a..b, cols c..d; with margin a0..b0, c0..d0."""
    for a in range(0, h, core):
        b = min(h, a + core)
        for c in range(0, w, core):
            d = min(w, c + core)
            yield a, b, c, d, max(0, a - margin), min(h, b + margin), max(0, c - margin), min(w, d + margin)


def pixels_tensor(rgb: np.ndarray, device) -> torch.Tensor:
    # A copy: arrays from PIL are read-only, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(rgb)).to(device).permute(2, 0, 1)[None].float() / 255


def analysis(net, rgb: np.ndarray, qi: int, device) -> torch.Tensor:
    """HxWx3 uint8 -> scaled latent (C, ceil(H/16), ceil(W/16))."""
    H, W = rgb.shape[:2]
    h, w = -(-H // 16), -(-W // 16)
    if h * w <= NET_SINGLE:
        return net.analysis(pad_to_multiple(pixels_tensor(rgb, device)), qi)[0]
    out = None
    for a, b, c, d, a0, b0, c0, d0 in tiles(h, w, NET_TILE, net.encoder.margin):
        # Slices past the image end stop at it; pad_to_multiple then replicates its edge
        # exactly as for the whole image. Inner tiles are whole multiples of 16.
        y = net.analysis(pad_to_multiple(pixels_tensor(rgb[16 * a0:16 * b0, 16 * c0:16 * d0], device)), qi)[0]
        if out is None:
            out = y.new_empty(y.shape[0], h, w)
        out[:, a:b, c:d] = y[:, a - a0:b - a0, c - c0:d - c0]
    return out


def tokens(net, y_hat: torch.Tensor, qi: int) -> torch.Tensor:
    """Dequantised latent (C, h, w) -> data tokens (1, D, s*h, s*w), s = 16 / token stride."""
    _, h, w = y_hat.shape
    if h * w <= NET_SINGLE:
        return net.tokens(y_hat[None], qi)
    s = 16 // net.token_stride
    out = None
    for a, b, c, d, a0, b0, c0, d0 in tiles(h, w, NET_TILE, net.token_net.margin):
        t = net.tokens(y_hat[None, :, a0:b0, c0:d0], qi)
        if out is None:
            out = t.new_empty(1, t.shape[1], h * s, w * s)
        out[:, :, a * s:b * s, c * s:d * s] = t[:, :, (a - a0) * s:(b - a0) * s, (c - c0) * s:(d - c0) * s]
    return out


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> HxWx3 uint8."""
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def render(anr, tok: torch.Tensor, width: int, height: int, ow: int, oh: int, queries_per_chunk: int) -> np.ndarray:
    """Tokens of a width x height image -> ow x oh RGB, HxWx3 uint8, tile by tile."""
    _, _, ht, wt = tok.shape
    out = np.empty((oh, ow, 3), np.uint8)
    s = ow / width
    if s == int(s) and oh == height * int(s):
        # Grid path: whole token cells of n x n pixels.
        s = int(s)
        n = anr.stride * s
        per_chunk = max(1, queries_per_chunk // (n * n))
        parts = tiles(ht, wt, RENDER_TILE, 1) if ow * oh > RENDER_SINGLE else [(0, ht, 0, wt, 0, ht, 0, wt)]
        for a, b, c, d, a0, b0, c0, d0 in parts:
            if a * n >= oh or c * n >= ow:
                continue  # only padding
            img = anr.render_grid(tok[:, :, a0:b0, c0:d0], s, cells_per_chunk=per_chunk)[0]
            r1, c1 = min(oh, b * n), min(ow, d * n)
            y0, x0 = (a - a0) * n, (c - c0) * n
            out[a * n:r1, c * n:c1] = to_uint8(img[:, y0:y0 + r1 - a * n, x0:x0 + c1 - c * n])
        return out
    # Arbitrary points: pixel centres of the output, in input pixels. Each chunk of
    # queries sees only the tokens around it, so no chunk touches the whole token map.
    dev = tok.device
    st = anr.stride
    sx, sy = width / ow, height / oh
    fp = torch.tensor([sx, sy], device=dev)
    tile_w = min(ow, queries_per_chunk)
    rows = max(1, queries_per_chunk // tile_w)
    xs_all = (torch.arange(ow, device=dev) + 0.5) * sx
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        ys = (torch.arange(r0, r1, device=dev) + 0.5) * sy
        ty0 = max(0, int(ys[0]) // st - 2)
        ty1 = min(ht, int(ys[-1]) // st + 3)
        for c0 in range(0, ow, tile_w):
            c1 = min(ow, c0 + tile_w)
            xs = xs_all[c0:c1]
            tx0 = max(0, int(xs[0]) // st - 2)
            tx1 = min(wt, int(xs[-1]) // st + 3)
            # Shifting by whole tokens (multiples of the stride in pixels) is exact in float.
            gy, gx = torch.meshgrid(ys - st * ty0, xs - st * tx0, indexing="ij")
            xy = torch.stack([gx, gy], -1).reshape(1, -1, 2)
            rgb = anr.render_points(tok[:, :, ty0:ty1, tx0:tx1], xy, fp)[0]
            out[r0:r1, c0:c1] = to_uint8(rgb.T.reshape(3, r1 - r0, c1 - c0))
    return out
