"""The .anr container: signature, then PNG-style chunks (length, type, data, CRC32).

See docs/FORMAT.md for the byte layout. This module only packs and unpacks bytes; it
knows nothing of networks. Everything read from a file is validated before use.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import AnrError

SIGNATURE = b"\x89ANR\r\n\x1a\n"   # high bit, name, CR LF, ^Z, LF: catches text-mode mangling
VERSION = (1, 0)
MODES = ("RGB", "L", "RGBA", "LA")
MAX_SIDE = 1 << 19                    # per-side limit of the format: latent sides fit in 16 bits
MAX_CHUNK = 1 << 30
DEFLATE_MAX_RATIO = 1032             # 258-byte matches coded in 2 bits each
_HEAD = struct.Struct(">BBIIBBHHHI16s")  # version, size, mode, quality, latent shape, crc, hash


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    mode: str
    quality: int
    latent_shape: tuple[int, int, int]   # (channels, rows, cols)
    symbols_crc: int
    model_name: str
    model_hash: bytes                    # first 16 bytes of the model file's SHA-256
    version: tuple[int, int] = VERSION

    def to_dict(self) -> dict:
        return {"format_version": f"{self.version[0]}.{self.version[1]}", "width": self.width,
                "height": self.height, "mode": self.mode, "quality": self.quality,
                "latent_shape": list(self.latent_shape), "model": self.model_name,
                "model_hash": self.model_hash.hex(), "symbols_crc32": f"{self.symbols_crc:08x}"}


@dataclass
class AnrFile:
    header: Header
    payload: bytes                        # entropy-coded latent
    alpha: bytes | None = None            # zlib-compressed alpha plane (lossless)

    def to_bytes(self) -> bytes:
        h = self.header
        name = h.model_name.encode("ascii")
        if not 0 < len(name) < 256:
            raise ValueError("model name must be 1..255 ASCII characters")
        head = _HEAD.pack(h.version[0], h.version[1], h.width, h.height, MODES.index(h.mode),
                          h.quality, *h.latent_shape, h.symbols_crc, h.model_hash) + bytes([len(name)]) + name
        out = [SIGNATURE, _chunk(b"HEAD", head)]
        if self.alpha is not None:
            out.append(_chunk(b"ALPH", self.alpha))
        out += [_chunk(b"LATN", self.payload), _chunk(b"IEND", b"")]
        return b"".join(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def iter_chunks(data: bytes):
    """Yield (type, data) for each chunk, checking lengths and CRCs."""
    if not data.startswith(SIGNATURE):
        if SIGNATURE.startswith(data[: len(SIGNATURE)]):
            raise AnrError("file is truncated (incomplete signature)")
        raise AnrError("not an .anr file (bad signature)")
    pos = len(SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise AnrError("file is truncated (incomplete chunk header)")
        (length,), kind = struct.unpack_from(">I", data, pos), data[pos + 4: pos + 8]
        if not all(65 <= c <= 90 or 97 <= c <= 122 for c in kind):
            raise AnrError(f"corrupt chunk type at byte {pos + 4}")
        if length > MAX_CHUNK or pos + 12 + length > len(data):
            raise AnrError(f"file is truncated or corrupt (chunk {kind.decode()} of {length} bytes "
                           f"at byte {pos} runs past the end)")
        body = data[pos + 8: pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + body) != crc:
            raise AnrError(f"chunk {kind.decode()} at byte {pos} is corrupt (CRC mismatch)")
        yield kind, body
        pos += 12 + length


def read_header(data: bytes) -> Header:
    """Parse just the header chunk (cheap: no payload CRC beyond HEAD's)."""
    for kind, body in iter_chunks(data):
        if kind != b"HEAD":
            raise AnrError("first chunk is not HEAD")
        return _parse_head(body)
    raise AnrError("file is truncated (no header)")


def parse(data: bytes) -> AnrFile:
    header = payload = alpha = None
    ended = False
    for kind, body in iter_chunks(data):
        if ended:
            raise AnrError("data after the IEND chunk")
        if header is None and kind != b"HEAD":
            raise AnrError("first chunk is not HEAD")
        if kind == b"HEAD":
            if header is not None:
                raise AnrError("duplicate HEAD chunk")
            header = _parse_head(body)
        elif kind == b"LATN":
            if payload is not None:
                raise AnrError("duplicate LATN chunk")
            payload = body
        elif kind == b"ALPH":
            if alpha is not None:
                raise AnrError("duplicate ALPH chunk")
            alpha = body
        elif kind == b"IEND":
            ended = True
        elif kind[:1].isupper():
            # PNG's rule: an unknown critical (upper-case) chunk cannot be skipped safely.
            raise AnrError(f"unknown critical chunk {kind.decode()} (file from a newer version?)")
    if header is None:
        raise AnrError("file is truncated (no header)")
    if payload is None or not ended:
        raise AnrError("file is truncated (missing LATN or IEND chunk)")
    if (alpha is not None) != (header.mode in ("RGBA", "LA")):
        raise AnrError("alpha chunk does not match the colour mode")
    if alpha is not None and (len(alpha) + 16) * DEFLATE_MAX_RATIO < header.width * header.height:
        # Deflate cannot expand data more than 1032-fold: refuse without inflating anything.
        raise AnrError(f"alpha chunk of {len(alpha)} bytes is too short for a "
                       f"{header.width}x{header.height} plane")
    return AnrFile(header, payload, alpha)


def _parse_head(body: bytes) -> Header:
    if len(body) < _HEAD.size + 2:
        raise AnrError("header chunk is too short")
    (vmaj, vmin, w, h, mode, quality, lc, lh, lw, crc, mhash) = _HEAD.unpack_from(body)
    if vmaj != VERSION[0]:
        raise AnrError(f"unsupported format version {vmaj}.{vmin} (this reader handles {VERSION[0]}.x)")
    name_len = body[_HEAD.size]
    if len(body) != _HEAD.size + 1 + name_len or name_len == 0:
        raise AnrError("header chunk has a bad model-name length")
    try:
        name = body[_HEAD.size + 1:].decode("ascii")
    except UnicodeDecodeError:
        raise AnrError("header chunk has a non-ASCII model name") from None
    if not name.isprintable():
        raise AnrError("header chunk has a non-printable model name")
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise AnrError(f"invalid image size {w}x{h}")
    if mode >= len(MODES):
        raise AnrError(f"unknown colour mode {mode}")
    if quality == 0:
        raise AnrError("invalid quality 0 (qualities start at 1)")
    if lh != -(-h // 16) or lw != -(-w // 16) or lc == 0:
        raise AnrError("latent shape does not match the image size")
    return Header(w, h, MODES[mode], quality, (lc, lh, lw), crc, name, mhash, (vmaj, vmin))
