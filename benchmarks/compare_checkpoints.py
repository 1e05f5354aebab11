"""Pick between training checkpoints without looking at Kodak.

    python benchmarks/compare_checkpoints.py A.pt B.pt ... [--data ../shared/data/train]

Every checkpoint codes the same fixed centre crops of training images (every 4th
Wikipedia PNG and every 20th BSDS500 test JPEG, 10 of each) with real rounding and no
coordinate jitter. Printed per checkpoint: PSNR (of the mean MSE) and estimated bpp
(from the prior's likelihoods) at every quality, and the mean RD loss
lambda * 255^2 * MSE + bpp over the qualities, the quantity training minimises. Kodak
stays for the final evaluation of the one that is shipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from capacity import load_crop, quantisation_table

from anr_codec.metrics import psnr_from_mse
from anr_codec.model import AnrModel, ModelConfig


def crops(data: Path, width: int, height: int) -> list[torch.Tensor]:
    paths = (sorted((data / "wikipedia").glob("*.png"))[::4][:10]
             + sorted((data / "bsds500" / "test").glob("*.jpg"))[::20][:10])
    return [load_crop(str(p), width, height) for p in paths]


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="training checkpoints or exported models (.pt)")
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--size", default="384x320", help="centre crop WxH")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    images = crops(args.data, w, h)
    if not images:
        raise SystemExit(f"no training images under {args.data}")
    print(f"{len(images)} crops of {w}x{h} from {args.data}")
    for path in args.checkpoints:
        net, step = load_checkpoint(path)
        s = summary(net, images)
        print(f"{path} (step {step}): PSNR {' '.join(f'{v:.2f}' for v in s['psnr'])} | "
              f"bpp {' '.join(f'{v:.3f}' for v in s['bpp'])} | mean RD loss {s['mean_loss']:.3f}", flush=True)


if __name__ == "__main__":
    main()
