"""Mutation fuzzer for the .anr reader (and, with --target image, for the image input path).

    python benchmarks/fuzz.py --cases 100000 [--seed S] [--jobs N] [--target anr|image]
                              [--mem-gb 4] [--save-failures DIR]
    python benchmarks/fuzz.py --replay I [--seed S]      # one case, verbosely, with its traceback

Every case starts from a valid file (several small .anr files: 1x1 .. 64x48, RGB, L,
RGBA, LA, several qualities; or small PNG/JPEG/GIF/BMP/TIFF/WebP images) and applies 1-3
mutations. Raw mutations (bit flips, byte changes, truncations, insertions, deletions,
length fields, random bytes) mostly stop at the chunk CRCs, so about half of them are
followed by `fix_crcs`, and the structured mutations (header fields, chunk order,
duplication, removal, payload and alpha contents) re-serialise the chunks with fresh
CRCs, so cases reach the header checks, the alpha inflater, the entropy decoder and,
with a forged symbol CRC, the networks.

A case passes when it decodes to a PIL image of the header's size and mode, or raises
AnrError. Anything else is a FAILURE: another exception, a case slower than 2 s, a
MemoryError (each worker runs under RLIMIT_AS: what it has mapped once torch and the
model are loaded, about 3.5 GB of address space, plus --mem-gb), or a wrong image.
Cases are reproducible from (seed, index). Most cases decode with a small max_pixels so
that valid-but-huge headers are refused at once; a quarter use the library's default
limit, which its own checks must then enforce quickly (see also tests/test_fuzz.py).
With --target image, raw mutations of the image files go through Codec.encode and the
result is decoded again.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIG_ANR = b"\x89ANR\r\n\x1a\n"
SIG_PNG = b"\x89PNG\r\n\x1a\n"
FUZZ_MAX_PIXELS = 1 << 16        # decode limit in the fuzzer: big headers are refused at once
SLOW_SECONDS = 2.0
HEAD_FMT = struct.Struct(">BBIIBBHHHI16s")
INTERESTING_U32 = (0, 1, 2, 3, 15, 16, 17, 255, 256, 4095, 65535, 65536, 16000, (1 << 19) - 1, 1 << 19,
                   (1 << 19) + 1, 1 << 24, (1 << 31) - 1, 1 << 31, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x41, 0x61, 0x20)


# -- chunk helpers ---------------------------------------------------------------------
def split_chunks(data: bytes, sig: bytes = SIG_ANR):
    """Lenient split: -> (list of [type, body]) and the unparsed tail; CRCs are ignored."""
    pos, chunks = len(sig), []
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if pos + 12 + n > len(data):
            break
        chunks.append([data[pos + 4: pos + 8], data[pos + 8: pos + 8 + n]])
        pos += 12 + n
    return chunks, data[pos:]


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def join_chunks(chunks, sig: bytes = SIG_ANR, tail: bytes = b"") -> bytes:
    """Re-serialise chunks with fresh CRCs."""
    return sig + b"".join(chunk(k, b) for k, b in chunks) + tail


def fix_crcs(data: bytes, sig_len: int = 8) -> bytes:
    """Recompute the CRC of every chunk whose frame is intact (whatever the signature), so a
    raw mutation reaches the checks behind the CRCs. Stops at the first broken frame."""
    out, pos = bytearray(data), sig_len
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if pos + 12 + n > len(data):
            break
        struct.pack_into(">I", out, pos + 8 + n, zlib.crc32(data[pos + 4: pos + 8 + n]))
        pos += 12 + n
    return bytes(out)


# -- seeds -----------------------------------------------------------------------------
def smooth(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 5.0 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


# (width, height, mode, quality)
ANR_SEEDS = [(1, 1, "RGB", 1), (16, 16, "L", 4), (17, 33, "RGBA", 7), (40, 24, "RGB", 3),
             (40, 24, "LA", 5), (33, 17, "L", 2), (1, 7, "RGBA", 6), (64, 48, "RGB", 6)]


def _pil(w: int, h: int, mode: str, seed: int):
    from PIL import Image
    rgb = smooth(w, h, seed)
    alpha = np.arange(w * h, dtype=np.uint8).reshape(h, w)
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB")
    if mode == "L":
        return Image.fromarray(rgb[..., 0], "L")
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")


def anr_seeds(codec) -> list[tuple[str, bytes]]:
    return [(f"{w}x{h}-{m}-q{q}", codec.encode(_pil(w, h, m, i), quality=q))
            for i, (w, h, m, q) in enumerate(ANR_SEEDS)]


def image_seeds() -> list[tuple[str, bytes]]:
    from PIL import Image, features
    out = []

    def save(name, img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        out.append((name, b.getvalue()))

    save("png-rgb", _pil(17, 9, "RGB", 1), "PNG")
    save("png-rgba", _pil(9, 17, "RGBA", 2), "PNG")
    save("png-l", _pil(8, 8, "L", 3), "PNG")
    save("png-p", _pil(12, 5, "RGB", 4).quantize(8), "PNG")
    save("png-i16", Image.fromarray((smooth(10, 6, 5)[..., 0].astype(np.uint16) * 257)), "PNG")
    save("jpeg", _pil(16, 8, "RGB", 6), "JPEG", quality=80)
    save("jpeg-cmyk", _pil(8, 8, "RGB", 7).convert("CMYK"), "JPEG")
    save("gif", _pil(10, 10, "RGB", 8).quantize(16), "GIF")
    save("bmp", _pil(5, 3, "RGB", 9), "BMP")
    save("tiff", _pil(6, 6, "RGB", 10), "TIFF")
    if features.check("webp"):
        save("webp", _pil(12, 12, "RGB", 11), "WEBP", quality=80)
    return out


# -- mutations -------------------------------------------------------------------------
# Raw mutations work on bytes; most land in a CRC'd region, so `make_case` follows about
# half of them with fix_crcs. Structured ones rewrite chunks and always carry fresh CRCs.
def m_bitflip(rng, d, ctx):
    b = bytearray(d)
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def m_byteset(rng, d, ctx):
    b = bytearray(d)
    for _ in range(rng.choice((1, 2, 4))):
        if b:
            b[rng.randrange(len(b))] = rng.choice(INTERESTING_BYTES + (rng.randrange(256),))
    return bytes(b)


def m_truncate(rng, d, ctx):
    return d[: rng.randrange(len(d) + 1)]


def m_insert(rng, d, ctx):
    i = rng.randrange(len(d) + 1)
    return d[:i] + rng.randbytes(rng.choice((1, 2, 4, 12, 100))) + d[i:]


def m_delete(rng, d, ctx):
    if not d:
        return d
    i = rng.randrange(len(d))
    return d[:i] + d[i + rng.choice((1, 2, 4, 12, 100)):]


def m_dup_range(rng, d, ctx):
    if not d:
        return d
    i = rng.randrange(len(d))
    j = min(len(d), i + rng.choice((4, 12, 64, 512)))
    k = rng.randrange(len(d) + 1)
    return d[:k] + d[i:j] + d[k:]


def m_random(rng, d, ctx):
    body = rng.randbytes(rng.choice((0, 1, 7, 8, 16, 64, 300, 4096)))
    return (ctx["sig"] + body) if rng.random() < 0.5 else body


def m_splice(rng, d, ctx):
    other = rng.choice(ctx["seeds"])[1]
    i, j = rng.randrange(len(d) + 1), rng.randrange(len(other) + 1)
    return d[:i] + other[j:]


def m_length_field(rng, d, ctx):
    """Set one chunk's length to 0, 0xFFFFFFFF, past the end, off by one, or random."""
    starts, pos = [], len(ctx["sig"])
    while pos + 12 <= len(d):
        starts.append(pos)
        pos += 12 + struct.unpack_from(">I", d, pos)[0]
    if not starts:
        return d
    s = rng.choice(starts)
    (n,) = struct.unpack_from(">I", d, s)
    v = rng.choice((0, 0xFFFFFFFF, len(d) - s, len(d) - s - 11, n + 1, max(0, n - 1),
                    rng.randrange(1 << 32), 1 << 30, (1 << 30) + 1))
    return d[:s] + struct.pack(">I", v & 0xFFFFFFFF) + d[s + 4:]


