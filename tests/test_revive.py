"""scripts/revive_channels.py: collapsed latent channels come back carrying their donors'
statistics, gains and priors, and the decoder starts close to where it was."""

import sys
from pathlib import Path

import torch

from anr_codec.model import V1_DESIGN, AnrModel, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import revive_channels  # noqa: E402

DEAD = [1, 4, 6]


def _model_with_dead_channels():
    torch.manual_seed(0)
    net = AnrModel(ModelConfig(**{**V1_DESIGN, "latent_channels": 8, "enc_width": 32, "dec_width": 32,
                                  "token_dim": 16, "mlp_hidden": 16, "lambdas": (0.01, 0.1)})).eval()
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
