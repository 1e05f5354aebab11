"""The paper study's hyper-network INRs (benchmarks/paper/inr_models.py), on random tensors:
no faces needed, a few seconds."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper"))
from inr_models import HEADS, HyperINR, check, pixel_centers, thresholded_softmax  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and far faster on a busy machine (no OpenMP waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small(head, **kw):
    """A tiny model (32x32 input, 16 tokens) so the tests stay fast."""
    return HyperINR(head, res=32, tokens=16, enc_width=32, enc_depth=1, **kw)


@pytest.mark.parametrize("head", HEADS)
def test_heads_decode_any_coordinates(head):
    torch.manual_seed(0)
    m = small(head)
    img = torch.rand(2, 3, 32, 32)
    xy = torch.rand(2, 37, 2) * 2 - 1           # arbitrary, off-grid points
    out = m(img, xy)
    assert out.shape == (2, 37, 3) and torch.isfinite(out).all()
    z = m.encode(img)
    assert m.render(z, 48).shape == (2, 3, 48, 48)  # any resolution, shared (1, Q, 2) queries
    # the shared-query path and the per-image path agree
    grid = pixel_centers(8)
    a = m.decode(z, grid[None])
    b = m.decode(z, grid.expand(2, -1, -1))
    assert torch.allclose(a, b, atol=1e-5)


def test_parameter_counts_match():
    counts = check(tolerance=0.10)
    totals = [c["total"] for c in counts.values()]
    assert max(totals) <= 1.10 * min(totals)


def test_thresholded_softmax():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, 64) * 3
    w = thresholded_softmax(logits, 0.01)
    p = logits.softmax(-1)
    assert torch.allclose(w.sum(-1), torch.ones(4, 3, 5), atol=1e-6)
    assert (w[p < 0.01] == 0).all() and (w[p >= 0.01] > 0).all()
    # the kept weights keep their ratios (renormalised, not re-shaped)
    kept = p >= 0.01
    assert torch.allclose(w[kept], (p * kept / (p * kept).sum(-1, keepdim=True))[kept], atol=1e-6)
    assert torch.equal(thresholded_softmax(logits, 0.0), p)
    # every weight below the threshold: the largest one survives, no division by zero
    flat = thresholded_softmax(torch.zeros(2, 256), 0.01)
    assert torch.isfinite(flat).all() and torch.allclose(flat.sum(-1), torch.ones(2))


def test_anr_decoder_uses_the_thresholded_weights():
    torch.manual_seed(0)
    m = small("anr", threshold=0.05)
    z = m.encode(torch.rand(2, 3, 32, 32))
    xy = torch.rand(2, 20, 2) * 2 - 1
    h = m.head
    w = h.attention_weights(z, xy)
    assert (w == 0).any()                         # something was cut
    q, _, _, vh = h._qkv(z, xy)
    ref = h.mlp(q + (w @ vh).transpose(1, 2).flatten(2)) + 0.5
    assert torch.allclose(h.decode(z, xy), ref, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_training_steps_reduce_the_loss(head):
    torch.manual_seed(0)
    m = small(head)
    # a random colour per image plus smooth detail (4x4 noise upscaled): learnable in a few
    # steps (the colour must come through the encoder), unlike white noise
    detail = F.interpolate(torch.rand(4, 3, 4, 4), size=(32, 32), mode="bilinear", align_corners=False)
    img = 0.7 * torch.rand(4, 3, 1, 1) + 0.3 * detail
    xy = pixel_centers(32).expand(4, -1, -1)
    target = img.flatten(2).transpose(1, 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(m(img, xy), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
