"""Attention beats linear, at codec level (issue 7, part 4b): the project's ANR codec against
compressai's convolutional bmshj2018-factorized, both trained from scratch here with the same
data, steps, batch, crop, lambdas and optimiser, then measured on Kodak with real bytes.

    nice -n 10 python benchmarks/paper/rd_compare.py --time-steps 12  # s/step of both + time estimate
    nice -n 10 python benchmarks/paper/rd_compare.py                  # train (resumable), evaluate, report

Defaults: 3000 steps, batch 8, crop 64, lambdas 0.0035, 0.013, 0.05, the project's default
ModelConfig, 1 torch thread: about 45 min of training (1 ANR + 3 bmshj runs) and 4 min of
evaluation on the shared 2-core machine (measured 0.34 and 0.19 s/step).
    nice -n 10 python benchmarks/paper/rd_compare.py --steps 4 --limit 1 \\
        --out /tmp/rd --results /tmp/rd --doc /tmp/rd/doc.md         # smoke test

Setup, identical for both codecs:
- data: random crops (with flips) from the training pixel cache (anr_codec.data.CropSampler over
  ../shared/data/train); every run uses the same sampler seed, so each model sees exactly the
  same sequence of batches. Kodak is never trained on.
- loss: lambda * 255^2 * MSE + bpp; Adam (--lr, linear warm-up over min(500, steps/20), the last
  --anneal-frac of the steps at lr/10), gradient norm clipped to --clip; the entropy models'
  quantiles learn only from the auxiliary loss, with their own Adam (lr 1e-3), as compressai's
  examples/train.py does.
- ANR: ONE variable-rate model (anr_codec.model.AnrModel, per-quality gains and priors) whose
  lambdas are exactly the chosen ones; each sample of a batch draws its quality, as
  anr_codec/train.py does (without super-resolution batches: this is an RD comparison).
- bmshj2018-factorized: compressai.models.FactorizedPrior(N, M) (default 128, 192: compressai's
  size for its qualities 1-5), single-rate, so ONE MODEL PER LAMBDA, and each of them gets the
  SAME number of steps as the ANR model gets in total. The ANR model shares its steps across
  the lambdas (about steps / n_lambdas samples per lambda): this favours the baseline.

Evaluation (Kodak, --limit N for the first N images): ANR through the project's own pipeline
(export with integer entropy tables, anr_codec.Codec(model=...)): bpp from the whole .anr file
(header included); bmshj through compressai's update() + compress()/decompress() (zero-padded
to multiples of 64 and cropped, as compressai's eval_model does): bpp from its strings, as
compressai counts them. PSNR over RGB of the decoded uint8 images, mean over images per lambda.
BD-rate of ANR (test) against bmshj (anchor). Parameters and decoder multiply-accumulates per
pixel (torch.utils.flop_counter, as benchmarks/speed.py counts them) on a 768x512 input.

Resumable: checkpoints under --out (runs/paper-rd, git-ignored); re-running the same command
continues unfinished training, skips finished models, and reuses cached evaluations.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import signal
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # speed.py: the project's MAC count

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning)  # compressai's torch.jit.script
    from compressai.models import FactorizedPrior

from anr_codec import metrics  # noqa: E402
from anr_codec.codec import QUERIES_PER_CHUNK, Codec  # noqa: E402
from anr_codec.container import parse  # noqa: E402
from anr_codec.data import CropSampler, build_cache, cache_exists  # noqa: E402
from anr_codec.evaluate import _finite, list_images, load_rgb, read_reference  # noqa: E402
from anr_codec.export import tables_for  # noqa: E402
from anr_codec.images import to_planes  # noqa: E402
from anr_codec.model import V1_DESIGN, AnrModel, ModelConfig  # noqa: E402
from anr_codec import tiling  # noqa: E402
from anr_codec import train  # noqa: E402
from anr_codec.train import RDLoss, save_atomic  # noqa: E402
from anr_codec.weights import save_model  # noqa: E402
from speed import macs  # noqa: E402

DEFAULT_LAMBDAS = (0.0035, 0.013, 0.05)
DEFAULT_STEPS = 3000          # ~45 min of training + ~4 min evaluation at 1 thread, see --time-steps
# The project's own ModelConfig (1.9 M parameters, the shipped architecture). Measured here
# (1 thread, batch 8, crop 64, interleaved): 0.34 s/step against bmshj's 0.19. Narrower
# transformers (latent 96, widths 128) were no faster: the per-pixel ANR queries dominate.
# "latent_channels=64,enc_width=96,dec_width=96,token_dim=32,mlp_hidden=64" (0.76 M) matches
# bmshj's step time (0.20 s). With the default, bmshj still gets more compute per lambda
# (0.19 s x steps per model against 0.34 s x steps shared by all lambdas).
DEFAULT_ANR_CONFIG = ""
WARMUP_STEPS = 500          # anr_codec.train.lr_at's linear warm-up (at most; see warmup_steps)
AUX_LR = 1e-3
TIME_WARMUP = 3            # first steps allocate and pick kernels: slower, not timed
MAC_SIZE = (512, 768)       # (H, W): a Kodak image
PUBLISHED = ROOT.parent / "shared/anchors/kodak_compressai_published.tsv"
PUBLISHED_CODEC = "compressai-bmshj2018-factorized_mse_cuda"


# -- the two codecs under training ---------------------------------------------------------

def parse_config(text: str, lambdas) -> ModelConfig:
    """'key=value,key=value' over ModelConfig's defaults; lambdas are always the compared ones."""
    fields = train.parse_config(text)  # the same option syntax as the training command's --config
    # anr-v1's design by default: the recorded study (docs/paper-study-rd.md) is of it;
    # '--anr-config conv' runs the conv-token design.
    base = ModelConfig(**{**V1_DESIGN, "lambdas": tuple(lambdas)})
    return ModelConfig.from_dict({**base.to_dict(), **fields})


