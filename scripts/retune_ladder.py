"""Move quality levels of a trained model along its rate axis, or add new ones below, without retraining.

    python scripts/retune_ladder.py IN.pt OUT.pt --set 5=mid --set 1=x0.6 [--data ../shared/data/train]
    python scripts/retune_ladder.py IN.pt --set 1=x0.6      # measure only, write nothing
    python scripts/retune_ladder.py IN.pt OUT.pt --extend-below 0.7071 --extend-below 0.7071

A quality level is a per-channel gain on the latent (a finer or coarser quantiser) plus
its lambda. The hyperprior predicts the *unscaled* latent's mean and scale and the gain
only rescales them (hyperprior.HyperPrior.params), and the decoder sees y_hat / gain, so a
gain that no quality was trained with still codes honestly and decodes sensibly; only how
good that rate point is needs measuring. Why: training leaves the ladder uneven (anr-v2's
quality 6 codes smaller than quality 5, and its lowest rate is ~0.24 bpp, not ~0.1).

- `Q=xK` multiplies quality Q's gain by K (K < 1: coarser, fewer bits);
- `Q=mid` puts it halfway (in log gain) between qualities Q-1 and Q+1.
The lambda of a moved quality follows its gain (the trained gains scale about like
sqrt(lambda)), so training on from OUT keeps the new ladder instead of pulling it back.
The z side (its gain and factorized prior) is that of the quality's old self: its bits
are a few percent of the total.

`--extend-below K` adds a new lowest quality with quality 1's gain times K (and its lambda
times K^2), renumbering the others one up, the default quality with them; its z side is a
copy of quality 1's. Repeated, each new level goes below the last. An untrained level is a
poor rate point (docs/training-notes.md), so this starts a training run, not a release.

Before and after, prints each quality's PSNR and estimated bpp on compare_checkpoints'
training crops (never Kodak: retuning on the evaluation set would be tuning on it).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from anr_codec.model import AnrModel, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_checkpoints import crops, ladder_line, load_checkpoint, summary  # noqa: E402


def parse_move(text: str) -> tuple[int, str]:
    q, _, how = text.partition("=")
    try:
        factor_ok = how.startswith("x") and float(how[1:]) > 0
    except ValueError:
        factor_ok = False
    if not q.isdigit() or not (how == "mid" or factor_ok):
        raise argparse.ArgumentTypeError(f"expected Q=mid or Q=xK with K > 0, got {text!r}")
    return int(q), how


def retune(net, moves: list[tuple[int, str]]) -> None:
    """Apply the moves in order, in place (qualities are 1-based)."""
    lambdas = list(net.config.lambdas)
    with torch.no_grad():
        for q, how in moves:
            qi = q - 1
            if not 0 <= qi < net.n_qualities:
                raise SystemExit(f"quality {q} out of 1..{net.n_qualities}")
            if how == "mid":
                if not 0 < qi < net.n_qualities - 1:
                    raise SystemExit(f"quality {q} has no neighbour on both sides")
                net.log_gain[qi] = (net.log_gain[qi - 1] + net.log_gain[qi + 1]) / 2
                lambdas[qi] = math.sqrt(lambdas[qi - 1] * lambdas[qi + 1])
            else:
                k = float(how[1:])
                net.log_gain[qi] += math.log(k)
                lambdas[qi] *= k * k
    net.config.lambdas = tuple(lambdas)


def extend_below(net: AnrModel, factors: list[float]) -> AnrModel:
    """A copy of `net` with one new lowest quality per factor (applied in order), the old
    qualities unchanged but numbered len(factors) higher."""
    n = len(factors)
    lambdas, log_gain = list(net.config.lambdas), net.log_gain.detach()
    for k in factors:
        lambdas.insert(0, lambdas[0] * k * k)
        log_gain = torch.cat([log_gain[:1] + math.log(k), log_gain])
    config = ModelConfig.from_dict({**net.config.to_dict(), "lambdas": lambdas,
                                    "default_quality": net.config.default_quality + n})
    new = AnrModel(config)
    state = {}
    for key, value in net.state_dict().items():
        prefix, index, rest = _per_quality(key)
        if key == "log_gain":
            state[key] = log_gain
        elif key == "hyper.z_log_gain":
            state[key] = torch.cat([value[:1].repeat(n, 1), value])
        elif prefix is not None:
            # Per-quality prior modules: the new levels start as copies of quality 1's.
            for i in (range(n + 1) if index == 0 else [index + n]):
                state[f"{prefix}.{i}.{rest}"] = value.clone()
        else:
            state[key] = value
    new.load_state_dict(state)
    return new.eval()


def _per_quality(key: str) -> tuple[str | None, int, str]:
    """'hyper.z_priors.3.biases.0' -> ('hyper.z_priors', 3, 'biases.0'); else (None, -1, '')."""
    for prefix in ("hyper.z_priors", "priors"):
        if key.startswith(prefix + "."):
            index, _, rest = key[len(prefix) + 1:].partition(".")
            return prefix, int(index), rest
    return None, -1, ""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="training checkpoint or exported model")
    p.add_argument("dst", nargs="?", help="where to write the retuned checkpoint (omit to measure only)")
    p.add_argument("--set", dest="moves", type=parse_move, action="append", default=[],
                   help="Q=mid or Q=xK; repeatable, applied in order (after any --extend-below)")
    p.add_argument("--extend-below", dest="extend", type=float, action="append", default=[], metavar="K",
                   help="add a quality below quality 1 with its gain times K (0 < K < 1); repeatable")
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--size", default="384x320", help="centre crop WxH of the measuring crops")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if not a.moves and not a.extend:
        p.error("give --set or --extend-below")
    if any(not 0 < k < 1 for k in a.extend):
        p.error("--extend-below takes a factor between 0 and 1")
    torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.size.lower().split("x"))
    images = crops(a.data, w, h)
    net, step = load_checkpoint(a.src)
    print(f"{a.src} (step {step}): {ladder_line(summary(net, images))}", flush=True)
    if a.extend:
        net = extend_below(net, a.extend)
    retune(net, a.moves)
    moved = " ".join([f"below x{k:g}" for k in a.extend] + [f"{q}={how}" for q, how in a.moves])
    print(f"retuned {moved}: {ladder_line(summary(net, images))}", flush=True)
    print("lambdas " + " ".join(f"{v:.4g}" for v in net.config.lambdas))
    if a.dst:
        src = torch.load(a.src, map_location="cpu", weights_only=True)
        # Weights, config and step count only: an exported model's coding tables and a
        # checkpoint's Adam moments belong to the old gains (export and --init rebuild them).
        state = {k: src[k] for k in ("step", "elapsed") if k in src}
        torch.save({**state, "config": net.config.to_dict(), "model": net.state_dict()}, a.dst)
        print(f"wrote {a.dst}")


if __name__ == "__main__":
    main()
