"""Turning whatever the user hands us into planes the codec understands, and back.

The network codes three 8-bit colour planes. Grayscale images are coded as gray RGB
and come back as L; alpha is never dropped: it travels losslessly in its own chunk.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import AnrError

GRAY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def open_image(src) -> Image.Image:
    """A PIL image from a path, bytes, a numpy array or a PIL image (EXIF orientation applied)."""
    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, np.ndarray):
        return _from_array(src)
    else:
        try:
            fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else Path(src)
            img = Image.open(fp)
            img.load()
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            raise AnrError(f"cannot read {src}: {e.strerror}") from None
        except UnidentifiedImageError:
            raise AnrError("input is not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise AnrError(f"cannot decode input image ({e})") from None
        except Image.DecompressionBombError as e:
            raise AnrError(str(e)) from None
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not stop an otherwise good image
        return img


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
    mode = img.mode
    if mode in GRAY_MODES:
        gray = _gray8(img)
        return np.repeat(gray[..., None], 3, axis=2), None, "L"
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        return np.repeat(la[..., :1], 3, axis=2), np.ascontiguousarray(la[..., 1]), "LA"
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info)
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
