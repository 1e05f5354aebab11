"""Hyper-network INRs for the paper study (issue 7): one transformer encoder, three INR heads.

All three map a face to an instance-specific representation in one forward pass and then
evaluate RGB at arbitrary coordinates (x, y) in [-1, 1] (pixel centres of an R x R image at
(i + 0.5) / R * 2 - 1), always through the same Fourier features of the coordinate
(anr_codec.layers.fourier_features, octaves 1..32: Nyquist of a 64-pixel grid).

Encoder (shared): P x P patch embedding (P = res / sqrt(tokens)) + learned position
embedding + global pre-norm transformer blocks. Trans-INR and IPC append learned weight
tokens to the patch tokens (as those papers do) and read the generated weights off them.

Heads:
- `anr` (the paper): the patch tokens become data tokens (B, N, D); each query's Fourier
  features, projected, attend over ALL N tokens with the thresholded softmax (weights below
  the threshold cut to zero, the rest renormalised); keys carry a Fourier position embedding
  of their patch centre so attention can localise; query + attended feature -> global ReLU MLP.
- `transinr` (Trans-INR, Chen & Wang 2022): every linear layer of a ReLU MLP over the Fourier
  features is instance-specific: each weight token, after a LayerNorm + Linear, gives one
  fan-in vector that multiplies a group of columns of a shared base weight; columns are then
  L2-normalised (yinboc/trans-inr `TransInr.forward`). Biases stay shared.
- `ipc` (Instance Pattern Composers, Kim et al. 2023): one layer of the MLP is instance-specific,
  generated as a low-rank product (weight tokens -> fan-in factors) @ (shared fan-out factor);
  the other layers are shared. Like kakaobrain/ginr-ipc (`modulated_layer_idxs: [1]`), the
  modulated layer defaults to the second linear layer (index 1: the first hidden -> hidden
  layer, which composes the shared "patterns" of layer 0); `ipc_layer=0` modulates the input layer.

Widths are chosen so the three total parameter counts agree within 10 % at the defaults
(`python benchmarks/paper/inr_models.py --check`).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anr_codec.layers import fourier_features

N_FREQS, MAX_FREQ = 6, 32.0
FEAT_DIM = 2 + 4 * N_FREQS
HEADS = ("anr", "transinr", "ipc")


def coord_features(xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) coordinates in [-1, 1] -> (..., FEAT_DIM) Fourier features."""
    return fourier_features(xy, N_FREQS, MAX_FREQ)


def pixel_centers(res: int, device=None) -> torch.Tensor:
    """(res*res, 2) pixel-centre coordinates (x, y) in [-1, 1], row-major like image.flatten()."""
    t = (torch.arange(res, dtype=torch.float32, device=device) + 0.5) / res * 2 - 1
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def thresholded_softmax(logits: torch.Tensor, threshold: float, dim: int = -1) -> torch.Tensor:
    """The paper's localized softmax: weights < threshold set to 0, the rest renormalised.

    The largest weight is always kept (with many tokens every weight can fall below the
    threshold, e.g. 256 tokens and threshold 0.01 > 1/256), so the sum never becomes 0.
    threshold 0 is the plain softmax."""
    w = logits.softmax(dim)
    if threshold <= 0:
        return w
    keep = w >= w.amax(dim, keepdim=True).clamp(max=threshold)
    w = w * keep
    return w / w.sum(dim, keepdim=True)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- encoder ---------------------------------------------------------------------------------