def _head(chunks):
    for c in chunks:
        if c[0] == b"HEAD" and len(c[1]) >= HEAD_FMT.size:
            return c
    return None


def _set_head(c, **kw):
    f = dict(zip(("vmaj", "vmin", "w", "h", "mode", "q", "lc", "lh", "lw", "crc", "hash"),
                 HEAD_FMT.unpack_from(c[1])))
    f.update(kw)
    # Wrap each field to its width: a mutation may compute v + 1 or 2 * v past the maximum.
    for k, bits in (("vmaj", 8), ("vmin", 8), ("w", 32), ("h", 32), ("mode", 8), ("q", 8),
                    ("lc", 16), ("lh", 16), ("lw", 16), ("crc", 32)):
        f[k] &= (1 << bits) - 1
    c[1] = HEAD_FMT.pack(*(f[k] for k in ("vmaj", "vmin", "w", "h", "mode", "q", "lc", "lh", "lw",
                                           "crc", "hash"))) + c[1][HEAD_FMT.size:]


def _structured(fn):
    """Wrap a mutation of the chunk list: split, mutate, re-serialise with fresh CRCs."""
    def run(rng, d, ctx):
        chunks, tail = split_chunks(d, ctx["sig"])
        if not chunks:
            return d
        fn(rng, chunks, ctx)
        return join_chunks(chunks, d[:len(ctx["sig"])], tail)
    run.__name__ = fn.__name__
    return run


