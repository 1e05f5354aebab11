"""The ANR decoder: localized attention layer (LAL) + global MLP, queried at any coordinate.

Data tokens lie on a grid with spacing `stride` input pixels (that of the token network). A query point at
(x, y) (input-pixel units, pixel centres at i + 0.5) belongs to the token cell that
contains it; its Fourier-encoded position inside that cell (plus the size of its pixel
footprint, so the decoder knows how fine a detail it is asked for) forms the attention
query. It attends only to the 3 x 3 tokens around its cell (locality keeps the cost per
pixel constant on any image size), with the paper's thresholded softmax, and the global
MLP maps the attended feature to RGB. With `offset_values` each neighbour's value also
depends on where it sits (up, left, home, ...), as a convolution's weights do.

Two evaluation paths compute the same function:
- `render_grid`: output grid an integer multiple `s` of the input grid. Every cell holds
  the same (stride * s)^2 local offsets, so queries are grouped by cell and keys/values come
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

# Neighbour offsets (dy, dx) in the order F.unfold(kernel=3) produces them.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


class ANRDecoder(nn.Module):
    def __init__(self, token_dim: int = 64, heads: int = 4, hidden: int = 128,
                 n_freqs: int = 6, max_freq: float = 32.0, threshold: float = 0.01,
                 jitter_sigma: float = 0.3, stride: int = 4, offset_values: bool = False):
        super().__init__()
        self.stride = stride
        self.token_dim, self.heads = token_dim, heads
        self.n_freqs, self.max_freq = n_freqs, max_freq
        self.threshold = threshold
        self.jitter_sigma = jitter_sigma  # in units of half a pixel footprint, as in the paper
        feat_dim = 2 + 4 * n_freqs + 2  # Fourier(u) + log2 footprint (x, y)
        self.to_q = nn.Linear(feat_dim, token_dim)
        self.to_kv = nn.Conv2d(token_dim, 2 * token_dim, 1)
        self.offset_embed = nn.Parameter(torch.zeros(9, token_dim))
        # Per-neighbour corrections to the value projection (value of neighbour n: (V + D_n) t).
        # With one shared V the attended feature mixes the 9 tokens by scalar weights only, and
        # trained weights settle near the distance prior: a fixed blur the token network must
        # undo. Separate maps per neighbour make the layer as expressive as a transposed conv
        # while weights still vary continuously with the query. Zero-initialised, so a model
        # grown with them computes the same function until training moves them.
        self.value_delta = nn.Parameter(torch.zeros(9, token_dim, token_dim)) if offset_values else None
        # Locality prior: logit penalty proportional to squared distance, per head.
        self.dist_scale = nn.Parameter(torch.full((heads,), 1.0))
        self.mlp = nn.Sequential(
            nn.Linear(token_dim + feat_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 3),
        )
        self.register_buffer("offsets", torch.tensor(_OFFSETS, dtype=torch.float32)[:, [1, 0]], persistent=False)

    # -- shared core ---------------------------------------------------------------
    def _neighbour_values(self, values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """values (..., 9, D) from the shared projection, tokens (..., 9, D) the raw neighbours:
        add each neighbour's own correction D_n t_n."""
        if self.value_delta is None:
            return values
        return values + torch.einsum("...ni,noi->...no", tokens, self.value_delta.to(tokens.dtype))

    def _features(self, u: torch.Tensor, log_fp: torch.Tensor) -> torch.Tensor:
        """u: (..., 2) position in cell units relative to the home cell centre (x, y)."""
        f = fourier_features(u, self.n_freqs, self.max_freq)
        return torch.cat([f, log_fp.expand(*u.shape[:-1], 2)], dim=-1)

    def _attend(self, feat, u, keys, values, valid):
        """feat (..., F), u (..., 2); keys/values (..., 9, D) broadcastable; valid (..., 9) or None."""
        nh, dh = self.heads, self.token_dim // self.heads
        w = self._weights(feat, u, keys, valid)
        v = values.unflatten(-1, (nh, dh))
        a = torch.einsum("...hn,...nhd->...hd", w, v).flatten(-2)
        return self.mlp(torch.cat([a, feat], dim=-1)) + 0.5

    def _weights(self, feat, u, keys, valid):
        """Attention weights (..., H, 9) of queries over their 9 neighbour tokens."""
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
        return w

    def _jitter(self, u: torch.Tensor, fp_cells: torch.Tensor) -> torch.Tensor:
        """Variational coordinates: Gaussian jitter inside the pixel footprint, clipped."""
        half = 0.5 * fp_cells
        noise = torch.randn_like(u) * (self.jitter_sigma * half)
        return u + torch.maximum(torch.minimum(noise, half), -half)

    # -- grouped path --------------------------------------------------------------
    def render_grid(self, tokens: torch.Tensor, scale: int = 1, jitter: bool = False,
                    cells_per_chunk: int | None = None) -> torch.Tensor:
        """tokens (B, D, h, w) -> image (B, 3, h*stride*scale, w*stride*scale).

        Every query side quantity (Fourier features, queries, distance bias, the position
        half of the MLP's first layer) depends only on the in-cell offset, so it is computed
        once per offset, and attention runs as 9 shifted views of the token maps rather
        than per-pixel copies of the neighbours (memory traffic is what costs on a CPU).
        With `jitter` (training) each sample draws its own variational offsets, shared by
        all its cells: every pixel still sees a Gaussian-jittered coordinate.
        """
        b, d, h, w = tokens.shape
        n = self.stride * scale
        u0, log_fp = _cell_offsets(self.stride, scale, tokens.device)       # (O, 2)
        if jitter:
            u0 = self._jitter(u0.expand(b, -1, -1), torch.full((2,), 1.0 / n, device=tokens.device))
        q, bias, feat_part = self._shared_queries(u0, log_fp)             # (Bq, O, H, dh) ...
        if q.dim() == 3:
            q, bias, feat_part = q[None], bias[None], feat_part[None]
        nh, dh = self.heads, d // self.heads
        # The learned offset embeddings only ever meet the queries: fold them into the bias.
        bias = bias + torch.einsum("bohd,nhd->bohn", q, self.offset_embed.view(9, nh, dh))
        kv = F.pad(self.to_kv(tokens), (1, 1, 1, 1))
        tok = F.pad(tokens, (1, 1, 1, 1)) if self.value_delta is not None else None
        inside = F.unfold(tokens.new_ones(1, 1, h, w), 3, padding=1).view(9, h, w) > 0.5
        rows = max(1, (cells_per_chunk or h * w) // w)
        first = self.mlp[0]
        w_tok = first.weight[:, :d, None, None]
        out = tokens.new_empty(b, 3, h * n, w * n)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            out[:, :, r0 * n:r1 * n] = self._render_rows(kv[:, :, r0:r1 + 2], inside[:, r0:r1], q, bias,
                                                         feat_part, w_tok, n,
                                                         None if tok is None else tok[:, :, r0:r1 + 2])
        return out

    def _render_rows(self, kv, valid, q, bias, feat_part, w_tok, n, tok=None):
        """Rows of cells: kv (B, 2D, hc+2, w+2) zero-padded; valid (9, hc, w); tok the zero-padded
        tokens of those rows when there are per-neighbour values -> (B, 3, hc*n, w*n)."""
        b, _, hp, wp = kv.shape
        hc, w = hp - 2, wp - 2
        d = self.token_dim
        nh, dh = self.heads, d // self.heads
        o = q.shape[1]
        k = kv[:, :d].reshape(b, nh, dh, hp, wp)
        v = kv[:, d:].reshape(b, nh, dh, hp, wp)
        s = torch.einsum("bohd,bhdyx->bohyx", q.expand(b, -1, -1, -1), k)   # (B, O, H, hc+2, w+2)
        logits = torch.stack([s[..., dy:dy + hc, dx:dx + w] for dy in range(3) for dx in range(3)], 3)
        logits = logits + bias.expand(b, -1, -1, -1)[..., None, None]       # (B, O, H, 9, hc, w)
        logits = logits.masked_fill(~valid, float("-inf"))
        wt = logits.softmax(3)
        if self.threshold > 0:
            wt = wt * (wt >= self.threshold)
            wt = wt / wt.sum(3, keepdim=True)
        a = None
        for i, (dy, dx) in enumerate((dy, dx) for dy in range(3) for dx in range(3)):
            vi = v[:, :, :, dy:dy + hc, dx:dx + w]
            if tok is not None:
                delta = self.value_delta[i].to(tok.dtype)[:, :, None, None]
                vi = vi + F.conv2d(tok[:, :, dy:dy + hc, dx:dx + w], delta).view(b, nh, dh, hc, w)
            term = wt[:, :, :, i, None] * vi[:, None]  # (B, O, H, dh, hc, w)
            a = term if a is None else a + term
        hid = F.conv2d(a.reshape(b * o, d, hc, w), w_tok).view(b, o, -1, hc, w)
        hid = torch.relu(hid + feat_part.expand(b, -1, -1)[..., None, None]).flatten(0, 1)
        lin2, lin3 = self.mlp[2], self.mlp[4]
        hid = torch.relu(F.conv2d(hid, lin2.weight[:, :, None, None], lin2.bias))
        rgb = F.conv2d(hid, lin3.weight[:, :, None, None], lin3.bias) + 0.5   # (B*O, 3, hc, w)
        rgb = rgb.view(b, n, n, 3, hc, w).permute(0, 3, 4, 1, 5, 2)
        return rgb.reshape(b, 3, hc * n, w * n)

    def render_cells(self, tokens: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """The scale-1 pixels of some token cells only (what `render_grid` gives there):
        tokens (B, D, h, w), cells (N,) flat cell indices -> (B, N, stride^2, 3), each cell's
        stride x stride pixels in raster order. Lets encoder-side refinement sample pixels cheaply."""
        b, d, h, w = tokens.shape
        # Index only the picked cells' neighbours: unfolding the whole grid first (and
        # folding its gradient back) cost refinement most of its time.
        idx, inside = self._neighbours(torch.stack([cells % w, cells // w], -1), h, w)  # (N, 9)

        def rows(t):  # (B, C, h, w) -> (B, N, 9, C); index_select's gradient is a fast index_add
            return t.flatten(2).transpose(1, 2).index_select(1, idx.flatten()).view(b, *idx.shape, -1)
        kv = rows(self.to_kv(tokens))                                        # (B, N, 9, 2D)
        shared = self._shared_queries(*_cell_offsets(self.stride, 1, tokens.device))
        values = kv[..., d:]
        if self.value_delta is not None:
            values = self._neighbour_values(values, rows(tokens))
        return self._attend_shared(shared, kv[..., :d], values, inside)

    def _shared_queries(self, u0: torch.Tensor, log_fp: torch.Tensor):
        """Everything that depends only on the in-cell offset, computed once for all cells.
        u0 (..., O, 2) -> q (..., O, H, dh) (scaled), distance bias (..., O, H, 9),
        position part of the MLP's first layer (..., O, hidden)."""
        nh, dh = self.heads, self.token_dim // self.heads
        feat = self._features(u0, log_fp)                                  # (..., O, F)
        q = self.to_q(feat).unflatten(-1, (nh, dh)) / math.sqrt(dh)       # (..., O, H, dh)
        rel = self.offsets - u0.unsqueeze(-2)                              # (..., O, 9, 2)
        bias = -F.softplus(self.dist_scale)[:, None] * (rel * rel).sum(-1).unsqueeze(-2)  # (..., O, H, 9)
        first = self.mlp[0]
        d = self.token_dim
        feat_part = feat @ first.weight[:, d:].T + first.bias              # (..., O, hidden)
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
        feat, u, keys, values, valid = self._gather(tokens, xy, footprint, jitter)
        return self._attend(feat, u, keys, values, valid)

    def attention_weights(self, tokens: torch.Tensor, xy: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
        """What `render_points` attends with: (B, N, heads, 9), neighbours in `_OFFSETS` order.
        For diagnosis (benchmarks/capacity.py): weights that hardly vary between queries mean
        the layer has settled into a fixed blur of the tokens."""
        feat, u, keys, _, valid = self._gather(tokens, xy, footprint, False)
        return self._weights(feat, u, keys, valid)

    def _neighbours(self, cell: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer cells (..., 2) as (x, y) -> flat indices of their 3x3 neighbours in
        `_OFFSETS` order, clamped into the h x w grid, and which of them really lie inside
        it: (..., 9), (..., 9)."""
        nb = cell.unsqueeze(-2) + self.offsets.long()               # (..., 9, 2) as (x, y)
        inside = (nb[..., 0] >= 0) & (nb[..., 0] < w) & (nb[..., 1] >= 0) & (nb[..., 1] < h)
        return nb[..., 1].clamp(0, h - 1) * w + nb[..., 0].clamp(0, w - 1), inside

    def _gather(self, tokens, xy, footprint, jitter):
        """Per query: its features, in-cell position u, its 9 neighbours' keys and values, and
        which of them lie inside the grid."""
        b, d, h, w = tokens.shape
        kv = self.to_kv(tokens).flatten(2).transpose(1, 2)  # (B, L, 2D)
        pos = xy / self.stride
        if jitter:
            pos = pos + self._jitter(torch.zeros_like(pos), footprint / self.stride)
        cell = torch.stack([pos[..., 0].floor().clamp(0, w - 1), pos[..., 1].floor().clamp(0, h - 1)], -1)
        u = pos - cell - 0.5
        idx, valid = self._neighbours(cell.long(), h, w)           # (B, N, 9)
        idx = idx.flatten(1)                                        # (B, N*9)
        kvn = torch.gather(kv, 1, idx.unsqueeze(-1).expand(-1, -1, 2 * d)).view(b, -1, 9, 2 * d)
        values = kvn[..., d:]
        if self.value_delta is not None:
            tn = torch.gather(tokens.flatten(2).transpose(1, 2), 1, idx.unsqueeze(-1).expand(-1, -1, d))
            values = self._neighbour_values(values, tn.view(b, -1, 9, d))
        feat = self._features(u, footprint.float().log2())
        return feat, u, kvn[..., :d], values, valid


def _cell_offsets(stride: int, scale: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets of the (stride * scale)^2 output pixels inside a token cell, in cell units (x, y), row
    by row, and the log2 pixel footprint. Float32 even under mixed precision (see
    fourier_features)."""
    n = stride * scale
    t = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n - 0.5
    u0 = torch.stack(torch.meshgrid(t, t, indexing="ij")[::-1], dim=-1).reshape(n * n, 2)
    return u0, torch.full((2,), -math.log2(scale), device=device)
