"""The Pillow plugin: Image.open / Image.save for .anr files."""

import io

import numpy as np
import pytest
from PIL import Image

import anr_codec
from anr_codec import pillow
from conftest import smooth_image


@pytest.fixture
def plugin(codec, monkeypatch):
    """The plugin using the session's CPU codec, counting how often the network decodes."""
    calls = []

    class Spy:
        def decode(self, data):
            calls.append(len(data))
            return codec.decode(data)

        def encode(self, im, quality=None):
            return codec.encode(im, quality)

    monkeypatch.setattr(pillow, "_codec", Spy())
    anr_codec.register_pillow()
    return calls


def test_registered():
    anr_codec.register_pillow()
    assert "register_pillow" in anr_codec.__all__
    assert "ANR" in Image.OPEN and "ANR" in Image.SAVE
    assert Image.EXTENSION[".anr"] == "ANR" and Image.MIME["ANR"] == "image/x-anr"


def test_open_reads_header_only_then_decodes_on_load(plugin, tmp_path, sample_anr, codec):
    path = tmp_path / "s.anr"
    path.write_bytes(sample_anr)
    im = Image.open(path)
    assert (im.format, im.size, im.mode) == ("ANR", (96, 64), "RGB")
    assert im.get_format_mimetype() == "image/x-anr" and im.info["quality"] == 3
    assert plugin == []                                    # no network yet
    a = np.asarray(im)
    assert a.shape == (64, 96, 3) and len(plugin) == 1
    assert np.array_equal(a, np.asarray(codec.decode(sample_anr)))
    assert im.convert("L").mode == "L" and im.resize((24, 16)).size == (24, 16)
    assert im.copy().getpixel((0, 0)) == tuple(a[0, 0]) and len(plugin) == 1  # decoded once
    assert im.fp is None                                   # file closed after loading, like Pillow's plugins


def test_open_from_a_stream(plugin, sample_anr):
    with Image.open(io.BytesIO(sample_anr)) as im:
        assert im.size == (96, 64)
        im.load()
    assert len(plugin) == 1


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_save_round_trip(plugin, tmp_path, mode):
    src = Image.fromarray(smooth_image(48, 32, 3)).convert(mode)
    if mode == "RGBA":
        src.putalpha(Image.linear_gradient("L").resize((48, 32)))
    out = tmp_path / "y.anr"
    src.save(out, quality=4)
    hd = anr_codec.info(out.read_bytes())
    assert (hd.quality, hd.width, hd.height, hd.mode) == (4, 48, 32, mode)
    back = Image.open(out)
    assert (back.size, back.mode) == ((48, 32), mode) and plugin == []
    a = np.asarray(back)
    assert a.shape[:2] == (32, 48)
    if mode == "RGBA":                                     # alpha is lossless
        assert np.array_equal(a[..., 3], np.asarray(src)[..., 3])
    buf = io.BytesIO()
    src.save(buf, format="ANR")                            # to a stream, default quality
    assert anr_codec.info(buf.getvalue()).quality == 3


def test_bad_quality_leaves_no_file(plugin, tmp_path):
    out = tmp_path / "bad.anr"
    with pytest.raises(ValueError, match="quality"):
        Image.fromarray(smooth_image(48, 32)).save(out, quality=99)
    assert not out.exists()


def test_other_formats_unaffected(plugin, png_file):
    with Image.open(png_file) as im:
        assert im.format == "PNG" and im.size == (80, 48)


def test_corrupt_payload_fails_on_load_not_open(plugin, tmp_path, sample_anr):
    path = tmp_path / "cut.anr"
    path.write_bytes(sample_anr[:120])
    im = Image.open(path)
    assert im.size == (96, 64)
    with pytest.raises(OSError, match="truncated"):
        im.load()
    bad = tmp_path / "garbage.anr"
    bad.write_bytes(b"\x89ANR\r\n\x1a\n" + b"\xff" * 40)
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(bad)
