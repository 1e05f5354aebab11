"""Pick between training checkpoints without looking at Kodak.

    python benchmarks/compare_checkpoints.py A.pt B.pt ... [--data ../shared/data/train]
    python benchmarks/compare_checkpoints.py A.pt B.pt ... --faces ../shared/data/faces/celeba_89x109

Every checkpoint codes the same fixed centre crops of training images (every 4th
Wikipedia PNG and every 20th BSDS500 test JPEG, 10 of each) with real rounding and no
coordinate jitter. With `--faces`, it codes images no training run has seen instead: 20
mosaics of 4 x 3 CelebA faces (352x320 after the centre crop), which tell a gain that
carries over to new images from one that only fits the training set. Printed per
checkpoint: PSNR (of the mean MSE) and estimated bpp (from the prior's likelihoods) at
every quality, the mean RD loss lambda * 255^2 * MSE + bpp over the qualities (the
quantity training minimises), and, from the second checkpoint on, BD-rate and BD-PSNR
against the first. The RD loss is dominated by the top qualities' large lambdas, so it
also rewards a move along the curve there (more bits for more PSNR); BD-rate asks
whether the curve itself moved, which is what Kodak's BD-rate will ask. With
`--sr`, also super-resolution at the top quality on 256x256 centre crops of the same
images, as `anrc eval-sr` measures it (Pillow-bicubic LR, Y-PSNR with the border shaved):
decoded straight at x2 / x4 against decoded at x1 and upscaled bicubically. Kodak and the
SR sets stay for the final evaluation of the one that is shipped. A model with a
super-resolution head (anr_codec.detail) decodes at x2 / x4 through it, as the codec does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from capacity import crop_tensor, load_crop, quantisation_table

from anr_codec.detail import upscale
from anr_codec.metrics import bd_psnr, bd_rate, psnr_from_mse, psnr_y
from anr_codec.model import AnrModel, ModelConfig
from anr_codec.tiling import to_uint8


def paths(data: Path) -> list[Path]:
    found = (sorted((data / "wikipedia").glob("*.png"))[::4][:10]
             + sorted((data / "bsds500" / "test").glob("*.jpg"))[::20][:10])
    if not found:
        # A wrong relative --data (these scripts run from the repo root or from benchmarks/)
        # would otherwise give an empty, silent run.
        raise SystemExit(f"no training images under {data} (wikipedia/*.png, bsds500/test/*.jpg)")
    return found


def crops(data: Path, width: int, height: int) -> list[torch.Tensor]:
    return [load_crop(str(p), width, height) for p in paths(data)]


FACE_GRID = (4, 3)   # faces per mosaic row, rows


def face_mosaics(folder: Path, count: int = 20) -> list[torch.Tensor]:
    """`count` mosaics of 4 x 3 same-size faces (the first 12 * count files in name order),
    centre-cropped to multiples of 16, as (1, 3, H, W) in [0, 1]."""
    cols, rows = FACE_GRID
    files = sorted(folder.glob("*.jpg"))[:cols * rows * count]
    if len(files) < cols * rows * count:
        raise SystemExit(f"{folder}: {len(files)} faces (*.jpg), {cols * rows * count} needed")
    out = []
    for m in range(count):
        faces = [np.array(Image.open(f).convert("RGB")) for f in files[m * cols * rows:(m + 1) * cols * rows]]
        grid = np.concatenate([np.concatenate(faces[r * cols:(r + 1) * cols], 1) for r in range(rows)], 0)
        out.append(crop_tensor(Image.fromarray(grid), grid.shape[1], grid.shape[0]))
    return out


def load_checkpoint(path: str) -> tuple[AnrModel, int | None]:
    """A training checkpoint or an exported model -> (model, its step count)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = AnrModel(ModelConfig.from_dict(state["config"]))
    net.load_state_dict(state["model"])
    return net.eval(), state.get("step")


