"""scripts/flops.py: the work per frame it counts on the meta device is what v2v's sampler and diffusers'
pipeline really run, model by model (torch's own count of real runs on the tiny models, on the CPU)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import flops  # noqa: E402

H = W = 64


@pytest.fixture(scope="module")
def models(tiny_models):
    from v2v.models.load import load_diffusion_models

    return load_diffusion_models(str(tiny_models["base"]), str(tiny_models["motion"]),
                                 str(tiny_models["controlnet"]), decoder=str(tiny_models["taesd"]))


@pytest.fixture(scope="module")
def twins(models):
    return flops.Twins.of(models)


@pytest.fixture(autouse=True)
def attention_counted():
    """torch counts no FLOPs in the CPU's fused attention kernel (it does count CUDA's flash and efficient ones,
    and the math path the meta device takes): real runs here use the math path, so their attention is counted."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def by_model(counter: FlopCounterMode) -> dict[str, int]:
    return {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items() if "." not in k and k != "Global"}


def control(indices):
    return torch.rand(len(indices), 3, H, W)


SETTINGS = [
    dict(num_frames=40, frame_budget=24),                                   # 3 windows + 1, two segments
    dict(num_frames=40, frame_budget=64),                                   # one segment, windows in the modules
    dict(num_frames=40, frame_budget=16),                                   # classic: a segment per window
    dict(num_frames=30, frame_budget=24, guidance=2.0, control_end=0.5),    # CFG; ControlNet on the first step only
    dict(num_frames=30, frame_budget=20, loop=True, pose_strength=0.0),     # wrapping windows; no ControlNet
    dict(num_frames=12, frame_budget=16, fast_decode=True),                 # one window, TAESD
    dict(num_frames=28, frame_budget=24, strength=0.5),                     # from the source frames: VAE encode
]


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_v2v_work_is_what_the_sampler_runs(models, twins, s):
    from v2v.sampler import generate
    from v2v.vae import decode_latents, encode_frames

    s = dict(s, steps=2)
    n = s.pop("num_frames")
    settings = dict(s)
    fast = s.pop("fast_decode", False)
    init = None
    with FlopCounterMode(display=False) as encoding:
        if s.get("strength", 1.0) < 1:
            rng = np.random.default_rng(0)
            init = encode_frames(models, (rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)))
    through = []  # frames through the UNet's first convolution, per call (what the bench's spatial_passes counts)
    hook = models.unet.conv_in.register_forward_hook(lambda mod, args, out: through.append(out.shape[0]))
    try:
        with FlopCounterMode(display=False) as sampling:
            latents = generate(models, prompt="a dancer", negative_prompt="blur", num_frames=n, height=H, width=W,
                               control=control, init_latents=init, **s)
    finally:
        hook.remove()
    decoding_models = dataclasses.replace(models, decoder=models.decoder if fast else None)
    with FlopCounterMode(display=False) as decoding:
        assert len(list(decode_latents(decoding_models, latents))) == n
    real = by_model(sampling)
    counted = flops.v2v_work(twins, settings, n, W, H)
    assert counted["unet"] == real["UNetMotionModel"]
    assert counted["controlnet"] == real.get("ControlNetModel", 0)
    assert counted["controlnet"] > 0 or s.get("pose_strength") == 0.0
    assert counted["encode"] == encoding.get_total_flops() and (counted["encode"] > 0) == (init is not None)
    assert counted["decode"] == decoding.get_total_flops() > 0
    assert counted["total"] == sum(counted[k] for k in ("unet", "controlnet", "encode", "decode"))
    # the sampler does no matrix work of its own outside the models (the text encoder is left out of the count)
    models_flops = real["UNetMotionModel"] + real.get("ControlNetModel", 0) + real["CLIPTextModel"]
    assert sampling.get_total_flops() == models_flops
    # the plan the bench checks its records against is the passes the sampler made
    assert flops.planned_passes(settings, n) == pytest.approx(sum(through) / (n * settings["steps"]), abs=1e-12)


@pytest.mark.parametrize("n,guidance", [(40, 1.0), (16, 1.0), (20, 2.0)])
def test_diffusers_work_is_what_its_pipeline_runs(models, twins, n, guidance):
    """bench.run_diffusers' call (FreeNoise, context 16, stride 12, beyond 16 frames), counted for real."""
    import bench

    from v2v.pose.keypoints import FramePose

    with FlopCounterMode(display=False) as counter:
        bench.run_diffusers(models, [FramePose([], W, H)] * n, W, H, "cpu", 2, 16, 4, guidance)
    real = by_model(counter)
    counted = flops.diffusers_work(twins, n, W, H, steps=2, guidance=guidance)
    assert counted["unet"] == real["UNetMotionModel"]
    assert counted["controlnet"] == real["ControlNetModel"]
    # the VAE is called by its decode method, which torch's tracker does not name (its parts are): the rest
    rest = counter.get_total_flops() - real["UNetMotionModel"] - real["ControlNetModel"] - real["CLIPTextModel"]
    assert real["CLIPTextModel"] > 0 and counted["decode"] == rest > 0


