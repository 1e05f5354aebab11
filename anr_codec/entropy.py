"""Entropy coding of latent symbols with integer frequency tables fixed in the model file.

Why integer tables: if a network computed the probabilities at decode time, a one-ulp
float difference between the encoding and the decoding machine (CPU vs GPU, another
BLAS, another thread count) could select another distribution and desynchronise the
arithmetic decoder. Here every probability is an integer count stored with the model
(built once at export from the trained factorized prior), turned into float64 by an
exact division by a power of two, and quantised by constriction's deterministic integer
code, so the same bytes decode to the same symbols everywhere.

Layout of one quality's table: for channel c, symbols q (latent minus the prior's
median, rounded) in [lo[c], lo[c] + n[c] - 2] have counts[c, q - lo[c]], and index
n[c] - 1 is an escape. An escaped symbol is sent afterwards in raster order as a
bit length (uniform over 1..MAX_ESCAPE_BITS) and its remaining bits (uniform chunks).
"""

from __future__ import annotations

import zlib

import constriction
import numpy as np
import torch

from .errors import AnrError

PRECISION = 16           # table counts sum to 2**PRECISION
MAX_TABLE = 2048         # most entries one channel's table may have
MAX_ESCAPE_BITS = 22     # |symbol| < 2**21: far beyond any real latent, bounds hostile input
SYMBOL_LIMIT = (1 << (MAX_ESCAPE_BITS - 1)) - 1
ESCAPE_LENGTH_BITS = float(np.log2(MAX_ESCAPE_BITS)) - 1e-3  # less a hair: the uniform model is quantised too
# Slack of the payload-length bounds: a range coder's output may fall short of its
# symbols' information content by up to about one 32-bit word (the final state).
SLACK_BITS = 64
COUNT_MARGIN = 1  # counts; constriction's 24-bit quantisation moves a probability by < 2^-23


