"""Context-adaptive coding of latent symbols: integer tables picked by decoded neighbours.

Why: a factorized prior codes every position of a channel with one distribution, but the
latent's magnitudes cluster in space (texture against flat sky). Picking one of a few
integer tables by the magnitudes of the neighbours above, which the decoder already has,
saves rate with no network at decode time: the context is integer arithmetic on decoded
symbols, so it reproduces everywhere exactly as the factorized tables do (see entropy.py).

Context of symbol (c, i, j): the sum of the magnitude classes of the same channel's
(i-1, j-1), (i-1, j), (i-1, j+1) and (i-2, j), zero outside the latent, capped at
CONTEXTS - 1. A symbol's class is its magnitude's bit length (0, 1, 2-3, 4-7, ...) up to
MAGNITUDE_CAP: logarithmic, because channel spreads range from below 1 to tens of steps
and a linear cap saturated on the wide channels. Only rows above count, so one call codes a whole row (every channel and
column), in (row, channel, column) order.

Table of channel c and context k: counts (summing to 2**PRECISION, each >= 1) over the
symbols -WINDOW..WINDOW and an escape (index 2 * WINDOW + 1). Escaped symbols follow, in
the same order, coded with the channel's factorized table (whose own escape covers any
value); an escaped symbol (|s| > WINDOW) has class MAGNITUDE_CAP whatever its value, so
the contexts of later rows never wait for the escapes.

benchmarks/context_gain.py measures the saving on held-out training images.
"""

from __future__ import annotations

import constriction
import numpy as np

from .entropy import (CORRUPT, COUNT_MARGIN, PRECISION, BoundedDecoding, SymbolCoder, _decode_escape,
                      _encode_escape, quantize_pmf)
from .errors import AnrError

WINDOW = 31            # symbols -31..31 in the context tables; beyond: escape
CONTEXTS = 16
MAGNITUDE_CAP = (WINDOW + 1).bit_length()  # the class of every escaped symbol
WIDTH = 2 * WINDOW + 2
ESCAPE = WIDTH - 1
PRIOR_WEIGHT = 20.0    # pseudo-counts of the factorized pmf in each context's estimate

_FAMILY = constriction.stream.model.Categorical(perfect=False)


def _magnitudes(symbols: np.ndarray) -> np.ndarray:
    """Magnitude classes: bit lengths of |s| (0 for 0, 1 for 1, 2 for 2-3, ...), capped."""
    a = np.minimum(np.abs(symbols.astype(np.int64)), WINDOW + 1)
    # Exact for these small integers: frexp's exponent is the bit length.
    return np.frexp(a.astype(np.float64))[1].astype(np.int16)


def _padded_magnitudes(symbols: np.ndarray) -> np.ndarray:
    """(C, h + 2, w + 2): two zero rows above, a zero column each side (outside = 0)."""
    c_, h, w = symbols.shape
    mag = np.zeros((c_, h + 2, w + 2), np.int16)
    mag[:, 2:, 1:-1] = _magnitudes(symbols)
    return mag


def _row_contexts(mag: np.ndarray, i: int) -> np.ndarray:
    """(C, w) contexts of latent row i from padded magnitudes whose rows < i are filled."""
    return np.minimum(mag[:, i + 1, :-2] + mag[:, i + 1, 1:-1] + mag[:, i + 1, 2:] + mag[:, i, 1:-1],
                      CONTEXTS - 1)


def contexts(symbols: np.ndarray) -> np.ndarray:
    """Context index of every symbol of a (C, h, w) array (what the decoder sees row by row)."""
    mag = _padded_magnitudes(symbols)
    return np.stack([_row_contexts(mag, i) for i in range(symbols.shape[1])], axis=1)