def test_one_window_is_the_same_work_as_diffusers(twins):
    """On one window of frames v2v makes the calls diffusers' pipeline makes: the same count, ratio 1."""
    c = flops.compare(twins, {"steps": 4, "frame_budget": 16}, 16, W, H)
    assert c["v2v_flop"] == c["diffusers_flop"] > 0 and c["work_ratio"] == 1.0
    assert c["v2v_tflop_per_frame"] == c["diffusers_tflop_per_frame"] | {"encode": 0.0}


def test_longer_videos_cost_v2v_more_per_frame_only_where_segments_meet(twins):
    """With one segment v2v's spatial work per frame is diffusers' (both pass every frame once a step); the
    motion modules run once per window in both. Cutting the same video into more segments adds spatial passes."""
    one = flops.v2v_work(twins, {"steps": 1, "frame_budget": 64}, 40, W, H)
    many = flops.v2v_work(twins, {"steps": 1, "frame_budget": 16}, 40, W, H)
    assert many["controlnet"] > one["controlnet"] and many["unet"] > one["unet"]
    assert many["decode"] == one["decode"]
    # the ControlNet is spatial only: its work grows with the frames passed, here 3 windows of 16 for 40 frames
    assert many["controlnet"] * 40 == one["controlnet"] * 48


def test_fast_decode_needs_a_taesd_twin(models):
    tw = flops.Twins.of(models)
    tw.taesd = None
    with pytest.raises(ValueError, match="TAESD"):
        flops.v2v_work(tw, {"frame_budget": 16, "fast_decode": True}, 16, W, H)


def test_annotate_reads_an_older_bench_record(twins):
    """Records from before the bench stored each run's settings: the defaults (automatic budget 64) are assumed,
    what a lever changed is taken from its name, and the rates are the work over the measured times."""
    run = {"fps": 10.0, "seconds": {"generate": 2.0}, "spatial_passes": 1.0}  # 40 frames in one segment
    report = {"env": {"models": "tiny", "size": W, "steps": 2},
              "results": [{"frames": 40, "v2v": run, "diffusers": {"fps": 20.0}, "speedup": 0.5}],
              "levers": {"frames": 40, "default": run, "frame_budget_16": run, "fast_decode": run,
                         "compile_first_run_s": 100.0, "attention_classic": {"error": "no"}}}
    work = flops.annotate(report, twins)
    default = flops.v2v_work(twins, {"steps": 2, "frame_budget": 64}, 40, W, H)
    row = work["lengths"][0]
    assert row["v2v"]["flop"] == default["total"] and row["v2v"]["settings_assumed"]
    assert row["v2v"]["tflops_per_s"] == pytest.approx(default["total"] * 10 / 40 / 1e12, rel=1e-3)
    assert row["v2v"]["denoise_tflops_per_s"] == pytest.approx(
        (default["unet"] + default["controlnet"]) / 2.0 / 1e12, rel=1e-3)
    d = flops.diffusers_work(twins, 40, W, H, steps=2)["total"]
    assert row["work_ratio"] == round(d / default["total"], 4)
    assert row["efficiency_ratio"] == pytest.approx(0.5 / row["work_ratio"], rel=1e-3)
    assert set(work["levers"]) == {"default", "frame_budget_16", "fast_decode"}
    assert work["levers"]["frame_budget_16"]["flop"] == flops.v2v_work(
        twins, {"steps": 2, "frame_budget": 16}, 40, W, H)["total"] > default["total"]
    assert work["levers"]["fast_decode"]["flop"] == flops.v2v_work(
        twins, {"steps": 2, "frame_budget": 64, "fast_decode": True}, 40, W, H)["total"]
    # the passes each run counted against those its settings plan: budget 16 would have made 48 frame-passes
    assert row["v2v"]["passes_match"] and work["levers"]["fast_decode"]["passes_match"]
    assert work["levers"]["frame_budget_16"]["passes_match"] is False


def test_planned_passes_count_cfg_halves_and_the_steps_strength_skips():
    one = {"steps": 4, "frame_budget": 64}
    assert flops.planned_passes(one, 40) == 1.0
    assert flops.planned_passes({**one, "guidance": 2.0}, 40) == 2.0
    assert flops.planned_passes({**one, "strength": 0.5}, 40) == 0.5
    assert flops.planned_passes({**one, "frame_budget": 16}, 40) == 48 / 40


@pytest.mark.gpu
def test_v2v_work_is_what_the_sampler_runs_on_cuda(tiny_models):
    """On a GPU, with CUDA's own attention kernels (flash, memory-efficient: torch counts them by formula) and
    float16, the count is still what the sampler runs: the figures the bench gives for GPU runs hold."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from v2v.sampler import generate
    from v2v.models.load import load_diffusion_models

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    m = load_diffusion_models(str(tiny_models["base"]), str(tiny_models["motion"]), str(tiny_models["controlnet"]),
                              device="cuda", dtype=torch.float16)
    settings = dict(steps=2, frame_budget=24, guidance=2.0)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                SDPBackend.MATH]
    with sdpa_kernel(backends), FlopCounterMode(display=False) as counter:
        generate(m, prompt="a dancer", num_frames=40, height=H, width=W, control=control, **settings)
    real = by_model(counter)
    counted = flops.v2v_work(flops.Twins.of(m), settings, 40, W, H)
    assert counted["unet"] == real["UNetMotionModel"] and counted["controlnet"] == real["ControlNetModel"]