class Block(nn.Module):
    """Pre-norm transformer block with global self-attention over (B, L, C) tokens.

    (anr_codec.layers.TransformerBlock attends over a k x k neighbourhood on a grid; the
    hyper-networks of the paper, Trans-INR and IPC attend globally, and the appended weight
    tokens have no grid position, so a plain sequence block is used here.)"""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class HyperEncoder(nn.Module):
    """Image (B, 3, res, res) in [0, 1] -> (B, tokens + extra, width) transformer outputs."""

    def __init__(self, res: int = 64, tokens: int = 64, width: int = 64, depth: int = 4,
                 heads: int = 4, extra_tokens: int = 0):
        super().__init__()
        grid = math.isqrt(tokens)
        if grid * grid != tokens or res % grid:
            raise ValueError(f"tokens must be a square grid dividing the {res}px input, got {tokens}")
        patch = res // grid
        self.res, self.grid = res, grid
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.extra = nn.Parameter(torch.randn(1, extra_tokens, width) * 0.02) if extra_tokens else None
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.embed(img - 0.5).flatten(2).transpose(1, 2) + self.pos
        if self.extra is not None:
            x = torch.cat([x, self.extra.expand(x.shape[0], -1, -1)], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# -- heads -----------------------------------------------------------------------------------
# Each head: `extra_tokens` (weight tokens the encoder appends), `represent(enc_out)` -> the
# instance-specific representation z, `decode(z, xy)` with xy (B or 1, Q, 2) -> (B, Q, 3).

class ANRHead(nn.Module):
    def __init__(self, enc_width: int, tokens: int, token_dim: int = 64, attn_dim: int = 64,
                 heads: int = 4, hidden: int = 64, threshold: float = 0.01):
        super().__init__()
        self.n_tokens, self.heads, self.threshold = tokens, heads, threshold
        self.extra_tokens = 0
        self.to_data = nn.Linear(enc_width, token_dim)        # the data tokens (representation)
        self.to_k, self.to_v = nn.Linear(token_dim, attn_dim), nn.Linear(token_dim, attn_dim)
        # Keys get a position: a linear map of the Fourier features of the token's patch
        # centre, the same features the queries are built from, so q.k can measure nearness.
        self.pos_k = nn.Linear(FEAT_DIM, attn_dim, bias=False)
        self.register_buffer("token_feat", coord_features(pixel_centers(math.isqrt(tokens))), persistent=False)
        self.to_q = nn.Linear(FEAT_DIM, attn_dim)
        self.mlp = nn.Sequential(nn.Linear(attn_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 3))

    def represent(self, h: torch.Tensor) -> torch.Tensor:
        return self.to_data(h[:, :self.n_tokens])              # (B, N, D)

    def _qkv(self, z: torch.Tensor, xy: torch.Tensor):
        """Query embedding (B|1, Q, A) and per-head q (B|1, H, Q, dh), k, v (B, H, N, dh)."""
        nh = self.heads
        q = self.to_q(coord_features(xy))
        k = self.to_k(z) + self.pos_k(self.token_feat)
        v = self.to_v(z)
        split = lambda t: t.unflatten(-1, (nh, t.shape[-1] // nh)).transpose(1, 2)  # noqa: E731
        return q, split(q), split(k), split(v)

    def attention_weights(self, z: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """The thresholded attention weights (B, heads, Q, N) (for inspection and tests)."""
        _, qh, kh, _ = self._qkv(z, xy)
        return thresholded_softmax(qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1]), self.threshold)

    def decode(self, z: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        q, qh, kh, vh = self._qkv(z, xy)
        qh = qh.expand(kh.shape[0], -1, -1, -1)
        mask = None
        if self.threshold > 0:
            # Thresholding then renormalising = a softmax restricted to the kept tokens, so the
            # kept set is found without gradients and the fused attention kernel does the rest
            # (about 2x faster on CPU than softmax, mask, renormalise with autograd).
            with torch.no_grad():
                p = (qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])).softmax(-1)
                mask = p >= p.amax(-1, keepdim=True).clamp(max=self.threshold)
        a = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
        a = a.transpose(1, 2).flatten(2)                       # (B, Q, A)
        return self.mlp(q + a) + 0.5


def _mlp_shapes(hidden: int, depth: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of a depth-layer MLP FEAT_DIM -> hidden ... -> 3."""
    dims = [FEAT_DIM] + [hidden] * (depth - 1) + [3]
    return list(zip(dims[:-1], dims[1:]))


def _base_linear(fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    lin = nn.Linear(fan_in, fan_out)  # PyTorch's default (kaiming-uniform) init, as Trans-INR
    return nn.Parameter(lin.weight.detach().t().clone()), nn.Parameter(lin.bias.detach().clone())


def _run_mlp(h: torch.Tensor, layers) -> torch.Tensor:
    for i, (w, b) in enumerate(layers):
        h = torch.matmul(h, w) + b.unsqueeze(-2)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h + 0.5


class TransINRHead(nn.Module):
    def __init__(self, enc_width: int, tokens: int, hidden: int = 80, depth: int = 3, groups: int = 16):
        super().__init__()
        self.n_tokens = tokens
        self.shapes = _mlp_shapes(hidden, depth)
        self.base_w, self.base_b = nn.ParameterList(), nn.ParameterList()
        self.postfc = nn.ModuleList()
        self.ranges, n = [], 0
        for fan_in, fan_out in self.shapes:
            w, b = _base_linear(fan_in, fan_out)
            self.base_w.append(w)
            self.base_b.append(b)
            g = min(groups, fan_out)
            if fan_out % g:
                raise ValueError(f"groups {g} must divide width {fan_out}")
            self.postfc.append(nn.Sequential(nn.LayerNorm(enc_width), nn.Linear(enc_width, fan_in)))
            self.ranges.append((n, n + g))
            n += g
        self.extra_tokens = n

    def represent(self, h: torch.Tensor):
        wt = h[:, self.n_tokens:]
        layers = []
        for (l, r), fc, w, b in zip(self.ranges, self.postfc, self.base_w, self.base_b):
            x = fc(wt[:, l:r]).transpose(1, 2)                  # (B, fan_in, g)
            x = x.repeat(1, 1, w.shape[1] // x.shape[2])       # group j -> columns j, j+g, ...
            layers.append((F.normalize(w * x, dim=1), b))
        return layers

    def decode(self, z, xy: torch.Tensor) -> torch.Tensor:
        return _run_mlp(coord_features(xy), z)


class IPCHead(nn.Module):
    def __init__(self, enc_width: int, tokens: int, hidden: int = 112, depth: int = 3,
                 rank: int = 64, layer: int = 1):
        super().__init__()
        self.n_tokens, self.layer = tokens, layer
        self.shapes = _mlp_shapes(hidden, depth)
        if not 0 <= layer < depth - 1:
            raise ValueError("the modulated layer must be a hidden layer")
        self.base_w, self.base_b = nn.ParameterList(), nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(self.shapes):
            w, b = _base_linear(fan_in, fan_out)
            # the modulated layer's weight is generated, not stored (ginr-ipc ignores it)
            self.base_w.append(nn.Parameter(torch.empty(0)) if i == layer else w)
            self.base_b.append(b)
        fan_in, fan_out = self.shapes[layer]
        self.shared_factor = nn.Parameter(torch.randn(rank, fan_out) / math.sqrt(rank * fan_in))
        self.postfc = nn.Sequential(nn.LayerNorm(enc_width), nn.Linear(enc_width, fan_in))
        self.extra_tokens = rank

    def represent(self, h: torch.Tensor) -> torch.Tensor:
        x = self.postfc(h[:, self.n_tokens:]).transpose(1, 2)   # (B, fan_in, rank)
        return x @ self.shared_factor                            # (B, fan_in, fan_out)

    def decode(self, z: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        layers = [(z if i == self.layer else w, b) for i, (w, b) in enumerate(zip(self.base_w, self.base_b))]
        return _run_mlp(coord_features(xy), layers)


# -- the model -------------------------------------------------------------------------------

class HyperINR(nn.Module):
    """Encoder + head. `encode(img)` -> z; `decode(z, xy)` -> (B, Q, 3); `render(z, res)`."""

    def __init__(self, head: str = "anr", res: int = 64, tokens: int = 64, token_dim: int = 64,
                 threshold: float = 0.01, enc_width: int = 64, enc_depth: int = 4, **head_kw):
        super().__init__()
        if head == "anr":
            self.head = ANRHead(enc_width, tokens, token_dim=token_dim, threshold=threshold, **head_kw)
        elif head == "transinr":
            self.head = TransINRHead(enc_width, tokens, **head_kw)
        elif head == "ipc":
            self.head = IPCHead(enc_width, tokens, **head_kw)
        else:
            raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
        self.encoder = HyperEncoder(res, tokens, enc_width, enc_depth, extra_tokens=self.head.extra_tokens)

    def encode(self, img: torch.Tensor):
        return self.head.represent(self.encoder(img))

    def decode(self, z, xy: torch.Tensor) -> torch.Tensor:
        return self.head.decode(z, xy)

    def forward(self, img: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(img), xy)

    @torch.no_grad()
    def render(self, z, res: int, chunk: int = 2048) -> torch.Tensor:
        """Decode the full res x res pixel-centre grid -> (B, 3, res, res)."""
        xy = pixel_centers(res)[None]
        out = torch.cat([self.decode(z, xy[:, s:s + chunk]) for s in range(0, xy.shape[1], chunk)], 1)
        return out.transpose(1, 2).unflatten(2, (res, res))

    def param_counts(self) -> dict:
        return {"total": count_params(self), "encoder": count_params(self.encoder), "head": count_params(self.head)}


def check(tolerance: float = 0.10) -> dict:
    """Parameter counts of the three heads at the defaults; they must agree within `tolerance`."""
    counts = {h: HyperINR(h).param_counts() for h in HEADS}
    totals = [c["total"] for c in counts.values()]
    spread = max(totals) / min(totals) - 1
    for h, c in counts.items():
        print(f"{h:9s} total {c['total']:7,d}  encoder {c['encoder']:7,d}  head {c['head']:6,d}")
    print(f"spread of totals: {100 * spread:.1f} % (limit {100 * tolerance:.0f} %)")
    assert spread <= tolerance, f"parameter counts differ by {100 * spread:.1f} %"
    return counts


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import check_checkout  # benchmarks/: count this checkout's layers, no other
    check_checkout.require()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="print and compare the heads' parameter counts")
    if ap.parse_args().check:
        check()
    else:
        ap.print_help()
