"""Rate-distortion training of the variable-rate ANR codec.

    python -m anr_codec.train --data ../shared/data/train --out runs/main --steps 100000

Resumable (re-run the same command; `--init pretrained/anr.pt` starts from shipped
weights instead of from scratch), multi-process with `torchrun --nproc_per_node N`
(DistributedDataParallel; gloo on CPU, nccl on CUDA), mixed precision on CUDA.

Each sample draws a quality q with its own lambda: loss = lambda_q * 255^2 * MSE + bpp.
A fraction of the batches trains super-resolution: the encoder sees a crop downscaled by
a factor in [1, 4] and the decoder is supervised at random full-resolution points, with
the paper's variational (jittered) coordinates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .data import CropSampler, build_cache, cache_exists, downscale
from .model import CONV_TOKENS, V1_DESIGN, AnrModel, ModelConfig


class RDLoss(nn.Module):
    """Wraps the model so DistributedDataParallel sees one forward() for a whole batch."""

    def __init__(self, model: AnrModel, grid_jitter: bool = True):
        super().__init__()
        self.model = model
        self.grid_jitter = grid_jitter

    def forward(self, x, qi, points=None):
        lam = torch.tensor(self.model.config.lambdas, device=x.device)[qi]
        tokens, bits = self.model.forward_train(x, qi)
        n_px = x.shape[-2] * x.shape[-1]
        if points is None:
            x_hat = self.model.anr.render_grid(tokens, 1, jitter=self.grid_jitter)
            mse = ((x_hat.float() - x) ** 2).flatten(1).mean(1)
        else:
            xy, fp, target = points
            pred = self.model.anr.render_points(tokens, xy, fp, jitter=True)
            mse = ((pred.float() - target) ** 2).flatten(1).mean(1)
        bpp = bits / n_px
        loss = (lam * 255 ** 2 * mse + bpp).mean()
        return loss, mse.detach(), bpp.detach()


def draw_step(sampler: CropSampler, batch: int, size: int, n_qualities: int,
              sr_fraction: float, n_points: int):
    """Everything random about one step, on the CPU, from the sampler's one generator (so a
    prefetch thread can draw the next step while the current one computes).

    Returns (qi, uint8 crops, None) or, for a super-resolution step, (qi, uint8 HR crops
    of size*s for s in [1, 4], (iy, ix) random HR pixels per sample)."""
    qi = torch.from_numpy(sampler.rng.integers(0, n_qualities, batch))
    if sampler.rng.random() >= sr_fraction:
        return qi, sampler.batch_u8(batch, size), None
    s = float(sampler.rng.uniform(1.0, 4.0))
    hr_size = max(size, round(size * s))
    hr = sampler.batch_u8(batch, hr_size)
    g = torch.Generator().manual_seed(int(sampler.rng.integers(1 << 31)))
    iy = torch.randint(0, hr_size, (batch, n_points), generator=g)
    ix = torch.randint(0, hr_size, (batch, n_points), generator=g)
    return qi, hr, (iy, ix)


def step_inputs(drawn, size: int, device):
    """Move a drawn step to the device -> (qi, encoder input, points or None).

    For SR steps the encoder sees the HR crop downscaled to size x size and the decoder is
    supervised at the drawn HR pixels: points = (xy in LR pixels, footprint, target RGB)."""
    qi, pixels, hr_points = drawn
    qi = qi.to(device, non_blocking=True)
    x = pixels.to(device, non_blocking=True).float().div_(255.0)
    if hr_points is None:
        return qi, x, None
    n, hr_size = x.shape[0], x.shape[-1]
    lr = downscale(x, (size, size))
    ratio = size / hr_size  # LR pixels per HR pixel
    iy, ix = (t.to(device, non_blocking=True) for t in hr_points)
    xy = torch.stack([(ix + 0.5) * ratio, (iy + 0.5) * ratio], -1)
    b = torch.arange(n, device=device)[:, None]
    target = x[b, :, iy, ix]  # (n, P, 3)
    fp = torch.tensor([ratio, ratio], device=device)
    return qi, lr, (xy, fp, target)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m anr_codec.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/data/train")],
                   help="folders of training images (never Kodak or sr/)")
    p.add_argument("--cache", type=Path, default=Path(".cache/train-pixels"))
    p.add_argument("--out", type=Path, default=Path("runs/main"), help="checkpoint and log folder")
    p.add_argument("--init", type=Path, help="start from these weights (a checkpoint or exported model)")
    p.add_argument("--steps", type=int, default=None,
                   help="total steps, counting resumed or --init ones (default: 100,000, or no "
                        "step limit when --minutes sets a time budget)")
    p.add_argument("--minutes", type=float, default=0, help="stop after this wall time (0 = no limit)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-drops", type=str, default="", help="comma-separated steps where lr drops 10x")
    p.add_argument("--new-lr", type=float, default=None,
                   help="lr of the weights --init lacks, such as a block grown by --config (default: "
                        "--lr); the schedule scales it as it scales --lr. A zero-initialised block "
                        "barely moves at the small lr that suits trained weights")
    p.add_argument("--anneal-minutes", type=float, default=0,
                   help="with --minutes: run the last this-many minutes at lr/10 (a time budget "
                        "does not know its final step, so the drop is timed)")
    p.add_argument("--sr-fraction", type=float, default=0.2)
    p.add_argument("--sr-points", type=int, default=2048)
    p.add_argument("--no-grid-jitter", dest="grid_jitter", action="store_false",
                   help="query scale-1 batches at the pixel centres (super-resolution batches keep "
                        "the variational coordinates)")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast on a CPU too, as always on CUDA (coordinates, latent and "
                        "entropy model stay float32): steps ~1.6x faster on CPUs with AVX-512 BF16; "
                        "ignored (float32) on CPUs without native bfloat16")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the ANR renderer (~1 min to compile; its per-pixel attention "
                        "then runs ~2x faster on a CPU, as fused loops instead of broadcasts)")
    p.add_argument("--config", default="", help="model options for a new run, e.g. "
                   "'token_dim=32,mlp_hidden=96' (ModelConfig fields; ignored when resuming); 'v1' "
                   "selects anr-v1's design, 'conv' anr-v2's (the default), e.g. 'v1,token_res8=3'")
    args = p.parse_args(argv)
    if args.steps is None:
        # A time budget alone decides: a fixed default count would stop at once when the
        # weights started from (the shipped model, say) are already past it.
        args.steps = math.inf if args.minutes else 100_000
    return args


def parse_config(text: str) -> dict:
    """'a=1,b=0.5' -> {'a': 1, 'b': 0.5}, typed by the ModelConfig field's default; the
    words 'conv' and 'v1' stand for the conv-token design's (anr-v2, the default) and
    anr-v1's fields (model.CONV_TOKENS, model.V1_DESIGN)."""
    defaults = ModelConfig().to_dict()
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if item in ("conv", "v1"):
            out.update(CONV_TOKENS if item == "conv" else V1_DESIGN)
            continue
        key, _, value = item.partition("=")
        if key not in defaults or isinstance(defaults[key], list):
            raise SystemExit(f"--config: unknown or unsupported field {key!r}")
        kind = type(defaults[key])
        out[key] = bool(int(value)) if kind is bool else kind(value)
    return out


