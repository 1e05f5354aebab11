"""Pure quality and rate-distortion metrics: PSNR, Y-PSNR/SSIM as SR papers report them,
MS-SSIM, and Bjontegaard deltas with monotone piecewise cubic (PCHIP) interpolation.

Images are uint8 arrays, HxWx3 (RGB) or HxW (gray, treated as R = G = B).
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# pytorch_msssim's default 11-tap window over 5 scales needs each side > (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


# -- pixel metrics -----------------------------------------------------------------------

def _as_rgb(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 or HxW image, got shape {a.shape}")
    return a


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_rgb(a), _as_rgb(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr_from_mse(mse: float, peak: float = PEAK) -> float:
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def psnr(a, b) -> float:
    """PSNR in dB over all RGB samples of two uint8 images (peak 255)."""
    a, b = _check_pair(a, b)
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def rgb_to_y(a) -> np.ndarray:
    """ITU-R BT.601 luma on the 0..255 scale (16..235), unrounded, as BasicSR computes it."""
    rgb = _as_rgb(a).astype(np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def shave(a: np.ndarray, border: int) -> np.ndarray:
    """Drop `border` pixels on every side (SR papers skip the border, where upscalers guess)."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return a
    if min(a.shape[:2]) <= 2 * border:
        raise ValueError(f"image of {a.shape[1]}x{a.shape[0]} is too small to shave {border} pixels")
    return a[border:-border, border:-border]


def psnr_y(a, b, shave_px: int = 0) -> float:
    """PSNR of the BT.601 luma with `shave_px` border pixels left out."""
    a, b = _check_pair(a, b)
    ya, yb = shave(rgb_to_y(a), shave_px), shave(rgb_to_y(b), shave_px)
    return psnr_from_mse(float(np.mean((ya - yb) ** 2)))


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x, y, peak: float = PEAK) -> float:
    """Mean SSIM of two 2-D float arrays (Wang et al. 2004: 11x11 Gaussian, sigma 1.5,
    K1 = 0.01, K2 = 0.03, 'valid' filtering as in the reference ssim.m)."""
    import torch
    import torch.nn.functional as F

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two equal 2-D arrays, got {x.shape} and {y.shape}")
    if min(x.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim needs both sides >= {SSIM_WINDOW} pixels, got {x.shape[1]}x{x.shape[0]}")
    g = torch.from_numpy(_gaussian_window())
    rows, cols = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(t):  # separable: two 1-D passes cost 22 instead of 121 multiplies per pixel
        return F.conv2d(F.conv2d(t, rows), cols)

    tx, ty = torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]
    mx, my = blur(tx), blur(ty)
    sxx, syy, sxy = blur(tx * tx) - mx * mx, blur(ty * ty) - my * my, blur(tx * ty) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(smap.mean())


def ssim_y(a, b, shave_px: int = 0) -> float:
    """SSIM of the BT.601 luma with `shave_px` border pixels left out."""
    a, b = _check_pair(a, b)
    return ssim(shave(rgb_to_y(a), shave_px), shave(rgb_to_y(b), shave_px))


def have_ms_ssim() -> bool:
    try:
        import pytorch_msssim  # noqa: F401
    except ImportError:
        return False
    return True


def ms_ssim_rgb(a, b) -> float | None:
    """MS-SSIM over RGB via pytorch_msssim (peak 255); None when a side is <= 160 pixels
    (too small for five scales) or pytorch_msssim is not installed."""
    a, b = _check_pair(a, b)
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE or not have_ms_ssim():
        return None
    import torch
    from pytorch_msssim import ms_ssim

    ta = torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(np.array(b, dtype=np.float64)).permute(2, 0, 1)[None]
    return float(ms_ssim(ta, tb, data_range=PEAK, size_average=True))


# -- monotone piecewise cubic interpolation ------------------------------------------------