def count_contexts(symbols: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Accumulate (C, CONTEXTS, WIDTH) occurrence counts of a (C, h, w) symbol array."""
    c_ = symbols.shape[0]
    if counts is None:
        counts = np.zeros((c_, CONTEXTS, WIDTH), np.int64)
    idx = symbols.astype(np.int64) + WINDOW
    idx[(idx < 0) | (idx > 2 * WINDOW)] = ESCAPE
    ctx = contexts(symbols)
    chan = np.broadcast_to(np.arange(c_)[:, None, None], symbols.shape)
    np.add.at(counts, (chan.ravel(), ctx.ravel(), idx.ravel()), 1)
    return counts


def build_context_tables(counts: np.ndarray, factorized: dict) -> np.ndarray:
    """Integer (C, CONTEXTS, WIDTH) tables from occurrence counts, each context's estimate
    pulled towards the channel's factorized pmf by PRIOR_WEIGHT pseudo-counts (rare
    contexts then fall back to it)."""
    lo, n, fcounts = (np.asarray(factorized[k], np.int64) for k in ("lo", "n", "counts"))
    c_ = len(lo)
    if counts.shape != (c_, CONTEXTS, WIDTH):
        raise ValueError(f"counts must have shape {(c_, CONTEXTS, WIDTH)}")
    out = np.zeros((c_, CONTEXTS, WIDTH), np.int32)
    for c in range(c_):
        prior = np.zeros(WIDTH)
        for s in range(-WINDOW, WINDOW + 1):
            f = s - lo[c]
            if 0 <= f < n[c] - 1:
                prior[s + WINDOW] = fcounts[c, f]
        prior /= 1 << PRECISION
        prior[ESCAPE] = max(0.0, 1.0 - prior.sum())
        for k in range(CONTEXTS):
            row = counts[c, k]
            out[c, k] = quantize_pmf((row + PRIOR_WEIGHT * prior) / (row.sum() + PRIOR_WEIGHT), 1 << PRECISION)
    return out


class ContextCoder(BoundedDecoding):
    """Encodes/decodes (C, h, w) int32 symbol arrays with one quality's context tables."""

    def __init__(self, tables: dict):
        self.fallback = SymbolCoder(tables)
        counts = np.asarray(tables["ctx_counts"], dtype=np.int64)
        self.channels = self.fallback.channels
        if (counts.shape != (self.channels, CONTEXTS, WIDTH) or (counts <= 0).any()
                or (counts.sum(-1) != 1 << PRECISION).any()):
            raise AnrError("model file has an invalid context table")
        self.probs = counts / float(1 << PRECISION)  # exact in float64: integer / power of two
        # Upper bounds of the quantised probabilities, as bits (see SymbolCoder).
        self.bits = -np.log2(np.minimum(counts + COUNT_MARGIN, 1 << PRECISION) / float(1 << PRECISION))
        self.min_bits_per_position = float(self.bits.min(axis=(1, 2)).sum())
        self._chan = np.arange(self.channels)[:, None]

    def encode(self, symbols: np.ndarray) -> bytes:
        c_, h, w = symbols.shape
        if c_ != self.channels:
            raise ValueError("symbol array has the wrong number of channels")
        mag = _padded_magnitudes(symbols)
        idx = symbols.astype(np.int64) + WINDOW
        esc = (idx < 0) | (idx > 2 * WINDOW)
        idx[esc] = ESCAPE
        enc = constriction.stream.queue.RangeEncoder()
        for i in range(h):
            enc.encode(idx[:, i].reshape(-1).astype(np.int32), _FAMILY,
                       self.probs[self._chan, _row_contexts(mag, i)].reshape(-1, WIDTH))
        fb = self.fallback
        for i, c, j in zip(*np.nonzero(esc.transpose(1, 0, 2))):
            v = int(symbols[c, i, j])
            f = v - int(fb.lo[c])
            if 0 <= f < fb.n[c] - 1:
                enc.encode(f, fb.models[c])
            else:
                enc.encode(int(fb.n[c]) - 1, fb.models[c])
                _encode_escape(enc, v)
        return enc.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Symbols (C, h, w) int32 from a payload; raises AnrError on corrupt data.

        Bounded as BoundedDecoding says; the information is tallied row by row."""
        dec, budget = self._open(payload, shape)
        c_, h, w = shape
        fb = self.fallback
        try:
            out = np.empty((c_, h, w), dtype=np.int32)
            mag = np.zeros((c_, h + 2, w + 2), np.int16)  # decoded magnitudes, zero-padded
            esc_rows = []
            used = 0.0
            for i in range(h):
                ctx = _row_contexts(mag, i)
                idx = dec.decode(_FAMILY, self.probs[self._chan, ctx].reshape(-1, WIDTH)).reshape(c_, w)
                used += float(self.bits[self._chan, ctx, idx].sum())
                if used > budget:
                    raise AnrError(CORRUPT)
                out[:, i] = idx - WINDOW
                mag[:, i + 2, 1:-1] = _magnitudes(out[:, i])
                e = np.flatnonzero(idx.reshape(-1) == ESCAPE)
                if len(e):  # their class is already MAGNITUDE_CAP: idx - WINDOW > WINDOW
                    esc_rows.append((i, e))
            for i, e in esc_rows:
                for k in e.tolist():
                    c, j = divmod(k, w)
                    f = int(dec.decode(fb.models[c]))
                    used += float(fb.bits[c][f])
                    if f == fb.n[c] - 1:
                        v, bits = _decode_escape(dec)
                        used += bits
                    else:
                        v = f + int(fb.lo[c])
                    if used > budget:
                        raise AnrError(CORRUPT)
                    if -WINDOW <= v <= WINDOW:  # an honest encoder never escapes these
                        raise AnrError("entropy-coded data is corrupt (an escaped symbol lies inside the table)")
                    out[c, i, j] = v
        except AnrError:
            raise
        except Exception as e:  # constriction reports corrupt data as various errors
            raise AnrError(f"entropy-coded data is corrupt ({e})") from None
        return out
