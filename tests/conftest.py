import contextlib
import tracemalloc
from importlib import resources

import numpy as np
import pytest
from PIL import Image


def smooth_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like test image: smooth gradients plus a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 23.0 + c) * np.cos(y / 17.0 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def most_probable(coder, shape: tuple[int, int, int]) -> np.ndarray:
    """A cheapest latent: every symbol the most probable of its channel's table (for the
    context coder, of its first context: all-equal symbols keep the contexts low)."""
    from anr_codec.context import WINDOW, ContextCoder
    if isinstance(coder, ContextCoder):
        best = (coder.probs[:, 0].argmax(-1) - WINDOW).astype(np.int32)
    else:
        best = np.array([coder.lo[c] + int(np.argmin(coder.bits[c][:-1])) for c in range(shape[0])], np.int32)
    return np.broadcast_to(best[:, None, None], shape).copy()


@pytest.fixture(scope="session")
def codec():
    from anr_codec import Codec
    return Codec(quality=3, device="cpu")


@pytest.fixture(scope="session")
def v1_codec():
    """anr-v1 (factorized prior with context tables) is still shipped and its files still
    decode: tests of its own tables pin it, tests of both designs take `each_design`."""
    from anr_codec import Codec
    return Codec(quality=3, device="cpu", model="anr-v1")


@pytest.fixture(scope="module", params=["default", "anr-v1"])
def each_design(request, codec, v1_codec):
    """The default (hyperprior) model, then anr-v1's factorized/context coding."""
    return codec if request.param == "default" else v1_codec


@pytest.fixture(scope="session")
def sample_anr(codec):
    """One encoded 96x64 image shared by tests that only need a valid file."""
    return codec.encode(smooth_image(96, 64))


@pytest.fixture
def png_file(tmp_path):
    p = tmp_path / "img.png"
    Image.fromarray(smooth_image(80, 48)).save(p)
    return p


@contextlib.contextmanager
def allocates_under(max_bytes: int):
    """Fail if the block's Python-side allocations (bytes, numpy arrays) peak at max_bytes or more."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < max_bytes, f"refusing it allocated {peak} bytes"


@pytest.fixture(scope="session")
def photo():
    """A natural 128x96 crop of the bundled sample (a photo, where noise would not do:
    refinement has nothing to gain on noise, and a trained model's quality shows on it)."""
    path = resources.files("anr_codec.samples") / "kodim23.png"
    return np.asarray(Image.open(path).convert("RGB"))[200:296, 300:428]
