import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from anr_codec.anr import ANRDecoder
from anr_codec.model import V1_DESIGN, AnrModel, ModelConfig


def test_grid_and_point_paths_compute_the_same_function():
    torch.manual_seed(0)
    d = ANRDecoder(threshold=0.05).eval()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        tok = torch.randn(2, 64, 5, 7)
        for s in (1, 3):
            g = d.render_grid(tok, s, cells_per_chunk=4)
            H, W = g.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
            xy = torch.stack([xs / s, ys / s], -1).reshape(1, -1, 2).expand(2, -1, -1)
            p = d.render_points(tok, xy, torch.tensor([1 / s, 1 / s])).reshape(2, H, W, 3).permute(0, 3, 1, 2)
            assert (g - p).abs().max() < 1e-4
        # variational coordinates: jitter moves the queries; with zero spread it is exact
        exact = d.render_grid(tok, 1)
        assert (d.render_grid(tok, 1, jitter=True) - exact).abs().max() > 1e-3
        d.jitter_sigma = 0.0
        assert (d.render_grid(tok, 1, jitter=True) - exact).abs().max() < 1e-5


def v1():
    return ModelConfig(**V1_DESIGN)


def test_training_forward_backward_runs():
    m = AnrModel(v1())
    x = torch.rand(2, 3, 32, 48)
    tokens, bits = m.forward_train(x, torch.tensor([0, 3]))
    out = m.anr.render_grid(tokens, 1, jitter=True)
    assert out.shape == x.shape and bits.shape == (2,) and (bits > 0).all()
    (((out - x) ** 2).mean() + bits.mean()).backward()
    assert m.encoder.stem[0].weight.grad is not None


@pytest.mark.parametrize("grown", [False, True])
def test_decoder_cost_per_pixel_is_within_budget(grown):
    """Decoder MACs per output pixel at scale 1 (token network + ANR): at most 60,000,
    also with the residual blocks a grown token network adds (measured: 33.3k / 58.1k)."""
    m = AnrModel(grown_config() if grown else v1()).eval()
    macs = decoder_macs_per_pixel(m)
    assert macs < 60_000, macs


def decoder_macs_per_pixel(m) -> float:
    """Token network + ANR multiply-adds per output pixel at scale 1."""
    y = torch.zeros(1, m.config.latent_channels, 8, 12)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        img = m.anr.render_grid(m.tokens(y, 0), 1)
    return fc.get_total_flops() / 2 / (img.shape[-1] * img.shape[-2])


def grown_config(**kw):
    return ModelConfig(**{**V1_DESIGN, "token_res8": 3, "token_res4": 1, **kw})  # as anr-v1 shipped


def test_growing_the_token_network_keeps_the_function():
    """Residual blocks added to a trained token network start as the identity, so training
    can continue from the smaller model's weights."""
    torch.manual_seed(0)
    small = AnrModel(v1()).eval()
    big = AnrModel(grown_config()).eval()
    result = big.load_state_dict(small.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(".res" in k for k in result.missing_keys)
    y = torch.randn(1, small.config.latent_channels, 3, 5)
    with torch.no_grad():
        assert torch.equal(small.tokens(y, 2), big.tokens(y, 2))
        for p in big.token_net.res4.parameters():   # once trained, the blocks do change it
            p.add_(0.1)
        assert (small.tokens(y, 2) - big.tokens(y, 2)).abs().max() > 1e-3


def test_tiled_tokens_of_a_grown_network_match_one_pass(monkeypatch):
    from anr_codec import tiling
    torch.manual_seed(0)
    net = AnrModel(grown_config()).eval().double()  # float64: summation order cannot blur the check
    with torch.no_grad():
        for p in net.token_net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert net.token_net.margin == 9
    y = torch.randn(net.config.latent_channels, 23, 19, dtype=torch.float64)
    with torch.no_grad():
        ref = net.tokens(y[None], 1)
        monkeypatch.setattr(tiling, "NET_SINGLE", 0)
        monkeypatch.setattr(tiling, "NET_TILE", 6)
        err = (tiling.tokens(net, y, 1) - ref).abs().max()
        net.token_net.margin -= 1
        short = (tiling.tokens(net, y, 1) - ref).abs().max()
    assert err < 1e-9 and short > 1e-3, (err, short)


# -- the conv-token design (anr-v2): GDN transforms, data tokens at stride 2 ----------------
def conv_config(**kw):
    from anr_codec.model import CONV_TOKENS, ModelConfig
    return ModelConfig(**{**CONV_TOKENS, **kw})


@pytest.mark.parametrize("offset_values", [False, True])
def test_stride2_grid_and_point_paths_compute_the_same_function(offset_values):
    torch.manual_seed(1)
    d = ANRDecoder(threshold=0.05, stride=2, hidden=64, max_freq=16, offset_values=offset_values).eval()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        tok = torch.randn(2, 64, 6, 5)
        for s in (1, 2, 4):
            g = d.render_grid(tok, s, cells_per_chunk=7)   # chunks of whole rows
            assert g.shape == (2, 3, 12 * s, 10 * s)
            H, W = g.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
            xy = torch.stack([xs / s, ys / s], -1).reshape(1, -1, 2).expand(2, -1, -1)
            p = d.render_points(tok, xy, torch.tensor([1 / s, 1 / s])).reshape(2, H, W, 3).permute(0, 3, 1, 2)
            assert (g - p).abs().max() < 1e-4
            if s == 1:   # the refinement path's pixels of a few cells are the grid's too
                cells = torch.tensor([0, 7, 29])
                c = d.render_cells(tok, cells)                       # (B, N, 4, 3)
                blocks = g.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 30, 4).permute(0, 2, 3, 1)
                assert (c - blocks[:, cells]).abs().max() < 1e-4
        # Training jitter: each sample draws its own offsets, so two samples of the same
        # tokens differ, and with zero spread the jittered render is the exact one.
        same = tok[:1].expand(2, -1, -1, -1)
        j = d.render_grid(same, 1, jitter=True)
        assert (j[0] - j[1]).abs().max() > 1e-3
        d.jitter_sigma = 0.0
        assert (d.render_grid(same, 1, jitter=True) - d.render_grid(same, 1)).abs().max() < 1e-5


