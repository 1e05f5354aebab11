"""What `python -m anr_codec.train --cell-fraction F` costs and saves, without training.

    python benchmarks/cell_fraction.py [--model pretrained/anr-v2.pt] [--fractions 0.25,0.5]

Rendering a random share F of the token cells makes a step's MSE an unbiased estimate of
the whole crop's, so what it can cost is gradient noise. For the same batches this prints
(1) how close each share's gradient is to the whole-crop gradient of the same batch, and
(2) how close the whole-crop gradients of different batches are to each other, which is
the noise training at this batch size lives with anyway. When (1) is far closer than (2),
a step on a share of the cells is worth about a full step. It also prints the seconds of
one forward + backward pass of each (one thread, bfloat16 autocast as `--bf16` trains,
renderer not compiled), so the saving can be read against that noise.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch

from compare_checkpoints import load_checkpoint

from anr_codec.data import CropSampler, build_cache, cache_exists
from anr_codec.train import RDLoss


def gradient(loss_mod: RDLoss, params, x, qi, seed: int) -> tuple[torch.Tensor, float]:
    """-> (flattened gradient of the RD loss, seconds of forward + backward)."""
    torch.manual_seed(seed)    # the cells drawn, and the rate's noise
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = loss_mod(x, qi)
    # Qualities absent from a batch leave their priors out of the graph: zero gradient.
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    secs = time.perf_counter() - t0
    return torch.cat([(torch.zeros_like(q) if g is None else g).flatten().float()
                      for q, g in zip(params, grads)]), secs


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pretrained/anr-v2.pt", help="checkpoint or exported model")
    p.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/data/train")])
    p.add_argument("--cache", type=Path, default=Path(".cache/train-pixels"))
    p.add_argument("--fractions", default="0.25,0.5")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not cache_exists(a.cache):
        build_cache(a.data, a.cache)
    net, step = load_checkpoint(a.model)
    net.train()
    params = [q for n, q in net.named_parameters() if not n.endswith("quantiles")]
    fractions = [float(v) for v in a.fractions.split(",")]
    sampler = CropSampler(a.cache, seed=0)
    batches = []
    for _ in range(a.batches):
        qi = torch.from_numpy(sampler.rng.integers(0, net.n_qualities, a.batch))
        batches.append((sampler.batch_u8(a.batch, a.crop).float() / 255, qi))

    full, secs_full = [], []
    share = {f: ([], []) for f in fractions}   # cosines to the same batch's full gradient, seconds
    for i, (x, qi) in enumerate(batches):
        g, s = gradient(RDLoss(net, grid_jitter=False), params, x, qi, seed=i)
        full.append(g)
        secs_full.append(s)
        for f in fractions:
            gf, sf = gradient(RDLoss(net, grid_jitter=False, cell_fraction=f), params, x, qi, seed=i)
            share[f][0].append(cosine(g, gf))
            share[f][1].append(sf)
    between = [cosine(full[i], full[j]) for i, j in itertools.combinations(range(len(full)), 2)]

    def median(v):
        return sorted(v)[len(v) // 2]

    print(f"{a.model} (step {step}); {a.batches} batches of {a.batch} crops {a.crop}x{a.crop}, "
          f"{a.threads} thread(s)")
    print(f"whole crop: {median(secs_full):.2f} s per forward + backward (median)")
    print(f"  gradient cosine between different batches: mean {sum(between) / len(between):.3f} "
          f"(min {min(between):.3f}, max {max(between):.3f})")
    for f in fractions:
        cos, secs = share[f]
        print(f"cell fraction {f:g}: {median(secs):.2f} s per forward + backward "
              f"({median(secs_full) / median(secs):.2f}x faster)")
        print(f"  gradient cosine to the same batch's whole-crop gradient: mean {sum(cos) / len(cos):.3f} "
              f"(min {min(cos):.3f})")


if __name__ == "__main__":
    main()
