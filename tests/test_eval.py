import importlib.util
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anr_codec import evaluate, metrics
from anr_codec.metrics import Pchip, bd_psnr, bd_rate
from anrc.main import cli
from conftest import smooth_image

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
RATES = [0.12, 0.25, 0.5, 0.9, 1.6]
PSNRS = [27.0, 29.5, 32.0, 34.2, 36.9]


# -- Bjontegaard deltas ----------------------------------------------------------------------

@pytest.mark.parametrize("factor", [0.8, 1.25, 0.5])
def test_bd_rate_of_a_constant_rate_factor_is_that_factor(factor):
    # At every PSNR the test needs `factor` times the bits, so the mean saving is exact.
    assert bd_rate(RATES, PSNRS, [factor * r for r in RATES], PSNRS) == pytest.approx((factor - 1) * 100, abs=1e-6)


def test_bd_rate_hand_computed():
    # Anchor: log-rate 0, 1, 3 at 30, 31, 32 dB. Its PCHIP slopes are 1/2, 4/3, 5/2, so the
    # integral is (1/2 - 5/72) + (2 - 7/72) = 7/3. Test: log-rate 0 -> 2 linearly, integral 2.
    # Mean log-rate difference (2 - 7/3) / 2 = -1/6.
    got = bd_rate(np.exp([0, 1, 3]), [30, 31, 32], np.exp([0, 2]), [30, 32])
    assert got == pytest.approx((math.exp(-1 / 6) - 1) * 100, abs=1e-9)


def test_bd_rate_uses_only_the_overlapping_range():
    # Anchor 30..32 dB, test 31..33 dB: only 31..32 counts, where log rates are 1 and 1 + 0.4 t.
    got = bd_rate(np.exp([0, 1, 2]), [30, 31, 32], np.exp([1, 1.4, 1.8]), [31, 32, 33])
    # Anchor on [31, 32] is the PCHIP through collinear points: the line 1 + t (integral 1.5);
    # test is 1 + 0.4 t there (integral 1.2).
    assert got == pytest.approx((math.exp(1.2 - 1.5) - 1) * 100, abs=1e-9)


def test_bd_psnr_of_a_constant_offset_is_that_offset():
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1.5 for p in PSNRS]) == pytest.approx(1.5, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, [p - 0.7 for p in PSNRS]) == pytest.approx(-0.7, abs=1e-9)


def test_bd_is_antisymmetric_and_order_free():
    other = ([0.2, 0.45, 0.8, 1.4], [28.0, 31.2, 33.1, 35.8])
    assert bd_psnr(RATES, PSNRS, *other) == pytest.approx(-bd_psnr(*other, RATES, PSNRS))
    shuffled = [4, 0, 2, 1, 3]
    assert bd_rate([RATES[i] for i in shuffled], [PSNRS[i] for i in shuffled], *other) == \
        pytest.approx(bd_rate(RATES, PSNRS, *other))


def test_bd_is_none_without_overlap_or_points():
    assert bd_rate([0.1, 0.2], [20, 21], [0.3, 0.4], [30, 31]) is None
    assert bd_psnr([0.1, 0.2], [20, 21], [0.3, 0.4], [30, 31]) is None
    assert bd_rate([0.1], [20], [0.1, 0.2], [20, 21]) is None
    with pytest.raises(ValueError):
        bd_rate([0.0, 0.2], [20, 21], [0.1, 0.2], [20, 21])


# -- PCHIP -----------------------------------------------------------------------------------

def test_pchip_hand_values():
    p = Pchip([0, 1, 2], [0, 1, 3])
    assert p.d == pytest.approx([0.5, 4 / 3, 2.5])
    assert p(0.5) == pytest.approx(0.0625 + 0.5 - 0.125 * 4 / 3)  # Hermite basis at t = 1/2
    assert p.integrate(0, 2) == pytest.approx(7 / 3)
    assert p.integrate(2, 0) == pytest.approx(-7 / 3)
    assert Pchip([1, 3], [2, 6])(2.5) == pytest.approx(5.0)  # two points: the straight line


