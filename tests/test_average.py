"""scripts/average_checkpoints.py: weights are averaged, integer buffers and bookkeeping kept right."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import average_checkpoints  # noqa: E402


def _state(w, steps, elapsed, config=None):
    return {"config": config or {"token_dim": 8}, "step": steps, "elapsed": elapsed,
            "model": {"w": torch.tensor(w), "n": torch.tensor([steps])}}


def test_mean_of_floats_and_first_integer_buffer():
    out = average_checkpoints.average(
        [_state([1.0, 2.0], 110, 60.0), _state([3.0, 6.0], 130, 80.0)], start_step=100, start_elapsed=50.0)
    assert torch.equal(out["model"]["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(out["model"]["n"], torch.tensor([110]))
    # 10 + 30 steps and 10 + 30 s after the shared start both went into the average
    assert out["step"] == 140 and out["elapsed"] == pytest.approx(90.0)


def test_refuses_different_configs():
    with pytest.raises(SystemExit):
        average_checkpoints.average(
            [_state([1.0], 1, 1.0), _state([1.0], 1, 1.0, {"token_dim": 16})], start_step=0, start_elapsed=0.0)