def test_conv_design_trains_and_fits_the_decoder_budget():
    m = AnrModel(conv_config())
    assert m.token_stride == 2
    x = torch.rand(2, 3, 32, 48)
    tokens, bits = m.forward_train(x, torch.tensor([1, 6]))
    assert tokens.shape[-2:] == (16, 24)
    out = m.anr.render_grid(tokens, 1, jitter=True)
    assert out.shape == x.shape and (bits > 0).all()
    (((out - x) ** 2).mean() + bits.mean()).backward()
    assert m.encoder.stem[0].weight.grad is not None and m.token_net.up[0][0].weight.grad is not None
    macs = decoder_macs_per_pixel(m.eval())
    assert 30_000 < macs < 60_000, macs   # measured 54.4k (47.5k without per-neighbour values)


def test_tiles_of_the_conv_design_need_exactly_their_margins(monkeypatch):
    """Encoder and token network in tiles give what one pass gives, and one latent row
    less margin than each declares is visibly wrong (fresh weights: trained ones learn
    to all but ignore the receptive field's far edge)."""
    from anr_codec import tiling
    torch.manual_seed(0)
    net = AnrModel(conv_config()).eval()
    assert (net.encoder.margin, net.token_net.margin) == (6, 4)
    rgb = np.random.default_rng(0).integers(0, 256, (16 * 23, 16 * 19, 3), dtype=np.uint8)
    y = torch.randn(192, 23, 19)
    with torch.no_grad():
        ref_y, ref_t = tiling.analysis(net, rgb, 1, "cpu"), net.tokens(y[None], 1)
        monkeypatch.setattr(tiling, "NET_SINGLE", 0)
        monkeypatch.setattr(tiling, "NET_TILE", 6)
        errs = [(tiling.analysis(net, rgb, 1, "cpu") - ref_y).abs().max(),
                (tiling.tokens(net, y, 1) - ref_t).abs().max()]
        net.encoder.margin -= 1
        net.token_net.margin -= 1
        shorts = [(tiling.analysis(net, rgb, 1, "cpu") - ref_y).abs().max(),
                  (tiling.tokens(net, y, 1) - ref_t).abs().max()]
    for err, short, ref in zip(errs, shorts, (ref_y, ref_t)):
        assert err < 1e-4 * ref.abs().max() and short > 1e-3 * ref.abs().max() and short > 100 * err, \
            (errs, shorts)


def test_residual_blocks_grow_the_conv_token_network_from_the_identity(monkeypatch):
    """token_res8 on the conv design: loading the smaller model's weights gives the same
    tokens until training moves the blocks; tiles stay exact with the margin it declares
    (one row less is visibly wrong); the decoder stays within its per-pixel budget."""
    from anr_codec import tiling
    torch.manual_seed(0)
    small = AnrModel(conv_config()).eval()
    big = AnrModel(conv_config(token_res8=1)).eval()
    result = big.load_state_dict(small.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(".res8." in k for k in result.missing_keys)
    y = torch.randn(1, 192, 23, 19)
    with torch.no_grad():
        assert torch.equal(small.tokens(y, 2), big.tokens(y, 2))
        for p in big.token_net.res8.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        ref = big.tokens(y, 1)
        assert (small.tokens(y, 1) - ref).abs().max() > 1e-3
        assert big.token_net.margin == 5
        monkeypatch.setattr(tiling, "NET_SINGLE", 0)
        monkeypatch.setattr(tiling, "NET_TILE", 6)
        err = (tiling.tokens(big, y[0], 1) - ref).abs().max()
        big.token_net.margin -= 1
        short = (tiling.tokens(big, y[0], 1) - ref).abs().max()
        assert err < 1e-4 * ref.abs().max() and short > 100 * err, (err, short)
    macs = decoder_macs_per_pixel(big)
    assert macs < 60_000, macs   # measured 59.0k
    with pytest.raises(ValueError):
        AnrModel(conv_config(token_res4=1))


def test_per_neighbour_values_grow_a_trained_decoder_without_changing_it():
    """`offset_values` on a model whose weights lack them (loaded non-strict, as `--init`
    does) renders exactly what the model did; once the corrections move, neighbours differ."""
    torch.manual_seed(2)
    plain = ANRDecoder(stride=2, hidden=64, max_freq=16).eval()
    grown = ANRDecoder(stride=2, hidden=64, max_freq=16, offset_values=True).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False)
    assert missing.missing_keys == ["value_delta"] and not missing.unexpected_keys
    tok = torch.randn(1, 64, 4, 6)
    with torch.no_grad():
        assert (grown.render_grid(tok, 2) - plain.render_grid(tok, 2)).abs().max() < 1e-6
        grown.value_delta[4].add_(0.1 * torch.randn(64, 64))   # only the home token's map
        assert (grown.render_grid(tok, 2) - plain.render_grid(tok, 2)).abs().max() > 1e-3
