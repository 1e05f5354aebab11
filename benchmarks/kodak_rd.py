"""Rate-distortion of anr-codec on Kodak beside Pillow JPEG and WebP, measured in one run.

    python benchmarks/kodak_rd.py [--data ../shared/data/kodak] [--json out.json] [--limit N]

bpp comes from the real .anr byte count (headers included); PSNR is RGB over the whole
image, averaged over images. Baselines are swept over their quality settings and
interpolated (in the mean-bpp/mean-PSNR curve) to each anr quality's mean bpp.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anr_codec import Codec  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def pillow_point(img: Image.Image, fmt: str, q: int) -> tuple[float, float]:
    buf = io.BytesIO()
    kw = {"quality": q}
    if fmt == "WEBP":
        kw["method"] = 6
    img.save(buf, format=fmt, **kw)
    n = buf.tell()
    rec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return 8 * n / (img.width * img.height), psnr(np.asarray(img), rec)


def baseline_curve(images, fmt, settings):
    pts = np.array([[pillow_point(im, fmt, q) for im in images] for q in settings])  # (S, N, 2)
    bpp, ps = pts[..., 0].mean(1), pts[..., 1].mean(1)
    order = np.argsort(bpp)
    return bpp[order], ps[order]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/kodak")
    ap.add_argument("--model", default=None)
    ap.add_argument("--qualities", default="all")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (quick checks)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    files = sorted(a.data.glob("*.png"))[: a.limit or None]
    images = [Image.open(f).convert("RGB") for f in files]
    codec = Codec(device="cpu", model=a.model)
    qs = codec.qualities() if a.qualities == "all" else [int(q) for q in a.qualities.split(",")]
    rows = []
    for q in qs:
        bpps, ps, te, td = [], [], [], []
        for im in images:
            t0 = time.perf_counter()
            data = codec.encode(im, quality=q)
            t1 = time.perf_counter()
            rec = np.asarray(codec.decode(data))
            t2 = time.perf_counter()
            bpps.append(8 * len(data) / (im.width * im.height))
            ps.append(psnr(np.asarray(im), rec))
            te.append(t1 - t0)
            td.append(t2 - t1)
        rows.append({"quality": q, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(ps)),
                     "encode_s": float(np.median(te)), "decode_s": float(np.median(td))})
        print(f"q{q}: bpp {rows[-1]['bpp']:.4f}  PSNR {rows[-1]['psnr']:.2f} dB  "
              f"enc {rows[-1]['encode_s']:.2f} s  dec {rows[-1]['decode_s']:.2f} s", file=sys.stderr)
    jpeg = baseline_curve(images, "JPEG", [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95])
    webp = baseline_curve(images, "WEBP", [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95])
    print(f"\nKodak ({len(images)} images), model {codec.model.name}, RGB PSNR, bpp from real files")
    print("| quality | bpp | anr PSNR | JPEG PSNR @bpp | WebP PSNR @bpp | enc s | dec s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        def at(curve):
            b, p = curve
            return f"{np.interp(r['bpp'], b, p):.2f}" if b[0] <= r["bpp"] <= b[-1] else "n/a"
        r["jpeg_psnr_at_bpp"], r["webp_psnr_at_bpp"] = at(jpeg), at(webp)
        print(f"| {r['quality']} | {r['bpp']:.4f} | {r['psnr']:.2f} | {at(jpeg)} | {at(webp)} | "
              f"{r['encode_s']:.2f} | {r['decode_s']:.2f} |")
    if a.json:
        a.json.write_text(json.dumps({"model": codec.model.name, "images": len(images), "anr": rows,
                                      "jpeg": [list(map(float, c)) for c in jpeg],
                                      "webp": [list(map(float, c)) for c in webp]}, indent=2))


if __name__ == "__main__":
    main()
