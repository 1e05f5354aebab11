"""The ANR decoder: localized attention layer (LAL) + global MLP, queried at any coordinate.

Data tokens lie on a grid with spacing TOKEN_STRIDE input pixels. A query point at
(x, y) (input-pixel units, pixel centres at i + 0.5) belongs to the token cell that
contains it; its Fourier-encoded position inside that cell (plus the size of its pixel
footprint, so the decoder knows how fine a detail it is asked for) forms the attention
query. It attends only to the 3 x 3 tokens around its cell (locality keeps the cost per
pixel constant on any image size), with the paper's thresholded softmax, and the global
MLP maps the attended feature to RGB.

Two evaluation paths compute the same function:
- `render_grid`: output grid an integer multiple `s` of the input grid. Every cell holds
  the same (4s)^2 local offsets, so queries are grouped by cell and keys/values come
  from one unfold (fast; used for training and for integer scales).
- `render_points`: arbitrary query points; neighbour keys/values are gathered per query
  (used for non-integer scales and for super-resolution training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import fourier_features
from .tokens import TOKEN_STRIDE

# Neighbour offsets (dy, dx) in the order F.unfold(kernel=3) produces them.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


class ANRDecoder(nn.Module):
    def __init__(self, token_dim: int = 64, heads: int = 4, hidden: int = 128,
                 n_freqs: int = 6, max_freq: float = 32.0, threshold: float = 0.01,
                 jitter_sigma: float = 0.3):
        super().__init__()
        self.token_dim, self.heads = token_dim, heads
        self.n_freqs, self.max_freq = n_freqs, max_freq
        self.threshold = threshold
        self.jitter_sigma = jitter_sigma  # in units of half a pixel footprint, as in the paper
        feat_dim = 2 + 4 * n_freqs + 2  # Fourier(u) + log2 footprint (x, y)
        self.to_q = nn.Linear(feat_dim, token_dim)
        self.to_kv = nn.Conv2d(token_dim, 2 * token_dim, 1)
        self.offset_embed = nn.Parameter(torch.zeros(9, token_dim))
        # Locality prior: logit penalty proportional to squared distance, per head.
        self.dist_scale = nn.Parameter(torch.full((heads,), 1.0))
        self.mlp = nn.Sequential(
            nn.Linear(token_dim + feat_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 3),
        )
        self.register_buffer("offsets", torch.tensor(_OFFSETS, dtype=torch.float32)[:, [1, 0]], persistent=False)

    # -- shared core ---------------------------------------------------------------
    def _features(self, u: torch.Tensor, log_fp: torch.Tensor) -> torch.Tensor:
        """u: (..., 2) position in cell units relative to the home cell centre (x, y)."""
        f = fourier_features(u, self.n_freqs, self.max_freq)
        return torch.cat([f, log_fp.expand(*u.shape[:-1], 2)], dim=-1)

    def _attend(self, feat, u, keys, values, valid):
        """feat (..., F), u (..., 2); keys/values (..., 9, D) broadcastable; valid (..., 9) or None."""
        nh, dh = self.heads, self.token_dim // self.heads
        q = self.to_q(feat).unflatten(-1, (nh, dh))                      # (..., H, dh)
        k = (keys + self.offset_embed).unflatten(-1, (nh, dh))           # (..., 9, H, dh)
        logits = torch.einsum("...hd,...nhd->...hn", q, k) / math.sqrt(dh)
        rel = self.offsets - u.unsqueeze(-2)                             # (..., 9, 2)
        dist2 = (rel * rel).sum(-1).unsqueeze(-2)                        # (..., 1, 9)
        logits = logits - F.softplus(self.dist_scale)[:, None] * dist2
        if valid is not None:
            logits = logits.masked_fill(~valid.unsqueeze(-2), float("-inf"))
        w = logits.softmax(-1)
        if self.threshold > 0:
            # Localized attention: drop weak links and renormalise (the strongest
            # weight is always >= 1/9 > threshold, so the sum stays positive).
            w = w * (w >= self.threshold)
            w = w / w.sum(-1, keepdim=True)
        v = values.unflatten(-1, (nh, dh))
        a = torch.einsum("...hn,...nhd->...hd", w, v).flatten(-2)
        return self.mlp(torch.cat([a, feat], dim=-1)) + 0.5

    def _jitter(self, u: torch.Tensor, fp_cells: torch.Tensor) -> torch.Tensor:
        """Variational coordinates: Gaussian jitter inside the pixel footprint, clipped."""
        half = 0.5 * fp_cells
        noise = torch.randn_like(u) * (self.jitter_sigma * half)
        return u + torch.maximum(torch.minimum(noise, half), -half)

    # -- grouped path --------------------------------------------------------------
    def render_grid(self, tokens: torch.Tensor, scale: int = 1, jitter: bool = False,
                    cells_per_chunk: int | None = None) -> torch.Tensor:
        """tokens (B, D, h, w) -> image (B, 3, h*4*scale, w*4*scale)."""
        b, d, h, w = tokens.shape
        n = TOKEN_STRIDE * scale
        kv = self.to_kv(tokens)
        k_all, v_all = kv[:, :d], kv[:, d:]
        u0, log_fp = _cell_offsets(scale, tokens.device)
        fp_cells = torch.full((2,), 1.0 / n, device=tokens.device)
        inside = F.unfold(tokens.new_ones(1, 1, h, w), 3, padding=1) > 0.5  # (1, 9, L)
        L = h * w
        chunk = cells_per_chunk or L
        shared = None if jitter else self._shared_queries(u0, log_fp)
        out = tokens.new_empty(b, L, n * n, 3)
        for s in range(0, L, chunk):
            e = min(L, s + chunk)
            keys = _unfold_rows(k_all, s, e)           # (B, Lc, 9, D)
            vals = _unfold_rows(v_all, s, e)
            valid = inside[0, :, s:e].transpose(0, 1)  # (Lc, 9)
            if jitter:
                u = self._jitter(u0.expand(b, e - s, n * n, 2), fp_cells)
                out[:, s:e] = self._attend(self._features(u, log_fp), u, keys.unsqueeze(2),
                                           vals.unsqueeze(2), valid[None, :, None, :])
            else:
                out[:, s:e] = self._attend_shared(shared, keys, vals, valid)
        out = out.view(b, h, w, n, n, 3).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, 3, h * n, w * n)

    def render_cells(self, tokens: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """The scale-1 pixels of some token cells only (what `render_grid` gives there):
        tokens (B, D, h, w), cells (N,) flat cell indices -> (B, N, 16, 3), each cell's
        4 x 4 pixels in raster order. Lets encoder-side refinement sample pixels cheaply."""
        b, d, h, w = tokens.shape
        kv = F.unfold(self.to_kv(tokens), 3, padding=1).view(b, 2 * d, 9, h * w)[..., cells]
        kv = kv.permute(0, 3, 2, 1)                                          # (B, N, 9, 2D)
        inside = F.unfold(tokens.new_ones(1, 1, h, w), 3, padding=1)[0][:, cells].T > 0.5
        shared = self._shared_queries(*_cell_offsets(1, tokens.device))
        return self._attend_shared(shared, kv[..., :d], kv[..., d:], inside)

    def _shared_queries(self, u0: torch.Tensor, log_fp: torch.Tensor):
        """Everything that depends only on the in-cell offset, computed once for all cells."""
        nh, dh = self.heads, self.token_dim // self.heads
        feat = self._features(u0, log_fp)                                  # (O, F)
        q = self.to_q(feat).view(-1, nh, dh) / math.sqrt(dh)              # (O, H, dh)
        rel = self.offsets - u0.unsqueeze(-2)                              # (O, 9, 2)
        bias = -F.softplus(self.dist_scale)[None, :, None] * (rel * rel).sum(-1)[:, None, :]  # (O, H, 9)
        first = self.mlp[0]
        d = self.token_dim
        feat_part = feat @ first.weight[:, d:].T + first.bias              # (O, hidden)
        return q, bias, feat_part

    def _attend_shared(self, shared, keys, values, valid):
        """Same function as `_attend` for un-jittered grid queries, without per-cell copies of
        the query side: the first MLP layer is split into its token and position parts."""
        q, bias, feat_part = shared
        nh, dh = self.heads, self.token_dim // self.heads
        b, lc = keys.shape[:2]
        k = (keys + self.offset_embed).view(b, lc, 9, nh, dh)
        logits = torch.einsum("ohd,blnhd->blohn", q, k) + bias
        logits = logits.masked_fill(~valid[None, :, None, None, :], float("-inf"))
        w = logits.softmax(-1)
        if self.threshold > 0:
            w = w * (w >= self.threshold)
            w = w / w.sum(-1, keepdim=True)
        a = torch.einsum("blohn,blnhd->blohd", w, values.view(b, lc, 9, nh, dh)).flatten(-2)
        first = self.mlp[0]
        hdn = torch.relu(a @ first.weight[:, : self.token_dim].T + feat_part)
        return self.mlp[2:](hdn) + 0.5

    # -- gather path ---------------------------------------------------------------
    def render_points(self, tokens: torch.Tensor, xy: torch.Tensor, footprint: torch.Tensor,
                      jitter: bool = False) -> torch.Tensor:
        """tokens (B, D, h, w); xy (B, N, 2) query points in input pixels; footprint (2,) pixel
        size of a query in input pixels (x, y). Returns (B, N, 3)."""
        b, d, h, w = tokens.shape
        kv = self.to_kv(tokens).flatten(2).transpose(1, 2)  # (B, L, 2D)
        pos = xy / TOKEN_STRIDE
        if jitter:
            pos = pos + self._jitter(torch.zeros_like(pos), footprint / TOKEN_STRIDE)
        cell = torch.stack([pos[..., 0].floor().clamp(0, w - 1), pos[..., 1].floor().clamp(0, h - 1)], -1)
        u = pos - cell - 0.5
        nb = cell.long().unsqueeze(-2) + self.offsets.long()       # (B, N, 9, 2) as (x, y)
        valid = (nb[..., 0] >= 0) & (nb[..., 0] < w) & (nb[..., 1] >= 0) & (nb[..., 1] < h)
        idx = (nb[..., 1].clamp(0, h - 1) * w + nb[..., 0].clamp(0, w - 1)).flatten(1)  # (B, N*9)
        kvn = torch.gather(kv, 1, idx.unsqueeze(-1).expand(-1, -1, 2 * d)).view(b, -1, 9, 2 * d)
        log_fp = footprint.float().log2()
        feat = self._features(u, log_fp)
        return self._attend(feat, u, kvn[..., :d], kvn[..., d:], valid)


def _cell_offsets(scale: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets of the (4s)^2 output pixels inside a token cell, in cell units (x, y), row
    by row, and the log2 pixel footprint. Float32 even under mixed precision (see
    fourier_features)."""
    n = TOKEN_STRIDE * scale
    t = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n - 0.5
    u0 = torch.stack(torch.meshgrid(t, t, indexing="ij")[::-1], dim=-1).reshape(n * n, 2)
    return u0, torch.full((2,), -math.log2(scale), device=device)


def _unfold_rows(x: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """3x3 neighbours of flattened cells start..end of x (B, D, h, w) -> (B, end-start, 9, D).

    Neighbours outside the grid come back as zeros (they are masked by the caller)."""
    b, d, h, w = x.shape
    r0, r1 = start // w, (end - 1) // w + 1
    rows = F.pad(x, (1, 1, 1, 1))[:, :, r0:r1 + 2]
    unf = F.unfold(rows, 3)                                   # (B, D*9, (r1-r0)*w)
    unf = unf.view(b, d, 9, -1)[..., start - r0 * w:end - r0 * w]
    return unf.permute(0, 3, 2, 1)
