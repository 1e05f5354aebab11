"""Encoder-side latent refinement: same decoder, better rate-distortion, bounded by tiles."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from anr_codec import AnrError, Codec, refine
from anr_codec.codec import MAX_REFINE
from anrc.main import cli


def rd_loss(codec, src: np.ndarray, data: bytes) -> float:
    """lambda * 255^2 * MSE + bpp of a real file: what refinement minimises (per the model)."""
    q = codec.info(data).quality
    lam = codec.model.net.config.lambdas[q - 1]
    out = np.asarray(codec.decode(data)).astype(np.float64)
    mse = ((out - src) ** 2).mean() / 255 ** 2
    return lam * 255 ** 2 * mse + 8 * len(data) / (src.shape[0] * src.shape[1])


def test_render_cells_matches_render_grid(codec):
    anr = codec.model.net.anr
    tok = torch.randn(1, anr.token_dim, 5, 7)
    st = anr.stride
    full = anr.render_grid(tok).view(1, 3, 5, st, 7, st).permute(0, 2, 4, 3, 5, 1).reshape(1, 35, st * st, 3)
    cells = torch.tensor([0, 6, 17, 34, 12])  # corners, edges and inside
    torch.testing.assert_close(anr.render_cells(tok, cells), full[:, cells])


def test_soft_round_anneals_to_rounding_around_the_centre():
    gen = torch.Generator().manual_seed(0)
    centre = torch.tensor([[[0.3]], [[-1.25]]])
    y = centre + torch.linspace(-3, 3, 60).view(1, 6, 10)  # offsets in [-3, 3], both channels
    warm = refine.soft_round(y, centre, 0.5, gen)
    below = torch.floor(y - centre) + centre
    assert torch.all(warm >= below - 1e-6) and torch.all(warm <= below + 1 + 1e-6)
    assert not torch.allclose(warm, torch.round(y - centre) + centre, atol=1e-3)  # still soft
    cold = refine.soft_round(y, centre, 1e-3, gen)
    torch.testing.assert_close(cold, torch.round(y - centre) + centre, atol=1e-4, rtol=0)
    # The gradient reaches the latent (straight-through rounding would pass it unchanged).
    v = y.clone().requires_grad_(True)
    refine.soft_round(v, centre, 0.2, gen).sum().backward()
    assert torch.isfinite(v.grad).all() and not torch.allclose(v.grad, torch.ones_like(v))


def test_refinement_lowers_the_rate_distortion_loss(codec, photo):
    for q in (2, 5):
        plain = codec.encode(photo, quality=q)
        refined = codec.encode(photo, quality=q, refine=12)
        assert refined != plain
        assert rd_loss(codec, photo, refined) < rd_loss(codec, photo, plain)


def test_zero_steps_is_the_plain_encoder(codec, photo):
    assert codec.encode(photo, refine=0) == codec.encode(photo)
    assert Codec(quality=3, device="cpu", refine=3).encode(photo) == codec.encode(photo, refine=3)


def test_tiled_refinement_is_deterministic_and_decodes(codec, photo, monkeypatch):
    """Tiles of 2 latent positions (6 x 8 = 48 tiles here) exercise margins and image edges.
    12 steps, as above: 4 no longer beat plain encoding at a low quality (0.1 % worse)."""
    whole = codec.encode(photo[:90, :125], refine=12)
    monkeypatch.setattr(refine, "REFINE_TILE", 2)
    tiled = codec.encode(photo[:90, :125], refine=12)
    assert tiled == codec.encode(photo[:90, :125], refine=12)
    assert tiled != whole  # the tiles really were used
    assert codec.decode(tiled).size == (125, 90)
    plain = codec.encode(photo[:90, :125])
    assert rd_loss(codec, photo[:90, :125], tiled) < rd_loss(codec, photo[:90, :125], plain)


@pytest.mark.parametrize("bad", [-1, 1.5, True, 10_000, "3"])
def test_bad_step_counts_are_refused(codec, photo, bad):
    with pytest.raises(AnrError, match="refine"):
        codec.encode(photo, refine=bad)
    with pytest.raises(AnrError, match="refine"):
        Codec(refine=bad)


def test_cli_refine_option(tmp_path, photo):
    src = tmp_path / "a.png"
    Image.fromarray(photo).save(src)
    run = CliRunner().invoke
    r = run(cli, ["encode", str(src), "--refine", "3", "-q", "2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert Codec(device="cpu").decode(src.with_suffix(".anr")).size == (128, 96)
    assert run(cli, ["encode", str(src), "--refine", "-1", "-f"]).exit_code == 2
    option = next(o for o in cli.commands["encode"].params if o.name == "refine")
    assert option.type.max == MAX_REFINE  # the CLI's bound is the library's


def test_render_cells_matches_render_grid_at_stride_2():
    from anr_codec.anr import ANRDecoder
    torch.manual_seed(3)
    anr = ANRDecoder(token_dim=32, hidden=48, stride=2).eval()
    tok = torch.randn(2, 32, 4, 6)
    full = anr.render_grid(tok).view(2, 3, 4, 2, 6, 2).permute(0, 2, 4, 3, 5, 1).reshape(2, 24, 4, 3)
    cells = torch.tensor([0, 5, 11, 23])
    torch.testing.assert_close(anr.render_cells(tok, cells), full[:, cells])
