"""CelebA faces for the paper study (issue 7): loading, caching, the fixed split, PSNR.

Source: ../shared/data/faces/celeba_89x109/NNNNNN.jpg (3,000 CelebA aligned faces, 89x109,
research use only: the images stay outside the repository; only a decoded cache under the
git-ignored .cache/ is written).

Preprocessing: a **center crop of 64x64 pixels** from each 89x109 face (no resize: the crop
keeps the face and drops most of the background and hair; left 12, top 22).
Split: file names sorted, the first 2,700 train, the last 300 test (fixed, no shuffling).
Lower training resolutions (e.g. 16x16) are area downscales of the 64x64 crop (see `downscale`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anr_codec.metrics import psnr_from_mse

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FACES = REPO.parent / "shared" / "data" / "faces" / "celeba_89x109"
CACHE = REPO / ".cache" / "faces-64.npy"
CROP = 64
N_TRAIN, N_TEST = 2700, 300


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.jpg"))


def center_crop(img: np.ndarray, size: int = CROP) -> np.ndarray:
    """Center crop an HxWx3 array to size x size."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {w}x{h} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def load_faces(folder: str | Path | None = None, cache: Path = CACHE) -> np.ndarray:
    """All faces as uint8 (N, 64, 64, 3), in sorted file-name order.

    Decoding 3,000 JPEGs takes seconds each run, so the crops are cached as .npy with the
    file names in a sidecar .json; the cache is rebuilt when the folder's names change.
    Without the folder, an existing cache is used as is.
    """
    folder = Path(folder) if folder else DEFAULT_FACES
    names_file = cache.with_suffix(".json")
    names = _names(folder) if folder.is_dir() else None
    if cache.exists() and names_file.exists():
        cached = json.loads(names_file.read_text())
        if names is None or cached == names:
            return np.load(cache)
    if not names:
        raise SystemExit(f"no faces found: {folder} (pass --faces DIR)")
    from PIL import Image
    arr = np.stack([center_crop(np.asarray(Image.open(folder / n).convert("RGB"))) for n in names])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    names_file.write_text(json.dumps(names))
    print(f"cached {len(names)} faces -> {cache}", file=sys.stderr)
    return arr


def split(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split: first 2,700 (sorted names) train, last 300 test."""
    if len(arr) < N_TRAIN + N_TEST:
        raise SystemExit(f"expected {N_TRAIN + N_TEST} faces, found {len(arr)}")
    return arr[:N_TRAIN], arr[-N_TEST:]


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def downscale(x: torch.Tensor, res: int) -> torch.Tensor:
    """Area (box) downscale of (N, 3, S, S) to res x res; identity at res == S.

    Area averaging is the anti-aliased downscale for integer factors (64 -> 32 -> 16)."""
    return x if x.shape[-1] == res else F.interpolate(x, size=(res, res), mode="area")


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image RGB PSNR (dB) of (N, ...) tensors in [0, 1]; predictions are clipped to [0, 1]
    (float, not rounded to 8 bits, as INR papers report)."""
    mse = (pred.clamp(0, 1) - target).pow(2).flatten(1).mean(1).double()
    return torch.tensor([psnr_from_mse(float(m), peak=1.0) for m in mse])


def mean_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of the per-image PSNR (how the test-set PSNR is reported)."""
    return float(psnr(pred, target).mean())