def test_pchip_passes_through_points_and_keeps_monotone_data_monotone():
    x = np.array([0.0, 0.5, 1.0, 3.0, 3.2, 6.0])
    y = np.array([0.0, 0.1, 2.0, 2.0, 5.0, 5.5])  # a flat step, then a jump: splines overshoot here
    p = Pchip(x, y)
    assert p(x) == pytest.approx(y)
    dense = p(np.linspace(0, 6, 2001))
    assert np.all(np.diff(dense) >= -1e-12)
    assert dense.min() >= 0 and dense.max() <= 5.5
    flat = p(np.linspace(1.0, 3.0, 50))
    assert flat == pytest.approx(np.full(50, 2.0))
    with pytest.raises(ValueError):
        Pchip([0, 0, 1], [1, 2, 3])


# -- pixel metrics ---------------------------------------------------------------------------

def test_psnr_known_value():
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 148  # one sample off by 48: MSE = 48^2 / 48 = 48
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 48))
    assert metrics.psnr(a, a) == math.inf


def test_rgb_to_y_range():
    assert metrics.rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert metrics.rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    assert metrics.rgb_to_y(np.full((2, 2), 255, np.uint8)) == pytest.approx(np.full((2, 2), 235.0))


def test_psnr_y_shaves_the_border():
    a = np.full((10, 12, 3), 100, np.uint8)
    b = a.copy()
    b[..., 1] = 255          # the border (2 px) is far off ...
    b[2:-2, 2:-2, 1] = 110   # ... the inside is off by 10 in G only
    dy = 128.553 * 10 / 255  # the luma difference inside
    assert metrics.psnr_y(a, b, 2) == pytest.approx(20 * math.log10(255 / dy))
    assert metrics.psnr_y(a, b, 0) < metrics.psnr_y(a, b, 2) - 10
    with pytest.raises(ValueError):
        metrics.psnr_y(a, b, 5)


def test_ssim_y():
    img = smooth_image(40, 32)
    assert metrics.ssim_y(img, img, 2) == pytest.approx(1.0)
    noisy = np.clip(img.astype(int) + np.random.default_rng(0).integers(-30, 31, img.shape), 0, 255).astype(np.uint8)
    assert 0 < metrics.ssim_y(img, noisy, 2) < 0.99
    with pytest.raises(ValueError):
        metrics.ssim_y(img[:12], noisy[:12], 2)  # 8 rows left: smaller than the 11x11 window


def test_ms_ssim_needs_large_images():
    small = smooth_image(64, 48)
    assert metrics.ms_ssim_rgb(small, small) is None
    if not metrics.have_ms_ssim():
        pytest.skip("pytorch_msssim is not installed")
    big = smooth_image(168, 164)
    assert metrics.ms_ssim_rgb(big, big) == pytest.approx(1.0)


# -- result layout ---------------------------------------------------------------------------

def test_codec_result_layout_and_json():
    rows = [[{"bpp": 1.0, "psnr-rgb": 30.0, "ms-ssim-rgb": None, "encoding_time": 0.1, "decoding_time": 0.2},
             {"bpp": 3.0, "psnr-rgb": 32.0, "ms-ssim-rgb": 0.9, "encoding_time": 0.3, "decoding_time": 0.4}],
            [{"bpp": 2.0, "psnr-rgb": math.inf, "ms-ssim-rgb": 0.95, "encoding_time": 0.1, "decoding_time": 0.1},
             {"bpp": 2.0, "psnr-rgb": math.inf, "ms-ssim-rgb": 0.97, "encoding_time": 0.1, "decoding_time": 0.1}]]
    r = evaluate.codec_result("X", "a codec", "quality", [1, 2], rows)
    assert set(r) >= {"name", "description", "results"}
    assert list(r["results"]) == ["bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"]
    assert r["results"]["bpp"] == [2.0, 2.0]
    assert r["results"]["ms-ssim-rgb"] == [None, pytest.approx(0.96)]  # never a mean over fewer images
    back = json.loads(evaluate.to_json({"codecs": {"x": r}}))
    assert back["codecs"]["x"]["results"]["psnr-rgb"] == [31.0, None]  # JSON has no Infinity


