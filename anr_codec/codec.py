"""The codec pipeline: image -> hyper-network -> symbols -> entropy code -> container, and back.

`Codec` keeps a model loaded for many images; the module-level `encode`/`decode` in
`anr_codec` use a shared default instance.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import container, tiling
from .container import AnrFile, Header
from .detail import upscale
from .entropy import SYMBOL_LIMIT, symbols_checksum
from .fixedpoint import Z_LIMIT
from .errors import AnrError
from .images import from_planes, open_image, to_planes
from .model import pad_to_multiple
from .refine import refine as refine_latent
from .weights import DEFAULT_MODEL, LoadedModel, installed_hash16, load_model

DEFAULT_MAX_PIXELS = 256_000_000   # like Pillow's decompression-bomb guard; raise it explicitly
MAX_SCALE = 16.0
QUERIES_PER_CHUNK = 1 << 16         # bounds decoder memory at any output size
MAX_REFINE = 1000                   # refinement steps; more would only burn time


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AnrError("CUDA was requested but is not available")
    if dev.type not in ("cpu", "cuda"):
        raise AnrError(f"unsupported device {device!r} (use auto, cpu or cuda)")
    return dev


@dataclass
class Decoded:
    """A decoded image plus what the file said about it."""
    image: "object"
    header: Header


def _is_int(value) -> bool:
    # bool is an int subclass, but quality=True is a mistake, not quality 1
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class Codec:
    """A loaded model that encodes and decodes many images.

    >>> codec = Codec(quality=5)
    >>> data = codec.encode("photo.png")
    >>> img = codec.decode(data, scale=2)
    """

    def __init__(self, quality: int | None = None, device: str = "auto", model: str | Path | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, refine: int = 0):
        self.device = pick_device(device)
        self.refine = self._check_refine(refine)
        self.model_ref = model or DEFAULT_MODEL
        self.max_pixels = max_pixels
        self._model: LoadedModel | None = None
        self.quality = quality
        if quality is not None:
            self._check_quality(quality)

    # -- model handling ------------------------------------------------------------
    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            self._model = load_model(self.model_ref, self.device)
        return self._model

    def qualities(self) -> list[int]:
        return self.model.qualities

    def default_quality(self) -> int:
        """The quality `encode` uses when none is given: the model's own choice."""
        return self.model.default_quality

    @staticmethod
    def _check_refine(steps) -> int:
        if not _is_int(steps) or not 0 <= steps <= MAX_REFINE:
            raise AnrError(f"refine must be an integer in 0..{MAX_REFINE}, got {steps!r}")
        return int(steps)

    def _check_quality(self, q) -> int:
        if not _is_int(q):
            raise AnrError(f"quality must be an integer, got {q!r}")
        qs = self.qualities()
        if int(q) not in qs:
            raise AnrError(f"quality must be in {qs[0]}..{qs[-1]}, got {q}")
        return int(q)

    def _model_for(self, header: Header) -> LoadedModel:
        m = self.model
        if header.model_hash == m.hash16:
            return m
        other = None
        if installed_hash16(header.model_name) == header.model_hash:  # a name, never a path from the file
            try:
                other = load_model(header.model_name, self.device)
            except AnrError:
                pass
        if other is None or other.hash16 != header.model_hash:
            raise AnrError(f"file was written by model {header.model_name!r} "
                           f"(hash {header.model_hash.hex()[:16]}), which is not installed")
        return other

    # -- encoding ------------------------------------------------------------------
    def encode(self, image, quality: int | None = None, refine: int | None = None) -> bytes:
        """Encode a PIL image, a path, bytes of an image file, or an HxWx3 uint8 array.

        `refine`: gradient steps of encoder-side latent refinement (default: the codec's
        setting, 0 = off); slower encoding for a better rate-distortion trade-off, and the
        same decoder (see anr_codec.refine)."""
        q = self._check_quality(quality if quality is not None else (self.quality or self.default_quality()))
        steps = self._check_refine(refine if refine is not None else self.refine)
        rgb, alpha, mode = to_planes(open_image(image, max_pixels=self.max_pixels))
        h, w = rgb.shape[:2]
        if h * w > self.max_pixels:
            raise AnrError(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels} pixels")
        if max(h, w) > container.MAX_SIDE:
            raise AnrError(f"image side exceeds {container.MAX_SIDE} pixels")
        m = self.model
        with torch.inference_mode():
            y = tiling.analysis(m.net, rgb, q - 1, self.device)  # in tiles when big: bounded memory
        x = pad_to_multiple(tiling.pixels_tensor(rgb, self.device)) if steps else None
        if m.net.hyper is not None:
            payload, shape, crc = self._encode_hyper(m, q, y, x, w, h, steps)
        else:
            if steps:
                y = refine_latent(m.net, x, y, q - 1, w, h, steps)  # works on its own copy
            med = m.net.medians(q - 1)[:, None, None]
            symbols = torch.round(y - med).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT).to(torch.int32).cpu().numpy()
            payload, shape, crc = m.coder(q).encode(symbols), tuple(symbols.shape), symbols_checksum(symbols)
        header = Header(w, h, mode, q, shape, crc, m.name, m.hash16)
        alpha_chunk = zlib.compress(alpha.tobytes(), 9) if alpha is not None else None
        return AnrFile(header, payload, alpha_chunk).to_bytes()

    @staticmethod
    def _encode_hyper(m: LoadedModel, q: int, y: torch.Tensor, x, w: int, h: int, steps: int):
        """Scaled latent (C, h, w) -> (payload, latent shape, CRC of z's and the latent's
        symbols). Refinement (x the padded image) moves the latent under the side
        information of the unrefined one, so it optimises the means and scales coded."""
        hyper, qi = m.net.hyper, q - 1
        with torch.inference_mode():
            z = hyper.h_a((y / m.net.gain(qi)[:, None, None])[None])[0] * hyper.z_gain(qi)[:, None, None]
            z_sym = torch.round(z - hyper.z_medians(qi)[:, None, None]).clamp(-Z_LIMIT, Z_LIMIT)
        z_sym = z_sym.to(torch.int32).cpu().numpy()
        coder = m.coder(q)
        means, idx = coder.means_and_indices(z_sym, tuple(y.shape[1:]))   # exact: what the decoder gets
        if steps:
            scales = torch.from_numpy(coder.scales[idx]).float()
            y = refine_latent(m.net, x, y, qi, w, h, steps,
                              gaussian=(means.to(y.device), scales.to(y.device)))
        symbols = torch.round(y.cpu() - means).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT).to(torch.int32).numpy()
        return coder.encode(z_sym, symbols, idx), tuple(symbols.shape), hyper_checksum(z_sym, symbols)

    # -- decoding ------------------------------------------------------------------
    def output_size(self, header: Header, scale: float = 1.0, size=None,
                    max_pixels: int | None = None) -> tuple[int, int]:
        if size is not None:
            try:
                ow, oh = (int(v) for v in size)
            except (TypeError, ValueError, OverflowError):
                raise AnrError(f"size must be (width, height), got {size!r}") from None
            if ow < 1 or oh < 1:
                raise AnrError(f"size must be positive, got {ow}x{oh}")
            if max(ow / header.width, oh / header.height) > MAX_SCALE:
                raise AnrError(f"size {ow}x{oh} is more than {MAX_SCALE:g}x the coded image")
        else:
            try:
                scale = float(scale)
            except (TypeError, ValueError, OverflowError):
                raise AnrError(f"scale must be a number, got {scale!r}") from None
            if not math.isfinite(scale) or scale <= 0 or scale > MAX_SCALE:
                raise AnrError(f"scale must be in (0, {MAX_SCALE:g}], got {scale}")
            ow, oh = max(1, round(header.width * scale)), max(1, round(header.height * scale))
        limit = self.max_pixels if max_pixels is None else max_pixels
        if header.width * header.height > limit:
            raise AnrError(f"coded image of {header.width}x{header.height} pixels exceeds the limit of "
                           f"{limit} pixels (raise it with max_pixels / --max-pixels)")
        if ow * oh > limit:
            raise AnrError(f"output of {ow}x{oh} pixels exceeds the limit of {limit} pixels "
                           f"(raise it with max_pixels / --max-pixels)")
        return ow, oh

    @torch.inference_mode()
    def decode(self, data, scale: float = 1.0, size=None, max_pixels: int | None = None):
        """Decode .anr bytes (or a path) to a PIL image of the coded size times `scale`,
        or of `size=(width, height)`."""
        f = container.parse(_read_bytes(data))
        hd = f.header
        ow, oh = self.output_size(hd, scale, size, max_pixels)
        m = self._model_for(hd)
        if not 1 <= hd.quality <= len(m.qualities):
            raise AnrError(f"file has quality {hd.quality}, the model has 1..{len(m.qualities)}")
        y_hat = self._dequantised(m, f)
        # Alpha is checked before rendering: a bad chunk should not cost a network pass.
        alpha = _inflate_alpha(f.alpha, hd.width, hd.height) if f.alpha is not None else None
        rgb = self._render(m, y_hat, hd, ow, oh)
        if alpha is not None:
            if (ow, oh) != (hd.width, hd.height):
                from PIL import Image
                alpha = np.asarray(Image.fromarray(alpha, "L").resize((ow, oh), Image.Resampling.BICUBIC))
        return from_planes(rgb, alpha, hd.mode)

    @staticmethod
    def _dequantised(m: LoadedModel, f: AnrFile) -> torch.Tensor:
        """Entropy-decode a file's latent and check its symbols' CRC -> scaled latent (C, h, w)."""
        hd = f.header
        symbols, means, crc = decode_symbols(m, hd.quality, f.payload, hd.latent_shape)
        if crc != hd.symbols_crc:
            raise AnrError("decoded symbols fail their checksum (corrupt data or a model mismatch)")
        return torch.from_numpy(symbols).float() + means

    def _render(self, m: LoadedModel, y_hat: torch.Tensor, hd: Header, ow: int, oh: int) -> np.ndarray:
        """Dequantised scaled latent (C, h, w) -> HxWx3 uint8 at ow x oh."""
        tokens = tiling.tokens(m.net, y_hat.to(self.device), hd.quality - 1)
        if m.net.detail is None or (ow <= hd.width and oh <= hd.height):
            return tiling.render(m.net.anr, tokens, hd.width, hd.height, ow, oh, QUERIES_PER_CHUNK)
        # Above the coded size: the scale-1 decode plus the super-resolution head's detail.
        lr = tiling.render(m.net.anr, tokens, hd.width, hd.height, hd.width, hd.height, QUERIES_PER_CHUNK)
        return upscale(m.net.detail, lr, tokens, ow, oh, QUERIES_PER_CHUNK)

    def info(self, data) -> Header:
        return container.read_header(_read_bytes(data))