def summary(net: AnrModel, images: list[torch.Tensor]) -> dict:
    rows = [[(r["bpp"], r["mse_rounded"]) for r in quantisation_table(net, x, unrounded=False)] for x in images]
    tab = np.array(rows)  # (images, qualities, 2)
    bpp, mse = tab[..., 0].mean(0), tab[..., 1].mean(0)
    loss = [lam * 255 ** 2 * m + b for lam, m, b in zip(net.config.lambdas, mse, bpp)]
    return {"psnr": [psnr_from_mse(m, 1.0) for m in mse], "bpp": bpp.tolist(), "mean_loss": float(np.mean(loss))}


def ladder_line(s: dict) -> str:
    """A summary's per-quality PSNR and bpp, on one line."""
    return f"PSNR {' '.join(f'{v:.2f}' for v in s['psnr'])} | bpp {' '.join(f'{v:.3f}' for v in s['bpp'])}"


def curve_shift(anchor: dict, test: dict) -> str:
    """BD-rate and BD-PSNR of one summary's ladder against another's (n/a where a ladder
    is not monotone or the two do not overlap in rate)."""
    rate = bd_rate(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"])
    gain = bd_psnr(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"])
    return (f"BD-rate {'n/a' if rate is None else f'{rate:+.2f} %'}, "
            f"BD-PSNR {'n/a' if gain is None else f'{gain:+.3f} dB'}")


def sr_summary(net: AnrModel, images: list[torch.Tensor], scales=(2, 4)) -> dict:
    """scale -> (mean Y-PSNR decoded at the scale, mean Y-PSNR decoded at x1 + bicubic)."""
    qi = net.n_qualities - 1
    originals = [to_uint8(x[0]) for x in images]
    out = {}
    for s in scales:
        direct, bicubic = [], []
        for ref in originals:
            hr = Image.fromarray(ref)
            lr = hr.resize((hr.width // s, hr.height // s), Image.Resampling.BICUBIC)
            with torch.no_grad():
                tokens = net.tokens(net.estimate(torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float() / 255, qi)[0], qi)
                at_one = to_uint8(net.anr.render_grid(tokens, 1)[0])
                if net.detail is not None:  # what Codec.decode does above the coded size
                    at_scale = upscale(net.detail, at_one, tokens, hr.width, hr.height, 1 << 16)
                else:
                    at_scale = to_uint8(net.anr.render_grid(tokens, s)[0])
            direct.append(psnr_y(ref, at_scale, s))
            bicubic.append(psnr_y(ref, np.array(Image.fromarray(at_one).resize(hr.size, Image.Resampling.BICUBIC)), s))
        out[s] = (float(np.mean(direct)), float(np.mean(bicubic)))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="training checkpoints or exported models (.pt)")
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--size", default="384x320", help="centre crop WxH")
    p.add_argument("--faces", type=Path, help="code mosaics of these unseen faces instead (--size unused)")
    p.add_argument("--sr", action="store_true", help="also compare super-resolution (x2, x4)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.faces:
        images = face_mosaics(args.faces)
        print(f"{len(images)} mosaics of {FACE_GRID[0]} x {FACE_GRID[1]} faces from {args.faces}")
    else:
        images = crops(args.data, w, h)
        print(f"{len(images)} crops of {w}x{h} from {args.data}")
    sr_images = [load_crop(str(f), 256, 256) for f in paths(args.data)] if args.sr else []
    first = None
    for path in args.checkpoints:
        net, step = load_checkpoint(path)
        s = summary(net, images)
        print(f"{path} (step {step}): {ladder_line(s)} | mean RD loss {s['mean_loss']:.3f}", flush=True)
        if first is None:
            first = s
        else:
            print("  against the first: " + curve_shift(first, s), flush=True)
        if args.sr:
            print("  SR at the top quality, Y-PSNR at scale / x1 + bicubic: " + ", ".join(
                f"x{k} {a:.2f} / {b:.2f} ({a - b:+.2f})" for k, (a, b) in sr_summary(net, sr_images).items()), flush=True)


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    main()
