"""Export a training checkpoint as a shipped model: weights + integer entropy tables + manifest.

    python -m anr_codec.export runs/main/last.pt pretrained/anr-v1.pt --name anr-v1

The manifest (same name, .json) records the SHA-256 the loader checks, and the training
facts (steps, wall time, hardware) the model card cites.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from .entropy import build_tables
from .model import AnrModel, ModelConfig
from .weights import save_model


@torch.no_grad()
def tables_for(net: AnrModel) -> list[dict]:
    tables = []
    for prior in net.priors:
        # Re-derive the tail quantiles precisely (bisection) but keep the trained medians:
        # the decoder learned with those quantisation offsets.
        med = prior.quantiles[:, :, 1:2].clone()
        prior._update_quantiles()
        prior.quantiles[:, :, 1:2] = med
        tables.append(build_tables(prior))
    return tables


def export(ckpt: Path, out: Path, name: str, notes: dict | None = None) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net = AnrModel(ModelConfig.from_dict(state["config"]))
    net.load_state_dict(state["model"])
    net.eval()
    tables = tables_for(net)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = save_model(net, tables, out, name, state.get("step", 0), state.get("elapsed", 0.0))
    manifest = {"name": name, "sha256": digest.hex(), "file": out.name,
                "qualities": len(tables), "lambdas": list(net.config.lambdas),
                "training": {"steps": state.get("step"), "train_seconds": round(state.get("elapsed", 0)),
                             "exported_on": f"{platform.system()} {platform.machine()}"},
                "parameters": sum(p.numel() for p in net.parameters())}
    if notes:
        manifest["training"].update(notes)
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m anr_codec.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--hardware", default="", help="where it was trained, for the manifest")
    p.add_argument("--recipe", default="", help="the training command, for the manifest")
    a = p.parse_args(argv)
    notes = {k: v for k, v in (("hardware", a.hardware), ("recipe", a.recipe)) if v}
    print(json.dumps(export(a.checkpoint, a.output, a.name, notes), indent=2))


if __name__ == "__main__":
    main()
