"""Entropy coding for hyperprior models: z with factorized tables, then the latent with
Gaussian tables picked by the exactly computed scales (fixedpoint.py).

Payload (one range-coder stream): z's symbols as SymbolCoder codes them (channel by
channel, escapes last), then the latent's symbols grouped by table index (table 0's
symbols in raster order over (channel, row, column), then table 1's, ...), then their
escaped values in the same order. The decoder decodes z, computes the indices from it,
and so knows every group's members before decoding them.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

from .entropy import (CORRUPT, COUNT_MARGIN, PRECISION, BoundedDecoding, SymbolCoder, _encode_escape,
                      decode_escapes)
from .errors import AnrError
from .fixedpoint import ACT_BITS, ExactParams


def z_shape(latent_shape: tuple[int, int, int], z_channels: int) -> tuple[int, int, int]:
    _, h, w = latent_shape
    return z_channels, -(-h // 4), -(-w // 4)


class HyperCoder(BoundedDecoding):
    def __init__(self, z_coder: SymbolCoder, params: ExactParams, halves: np.ndarray, counts: np.ndarray,
                 channels: int):
        halves = np.asarray(halves, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if not (halves.ndim == 1 and counts.ndim == 2 and len(halves) == len(counts) == len(params.thresholds) + 1
                and (halves >= 0).all() and (2 * halves + 2 <= counts.shape[1]).all()):
            raise AnrError("model file has an invalid Gaussian table")
        self.z, self.params, self.halves, self.channels = z_coder, params, halves, channels
        self.models, self.bits = [], []
        for k, half in enumerate(halves):
            row = counts[k, : 2 * half + 2]
            if (row <= 0).any() or row.sum() != (1 << PRECISION):
                raise AnrError("model file has an invalid Gaussian table")
            self.models.append(constriction.stream.model.Categorical(row / float(1 << PRECISION), perfect=False))
            self.bits.append(-np.log2(np.minimum(row + COUNT_MARGIN, 1 << PRECISION) / float(1 << PRECISION)))
        self.min_bits_table = np.array([b.min() for b in self.bits])
        # Each table's scale: table k < K-1 is the k-th threshold's, the last one step beyond.
        t = np.exp(params.thresholds.numpy() / (1 << ACT_BITS))
        self.scales = np.append(t, t[-1] * t[-1] / t[-2]).astype(np.float32)
        # Per latent position: its z share plus the cheapest symbol of any table per channel.
        self.min_bits_per_position = (z_coder.min_bits_per_position / 16
                                      + channels * float(self.min_bits_table.min()))

    def means_and_indices(self, z_symbols: np.ndarray, shape: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
        return self.params(z_symbols, shape)

    def encode(self, z_symbols: np.ndarray, symbols: np.ndarray, indices: np.ndarray) -> bytes:
        enc = constriction.stream.queue.RangeEncoder()
        self.z.encode_into(enc, z_symbols)
        flat, idx = symbols.reshape(-1).astype(np.int64), indices.reshape(-1)
        escapes = []
        for k, half in enumerate(self.halves):
            s = flat[idx == k]
            if not len(s):
                continue
            t = s + half
            esc = (t < 0) | (t > 2 * half)
            t[esc] = 2 * half + 1
            enc.encode(t.astype(np.int32), self.models[k])
            escapes.extend(int(v) for v in s[esc])
        for v in escapes:
            _encode_escape(enc, v)
        return enc.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, shape: tuple[int, int, int]):
        """-> (z symbols, latent symbols (C, h, w) int32, means (C, h, w) of the scaled latent)."""
        dec, budget = self._open(payload, shape)
        c_, h, w = shape
        z_sym, used = self.z.decode_from(dec, z_shape(shape, self.z.channels), 0.0, budget)
        means, idx = self.params(z_sym, (h, w))
        flat_idx = idx.reshape(-1)
        # Now that every symbol's table is known, the payload must hold at least their minimum.
        if used + float(self.min_bits_table[flat_idx].sum()) > budget:
            raise AnrError(CORRUPT)
        out = np.empty(c_ * h * w, dtype=np.int32)
        esc_at = []
        try:
            for k, half in enumerate(self.halves):
                pos = np.flatnonzero(flat_idx == k)
                if not len(pos):
                    continue
                t = dec.decode(self.models[k], len(pos))
                used += float(self.bits[k][t].sum())
                if used > budget:
                    raise AnrError(CORRUPT)
                out[pos] = t - half
                esc_at.append(pos[t == 2 * half + 1])
            esc_at = np.concatenate(esc_at) if esc_at else np.empty(0, dtype=np.int64)
            decode_escapes(dec, out, esc_at, used, budget)
        except AnrError:
            raise
        except Exception as e:
            raise AnrError(f"entropy-coded data is corrupt ({e})") from None
        return z_sym, out.reshape(c_, h, w), means
