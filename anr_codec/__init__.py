"""anr-codec: a learned image codec built on ANR (attention-based implicit neural representation).

    >>> import anr_codec
    >>> data = anr_codec.encode("photo.png", quality=5)     # bytes of a .anr file
    >>> img = anr_codec.decode(data, scale=4)               # PIL image, 4x the size
"""

from __future__ import annotations

from pathlib import Path

from .codec import DEFAULT_MAX_PIXELS, Codec
from .container import Header
from .errors import AnrError

__version__ = "0.1.0"
__all__ = ["AnrError", "Codec", "Header", "decode", "default_quality", "encode", "info", "qualities",
           "register_pillow", "DEFAULT_MAX_PIXELS", "__version__"]

_default: Codec | None = None


def _codec() -> Codec:
    global _default
    if _default is None:
        _default = Codec()
    return _default


def encode(image, quality: int | None = None, refine: int = 0) -> bytes:
    """Encode an image (PIL image, path, or HxWx3 uint8 array) to the bytes of a .anr file,
    at `quality` or, when None, at the model's default (`default_quality()`).

    `refine` > 0 spends that many gradient steps improving the latent for this image
    (much slower encoding, better quality per bit; decoding is unchanged)."""
    return _codec().encode(image, quality, refine=refine)


def decode(data, scale: float = 1.0, size: tuple[int, int] | None = None, max_pixels: int | None = None):
    """Decode .anr bytes or a path to a PIL image; `size=(width, height)` overrides `scale`."""
    return _codec().decode(data, scale=scale, size=size, max_pixels=max_pixels)


def info(data) -> Header:
    """Read a .anr file's header (size, mode, quality, model) without decoding it."""
    return _codec().info(data)


def qualities() -> list[int]:
    """The available quality levels; 1 gives the smallest files."""
    return _codec().qualities()


def default_quality() -> int:
    """The quality `encode` uses when none is given; the model names it."""
    return _codec().default_quality()


def register_pillow(codec: Codec | None = None) -> None:
    """Teach Pillow the .anr format: `Image.open("x.anr")`, `img.save("y.anr", quality=4)`.

    `codec` picks the device and model the plugin uses (default: the shared codec).
    """
    from . import pillow
    pillow.register(codec)