@_structured
def s_head_size(rng, chunks, ctx):
    c = _head(chunks)
    if c is None:
        return
    _, _, w, h = HEAD_FMT.unpack_from(c[1])[:4]
    pick = lambda v: rng.choice(INTERESTING_U32 + (v + 1, max(0, v - 1), 2 * v, rng.randrange(1 << 20)))
    w2 = pick(w) if rng.random() < 0.7 else w
    h2 = pick(h) if rng.random() < 0.7 or w2 == w else h
    kw = {"w": w2, "h": h2}
    if rng.random() < 0.7:  # keep the latent shape consistent, so the size passes the parser
        kw.update(lh=min(65535, -(-h2 // 16)), lw=min(65535, -(-w2 // 16)))
    _set_head(c, **kw)
    if rng.random() < 0.2:  # a bomb's shape: a big header over a payload of nothing
        for p in _find(chunks, b"LATN"):
            p[1] = rng.choice((b"", bytes(4), bytes(len(p[1]))))


@_structured
def s_head_latent(rng, chunks, ctx):
    c = _head(chunks)
    if c is None:
        return
    lc, lh, lw = HEAD_FMT.unpack_from(c[1])[6:9]
    field = rng.choice(("lc", "lc", "lh", "lw"))
    v = {"lc": lc, "lh": lh, "lw": lw}[field]
    _set_head(c, **{field: rng.choice((0, 1, v - 1 if v else 0, v + 1, 127, 129, 255, 65535, rng.randrange(65536)))})


@_structured
def s_head_quality(rng, chunks, ctx):
    c = _head(chunks)
    if c is not None:
        _set_head(c, q=rng.choice((0, 1, 2, 6, 7, 8, 9, 127, 255, rng.randrange(256))))


@_structured
def s_head_mode(rng, chunks, ctx):
    c = _head(chunks)
    if c is not None:
        _set_head(c, mode=rng.choice((0, 1, 2, 3, 4, 127, 255)))


@_structured
def s_head_version(rng, chunks, ctx):
    c = _head(chunks)
    if c is not None:
        _set_head(c, vmaj=rng.choice((0, 1, 2, 255)), vmin=rng.choice((0, 1, 255)))


@_structured
def s_head_crc_hash(rng, chunks, ctx):
    c = _head(chunks)
    if c is None:
        return
    if rng.random() < 0.5:
        _set_head(c, crc=rng.choice((0, 0xFFFFFFFF, rng.randrange(1 << 32))))
    else:
        _set_head(c, hash=rng.choice((bytes(16), b"\xff" * 16, rng.randbytes(16))))


@_structured
def s_head_name(rng, chunks, ctx):
    c = _head(chunks)
    if c is None:
        return
    fixed = c[1][:HEAD_FMT.size]
    choice = rng.randrange(8)
    if choice == 0:      # name length field disagrees with the chunk
        name = c[1][HEAD_FMT.size + 1:]
        c[1] = fixed + bytes([rng.choice((0, 1, 255, (len(name) + 1) % 256))]) + name
    elif choice == 1:    # no name byte at all / chunk cut short
        c[1] = c[1][: rng.randrange(HEAD_FMT.size + 1)]
    else:
        # A name is only looked at when the hash is not the loaded model's: change both.
        if rng.random() < 0.6:
            c[1] = c[1][:22] + rng.randbytes(16) + c[1][38:]
            fixed = c[1][:HEAD_FMT.size]
        name = rng.choice((b"", b"/dev/zero", b"/dev/stdin", b"../../etc/passwd", b"anr-v1", b"anr-v1.pt",
                           b"x.pt", b"anr\x00v1", b"\xff\xfe", b"a" * 255, b"con", b"anr-v1\n",
                           rng.randbytes(rng.randrange(1, 40))))
        c[1] = fixed + bytes([len(name) % 256]) + name


@_structured
def s_head_extend(rng, chunks, ctx):
    c = _head(chunks)
    if c is not None:
        c[1] = c[1] + rng.randbytes(rng.choice((1, 4, 100)))


def _find(chunks, kind):
    return [c for c in chunks if c[0] == kind]


@_structured
def s_payload(rng, chunks, ctx):
    for c in _find(chunks, b"LATN")[:1]:
        p = bytearray(c[1])
        how = rng.randrange(7)
        if how == 0 and p:
            for _ in range(rng.choice((1, 2, 8))):
                p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        elif how == 1:
            p = p[: 4 * rng.randrange(len(p) // 4 + 1)]          # whole words
        elif how == 2:
            p = p[: rng.randrange(len(p) + 1)]                    # any length
        elif how == 3:
            p += rng.randbytes(4 * rng.choice((1, 2, 64)))
        elif how == 4:
            p = bytearray(len(p)) if rng.random() < 0.5 else bytearray(b"\xff" * len(p))
        elif how == 5:
            p = bytearray(rng.randbytes(4 * rng.choice((0, 1, 3, 50, 2000))))
        elif p:
            i = 4 * rng.randrange(len(p) // 4 + 1)
            p[i:i + 4] = rng.randbytes(4)
        c[1] = bytes(p)


def _raw_deflate(b: bytes) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(b) + co.flush()


@_structured
def s_alpha(rng, chunks, ctx):
    c0 = _head(chunks)
    w, h = HEAD_FMT.unpack_from(c0[1])[2:4] if c0 else (1, 1)
    n = min(w * h, 1 << 20)
    how = rng.randrange(9)
    bodies = {
        0: lambda: rng.randbytes(rng.choice((0, 1, 10, 100))),
        1: lambda: zlib.compress(bytes(n + rng.choice((-1, 1, 100)) if n > 1 else 5)),
        2: lambda: zlib.compress(bytes(rng.choice((10 ** 6, 10 ** 7)))),          # a zlib bomb
        3: lambda: zlib.compress(rng.randbytes(n))[:-rng.randrange(1, 5)],           # cut short
        4: lambda: zlib.compress(rng.randbytes(n)) + rng.randbytes(rng.choice((1, 4))),  # trailing data
        5: lambda: zlib.compress(rng.randbytes(n)),                                  # valid
        6: lambda: _raw_deflate(rng.randbytes(n)),                                   # no zlib header
        7: lambda: None,                                                             # remove ALPH
        8: lambda: zlib.compress(bytes(n)),                                          # added to any mode
    }
    body = bodies[how]()
    alph = _find(chunks, b"ALPH")
    if body is None:
        for c in alph:
            chunks.remove(c)
    elif alph:
        alph[0][1] = body
    else:
        chunks.insert(min(1, len(chunks)), [b"ALPH", body])


@_structured
def s_reorder(rng, chunks, ctx):
    rng.shuffle(chunks)


@_structured
def s_duplicate(rng, chunks, ctx):
    c = rng.choice(chunks)
    chunks.insert(rng.randrange(len(chunks) + 1), list(c))


@_structured
def s_remove(rng, chunks, ctx):
    chunks.pop(rng.randrange(len(chunks)))


@_structured
def s_insert_chunk(rng, chunks, ctx):
    kind = rng.choice((b"tEXt", b"zzzz", b"ABCD", b"IEND", b"HEAD", b"LATN", b"ALPH",
                       bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") for _ in range(4))))
    chunks.insert(rng.randrange(len(chunks) + 1), [kind, rng.randbytes(rng.choice((0, 1, 16, 300)))])


@_structured
def s_chunk_type(rng, chunks, ctx):
    c = rng.choice(chunks)
    c[0] = rng.choice((rng.randbytes(4), c[0].swapcase(), c[0][:3] + b"\x00", b"iend", b"Head"))


@_structured
def s_forge_symbols_crc(rng, chunks, ctx):
    """Decode the (mutated) payload ourselves and write its CRC into the header: the file
    then passes every check up to the networks, which must cope with garbage symbols."""
    from anr_codec.codec import decode_symbols
    c, latn = _head(chunks), _find(chunks, b"LATN")
    codec = ctx.get("codec")
    if c is None or not latn or codec is None:
        return
    _, _, w, h, _, q, lc, lh, lw = HEAD_FMT.unpack_from(c[1])[:9]
    if lh * lw * 16 * 16 > 4 * FUZZ_MAX_PIXELS or not 1 <= q <= len(codec.qualities()):
        return
    try:
        crc = decode_symbols(codec.model, q, latn[0][1], (lc, lh, lw))[2]
    except Exception:  # noqa: BLE001 - any refusal: nothing to forge
        return
    _set_head(c, crc=crc)


RAW = [m_bitflip, m_byteset, m_truncate, m_insert, m_delete, m_dup_range, m_random, m_splice, m_length_field]
STRUCTURED = [s_head_size, s_head_latent, s_head_quality, s_head_mode, s_head_version, s_head_crc_hash,
              s_head_name, s_head_extend, s_payload, s_alpha, s_reorder, s_duplicate, s_remove,
              s_insert_chunk, s_chunk_type]


def make_case(ctx: dict, seed: int, index: int) -> tuple[str, bytes]:
    """-> (description, bytes) of case `index`; depends only on (seed, index) and the seeds."""
    rng = random.Random(f"{seed}:{index}")
    name, data = rng.choice(ctx["seeds"])
    steps = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        if ctx["target"] == "image":
            fn = rng.choice(RAW)
        elif rng.random() < 0.35:
            fn = rng.choice(RAW)
        else:
            fn = rng.choice(STRUCTURED)
        data = fn(rng, data, ctx)
        steps.append(fn.__name__)
        if fn in RAW and rng.random() < 0.5 and (ctx["target"] == "anr" or data.startswith(SIG_PNG)):
            data = fix_crcs(data)
            steps.append("fix_crcs")
    if ctx["target"] == "anr" and rng.random() < 0.3:
        data = s_forge_symbols_crc(rng, data, ctx)
        steps.append("forge_crc")
    return f"{name}: {' '.join(steps)}", data


# -- running cases ---------------------------------------------------------------------
@dataclass
class Outcome:
    index: int
    kind: str          # "ok", "AnrError" or "FAIL"
    detail: str        # message class, or what went wrong
    seconds: float
    case: str
    trace: str = ""


def message_class(msg: str) -> str:
    """Group messages that differ only in numbers and quoted values."""
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\bchunk (?!type)[A-Za-z]{4}(?= at byte| of \d| \(file)", "chunk ????", msg)
    msg = re.sub(r"\b[0-9a-f]{8,}\b", "#", msg)
    msg = re.sub(r"\d+", "#", msg)
    return msg[:110]


def check_anr(codec, data: bytes, rng: random.Random) -> str:
    """Decode like an application would; raise AssertionError on a wrong result.

    A quarter of the cases decode under the library's default pixel limit, so that a
    hostile size has to be refused by the library's own checks, quickly."""
    from PIL import Image

    from anr_codec import AnrError
    try:
        hd = codec.info(data)
    except AnrError:
        hd = None
    limit = None if rng.random() < 0.25 else FUZZ_MAX_PIXELS
    img = codec.decode(data, max_pixels=limit)
    if hd is None:
        raise AssertionError("info() refused a file that decode() accepted")
    want = (hd.width, hd.height)
    if rng.random() < 0.3:  # the other render paths, on whatever symbols got through
        size = rng.choice(((7, 5), (2 * hd.width, 2 * hd.height), (hd.width + 1, max(1, hd.height // 2))))
        img, want = codec.decode(data, size=size, max_pixels=limit), size
    if not isinstance(img, Image.Image) or img.size != want or img.mode != hd.mode:
        raise AssertionError(f"decoded {getattr(img, 'size', None)} {getattr(img, 'mode', None)}, "
                             f"expected {want[0]}x{want[1]} {hd.mode}")
    img.load()
    return "decoded"


def check_image(codec, data: bytes, rng: random.Random) -> str:
    from PIL import Image
    out = codec.encode(data, quality=3)
    img = codec.decode(out)
    hd = codec.info(out)
    if not isinstance(img, Image.Image) or img.size != (hd.width, hd.height):
        raise AssertionError("round trip gave a wrong image")
    return "encoded"


class CaseTimeout(Exception):
    pass


def run_case(ctx: dict, seed: int, index: int, hard_timeout: float | None = None,
             slow_seconds: float | None = SLOW_SECONDS) -> Outcome:
    """One case's outcome; a case slower than `slow_seconds` fails (None: time is not judged,
    as in the unit tests, whose timings mean nothing on a loaded machine)."""
    from anr_codec import AnrError
    try:
        case, data = make_case(ctx, seed, index)
    except BaseException as e:  # noqa: BLE001 - a fuzzer bug (or the memory limit) must not end the run
        if isinstance(e, KeyboardInterrupt):
            raise
        return Outcome(index, "FAIL", f"making the case: {type(e).__name__}: {e}"[:200], 0.0, "?",
                       traceback.format_exc())
    check = check_anr if ctx["target"] == "anr" else check_image
    t0 = time.perf_counter()
    if hard_timeout:
        import signal
        signal.setitimer(signal.ITIMER_REAL, hard_timeout)
    try:
        detail = check(ctx["codec"], data, random.Random(f"check:{seed}:{index}"))
        kind, trace = "ok", ""
    except AnrError as e:
        kind, detail, trace = "AnrError", message_class(str(e)), ""
    except MemoryError:
        kind, detail, trace = "FAIL", "MemoryError", traceback.format_exc()
    except CaseTimeout:
        kind, detail, trace = "FAIL", f"no result after {hard_timeout:g} s", traceback.format_exc()
    except Exception as e:  # noqa: BLE001 - every other exception is what we are looking for
        name = "MemoryError (torch allocator)" if "can't allocate memory" in str(e) else type(e).__name__
        kind, detail, trace = "FAIL", f"{name}: {e}"[:200], traceback.format_exc()
    finally:
        if hard_timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    dt = time.perf_counter() - t0
    if kind != "FAIL" and slow_seconds is not None and dt > slow_seconds:
        kind, detail = "FAIL", f"slow: {dt:.2f} s ({detail})"
    return Outcome(index, kind, detail, dt, case, trace)


def make_context(target: str = "anr", codec=None) -> dict:
    from anr_codec import Codec
    codec = codec or Codec(device="cpu", max_pixels=FUZZ_MAX_PIXELS)
    seeds = anr_seeds(codec) if target == "anr" else image_seeds()
    return {"codec": codec, "seeds": seeds, "target": target, "sig": SIG_ANR if target == "anr" else SIG_PNG}


# -- the long run: worker processes ----------------------------------------------------
_CTX: dict | None = None


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _init_worker(target: str, seeds, mem_gb: float) -> None:
    import resource
    import signal

    import torch
    torch.set_num_threads(1)

    def on_alarm(*_):
        raise CaseTimeout()
    signal.signal(signal.SIGALRM, on_alarm)
    global _CTX
    _CTX = make_context(target)
    _CTX["seeds"] = seeds  # the parent's, so every worker mutates the same files
    # Load and run once before the limit: the limit is for what a case allocates.
    if target == "anr":
        _CTX["codec"].decode(seeds[0][1])
    else:
        _CTX["codec"].encode(seeds[0][1])
    # Address space, not RSS: torch maps a lot up front, so the budget is on top of that.
    limit = _vm_size() + int(mem_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _ready(_) -> int:
    return os.getpid()


def _run_batch(args) -> list[tuple]:
    seed, start, stop = args
    # Plain tuples: classes of a spawned __main__ do not unpickle in the parent.
    return [astuple(run_case(_CTX, seed, i, hard_timeout=30.0)) for i in range(start, stop)]


def summarise(outcomes: list[Outcome], seconds: float, out=sys.stdout) -> int:
    kinds = Counter(o.kind for o in outcomes)
    n = len(outcomes)
    print(f"\n{n} cases in {seconds:.1f} s: {n / max(seconds, 1e-9):.1f} cases/s; "
          f"slowest case {max((o.seconds for o in outcomes), default=0):.3f} s", file=out)
    print(f"  decoded OK : {kinds['ok']}", file=out)
    print(f"  AnrError   : {kinds['AnrError']}", file=out)
    for msg, k in Counter(o.detail for o in outcomes if o.kind == "AnrError").most_common():
        print(f"    {k:7d}  {msg}", file=out)
    fails = [o for o in outcomes if o.kind == "FAIL"]
    print(f"  FAILURES   : {len(fails)}", file=out)
    for msg, k in Counter(o.detail for o in fails).most_common():
        print(f"    {k:7d}  {msg}", file=out)
    for o in fails[:10]:
        print(f"\n--- case {o.index} ({o.case}): {o.detail}\n{o.trace}", file=out)
    if fails:
        print("failing case indices:", " ".join(str(o.index) for o in fails[:200]), file=out)
    return len(fails)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--target", choices=("anr", "image"), default="anr")
    ap.add_argument("--mem-gb", type=float, default=4.0,
                    help="address space per worker beyond what torch and the model map at start")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--replay", type=int, help="run one case in this process and print it in full")
    ap.add_argument("--save-failures", type=Path, help="write each failing input to this folder")
    a = ap.parse_args(argv)

    if a.replay is not None:
        import torch
        torch.set_num_threads(1)
        ctx = make_context(a.target)
        case, data = make_case(ctx, a.seed, a.replay)
        o = run_case(ctx, a.seed, a.replay)
        print(f"case {a.replay}: {case}\n{len(data)} bytes: {data[:96].hex()}{'...' if len(data) > 96 else ''}")
        print(f"-> {o.kind}: {o.detail} ({o.seconds:.3f} s)\n{o.trace}")
        return int(o.kind == "FAIL")

    import multiprocessing as mp
    from anr_codec import Codec
    seeds = anr_seeds(Codec(device="cpu")) if a.target == "anr" else image_seeds()
    tasks = [(a.seed, s, min(a.start + a.cases, s + a.batch)) for s in range(a.start, a.start + a.cases, a.batch)]
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    last = t0
    ctx = mp.get_context("spawn")  # fresh workers: no torch threads inherited through fork
    with ctx.Pool(a.jobs, initializer=_init_worker, initargs=(a.target, seeds, a.mem_gb)) as pool:
        pool.map(_ready, range(a.jobs), chunksize=1)  # time the cases, not the workers' start
        t_started = time.perf_counter()
        it = pool.imap_unordered(_run_batch, tasks)
        for _ in tasks:
            try:
                outcomes += [Outcome(*t) for t in it.next(timeout=a.batch * 30 + 120)]
            except mp.TimeoutError:
                print("FAILURE: a worker stopped answering (a case hangs in native code); stopping", file=sys.stderr)
                pool.terminate()
                break
            now = time.perf_counter()
            if now - last > 10:
                last = now
                n_fail = sum(o.kind == "FAIL" for o in outcomes)
                print(f"  {len(outcomes)}/{a.cases} cases, {len(outcomes) / (now - t_started):.1f}/s, "
                      f"{n_fail} failures", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t_started
    print(f"(workers started in {t_started - t0:.1f} s; {a.jobs} jobs, target {a.target}, seed {a.seed})")
    outcomes.sort(key=lambda o: o.index)
    if a.save_failures:
        a.save_failures.mkdir(parents=True, exist_ok=True)
        sctx = {"seeds": seeds, "target": a.target, "sig": SIG_ANR if a.target == "anr" else SIG_PNG,
                "codec": Codec(device="cpu")}
        for o in outcomes:
            if o.kind == "FAIL":
                (a.save_failures / f"case-{a.seed}-{o.index}.bin").write_bytes(make_case(sctx, a.seed, o.index)[1])
    fails = summarise(outcomes, seconds)
    if len(outcomes) < a.cases:
        fails += 1
    return 1 if fails else 0


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    sys.exit(main())