def decode_symbols(m: LoadedModel, quality: int, payload: bytes, shape: tuple[int, int, int]):
    """Entropy-decode a payload with either design's coder -> (latent symbols (C, h, w) int32,
    the means they are offsets from, the CRC a header must carry for them)."""
    if m.net.hyper is not None:
        z_sym, symbols, means = m.coder(quality).decode(payload, shape)
        return symbols, means, hyper_checksum(z_sym, symbols)
    symbols = m.coder(quality).decode(payload, shape)
    return symbols, m.net.medians(quality - 1)[:, None, None].cpu(), symbols_checksum(symbols)


def hyper_checksum(z_symbols: np.ndarray, symbols: np.ndarray) -> int:
    """CRC32 of z's symbols followed by the latent's (hyperprior models)."""
    return symbols_checksum(np.concatenate([z_symbols.reshape(-1), symbols.reshape(-1)]))


def _read_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    try:
        return Path(data).read_bytes()
    except (OSError, TypeError, ValueError) as e:  # ValueError: a NUL in the path
        raise AnrError(f"cannot read {data}: {getattr(e, 'strerror', None) or e}") from None


def _inflate_alpha(blob: bytes, w: int, h: int) -> np.ndarray:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, w * h + 1)  # bounded: a zlib bomb stops here
    except zlib.error:
        raise AnrError("alpha chunk is corrupt") from None
    if len(raw) != w * h or d.unconsumed_tail or not d.eof:
        raise AnrError("alpha chunk has the wrong size")
    if d.unused_data:
        raise AnrError("alpha chunk has data after its zlib stream")
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w)
