"""Training data: source images decoded once into a flat uint8 cache, then random crops.

Decoding JPEG/PNG on every step would take most of a 2-core CPU; the cache is one
memory-mapped array plus an index of (offset, height, width), built on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import IMAGE_SUFFIXES


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def cache_exists(cache_dir: Path) -> bool:
    """Whether a finished cache is there (index.json is written last, then renamed in whole)."""
    return (Path(cache_dir) / "index.json").exists()


def build_cache(sources: list[Path], cache_dir: Path) -> None:
    """Decode every image under `sources` into cache_dir/{pixels.u8, index.json}.

    The cache is written into a private directory and renamed into place in one step, so
    several trainers started at once (two seeds on two cores) never see, or clobber, a
    half-written cache: the first rename wins and the others discard their copy.
    """
    cache_dir = Path(cache_dir)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-", dir=cache_dir.parent))
    try:
        index, offset = [], 0
        with open(work / "pixels.u8", "wb") as f:
            for root in sources:
                for p in list_images(root):
                    a = np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8)
                    f.write(a.tobytes())
                    index.append({"file": str(p), "offset": offset, "h": a.shape[0], "w": a.shape[1]})
                    offset += a.size
        (work / "index.json").write_text(json.dumps(index))
        try:
            os.rename(work, cache_dir)  # also replaces an empty directory left by mkdir
        except OSError:
            if not cache_exists(cache_dir):
                raise  # not a lost race: something else is in the way
    finally:
        shutil.rmtree(work, ignore_errors=True)


class CropSampler:
    """Random crops (with flips) from a pixel cache, as float tensors in [0, 1]."""

    def __init__(self, cache_dir: Path, seed: int = 0):
        self.index = json.loads((Path(cache_dir) / "index.json").read_text())
        self.pixels = np.memmap(Path(cache_dir) / "pixels.u8", dtype=np.uint8, mode="r")
        self.rng = np.random.default_rng(seed)
        # Sample images in proportion to their area so every pixel is equally likely.
        areas = np.array([e["h"] * e["w"] for e in self.index], dtype=np.float64)
        self.p = areas / areas.sum()

    def _crop(self, size: int) -> np.ndarray:
        e = self.index[self.rng.choice(len(self.index), p=self.p)]
        h, w = e["h"], e["w"]
        img = self.pixels[e["offset"]:e["offset"] + h * w * 3].reshape(h, w, 3)
        size_y, size_x = min(size, h), min(size, w)
        y = self.rng.integers(0, h - size_y + 1)
        x = self.rng.integers(0, w - size_x + 1)
        c = np.asarray(img[y:y + size_y, x:x + size_x])
        if size_y < size or size_x < size:
            c = np.pad(c, ((0, size - size_y), (0, size - size_x), (0, 0)), mode="edge")
        if self.rng.random() < 0.5:
            c = c[:, ::-1]
        if self.rng.random() < 0.5:
            c = c[::-1]
        return c

    def batch_u8(self, n: int, size: int) -> torch.Tensor:
        """(n, 3, size, size) uint8: a quarter of the bytes of floats to move to a GPU."""
        return torch.from_numpy(np.stack([self._crop(size) for _ in range(n)])).permute(0, 3, 1, 2)

    def batch(self, n: int, size: int) -> torch.Tensor:
        return self.batch_u8(n, size).float().div_(255.0)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def reseed(self, seed) -> None:
        self.rng = np.random.default_rng(seed)


def downscale(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic downscale (what users do before asking for super-resolution)."""
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
