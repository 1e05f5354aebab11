import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anr_codec import train
from anr_codec.model import AnrModel, ModelConfig
from conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (w, h) in enumerate([(70, 50), (40, 90), (64, 64)]):
        Image.fromarray(smooth_image(w, h, seed=i)).save(d / f"{i}.png")
    return d


# A small model of the default design: tests of the training machinery need no capacity.
TINY = "enc_width=32,dec_width=32,stem_channels=16,synth_channels=16,token_dim=16,hyper_channels=16,latent_channels=16"


def _args(data_dir, tmp_path, steps, *extra):
    return ["--data", str(data_dir), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--steps", str(steps), "--batch", "2", "--crop", "32", "--sr-points", "64",
            "--log-every", "1", "--ckpt-every", "100", "--sr-fraction", "0.5", *extra]


def test_train_checkpoints_and_resumes(data_dir, tmp_path):
    train.main(_args(data_dir, tmp_path, 2))
    run = tmp_path / "run"
    assert (run / "last.pt").exists() and (run / "last-opt.pt").exists()
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 2
    before = {k: v.clone() for k, v in state["model"].items()}
    train.main(_args(data_dir, tmp_path, 4))
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 4
    assert any(not torch.equal(before[k], v) for k, v in state["model"].items())  # it really trained
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] == r["loss"] for r in log)  # finite, not NaN


def test_export_then_init_continues_step_count(data_dir, tmp_path):
    from anr_codec.export import export
    from anr_codec.weights import load_model
    train.main(_args(data_dir, tmp_path, 2))
    out = tmp_path / "m.pt"
    manifest = export(tmp_path / "run" / "last.pt", out, "anr-test")
    m = load_model(out)
    assert m.name == "anr-test" and m.sha256.hex() == manifest["sha256"]
    assert len(m.qualities) == len(m.tables)
    args = _args(data_dir, tmp_path, 3, "--init", str(out))
    args[args.index("--out") + 1] = str(tmp_path / "run2")
    train.main(args)
    assert torch.load(tmp_path / "run2" / "last.pt", weights_only=True)["step"] == 3


def test_init_past_steps_says_so_and_a_time_budget_needs_no_step_count(data_dir, tmp_path):
    train.main(_args(data_dir, tmp_path, 3))
    run2 = tmp_path / "run2"
    args = _args(data_dir, tmp_path, 2, "--init", str(tmp_path / "run" / "last.pt"))
    args[args.index("--out") + 1] = str(run2)
    with pytest.raises(SystemExit, match="at step 3 and --steps is 2"):
        train.main(args)
    assert not run2.exists() or not any(run2.iterdir())  # nothing that looks like a finished run
    # Without --steps, a time budget alone decides, however far the weights already are.
    i = args.index("--steps")
    del args[i:i + 2]
    train.main([*args, "--minutes", "0.01"])
    assert torch.load(run2 / "last.pt", weights_only=True)["step"] > 3


def test_export_with_context_data_codes_through_contexts(data_dir, tmp_path):
    import numpy as np

    from anr_codec import Codec
    from anr_codec.context import CONTEXTS, WIDTH, ContextCoder
    from anr_codec.export import export
    train.main(_args(data_dir, tmp_path, 1, "--config", "v1"))   # context tables: a factorized design
    out = tmp_path / "m.pt"
    manifest = export(tmp_path / "run" / "last.pt", out, "anr-test", context_data=[data_dir])
    assert manifest["entropy_coding"].startswith("context tables from 3 images")
    codec = Codec(quality=2, model=out, device="cpu")
    coder = codec.model.coder(2)
    assert isinstance(coder, ContextCoder) and coder.probs.shape[1:] == (CONTEXTS, WIDTH)
    img = smooth_image(48, 40, seed=9)
    dec = codec.decode(codec.encode(img))
    assert np.asarray(dec).shape == img.shape


