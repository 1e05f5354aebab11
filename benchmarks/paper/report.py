"""Tables and plots of the paper study's INR runs (issue 7, parts 1, 2, 3, 4a).

    python benchmarks/paper/report.py [--results benchmarks/paper/results] [--doc docs/paper-study-inr.md]

Reads every results/*.json that train_inr.py wrote and sorts the runs into the parts by
their configuration (not their names), so extra or renamed runs land in the right table:
  part 1: every head at the base configuration (64x64, 64 tokens x 64 dims, jitter, ANR threshold 0.01)
  part 2: ANR at the base configuration, each threshold
  part 3: ANR trained below 64x64, with and without jitter, queried at 1x, 2x, 4x
  part 4a: ANR at the base configuration except the token count, or the token dimension
Writes the markdown fragment (merged by hand into docs/paper-study.md) and two PNGs beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAD_ORDER = {"anr": 0, "transinr": 1, "ipc": 2}
HEAD_NAME = {"anr": "ANR (attention, paper)", "transinr": "Trans-INR (all layers modulated)",
             "ipc": "IPC (one layer instance-specific)"}
BASE = {"train_res": 64, "tokens": 64, "token_dim": 64, "jitter": True}


def load(folder: Path) -> list[dict]:
    runs = []
    for p in sorted(folder.glob("*.json")):
        try:
            r = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if "config" in r and "curve" in r:
            runs.append(r)
    return runs


def _is(c: dict, **kw) -> bool:
    return all(c.get(k) == v for k, v in kw.items())


def parts(runs: list[dict]) -> dict[str, list[dict]]:
    base = [r for r in runs if _is(r["config"], **BASE)]
    anr_base = [r for r in base if r["config"]["head"] == "anr"]
    p1 = [r for r in base if r["config"]["head"] != "anr" or r["config"]["threshold"] == 0.01]
    p4 = [r for r in runs if _is(r["config"], head="anr", train_res=64, jitter=True, threshold=0.01)]
    return {
        "p1": sorted(p1, key=lambda r: (HEAD_ORDER[r["config"]["head"]], r["steps"])),
        "p2": sorted(anr_base, key=lambda r: (-r["config"]["threshold"], r["steps"])),
        "p3": sorted([r for r in runs if r["config"]["head"] == "anr" and r["config"]["train_res"] < 64],
                     key=lambda r: (r["config"]["train_res"], not r["config"]["jitter"], r["steps"])),
        "p4_tokens": sorted([r for r in p4 if r["config"]["token_dim"] == 64], key=lambda r: (r["config"]["tokens"], r["steps"])),
        "p4_dim": sorted([r for r in p4 if r["config"]["tokens"] == 64], key=lambda r: (r["config"]["token_dim"], r["steps"])),
    }


def head_label(c: dict) -> str:
    label = HEAD_NAME[c["head"]]
    if c["head"] == "ipc" and c.get("ipc_layer", 1) != 1:
        label += f", layer {c['ipc_layer']}"
    return label


def _f(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def plot_curves(p: dict, path: Path) -> bool:
    runs = p["p1"] + [r for r in p["p2"] if r not in p["p1"]]
    if not runs:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in runs:
        c = r["config"]
        label = c["head"] + (f", threshold {c['threshold']:g}" if c["head"] == "anr" else "")
        label += f", layer {c['ipc_layer']}" if c["head"] == "ipc" and c.get("ipc_layer", 1) != 1 else ""
        steps, psnr = zip(*r["curve"])
        ax.plot(steps, psnr, marker=".", label=label)
    ax.set_xlabel("training step (batch 32)")
    ax.set_ylabel("test PSNR (dB), 300 faces 64x64")
    ax.set_title("Learning curves (parts 1 and 2)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_tokens(p: dict, path: Path) -> bool:
    if not (p["p4_tokens"] or p["p4_dim"]):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, runs, key, label in ((axes[0], p["p4_tokens"], "tokens", "data tokens N (token dim 64)"),
                                 (axes[1], p["p4_dim"], "token_dim", "token dim D (64 tokens)")):
        if runs:
            ax.plot([r["config"][key] for r in runs], [r["final"]["test_psnr"] for r in runs], marker="o")
            ax.set_xscale("log", base=2)
            ax.set_xticks([r["config"][key] for r in runs], [str(r["config"][key]) for r in runs])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test PSNR (dB)")
    fig.suptitle("ANR: PSNR vs representation size (part 4a)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(runs: list[dict], doc: Path) -> str:
    p = parts(runs)
    stem = doc.with_suffix("")
    curves_png, tokens_png = Path(f"{stem}-curves.png"), Path(f"{stem}-tokens.png")
    md = ["## Hyper-network INR heads on CelebA 64x64 (parts 1, 2, 3, 4a)", ""]
    if runs:
        c = runs[0]["config"]
        md += [f"Setup: 64x64 center crops of the 89x109 CelebA faces, first {c['n_train']:,} (sorted names) "
               f"train, last {runs[0]['config'].get('n_test', 300)} test. One shared transformer hyper-network "
               "(8x8 patches -> 64 tokens, width 64, 4 global blocks) and three INR heads with equal "
               "parameter counts (within 10 %), all over the same Fourier features of (x, y) (octaves 1..32). "
               f"Adam lr {c['lr']:g} (warm-up {c['warmup']}, cosine to 10 %), batch {c['batch']}, "
               f"{c['queries_per_face']} random pixels supervised per face and step, flips, "
               "variational coordinates (jitter) unless stated, fixed seed. "
               "Test PSNR: mean over the test faces of the RGB PSNR on [0, 1] (clipped floats). "
               "Times are wall-clock on the 2-core CPU machine (`benchmarks/paper/run_all.sh`).", ""]

    md += ["### Part 1: attention vs linear weight modulation", ""]
    md += [table(["head", "params (head)", "steps", "s/step", "wall s", "test PSNR (dB)"],
                 [[head_label(r["config"]), f"{r['params']['total']:,} ({r['params']['head']:,})", r["steps"],
                   _f(r["s_per_step"], 3), f"{r['wall_s']:.0f}", _f(r["final"]["test_psnr"])] for r in p["p1"]]), ""]
    if plot_curves(p, curves_png):
        md += [f"![learning curves]({curves_png.name})", ""]

    md += ["### Part 2: thresholded (localized) softmax", ""]
    md += [table(["ANR softmax", "steps", "s/step", "test PSNR (dB)"],
                 [["threshold " + _f(r["config"]["threshold"], 3) if r["config"]["threshold"] > 0 else "plain (threshold 0)",
                   r["steps"], _f(r["s_per_step"], 3), _f(r["final"]["test_psnr"])] for r in p["p2"]]), ""]

    md += ["### Part 3: variational coordinates and super-resolution", ""]
    rows = []
    for r in p["p3"]:
        c, f = r["config"], r["final"]
        rows.append([f"{c['train_res']}x{c['train_res']}", "yes" if c["jitter"] else "no", r["steps"],
                     _f(f["test_psnr"]), _f(f.get("psnr_x2")), _f(f.get("psnr_x4")),
                     _f(f.get("bicubic_x2")), _f(f.get("bicubic_x4"))])
    md += [table(["train res", "jitter", "steps", "PSNR at train res", "2x", "4x", "bicubic 2x", "bicubic 4x"], rows), ""]
    pngs = [r["final"]["png"] for r in p["p3"] if r["final"].get("png")]
    if pngs:
        md += ["2x / 4x targets are the area downscale of the 64x64 crop to 32x32 and the crop itself. "
               f"Crop grids (input, bicubic x4, ANR x4, ground truth): {', '.join(pngs)} in benchmarks/paper/results/ "
               "(CelebA faces: kept out of git).", ""]

    md += ["### Part 4a: number and size of the data tokens", ""]
    for key, runs_, what in (("tokens", p["p4_tokens"], "tokens (patch)"), ("token_dim", p["p4_dim"], "token dim")):
        rows = []
        for r in runs_:
            c = r["config"]
            patch = 64 // int(c["tokens"] ** 0.5)
            first = f"{c['tokens']} ({patch}x{patch})" if key == "tokens" else str(c["token_dim"])
            rows.append([first, f"{c['tokens'] * c['token_dim']:,}", f"{r['params']['total']:,}", r["steps"],
                         _f(r["s_per_step"], 3), _f(r["final"]["test_psnr"])])
        md += [table([what, "floats per face", "params", "steps", "s/step", "test PSNR (dB)"], rows), ""]
    if plot_tokens(p, tokens_png):
        md += [f"![PSNR vs tokens]({tokens_png.name})", ""]
    return "\n".join(md)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "paper" / "results"))
    ap.add_argument("--doc", default=str(REPO / "docs" / "paper-study-inr.md"))
    args = ap.parse_args(argv)
    runs = load(Path(args.results))
    doc = Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(runs, doc) + "\n")
    print(f"{len(runs)} runs -> {doc}")


if __name__ == "__main__":
    main()
