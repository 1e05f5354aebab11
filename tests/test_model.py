import torch
from torch.utils.flop_counter import FlopCounterMode

from anr_codec.anr import ANRDecoder
from anr_codec.model import AnrModel


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


def test_training_forward_backward_runs():
    m = AnrModel()
    x = torch.rand(2, 3, 32, 48)
    tokens, bits = m.forward_train(x, torch.tensor([0, 3]))
    out = m.anr.render_grid(tokens, 1, jitter=True)
    assert out.shape == x.shape and bits.shape == (2,) and (bits > 0).all()
    (((out - x) ** 2).mean() + bits.mean()).backward()
    assert m.encoder.stem[0].weight.grad is not None


def test_decoder_cost_per_pixel_is_within_budget():
    """Decoder MACs per output pixel at scale 1 (token network + ANR): at most 60,000."""
    m = AnrModel().eval()
    c = m.config.latent_channels
    y = torch.zeros(1, c, 8, 12)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        img = m.anr.render_grid(m.tokens(y, 0), 1)
    macs = fc.get_total_flops() / 2 / (img.shape[-1] * img.shape[-2])
    assert macs < 60_000, macs
