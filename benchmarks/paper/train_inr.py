"""Train a hyper-network INR (anr | transinr | ipc) on CelebA faces and measure test PSNR.

    python benchmarks/paper/train_inr.py --head anr --steps 3000 --out benchmarks/paper/results/p1-anr.json

Data: 64x64 center crops of the 89x109 faces (faces.py), first 2,700 train / last 300 test.
With --train-res R < 64 the face is area-downscaled to R x R for both the encoder input and
the target; the model is then also queried at 2R and 4R (up to 64) against the true area
downscales (and the 64x64 crop), next to a bicubic upscale of the R x R input.

Training: reconstruction MSE, Adam, fixed seed, linear warm-up then cosine decay to 10 %,
random horizontal flips. Each step supervises --queries random pixels per face (default
512 of 4096 at 64x64, as Trans-INR/IPC-style trainers subsample pixels: the encoder still sees
the whole face, and a CPU step stays cheap; all pixels when the image has fewer), with
the paper's variational coordinates unless --no-jitter: each query moves by Gaussian noise
of sigma 0.3 x half a pixel, clipped to +-half a pixel, while its target stays that pixel.

Output JSON: config, parameter counts, steps, wall seconds, s/step, the learning curve
[(step, test PSNR)], final numbers; for --train-res < 64 also NAME.png next to it (test faces:
input, bicubic x4, model x4, ground truth). Test PSNR = mean over the test faces of the
per-face RGB PSNR on [0, 1] values (predictions clipped, not rounded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faces  # noqa: E402
from inr_models import HEADS, HyperINR, pixel_centers  # noqa: E402

JITTER_SIGMA = 0.3  # in units of half a pixel, as in the paper


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--head", choices=HEADS, required=True)
    ap.add_argument("--threshold", type=float, default=0.01, help="ANR softmax threshold (0 = plain softmax)")
    ap.add_argument("--no-jitter", action="store_true", help="query pixel centres only (no variational coordinates)")
    ap.add_argument("--train-res", type=int, default=64, choices=(8, 16, 32, 64))
    ap.add_argument("--tokens", type=int, default=64, help="patch tokens (square grid): 16, 64, 256")
    ap.add_argument("--token-dim", type=int, default=64, help="ANR data-token dimension")
    ap.add_argument("--ipc-layer", type=int, default=1,
                    help="IPC: the instance-specific linear layer (1 = ginr-ipc's choice; 0 = the input layer)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=512, help="supervised pixels per face and step (0 = all)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    ap.add_argument("--limit-test", type=int, default=0, help="evaluate on the first N test faces only (smoke tests)")
    # One thread by default: on a shared 2-core machine a 2-thread OpenMP step was measured
    # up to 17x slower than 1 thread (threads wait on each other when one is descheduled);
    # use 2 on an idle machine, or run two 1-thread experiments side by side (run_all.sh JOBS=2).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--faces", default=str(faces.DEFAULT_FACES), help="folder of the 89x109 CelebA JPEGs")
    ap.add_argument("--out", required=True, help="result JSON (NAME.json; NAME.png beside it for SR runs)")
    return ap.parse_args(argv)


@torch.no_grad()
def evaluate(model, test_in: torch.Tensor, targets: dict[int, torch.Tensor], batch: int = 25) -> dict[int, float]:
    """Mean test PSNR when querying each resolution in `targets` ({res: (N, 3, res, res)})."""
    model.eval()
    psnrs = {r: [] for r in targets}
    for s in range(0, len(test_in), batch):
        z = model.encode(test_in[s:s + batch])
        for r, tgt in targets.items():
            psnrs[r].append(faces.psnr(model.render(z, r), tgt[s:s + batch]))
    model.train()
    return {r: float(torch.cat(v).mean()) for r, v in psnrs.items()}


def lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def save_grid(path: Path, rows: list[list[torch.Tensor]], zoom: int = 2) -> None:
    """Rows of (3, S, S) tiles in [0, 1] -> one PNG, tiles enlarged by nearest `zoom`."""
    from PIL import Image
    gap = 2
    tiles = [[(t.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for t in row] for row in rows]
    s = tiles[0][0].shape[0] * zoom
    h, w = len(tiles) * (s + gap) + gap, len(tiles[0]) * (s + gap) + gap
    canvas = np.full((h, w, 3), 255, np.uint8)
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            t = t.repeat(zoom, 0).repeat(zoom, 1)
            canvas[gap + i * (s + gap):gap + i * (s + gap) + s, gap + j * (s + gap):gap + j * (s + gap) + s] = t
    Image.fromarray(canvas).save(path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    res, jitter = args.train_res, not args.no_jitter

    train_u8, test_u8 = faces.split(faces.load_faces(args.faces))
    if args.limit_test:
        test_u8 = test_u8[:args.limit_test]
    train_in = faces.downscale(faces.to_tensor(train_u8), res).contiguous()
    test64 = faces.to_tensor(test_u8)
    test_in = faces.downscale(test64, res)
    # Query resolutions: the train resolution and, for low-res training, 2x and 4x of it.
    query_res = [r for r in (res, 2 * res, 4 * res) if r <= 64]
    targets = {r: faces.downscale(test64, r) for r in query_res}

    head_kw = {"layer": args.ipc_layer} if args.head == "ipc" else {}
    model = HyperINR(args.head, res=res, tokens=args.tokens, token_dim=args.token_dim, threshold=args.threshold,
                     **head_kw)
    counts = model.param_counts()
    print(f"{out.stem}: {args.head}, {counts['total']:,} parameters "
          f"(encoder {counts['encoder']:,}, head {counts['head']:,})", file=sys.stderr)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.warmup))

    gen = torch.Generator().manual_seed(args.seed)
    centers = pixel_centers(res)
    n_pix = res * res
    q = n_pix if args.queries <= 0 else min(args.queries, n_pix)
    half = 1.0 / res  # half a pixel in [-1, 1] coordinates

    curve, losses = [], []
    t_train = t_eval = 0.0
    t_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        img = train_in[torch.randint(0, len(train_in), (args.batch,), generator=gen)]
        if not args.no_flip:
            flip = torch.rand(args.batch, generator=gen) < 0.5
            img = torch.where(flip[:, None, None, None], img.flip(-1), img)
        target = img.flatten(2).transpose(1, 2)                   # input and target coincide
        if q < n_pix:
            pix = torch.rand(args.batch, n_pix, generator=gen).argsort(1)[:, :q]
            target = target.gather(1, pix[..., None].expand(-1, -1, 3))
            xy = centers[pix]
        else:
            xy = centers.expand(args.batch, -1, -1)
        if jitter:
            noise = torch.randn(xy.shape, generator=gen) * (JITTER_SIGMA * half)
            xy = xy + noise.clamp(-half, half)
        loss = F.mse_loss(model(img, xy), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        t_train += time.perf_counter() - t0

        if step % args.eval_every == 0 or step == args.steps:
            t0 = time.perf_counter()
            p = evaluate(model, test_in, {res: targets[res]})[res]
            t_eval += time.perf_counter() - t0
            curve.append((step, round(p, 3)))
            print(f"  step {step:6d}  loss {np.mean(losses[-args.eval_every:]):.5f}  test PSNR {p:6.2f} dB  "
                  f"{t_train / step:.3f} s/step", file=sys.stderr)

    final = {"test_psnr": curve[-1][1], "train_loss_last100": float(np.mean(losses[-100:]))}
    if len(query_res) > 1:
        sr = evaluate(model, test_in, targets)
        for r in query_res[1:]:
            scale = r // res
            bic = F.interpolate(test_in, size=(r, r), mode="bicubic", align_corners=False)
            final[f"psnr_x{scale}"] = round(sr[r], 3)
            final[f"bicubic_x{scale}"] = round(faces.mean_psnr(bic, targets[r]), 3)
        png = out.with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        top = query_res[-1]
        with torch.no_grad():
            model.eval()
            k = min(6, len(test_in))
            dec = model.render(model.encode(test_in[:k]), top)
        nearest = F.interpolate(test_in[:k], size=(top, top), mode="nearest")
        bicubic = F.interpolate(test_in[:k], size=(top, top), mode="bicubic", align_corners=False)
        save_grid(png, [[nearest[i], bicubic[i], dec[i], targets[top][i]] for i in range(k)])
        final["png"] = png.name

    result = {
        "name": out.stem,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "faces", "threads")}
        | {"jitter": jitter, "queries_per_face": q, "query_res": query_res,
           "n_train": len(train_in), "n_test": len(test_in)},
        "params": counts,
        "steps": args.steps,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "train_s": round(t_train, 1),
        "eval_s": round(t_eval, 1),
        "s_per_step": round(t_train / args.steps, 4),
        "curve": curve,
        "final": final,
        "env": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                "machine": platform.machine()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)  # atomic: run_all.sh treats an existing JSON as a finished run
    print(f"{out.stem}: test PSNR {final['test_psnr']:.2f} dB"
          + "".join(f", {k} {v:.2f}" for k, v in final.items() if k.startswith(("psnr_x", "bicubic_x")))
          + f"; {result['wall_s']:.0f} s -> {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import check_checkout  # benchmarks/: train this checkout's anr_codec layers, no other
    check_checkout.require()
    main()
