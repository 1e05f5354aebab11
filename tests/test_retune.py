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
