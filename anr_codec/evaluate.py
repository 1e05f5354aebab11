"""Evaluation harness: rate-distortion of anr beside Pillow's classic codecs, measured in
one run on the same images, Bjontegaard deltas, an RD plot, and super-resolution quality.

    result = run_eval("kodak/", qualities=[1, 4, 7], baselines=["jpeg", "webp"])
    write_json(result, "rd.json"); plot_rd(result, "rd.png")
    sr = run_eval_sr("Set5/", scales=(2, 3, 4), quality=7)

Every bpp comes from the real encoded byte count (headers included); PSNR and MS-SSIM are
over RGB; the per-setting values are means over images, like CompressAI's result files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import metrics
from .errors import AnrError
from .images import IMAGE_SUFFIXES, open_image, to_planes

METRIC_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")
BD_METHOD = ("Bjontegaard delta, PCHIP (Fritsch-Carlson) over the overlapping range, log rate; "
             "anchor = the other codec, test = anr; negative BD-rate = anr needs fewer bits")

Progress = Callable[[int, int, str], None]   # (done, total, what is running now)


# -- images ---------------------------------------------------------------------------------

def list_images(folder, limit: int | None = None) -> list[Path]:
    """Image files in `folder` (not recursive), sorted by name, the first `limit` of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnrError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise AnrError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files[:limit] if limit else files


def load_rgb(path) -> np.ndarray:
    """HxWx3 uint8; grayscale comes back as gray RGB, alpha is dropped."""
    return to_planes(open_image(path))[0]


def _decoded_rgb(img: Image.Image) -> np.ndarray:
    return to_planes(img)[0]


# -- codecs under test ----------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    """A Pillow codec swept over one setting; `save` turns (RGB image, setting) into bytes."""
    key: str
    name: str
    setting: str
    settings: tuple
    options: str
    feature: str
    save: Callable[[Image.Image, object], bytes]

    def available(self) -> bool:
        from PIL import features
        return bool(features.check(self.feature))

    def description(self) -> str:
        import PIL
        return f"Pillow {PIL.__version__} {self.name}, {self.options}, {self.setting} {_span(self.settings)}"


def _span(values) -> str:
    return f"{values[0]}..{values[-1]}" if len(values) > 1 else str(values[0])


def _saver(fmt: str, **fixed) -> Callable[[Image.Image, object], bytes]:
    def save(img: Image.Image, value) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **fixed, **_setting_kwargs(fmt, value))
        return buf.getvalue()
    return save


def _setting_kwargs(fmt: str, value) -> dict:
    if fmt == "JPEG2000":
        # quality_layers holds a compression ratio against raw 24-bit RGB: 240 -> 0.1 bpp.
        return {"quality_mode": "rates", "quality_layers": [value]}
    return {"quality": value}


BASELINES: dict[str, Baseline] = {b.key: b for b in (
    Baseline("jpeg", "JPEG", "quality", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
             "libjpeg defaults (4:2:0)", "jpg", _saver("JPEG")),
    Baseline("webp", "WebP", "quality", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
             "method=6", "webp", _saver("WEBP", method=6)),
    Baseline("jpeg2000", "JPEG 2000", "compression ratio", (240, 160, 120, 96, 80, 64, 48, 40, 32, 24, 16, 12),
             "OpenJPEG, irreversible 9/7, one layer", "jpg_2000", _saver("JPEG2000", irreversible=True)),
    Baseline("avif", "AVIF", "quality", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90),
             "4:4:4, speed=6", "avif", _saver("AVIF", subsampling="4:4:4", speed=6)),
)}


def available_baselines() -> list[str]:
    return [k for k, b in BASELINES.items() if b.available()]


