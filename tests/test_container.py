import struct
import zlib

import pytest

from anr_codec import AnrError
from anr_codec.container import SIGNATURE, AnrFile, Header, iter_chunks, parse, read_header


def make(**kw):
    h = dict(width=33, height=17, mode="RGB", quality=2, latent_shape=(8, 2, 3), symbols_crc=0xDEADBEEF,
             model_name="anr-test", model_hash=bytes(range(16)))
    h.update(kw)
    return AnrFile(Header(**h), payload=b"\x01\x02\x03\x04")


def test_header_fields_round_trip():
    f = make()
    data = f.to_bytes()
    assert data.startswith(SIGNATURE) and data[0] == 0x89
    g = parse(data)
    assert g.header == f.header and g.payload == f.payload
    assert read_header(data) == f.header


def test_alpha_chunk_round_trip():
    f = make(mode="RGBA")
    f.alpha = zlib.compress(b"\xff" * (33 * 17))
    assert parse(f.to_bytes()).alpha == f.alpha


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_mode_without_alpha_chunk_is_rejected(mode):
    with pytest.raises(AnrError, match="alpha"):
        parse(make(mode=mode).to_bytes())


def test_every_truncation_raises():
    data = make().to_bytes()
    for n in range(len(data)):
        with pytest.raises(AnrError):
            parse(data[:n])


def test_every_single_byte_corruption_is_detected():
    data = make().to_bytes()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(AnrError):
            parse(bytes(bad))


def test_foreign_file():
    with pytest.raises(AnrError, match="not an .anr file"):
        parse(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_unknown_ancillary_chunk_is_skipped_but_critical_is_refused():
    data = make().to_bytes()
    iend = _chunk(b"IEND", b"")
    assert data.endswith(iend)
    body = data[: -len(iend)]
    assert parse(body + _chunk(b"tEXt", b"hello") + iend).payload == b"\x01\x02\x03\x04"
    with pytest.raises(AnrError, match="unknown critical chunk"):
        parse(body + _chunk(b"NEWC", b"x") + iend)


def test_duplicate_and_trailing_chunks_are_refused():
    data = make().to_bytes()
    chunks = list(iter_chunks(data))
    latn = [c for c in chunks if c[0] == b"LATN"][0]
    iend = _chunk(b"IEND", b"")
    with pytest.raises(AnrError, match="duplicate"):
        parse(data[: -len(iend)] + _chunk(*latn) + iend)
    with pytest.raises(AnrError, match="after the IEND"):
        parse(data + _chunk(b"tEXt", b"x"))


def test_inconsistent_latent_shape_and_bad_sizes_are_refused():
    with pytest.raises(AnrError, match="latent shape"):
        parse(make(latent_shape=(8, 5, 5)).to_bytes())
    with pytest.raises(AnrError, match="image size"):
        parse(make(width=0, latent_shape=(8, 2, 0)).to_bytes())


def test_newer_major_version_is_refused():
    with pytest.raises(AnrError, match="version"):
        parse(make(version=(2, 0)).to_bytes())