class AnrArm:
    """The variable-rate ANR codec: each sample draws one of the lambdas (own rng, so the crop
    stream stays identical to the baseline runs')."""

    kind = "anr"

    def __init__(self, config: ModelConfig, seed: int = 0):
        torch.manual_seed(seed)
        self.model = AnrModel(config)
        self.lambdas = tuple(config.lambdas)
        self.loss_mod = RDLoss(self.model)
        self.qrng = np.random.default_rng(seed + 7919)
        self.name = "anr"

    def settings(self) -> dict:
        return {"kind": self.kind, "config": self.model.config.to_dict()}

    def loss(self, x: torch.Tensor):
        qi = torch.from_numpy(self.qrng.integers(0, len(self.lambdas), x.shape[0])).to(x.device)
        loss, mse, bpp = self.loss_mod(x, qi)
        return loss, mse, bpp, qi

    def aux_loss(self) -> torch.Tensor:
        return self.model.aux_loss()

    def extra_state(self) -> dict:
        return {"qrng": self.qrng.bit_generator.state}

    def load_extra_state(self, state: dict) -> None:
        self.qrng.bit_generator.state = state["qrng"]


class BmshjArm:
    """compressai's FactorizedPrior at one lambda, with compressai's RateDistortionLoss."""

    kind = "bmshj2018-factorized"

    def __init__(self, lam: float, n: int = 128, m: int = 192, seed: int = 0):
        torch.manual_seed(seed)
        self.model = FactorizedPrior(n, m)
        self.lam, self.n, self.m = float(lam), n, m
        self.name = f"bmshj-{lam:g}"

    def settings(self) -> dict:
        return {"kind": self.kind, "lambda": self.lam, "N": self.n, "M": self.m}

    def loss(self, x: torch.Tensor):
        out = self.model(x)
        n_px = x.shape[-2] * x.shape[-1]
        bpp = -torch.log2(out["likelihoods"]["y"]).flatten(1).sum(1) / n_px
        mse = ((out["x_hat"] - x) ** 2).flatten(1).mean(1)
        loss = (self.lam * 255 ** 2 * mse + bpp).mean()
        return loss, mse.detach(), bpp.detach(), None

    def aux_loss(self) -> torch.Tensor:
        return self.model.aux_loss()

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def warmup_steps(steps: int) -> int:
    """anr_codec.train's 500-step linear warm-up, shortened to 5 % of short runs."""
    return max(1, min(WARMUP_STEPS, steps // 20))


def lr_schedule(step: int, steps: int, lr: float, anneal_frac: float) -> float:
    """Linear warm-up, then lr, then lr/10 for the last anneal_frac of the steps."""
    warm = min(1.0, (step + 1) / warmup_steps(steps))
    late = anneal_frac > 0 and step >= round(steps * (1 - anneal_frac))
    return lr * warm * (0.1 if late else 1.0)


def split_params(model: nn.Module):
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    return main, aux


class Trainer:
    """One arm's optimisers, data stream and schedule; `step()` is one training step."""

    def __init__(self, arm, sampler: CropSampler, batch: int, crop: int, lr: float, steps: int,
                 anneal_frac: float = 0.1, clip: float = 1.0, device="cpu"):
        self.arm, self.sampler = arm, sampler
        self.batch, self.crop, self.lr, self.steps, self.clip = batch, crop, lr, steps, clip
        self.anneal_frac = anneal_frac
        self.device = torch.device(device)
        arm.model.to(self.device).train()
        self.main_params, self.aux_params = split_params(arm.model)
        self.opt = torch.optim.Adam(self.main_params, lr=lr)
        self.aux_opt = torch.optim.Adam(self.aux_params, lr=AUX_LR)
        self.step_no, self.elapsed = 0, 0.0

    def lr_now(self) -> float:
        return lr_schedule(self.step_no, self.steps, self.lr, self.anneal_frac)

    def step(self, x: torch.Tensor | None = None) -> dict:
        t0 = time.perf_counter()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        if x is None:
            x = self.sampler.batch(self.batch, self.crop)
        x = x.to(self.device)
        loss, mse, bpp, qi = self.arm.loss(x)
        self.opt.zero_grad(set_to_none=True)
        self.aux_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.main_params, self.clip)
        self.opt.step()
        aux = self.arm.aux_loss()
        aux.backward()
        self.aux_opt.step()
        self.step_no += 1
        dt = time.perf_counter() - t0
        self.elapsed += dt
        return {"loss": loss.item(), "aux": aux.item(), "mse": mse, "bpp": bpp, "qi": qi, "s": dt}

    # -- checkpoints ---------------------------------------------------------------------
    def settings(self) -> dict:
        return {**self.arm.settings(), "batch": self.batch, "crop": self.crop, "lr": self.lr,
                "anneal_frac": self.anneal_frac, "clip": self.clip}

    def state(self) -> dict:
        return {"settings": self.settings(), "steps_target": self.steps, "step": self.step_no,
                "elapsed": self.elapsed, "model": self.arm.model.state_dict(),
                "opt": self.opt.state_dict(), "aux_opt": self.aux_opt.state_dict(),
                "sampler": self.sampler.state(), "torch_rng": torch.get_rng_state(),
                **self.arm.extra_state()}

    def load_state(self, state: dict) -> None:
        if state["settings"] != self.settings():
            raise SystemExit(f"checkpoint settings {state['settings']} differ from this run's "
                             f"{self.settings()}: use another --out, or delete the old run")
        self.arm.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.aux_opt.load_state_dict(state["aux_opt"])
        self.sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.arm.load_extra_state(state)
        self.step_no, self.elapsed = int(state["step"]), float(state["elapsed"])


def train_arm(trainer: Trainer, run_dir: Path, ckpt_every: int = 250, log_every: int = 50,
              stop: dict | None = None) -> dict:
    """Train to trainer.steps, resuming from run_dir/last.pt; returns training facts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "last.pt"
    if ckpt.exists():
        trainer.load_state(torch.load(ckpt, map_location="cpu", weights_only=True))
        if trainer.step_no < trainer.steps:
            print(f"{trainer.arm.name}: resumed at step {trainer.step_no}", file=sys.stderr)
    stop = stop if stop is not None else {"flag": False}
    acc = _new_acc()
    with open(run_dir / "log.jsonl", "a") as log:
        while trainer.step_no < trainer.steps and not stop["flag"]:
            r = trainer.step()
            if not math.isfinite(r["loss"]):
                raise SystemExit(f"{trainer.arm.name}: loss is {r['loss']} at step {trainer.step_no}; "
                                 f"resume from the last checkpoint")
            _accumulate(acc, r)
            if trainer.step_no % log_every == 0 or trainer.step_no == trainer.steps:
                rec = {"arm": trainer.arm.name, "step": trainer.step_no, **_summary(acc, trainer),
                       "elapsed_s": round(trainer.elapsed)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(json.dumps(rec), file=sys.stderr, flush=True)
                acc = _new_acc()
            if trainer.step_no % ckpt_every == 0:
                save_atomic(trainer.state(), ckpt)
    save_atomic(trainer.state(), ckpt)
    return {"steps": trainer.step_no, "train_seconds": round(trainer.elapsed, 1),
            "s_per_step": round(trainer.elapsed / max(1, trainer.step_no), 4),
            "finished": trainer.step_no >= trainer.steps}


def _new_acc() -> dict:
    return {"n": 0, "loss": 0.0, "s": 0.0, "psnr": {}, "bpp": {}}


def _accumulate(acc: dict, r: dict) -> None:
    acc["n"] += 1
    acc["loss"] += r["loss"]
    acc["s"] += r["s"]
    psnr = (-10 * torch.log10(r["mse"].clamp_min(1e-10))).tolist()
    qs = r["qi"].tolist() if r["qi"] is not None else [0] * len(psnr)
    for q, p, b in zip(qs, psnr, r["bpp"].tolist()):
        acc["psnr"].setdefault(q, []).append(p)
        acc["bpp"].setdefault(q, []).append(b)


def _summary(acc: dict, trainer: Trainer) -> dict:
    keys = sorted(acc["psnr"])
    return {"loss": round(acc["loss"] / acc["n"], 4), "s_per_step": round(acc["s"] / acc["n"], 3),
            "lr": trainer.opt.param_groups[0]["lr"],
            "psnr": [round(float(np.mean(acc["psnr"][q])), 2) for q in keys],
            "bpp": [round(float(np.mean(acc["bpp"][q])), 4) for q in keys]}


# -- evaluation with real bytes --------------------------------------------------------------

def export_anr(model: AnrModel, path: Path, step: int = 0, elapsed: float = 0.0) -> Path:
    """The project's model file (weights + integer entropy tables), readable by anr_codec.Codec."""
    net = copy.deepcopy(model).cpu().eval()  # tables_for re-derives the priors' tails in place
    tables = tables_for(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, tables, path, "paper-rd-anr", step, elapsed)
    return path


def anr_point(codec: Codec, rgb: np.ndarray, quality: int) -> dict:
    data = codec.encode(rgb, quality=quality)
    rec = to_planes(codec.decode(data))[0]
    px = rgb.shape[0] * rgb.shape[1]
    return {"bpp": 8 * len(data) / px, "psnr": metrics.psnr(rgb, rec), "bytes": len(data),
            "payload_bytes": len(parse(data).payload)}


def pad64(x: torch.Tensor, p: int = 64) -> tuple[torch.Tensor, tuple]:
    """Zero padding centred to multiples of p, as compressai's examples/eval_model does."""
    h, w = x.shape[-2:]
    nh, nw = -(-h // p) * p, -(-w // p) * p
    left, top = (nw - w) // 2, (nh - h) // 2
    pads = (left, nw - w - left, top, nh - h - top)
    return torch.nn.functional.pad(x, pads, mode="constant", value=0), pads


@torch.inference_mode()
def bmshj_point(net: FactorizedPrior, rgb: np.ndarray, device="cpu") -> dict:
    """net must be in eval mode with net.update() done."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
    xp, (left, _, top, _) = pad64(x)
    enc = net.compress(xp)
    n_bytes = sum(len(s[0]) for s in enc["strings"])
    x_hat = net.decompress(enc["strings"], enc["shape"])["x_hat"][..., top:top + h, left:left + w]
    rec = tiling.to_uint8(x_hat[0])
    return {"bpp": 8 * n_bytes / (h * w), "psnr": metrics.psnr(rgb, rec), "bytes": n_bytes}


def eval_anr(model_path: Path, images, lambdas, device="cpu") -> list[dict]:
    codec = Codec(device=device, model=model_path)
    rows = []
    for qi, lam in enumerate(lambdas):
        for name, rgb in images:
            rows.append({"lambda": lam, "image": name, **anr_point(codec, rgb, qi + 1)})
    return rows


def eval_bmshj(model: FactorizedPrior, lam: float, images, device="cpu") -> list[dict]:
    net = copy.deepcopy(model).to(device).eval()
    net.update(force=True)
    return [{"lambda": lam, "image": name, **bmshj_point(net, rgb, device)} for name, rgb in images]


def cached_eval(run_dir: Path, step: int, images, compute) -> list[dict]:
    """Evaluation rows for this checkpoint step and image list, computed once."""
    path = run_dir / "eval.json"
    names = [n for n, _ in images]
    if path.exists():
        c = json.loads(path.read_text())
        if c.get("step") == step and c.get("images") == names:
            return c["rows"]
    rows = compute()
    path.write_text(json.dumps({"step": step, "images": names, "rows": rows}, indent=1) + "\n")
    return rows


def rd_curve(rows: list[dict], lambdas) -> dict:
    """Per lambda: mean bpp and mean RGB PSNR over images (as CompressAI's result files)."""
    out = {"lambda": list(lambdas), "bpp": [], "psnr": []}
    for lam in lambdas:
        sel = [r for r in rows if r["lambda"] == lam]
        out["bpp"].append(float(np.mean([r["bpp"] for r in sel])))
        out["psnr"].append(float(np.mean([r["psnr"] for r in sel])))
    return out


def bd(anchor: dict, test: dict) -> dict:
    """BD-rate (%) and BD-PSNR (dB) of test against anchor; None where the curves do not overlap."""
    return {"bd_rate_percent": metrics.bd_rate(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"]),
            "bd_psnr_db": metrics.bd_psnr(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"])}


# -- cost ------------------------------------------------------------------------------------

def anr_cost(model: AnrModel, size=MAC_SIZE) -> dict:
    net = copy.deepcopy(model).cpu().eval()
    h, w = size
    px = h * w
    x = torch.rand(1, 3, h, w)
    y_hat = torch.zeros(net.config.latent_channels, h // 16, w // 16)

    def decode():
        tok = tiling.tokens(net, y_hat, 0)
        return tiling.render(net.anr, tok, w, h, w, h, QUERIES_PER_CHUNK)

    dec = [net.token_net, net.anr]
    return {"parameters": sum(p.numel() for p in net.parameters()),
            "decoder_parameters": sum(p.numel() for m in dec for p in m.parameters()) + net.log_gain.numel(),
            "encoder_macs_per_px": macs(lambda: net.analysis(x, 0)) / px,
            "decoder_macs_per_px": macs(decode) / px}


def bmshj_cost(model: FactorizedPrior, size=MAC_SIZE) -> dict:
    net = copy.deepcopy(model).cpu().eval()
    h, w = size
    x = torch.rand(1, 3, h, w)
    y = torch.zeros(1, net.M, h // 16, w // 16)
    return {"parameters": sum(p.numel() for p in net.parameters()),
            "decoder_parameters": sum(p.numel() for p in net.g_s.parameters()),
            "encoder_macs_per_px": macs(lambda: net.g_a(x)) / (h * w),
            "decoder_macs_per_px": macs(lambda: net.g_s(y)) / (h * w)}


# -- output ----------------------------------------------------------------------------------

def fairness_notes(a) -> list[str]:
    n = len(a.lambdas)
    return [
        f"Same data stream (CropSampler seed {a.seed} over the training cache; every run sees the same "
        f"{a.batch}x{a.crop}x{a.crop} batches), same loss (lambda*255^2*MSE + bpp), same optimiser "
        f"(Adam lr {a.lr:g}, {warmup_steps(a.steps)}-step linear warm-up, last {a.anneal_frac:g} of the steps at lr/10, "
        f"grad-norm clip {a.clip:g}; quantiles: aux loss, Adam {AUX_LR:g}).",
        f"ANR is ONE variable-rate model trained for {a.steps} steps in total, each sample drawing one of "
        f"the {n} lambdas, so about {a.steps // n} steps' worth of samples per lambda. bmshj2018-factorized "
        f"is single-rate: {n} models, EACH trained for the full {a.steps} steps ({n * a.steps} in all). "
        f"This favours the baseline.",
        f"bmshj uses N={a.bmshj_n}, M={a.bmshj_m} for every lambda (compressai uses 192/320 above its "
        f"quality 5, lambda 0.025), trained with compressai's additive-noise proxy; ANR trains its "
        f"decoder on straight-through rounded latents (its project recipe), without super-resolution batches.",
        "Bits: ANR from the whole .anr file (container header, model hash and checksums included); "
        "bmshj from compressai's strings only (no header), as compressai's own evaluation counts them. "
        "This favours the baseline slightly.",
        "Both far from converged at this budget (published curves take ~10^5-10^6 steps): this compares "
        "what each architecture learns in the same short CPU budget, not final quality.",
    ]


def write_plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for key, style, label in (("anr", "o-", "ANR codec (this project)"),
                              ("bmshj2018-factorized", "s-", "bmshj2018-factorized (compressai arch.)")):
        c = result["rd"][key]
        ax.plot(c["bpp"], c["psnr"], style, label=f"{label}, {result['settings']['steps']} steps")
        for b, p, lam in zip(c["bpp"], c["psnr"], c["lambda"]):
            ax.annotate(f"λ={lam:g}", (b, p), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ref = result.get("published_bmshj")
    if ref:
        ax.plot(ref["bpp"], ref["psnr"], "--", color="gray", lw=1,
                label="bmshj2018-factorized, published (fully trained, all 24 images)")
    ax.set_xlabel("bits per pixel (real bytes)")
    ax.set_ylabel("RGB PSNR (dB)")
    ax.set_title(f"Kodak ({len(result['images'])} image(s)), trained from scratch, same budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def published_bmshj(max_bpp: float) -> dict | None:
    if not PUBLISHED.exists():
        return None
    c = read_reference(PUBLISHED).get(PUBLISHED_CODEC, {"bpp": [], "psnr-rgb": []})
    pts = [(b, p) for b, p in zip(c["bpp"], c["psnr-rgb"]) if b <= max_bpp]
    return ({"source": str(PUBLISHED.name), "codec": PUBLISHED_CODEC,
             "bpp": [b for b, _ in pts], "psnr": [p for _, p in pts]} if pts else None)


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _rel(path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def markdown(result: dict) -> str:
    s, rd, cost, tr = result["settings"], result["rd"], result["cost"], result["training"]
    a, b = rd["anr"], rd["bmshj2018-factorized"]
    lines = [
        "# Paper study: attention beats linear, at codec level (rate-distortion)",
        "",
        f"Generated by `benchmarks/paper/rd_compare.py`; raw numbers in `{result['outputs']['json']}`, "
        f"plot in `{result['outputs']['png']}`.",
        "",
        "Command:",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"Kodak, {len(result['images'])} image(s); {s['steps']} steps, batch {s['batch']}, crop {s['crop']}, "
        f"lambdas {', '.join(f'{l:g}' for l in s['lambdas'])}; trained on {result['device']}.",
        "",
        "| lambda | ANR bpp | ANR PSNR (dB) | bmshj bpp | bmshj PSNR (dB) |",
        "|---|---|---|---|---|",
    ]
    for i, lam in enumerate(s["lambdas"]):
        lines.append(f"| {lam:g} | {a['bpp'][i]:.4f} | {a['psnr'][i]:.2f} | {b['bpp'][i]:.4f} | {b['psnr'][i]:.2f} |")
    d = result["bd"]
    lines += [
        "",
        f"BD-rate of ANR against bmshj2018-factorized: **{_fmt(d['bd_rate_percent'], '+.1f')} %** "
        f"(negative = ANR needs fewer bits); BD-PSNR {_fmt(d['bd_psnr_db'], '+.2f')} dB. "
        "(n/a: the curves do not overlap in PSNR / rate.)",
        "",
        "| | parameters (all / decoder) | encoder MAC/px | decoder MAC/px | training s/step | training time |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("anr", "ANR codec"), ("bmshj2018-factorized", "bmshj2018-factorized")):
        c = cost[key]
        t = tr[key]
        secs = sum(x["train_seconds"] for x in t) if isinstance(t, list) else t["train_seconds"]
        sps = (statistics.mean(x["s_per_step"] for x in t) if isinstance(t, list) else t["s_per_step"])
        n_models = f" ({len(t)} models)" if isinstance(t, list) else " (1 model)"
        lines.append(f"| {label}{n_models} | {c['parameters'] / 1e6:.2f} M / {c['decoder_parameters'] / 1e6:.2f} M | "
                     f"{c['encoder_macs_per_px'] / 1e3:.1f} k | {c['decoder_macs_per_px'] / 1e3:.1f} k | "
                     f"{sps:.3f} | {secs / 60:.1f} min |")
    lines += ["", f"ANR configuration: `{json.dumps(result['anr_config'])}`.", "",
              "MACs per pixel: torch.utils.flop_counter on a 768x512 input (as benchmarks/speed.py; "
              "softmax, GDN's square root and other element-wise work are not counted).", "",
              "Fairness:", ""]
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


# -- driver ----------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/train",
                   help="training images (never Kodak)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache/train-pixels")
    p.add_argument("--kodak", type=Path, default=ROOT.parent / "shared/data/kodak")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N Kodak images")
    p.add_argument("--out", type=Path, default=ROOT / "runs/paper-rd", help="checkpoints (resumable)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/paper/results")
    p.add_argument("--doc", type=Path, default=ROOT / "docs/paper-study-rd.md")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help="steps of the ANR model AND of each bmshj model (raising it later continues "
                        "finished runs; the lr schedule follows the new total)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lambdas", type=lambda s: tuple(float(v) for v in s.split(",")), default=DEFAULT_LAMBDAS)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--anneal-frac", type=float, default=0.1, help="last fraction of steps at lr/10")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--anr-config", default=DEFAULT_ANR_CONFIG,
                   help="ModelConfig overrides, 'key=value,...' ('' = the project's default config)")
    p.add_argument("--bmshj-n", type=int, default=128)
    p.add_argument("--bmshj-m", type=int, default=192)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--time-steps", type=int, default=0,
                   help="only measure: this many interleaved steps of each model (after 3 warm-up "
                        "steps), print median s/step and the time the full comparison would take")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0 = torch's default). 1 is the default: on the shared 2-core "
                        "machine 2 threads measured 2-4x SLOWER per step whenever anything else ran")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    if len(set(a.lambdas)) != len(a.lambdas) or sorted(a.lambdas) != list(a.lambdas):
        p.error("--lambdas must be increasing and distinct")
    return a


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sampler_for(a) -> CropSampler:
    if not cache_exists(a.cache):
        print(f"building pixel cache in {a.cache} from {a.data} ...", file=sys.stderr)
        build_cache([a.data], a.cache)
    return CropSampler(a.cache, seed=a.seed)


def load_kodak(a) -> list[tuple[str, np.ndarray]]:
    return [(f.name, load_rgb(f)) for f in list_images(a.kodak, a.limit)]


def time_mode(a, device) -> dict:
    """Interleaved steps (both models under the same machine load) -> s/step and estimate."""
    arms = [AnrArm(parse_config(a.anr_config, a.lambdas), a.seed),
            BmshjArm(a.lambdas[len(a.lambdas) // 2], a.bmshj_n, a.bmshj_m, a.seed)]
    trainers = [Trainer(arm, sampler_for(a), a.batch, a.crop, a.lr, 10 ** 9, a.anneal_frac, a.clip, device)
                for arm in arms]
    times = {arm.name: [] for arm in arms}
    for i in range(a.time_steps + TIME_WARMUP):
        for t in trainers:  # interleaved: both models see the same load on a shared machine
            r = t.step()
            if i >= TIME_WARMUP:
                times[t.arm.name].append(r["s"])
    t_anr = statistics.median(times["anr"])
    t_b = statistics.median(times[arms[1].name])
    n = len(a.lambdas)
    # Evaluation time: one Kodak-sized image through each untrained model (real coding).
    eval_s = None
    if a.kodak.is_dir():
        img = load_kodak(argparse.Namespace(kodak=a.kodak, limit=1))
        t0 = time.perf_counter()
        path = export_anr(arms[0].model, a.out / "timing" / "anr-untrained.pt")
        eval_anr(path, img, a.lambdas[:1], device)
        t1 = time.perf_counter()
        eval_bmshj(arms[1].model, arms[1].lam, img, device)
        t2 = time.perf_counter()
        n_img = a.limit or len(list_images(a.kodak))
        eval_s = n_img * n * ((t1 - t0) + (t2 - t1))
    train_s = a.steps * (t_anr + n * t_b)
    total = train_s + (eval_s or 0)
    budget_steps = {m: int((m * 60 - (eval_s or 0)) / (t_anr + n * t_b)) for m in (45, 60)}
    out = {"s_per_step": {"anr": round(t_anr, 4), "bmshj2018-factorized": round(t_b, 4)},
           "s_per_step_min": {"anr": round(min(times["anr"]), 4),
                              "bmshj2018-factorized": round(min(times[arms[1].name]), 4)},
           "timed_steps": a.time_steps, "batch": a.batch, "crop": a.crop, "threads": torch.get_num_threads(),
           "steps": a.steps, "train_estimate_min": round(train_s / 60, 1),
           "eval_estimate_min": None if eval_s is None else round(eval_s / 60, 1),
           "total_estimate_min": round(total / 60, 1), "steps_for_45_60_min": budget_steps,
           "parameters": {arm.name: sum(p.numel() for p in arm.model.parameters()) for arm in arms}}
    print(json.dumps(out, indent=2))
    print(f"estimate: 1 ANR run + {n} bmshj runs x {a.steps} steps = {train_s / 60:.1f} min training"
          + (f" + {eval_s / 60:.1f} min evaluation" if eval_s else "") + f" = {total / 60:.1f} min; "
          f"{budget_steps[45]}-{budget_steps[60]} steps would take 45-60 min", file=sys.stderr)
    return out


def main(argv=None) -> dict | None:
    a = parse_args(argv)
    device = pick_device(a.device)
    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    # Ctrl-C / SIGTERM while training: finish the step, checkpoint, stop (re-run to resume).
    stop = {"flag": False}
    old = {} if a.time_steps else {sig: signal.signal(sig, lambda *_: stop.__setitem__("flag", True))
                                   for sig in (signal.SIGTERM, signal.SIGINT)}
    try:  # handlers and thread count restored: main() is also called from tests
        if a.time_steps:
            return time_mode(a, device)
        if not a.kodak.is_dir():
            raise SystemExit(f"{a.kodak}: not a folder (Kodak is needed for the evaluation)")
        return run(a, device, stop, argv)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)


def run(a, device, stop: dict, argv) -> dict | None:
    images = load_kodak(a)

    n = len(a.lambdas)
    print(f"ANR: 1 variable-rate model x {a.steps} steps (shared by {n} lambdas); "
          f"bmshj2018-factorized: {n} models x {a.steps} steps each", file=sys.stderr)
    config = parse_config(a.anr_config, a.lambdas)
    anr = AnrArm(config, a.seed)
    trainer = Trainer(anr, sampler_for(a), a.batch, a.crop, a.lr, a.steps, a.anneal_frac, a.clip, device)
    training = {"anr": train_arm(trainer, a.out / anr.name, a.ckpt_every, a.log_every, stop)}
    bmshj, training["bmshj2018-factorized"] = [], []
    for lam in a.lambdas:
        if stop["flag"]:
            break
        arm = BmshjArm(lam, a.bmshj_n, a.bmshj_m, a.seed)
        t = Trainer(arm, sampler_for(a), a.batch, a.crop, a.lr, a.steps, a.anneal_frac, a.clip, device)
        training["bmshj2018-factorized"].append({"lambda": lam, **train_arm(t, a.out / arm.name, a.ckpt_every,
                                                                             a.log_every, stop)})
        bmshj.append(arm)
    if stop["flag"] or not training["anr"]["finished"]:
        print("stopped before every model finished training; re-run the same command to resume",
              file=sys.stderr)
        return None

    # Evaluate on the CPU-independent path the codec ships with, with real bytes.
    print(f"evaluating on {len(images)} Kodak image(s) ...", file=sys.stderr)
    run = a.out / anr.name
    model_path = export_anr(anr.model, run / "anr-paper-rd.pt", trainer.step_no, trainer.elapsed)
    rows = {"anr": cached_eval(run, trainer.step_no, images,
                               lambda: eval_anr(model_path, images, a.lambdas, device))}
    rows["bmshj2018-factorized"] = []
    for arm in bmshj:
        rows["bmshj2018-factorized"] += cached_eval(a.out / arm.name, a.steps, images,
                                                    lambda arm=arm: eval_bmshj(arm.model, arm.lam, images, device))
    rd = {k: rd_curve(v, a.lambdas) for k, v in rows.items()}
    cost = {"anr": anr_cost(anr.model), "bmshj2018-factorized": bmshj_cost(bmshj[0].model)}
    argv_list = sys.argv[1:] if argv is None else list(argv)
    result = {
        "command": "nice -n 10 python benchmarks/paper/rd_compare.py" + (" " + shlex.join(argv_list) if argv_list else ""),
        "device": device.type, "torch_threads": torch.get_num_threads(),
        "dataset": str(a.kodak), "images": [nm for nm, _ in images],
        "settings": {"steps": a.steps, "batch": a.batch, "crop": a.crop, "lambdas": list(a.lambdas), "lr": a.lr,
                     "anneal_frac": a.anneal_frac, "clip": a.clip, "seed": a.seed, "aux_lr": AUX_LR,
                     "warmup_steps": warmup_steps(a.steps), "train_data": str(a.data)},
        "anr_config": config.to_dict(),
        "bmshj_config": {"N": a.bmshj_n, "M": a.bmshj_m},
        "training": training, "cost": cost, "rd": rd,
        "bd": bd(rd["bmshj2018-factorized"], rd["anr"]),
        "bd_method": "anr_codec.metrics: PCHIP over the overlapping range, log rate; anchor = bmshj, test = ANR",
        "published_bmshj": published_bmshj(max(rd["bmshj2018-factorized"]["bpp"] + rd["anr"]["bpp"]) * 1.3),
        "notes": fairness_notes(a),
        "per_image": rows,
    }
    a.results.mkdir(parents=True, exist_ok=True)
    json_path, png_path = a.results / "rd_compare.json", a.results / "rd_compare.png"
    result["outputs"] = {"json": _rel(json_path), "png": _rel(png_path), "doc": _rel(a.doc)}
    json_path.write_text(json.dumps(_finite(result), indent=2, allow_nan=False) + "\n")
    write_plot(result, png_path)
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    a.doc.write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {json_path}, {png_path}, {a.doc}", file=sys.stderr)
    return result


if __name__ == "__main__":
    import check_checkout  # benchmarks/ is on sys.path (above): measure this checkout, no other
    check_checkout.require()
    main()