def test_read_reference(tmp_path):
    tsv = tmp_path / "ref.tsv"
    tsv.write_text("# a comment line\ncodec\tq\tbpp\tpsnr\nfoo\t1\t0.5\t30.0\nfoo\t2\t1.0\t33.0\nbar\t1\t0.7\t31\n")
    ref = evaluate.read_reference(tsv)
    assert ref["foo"]["bpp"] == [0.5, 1.0] and ref["foo"]["psnr-rgb"] == [30.0, 33.0]
    assert ref["bar"]["ms-ssim-rgb"] == [None]


# -- command line ----------------------------------------------------------------------------

@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(smooth_image(64, 48, seed=1)).save(d / "a.png")
    Image.fromarray(smooth_image(48, 40, seed=2)[..., 1], "L").save(d / "b.png")  # grayscale, too
    return d


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_anrc_eval(image_dir, tmp_path):
    out, plot = tmp_path / "rd.json", tmp_path / "rd.png"
    args = ["eval", image_dir, "-q", "1,7", "--baselines", "jpeg,webp", "--json", out, "--per-image",
            "--device", "cpu"]
    r = _invoke(*args, *(["--plot", plot] if HAVE_MPL else []))
    assert r.exit_code == 0, r.output
    assert "BD-rate" in r.stdout and "jpeg" in r.stdout
    d = json.loads(out.read_text())
    assert set(d["codecs"]) == {"anr", "jpeg", "webp"}
    for key, c in d["codecs"].items():
        assert set(c) >= {"name", "description", "results"}
        assert set(c["results"]) == {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}
        n = len(c["settings"]["values"])
        assert all(len(v) == n for v in c["results"].values())
        assert all(b > 0 for b in c["results"]["bpp"])
    assert d["codecs"]["anr"]["settings"]["values"] == [1, 7]
    assert set(d["bd"]) == {"jpeg", "webp"}
    assert set(d["bd"]["jpeg"]) == {"bd_rate_percent", "bd_psnr_db"}
    n_settings = sum(len(c["settings"]["values"]) for c in d["codecs"].values())
    assert len(d["per_image"]) == 2 * n_settings
    if HAVE_MPL:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _invoke(*args)  # the JSON is there now: refuse before measuring anything
    assert r.exit_code == 1 and "exists" in r.stderr


def test_anrc_eval_bad_arguments(image_dir):
    r = _invoke("eval", image_dir, "--baselines", "gif")
    assert r.exit_code == 1 and "unknown baseline" in r.stderr and r.stderr.count("\n") == 1
    r = _invoke("eval", image_dir, "-q", "0", "--baselines", "none")
    assert r.exit_code == 1 and "quality" in r.stderr
    assert _invoke("eval", image_dir, "-q", "one").exit_code == 2
    assert "Example" in _invoke("eval", "--help").output


def test_anrc_eval_sr(image_dir, tmp_path):
    out = tmp_path / "sr.json"
    r = _invoke("eval-sr", image_dir, "--scale", "2", "-q", "3", "--json", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["quality"] == 3 and list(d["scales"]) == ["2"]
    row = d["scales"]["2"]
    assert row["images"] == 2 and row["bpp_lr"] > 0
    assert "[1/" not in r.stderr  # not a terminal, not asked: no progress
    for method in ("anr", "anr+bicubic", "bicubic"):
        assert 0 < row[method]["ssim_y"] <= 1 and row[method]["psnr_y"] > 0
    assert "Example" in _invoke("eval-sr", "--help").output


def test_eval_progress_lines_off_a_terminal(image_dir):
    """Under nohup a long evaluation should still show how far it is: one line per measurement."""
    r = _invoke("eval-sr", image_dir, "--scale", "2", "-q", "3", "--limit", "2", "--device", "cpu", "--progress")
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0] for ln in lines] == ["[1/2", "[2/2"]
    assert "\r" not in r.stderr and "\033" not in r.stderr
