"""What the context tables save over the factorized ones, measured on held-out training images.

    python benchmarks/context_gain.py [--model anr-v1] [--data ../shared/data/train] [--images 100]
    python benchmarks/context_gain.py --shipped ../shared/data/kodak

The training images are split in two by position in the sorted list: the tables are
counted on the even ones (as `python -m anr_codec.export --context-data` counts them) and
real payload bytes of both coders are compared on centre crops of the odd ones, at every
quality. Kodak stays out of that choice; `--shipped DIR` only evaluates a model's own
context tables against its factorized ones on the whole images of DIR.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anr_codec import tiling  # noqa: E402
from anr_codec.context import ContextCoder  # noqa: E402
from anr_codec.entropy import SYMBOL_LIMIT, SymbolCoder  # noqa: E402
from anr_codec.export import add_context_tables, context_images  # noqa: E402
from anr_codec.images import centre_crop16  # noqa: E402
from anr_codec.weights import load_model  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="anr-v1")
    p.add_argument("--data", type=Path, nargs="+", default=[Path("../shared/data/train")])
    p.add_argument("--images", type=int, default=100, help="images in all (half count, half measure)")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--shipped", type=Path, help="measure the model's own context tables on these images")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    m = load_model(a.model)
    if a.shipped:
        tables = m.tables
        if "ctx_counts" not in tables[0]:
            raise SystemExit(f"{a.model} has no context tables")
        crops = [np.asarray(Image.open(f).convert("RGB")) for f in context_images([a.shipped], 10_000)]
        source = f"its own tables, measured on {len(crops)} images of {a.shipped}"
    else:
        files = context_images(a.data, a.images)
        count, held = files[0::2], files[1::2]
        tables = copy.deepcopy(m.tables)
        add_context_tables(m.net, tables, count, a.crop)
        crops = [np.asarray(centre_crop16(Image.open(f).convert("RGB"), a.crop, a.crop)) for f in held]
        source = f"tables from {len(count)} images, measured on {len(held)} others"
    pixels = sum(c.shape[0] * c.shape[1] for c in crops)
    print(f"{a.model}: {source} ({pixels / 1e6:.1f} Mpixel)")
    print("quality  factorized bpp  context bpp  saving   (latent payload only; headers are equal)")
    for qi, t in enumerate(tables):
        fact, ctx = SymbolCoder(t), ContextCoder(t)
        fb = cb = 0
        for rgb in crops:
            with torch.inference_mode():
                y = tiling.analysis(m.net, rgb, qi, "cpu")
            sym = torch.round(y - m.net.medians(qi)[:, None, None]).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT)
            sym = sym.to(torch.int32).numpy()
            fb += len(fact.encode(sym))
            data = ctx.encode(sym)
            cb += len(data)
            assert (ctx.decode(data, sym.shape) == sym).all()
        print(f"{qi + 1:>7}  {8 * fb / pixels:14.4f}  {8 * cb / pixels:11.4f}  {100 * (1 - cb / fb):5.1f} %")


if __name__ == "__main__":
    import check_checkout  # beside this script: measure this checkout, no other
    check_checkout.require()
    main()
