"""Where does a trained model lose quality? Three numbers per image, for whoever trains next.

    python benchmarks/capacity.py IMAGE [IMAGE ...] [--model anr-v1] [--steps 150]

1. PSNR of the decoded latent with and without rounding, per quality: when they agree,
   quantisation is not what limits quality; the autoencoder itself is. Also how many latent
   channels carry symbols (> 5 % of positions nonzero).
2. Fitting the latent itself by gradient descent (no rate, no rounding): how far the
   decoder can go when the encoder is perfect. A small gain means the decoder is the limit.
3. Fitting the ANR data tokens directly: how far the ANR renderer alone can go. A large
   gain over (2) means the token network (latent -> tokens) is the limit.
4. The localized attention's weights at every pixel centre: the mean on the home token,
   an edge and a corner neighbour, and how much they vary between pixels. Weights that
   hardly vary mean the layer has settled into a fixed blur of the tokens (seen in anr-v2
   at 9,766 steps: home 0.34, edges 0.12, corners 0.04, spread 0.06).

Use training images (not Kodak): this guides training, it is not an evaluation.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from anr_codec.images import centre_crop16
from anr_codec.metrics import psnr_from_mse
from anr_codec.weights import load_model


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Of a decoded image (clipped to [0, 1], as the codec does) against the target."""
    return float(((a.clamp(0, 1) - b) ** 2).mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return psnr_from_mse(mse(a, b), 1.0)


def load_crop(path: str, width: int, height: int) -> torch.Tensor:
    """Centre crop (multiples of 16) as (1, 3, H, W) in [0, 1]."""
    return crop_tensor(Image.open(path).convert("RGB"), width, height)


def crop_tensor(img: Image.Image, width: int, height: int) -> torch.Tensor:
    """An RGB image's centre crop (multiples of 16) as (1, 3, H, W) in [0, 1]."""
    img = centre_crop16(img, width, height)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


def quantisation_table(net, x: torch.Tensor, unrounded: bool = True) -> list[dict]:
    """Per quality: estimated bpp, MSE/PSNR of the rounded latent's decode (and of the
    unrounded one, unless `unrounded` is False: that costs a second decode), active channels."""
    rows = []
    with torch.no_grad():
        for qi in range(net.n_qualities):
            y_hat, sym, bits = net.estimate(x, qi)
            render = lambda v: net.anr.render_grid(net.tokens(v, qi))  # noqa: E731
            err = mse(render(y_hat), x)
            rows.append({"quality": qi + 1, "bpp": float(bits.sum()) / (x.shape[-1] * x.shape[-2]),
                         "mse_rounded": err, "psnr_rounded": psnr_from_mse(err, 1.0),
                         "active_channels": int(((sym != 0).float().mean((0, 2, 3)) > 0.05).sum())})
            if unrounded:
                rows[-1]["psnr_unrounded"] = psnr(render(net.analysis(x, qi)), x)
    return rows


def attention_profile(anr, tokens: torch.Tensor) -> dict:
    """Mean attention weight of the ANR decoder `anr` on its data tokens (1, D, h, w): on the
    home / an edge / a corner neighbour over the pixel centres and heads, and the spread
    (std between pixels, averaged over heads and neighbours). Pixels of the outermost token
    cells are left out: part of their neighbourhood lies outside the image, which moves
    their weights whatever was learned."""
    s = anr.stride
    h, w = (s * n for n in tokens.shape[-2:])
    ys, xs = torch.meshgrid(torch.arange(s, h - s) + 0.5, torch.arange(s, w - s) + 0.5, indexing="ij")
    xy = torch.stack([xs, ys], -1).reshape(1, -1, 2)
    with torch.no_grad():
        wt = anr.attention_weights(tokens, xy, torch.ones(2))[0]     # (N, heads, 9)
    mean = wt.mean((0, 1))
    return {"home": float(mean[4]), "edge": float(mean[[1, 3, 5, 7]].mean()),
            "corner": float(mean[[0, 2, 6, 8]].mean()), "spread": float(wt.std(0).mean())}


def fit(render, start: torch.Tensor, x: torch.Tensor, steps: int, lr: float) -> list[tuple[int, float]]:
    """Adam on `start` (a latent or a token map) for pure MSE; PSNR every steps // 5."""
    v = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    curve = []
    for it in range(steps + 1):
        out = render(v)
        loss = ((out - x) ** 2).mean()
        if it % max(1, steps // 5) == 0 or it == steps:
            curve.append((it, psnr(out.detach(), x)))
        if it < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return curve


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default=None, help="installed model name or .pt path (default: the shipped one)")
    p.add_argument("--size", default="512x384", help="centre crop WxH")
    p.add_argument("--steps", type=int, default=150, help="gradient steps for the two fits")
    p.add_argument("--quality", type=int, default=0, help="quality for the fits (default: the highest)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = load_model(args.model, torch.device("cpu")).net.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    w, h = (int(v) for v in args.size.lower().split("x"))
    qi = (args.quality or net.n_qualities) - 1
    for path in args.images:
        x = load_crop(path, w, h)
        print(f"{path} ({x.shape[-1]}x{x.shape[-2]})")
        print("  quality    bpp  rounded dB  unrounded dB  active channels")
        for r in quantisation_table(net, x):
            print(f"  {r['quality']:7d} {r['bpp']:6.3f} {r['psnr_rounded']:11.2f} {r['psnr_unrounded']:13.2f}"
                  f" {r['active_channels']:8d} of {net.config.latent_channels}")
        with torch.no_grad():
            y0 = net.analysis(x, qi)
            t0 = net.tokens(y0, qi)
        a = attention_profile(net.anr, t0)
        print(f"  attention (quality {qi + 1}): home {a['home']:.3f}, edge {a['edge']:.3f}, "
              f"corner {a['corner']:.3f}, spread between pixels {a['spread']:.3f}")
        for name, render, start, lr in (
                ("latent fit", lambda v: net.anr.render_grid(net.tokens(v, qi)), y0, 0.05),
                ("token fit", net.anr.render_grid, t0, 0.02)):
            t = time.time()
            curve = fit(render, start, x, args.steps, lr)
            pts = ", ".join(f"{i}: {v:.2f}" for i, v in curve)
            print(f"  {name} (quality {qi + 1}, PSNR dB by step): {pts}  [{time.time() - t:.0f} s]")


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    main()