class Pchip:
    """Piecewise cubic Hermite interpolant with Fritsch-Carlson slopes: it passes through
    the points and never overshoots them, so a monotone RD curve stays monotone."""

    def __init__(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
            raise ValueError("Pchip needs two 1-D arrays of the same length >= 2")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("Pchip needs finite points")
        if np.any(np.diff(x) <= 0):
            raise ValueError("Pchip needs strictly increasing x")
        self.x, self.y = x, y
        self.h = np.diff(x)
        self.delta = np.diff(y) / self.h
        self.d = _pchip_slopes(self.h, self.delta)

    def _coefficients(self):
        """Per interval, y = c0 + c1 t + c2 t^2 + c3 t^3 with t = x - x_k."""
        h, delta, d = self.h, self.delta, self.d
        c2 = (3 * delta - 2 * d[:-1] - d[1:]) / h
        c3 = (d[:-1] + d[1:] - 2 * delta) / h ** 2
        return self.y[:-1], d[:-1], c2, c3

    def __call__(self, xq):
        xq = np.asarray(xq, dtype=np.float64)
        k = np.clip(np.searchsorted(self.x, xq, side="right") - 1, 0, len(self.x) - 2)
        c0, c1, c2, c3 = (c[k] for c in self._coefficients())
        t = xq - self.x[k]
        return c0 + t * (c1 + t * (c2 + t * c3))

    def integrate(self, a: float, b: float) -> float:
        """Exact integral from a to b, both inside [x[0], x[-1]]."""
        lo_x, hi_x = self.x[0], self.x[-1]
        if not (lo_x <= a <= hi_x and lo_x <= b <= hi_x):
            raise ValueError(f"integration bounds [{a}, {b}] leave the data range [{lo_x}, {hi_x}]")
        if a > b:
            return -self.integrate(b, a)
        c0, c1, c2, c3 = self._coefficients()
        left = self.x[:-1]
        # Clipping the bounds to each interval makes intervals outside [a, b] contribute zero.
        ta = np.clip(a, left, self.x[1:]) - left
        tb = np.clip(b, left, self.x[1:]) - left

        def antiderivative(t):
            return t * (c0 + t * (c1 / 2 + t * (c2 / 3 + t * c3 / 4)))

        return float(np.sum(antiderivative(tb) - antiderivative(ta)))


def _pchip_slopes(h: np.ndarray, delta: np.ndarray) -> np.ndarray:
    n = len(h) + 1
    if n == 2:  # one interval: the straight line
        return np.array([delta[0], delta[0]])
    d = np.zeros(n)
    # Interior: weighted harmonic mean of the neighbouring secants, zero at a local extremum.
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        hm = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same_sign, hm, 0.0)
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, del0: float, del1: float) -> float:
    """One-sided three-point slope, limited so the end interval cannot overshoot."""
    d = ((2 * h0 + h1) * del0 - h0 * del1) / (h0 + h1)
    if np.sign(d) != np.sign(del0):
        return 0.0
    if np.sign(del0) != np.sign(del1) and abs(d) > abs(3 * del0):
        return 3 * del0
    return d


# -- Bjontegaard deltas ----------------------------------------------------------------------

def _curve(x, y) -> Pchip | None:
    """A Pchip through (x, y) sorted by x; equal x values are merged (their y averaged).
    Points with a non-finite value (a lossless point has infinite PSNR) are left out.
    None when fewer than two distinct x values remain."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("rate and PSNR lists must be 1-D and of equal length")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    xs = np.unique(x)
    if len(xs) < 2:
        return None
    ys = np.array([y[x == v].mean() for v in xs])
    return Pchip(xs, ys)


def _log_rates(rate) -> np.ndarray:
    rate = np.asarray(rate, dtype=np.float64)
    if np.any(rate[np.isfinite(rate)] <= 0):
        raise ValueError("rates must be positive")
    return np.log(rate)


def _overlap(p: Pchip, q: Pchip) -> tuple[float, float] | None:
    lo, hi = max(p.x[0], q.x[0]), min(p.x[-1], q.x[-1])
    return (lo, hi) if hi > lo else None


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float | None:
    """Bjontegaard delta rate in percent: the average bit-rate difference of the test curve
    against the anchor at equal quality, over the quality range both cover (log-rate
    interpolated by PCHIP as a function of PSNR). Negative = the test needs fewer bits.
    None when the curves do not overlap or one has fewer than two points."""
    a = _curve(psnr_anchor, _log_rates(rate_anchor))
    t = _curve(psnr_test, _log_rates(rate_test))
    span = _overlap(a, t) if a is not None and t is not None else None
    if span is None:
        return None
    lo, hi = span
    mean_log_diff = (t.integrate(lo, hi) - a.integrate(lo, hi)) / (hi - lo)
    return (math.exp(mean_log_diff) - 1) * 100


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float | None:
    """Bjontegaard delta PSNR in dB: the average quality difference of the test curve
    against the anchor at equal rate, over the log-rate range both cover. Positive = the
    test is better. None when the curves do not overlap or one has fewer than two points."""
    a = _curve(_log_rates(rate_anchor), psnr_anchor)
    t = _curve(_log_rates(rate_test), psnr_test)
    span = _overlap(a, t) if a is not None and t is not None else None
    if span is None:
        return None
    lo, hi = span
    return (t.integrate(lo, hi) - a.integrate(lo, hi)) / (hi - lo)
