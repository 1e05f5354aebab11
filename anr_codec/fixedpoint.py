"""The hyperprior's synthesis h_s in exact integer arithmetic: the same scales everywhere.

Each decoded latent is coded with the table its predicted scale selects, so the encoder
and every decoder must compute the very same table index. Float networks do not promise
that (another CPU, BLAS, thread count or GPU sums in another order). Here every weight,
bias and activation is an integer (a fixed-point value times a power of two), held in
float64 with every product and partial sum an integer below 2**53: such sums are exact
in any order, with or without FMA, so a plain im2col matrix product (BLAS dgemm) gives
bit-identical results on any machine. Rescaling between layers is a division by a power
of two and a floor, also exact.

Fixed-point grid: activations carry ACT_BITS fraction bits, weights WEIGHT_BITS; the
bounds below keep |partial sums| < 2**51 for the layer widths allowed (< 2**12 terms):
|activation| < 2**22, |weight| < 2**16, |bias| < 2**50.

Everything derived with transcendental functions (the gains' exp, the Gaussian tables'
erfc) is computed once at export and stored as integers (`export_tables`); the integer
weights are the stored float32 weights times 2**WEIGHT_BITS, rounded: exact arithmetic on
the model file's own bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AnrError

ACT_BITS = 10          # activations: integer / 2**10
WEIGHT_BITS = 14       # weights: integer / 2**14
MED_BITS = 12          # z medians: integer / 2**12
GAIN_BITS = 14         # latent gains and z inverse gains: integer / 2**14
ACT_LIMIT = 1 << 22    # |activation| (4096 in real units): clamped, so sums stay bounded
WEIGHT_LIMIT = 1 << 16  # |weight| < 4 in real units; a model past it cannot be exported
Z_LIMIT = 1 << 12      # |z symbol| for h_s; honest files are far inside, hostile ones are clamped
MAX_TERMS = 1 << 12    # products summed per output (kernel area x input channels)


def _round_shift(acc: torch.Tensor, bits: int) -> torch.Tensor:
    """floor(acc / 2**bits + 1/2): exact for integer-valued float64 (a power-of-two scale)."""
    return torch.floor(acc * (0.5 ** bits) + 0.5)


def _conv(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (C, h, w) integer-valued float64; w (O, C, k, k); b (O,) at the product scale.
    im2col + matrix product: no convolution algorithm (Winograd, FFT) that rounds."""
    o, c, k, _ = w.shape
    cols = F.unfold(a[None], k, padding=k // 2)[0]            # (C*k*k, h*w), a copy
    out = w.reshape(o, -1) @ cols + b[:, None]
    return out.view(o, a.shape[1], a.shape[2])


class FixedPointSynthesis:
    """h_s (subpel conv, ReLU, subpel conv, ReLU, 1x1 conv) on integers; see module doc."""

    def __init__(self, h_s: torch.nn.Sequential):
        self.layers = []
        for conv in (h_s[0][0], h_s[2][0], h_s[4]):
            w = conv.weight.detach().double().cpu()
            if w.shape[1] * w.shape[2] * w.shape[3] > MAX_TERMS:
                raise AnrError("model's hyperprior is too wide for exact arithmetic")
            wi = torch.round(w * (1 << WEIGHT_BITS))
            if wi.abs().max() >= WEIGHT_LIMIT:
                raise AnrError("model's hyperprior has weights outside the fixed-point range")
            bi = torch.round(conv.bias.detach().double().cpu() * (1 << (WEIGHT_BITS + ACT_BITS)))
            if bi.abs().max() >= 1 << 50:
                raise AnrError("model's hyperprior has biases outside the fixed-point range")
            self.layers.append((wi, bi))

    ROWS = 16   # z rows per pass on big images (bounded memory; the values do not change)
    HALO = 2    # z rows a pass needs around its own: a 3x3 conv at z's grid, then at 2x

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """a (N, h, w) activations (integers at 2**-ACT_BITS) -> (2C, 4h, 4w) likewise.
        Row bands with a halo give what one pass gives, exactly (integer arithmetic)."""
        h = a.shape[1]
        if h <= 2 * self.ROWS:
            return self._run(a)
        bands = []
        for r0 in range(0, h, self.ROWS):
            r1 = min(h, r0 + self.ROWS)
            lo, hi = max(0, r0 - self.HALO), min(h, r1 + self.HALO)
            bands.append(self._run(a[:, lo:hi])[:, 4 * (r0 - lo):4 * (r1 - lo)])
        return torch.cat(bands, dim=1)

    def _run(self, a: torch.Tensor) -> torch.Tensor:
        for i, (w, b) in enumerate(self.layers):
            a = _round_shift(_conv(a, w, b), WEIGHT_BITS)
            if i < 2:
                a = F.pixel_shuffle(a[None], 2)[0].clamp_(0, ACT_LIMIT)     # ReLU, bounded
            else:
                a = a.clamp_(-ACT_LIMIT, ACT_LIMIT)
        return a


def export_tables(hyper, qi: int) -> dict:
    """Integers for quality index qi that the exact path needs (computed once, stored):
    z medians, z inverse gains, the latent's gains and log gains (all fixed point)."""
    med = hyper.z_medians(qi).double()
    inv_z_gain = torch.exp(-hyper.z_log_gain[qi].detach().double())
    return {"z_med": torch.round(med * (1 << MED_BITS)).to(torch.int64).numpy(),
            "z_inv_gain": torch.round(inv_z_gain * (1 << GAIN_BITS)).to(torch.int64).numpy()}


def latent_gain_tables(log_gain: torch.Tensor) -> dict:
    """Fixed-point gains and log gains of one quality's latent (C,)."""
    lg = log_gain.detach().double().cpu()
    return {"gain": torch.round(torch.exp(lg) * (1 << GAIN_BITS)).to(torch.int64).numpy(),
            "log_gain": torch.round(lg * (1 << ACT_BITS)).to(torch.int64).numpy()}


def scale_thresholds(table: np.ndarray) -> np.ndarray:
    """Log-scale thresholds (fixed point) between the coding tables: index = how many
    thresholds a latent's log scale exceeds (the first table whose scale covers it)."""
    return np.floor(np.log(np.asarray(table[:-1], dtype=np.float64)) * (1 << ACT_BITS)).astype(np.int64)


class ExactParams:
    """z symbols -> (means, table indices) of one quality's latent, bit-identical everywhere."""

    def __init__(self, synthesis: FixedPointSynthesis, tables: dict, thresholds: np.ndarray):
        self.synthesis = synthesis
        self.z_med = torch.from_numpy(np.asarray(tables["z_med"], dtype=np.int64)).double()
        self.z_inv_gain = torch.from_numpy(np.asarray(tables["z_inv_gain"], dtype=np.int64)).double()
        self.gain = torch.from_numpy(np.asarray(tables["gain"], dtype=np.int64)).double()
        self.log_gain = torch.from_numpy(np.asarray(tables["log_gain"], dtype=np.int64)).double()
        self.thresholds = torch.from_numpy(np.asarray(thresholds, dtype=np.int64)).double()
        # The bounds the exactness argument needs (module doc): a model past them is refused.
        for t, lim in ((self.z_med, 1 << 22), (self.z_inv_gain, 1 << 20), (self.gain, 1 << 24),
                       (self.log_gain, 1 << 20), (self.thresholds, 1 << 20)):
            if t.abs().max() >= lim:
                raise AnrError("model file has an invalid hyperprior table")

    def __call__(self, z_symbols: np.ndarray, shape: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
        """z_symbols (N, zh, zw) int -> means (C, h, w) float32 of the scaled latent, table
        indices (C, h, w) int64."""
        h, w = shape
        z = torch.from_numpy(np.clip(z_symbols, -Z_LIMIT, Z_LIMIT).astype(np.float64))
        v = z * (1 << MED_BITS) + self.z_med[:, None, None]                # |v| < 2**25
        a = _round_shift(v * self.z_inv_gain[:, None, None], MED_BITS + GAIN_BITS - ACT_BITS)
        out = self.synthesis(a.clamp_(-ACT_LIMIT, ACT_LIMIT))
        c = out.shape[0] // 2
        mean, log_scale = out[:c, :h, :w], out[c:, :h, :w]
        mean_q = _round_shift(mean * self.gain[:, None, None], GAIN_BITS)  # |.| < 2**46
        log_scale_q = log_scale + self.log_gain[:, None, None]
        idx = (log_scale_q[None] > self.thresholds[:, None, None, None]).sum(0)
        return (mean_q * (0.5 ** ACT_BITS)).float(), idx.numpy().astype(np.int64)


def gaussian_tables(table: np.ndarray, precision: int, max_half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pmfs of a unit-bin discretised N(0, s) for each scale s of `table`: symbols
    -L..L (L = ceil(s * 9), at most max_half_width) then an escape for the tails.
    -> (half widths L (K,), counts (K, 2 * max L + 2)), rows summing to 2**precision."""
    from .entropy import quantize_pmf
    halves = np.minimum(np.ceil(np.asarray(table) * 9).astype(np.int64), max_half_width)
    counts = np.zeros((len(table), 2 * int(halves.max()) + 2), np.int32)
    for k, (s, L) in enumerate(zip(table, halves)):
        edges = (np.arange(-L, L + 2) - 0.5) / (s * math.sqrt(2.0))
        cdf = 0.5 * np.array([math.erfc(-e) for e in edges])
        pmf = np.diff(cdf)
        pmf = np.append(pmf, max(0.0, 1.0 - pmf.sum()))
        counts[k, : 2 * L + 2] = quantize_pmf(pmf, 1 << precision)
    return halves, counts
