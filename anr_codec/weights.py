"""Model files: loading with integrity checks, and the shipped models in pretrained/.

A model file is a `torch.save` dict loaded with `weights_only=True` (it cannot run
code). Its identity is the SHA-256 of its bytes: the manifest beside a shipped model
records it, and every .anr file carries its first 16 bytes, so a file is never decoded
with a model other than the one that wrote it.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .context import ContextCoder
from .entropy import SymbolCoder
from .fixedpoint import ExactParams, FixedPointSynthesis
from .hypercoder import HyperCoder
from .errors import AnrError
from .model import AnrModel, ModelConfig

FORMAT_TAG = "anr-codec-model/3"   # /3 may carry a hyperprior, /2 context tables; /1 and /2 still load
READ_TAGS = ("anr-codec-model/1", "anr-codec-model/2", FORMAT_TAG)
DEFAULT_MODEL = "anr-v2"


def pretrained_dir() -> Path:
    return Path(str(resources.files("anr_codec.pretrained")))


def available_models() -> list[str]:
    return sorted(p.stem for p in pretrained_dir().glob("*.pt"))


@dataclass
class LoadedModel:
    name: str
    sha256: bytes
    net: AnrModel
    tables: list[dict]
    device: torch.device
    gaussian: dict | None = None          # hyperprior models: the latent's Gaussian tables
    _coders: dict = field(default_factory=dict)
    _synthesis: FixedPointSynthesis | None = None

    @property
    def hash16(self) -> bytes:
        return self.sha256[:16]

    @property
    def qualities(self) -> list[int]:
        return list(range(1, self.net.n_qualities + 1))

    @property
    def default_quality(self) -> int:
        """The quality encoding uses when none is given: the model's own choice."""
        return self.net.config.default_quality

    def coder(self, quality: int) -> SymbolCoder | ContextCoder | HyperCoder:
        """The model decides how its symbols are coded: with context tables when it has
        them, with a hyperprior when it is a hyperprior model."""
        if quality not in self._coders:
            t = self.tables[quality - 1]
            if self.gaussian is not None:
                if self._synthesis is None:
                    self._synthesis = FixedPointSynthesis(self.net.hyper.h_s)
                g = self.gaussian
                self._coders[quality] = HyperCoder(SymbolCoder(t), ExactParams(self._synthesis, t, g["thresholds"]),
                                                   g["halves"], g["counts"], self.net.config.latent_channels)
            else:
                self._coders[quality] = ContextCoder(t) if "ctx_counts" in t else SymbolCoder(t)
        return self._coders[quality]


_cache: dict[tuple[str, str], LoadedModel] = {}
_lock = threading.Lock()


def _manifest_sha256(manifest: Path) -> str:
    try:
        sha = json.loads(manifest.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise AnrError(f"model manifest {manifest} is unreadable or has no sha256 field") from None
    if not isinstance(sha, str):
        raise AnrError(f"model manifest {manifest} has an invalid sha256 field")
    return sha


def resolve(name_or_path: str | Path | None) -> tuple[str, Path, str | None]:
    """-> (name, path of the .pt file, expected SHA-256 hex or None)."""
    name_or_path = name_or_path or DEFAULT_MODEL
    p = Path(name_or_path)
    if p.suffix == ".pt" or p.exists():
        manifest = p.with_suffix(".json")
        return p.stem, p, _manifest_sha256(manifest) if manifest.exists() else None
    path = pretrained_dir() / f"{name_or_path}.pt"
    manifest = path.with_suffix(".json")
    if not path.exists() or not manifest.exists():
        have = ", ".join(available_models()) or "none"
        raise AnrError(f"unknown model {name_or_path!r} (installed models: {have})")
    return str(name_or_path), path, _manifest_sha256(manifest)


def installed_hash16(name: str) -> bytes | None:
    """First 16 bytes of an installed model's SHA-256 (from its manifest), by name only.

    .anr headers name the model that wrote them; a hostile name must never become a path
    to open (/dev/zero, another user's file), so only the installed models' names count.
    """
    if name not in available_models():
        return None
    try:
        return bytes.fromhex(_manifest_sha256(pretrained_dir() / f"{name}.json"))[:16]
    except (AnrError, ValueError):
        return None


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    name, path, expected = resolve(name_or_path)
    device = torch.device(device)
    key = (str(path.resolve()), str(device))
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise AnrError(f"cannot read model file {path}: {e.strerror}") from None
        digest = hashlib.sha256(raw).digest()
        if expected is not None and digest.hex() != expected:
            raise AnrError(f"model file {path} does not match its manifest's SHA-256 (altered or corrupt)")
        try:
            blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as e:
            raise AnrError(f"{path} is not a valid model file ({type(e).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") not in READ_TAGS:
            raise AnrError(f"{path} is not an anr-codec model file")
        try:
            net = AnrModel(ModelConfig.from_dict(blob["config"]))
            net.load_state_dict(blob["model"])
            tables = [{k: v.numpy() for k, v in t.items()} for t in blob["tables"]]
            gaussian = {k: v.numpy() for k, v in blob["gaussian"].items()} if blob.get("gaussian") else None
            if (gaussian is None) != (net.hyper is None):
                raise ValueError("hyperprior tables do not match the architecture")
        except Exception as e:
            raise AnrError(f"model file {path} is inconsistent ({type(e).__name__}: {e})") from None
        if len(tables) != net.n_qualities:
            raise AnrError(f"model file {path} has {len(tables)} entropy tables for {net.n_qualities} qualities")
        net.eval().requires_grad_(False).to(device)
        lm = LoadedModel(blob.get("name", name), digest, net, tables, device, gaussian)
        _cache[key] = lm
        return lm


HALF_MIN_NUMEL = 4096   # weight tensors at least this big may be stored as float16


def _stored(v: torch.Tensor, half: bool) -> torch.Tensor:
    """float16 for big float32 weight tensors when `half` (the file halves; loading casts
    back to float32, the decoded pixels move by far less than a grey level); small ones
    (gains, quantiles, biases) stay float32."""
    v = v.detach().cpu().contiguous()
    if half and v.dtype == torch.float32 and v.numel() >= HALF_MIN_NUMEL:
        return v.half()
    return v


def save_model(net: AnrModel, tables: list[dict], path: Path, name: str, step: int = 0,
               elapsed: float = 0.0, gaussian: dict | None = None, half: bool = False) -> bytes:
    """Write a model file; returns its SHA-256. `step`/`elapsed` let training resume from it."""
    blob = {"format": FORMAT_TAG, "name": name, "step": int(step), "elapsed": float(elapsed),
            "config": net.config.to_dict(),
            "model": {k: _stored(v, half) for k, v in net.state_dict().items()},
            "tables": [{k: torch.from_numpy(np.asarray(v)) for k, v in t.items()} for t in tables]}
    if gaussian is not None:
        blob["gaussian"] = {k: torch.from_numpy(np.asarray(v)) for k, v in gaussian.items()}
    buf = io.BytesIO()
    torch.save(blob, buf)
    raw = buf.getvalue()
    path.write_bytes(raw)
    return hashlib.sha256(raw).digest()