def lr_at(step: int, base: float, drops: list[int], fresh_steps: int | None = None) -> float:
    """Warm-up over the first 500 steps of training, and again over the first 200 steps
    after Adam restarts from zero moments on trained weights (`fresh_steps` counts them):
    its first steps move every weight by about lr at once, whatever its gradient."""
    warm = min(1.0, (step + 1) / 500)
    if fresh_steps is not None:
        warm = min(warm, (fresh_steps + 1) / 200)
    return base * warm * 0.1 ** sum(step >= d for d in drops)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: a build without it says no
        return False


def use_bf16_autocast(device_type: str, requested: bool, native_bf16=cpu_has_native_bf16) -> bool:
    """Always on CUDA; on a CPU only when asked and the CPU has native bfloat16. Without it
    (an AVX2-only CPU) bf16 convolutions are emulated: steps measured over 10 s against
    ~1.1 s in float32, so `--bf16` falls back to float32 there rather than crawl."""
    if device_type == "cuda":
        return True
    return requested and native_bf16()


def rng_snapshot(sampler_state: dict, device: torch.device) -> dict:
    """This process's random streams at a step boundary: the crop sampler's (as it was before
    the prefetched next step was drawn) and torch's (the quantisation noise)."""
    snap = {"sampler": sampler_state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        snap["cuda"] = torch.cuda.get_rng_state(device)
    return snap


def restore_rng(state: dict, rank: int, world: int, sampler: CropSampler, seed: int,
                device: torch.device) -> str | None:
    """Continue this process's random streams from a checkpoint, so that a resumed run draws
    the crops and noise an uninterrupted one would. Returns a warning where it cannot."""
    snaps = state.get("rng")
    if snaps is not None and len(snaps) == world:
        snap = snaps[rank]
        sampler.set_state(snap["sampler"])
        torch.set_rng_state(snap["torch"])
        if device.type == "cuda" and "cuda" in snap:
            torch.cuda.set_rng_state(snap["cuda"], device)
        return None
    if snaps is None and "sampler" in state and world == 1:  # older checkpoints: crops only
        sampler.set_state(state["sampler"])
        return None
    # Streams saved by another number of processes, or by older multi-process runs (which
    # kept none), cannot be continued. Restarting from --seed would replay the crops of the
    # run's first steps, so start fresh streams keyed by the step instead.
    crops, noise = np.random.SeedSequence([seed, rank, int(state["step"])]).spawn(2)
    sampler.reseed(crops)
    torch.manual_seed(int(noise.generate_state(1)[0]))
    saved = f"{len(snaps)} processes" if snaps is not None else "no per-process streams"
    return f"the checkpoint holds {saved}, this run {world}: crops and noise start fresh streams"


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> None:
    args = parse_args(argv)
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    main_proc = rank == 0
    args.out.mkdir(parents=True, exist_ok=True)

    if main_proc and not cache_exists(args.cache):
        print(f"building pixel cache in {args.cache} ...", file=sys.stderr)
        build_cache(args.data, args.cache)
    if distributed:
        # Every rank waits here, whatever it saw: a rank that checked the cache only after
        # rank 0 had built it would skip a conditional barrier and deadlock rank 0 in it.
        dist.barrier()
    torch.manual_seed(args.seed + rank)
    sampler = CropSampler(args.cache, seed=args.seed + 1000 * rank)

    ckpt_path, opt_path = args.out / "last.pt", args.out / "last-opt.pt"
    state = None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if "opt" not in state and opt_path.exists():  # optimizer state lives beside the weights
            state.update(torch.load(opt_path, map_location="cpu", weights_only=True))
        config = ModelConfig.from_dict(state["config"])
    elif args.init:
        init = torch.load(args.init, map_location="cpu", weights_only=True)
        config = ModelConfig.from_dict(init["config"])
    else:
        config = ModelConfig()
    if state is None and args.config:
        config = ModelConfig.from_dict({**config.to_dict(), **parse_config(args.config)})
    model = AnrModel(config)
    step, elapsed = 0, 0.0
    restarted = False  # Adam starts from zero moments on weights that are already trained
    new_names: list[str] = []  # weights --init lacked: they get --new-lr, now and on resume
    if state is None and args.init:
        missing = model.load_state_dict(init["model"], strict=False)
        if main_proc and (missing.missing_keys or missing.unexpected_keys):
            print(f"init: {missing}", file=sys.stderr)
        params = dict(model.named_parameters())
        new_names = sorted(k for k in missing.missing_keys if k in params)
        # Continue the step count (and so the lr schedule) of the weights we start from.
        step, elapsed = int(init.get("step", 0)), float(init.get("elapsed", 0.0))
        restarted = step > 0
    model.to(device)
    if args.compile:
        # Only the renderer: the networks around it gained nothing from compiling (measured).
        # The compiled functions sit on the instance, so weights and checkpoints are unchanged.
        model.anr.render_grid = torch.compile(model.anr.render_grid)
        model.anr.render_points = torch.compile(model.anr.render_points)

    aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    if state is not None:
        new_names = list(state.get("new_params", []))  # older checkpoints: one group
    main_named = [(n, p) for n, p in model.named_parameters() if not n.endswith("quantiles")]
    main_params = [p for _, p in main_named]
    groups = [[p for n, p in main_named if n not in new_names]]
    base_lrs = [args.lr]
    if new_names:
        groups.append([p for n, p in main_named if n in new_names])
        base_lrs.append(args.lr if args.new_lr is None else args.new_lr)
    elif args.new_lr is not None and main_proc:
        print("--new-lr ignored: the run has no weights that --init lacked", file=sys.stderr)
    opt = torch.optim.Adam([{"params": g} for g in groups], lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    if state is not None:
        model.load_state_dict(state["model"])
        if "opt" in state:
            opt.load_state_dict(state["opt"])
            aux_opt.load_state_dict(state["aux_opt"])
        else:
            restarted = True
            if main_proc:
                print("no optimizer state found: Adam restarts from zero moments", file=sys.stderr)
        step, elapsed = state["step"], state["elapsed"]
        warning = restore_rng(state, rank, world, sampler, args.seed, device)
        if warning and main_proc:
            print(warning, file=sys.stderr)
        if main_proc:
            print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)

    if step >= args.steps:
        raise SystemExit(f"nothing to train: the weights are at step {step} and --steps is "
                         f"{args.steps}; raise --steps (it counts the steps already done)")

    loss_mod = RDLoss(model, args.grid_jitter)
    if distributed:
        # The priors' quantiles learn only from the auxiliary loss, outside DDP's forward:
        # DDP must not reduce them; their gradients are averaged by hand below.
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            loss_mod, [f"model.{n}" for n, _ in model.named_parameters() if n.endswith("quantiles")])
        loss_mod = nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # qualities absent from a batch leave priors unused
    use_amp = use_bf16_autocast(device.type, args.bf16)
    if args.bf16 and not use_amp and main_proc:
        print("--bf16 ignored: this CPU has no native bfloat16 (no AVX-512 BF16 or AMX), "
              "where it steps ~10x slower than float32", file=sys.stderr)
    if use_amp:
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuned convolutions pay off
    drops = [int(s) for s in args.lr_drops.split(",") if s.strip()]

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("flag", True))

    def checkpoint():
        # Weights and optimizer state in two files: each stays small enough to travel.
        before, _ = pending.result()  # the drawing thread must not move the generator mid-save
        snap = rng_snapshot(before, device)
        snaps = [snap]
        if distributed:  # every rank draws its own crops and noise: keep all their streams
            snaps = [None] * world
            dist.all_gather_object(snaps, snap)
        if main_proc:
            save_atomic({"opt": opt.state_dict(), "aux_opt": aux_opt.state_dict()}, opt_path)
            save_atomic({"config": config.to_dict(), "model": model.state_dict(), "step": step,
                         "elapsed": elapsed, "rng": snaps, "new_params": new_names},
                        ckpt_path)

    of_total = f"/{args.steps}" if args.steps < math.inf else ""
    nq = model.n_qualities
    acc = {"n": 0, "loss": 0.0, "t": 0.0, "q": [[0, 0.0, 0.0] for _ in range(nq)], "sr": [0, 0.0]}
    log_f = open(args.out / "log.jsonl", "a") if main_proc else None
    t_start = time.time()
    is_tty = sys.stderr.isatty()
    # One thread draws the next step's crops while this one computes (on a GPU the crops
    # otherwise take a large part of the step). It owns the sampler's generator, so the
    # batch sequence stays fixed by the seed. Each draw keeps the generator's state from
    # before it, which the checkpoint saves, so a resumed run redraws the same next step.
    pin = device.type == "cuda"

    def draw():
        before = sampler.state()
        d = draw_step(sampler, args.batch, args.crop, nq, args.sr_fraction, args.sr_points)
        return before, ((d[0], d[1].pin_memory(), d[2]) if pin else d)

    prefetch = ThreadPoolExecutor(max_workers=1)
    pending = prefetch.submit(draw)
    first_step = step
    while step < args.steps:
        t0 = time.time()
        over = stop["flag"] or bool(args.minutes and t0 - t_start > args.minutes * 60)
        late = bool(args.minutes and t0 - t_start > (args.minutes - args.anneal_minutes) * 60)
        if distributed:
            # Clocks and signals differ between processes: they must agree, or one stops
            # (or anneals) while the others wait for it in the gradient all-reduce.
            flags = torch.tensor([over, late], dtype=torch.int32, device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            over, late = bool(flags[0]), bool(flags[1])
        if over:
            break
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = lr_at(step, base, drops, step - first_step if restarted else None) * (0.1 if late else 1.0)
        _, drawn = pending.result()
        pending = prefetch.submit(draw)
        qi, x, points = step_inputs(drawn, args.crop, device)
        is_sr = points is not None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, mse, bpp = loss_mod(x, qi, points)
        opt.zero_grad(set_to_none=True)
        aux_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, args.clip)
        opt.step()
        aux = model.aux_loss()
        aux.backward()
        if distributed:
            for p in aux_params:
                dist.all_reduce(p.grad)
                p.grad /= world
        aux_opt.step()
        step += 1
        dt = time.time() - t0
        elapsed += dt
        acc["n"] += 1
        acc["loss"] += loss.item()
        acc["t"] += dt
        psnr = -10 * torch.log10(mse.clamp_min(1e-10))
        if is_sr:
            acc["sr"][0] += 1
            acc["sr"][1] += psnr.mean().item()
        else:
            for q, p, b in zip(qi.tolist(), psnr.tolist(), bpp.tolist()):
                acc["q"][q][0] += 1
                acc["q"][q][1] += p
                acc["q"][q][2] += b
        if is_tty and main_proc:
            print(f"\rstep {step}{of_total} loss {loss.item():.4f} {dt:.2f}s/step", end="", file=sys.stderr)
        if step % args.log_every == 0 and main_proc:
            rec = {"step": step, "loss": acc["loss"] / acc["n"], "s_per_step": acc["t"] / acc["n"],
                   "lr": opt.param_groups[0]["lr"], "aux": aux.item(), "elapsed_s": round(elapsed),
                   "psnr": [round(a[1] / a[0], 2) if a[0] else None for a in acc["q"]],
                   "bpp": [round(a[2] / a[0], 4) if a[0] else None for a in acc["q"]],
                   "sr_psnr": round(acc["sr"][1] / acc["sr"][0], 2) if acc["sr"][0] else None}
            if len(base_lrs) > 1:
                rec["new_lr"] = opt.param_groups[1]["lr"]
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
            if not is_tty:
                print(json.dumps(rec), file=sys.stderr, flush=True)
            acc = {"n": 0, "loss": 0.0, "t": 0.0, "q": [[0, 0.0, 0.0] for _ in range(nq)], "sr": [0, 0.0]}
        if step % args.ckpt_every == 0:
            checkpoint()
        if not math.isfinite(loss.item()):
            raise SystemExit(f"loss is {loss.item()} at step {step}; resume from the last checkpoint")
    prefetch.shutdown()  # waits for the step being drawn
    checkpoint()
    if main_proc:
        print(f"\nstopped at step {step} ({elapsed / 3600:.2f} h of training)", file=sys.stderr)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