def _pillow_decode(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    return _decoded_rgb(img)


# -- measuring ------------------------------------------------------------------------------

def measure(rgb: np.ndarray, encode: Callable[[], bytes], decode: Callable[[bytes], np.ndarray],
            ms_ssim: bool = True) -> dict:
    """One image through one codec setting: bpp of the real bytes, RGB PSNR, MS-SSIM, seconds."""
    t0 = time.perf_counter()
    data = encode()
    t1 = time.perf_counter()
    rec = decode(data)
    t2 = time.perf_counter()
    if rec.shape != rgb.shape:
        raise AnrError(f"decoded image has shape {rec.shape}, expected {rgb.shape}")
    return {"bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1]),
            "psnr-rgb": metrics.psnr(rgb, rec),
            "ms-ssim-rgb": metrics.ms_ssim_rgb(rgb, rec) if ms_ssim else None,
            "encoding_time": t1 - t0,
            "decoding_time": t2 - t1}


def mean_or_none(values) -> float | None:
    """Mean over images; None if any image lacks the value, so a mean never mixes image sets."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def codec_result(name: str, description: str, setting: str, settings, per_setting: list[list[dict]]) -> dict:
    """A CompressAI-shaped result object: one mean per setting for each metric."""
    return {"name": name, "description": description,
            "settings": {"name": setting, "values": list(settings)},
            "results": {k: [mean_or_none(m[k] for m in rows) for rows in per_setting] for k in METRIC_KEYS}}


class _Ticker:
    """Counts finished measurements for a progress callback."""

    def __init__(self, total: int, progress: Progress | None):
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self, label: str):
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, label)


def _sweep(images, settings, encode, decode, key: str, tick: _Ticker, rows_out: list | None,
           ms_ssim: bool) -> list[list[dict]]:
    """Measure every image at every setting; per-image rows go to rows_out when given."""
    per_setting = []
    for value in settings:
        rows = []
        for name, rgb in images:
            m = measure(rgb, lambda: encode(rgb, value), decode, ms_ssim)
            rows.append(m)
            if rows_out is not None:
                rows_out.append({"codec": key, "setting": value, "image": name, **m})
            tick(f"{key} {value} {name}")
        per_setting.append(rows)
    return per_setting


def _anr_codec(device: str, model, refine: int = 0):
    from .codec import Codec
    return Codec(device=device, model=model, refine=refine)


def _warm_up(codec, quality: int) -> None:
    """One small untimed round trip, so one-off start-up work does not land in the first timing."""
    codec.decode(codec.encode(np.full((64, 64, 3), 128, np.uint8), quality=quality))


def _check_qualities(codec, qualities) -> list[int]:
    allowed = codec.qualities()
    qs = list(allowed) if not qualities else [int(q) for q in qualities]
    bad = [q for q in qs if q not in allowed]
    if bad:
        raise AnrError(f"quality must be in {allowed[0]}..{allowed[-1]}, got {bad[0]}")
    return qs


def _check_baselines(keys) -> list[str]:
    if keys is None:
        return available_baselines()
    out = []
    for k in dict.fromkeys(keys):  # each once, in the order given
        if k not in BASELINES:
            raise AnrError(f"unknown baseline {k!r} (choose from {', '.join(BASELINES)})")
        if not BASELINES[k].available():
            raise AnrError(f"this Pillow cannot write {BASELINES[k].name} ({BASELINES[k].feature} support missing)")
        out.append(k)
    return out


def run_eval(folder, qualities=None, baselines=None, device: str = "auto", model=None,
             limit: int | None = None, per_image: bool = False, reference: dict | None = None,
             ms_ssim: bool = True, progress: Progress | None = None, refine: int = 0) -> dict:
    """RD of anr at `qualities` (default: all) and of each Pillow baseline (default: every one
    this Pillow supports) on the images in `folder`, with BD figures of anr against each.

    `reference` (from `read_reference`) adds published curves: anr's BD figures against them
    go in "bd_reference" and the curves in "reference" (for the plot). MS-SSIM is the
    slowest measurement (about a second per Kodak image on a small CPU): `ms_ssim=False`
    leaves it out. `refine` encodes with that many steps of latent refinement."""
    keys = _check_baselines(baselines)
    files = list_images(folder, limit)
    codec = _anr_codec(device, model, refine)
    qs = _check_qualities(codec, qualities)
    images = [(f.name, load_rgb(f)) for f in files]
    tick = _Ticker(len(images) * (len(qs) + sum(len(BASELINES[k].settings) for k in keys)), progress)
    rows: list | None = [] if per_image else None

    def anr_encode(rgb, q):
        return codec.encode(rgb, quality=q)

    def anr_decode(data):
        return _decoded_rgb(codec.decode(data))

    _warm_up(codec, qs[0])
    m = codec.model
    codecs = {"anr": codec_result(
        "anr", f"anr-codec, model {m.name} ({m.sha256.hex()[:12]}), device {codec.device.type}"
               + (f", {refine} refinement steps" if refine else ""),
        "quality", qs, _sweep(images, qs, anr_encode, anr_decode, "anr", tick, rows, ms_ssim))}
    for k in keys:
        b = BASELINES[k]
        codecs[k] = codec_result(b.name, b.description(), b.setting, b.settings,
                                 _sweep(images, b.settings, lambda rgb, v, b=b: b.save(Image.fromarray(rgb), v),
                                        _pillow_decode, k, tick, rows, ms_ssim))
    result = {"dataset": str(folder), "images": [n for n, _ in images], "model": m.name,
              "device": codec.device.type, "refine": refine, "bd_method": BD_METHOD, "codecs": codecs,
              "bd": {k: bd_against(codecs[k]["results"], codecs["anr"]["results"]) for k in keys},
              "notes": _notes(images, ms_ssim)}
    if reference:
        result["reference"] = reference
        result["bd_reference"] = {k: bd_against(c, codecs["anr"]["results"]) for k, c in reference.items()}
    if rows is not None:
        result["per_image"] = rows
    return result


def bd_against(anchor: dict, test: dict) -> dict:
    """BD-rate (%) and BD-PSNR (dB) of `test` against `anchor` (both with bpp and psnr-rgb
    lists); None where the curves do not overlap."""
    def pts(r):
        keep = [i for i, (b, p) in enumerate(zip(r["bpp"], r["psnr-rgb"])) if b is not None and p is not None]
        return [r["bpp"][i] for i in keep], [r["psnr-rgb"][i] for i in keep]
    ra, pa = pts(anchor)
    rt, pt = pts(test)
    return {"bd_rate_percent": metrics.bd_rate(ra, pa, rt, pt), "bd_psnr_db": metrics.bd_psnr(ra, pa, rt, pt)}


def _notes(images, ms_ssim: bool) -> list[str]:
    notes = []
    small = sum(min(rgb.shape[:2]) < metrics.MS_SSIM_MIN_SIDE for _, rgb in images)
    if not ms_ssim:
        notes.append("MS-SSIM not measured (switched off)")
    elif not metrics.have_ms_ssim():
        notes.append("MS-SSIM not measured: pytorch_msssim is not installed (pip install 'anr-codec[eval]')")
    elif small:
        notes.append(f"MS-SSIM is null: {small} image(s) have a side under {metrics.MS_SSIM_MIN_SIDE} px, "
                     f"too small for its five scales")
    return notes


# -- output ---------------------------------------------------------------------------------

def _finite(obj):
    """JSON has no Infinity/NaN: a lossless point's infinite PSNR becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(result: dict) -> str:
    return json.dumps(_finite(result), indent=2, allow_nan=False) + "\n"


def write_json(result: dict, path) -> None:
    Path(path).write_text(to_json(result))


def read_reference(path) -> dict:
    """Published curves from a TSV with a header row: `codec`, `bpp`, `psnr_rgb` (or `psnr`)
    and optionally `ms_ssim_rgb`; lines starting with # are comments. -> {codec: results}."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    if not rows or "codec" not in rows[0] or "bpp" not in rows[0]:
        raise AnrError(f"{path}: expected a tab-separated table with columns codec, bpp, psnr_rgb")
    psnr_col = "psnr_rgb" if "psnr_rgb" in rows[0] else "psnr"
    if psnr_col not in rows[0]:
        raise AnrError(f"{path}: no psnr_rgb or psnr column")
    curves: dict[str, dict] = {}
    for r in rows:
        c = curves.setdefault(r["codec"], {"bpp": [], "psnr-rgb": [], "ms-ssim-rgb": []})
        try:
            c["bpp"].append(float(r["bpp"]))
            c["psnr-rgb"].append(float(r[psnr_col]))
            c["ms-ssim-rgb"].append(float(r["ms_ssim_rgb"]) if r.get("ms_ssim_rgb") else None)
        except ValueError:
            raise AnrError(f"{path}: row for {r['codec']!r} has a value that is not a number") from None
    return curves


def plot_rd(result: dict, path, title: str | None = None) -> None:
    """PSNR (and MS-SSIM in dB where measured) against bpp for every codec in `result`;
    published reference curves, when present, are drawn dashed in the colour of the
    measured codec of the same key (jpeg, webp, ...)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = result["codecs"]
    refs = result.get("reference") or {}
    colours = _colours(list(measured) + [k for k in refs if k not in measured])
    panels = [("psnr-rgb", "RGB PSNR (dB)", lambda v: v)]
    if any(v is not None for c in measured.values() for v in c["results"]["ms-ssim-rgb"]):
        panels.append(("ms-ssim-rgb", "MS-SSIM (dB)", lambda v: -10 * math.log10(max(1 - v, 1e-10))))
    labels = [c["name"] for c in measured.values()] + [f"{k} (published)" for k in refs]
    legend_in = 0.5 + 0.055 * max(len(t) for t in labels)   # about 0.055 in per character at 7 pt
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + legend_in, 4.8), squeeze=False)
    max_bpp = max((b for c in measured.values() for b in c["results"]["bpp"] if b is not None), default=1.0)
    for ax, (key, label, tf) in zip(axes[0], panels):
        for k, r in refs.items():
            _line(ax, r, key, tf, f"{k} (published)", dict(color=colours[k], linestyle="--", linewidth=1))
        for k, c in measured.items():
            _line(ax, c["results"], key, tf, c["name"],
                  dict(color=colours[k], marker="o", markersize=3, linewidth=2.2 if k == "anr" else 1.2))
        ax.set_xlim(0, max_bpp * 1.05)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    # One legend beside the panels: with published curves it is too long to sit on the data.
    handles, names = axes[0][0].get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: labels.index(names[i]))  # anr, measured, published
    fig.legend([handles[i] for i in order], [names[i] for i in order], loc="center right", fontsize=7,
               frameon=False)
    where = Path(result["dataset"]).resolve().name or result["dataset"]
    fig.suptitle(title or f"{where} ({len(result['images'])} images), model {result['model']}")
    fig.tight_layout(rect=(0, 0, 1 - legend_in / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _colours(keys: list[str]) -> dict[str, object]:
    """anr in black; every other codec its own colour, the same on both panels."""
    import matplotlib
    palette = [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 == 0]
    palette += [c for i, c in enumerate(matplotlib.colormaps["tab20"].colors) if i % 2 == 1]
    others = [k for k in keys if k != "anr"]
    out = {k: palette[i % len(palette)] for i, k in enumerate(others)}
    out["anr"] = "black"
    return out


def _line(ax, r: dict, key: str, tf, label: str, style: dict) -> None:
    pts = sorted((b, tf(v)) for b, v in zip(r["bpp"], r.get(key, [])) if b is not None and v is not None
                 and math.isfinite(v))
    if pts:
        ax.plot(*zip(*pts), label=label, **style)


# -- super-resolution -----------------------------------------------------------------------

SR_METHODS = ("anr", "anr+bicubic", "bicubic")


def mod_crop(img: Image.Image, scale: int) -> Image.Image:
    """Crop right and bottom so both sides are multiples of `scale` (the SR convention)."""
    w, h = img.width - img.width % scale, img.height - img.height % scale
    return img.crop((0, 0, w, h))


def sr_source(img: Image.Image) -> Image.Image:
    """The HR image as 8-bit L (gray inputs) or RGB, so Pillow's bicubic applies to it
    (palette images would otherwise be resized nearest-neighbour); alpha is dropped."""
    rgb, _, mode = to_planes(img)
    return Image.fromarray(np.ascontiguousarray(rgb[..., 0]), "L") if mode in ("L", "LA") else Image.fromarray(rgb)


def sr_point(codec, hr: Image.Image, scale: int, quality: int) -> dict:
    """One HR image at one scale: encode the bicubic-downscaled image, then compare against
    the HR (Y, border `scale` shaved) anr decoding straight at HR size, anr at LR size
    upscaled bicubically, and the uncompressed LR upscaled bicubically."""
    hr = mod_crop(hr, scale)
    size = hr.size
    lr = hr.resize((size[0] // scale, size[1] // scale), Image.Resampling.BICUBIC)
    data = codec.encode(lr, quality=quality)
    outs = {"anr": codec.decode(data, size=size),
            "anr+bicubic": codec.decode(data).resize(size, Image.Resampling.BICUBIC),
            "bicubic": lr.resize(size, Image.Resampling.BICUBIC)}
    ref = _decoded_rgb(hr)
    row = {"bpp_lr": 8 * len(data) / (lr.width * lr.height)}
    for k, img in outs.items():
        rec = _decoded_rgb(img)
        row[k] = {"psnr_y": metrics.psnr_y(ref, rec, scale), "ssim_y": metrics.ssim_y(ref, rec, scale)}
    return row


def run_eval_sr(folder, scales=(2, 3, 4), quality: int | None = None, device: str = "auto", model=None,
                limit: int | None = None, per_image: bool = False, progress: Progress | None = None) -> dict:
    """Mean Y-PSNR / SSIM-Y per scale for anr decoded at the HR size, anr + bicubic, and the
    lossless LR + bicubic. `quality` defaults to the model's highest."""
    files = list_images(folder, limit)
    codec = _anr_codec(device, model)
    q = _check_qualities(codec, [quality] if quality is not None else [codec.qualities()[-1]])[0]
    scales = [int(s) for s in scales]
    if any(s < 2 for s in scales):
        raise AnrError(f"scales must be integers >= 2, got {scales}")
    tick = _Ticker(len(files) * len(scales), progress)
    rows = []
    for f in files:
        hr = sr_source(open_image(f))
        for s in scales:
            rows.append({"image": f.name, "scale": s, **sr_point(codec, hr, s, q)})
            tick(f"x{s} {f.name}")
    result = {"dataset": str(folder), "images": [f.name for f in files], "model": codec.model.name,
              "device": codec.device.type, "quality": q,
              "metric": "Y (BT.601, 16..235, unrounded), border of `scale` pixels shaved, mod-crop HR, "
                        "Pillow bicubic downscale",
              "scales": {str(s): _sr_means([r for r in rows if r["scale"] == s]) for s in scales}}
    if per_image:
        result["per_image"] = rows
    return result


def _sr_means(rows: list[dict]) -> dict:
    out = {"images": len(rows), "bpp_lr": float(np.mean([r["bpp_lr"] for r in rows]))}
    for k in SR_METHODS:
        out[k] = {m: float(np.mean([r[k][m] for r in rows])) for m in ("psnr_y", "ssim_y")}
    return out
