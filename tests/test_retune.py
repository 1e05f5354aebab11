"""scripts/retune_ladder.py: a quality moves along the rate axis, its lambda follows, and
the hyperprior's bits follow the new gain."""

import argparse
import math
import sys
from pathlib import Path

import pytest
import torch

from anr_codec.model import AnrModel, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import retune_ladder  # noqa: E402


def _small_model():
    torch.manual_seed(0)
    return AnrModel(ModelConfig(latent_channels=8, enc_width=32, dec_width=32, token_dim=16, mlp_hidden=16,
                                stem_channels=16, synth_channels=16, hyper_channels=8,
                                lambdas=(0.004, 0.01, 0.1))).eval()


def test_moves_set_gains_and_lambdas():
    net = _small_model()
    g = net.log_gain.detach().clone()
    retune_ladder.retune(net, [(2, "mid"), (1, "x0.5")])
    assert torch.allclose(net.log_gain[1], (g[0] + g[2]) / 2)
    assert torch.allclose(net.log_gain[0], g[0] + math.log(0.5))
    assert torch.equal(net.log_gain[2], g[2])
    lam = net.config.lambdas
    assert lam[1] == pytest.approx(math.sqrt(0.004 * 0.1)) and lam[0] == pytest.approx(0.001) and lam[2] == 0.1


def test_a_coarser_gain_codes_fewer_bits():
    net = _small_model()
    with torch.no_grad():
        net.log_gain.add_(2.0)  # several quantiser steps per latent value
    x = torch.rand(1, 3, 64, 64)
    bits = net.estimate(x, 0)[2].item()
    retune_ladder.retune(net, [(1, "x0.5")])
    coarser = net.estimate(x, 0)[2].item()
    assert coarser < 0.9 * bits


def test_bad_moves_are_refused():
    for text in ("1=0.5", "a=mid", "2=x-1", "2=xabc", "2=up"):
        with pytest.raises(argparse.ArgumentTypeError):
            retune_ladder.parse_move(text)
    net = _small_model()
    with pytest.raises(SystemExit):
        retune_ladder.retune(net, [(3, "mid")])   # the top has no upper neighbour
    with pytest.raises(SystemExit):
        retune_ladder.retune(net, [(4, "x2")])


def test_extending_below_keeps_the_old_qualities_and_renumbers_them():
    net = _small_model()
    x = torch.rand(1, 3, 64, 64)
    before = [net.estimate(x, qi) for qi in range(3)]
    wider = retune_ladder.extend_below(net, [0.5, 0.5])
    assert wider.n_qualities == 5 and wider.config.default_quality == net.config.default_quality + 2
    assert wider.config.lambdas[:2] == pytest.approx((0.00025, 0.001)) and wider.config.lambdas[2:] == net.config.lambdas
    assert torch.allclose(wider.log_gain[0], net.log_gain[0] + 2 * math.log(0.5))
    for qi, old in enumerate(before):
        new = wider.estimate(x, qi + 2)
        assert all(torch.equal(a, b) for a, b in zip(old, new))   # same pixels, same bits
    with torch.no_grad():
        wider.log_gain.add_(2.0)   # several quantiser steps per value, so the coarser level shows
    assert wider.estimate(x, 0)[2].item() < wider.estimate(x, 2)[2].item()


def test_the_default_quality_travels_with_the_config():
    d = retune_ladder.extend_below(_small_model(), [0.5]).config.to_dict()
    assert ModelConfig.from_dict(d).default_quality == 6
    del d["default_quality"]   # model files from before the field existed
    assert ModelConfig.from_dict(d).default_quality == 5
