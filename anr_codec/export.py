"""Export a training checkpoint as a shipped model: weights + integer entropy tables + manifest.

    python -m anr_codec.export runs/main/last.pt pretrained/anr-v1.pt --name anr-v1 \
        --context-data ../shared/data/train

With --context-data, the symbols of those (training) images at every quality are counted
into context tables (anr_codec.context); without it the model codes with its factorized
tables only.

The manifest (same name, .json) records the SHA-256 the loader checks, and the training
facts (steps, wall time, hardware) the model card cites.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .context import build_context_tables, count_contexts
from .entropy import MAX_TABLE, PRECISION, SYMBOL_LIMIT, build_tables
from .fixedpoint import export_tables, gaussian_tables, latent_gain_tables, scale_thresholds
from .hyperprior import scale_table
from .images import centre_crop16
from .model import AnrModel, ModelConfig
from .tiling import pixels_tensor
from .weights import HALF_MIN_NUMEL, save_model


@torch.no_grad()
def factorized_tables(prior) -> dict:
    # Re-derive the tail quantiles precisely (bisection) but keep the trained medians:
    # the decoder learned with those quantisation offsets.
    med = prior.quantiles[:, :, 1:2].clone()
    prior._update_quantiles()
    prior.quantiles[:, :, 1:2] = med
    return build_tables(prior)


@torch.no_grad()
def tables_for(net: AnrModel) -> list[dict]:
    """Per quality: the latent's factorized tables, or (hyperprior models) z's tables and
    the fixed-point constants of the exact path (fixedpoint.py)."""
    if net.hyper is None:
        return [factorized_tables(prior) for prior in net.priors]
    return [{**factorized_tables(prior), **export_tables(net.hyper, qi), **latent_gain_tables(net.log_gain[qi])}
            for qi, prior in enumerate(net.hyper.z_priors)]


def gaussian_coding_tables() -> dict:
    """The hyperprior models' latent tables, one per scale level (shared by all qualities)."""
    table = scale_table().numpy()
    halves, counts = gaussian_tables(table, PRECISION, MAX_TABLE // 2 - 1)
    return {"halves": halves.astype(np.int32), "counts": counts, "thresholds": scale_thresholds(table)}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def context_images(folders: list[Path], limit: int) -> list[Path]:
    """Up to `limit` images spread evenly over the sorted files of `folders` (deterministic)."""
    files = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images under {', '.join(map(str, folders))}")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


@torch.no_grad()
def add_context_tables(net: AnrModel, tables: list[dict], images: list[Path], crop: int = 512) -> None:
    """Count every quality's symbols on centre crops of `images` into context tables."""
    counts = [None] * len(tables)
    for path in images:
        rgb = np.asarray(centre_crop16(Image.open(path).convert("RGB"), crop, crop))
        if rgb.size == 0:
            continue
        y = net.encoder(pixels_tensor(rgb, "cpu"))[0]  # the gains scale it per quality, as in AnrModel.analysis
        for qi in range(len(tables)):
            ys = y * net.gain(qi)[:, None, None] - net.medians(qi)[:, None, None]
            sym = torch.round(ys).clamp(-SYMBOL_LIMIT, SYMBOL_LIMIT).to(torch.int32).numpy()
            counts[qi] = count_contexts(sym, counts[qi])
    for t, c in zip(tables, counts):
        t["ctx_counts"] = build_context_tables(c, t)


def export(ckpt: Path, out: Path, name: str, notes: dict | None = None,
           context_data: list[Path] | None = None, context_limit: int = 500, half: bool = False) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net = AnrModel(ModelConfig.from_dict(state["config"]))
    net.load_state_dict(state["model"])
    if half:
        # Round the big weights to float16 first: the tables below (and the hyperprior's
        # fixed-point weights, derived at load time) then come from the weights as stored.
        with torch.no_grad():
            for v in net.state_dict().values():
                if v.dtype == torch.float32 and v.numel() >= HALF_MIN_NUMEL:
                    v.copy_(v.half().float())
    net.eval()
    tables = tables_for(net)
    # Context tables adapt a factorized prior; a hyperprior already adapts every scale.
    images = context_images(context_data, context_limit) if context_data and net.hyper is None else []
    if images:
        add_context_tables(net, tables, images)
    gaussian = gaussian_coding_tables() if net.hyper is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = save_model(net, tables, out, name, state.get("step", 0), state.get("elapsed", 0.0), gaussian, half)
    manifest = {"name": name, "sha256": digest.hex(), "file": out.name,
                "qualities": len(tables), "lambdas": list(net.config.lambdas),
                "training": {"steps": state.get("step"), "train_seconds": round(state.get("elapsed", 0)),
                             "exported_on": f"{platform.system()} {platform.machine()}"},
                "parameters": sum(p.numel() for p in net.parameters()),
                "weights": f"float16 (tensors of {HALF_MIN_NUMEL}+ values), float32 (the rest)" if half else "float32",
                "entropy_coding": ("hyperprior (exact fixed-point scales, Gaussian tables)" if gaussian
                                   else f"context tables from {len(images)} images of "
                                   f"{', '.join(str(f) for f in context_data)}" if images else "factorized")}
    if "detail_step" in state:  # the super-resolution head's own training (anr_codec.train_detail)
        manifest["training"].update(detail_steps=state["detail_step"], detail_seconds=round(state["detail_seconds"]))
    if notes:
        manifest["training"].update(notes)
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def continued_notes(manifest: Path, hardware: str, recipe: str) -> tuple[str, str]:
    """Hardware and recipe of a model that continues `manifest`'s: its recipe with `recipe`
    appended as the next phase (a shipped model's recipe is every phase from the start)."""
    before = json.loads(manifest.read_text()).get("training", {})
    phases = [r for r in (before.get("recipe", ""), recipe) if r]
    return hardware or before.get("hardware", ""), "; ".join(phases)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m anr_codec.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--hardware", default="", help="where it was trained, for the manifest")
    p.add_argument("--recipe", default="", help="the training command, for the manifest")
    p.add_argument("--continues", type=Path, metavar="MANIFEST",
                   help="the manifest (.json) of the export this checkpoint continues from: its recipe "
                        "is kept and --recipe appended to it, its hardware kept unless --hardware is given")
    p.add_argument("--context-data", type=Path, nargs="+",
                   help="training-image folders whose symbols build the context tables (never evaluation sets)")
    p.add_argument("--context-images", type=int, default=500, help="at most this many of those images (spread evenly)")
    p.add_argument("--half", action="store_true",
                   help="store the big weight tensors as float16 (half the file; what travels to a GPU "
                        "machine must fit 64 MiB)")
    a = p.parse_args(argv)
    hardware, recipe = continued_notes(a.continues, a.hardware, a.recipe) if a.continues else (a.hardware, a.recipe)
    notes = {k: v for k, v in (("hardware", hardware), ("recipe", recipe)) if v}
    print(json.dumps(export(a.checkpoint, a.output, a.name, notes, a.context_data, a.context_images, a.half),
                     indent=2))


if __name__ == "__main__":
    main()
