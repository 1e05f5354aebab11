"""Pillow plugin for .anr files, in the style of Pillow's own format plugins.

    >>> import anr_codec.pillow               # or anr_codec.register_pillow()
    >>> from PIL import Image
    >>> img = Image.open("photo.anr")         # size and mode from the header; no network yet
    >>> img.convert("L").resize((64, 64))     # pixels are decoded on first use
    >>> img.save("copy.anr", quality=4)       # quality: the codec's levels (1 = smallest)

Decoding gives the coded size; for other sizes use `anr_codec.decode(..., scale=...)`,
which renders them directly instead of resampling.
"""

from __future__ import annotations

import struct
from typing import IO

from PIL import Image, ImageFile

from . import container
from .errors import AnrError

FORMAT = "ANR"
MIME = "image/x-anr"
# A real HEAD chunk is under 300 bytes; a larger length is garbage, not worth reading on open.
_MAX_HEAD = 1024

_codec = None   # the Codec given to register(); None: anr_codec's shared default


def _get_codec():
    if _codec is not None:
        return _codec
    import anr_codec
    return anr_codec._codec()


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(container.SIGNATURE)


class AnrImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "anr-codec learned image"

    def _open(self) -> None:
        assert self.fp is not None
        self._start = self.fp.tell()
        sig = len(container.SIGNATURE)
        head = self.fp.read(sig + 8)
        if not _accept(head) or len(head) < sig + 8:
            raise SyntaxError("not an .anr file")
        (length,) = struct.unpack_from(">I", head, sig)
        if length > _MAX_HEAD:
            raise SyntaxError("ANR header chunk is implausibly large")
        head += self.fp.read(length + 4)
        try:
            hd = container.read_header(head)
        except AnrError as e:
            raise SyntaxError(str(e)) from None
        self._size = (hd.width, hd.height)
        self._mode = hd.mode
        self.info["quality"] = hd.quality
        self.info["model"] = hd.model_name
        # No tile: the pixels come from the network in load(), not from a Pillow decoder.
        self.tile = []

    def load(self):
        if self.__dict__.get("_im", self.__dict__.get("im")) is None:  # `_im` from Pillow 11, `im` before
            if self.fp is None:
                raise OSError("cannot load an .anr image whose file is closed")
            self.fp.seek(self._start)
            data = self.fp.read()
            try:
                decoded = _get_codec().decode(data)
            except AnrError as e:
                raise OSError(f"cannot decode .anr data: {e}") from e
            if decoded.size != self.size or decoded.mode != self.mode:
                raise OSError(f"decoded {decoded.mode} {decoded.size}, header said {self.mode} {self.size}")
            # Take over the decoded image's storage, as Pillow's Icns plugin does.
            self.im = decoded.im
            self.readonly = 0
            if self._exclusive_fp and self._close_exclusive_fp_after_loading:
                self.fp.close()
            self.fp = None
        return Image.Image.load(self)


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    # A bad quality raises AnrError, a ValueError, as Pillow's savers do for bad options.
    fp.write(_get_codec().encode(im, im.encoderinfo.get("quality")))


def register(codec=None) -> None:
    """Register the ANR format with Pillow. `codec` (an `anr_codec.Codec`) picks the
    device and model used to decode and encode; without one, the codec given before or
    else anr_codec's shared default (device auto) is used."""
    global _codec
    if codec is not None:
        _codec = codec
    Image.register_open(FORMAT, AnrImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".anr")
    Image.register_mime(FORMAT, MIME)


register()
