"""benchmarks/capacity.py: the training diagnostic runs and its fits do what they claim."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import capacity  # noqa: E402


def test_fit_improves_on_its_start():
    torch.manual_seed(0)
    target = torch.rand(1, 3, 8, 8)
    weight = torch.randn(3, 5, 1, 1)
    render = lambda v: torch.nn.functional.conv2d(v, weight)  # noqa: E731
    curve = capacity.fit(render, torch.zeros(1, 5, 8, 8), target, steps=40, lr=0.05)
    assert curve[0][0] == 0 and curve[-1][0] == 40
    assert curve[-1][1] > curve[0][1] + 3


def test_report_on_a_small_image(tmp_path, capsys):
    rng = np.random.default_rng(0)
    img = (rng.random((40, 56, 3)) * 64 + np.linspace(0, 160, 56)[None, :, None]).astype(np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    capacity.main([str(path), "--size", "48x32", "--steps", "2"])
    out = capsys.readouterr().out
    assert "(48x32)" in out
    rows = re.findall(r"^ +(\d+) .* of (?:128|192)$", out, re.M)   # one row per quality (latent channels)
    assert len(rows) >= 7 and rows == [str(q) for q in range(1, len(rows) + 1)]
    assert "latent fit" in out and "token fit" in out
    assert f"attention (quality {len(rows)}): home" in out   # the fits default to the highest


def test_attention_profile_accounts_for_all_the_weight():
    """Home + 4 edges + 4 corners hold each query's whole attention; a decoder whose
    weights ignore content and position has no spread between pixels."""
    from anr_codec.model import AnrModel
    from test_model import conv_config

    torch.manual_seed(0)
    net = AnrModel(conv_config()).eval()
    with torch.no_grad():
        tokens = net.tokens(net.analysis(torch.rand(1, 3, 32, 32), 6), 6)
    a = capacity.attention_profile(net.anr, tokens)
    assert abs(a["home"] + 4 * a["edge"] + 4 * a["corner"] - 1) < 1e-4
    assert a["home"] > a["edge"] > a["corner"] > 0 and a["spread"] > 0
    with torch.no_grad():
        net.anr.to_q.weight.zero_()
        net.anr.to_q.bias.zero_()
        net.anr.dist_scale.fill_(-30.0)      # no distance prior: plain mean over the 9
    flat = capacity.attention_profile(net.anr, tokens)
    assert abs(flat["home"] - 1 / 9) < 1e-4 and flat["spread"] < 1e-4


def test_compare_checkpoints_reports_each_checkpoint(tmp_path, capsys):
    """benchmarks/compare_checkpoints.py on a tiny stand-in for the training folder."""
    import compare_checkpoints
    from anr_codec.model import V1_DESIGN, AnrModel, ModelConfig

    rng = np.random.default_rng(1)
    for sub, name in (("wikipedia", "a.png"), ("bsds500/test", "b.jpg")):
        (tmp_path / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / sub / name)
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    net = AnrModel(ModelConfig(**V1_DESIGN))
    torch.save({"config": net.config.to_dict(), "model": net.state_dict(), "step": 7}, ckpt)
    compare_checkpoints.main([str(ckpt), str(ckpt), "--data", str(tmp_path), "--size", "32x32"])
    out = capsys.readouterr().out
    assert "2 crops of 32x32" in out and out.count("(step 7)") == 2
    assert len(out.split("| bpp")[1].split("|")[0].split()) == 7   # one bpp per quality
    assert out.count("against the first") == 1


def test_curve_shift_reads_a_curve_moved_up_as_a_gain():
    from compare_checkpoints import curve_shift

    anchor = {"bpp": [0.2, 0.3, 0.5, 0.8], "psnr": [26.0, 27.0, 28.0, 29.0]}
    assert curve_shift(anchor, anchor) == "BD-rate +0.00 %, BD-PSNR +0.000 dB"
    up = {"bpp": anchor["bpp"], "psnr": [v + 0.2 for v in anchor["psnr"]]}
    rate, gain = curve_shift(anchor, up).split(", ")
    assert rate.startswith("BD-rate -") and gain == "BD-PSNR +0.200 dB"
    # Its own points at twice the rate: the same PSNR costs 100 % more.
    assert curve_shift(anchor, {"bpp": [2 * v for v in anchor["bpp"]], "psnr": anchor["psnr"]}).startswith(
        "BD-rate +100.00 %")
    assert curve_shift(anchor, {"bpp": [2.0, 3.0], "psnr": [40.0, 41.0]}) == "BD-rate n/a, BD-PSNR n/a"


def test_face_mosaics_tile_faces_in_name_order(tmp_path):
    from compare_checkpoints import face_mosaics

    for i in range(24):   # face i is filled with the value 10 * i
        Image.fromarray(np.full((109, 89, 3), 10 * i, np.uint8)).save(tmp_path / f"{i:06d}.jpg", quality=100)
    a, b = face_mosaics(tmp_path, count=2)
    assert a.shape == b.shape == (1, 3, 320, 352)   # 4 x 3 faces of 89x109, cut to 16s
    px = (b[0, 0] * 255).round()
    # Mosaic 2 holds faces 12-23: 12 top left, 15 top right, 20 bottom left.
    assert abs(px[10, 10].item() - 120) <= 2 and abs(px[10, 340].item() - 150) <= 2
    assert abs(px[310, 10].item() - 200) <= 2
    with pytest.raises(SystemExit):
        face_mosaics(tmp_path, count=3)
