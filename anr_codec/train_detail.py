"""Training of the super-resolution head (anr_codec.detail) on a frozen codec.

    python -m anr_codec.train_detail --init pretrained/anr-v2.pt --out runs/sr --minutes 60

Each step takes training crops at a random scale s in [1.25, 4] (half of the steps at
s = 2, 3 or 4, the scales people ask for), downscales them with antialiased bicubic, codes
the small image at one quality (the top one for half of the steps: super-resolution
is asked of the best file), decodes it at scale 1 as 8-bit pixels, and supervises the
head at random full-resolution pixels. Only the head learns, so the codec's bits and its
scale-1 decode stay exactly those of the weights started from.

Resumable like anr_codec.train (re-run the same command); the checkpoint keeps the
codec's step count and adds the head's (`detail_step`), and exports with
anr_codec.export like any checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch

from .data import CropSampler, build_cache, cache_exists, downscale
from .detail import bicubic_at
from .metrics import psnr_from_mse
from .model import AnrModel, ModelConfig
from .train import save_atomic


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m anr_codec.train_detail", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", type=Path, required=True, help="the codec (a checkpoint or exported model)")
    p.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/data/train")],
                   help="folders of training images (never Kodak or sr/)")
    p.add_argument("--cache", type=Path, default=Path(".cache/train-pixels"))
    p.add_argument("--out", type=Path, default=Path("runs/detail"))
    p.add_argument("--blocks", type=int, default=4, help="residual blocks of a new head")
    p.add_argument("--width", type=int, default=64, help="channels of a new head")
    p.add_argument("--minutes", type=float, default=0, help="stop after this wall time (0 = no limit)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many head steps (0 = no limit)")
    p.add_argument("--anneal-minutes", type=float, default=0, help="last minutes at lr/10")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr-crop", type=int, default=48, help="side of the coded (small) crop, a multiple of 16")
    p.add_argument("--points", type=int, default=4096, help="supervised full-resolution pixels per sample")
    p.add_argument("--top-fraction", type=float, default=0.5, help="steps coded at the top quality")
    p.add_argument("--integer-fraction", type=float, default=0.5,
                   help="steps at one of --scales (the others draw a scale in [1.25, 4])")
    p.add_argument("--scales", default="2,3,4", help="the integer scales those steps draw from")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=250)
    args = p.parse_args(argv)
    if args.lr_crop % 16:
        p.error("--lr-crop must be a multiple of 16")
    args.scales = [int(v) for v in args.scales.split(",")]
    return args


def load_codec(args) -> tuple[AnrModel, dict]:
    """The codec with a head (a new one when the weights have none) and the state to resume."""
    ckpt = args.out / "last.pt"
    state = torch.load(ckpt if ckpt.exists() else args.init, map_location="cpu", weights_only=True)
    config = ModelConfig.from_dict(state["config"])
    if not config.detail_blocks:
        config = ModelConfig.from_dict({**config.to_dict(), "detail_blocks": args.blocks,
                                        "detail_width": args.width})
    net = AnrModel(config)
    result = net.load_state_dict({k: v.float() for k, v in state["model"].items()}, strict=False)
    if result.unexpected_keys or any(not k.startswith("detail.") for k in result.missing_keys):
        raise SystemExit(f"{args.init} does not fit the codec: {result}")
    net.eval().requires_grad_(False)
    net.detail.train().requires_grad_(True)
    return net, state


def draw(sampler: CropSampler, args, n_qualities: int):
    """One step's random choices -> (quality index, HR uint8 crops, (iy, ix) points)."""
    rng = sampler.rng
    s = float(rng.choice(args.scales)) if rng.random() < args.integer_fraction else float(rng.uniform(1.25, 4.0))
    hr_size = round(args.lr_crop * s)
    qi = n_qualities - 1 if rng.random() < args.top_fraction else int(rng.integers(0, n_qualities))
    hr = sampler.batch_u8(args.batch, hr_size)
    iy = torch.from_numpy(rng.integers(0, hr_size, (args.batch, args.points)))
    ix = torch.from_numpy(rng.integers(0, hr_size, (args.batch, args.points)))
    return qi, hr, (iy, ix)


