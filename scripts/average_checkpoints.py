"""Average the weights of training runs forked from one checkpoint (a "model soup").

    python scripts/average_checkpoints.py OUT.pt A.pt B.pt ...

Runs that start from the same weights and differ only in their batches stay in one basin
at a small learning rate, so the mean of their weights is usually at least as good as
either (check with benchmarks/compare_checkpoints.py before shipping it). Floating-point
tensors are averaged; integer buffers come from the first checkpoint. The result counts
the steps and wall time of all runs after the shared start, since all of that compute
went into it; it carries no optimizer state, so training on from it restarts Adam.
"""

from __future__ import annotations

import argparse

import torch


def average(states: list[dict], start_step: int, start_elapsed: float) -> dict:
    configs = {repr(s["config"]) for s in states}
    if len(configs) != 1:
        raise SystemExit("checkpoints have different model configs")
    keys = states[0]["model"].keys()
    if any(s["model"].keys() != keys for s in states):
        raise SystemExit("checkpoints have different parameter names")
    model = {}
    for k in keys:
        ts = [s["model"][k] for s in states]
        model[k] = torch.stack(ts).mean(0) if ts[0].is_floating_point() else ts[0].clone()
    return {
        "config": states[0]["config"],
        "model": model,
        # All runs' steps past their common start went into the average.
        "step": start_step + sum(int(s["step"]) - start_step for s in states),
        "elapsed": start_elapsed + sum(float(s["elapsed"]) - start_elapsed for s in states),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--start-step", type=int, required=True,
                   help="step of the checkpoint the runs forked from")
    p.add_argument("--start-elapsed", type=float, required=True,
                   help="training seconds of the checkpoint the runs forked from")
    a = p.parse_args()
    states = [torch.load(c, map_location="cpu", weights_only=True) for c in a.checkpoints]
    out = average(states, a.start_step, a.start_elapsed)
    torch.save(out, a.out)
    print(f"{a.out}: mean of {len(states)} checkpoints, {out['step']} steps, "
          f"{out['elapsed'] / 3600:.2f} h of training")


if __name__ == "__main__":
    main()
