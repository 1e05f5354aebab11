"""Hyperprior models: the exact fixed-point scales and the coder built on them."""

import numpy as np
import pytest
import torch

from anr_codec.entropy import SymbolCoder
from conftest import most_probable
from anr_codec.errors import AnrError
from anr_codec.export import factorized_tables, gaussian_coding_tables
from anr_codec.fixedpoint import (ACT_BITS, GAIN_BITS, MED_BITS, WEIGHT_BITS, ExactParams, FixedPointSynthesis,
                                  export_tables, latent_gain_tables)
from anr_codec.hypercoder import HyperCoder, z_shape
from anr_codec.hyperprior import HyperPrior


@pytest.fixture(scope="module")
def hyper():
    torch.manual_seed(0)
    h = HyperPrior(latent_channels=24, channels=16, n_qualities=2).eval()
    with torch.no_grad():
        for p in h.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return h


def exact_params(hyper, qi=1, log_gain=None):
    log_gain = torch.full((24,), -0.3) if log_gain is None else log_gain
    t = {**export_tables(hyper, qi), **latent_gain_tables(log_gain)}
    g = gaussian_coding_tables()
    return ExactParams(FixedPointSynthesis(hyper.h_s), t, g["thresholds"]), t, g


def int64_reference(hyper, t, z):
    """The same fixed-point network in pure int64 numpy (floor division, no floats)."""
    def conv(a, w, b):
        o, c, k, _ = w.shape
        p = np.pad(a, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        out = np.zeros((o, a.shape[1], a.shape[2]), np.int64)
        for dy in range(k):
            for dx in range(k):
                out += np.einsum("oc,chw->ohw", w[:, :, dy, dx], p[:, dy:dy + a.shape[1], dx:dx + a.shape[2]])
        return out + b[:, None, None]

    def shift(x, bits):
        return (x + (1 << (bits - 1))) >> bits   # floor(x / 2**bits + 1/2) for int64

    v = z.astype(np.int64) * (1 << MED_BITS) + t["z_med"][:, None, None]
    a = shift(v * t["z_inv_gain"][:, None, None], MED_BITS + GAIN_BITS - ACT_BITS)
    for i, conv_mod in enumerate((hyper.h_s[0][0], hyper.h_s[2][0], hyper.h_s[4])):
        w = np.round(conv_mod.weight.detach().double().numpy() * (1 << WEIGHT_BITS)).astype(np.int64)
        b = np.round(conv_mod.bias.detach().double().numpy() * (1 << (WEIGHT_BITS + ACT_BITS))).astype(np.int64)
        a = shift(conv(a, w, b), WEIGHT_BITS)
        if i < 2:
            c, h, wd = a.shape
            a = a.reshape(c // 4, 2, 2, h, wd).transpose(0, 3, 1, 4, 2).reshape(c // 4, 2 * h, 2 * wd)
            a = np.maximum(a, 0)
    return a


def test_fixed_point_path_is_integer_arithmetic_whatever_the_threads(hyper):
    params, t, _ = exact_params(hyper)
    z = np.random.default_rng(0).integers(-6, 7, (16, 3, 5)).astype(np.int32)
    ref = int64_reference(hyper, t, z)
    assert np.array_equal(params.synthesis(torch.from_numpy(  # the float64 path, inputs as ExactParams makes them
        np.floor((z.astype(np.float64) * 2 ** MED_BITS + t["z_med"][:, None, None]) * t["z_inv_gain"][:, None, None]
                 * 2.0 ** -(MED_BITS + GAIN_BITS - ACT_BITS) + 0.5))).numpy().astype(np.int64), ref)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        m1, i1 = params(z, (11, 19))
        torch.set_num_threads(2)
        m2, i2 = params(z, (11, 19))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(m1, m2) and np.array_equal(i1, i2)
    assert m1.shape == (24, 11, 19) and i1.min() >= 0 and i1.max() < 64


def test_fixed_point_path_tracks_the_float_network(hyper):
    """Same means and scales as the float h_s (to the fixed-point grid), so the rate the
    model trained for is the rate the file gets."""
    log_gain = torch.linspace(-1, 0.5, 24)
    params, t, g = exact_params(hyper, 1, log_gain)
    z = np.random.default_rng(1).integers(-4, 5, (16, 2, 3)).astype(np.int32)
    means, idx = params(z, (8, 12))
    with torch.no_grad():
        z_hat = (torch.from_numpy(z).float() + hyper.z_medians(1)[:, None, None]) / hyper.z_gain(1)[:, None, None]
        mean_f, log_scale_f = hyper.params(z_hat[None], log_gain, (8, 12))
    assert (means - mean_f[0]).abs().max() < 2e-2 * (1 + mean_f.abs().max())
    # Each index is the first table scale that covers the float scale (up to the grid).
    table = np.exp(g["thresholds"] / 2 ** ACT_BITS)
    s = log_scale_f[0].exp().numpy()
    lower = np.concatenate([[0], table])[idx]
    upper = np.concatenate([table, [np.inf]])[idx]
    assert (s > lower * 0.99).all() and (s <= upper * 1.01).all()


def test_hyper_coder_round_trip_and_hostile_payloads(hyper):
    params, t, g = exact_params(hyper)
    coder = HyperCoder(SymbolCoder(factorized_tables(hyper.z_priors[1])), params, g["halves"], g["counts"], 24)
    shape = (24, 9, 14)
    rng = np.random.default_rng(2)
    z = rng.integers(-3, 4, z_shape(shape, 16)).astype(np.int32)
    means, idx = coder.means_and_indices(z, shape[1:])
    y = np.round(rng.normal(0, 1 + idx, shape)).astype(np.int32)
    y[0, 0, 0] = 5000                                   # an escape
    payload = coder.encode(z, y, idx)
    z2, y2, m2 = coder.decode(payload, shape)
    assert np.array_equal(z, z2) and np.array_equal(y, y2) and torch.equal(means, m2)
    with pytest.raises(AnrError):
        coder.decode(payload[: len(payload) // 2 // 4 * 4], shape)
    with pytest.raises(AnrError, match="channels"):
        coder.decode(payload, (23, 9, 14))
    with pytest.raises(AnrError):                       # a header claiming a far bigger latent
        coder.decode(payload, (24, 900, 1400))


def test_fixed_point_path_in_row_bands_is_identical(hyper, monkeypatch):
    params, _, _ = exact_params(hyper)
    z = np.random.default_rng(3).integers(-5, 6, (16, 23, 4)).astype(np.int32)
    one_m, one_i = params(z, (90, 16))
    monkeypatch.setattr(FixedPointSynthesis, "ROWS", 3)
    m, i = params(z, (90, 16))
    assert torch.equal(m, one_m) and np.array_equal(i, one_i)
    monkeypatch.setattr(FixedPointSynthesis, "HALO", 1)   # one row short: some values change
    assert not torch.equal(params(z, (90, 16))[0], one_m)


def test_refinement_of_a_hyperprior_model_codes_and_helps(tmp_path):
    """A fresh hyperprior model, exported: refined files decode, and refinement lowers
    the image's own RD loss (estimated from the file: its bytes and its decoded MSE)."""
    from anr_codec import Codec
    from anr_codec.export import export
    from anr_codec.model import CONV_TOKENS, AnrModel, ModelConfig
    from conftest import smooth_image
    torch.manual_seed(0)
    net = AnrModel(ModelConfig(**{**CONV_TOKENS, "enc_width": 32, "dec_width": 32, "stem_channels": 16,
                                  "synth_channels": 16, "token_dim": 16, "hyper_channels": 16}))
    ckpt = tmp_path / "c.pt"
    torch.save({"config": net.config.to_dict(), "model": net.state_dict(), "step": 0}, ckpt)
    export(ckpt, tmp_path / "m.pt", "anr-hyper-test")
    # float16 storage: half the bytes, float32 once loaded, nearly the same pixels
    export(ckpt, tmp_path / "h.pt", "anr-hyper-half", half=True)
    stored = torch.load(tmp_path / "h.pt", weights_only=True)["model"]
    assert stored["token_net.up.2.0.weight"].dtype == torch.float16           # 4096+ values
    assert stored["log_gain"].dtype == torch.float32                          # small ones stay
    assert (tmp_path / "h.pt").stat().st_size < 0.85 * (tmp_path / "m.pt").stat().st_size
    half = Codec(quality=6, model=tmp_path / "h.pt", device="cpu")
    assert all(p.dtype == torch.float32 for p in half.model.net.parameters())
    codec = Codec(quality=6, model=tmp_path / "m.pt", device="cpu")
    assert codec.model.coder(6).scales.shape == (64,)
    img = smooth_image(64, 48, seed=5)
    lam = net.config.lambdas[5]

    def loss(data):
        mse = ((np.asarray(codec.decode(data)).astype(float) - img) ** 2).mean() / 255 ** 2
        return lam * 255 ** 2 * mse + 8 * len(data) / (64 * 48)

    plain, refined = codec.encode(img), codec.encode(img, refine=20)
    diff = np.asarray(half.decode(half.encode(img))).astype(int) - np.asarray(codec.decode(plain)).astype(int)
    assert np.abs(diff).mean() < 0.5
    assert np.asarray(codec.decode(refined)).shape == img.shape
    assert loss(refined) < loss(plain)


def test_hyper_coder_mutated_payloads_fail_cleanly(hyper):
    """Flipped bits, cut and random payloads: either symbols come back or AnrError, never
    another exception (the codec's CRC then catches symbols that differ)."""
    params, _, g = exact_params(hyper)
    coder = HyperCoder(SymbolCoder(factorized_tables(hyper.z_priors[1])), params, g["halves"], g["counts"], 24)
    shape = (24, 6, 7)
    rng = np.random.default_rng(4)
    z = rng.integers(-2, 3, z_shape(shape, 16)).astype(np.int32)
    _, idx = coder.means_and_indices(z, shape[1:])
    y = np.round(rng.normal(0, 1 + idx, shape)).astype(np.int32)
    payload = bytearray(coder.encode(z, y, idx))
    outcomes = set()
    for i in range(60):
        bad = bytearray(payload)
        if i % 3 == 0:
            bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        elif i % 3 == 1:
            bad = bad[: 4 * int(rng.integers(0, len(bad) // 4))]
        else:
            bad = bytearray(rng.integers(0, 256, len(bad), dtype=np.uint8).tobytes())
        try:
            z2, y2, _ = coder.decode(bytes(bad), shape)
            outcomes.add("decoded")
            assert y2.shape == shape and z2.shape == z.shape
        except AnrError:
            outcomes.add("refused")
    assert "refused" in outcomes


def test_length_bound_with_the_shipped_hyperprior_tables(codec):
    """The cheapest honest stream of the default (hyperprior) model, z's most probable symbols
    and every latent symbol at its Gaussian's mean, is never refused as too short."""
    assert codec.model.net.hyper is not None
    for q in (1, codec.qualities()[-1]):
        coder = codec.model.coder(q)
        shape = (coder.channels, 4, 7)
        z = most_probable(coder.z, z_shape(shape, coder.z.channels))
        _, idx = coder.means_and_indices(z, shape[1:])
        y = np.zeros(shape, np.int32)
        data = coder.encode(z, y, idx)
        assert coder.min_payload_bytes(shape) <= len(data)
        z2, y2, _ = coder.decode(data, shape)
        assert np.array_equal(z, z2) and np.array_equal(y, y2)
