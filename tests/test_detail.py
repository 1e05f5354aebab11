"""The super-resolution head: starts at bicubic, tiles exactly, trains alone, ships in a model."""

import numpy as np
import pytest
import torch

from anr_codec import container, detail, train, train_detail
from anr_codec.model import AnrModel, ModelConfig
from conftest import smooth_image
from test_train import TINY, data_dir  # noqa: F401  (fixture)


def _head(seed=0, blocks=1, nonzero=True):
    torch.manual_seed(seed)
    h = detail.DetailHead(token_dim=16, token_stride=2, width=8, blocks=blocks, dim=8, heads=2)
    if nonzero:  # a trained head's readout is not zero
        torch.nn.init.normal_(h.anr.mlp[-1].weight, std=0.3)
    return h.eval()


def test_bicubic_at_pixel_centres_reproduces_the_image_and_interpolates_between():
    img = torch.rand(1, 3, 5, 7)
    ys, xs = torch.meshgrid(torch.arange(5) + 0.5, torch.arange(7) + 0.5, indexing="ij")
    xy = torch.stack([xs, ys], -1).reshape(1, -1, 2)
    got = detail.bicubic_at(img, xy)[0].T.reshape(3, 5, 7)
    assert torch.allclose(got, img[0], atol=1e-5)
    ramp = torch.arange(6.0).expand(1, 3, 4, 6).contiguous()   # halfway between two centres of a ramp
    mid = detail.bicubic_at(ramp, torch.tensor([[[3.0, 2.0]]]))
    assert torch.allclose(mid, torch.full((1, 1, 3), 2.5), atol=1e-5)


def test_a_new_head_starts_exactly_at_bicubic():
    h = _head(nonzero=False)
    lr, tok = torch.rand(1, 3, 12, 10), torch.randn(1, 16, 6, 5)
    xy = torch.rand(1, 50, 2) * torch.tensor([10.0, 12.0])
    out = h.render_points(lr, tok, xy, torch.tensor([0.25, 0.25]))
    assert torch.allclose(out, detail.bicubic_at(lr, xy), atol=1e-6)


@pytest.mark.parametrize("ow,oh", [(80, 56), (50, 35)])
def test_tiled_upscale_matches_one_pass(monkeypatch, ow, oh):
    """Tiles with their margins give the pixels of one pass, at integer and other scales."""
    h = _head(blocks=2)
    lr = smooth_image(40, 28, seed=1)
    tok = torch.randn(1, 16, 14, 20)
    one = detail.upscale(h, lr, tok, ow, oh, 1 << 16)
    monkeypatch.setattr(detail, "LR_TILE", 16)   # 3 x 2 tiles, margins inside the image
    tiled = detail.upscale(h, lr, tok, ow, oh, 97)
    assert one.shape == (oh, ow, 3)
    assert np.abs(one.astype(int) - tiled).max() <= 1   # float summation order only
    assert (one != tiled).mean() < 0.001
    plain = detail.upscale(_head(blocks=2, nonzero=False), lr, tok, ow, oh, 1 << 16)
    assert np.abs(one.astype(int) - plain).mean() > 1   # the head really adds something


def _train_args(data_dir, tmp_path, init, steps):
    return ["--init", str(init), "--data", str(data_dir), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "sr"), "--steps", str(steps), "--batch", "2", "--lr-crop", "16",
            "--points", "64", "--blocks", "1", "--width", "8", "--log-every", "1", "--lr", "1e-2"]


def test_head_trains_alone_resumes_and_ships(data_dir, tmp_path):  # noqa: F811
    """Only the head moves; the codec (and so every file and scale-1 decode) stays as it was;
    the checkpoint resumes, exports, and the Codec then decodes above the coded size with it."""
    from anr_codec import Codec
    from anr_codec.export import export
    train.main(["--data", str(data_dir), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                "--steps", "1", "--batch", "2", "--crop", "32", "--config", TINY])
    codec_ckpt = tmp_path / "run" / "last.pt"
    base = export(codec_ckpt, tmp_path / "base.pt", "base")
    train_detail.main(_train_args(data_dir, tmp_path, tmp_path / "base.pt", 3))
    state = torch.load(tmp_path / "sr" / "last.pt", weights_only=True)
    assert state["detail_step"] == 3 and state["step"] == 1
    before = torch.load(tmp_path / "base.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], state["model"][k]) for k in before)
    head0 = {k: v.clone() for k, v in state["model"].items() if k.startswith("detail.")}
    train_detail.main(_train_args(data_dir, tmp_path, tmp_path / "base.pt", 2))
    state = torch.load(tmp_path / "sr" / "last.pt", weights_only=True)
    assert state["detail_step"] == 5
    assert any(not torch.equal(head0[k], state["model"][k]) for k in head0)

    manifest = export(tmp_path / "sr" / "last.pt", tmp_path / "sr.pt", "sr")
    assert manifest["training"]["detail_steps"] == 5 and manifest["training"]["steps"] == 1
    plain, with_head = Codec(model=tmp_path / "base.pt", device="cpu"), Codec(model=tmp_path / "sr.pt", device="cpu")
    img = smooth_image(40, 30, seed=3)
    data = with_head.encode(img, quality=2)
    # Same bits (only the headers differ: they name the models).
    assert container.parse(data).payload == container.parse(plain.encode(img, quality=2)).payload
    assert np.array_equal(np.asarray(with_head.decode(data)), np.asarray(plain.decode(plain.encode(img, quality=2))))
    up = np.asarray(with_head.decode(data, scale=2))
    assert up.shape == (60, 80, 3)
    # Above the coded size the output is the scale-1 decode upscaled by the head.
    lr = np.asarray(with_head.decode(data))
    net = with_head.model.net
    tok = net.tokens(with_head._dequantised(with_head.model, container.parse(data))[None], 1)
    assert np.array_equal(up, detail.upscale(net.detail, lr, tok, 80, 60, 1 << 16))
    assert np.asarray(with_head.decode(data, scale=0.5)).shape == (15, 20, 3)


def test_a_codec_without_head_keeps_its_state_dict():
    """Old model files (no head fields) load as before: no detail.* weights expected."""
    net = AnrModel(ModelConfig.from_dict(train.parse_config(TINY)))
    assert net.detail is None and not any(k.startswith("detail.") for k in net.state_dict())
    grown = AnrModel(ModelConfig.from_dict({**net.config.to_dict(), "detail_blocks": 1}))
    missing = grown.load_state_dict(net.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("detail.") for k in missing)
