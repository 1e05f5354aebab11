"""Turning whatever the user hands us into planes the codec understands, and back.

The network codes three 8-bit colour planes. Grayscale images are coded as gray RGB
and come back as L; alpha is never dropped: it travels losslessly in its own chunk.

Colour is sRGB: a colour image with an embedded ICC profile (other than sRGB) is
converted to sRGB with Pillow's ImageCms (LittleCMS) before coding, so it looks the same
after decoding; the decoded image carries no profile. A profile that cannot be used
(broken, or for another colour space than the image's) is ignored, as is a gray image's
profile. Deeper samples are reduced to 8 bits: 16-bit gray is rounded, and Pillow opens
48/64-bit PNGs as RGB/RGBA by keeping each sample's high byte (16-bit gray+alpha PNGs,
which it opens as RGBA, come back to LA here).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import AnrError

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without LittleCMS: profiles are ignored
    ImageCms = None

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
GRAY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def open_image(src, max_pixels: int | None = None) -> Image.Image:
    """A PIL image from a path, bytes, a numpy array or a PIL image (EXIF orientation applied).

    `max_pixels` refuses larger images from their header, before any pixel is decoded.
    """
    if isinstance(src, Image.Image):
        img = src
        _check_size(img, max_pixels)
    elif isinstance(src, np.ndarray):
        return _from_array(src)
    else:
        try:
            fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else Path(src)
        except TypeError:
            raise AnrError(f"cannot read an image from {type(src).__name__}") from None
        try:
            img = Image.open(fp)
            _check_size(img, max_pixels)
            la16 = img.format == "PNG" and _rawmode(img) == "LA;16B"
            img.load()
        except AnrError:
            raise
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            raise AnrError(f"cannot read {src}: {e.strerror}") from None
        except UnidentifiedImageError:
            raise AnrError("input is not an image Pillow can read") from None
        except Image.DecompressionBombError as e:
            raise AnrError(str(e)) from None
        except MemoryError:
            raise
        except Exception as e:  # Pillow's decoders report damaged files in many ways
            raise AnrError(f"cannot decode input image ({type(e).__name__}: {e})") from None
        if la16 and img.mode == "RGBA":
            img = img.convert("LA")  # its three colour planes are the same gray
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not stop an otherwise good image
        return img


def _check_size(img: Image.Image, max_pixels: int | None) -> None:
    if max_pixels is not None and img.width * img.height > max_pixels:
        raise AnrError(f"image of {img.width}x{img.height} pixels exceeds the limit of {max_pixels} pixels")


def _rawmode(img: Image.Image) -> str | None:
    try:
        args = img.tile[0][3]
    except (IndexError, TypeError):
        return None
    return args[0] if isinstance(args, tuple) and args else args if isinstance(args, str) else None


def _from_array(a: np.ndarray) -> Image.Image:
    if a.dtype != np.uint8:
        raise AnrError(f"numpy images must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return Image.fromarray(a, "L")
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
        return Image.fromarray(a[..., 0] if a.shape[2] == 1 else np.ascontiguousarray(a), mode)
    raise AnrError(f"numpy image must be HxW, HxWx3 or HxWx4, got shape {a.shape}")


def to_planes(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str]:
    """-> (HxWx3 uint8 colour, HxW uint8 alpha or None, mode to restore: RGB, L, RGBA or LA)."""
    if img.width == 0 or img.height == 0:
        raise AnrError(f"image is empty ({img.width}x{img.height} pixels)")
    mode = img.mode
    if mode in GRAY_MODES:
        gray = _gray8(img)
        return np.repeat(gray[..., None], 3, axis=2), None, "L"
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        return np.repeat(la[..., :1], 3, axis=2), np.ascontiguousarray(la[..., 1]), "LA"
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info)
    img = _icc_to_srgb(img, has_alpha)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[..., 3])
        if (alpha == 255).all():
            return np.ascontiguousarray(rgba[..., :3]), None, "RGB"
        return np.ascontiguousarray(rgba[..., :3]), alpha, "RGBA"
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as e:
        raise AnrError(f"cannot convert image mode {mode} to RGB ({e})") from None
    return np.asarray(rgb), None, "RGB"


def _icc_to_srgb(img: Image.Image, has_alpha: bool) -> Image.Image:
    """The image converted to sRGB (RGB or RGBA) when it embeds a usable non-sRGB profile."""
    icc = img.info.get("icc_profile")
    if not icc or ImageCms is None or img.mode not in ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "P", "PA"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(src).lower():
            return img  # already sRGB: a transform would only add rounding
        alpha = None
        base = img if img.mode in ("RGB", "CMYK") else img.convert("RGBA" if has_alpha else "RGB")
        if base.mode == "RGBA":
            alpha, base = base.getchannel("A"), base.convert("RGB")
        out = ImageCms.profileToProfile(base, src, _srgb(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img  # an unusable profile: code the stored values as they are
    if alpha is not None:
        out.putalpha(alpha)
    return out


_SRGB = []


def _srgb():
    if not _SRGB:
        _SRGB.append(ImageCms.createProfile("sRGB"))
    return _SRGB[0]


def _gray8(img: Image.Image) -> np.ndarray:
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        return np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
    # 16/32-bit integer gray: PNG stores 16-bit samples on a 0..65535 scale.
    return np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)


def from_planes(rgb: np.ndarray, alpha: np.ndarray | None, mode: str) -> Image.Image:
    if mode == "L":
        return Image.fromarray(_luma(rgb), "L")
    if mode == "LA":
        return Image.fromarray(np.stack([_luma(rgb), alpha], -1), "LA")
    if mode == "RGBA":
        return Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA")
    return Image.fromarray(rgb, "RGB")


def _luma(rgb: np.ndarray) -> np.ndarray:
    # The source was gray, so the three planes carry the same signal: average them.
    return np.round(rgb.astype(np.float32).mean(-1)).astype(np.uint8)


def centre_crop16(img: Image.Image, width: int, height: int) -> Image.Image:
    """The centre crop of at most width x height with sides cut to multiples of 16 (the
    latent stride; empty when a side is under 16): what training-image statistics use."""
    w, h = img.size
    cw, ch = min(width, w) // 16 * 16, min(height, h) // 16 * 16
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))
