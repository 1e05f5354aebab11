import numpy as np
import pytest
import torch
from PIL import Image

import anr_codec
from anr_codec import AnrError, Codec
from anr_codec.codec import decode_symbols
from anr_codec.container import AnrFile, parse
from anr_codec.metrics import psnr
from anr_codec.weights import available_models
from conftest import smooth_image


@pytest.mark.parametrize("w,h", [(1, 1), (17, 33), (300, 200), (1000, 64)])
def test_round_trip_odd_sizes(codec, w, h):
    src = smooth_image(w, h, seed=w)
    data = codec.encode(src)
    hd = codec.info(data)
    assert (hd.width, hd.height, hd.mode, hd.quality) == (w, h, "RGB", 3)
    assert hd.latent_shape[1:] == (-(-h // 16), -(-w // 16))
    out = codec.decode(data)
    assert out.size == (w, h) and out.mode == "RGB"


@pytest.mark.parametrize("scale", [0.5, 1, 2.5, 4])
def test_decoded_size_follows_scale(codec, sample_anr, scale):
    img = codec.decode(sample_anr, scale=scale)
    assert img.size == (round(96 * scale), round(64 * scale))


def test_size_overrides_scale(codec, sample_anr):
    assert codec.decode(sample_anr, scale=3, size=(50, 70)).size == (50, 70)


def test_integer_and_fractional_scales_agree(codec, sample_anr):
    """Scale 2 uses the grouped render path; size=(192, 128) through the gather path must match."""
    a = np.asarray(codec.decode(sample_anr, scale=2)).astype(int)
    m = codec.model
    hd = codec.info(sample_anr)
    f = parse(sample_anr)
    b = codec._render(m, codec._dequantised(m, f), hd, 192, 129)  # non-integer ratio in y forces the gather path
    assert b.shape == (129, 192, 3)
    # Same function at nearly the same points: rows differ by a sub-pixel shift only.
    assert np.abs(a[:64].mean((0, 1)) - b[:64].astype(int).mean((0, 1))).max() < 3


def test_encode_is_deterministic(codec):
    src = smooth_image(64, 40, seed=5)
    assert codec.encode(src) == codec.encode(src)


def test_without_a_quality_the_model_picks_its_default(codec):
    plain = Codec(device="cpu")
    plain._model = codec.model   # the same loaded model, no second load
    default = codec.model.net.config.default_quality
    assert codec.model.default_quality == default
    assert plain.default_quality() == default and default in plain.qualities()
    assert anr_codec.info(plain.encode(smooth_image(32, 32))).quality == default


def test_quality_controls_rate(codec):
    src = smooth_image(128, 96, seed=7)
    sizes = [len(codec.encode(src, quality=q)) for q in (1, codec.qualities()[-1])]
    assert sizes[0] < sizes[1]


def test_inputs_path_pil_numpy_agree(codec, png_file):
    arr = np.asarray(Image.open(png_file))
    a = codec.encode(png_file)
    assert a == codec.encode(Image.open(png_file)) == codec.encode(arr)


def test_reconstruction_is_close_to_source(codec):
    src = smooth_image(128, 128, seed=11)
    out = np.asarray(codec.decode(codec.encode(src, quality=codec.qualities()[-1]))).astype(float)
    psnr = 10 * np.log10(255 ** 2 / ((out - src) ** 2).mean())
    assert psnr > 20, psnr  # a broken decoder or a symbol mix-up lands far below this


def test_grayscale_and_alpha_round_trip(codec):
    gray = Image.fromarray(smooth_image(40, 30)[..., 0], "L")
    out = codec.decode(codec.encode(gray))
    assert out.mode == "L" and out.size == (40, 30)
    rgba = np.dstack([smooth_image(40, 30), np.arange(1200, dtype=np.uint8).reshape(30, 40)])
    out = codec.decode(codec.encode(Image.fromarray(rgba, "RGBA")))
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], rgba[..., 3])  # alpha is lossless
    assert codec.decode(codec.encode(Image.fromarray(rgba, "RGBA")), scale=2).size == (80, 60)


def test_quality_and_arguments_are_validated(codec, sample_anr):
    with pytest.raises(AnrError, match="quality"):
        codec.encode(smooth_image(8, 8), quality=99)
    for bad in (0, -1, float("nan"), float("inf"), 1000):
        with pytest.raises(AnrError, match="scale"):
            codec.decode(sample_anr, scale=bad)
    with pytest.raises(AnrError, match="size"):
        codec.decode(sample_anr, size=(0, 10))
    with pytest.raises(AnrError, match="exceeds the limit"):
        codec.decode(sample_anr, scale=4, max_pixels=10_000)


def test_corrupt_and_truncated_files_raise_anr_error(codec, sample_anr):
    for n in (0, 5, 8, 30, len(sample_anr) // 2, len(sample_anr) - 1):
        with pytest.raises(AnrError):
            codec.decode(sample_anr[:n])
    bad = bytearray(sample_anr)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(AnrError, match="CRC"):
        codec.decode(bytes(bad))
    with pytest.raises(AnrError):
        codec.decode(b"hello world, not an image")


def test_symbol_checksum_catches_a_desynchronised_decode(codec, sample_anr):
    f = parse(sample_anr)
    hd = f.header
    forged = AnrFile(type(hd)(**{**hd.__dict__, "symbols_crc": hd.symbols_crc ^ 1}), f.payload)
    with pytest.raises(AnrError, match="checksum"):
        codec.decode(forged.to_bytes())


def test_file_from_another_model_is_refused(codec, sample_anr):
    f = parse(sample_anr)
    hd = f.header
    forged = AnrFile(type(hd)(**{**hd.__dict__, "model_hash": bytes(16)}), f.payload)
    with pytest.raises(AnrError, match="not installed"):
        codec.decode(forged.to_bytes())


def test_module_api(tmp_path):
    assert anr_codec.qualities()[0] == 1
    data = anr_codec.encode(smooth_image(20, 20))
    p = tmp_path / "x.anr"
    p.write_bytes(data)
    assert anr_codec.decode(p, scale=2).size == (40, 40)
    assert anr_codec.info(p).width == 20
    # The shipped model names its default (not the legacy fallback of files that name none).
    assert anr_codec.default_quality() in anr_codec.qualities()
    assert anr_codec.info(data).quality == anr_codec.default_quality()
    assert issubclass(AnrError, ValueError)


def test_symbols_do_not_depend_on_thread_count(each_design):
    codec = each_design
    src = smooth_image(96, 80, seed=3)
    data = codec.encode(src)
    hd = codec.info(data)
    f = parse(data)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(decode_symbols(codec.model, hd.quality, f.payload, hd.latent_shape))
    finally:
        torch.set_num_threads(before)
    (s1, m1, crc1), (s2, m2, crc2) = outs
    np.testing.assert_array_equal(s1, s2)
    assert torch.equal(m1, m2) and crc1 == crc2 == hd.symbols_crc


@pytest.mark.parametrize("name", available_models())
def test_every_shipped_model_round_trips(name, photo):
    """Each file in pretrained/ (whatever its design: factorized or hyperprior tables) codes a
    real photo crop, a default codec decodes it by the model the header names, and the result
    is a recognisable image at every end of the quality range."""
    enc = Codec(device="cpu", model=name)
    dec = Codec(device="cpu")            # the default model: must switch to the file's own
    sizes = []
    for q in (1, enc.qualities()[-1]):
        data = enc.encode(photo, quality=q)
        assert enc.info(data).model_name == name
        assert psnr(dec.decode(data), photo) > 18, (name, q)
        sizes.append(len(data))
    assert sizes[0] < sizes[1]
