"""scripts/revive_channels.py: collapsed latent channels come back carrying their donors'
statistics, gains and priors, and the decoder starts close to where it was."""

import sys
from pathlib import Path

import pytest
import torch

from anr_codec.model import V1_DESIGN, AnrModel, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import revive_channels  # noqa: E402

DEAD = [1, 4, 6]


SMALL = {"latent_channels": 8, "enc_width": 32, "dec_width": 32, "token_dim": 16, "mlp_hidden": 16,
         "lambdas": (0.01, 0.1)}


def _model_with_dead_channels(design=V1_DESIGN):
    """A small model of `design` (anr-v1's by default; {} for anr-v2's, with a hyperprior)."""
    torch.manual_seed(0)
    net = AnrModel(ModelConfig(**{**design, **SMALL})).eval()
    with torch.no_grad():
        net.log_gain.fill_(2.0)  # live channels spread over several quantiser steps
        head = net.encoder.head[1]
        head.weight.mul_(10.0)
        for c in DEAD:  # a collapsed channel: a constant output
            head.weight[c] = 0.0
            head.bias[c] = 0.3
    return net


def test_dead_channels_are_revived_like_their_donors():
    net = _model_with_dead_channels()
    images = [torch.rand(1, 3, 48, 64), torch.rand(1, 3, 32, 32)]
    mean0, _ = revive_channels.channel_stats(net, images)
    x = images[0]
    with torch.no_grad():
        before = net.tokens(net.analysis(x, 1), 1)
    chosen = revive_channels.revive(net, images, count=2, max_spread=1e9)
    assert len(chosen) == 2 and set(chosen) <= set(DEAD)

    mean, std = revive_channels.channel_stats(net, images)
    assert (std[chosen] > 0.1).all()  # they vary now
    live = [c for c in range(8) if c not in DEAD]
    donors = [live[i % len(live)] for i in range(2)]
    for c, d in zip(chosen, donors):
        assert torch.allclose(std[c], std[d], rtol=1e-3) and torch.allclose(mean[c], mean[d], atol=1e-4)
        assert torch.equal(net.log_gain[:, c], net.log_gain[:, d])
        for prior in net.priors:
            assert torch.equal(prior.quantiles[c], prior.quantiles[d])
    # The one left dead is untouched.
    left = [c for c in DEAD if c not in chosen]
    assert torch.allclose(mean[left], mean0[left]) and (std[left] < 1e-6).all()
    # The token network hardly notices the new inputs at first (small weights, the old
    # constant folded into its bias).
    with torch.no_grad():
        after = net.tokens(net.analysis(x, 1), 1)
    assert (after - before).abs().mean() < 0.1 * before.std()


def test_nothing_to_revive():
    net = _model_with_dead_channels()
    with torch.no_grad():
        net.encoder.head[1].weight.normal_()  # every channel alive
    assert revive_channels.revive(net, [torch.rand(1, 3, 32, 32)], count=4) == []


def test_hyperprior_codes_revived_channels_like_their_donors():
    """With a hyperprior, h_a stops reading a revived channel (z stays what it was) and h_s
    predicts it its donor's mean and spread, so its symbols cost a sane number of bits."""
    net = _model_with_dead_channels({"stem_channels": 16, "synth_channels": 16, "hyper_channels": 8})
    images = [torch.rand(1, 3, 128, 128)]
    x = images[0]
    with torch.no_grad():
        z_before = net.hyper.h_a(net.encoder(x))
    chosen = revive_channels.revive(net, images, count=2, max_spread=1e9)
    assert len(chosen) == 2
    mean, std = revive_channels.channel_stats(net, images)
    with torch.no_grad():
        y = net.encoder(x)
        z_after = net.hyper.h_a(y)
        # Away from the zero-padded border, z has not moved.
        assert torch.allclose(z_after[..., 1:-1, 1:-1], z_before[..., 1:-1, 1:-1], atol=1e-4)
        pred_mean, pred_log_scale = net.hyper.h_s(torch.randn_like(z_after)).chunk(2, dim=1)
        m_q, ls_q = net.hyper.params(z_after, net.log_gain[1], y.shape[-2:])
    for c in chosen:
        assert torch.allclose(pred_mean[:, c], mean[c].expand_as(pred_mean[:, c]), atol=1e-5)
        assert torch.allclose(pred_log_scale[:, c].exp(), std[c].expand_as(pred_log_scale[:, c]), rtol=1e-3)
        # Each symbol costs about a Gaussian of that spread (a few bits), not the tens a
        # scale at the floor would charge.
        y_q = y[:, c] * net.gain(1)[c]
        lik = net.hyper.likelihood(torch.round(y_q - m_q[:, c]) + m_q[:, c], m_q[:, c], ls_q[:, c])
        assert 0.5 < -torch.log2(lik).mean() < 8


def test_channels_stay_dead_below_from_quality():
    """Revived only from quality 2 up: at quality 1 the channel's symbols all round to the
    predicted mean (no bits, the decoder sees that constant), at quality 2 they vary."""
    net = _model_with_dead_channels({"stem_channels": 16, "synth_channels": 16, "hyper_channels": 8})
    images = [torch.rand(1, 3, 128, 128)]
    chosen = revive_channels.revive(net, images, count=2, max_spread=1e9, from_quality=2)
    assert len(chosen) == 2
    with torch.no_grad():
        _, sym_low, _ = net.estimate(images[0], 0)
        _, sym_top, _ = net.estimate(images[0], 1)
    assert (sym_low[:, chosen] == 0).all()
    assert (sym_top[:, chosen] != 0).any()
    for bad in (0, 3):
        with pytest.raises(ValueError):
            revive_channels.revive(net, images, count=2, from_quality=bad)
