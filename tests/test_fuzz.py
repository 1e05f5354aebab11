"""Hostile .anr files: a quick run of the mutation fuzzer (benchmarks/fuzz.py) and the attacks
it is built around, each of which must end in AnrError early and cheaply."""

import sys
import zlib
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

from anr_codec import AnrError, Codec, tiling
from anr_codec.container import parse
from anr_codec.context import WINDOW, ContextCoder
from anr_codec.entropy import symbols_checksum
from anr_codec.hypercoder import HyperCoder
from conftest import allocates_under, smooth_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz  # noqa: E402


@pytest.fixture(scope="module")
def codec(each_design):
    """Each test here runs on both designs' files: the default (hyperprior) model's, then
    anr-v1's (factorized prior with context tables)."""
    return each_design


@pytest.fixture(scope="module")
def ctx(codec):
    return fuzz.make_context("anr", codec)


def _seed(ctx, name):
    return dict(ctx["seeds"])[name]


def _with_head(data, payload=None, alpha=None, **fields):
    chunks, tail = fuzz.split_chunks(data)
    chunks = [list(c) for c in chunks]
    fuzz._set_head(chunks[0], **fields)
    for c in chunks:
        if payload is not None and c[0] == b"LATN":
            c[1] = payload
        if alpha is not None and c[0] == b"ALPH":
            c[1] = alpha
    return fuzz.join_chunks(chunks, tail=tail)


def _refused_early(codec, data, match, max_bytes=4 << 20, **kw):
    """`data` must be refused with AnrError before any network pass and without a big
    allocation (a bomb inflated, a huge plane made); judged by what ran, not by the clock."""
    def no_network(*a, **k):
        raise AssertionError("a refused file reached the decoder network")
    with patch.object(tiling, "tokens", no_network), patch.object(tiling, "render", no_network):
        with allocates_under(max_bytes), pytest.raises(AnrError, match=match):
            codec.decode(data, **kw)


def test_quick_fuzz_run(ctx):
    outcomes = [fuzz.run_case(ctx, 0, i, slow_seconds=None) for i in range(300)]
    fails = [f"case {o.index} ({o.case}): {o.detail}\n{o.trace}" for o in outcomes if o.kind == "FAIL"]
    assert not fails, "\n".join(fails[:5])
    kinds = {o.detail for o in outcomes if o.kind == "AnrError"}
    # The cases must reach past the CRCs: into the entropy decoder and the networks.
    assert sum(o.kind == "ok" for o in outcomes) >= 5
    assert any("entropy-coded" in k or "checksum" in k for k in kinds), kinds


def test_quick_fuzz_run_of_input_images():
    ictx = fuzz.make_context("image", Codec(device="cpu", max_pixels=fuzz.FUZZ_MAX_PIXELS))
    outcomes = [fuzz.run_case(ictx, 0, i, slow_seconds=None) for i in range(80)]
    fails = [f"case {o.index} ({o.case}): {o.detail}\n{o.trace}" for o in outcomes if o.kind == "FAIL"]
    assert not fails, "\n".join(fails[:5])


def test_every_truncation_is_refused(ctx, codec):
    for name in ("1x1-RGB-q1", "17x33-RGBA-q7"):
        data = _seed(ctx, name)
        assert codec.decode(data).size == tuple(map(int, name.split("-")[0].split("x")))
        for n in range(len(data)):
            with pytest.raises(AnrError):
                codec.decode(data[:n])


def test_every_header_byte_changed_behind_fresh_crcs(ctx, codec):
    data = _seed(ctx, "40x24-LA-q5")
    chunks, _ = fuzz.split_chunks(data)
    head = chunks[0][1]
    for i in range(len(head)):
        for v in (0x00, 0xFF, (head[i] + 1) & 0xFF):
            c = [list(x) for x in chunks]
            c[0][1] = head[:i] + bytes([v]) + head[i + 1:]
            bad = fuzz.join_chunks(c)
            try:
                img = codec.decode(bad, max_pixels=fuzz.FUZZ_MAX_PIXELS)
            except AnrError:
                continue
            hd = codec.info(bad)  # only harmless bytes (the minor version, the name) may pass
            assert img.size == (hd.width, hd.height) and img.mode == hd.mode