@torch.no_grad()
def build_tables(prior) -> dict:
    """Integer frequency tables from a trained compressai EntropyBottleneck."""
    q = prior.quantiles.detach().double().cpu()[:, 0, :]     # (C, 3): lower, median, upper
    med = q[:, 1]
    lo = torch.floor(q[:, 0] - med).clamp(min=-(MAX_TABLE // 2 - 1)).long()
    hi = torch.ceil(q[:, 2] - med).clamp(max=MAX_TABLE // 2 - 1).long()
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    n = (hi - lo + 2)                                          # + escape
    counts = np.zeros((len(med), int(n.max())), dtype=np.int32)
    k = torch.arange(int(n.max()) - 1, dtype=torch.float64)
    x = (lo[:, None].double() + k[None] + med[:, None]).unsqueeze(1)  # (C, 1, K): all channels at once
    lik, _, _ = prior.double().cpu()._likelihood(x)
    lik = lik[:, 0].clamp_min(0).numpy()
    total = 1 << PRECISION
    for c in range(len(med)):
        pmf = lik[c, : int(n[c]) - 1]
        pmf = np.append(pmf, max(0.0, 1.0 - pmf.sum()))         # escape gets the tails
        counts[c, :int(n[c])] = quantize_pmf(pmf, total)
    prior.float()
    return {"lo": lo.int().numpy(), "n": n.int().numpy(), "counts": counts}


def quantize_pmf(pmf: np.ndarray, total: int) -> np.ndarray:
    """Integer counts >= 1 summing exactly to `total`, close to pmf * total."""
    pmf = np.maximum(pmf, 0) / max(pmf.sum(), 1e-300)
    free = total - len(pmf)
    c = np.floor(pmf * free).astype(np.int64) + 1
    # Hand out the remainder by largest fractional part (ties by index: deterministic).
    rem = total - int(c.sum())
    frac = pmf * free - np.floor(pmf * free)
    order = np.lexsort((np.arange(len(pmf)), -frac))
    c[order[:rem]] += 1
    return c.astype(np.int32)


CORRUPT = "entropy-coded data is corrupt (it decodes to more information than the payload holds)"


class BoundedDecoding:
    """What every symbol coder checks before decoding a hostile payload.

    A range decoder that runs out of words goes on decoding (as if zeros followed), so a
    header claiming a huge latent with a tiny payload would make it loop over every
    claimed symbol. A range coder's output is at least the information content of its
    symbols (less a word or two), so a payload shorter than the tables' lower bound
    (`min_bits_per_position`, set by the subclass) is refused before anything is
    allocated, and the subclass tallies the information decoded against the returned
    budget: work and memory stay proportional to the size of the file.
    """

    channels: int
    min_bits_per_position: float

    def min_payload_bytes(self, shape: tuple[int, int, int]) -> int:
        """The fewest payload bytes any honest encoding of a latent of `shape` can have."""
        _, h, w = shape
        return max(0, int(h * w * self.min_bits_per_position - SLACK_BITS) // 8)

    def _open(self, payload: bytes, shape: tuple[int, int, int]):
        """-> (range decoder, budget in bits), after the checks that need no decoding."""
        c_, h, w = shape
        if c_ != self.channels:
            raise AnrError(f"file has {c_} latent channels, the model has {self.channels}")
        if len(payload) % 4:
            raise AnrError("entropy-coded payload is not a whole number of 32-bit words")
        need = self.min_payload_bytes(shape)
        if len(payload) < need:
            raise AnrError(f"entropy-coded payload is too short ({len(payload)} bytes; a {c_}x{h}x{w} "
                           f"latent needs at least {need})")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        try:
            return constriction.stream.queue.RangeDecoder(words), 8 * len(payload) + SLACK_BITS
        except Exception as e:
            raise AnrError(f"entropy-coded data is corrupt ({e})") from None


class SymbolCoder(BoundedDecoding):
    """Encodes/decodes (C, h, w) int32 symbol arrays with one quality's tables."""

    def __init__(self, tables: dict):
        self.lo = np.asarray(tables["lo"], dtype=np.int64)
        self.n = np.asarray(tables["n"], dtype=np.int64)
        counts = np.asarray(tables["counts"], dtype=np.int64)
        if not (self.lo.ndim == self.n.ndim == 1 and counts.ndim == 2 and len(self.lo) == len(self.n) == len(counts)
                and (self.n >= 2).all() and (self.n <= counts.shape[1]).all()):
            raise AnrError("model file has an invalid entropy table")
        self.models, self.bits = [], []
        for c in range(len(self.n)):
            row = counts[c, : self.n[c]]
            if (row <= 0).any() or row.sum() != (1 << PRECISION):
                raise AnrError("model file has an invalid entropy table")
            # Exact in float64: integer / power of two.
            self.models.append(constriction.stream.model.Categorical(row / float(1 << PRECISION), perfect=False))
            # An upper bound on each symbol's probability after constriction's quantisation
            # (which moves it by far less than one count), as bits: a lower bound on what
            # decoding that symbol must have consumed from an honest payload.
            self.bits.append(-np.log2(np.minimum(row + COUNT_MARGIN, 1 << PRECISION) / float(1 << PRECISION)))
        self.channels = len(self.n)
        self.min_bits_per_position = float(sum(b.min() for b in self.bits))

    def encode(self, symbols: np.ndarray) -> bytes:
        enc = constriction.stream.queue.RangeEncoder()
        self.encode_into(enc, symbols)
        return enc.get_compressed().astype("<u4").tobytes()

    def encode_into(self, enc, symbols: np.ndarray) -> None:
        """Append (C, h, w) symbols (escaped values last) to a range encoder."""
        c_, h, w = symbols.shape
        if c_ != self.channels:
            raise ValueError("symbol array has the wrong number of channels")
        escapes = []
        for c in range(c_):
            s = symbols[c].reshape(-1).astype(np.int64)
            idx = s - self.lo[c]
            esc = (idx < 0) | (idx >= self.n[c] - 1)
            idx[esc] = self.n[c] - 1
            enc.encode(idx.astype(np.int32), self.models[c])
            escapes.extend(int(v) for v in s[esc])
        for v in escapes:
            _encode_escape(enc, v)

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Symbols (C, h, w) int32 from a payload; raises AnrError on corrupt data.

        Bounded as BoundedDecoding says; the information is tallied channel by channel.
        """
        dec, budget = self._open(payload, shape)
        return self.decode_from(dec, shape, 0.0, budget)[0]

    def decode_from(self, dec, shape: tuple[int, int, int], used: float, budget: float):
        """What `encode_into` appended: -> (symbols, information used so far in bits);
        AnrError as soon as `used` passes `budget`."""
        c_, h, w = shape
        n = h * w
        try:
            out = np.empty((c_, n), dtype=np.int32)
            esc_at = []
            for c in range(c_):
                idx = dec.decode(self.models[c], n)
                used += float(self.bits[c][idx].sum())
                if used > budget:
                    raise AnrError(CORRUPT)
                np.add(idx, self.lo[c], out=out[c], casting="unsafe")
                e = np.flatnonzero(idx == self.n[c] - 1)
                if len(e):
                    esc_at.append(c * n + e)
            esc_at = np.concatenate(esc_at) if esc_at else np.empty(0, dtype=np.int64)
            used = decode_escapes(dec, out.reshape(-1), esc_at, used, budget)
        except AnrError:
            raise
        except Exception as e:  # constriction reports corrupt data as various errors
            raise AnrError(f"entropy-coded data is corrupt ({e})") from None
        return out.reshape(c_, h, w), used


def decode_escapes(dec, flat: np.ndarray, esc_at: np.ndarray, used: float, budget: float) -> float:
    """Fill flat[esc_at] with the escaped values that follow; -> information used."""
    # Each escaped value costs at least its bit length (log2 22) and one bit.
    if used + len(esc_at) * (ESCAPE_LENGTH_BITS + 1) > budget:
        raise AnrError(CORRUPT)
    for s in range(0, len(esc_at), 1 << 16):  # in slices: no Python list of every position
        for i in esc_at[s: s + (1 << 16)].tolist():
            v, bits = _decode_escape(dec)
            used += bits
            if used > budget:
                raise AnrError(CORRUPT)
            flat[i] = v
    return used


_UNIFORM = {}


def _uniform(size: int):
    m = _UNIFORM.get(size)
    if m is None:
        m = _UNIFORM[size] = constriction.stream.model.Uniform(size)
    return m


def _encode_escape(enc, v: int) -> None:
    z = (v << 1) if v >= 0 else ((-v << 1) - 1)  # zigzag: small magnitudes, small codes
    nbits = max(1, z.bit_length())
    enc.encode(nbits - 1, _uniform(MAX_ESCAPE_BITS))
    rest, k = z, nbits
    while k > 0:
        take = min(16, k)
        enc.encode((rest >> (k - take)) & ((1 << take) - 1), _uniform(1 << take))
        k -= take


def _decode_escape(dec) -> tuple[int, float]:
    """-> (value, bits it took)."""
    nbits = int(dec.decode(_uniform(MAX_ESCAPE_BITS))) + 1
    z, k = 0, nbits
    while k > 0:
        take = min(16, k)
        z = (z << take) | int(dec.decode(_uniform(1 << take)))
        k -= take
    return ((z >> 1) if z % 2 == 0 else -((z + 1) >> 1)), ESCAPE_LENGTH_BITS + nbits


def symbols_checksum(symbols: np.ndarray) -> int:
    """CRC32 of the symbols as little-endian int32: a desynchronised decode fails loudly."""
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4").tobytes())
