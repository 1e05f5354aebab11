"""benchmarks/paper/rd_compare.py: ANR vs bmshj2018-factorized trained on the same budget.

Tiny models and random images only (no ../shared): seconds, not minutes.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
TINY = "latent_channels=8,enc_width=16,dec_width=16,token_dim=16,mlp_hidden=16,heads=2,enc_depth=1,dec_depth=1"
LAMBDAS = (0.0035, 0.013, 0.05)


@pytest.fixture(scope="module")
def rc():
    spec = importlib.util.spec_from_file_location("rd_compare", ROOT / "benchmarks/paper/rd_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arms(rc):
    return [rc.AnrArm(rc.parse_config(TINY, LAMBDAS)), rc.BmshjArm(0.013, 8, 8)]


def test_one_training_step_of_each_model_is_finite_and_moves_weights(rc):
    x = torch.rand(2, 3, 64, 64)
    for arm in _arms(rc):
        t = rc.Trainer(arm, None, 2, 64, 1e-3, 10)
        before = {n: p.detach().clone() for n, p in arm.model.named_parameters()}
        r = t.step(x)
        assert math.isfinite(r["loss"]) and math.isfinite(r["aux"]), arm.name
        assert r["loss"] > 0 and torch.all(r["bpp"] > 0)
        after = dict(arm.model.named_parameters())
        moved = {n for n in before if not torch.equal(before[n], after[n])}
        assert any(n.endswith("quantiles") for n in moved), arm.name   # aux optimiser ran
        assert any(not n.endswith("quantiles") for n in moved), arm.name  # main optimiser ran
        assert t.step_no == 1


def test_anr_draws_only_the_compared_lambdas(rc):
    arm = rc.AnrArm(rc.parse_config(TINY, LAMBDAS))
    assert arm.model.config.lambdas == LAMBDAS and arm.model.n_qualities == 3
    _, _, _, qi = arm.loss(torch.rand(16, 3, 32, 32))
    assert qi.min() >= 0 and qi.max() <= 2 and len(qi.unique()) > 1


def test_parse_config_rejects_unknown_fields(rc):
    assert rc.parse_config("latent_channels=96", LAMBDAS).latent_channels == 96
    with pytest.raises(SystemExit):
        rc.parse_config("latent=96", LAMBDAS)
    with pytest.raises(SystemExit):
        rc.parse_config("lambdas=0.1", LAMBDAS)


def test_real_bytes_evaluation_of_untrained_tiny_models(rc, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not a multiple of 16 or 64
    images = [("rand.png", rgb)]
    anr, bmshj = _arms(rc)
    path = rc.export_anr(anr.model, tmp_path / "tiny.pt")
    rows = rc.eval_anr(path, images, LAMBDAS)
    assert [r["lambda"] for r in rows] == list(LAMBDAS)
    for r in rows:
        assert r["bpp"] > 0 and math.isfinite(r["psnr"])
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (50 * 70))
        assert 0 < r["payload_bytes"] < r["bytes"]  # the file's header is counted too
    rows = rc.eval_bmshj(bmshj.model, 0.013, images)
    assert len(rows) == 1 and rows[0]["bpp"] > 0 and math.isfinite(rows[0]["psnr"])
    assert rows[0]["bpp"] == pytest.approx(8 * rows[0]["bytes"] / (50 * 70))


def test_pad64_centres_like_compressai(rc):
    xp, (left, right, top, bottom) = rc.pad64(torch.ones(1, 3, 50, 70))
    assert xp.shape[-2:] == (64, 128)
    assert (left, right, top, bottom) == (29, 29, 7, 7)
    assert torch.equal(xp[..., top:top + 50, left:left + 70], torch.ones(1, 3, 50, 70))


def test_both_models_see_the_same_batches(rc, tmp_path):
    from anr_codec.data import CropSampler, build_cache
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(80, 72, seed=i)).save(d / f"{i}.png")
    build_cache([d], tmp_path / "cache")
    trainers = [rc.Trainer(arm, CropSampler(tmp_path / "cache", seed=5), 2, 32, 1e-3, 10) for arm in _arms(rc)]
    for _ in range(3):
        for t in trainers:
            t.step()
        # The ANR model's quality draws use their own generator, not the sampler's.
        assert trainers[0].sampler.state() == trainers[1].sampler.state()


def test_rd_curve_and_bd_rate(rc):
    rows = [{"lambda": lam, "image": im, "bpp": b, "psnr": p}
            for lam, b, p in ((0.01, 0.2, 27.0), (0.02, 0.4, 30.0), (0.04, 0.8, 33.0)) for im in "ab"]
    anchor = rc.rd_curve(rows, (0.01, 0.02, 0.04))
    assert anchor["bpp"] == [0.2, 0.4, 0.8] and anchor["psnr"] == [27.0, 30.0, 33.0]
    test = {**anchor, "bpp": [b * 0.9 for b in anchor["bpp"]]}
    d = rc.bd(anchor, test)
    assert d["bd_rate_percent"] == pytest.approx(-10.0, abs=1e-6)
    assert d["bd_psnr_db"] > 0


def test_costs_count_decoder_macs(rc):
    anr, bmshj = _arms(rc)
    for c in (rc.anr_cost(anr.model, (64, 96)), rc.bmshj_cost(bmshj.model, (64, 96))):
        assert 0 < c["decoder_parameters"] < c["parameters"]
        assert c["decoder_macs_per_px"] > 0 and c["encoder_macs_per_px"] > 0


def test_end_to_end_is_resumable_and_writes_reports(rc, tmp_path):
    imgs, kodak = tmp_path / "train", tmp_path / "kodak"
    imgs.mkdir()
    kodak.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(96, 80, seed=i)).save(imgs / f"{i}.png")
    Image.fromarray(smooth_image(72, 48, seed=9)).save(kodak / "kodim01.png")
    args = ["--data", str(imgs), "--cache", str(tmp_path / "cache"), "--kodak", str(kodak),
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--doc", str(tmp_path / "doc.md"),
            "--steps", "2", "--batch", "2", "--crop", "32", "--anr-config", TINY,
            "--bmshj-n", "8", "--bmshj-m", "8", "--threads", "1"]
    res = rc.main(args)
    assert res["training"]["anr"]["steps"] == 2
    assert [t["steps"] for t in res["training"]["bmshj2018-factorized"]] == [2, 2, 2]
    for key in ("anr", "bmshj2018-factorized"):
        assert len(res["rd"][key]["bpp"]) == 3 and all(b > 0 for b in res["rd"][key]["bpp"])
    saved = json.loads((tmp_path / "res/rd_compare.json").read_text())
    assert saved["settings"]["lambdas"] == list(LAMBDAS)
    assert any("favours the baseline" in n for n in saved["notes"])
    assert (tmp_path / "res/rd_compare.png").stat().st_size > 0
    doc = (tmp_path / "doc.md").read_text()
    assert "rd_compare.py" in doc and "| 0.013 |" in doc
    # A rerun trains nothing more and reuses the cached evaluation.
    logs = {p: p.read_text() for p in (tmp_path / "runs").glob("*/log.jsonl")}
    assert len(logs) == 4
    res2 = rc.main(args)
    assert {p: p.read_text() for p in logs} == logs
    assert res2["rd"] == res["rd"]
    # A checkpoint trained with other settings is never silently continued.
    with pytest.raises(SystemExit):
        rc.main([*args[:-2], "--threads", "1", "--lr", "1e-3"])


def test_lr_schedule_warms_up_and_anneals(rc):
    assert rc.warmup_steps(3000) == 150 and rc.warmup_steps(100_000) == 500 and rc.warmup_steps(4) == 1
    lrs = [rc.lr_schedule(s, 1000, 1e-3, 0.1) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-3 / 50) and lrs[49] == pytest.approx(1e-3)
    assert lrs[899] == pytest.approx(1e-3) and lrs[900] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-4)
    assert rc.lr_schedule(999, 1000, 1e-3, 0.0) == pytest.approx(1e-3)


def test_time_mode_measures_both_and_estimates(rc, tmp_path, capsys):
    imgs = tmp_path / "train"
    imgs.mkdir()
    Image.fromarray(smooth_image(96, 80)).save(imgs / "0.png")
    out = rc.main(["--data", str(imgs), "--cache", str(tmp_path / "cache"), "--kodak", str(tmp_path / "none"),
                   "--out", str(tmp_path / "runs"), "--time-steps", "2", "--steps", "100", "--batch", "2",
                   "--crop", "32", "--anr-config", TINY, "--bmshj-n", "8", "--bmshj-m", "8"])
    t = out["s_per_step"]
    assert t["anr"] > 0 and t["bmshj2018-factorized"] > 0
    expect = 100 * (t["anr"] + 3 * t["bmshj2018-factorized"]) / 60
    assert out["train_estimate_min"] == pytest.approx(expect, abs=0.06)
    assert not (tmp_path / "runs" / "anr").exists()  # measuring trains nothing that a run would resume
    assert "estimate" in capsys.readouterr().err