def test_fix_crcs_gets_mutations_past_the_checksums(ctx, codec):
    data = bytearray(_seed(ctx, "64x48-RGB-q6"))
    data[len(data) // 2] ^= 0x10  # inside LATN
    with pytest.raises(AnrError, match="CRC"):
        codec.decode(bytes(data))
    fixed = fuzz.fix_crcs(bytes(data))
    parse(fixed)
    with pytest.raises(AnrError, match="entropy-coded|checksum"):
        codec.decode(fixed)


def _first_symbols(coder):
    """What a payload of zeros decodes to: each table's first entry, in every channel."""
    if isinstance(coder, ContextCoder):
        return np.full(coder.channels, -WINDOW)
    return coder.lo


def _first_symbols_crc(coder, lh, lw):
    """None for a hyperprior coder: there each position's first symbol depends on the table
    its z gives it, which would take the synthesis over the whole claimed grid."""
    if isinstance(coder, HyperCoder):
        return None
    crc = 0
    for lo in _first_symbols(coder):  # channel by channel: the whole latent would take 512 MB
        crc = zlib.crc32(np.full(lh * lw, lo, dtype="<i4").tobytes(), crc)
    return crc


@pytest.mark.parametrize("w,h", [(16000, 16000), (15999, 16001), (4000, 3000)])
def test_big_header_over_a_tiny_payload_is_refused_at_once(ctx, codec, w, h):
    """Default limits: the size is allowed, the payload cannot hold that many symbols."""
    data = _seed(ctx, "40x24-RGB-q3")
    q = codec.info(data).quality
    coder = codec.model.coder(q)
    lh, lw = -(-h // 16), -(-w // 16)
    # A payload of nothing decodes, as far as a range decoder can tell, to each channel's
    # first symbol everywhere: where that is cheap to know, forge that CRC too, so only the
    # length bound stands in the way (it is checked before any decoding in either design).
    forged = _first_symbols_crc(coder, lh, lw)
    if forged is not None:
        assert _first_symbols_crc(coder, 2, 3) == symbols_checksum(
            np.broadcast_to(_first_symbols(coder).astype(np.int32)[:, None, None], (coder.channels, 2, 3)))
    for payload, crc in ((None, None), (b"", forged), (bytes(4), forged), (bytes(4000), None)):
        bad = _with_head(data, payload=payload, w=w, h=h, lh=lh, lw=lw,
                         **({"crc": crc} if crc is not None else {}))
        _refused_early(codec, bad, "too short")


def test_sizes_beyond_the_limits(ctx, codec):
    data = _seed(ctx, "40x24-RGB-q3")
    sample_anr = codec.encode(smooth_image(96, 64))
    for w, h in ((20000, 20000), (1 << 19, 1 << 19)):
        bad = _with_head(data, w=w, h=h, lh=-(-h // 16), lw=-(-w // 16))
        _refused_early(codec, bad, "exceeds the limit")
    bad = _with_head(data, w=(1 << 19) + 1, h=1, lh=1, lw=((1 << 19) + 16) // 16)
    _refused_early(codec, bad, "invalid image size")
    for kw in ({"scale": 10 ** 400}, {"scale": "1e400"}, {"scale": 16.001}, {"scale": -1},
               {"size": (float("inf"), 5)}, {"size": (10 ** 30, 10 ** 30)}, {"size": (97 * 16, 1)},
               {"size": "big"}, {"size": (5, 0)}):
        _refused_early(codec, sample_anr, "scale|size", **kw)
    _refused_early(codec, sample_anr, "output of 1536x1024 pixels exceeds the limit of 1000000",
                   scale=16, max_pixels=1_000_000)
    strict = Codec(device="cpu", max_pixels=1000)
    _refused_early(strict, sample_anr, "coded image of 96x64 pixels exceeds the limit of 1000")
    assert strict.decode(sample_anr, scale=0.5, max_pixels=10_000).size == (48, 32)  # raised per call


def test_alpha_bombs_and_bad_alpha(ctx, codec):
    data = _seed(ctx, "17x33-RGBA-q7")
    bomb = zlib.compress(bytes(10 ** 7), 9)
    _refused_early(codec, _with_head(data, alpha=bomb), "alpha chunk has the wrong size")
    good = parse(data).alpha
    _refused_early(codec, _with_head(data, alpha=good + b"\0"), "after its zlib stream")
    _refused_early(codec, _with_head(data, alpha=good[:-3]), "alpha chunk")
    _refused_early(codec, _with_head(data, alpha=b"\x78\x9c" + bytes(20)), "alpha chunk")
    # A bigger size than the chunk can inflate to is refused before inflating anything.
    _refused_early(codec, _with_head(data, w=3000, h=3000, lh=188, lw=188), "too short for a 3000x3000 plane")


def test_quality_fields(ctx, codec):
    data = _seed(ctx, "16x16-L-q4")
    _refused_early(codec, _with_head(data, q=0), "invalid quality 0")
    top = codec.qualities()[-1]
    for q in (top + 1, 255):
        _refused_early(codec, _with_head(data, q=q), f"file has quality {q}, the model has 1..{top}")
    # Another quality than the one that wrote the file: other tables, so corrupt symbols.
    _refused_early(codec, _with_head(data, q=3), "entropy-coded|checksum")


def test_latent_channel_count_must_match_the_model(ctx, codec):
    data = _seed(ctx, "16x16-L-q4")
    n = codec.model.net.config.latent_channels
    for lc in (1, n - 1, n + 1, 65535):
        _refused_early(codec, _with_head(data, lc=lc), f"file has {lc} latent channels, the model has {n}")


def _renamed(data, name: bytes, model_hash: bytes):
    chunks, _ = fuzz.split_chunks(data)
    head = chunks[0][1]
    chunks[0][1] = head[:22] + model_hash + bytes([len(name)]) + name
    return fuzz.join_chunks(chunks)


def test_model_name_is_never_used_as_a_path(ctx, codec):
    data = _seed(ctx, "1x1-RGB-q1")
    for name in (b"/dev/zero", b"/dev/stdin", b"../../../etc/passwd.pt", b"a" * 255, b"anr-v1", b"anr-v1.pt"):
        _refused_early(codec, _renamed(data, name, bytes(16)), "which is not installed")
    # The name does not matter when the hash is the loaded model's.
    assert codec.decode(_renamed(data, b"/dev/zero", codec.model.hash16)).size == (1, 1)


def test_unknown_ancillary_chunks_are_skipped(ctx, codec):
    data = _seed(ctx, "1x1-RGB-q1")
    chunks, _ = fuzz.split_chunks(data)
    chunks.insert(1, [b"tEXt", b"comment"])
    chunks.insert(3, [b"zzzz", bytes(100)])
    assert codec.decode(fuzz.join_chunks(chunks)).size == (1, 1)
