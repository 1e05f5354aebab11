"""The whole network: hyper-network encoder, per-quality gains and priors, token network, ANR.

One variable-rate model serves every quality level: quality q multiplies the latent by a
learned per-channel gain before rounding (a finer or coarser quantiser) and divides it
out after, and has its own factorized prior, so the entropy model fits that quality's
symbols exactly. Training draws a quality per sample with its own lambda.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import warnings

import torch
from torch import nn

with warnings.catch_warnings():
    # compressai's import runs torch.jit.script, which warns on every start: noise on stderr.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck

from .anr import ANRDecoder
from .detail import DetailHead
from .encoder import STRIDE, HyperEncoder
from .hyperprior import HyperPrior, factorized_train
from .tokens import ConvTokenNetwork, TokenNetwork

DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.05, 0.1)
# The default of model files that name none (every one before the ladder grew below quality
# 1). Not the shipped model's default: that is `anr_codec.default_quality()`.
LEGACY_DEFAULT_QUALITY = 5

# anr-v1's design: the defaults' differences. (`--config v1` in training.)
V1_DESIGN = {"latent_channels": 128, "stem": "light", "synthesis": "shuffle", "prior": "factorized",
             "dec_depth": 2, "mlp_hidden": 128, "max_freq": 32.0}
# Fields added after anr-v1 shipped: a model file without them is of the v1 design.
LEGACY_DEFAULTS = {"stem": "light", "synthesis": "shuffle", "prior": "factorized", "offset_values": False}


@dataclass
class ModelConfig:
    """Defaults: the conv-token design with a hyperprior (anr-v2)."""
    latent_channels: int = 192
    enc_width: int = 192
    enc_depth: int = 2
    stem: str = "gdn"          # encoder stem: "gdn" (encoder.gdn_stem) or "light" (anr-v1)
    stem_channels: int = 128   # width of the gdn stem
    synthesis: str = "gdn"     # token network: "gdn" (stride 2) or "shuffle" (anr-v1, stride 4)
    synth_channels: int = 128  # width of the gdn token network
    prior: str = "hyper"       # entropy model of the latent: "hyper" (hyperprior.py) or "factorized"
    hyper_channels: int = 128  # channels of the hyperprior's side information z
    dec_width: int = 192
    dec_depth: int = 1
    token_dim: int = 64
    token_res8: int = 0     # residual conv blocks in the token network at stride 8
    token_res4: int = 0     # ... and at stride 4 (data-token resolution)
    mlp_hidden: int = 64
    heads: int = 4
    n_freqs: int = 6
    max_freq: float = 16.0
    threshold: float = 0.01
    offset_values: bool = True   # ANR: per-neighbour value maps (anr.ANRDecoder.value_delta)
    detail_blocks: int = 0       # super-resolution head (detail.py): residual blocks, 0 = none
    detail_width: int = 64
    detail_dim: int = 32
    lambdas: tuple = field(default_factory=lambda: DEFAULT_LAMBDAS)
    # A ladder extended below its quality 1 renumbers every level; the default follows the
    # operating point, not the number (scripts/retune_ladder.py --extend-below).
    default_quality: int = LEGACY_DEFAULT_QUALITY

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lambdas"] = list(self.lambdas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {**LEGACY_DEFAULTS, **{k: v for k, v in d.items() if k in cls.__dataclass_fields__}}
        if "lambdas" in known:
            known["lambdas"] = tuple(float(x) for x in known["lambdas"])
        return cls(**known)


# The conv-token design's values of those fields (`--config conv`: explicit, whatever the
# defaults become).
CONV_TOKENS = {k: getattr(ModelConfig(), k) for k in V1_DESIGN}


class AnrModel(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = c = config or ModelConfig()
        self.encoder = HyperEncoder(c.latent_channels, c.enc_width, c.enc_depth, c.heads,
                                    c.stem, c.stem_channels)
        if c.synthesis == "shuffle":
            self.token_net = TokenNetwork(c.latent_channels, c.dec_width, c.dec_depth, c.heads, c.token_dim,
                                          c.token_res8, c.token_res4)
        elif c.synthesis == "gdn":
            if c.token_res4:
                raise ValueError("the gdn token network grows at stride 8 only (token_res8)")
            self.token_net = ConvTokenNetwork(c.latent_channels, c.dec_width, c.dec_depth, c.heads,
                                              c.token_dim, c.synth_channels, c.token_res8)
        else:
            raise ValueError(f"unknown token network {c.synthesis!r}")
        self.anr = ANRDecoder(c.token_dim, c.heads, c.mlp_hidden, c.n_freqs, c.max_freq, c.threshold,
                              stride=self.token_net.stride, offset_values=c.offset_values)
        # Decodes above the coded size add this head's detail (it never touches scale <= 1).
        self.detail = (DetailHead(c.token_dim, self.token_net.stride, c.detail_width, c.detail_blocks,
                                  c.detail_dim, c.heads) if c.detail_blocks else None)
        nq = len(c.lambdas)
        # Gains start at sqrt(lambda / lambda_max): the quantiser step that balances
        # distortion against rate scales like 1/sqrt(lambda).
        init = torch.tensor([0.5 * math.log(l / max(c.lambdas)) for l in c.lambdas])
        self.log_gain = nn.Parameter(init[:, None].repeat(1, c.latent_channels))
        if c.prior == "factorized":
            self.priors = nn.ModuleList(EntropyBottleneck(c.latent_channels) for _ in range(nq))
            self.hyper = None
        elif c.prior == "hyper":
            self.priors = nn.ModuleList()
            self.hyper = HyperPrior(c.latent_channels, c.hyper_channels, nq)
        else:
            raise ValueError(f"unknown prior {c.prior!r}")

    @property
    def token_stride(self) -> int:
        """Input pixels between neighbouring data tokens."""
        return self.token_net.stride

    @property
    def n_qualities(self) -> int:
        return len(self.config.lambdas)

    def gain(self, qi: torch.Tensor | int) -> torch.Tensor:
        """Per-channel gain for quality index/indices (0-based) -> (C,) or (B, C, 1, 1)."""
        g = self.log_gain[qi].exp()
        return g if g.dim() == 1 else g[:, :, None, None]

    def analysis(self, x: torch.Tensor, qi: int) -> torch.Tensor:
        """Scaled latent for one quality; rounding it (around the prior's medians) gives symbols."""
        return self.encoder(x) * self.gain(qi)[None, :, None, None]

    def medians(self, qi: int) -> torch.Tensor:
        return self.priors[qi].quantiles[:, 0, 1].detach()

    def tokens(self, y_hat_scaled: torch.Tensor, qi: int) -> torch.Tensor:
        return self.token_net(y_hat_scaled / self.gain(qi)[None, :, None, None])

    # -- training ------------------------------------------------------------------
    def forward_train(self, x: torch.Tensor, qi: torch.Tensor):
        """x (B, 3, H, W) multiples of 16; qi (B,) quality indices.

        Returns (tokens, bits per sample). The rate uses additive noise (a smooth proxy)
        while the decoder sees hard-rounded latents through a straight-through estimator,
        so training matches what the decoder receives at test time.
        """
        y = self.encoder(x).float()
        # Likelihoods (differences of sigmoids or erfcs) stay float32, never bfloat16.
        with torch.autocast(x.device.type, enabled=False):
            if self.hyper is not None:
                y_hat, bits = self.hyper.forward_train(y, qi, self.log_gain[qi][:, :, None, None])
            else:
                y_hat, bits = factorized_train(self.priors, y * self.gain(qi), qi)
        return self.token_net(y_hat / self.gain(qi)), bits

    @torch.no_grad()
    def estimate(self, x: torch.Tensor, qi: int):
        """Test-time coding of x (B, 3, H, W) at quality index qi, without the range coder:
        -> (dequantised scaled latent, symbols, estimated bits per sample from the priors'
        likelihoods of the rounded values). For checkpoint comparisons during training."""
        y = self.encoder(x).float()
        g = self.gain(qi)[None, :, None, None]
        if self.hyper is None:
            med = self.medians(qi)[None, :, None, None]
            sym = torch.round(y * g - med)
            _, lik = self.priors[qi](sym + med, training=False)
            return sym + med, sym, -torch.log2(lik).flatten(1).sum(1)
        h = self.hyper
        zg, zm = h.z_gain(qi)[None, :, None, None], h.z_medians(qi)[None, :, None, None]
        z_hat = torch.round(h.h_a(y) * zg - zm) + zm
        _, z_lik = h.z_priors[qi](z_hat, training=False)
        mean, log_scale = h.params(z_hat / zg, self.log_gain[qi], y.shape[-2:])
        sym = torch.round(y * g - mean)
        lik = h.likelihood(sym + mean, mean, log_scale)
        return sym + mean, sym, -(torch.log2(z_lik).flatten(1).sum(1) + torch.log2(lik).flatten(1).sum(1))

    def aux_loss(self) -> torch.Tensor:
        if self.hyper is not None:
            return self.hyper.aux_loss()
        return sum(p.loss() for p in self.priors)


def pad_to_multiple(x: torch.Tensor, m: int = STRIDE) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) on the bottom/right to multiples of m (edges cost few bits)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return x
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