def _free_port() -> str:
    with socket.socket() as s:  # a free port: a fixed one can be taken by another run
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over loopback")
def test_distributed_start_when_one_rank_finds_the_cache_already_built(data_dir, tmp_path):
    # Rank 1 starts late, so rank 0 has built the pixel cache before rank 1 looks for it.
    # Both must still meet at the same barrier; a barrier only for ranks that found no
    # cache hung here (and in a loaded machine's test run) until the timeout.
    late = tmp_path / "late_rank.py"
    late.write_text("import os, sys, time\n"
                    "if os.environ['RANK'] == '1': time.sleep(3)\n"
                    "from anr_codec import train\n"
                    "train.main(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _free_port(),
           str(late), *_args(data_dir, tmp_path, 1, "--threads", "1", "--config", TINY)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over loopback")
def test_distributed_training_with_gloo(data_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "anr_codec.train", *_args(data_dir, tmp_path, 2, "--threads", "1", "--config", TINY)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2
    # A time budget: each process reads its own clock, yet all must stop at the same step
    # (one stopping alone would leave the others waiting in the gradient all-reduce).
    cmd[cmd.index("--steps") + 1] = "100000"
    r = subprocess.run([*cmd, "--minutes", "0.1", "--anneal-minutes", "0.05"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    step = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"]
    assert step > 2
    # SIGTERM to one worker only: the other must stop with it, not wait for it forever.
    log = tmp_path / "run" / "log.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while len(log.read_text().splitlines()) < step + 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped at step" in err


def test_pixel_cache_builders_started_together_leave_one_whole_cache(data_dir, tmp_path):
    # Two trainers on two cores both find no cache and build it; neither may fail or leave
    # a torn or half-written cache behind.
    from concurrent.futures import ThreadPoolExecutor
    from anr_codec.data import CropSampler, build_cache
    cache = tmp_path / "cache"
    cache.mkdir()  # an empty directory left by an earlier mkdir is no obstacle
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: build_cache([data_dir], cache), range(4)))
    build_cache([data_dir], cache)  # and a late builder finds it done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "imgs"]  # no temporaries
    sampler = CropSampler(cache, seed=0)
    assert [(e["h"], e["w"]) for e in sampler.index] == [(50, 70), (90, 40), (64, 64)]
    assert sampler.pixels.size == 3 * (50 * 70 + 90 * 40 + 64 * 64)
    first = np.asarray(Image.open(data_dir / "0.png").convert("RGB"))
    assert np.array_equal(np.asarray(sampler.pixels[:first.size]).reshape(first.shape), first)


def test_sr_step_supervises_the_drawn_hr_pixels(data_dir, tmp_path):
    from anr_codec.data import CropSampler, build_cache
    build_cache([data_dir], tmp_path / "cache")
    draws = [train.draw_step(CropSampler(tmp_path / "cache", seed=5), 3, 16, 7, 1.0, 40) for _ in range(2)]
    (qi, hr, (iy, ix)), again = draws
    assert torch.equal(hr, again[1]) and torch.equal(qi, again[0])  # the seed fixes the draw
    assert hr.dtype == torch.uint8 and 16 <= hr.shape[-1] <= 64 and qi.max() < 7
    q2, lr, (xy, fp, target) = train.step_inputs(draws[0], 16, "cpu")
    assert lr.shape == (3, 3, 16, 16) and torch.equal(q2, qi)
    ratio = 16 / hr.shape[-1]
    assert torch.allclose(fp, torch.tensor([ratio, ratio]))
    # xy (LR pixel units) maps back to the HR pixel whose colour is the target.
    assert torch.allclose(xy[..., 0] / ratio - 0.5, ix.float(), atol=1e-4)
    assert torch.allclose(xy[..., 1] / ratio - 0.5, iy.float(), atol=1e-4)
    b = torch.arange(3)[:, None]
    assert torch.equal(target, hr[b, :, iy, ix].float() / 255)
    plain = train.draw_step(CropSampler(tmp_path / "cache", seed=5), 3, 16, 7, 0.0, 40)
    assert plain[2] is None and plain[1].shape == (3, 3, 16, 16)


def test_config_option_types_fields_and_rejects_unknown_ones():
    assert train.parse_config("token_dim=32, threshold=0,max_freq=16") == {
        "token_dim": 32, "threshold": 0.0, "max_freq": 16.0}
    with pytest.raises(SystemExit):
        train.parse_config("no_such_field=1")
    with pytest.raises(SystemExit):
        train.parse_config("lambdas=0.1")


def test_config_option_shapes_a_new_run(data_dir, tmp_path):
    train.main(_args(data_dir, tmp_path, 1, "--config", "token_dim=32,mlp_hidden=64"))
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["config"]["token_dim"] == 32 and state["config"]["mlp_hidden"] == 64
    assert state["model"]["anr.mlp.0.weight"].shape[0] == 64


def test_lr_warms_up_again_when_adam_restarts_on_trained_weights():
    from anr_codec.train import lr_at
    assert lr_at(0, 1.0, []) == pytest.approx(1 / 500)
    assert lr_at(20_000, 1.0, []) == 1.0                       # resumed with Adam's state
    assert lr_at(20_000, 1.0, [], fresh_steps=0) == pytest.approx(1 / 200)
    assert lr_at(20_199, 1.0, [], fresh_steps=199) == 1.0
    assert lr_at(20_000, 1.0, [15_000], fresh_steps=500) == pytest.approx(0.1)


def test_bf16_autocast_only_where_the_hardware_runs_it():
    from anr_codec.train import use_bf16_autocast
    yes, no = (lambda: True), (lambda: False)
    assert use_bf16_autocast("cuda", False, no)              # CUDA: always
    assert use_bf16_autocast("cpu", True, yes)               # asked for, native bf16
    assert not use_bf16_autocast("cpu", True, no)            # asked for, emulated: float32
    assert not use_bf16_autocast("cpu", False, yes)          # not asked for
    assert isinstance(train.cpu_has_native_bf16(), bool)


def test_conv_design_trains_exports_and_codes_end_to_end(data_dir, tmp_path):
    """The default design (anr-v2's): train, export (context data is ignored), then encode
    and decode through the Codec at the coded size and at a non-integer scale."""
    from anr_codec import Codec
    from anr_codec.export import export
    train.main(_args(data_dir, tmp_path, 1, "--config", "enc_width=64,dec_width=64,stem_channels=32,"
                                                        "synth_channels=32,token_dim=32"))
    out = tmp_path / "m.pt"
    export(tmp_path / "run" / "last.pt", out, "anr-conv-test", context_data=[data_dir])
    codec = Codec(quality=3, model=out, device="cpu")
    assert codec.model.net.token_stride == 2 and codec.model.net.config.stem == "gdn"
    img = smooth_image(50, 37, seed=4)
    data = codec.encode(img)
    assert np.asarray(codec.decode(data)).shape == img.shape
    assert np.asarray(codec.decode(data, scale=2.5)).shape == (92, 125, 3)


def test_grid_jitter_option_reaches_the_scale_1_render_only():
    from anr_codec.model import AnrModel, ModelConfig
    net = AnrModel(ModelConfig.from_dict(train.parse_config(TINY)))
    seen = []
    for flag in (True, False):
        loss = train.RDLoss(net, grid_jitter=flag)
        grid, points = net.anr.render_grid, net.anr.render_points
        net.anr.render_grid = lambda t, s, jitter: (seen.append(("grid", jitter)), grid(t, s, jitter=jitter))[1]
        net.anr.render_points = lambda t, xy, fp, jitter: (seen.append(("points", jitter)), points(t, xy, fp, jitter=jitter))[1]
        x = torch.rand(1, 3, 32, 32)
        loss(x, torch.tensor([0]))
        loss(x, torch.tensor([0]), (torch.rand(1, 8, 2) * 32, torch.tensor([0.5, 0.5]), torch.rand(1, 8, 3)))
        del net.anr.render_grid, net.anr.render_points
    # SR batches keep the paper's variational coordinates either way.
    assert seen == [("grid", True), ("points", True), ("grid", False), ("points", True)]
    assert train.parse_args(["--no-grid-jitter"]).grid_jitter is False
    assert train.parse_args([]).grid_jitter is True


def test_export_continuing_a_manifest_appends_its_recipe(data_dir, tmp_path):
    from anr_codec import export
    train.main(_args(data_dir, tmp_path, 1))
    ckpt = str(tmp_path / "run" / "last.pt")
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    export.main([ckpt, str(first), "--name", "anr-test", "--hardware", "2-core CPU", "--recipe", "phase one"])
    export.main([ckpt, str(second), "--name", "anr-test", "--continues", str(first.with_suffix(".json")),
                 "--recipe", "phase two"])
    training = json.loads(second.with_suffix(".json").read_text())["training"]
    assert training["recipe"] == "phase one; phase two"
    assert training["hardware"] == "2-core CPU"
    assert training["steps"] == 1


def test_new_lr_moves_the_grown_block_and_survives_a_resume(data_dir, tmp_path):
    train.main(_args(data_dir, tmp_path, 2, "--config", TINY))
    start = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    args = _args(data_dir, tmp_path, 3, "--init", str(tmp_path / "run" / "last.pt"),
                 "--config", "token_res8=1", "--lr", "1e-12", "--new-lr", "1e-2")
    args[args.index("--out") + 1] = str(tmp_path / "run2")
    train.main(args)
    state = torch.load(tmp_path / "run2" / "last.pt", weights_only=True)
    grown = state["new_params"]
    assert grown and all(k.startswith("token_net.res8.") for k in grown)
    # Only the grown block's weights move; the trained ones sit at an lr of ~1e-12 (the
    # entropy bottleneck's quantiles have their own optimizer).
    moved_old = max((state["model"][k] - v).abs().max().item()
                    for k, v in start.items() if v.is_floating_point() and not k.endswith("quantiles"))
    assert moved_old < 1e-8
    # The block's zero-initialised weights (its output convolution) are what must move.
    fresh = AnrModel(ModelConfig.from_dict(state["config"])).state_dict()
    zero_at_start = [k for k in grown if not fresh[k].any()]
    assert zero_at_start and all(state["model"][k].abs().max().item() > 1e-6 for k in zero_at_start)
    # A resume rebuilds the two optimizer groups from the checkpoint, without --init.
    args[args.index("--steps") + 1] = "4"
    train.main(args)
    log = [json.loads(line) for line in (tmp_path / "run2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 4]
    assert all(r["new_lr"] > 1e6 * r["lr"] for r in log)


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_draws_and_trains_as_an_uninterrupted_one(data_dir, tmp_path):
    # The crops and the quantisation noise continue where the checkpoint left them, so
    # stopping and resuming changes nothing (a resume used to skip one step's crops).
    def run(out, steps):
        args = _args(data_dir, tmp_path, steps, "--threads", "1", "--config", TINY)
        args[args.index("--out") + 1] = str(out)
        train.main(args)

    run(tmp_path / "whole", 4)
    run(tmp_path / "split", 2)
    run(tmp_path / "split", 4)
    assert _same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))


@pytest.mark.skipif(sys.platform != "linux", reason="gloo over loopback")
def test_a_resumed_distributed_run_continues_every_ranks_streams(data_dir, tmp_path):
    # Each rank draws its own crops; a resume used to restart them all from --seed, so a
    # resumed torchrun run replayed the crops of its first steps.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(out, steps):
        args = _args(data_dir, tmp_path, steps, "--threads", "1", "--config", TINY)
        args[args.index("--out") + 1] = str(out)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", _free_port(), "-m", "anr_codec.train", *args]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stderr

    run(tmp_path / "whole", 2)
    run(tmp_path / "split", 1)
    snaps = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["rng"]
    assert len(snaps) == 2 and snaps[0]["sampler"] != snaps[1]["sampler"]
    assert "start fresh streams" not in run(tmp_path / "split", 2)
    assert _same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))


def test_streams_that_cannot_be_continued_start_fresh_not_from_the_seed(data_dir, tmp_path):
    from anr_codec.data import CropSampler
    train.main(_args(data_dir, tmp_path, 1, "--config", TINY))
    cpu = torch.device("cpu")
    fresh = CropSampler(tmp_path / "cache", seed=0).state()
    old_multi = {"step": 500, "sampler": fresh}  # what multi-process runs used to save
    picked = []
    for state, world in [(old_multi, 2), (old_multi, 2), ({"step": 500, "rng": [{}] * 3}, 2),
                         ({"step": 900, "sampler": fresh}, 2)]:
        sampler = CropSampler(tmp_path / "cache", seed=0)
        warning = train.restore_rng(state, 0, world, sampler, 0, cpu)
        assert warning and "fresh" in warning
        picked.append(sampler.state())
    assert fresh not in picked
    assert picked[0] == picked[1] == picked[2] != picked[3]  # keyed by the step, reproducibly
    # A single-process checkpoint of the older kind still continues its crops.
    sampler = CropSampler(tmp_path / "cache", seed=5)
    assert train.restore_rng({"step": 500, "sampler": fresh}, 0, 1, sampler, 5, cpu) is None
    assert sampler.state() == fresh