@torch.no_grad()
def scale1_decode(net: AnrModel, lr: torch.Tensor, qi: int):
    """What a decoder has: the 8-bit scale-1 decode of lr and the coding tokens."""
    tokens = net.tokens(net.estimate(lr, qi)[0], qi)
    dec = net.anr.render_grid(tokens, 1).clamp(0, 1)
    return torch.round(dec * 255) / 255, tokens


def step_loss(net: AnrModel, drawn, lr_crop: int):
    """-> (MSE of the head, MSE of bicubic alone) at the drawn points."""
    qi, hr_u8, (iy, ix) = drawn
    dev = net.log_gain.device
    hr, iy, ix = hr_u8.to(dev).float() / 255, iy.to(dev), ix.to(dev)
    n, size = hr.shape[0], hr.shape[-1]
    lr = torch.round(downscale(hr, (lr_crop, lr_crop)) * 255) / 255   # users' small images are 8-bit
    dec, tokens = scale1_decode(net, lr, qi)
    ratio = lr_crop / size
    xy = torch.stack([(ix + 0.5) * ratio, (iy + 0.5) * ratio], -1).float()
    target = hr[torch.arange(n, device=dev)[:, None], :, iy, ix]
    base = bicubic_at(dec, xy)   # no gradient: dec comes from the frozen codec
    head = net.detail
    pred = base + head.residual_at(head.detail_tokens(dec, tokens), xy, torch.tensor([ratio, ratio], device=dev))
    return ((pred - target) ** 2).mean(), ((base - target) ** 2).mean()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not cache_exists(args.cache):
        print(f"building pixel cache in {args.cache} ...", file=sys.stderr)
        build_cache(args.data, args.cache)
    torch.manual_seed(args.seed)
    net, state = load_codec(args)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(args.device)
    sampler = CropSampler(args.cache, seed=args.seed)
    params = list(net.detail.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    step, seconds = int(state.get("detail_step", 0)), float(state.get("detail_seconds", 0.0))
    opt_path = args.out / "last-opt.pt"
    if "detail_step" in state and opt_path.exists():
        extra = torch.load(opt_path, map_location="cpu", weights_only=True)
        opt.load_state_dict(extra["opt"])
        sampler.set_state(extra["sampler"])
        print(f"resumed at head step {step}", file=sys.stderr)

    def checkpoint():
        save_atomic({"opt": opt.state_dict(), "sampler": sampler.state()}, opt_path)
        save_atomic({"config": net.config.to_dict(), "model": net.state_dict(), "step": state.get("step", 0),
                     "elapsed": state.get("elapsed", 0.0), "detail_step": step, "detail_seconds": seconds},
                    args.out / "last.pt")

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("flag", True))
    log = open(args.out / "log.jsonl", "a")
    acc = [0, 0.0, 0.0, 0.0]
    t_start, first = time.time(), step
    while not stop["flag"]:
        t0 = time.time()
        if args.minutes and t0 - t_start > args.minutes * 60:
            break
        if args.steps and step - first >= args.steps:
            break
        late = bool(args.minutes and t0 - t_start > (args.minutes - args.anneal_minutes) * 60)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 200) * (0.1 if late else 1.0)
        mse, base = step_loss(net, draw(sampler, args, net.n_qualities), args.lr_crop)
        opt.zero_grad(set_to_none=True)
        mse.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        seconds += time.time() - t0
        acc = [acc[0] + 1, acc[1] + psnr_from_mse(mse.item(), 1.0), acc[2] + psnr_from_mse(base.item(), 1.0),
               acc[3] + time.time() - t0]
        if not math.isfinite(mse.item()):
            raise SystemExit(f"loss is {mse.item()} at step {step}; resume from the last checkpoint")
        if step % args.log_every == 0:
            rec = {"step": step, "psnr": round(acc[1] / acc[0], 3), "bicubic_psnr": round(acc[2] / acc[0], 3),
                   "gain_db": round((acc[1] - acc[2]) / acc[0], 3), "s_per_step": round(acc[3] / acc[0], 3),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(seconds)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), file=sys.stderr, flush=True)
            acc = [0, 0.0, 0.0, 0.0]
        if step % args.ckpt_every == 0:
            checkpoint()
    checkpoint()
    print(f"stopped at head step {step} ({seconds / 3600:.2f} h)", file=sys.stderr)


if __name__ == "__main__":
    main()
