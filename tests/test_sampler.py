"""The sampler, on the tiny models: equal to diffusers' AnimateDiffControlNetPipeline on one window; windows."""

import time

import numpy as np
import pytest
import torch

from v2v.errors import InvalidOptions
from v2v.sampler import generate, initial_noise
from v2v.vae import decode_latents, decode_to_float
from v2v.models.load import load_diffusion_models
from v2v.tiny.diffusion import write_tiny_diffusion_set
from v2v.motion_windows import MotionPlan, WindowedMotionModule, count_motion_modules
from v2v.windows import (fusion_weights, plan_loop_windows, plan_segments, plan_windows, sampling_order,
                         spatial_passes)


LATENTS_TOLERANCE = 1e-4  # the equality tests' tolerance on latents; each input moves them 100 times that at least


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tiny = write_tiny_diffusion_set(tmp_path_factory.mktemp("tiny"))
    return load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"])


def make_control(num_frames, height, width, seed=7):
    """Pose-map-like uint8 frames and a control() that serves them as the pipeline does (float in [0, 1])."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):  # a few coloured blobs that move
        for c in range(3):
            y, x = rng.integers(0, height - 8), (i * 2 + 11 * c) % (width - 8)
            frames[i, y:y + 8, x:x + 8, c] = 255
    frames |= rng.integers(0, 40, frames.shape, dtype=np.uint8)
    calls = []

    def control(indices):
        calls.append(list(indices))
        return torch.from_numpy(frames[indices]).permute(0, 3, 1, 2).float() / 255

    return frames, control, calls


def run_pipeline(models, *, prompt, negative_prompt, frames, steps, guidance, seed, pose_strength):
    from diffusers import AnimateDiffControlNetPipeline
    from PIL import Image

    scheduler = type(models.scheduler).from_config(models.scheduler.config)
    pipe = AnimateDiffControlNetPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=models.unet,
        motion_adapter=None, controlnet=models.controlnet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    final = {}

    def grab(pipe_, i, t, kw):
        final["latents"] = kw["latents"].clone()
        return {}

    out = pipe(prompt=prompt, negative_prompt=negative_prompt if guidance > 1 else None,
               num_frames=len(frames), height=frames.shape[1], width=frames.shape[2],
               conditioning_frames=[Image.fromarray(f) for f in frames], num_inference_steps=steps,
               guidance_scale=guidance, controlnet_conditioning_scale=pose_strength,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
               callback_on_step_end=grab, callback_on_step_end_tensor_inputs=["latents"])
    return final["latents"][0].permute(1, 0, 2, 3), out.frames[0]  # (F, 4, h, w), (F, H, W, 3) float


@pytest.mark.parametrize("guidance,steps,num_frames", [(1.0, 4, 16), (2.5, 2, 8)])
def test_one_window_equals_diffusers_pipeline(models, guidance, steps, num_frames):
    h = w = 64
    frames, control, calls = make_control(num_frames, h, w)
    kw = dict(prompt="a person dancing in the street", negative_prompt="blurry photo", steps=steps,
              guidance=guidance, seed=42, pose_strength=0.8)
    ref_latents, ref_frames = run_pipeline(models, frames=frames, **kw)
    latents = generate(models, num_frames=num_frames, height=h, width=w, control=control, **kw)

    assert latents.shape == (num_frames, 4, h // 8, w // 8) and latents.dtype == torch.float32
    assert latents.device.type == "cpu"
    assert torch.isfinite(latents).all() and latents.abs().max() > 0.1
    assert (latents - ref_latents).abs().max().item() <= LATENTS_TOLERANCE
    assert calls == [list(range(num_frames))] * steps  # one window, once per step
    _, other, _ = make_control(num_frames, h, w, seed=8)  # the maps matter far more than the tolerance
    moved = (generate(models, num_frames=num_frames, height=h, width=w, control=other, **kw) - latents).abs().max()
    assert moved >= 100 * LATENTS_TOLERANCE

    decoded = decode_to_float(models, latents).permute(0, 2, 3, 1).numpy()
    assert np.abs(decoded - ref_frames).max() <= 1e-4
    stats = {}
    t = time.perf_counter()
    images = np.stack(list(decode_latents(models, latents, chunk=3, stats=stats)))
    assert 0 < stats["seconds"] <= time.perf_counter() - t  # the decoding time is counted, and only that
    assert images.shape == (num_frames, h, w, 3) and images.dtype == np.uint8
    assert np.abs(images.astype(int) - np.round(ref_frames * 255).astype(int)).max() <= 1


def test_control_and_prompt_matter(models):
    """Other maps, the maps a frame late or in BGR order, another prompt, no ControlNet: each moves the latents by
    100 times the equality tests' tolerance at least."""
    frames, control, _ = make_control(8, 32, 32)
    _, other, _ = make_control(8, 32, 32, seed=8)
    kw = dict(prompt="a man", num_frames=8, height=32, width=32, steps=2, seed=1)
    base = generate(models, control=control, **kw)

    def moved(latents):
        return (latents - base).abs().max().item()

    assert moved(generate(models, control=other, **kw)) >= 100 * LATENTS_TOLERANCE
    late = generate(models, control=lambda i: control([min(j + 1, 7) for j in i]), **kw)
    assert moved(late) >= 100 * LATENTS_TOLERANCE
    bgr = generate(models, control=lambda i: control(i).flip(1), **kw)
    assert moved(bgr) >= 100 * LATENTS_TOLERANCE
    assert moved(generate(models, control=control, **{**kw, "prompt": "a woman"})) >= 100 * LATENTS_TOLERANCE
    calls = []
    no_pose = generate(models, control=lambda i: calls.append(i), pose_strength=0.0, **kw)
    assert calls == []  # pose strength 0 skips the ControlNet
    assert moved(no_pose) >= 100 * LATENTS_TOLERANCE
    assert torch.equal(generate(models, control=control, **kw), base)


def test_initial_noise():
    g = lambda: torch.Generator("cpu").manual_seed(5)  # noqa: E731
    plain = torch.randn((1, 4, 12, 4, 6), generator=g())[0].permute(1, 0, 2, 3)
    assert torch.equal(initial_noise(12, 32, 48, g()), plain)  # one window: what diffusers draws
    assert torch.equal(initial_noise(12, 32, 48, g(), kind="random"), plain)
    long = initial_noise(40, 32, 32, g(), context=16, overlap=4)
    rand = initial_noise(40, 32, 32, g(), context=16, overlap=4, kind="random")
    assert torch.equal(long[:16], rand[:16])
    for i in range(16, 40):  # FreeNoise: later frames are shuffled copies of earlier noise
        assert any(torch.equal(long[i], long[j]) for j in range(i)), i
    assert not torch.equal(long[16:28], long[4:16])  # shuffled, not repeated in order
    with pytest.raises(InvalidOptions):
        initial_noise(4, 32, 32, g(), kind="pink")


@pytest.mark.parametrize("bad", [dict(height=36), dict(width=0), dict(steps=0), dict(guidance=0.5),
                                 dict(num_frames=0), dict(overlap=16), dict(fusion="gaussian"),
                                 dict(context=33, num_frames=40)])
def test_invalid_options(models, bad):
    _, control, _ = make_control(4, 32, 32)
    kw = {**dict(prompt="x", num_frames=4, height=32, width=32, control=control, steps=1), **bad}
    with pytest.raises(ValueError):  # InvalidOptions is a ValueError
        generate(models, **kw)


def test_control_shape_checked(models):
    with pytest.raises(ValueError, match="control"):
        generate(models, prompt="x", num_frames=4, height=32, width=32, steps=1,
                 control=lambda idx: torch.zeros(len(idx), 3, 16, 16))




def reference_windows(models, *, prompt, num_frames, height, width, control, steps, seed, context, overlap,
                      fusion="pyramid", pose_strength=1.0):
    """Whole-UNet context windows written out plainly (the classic method): every window through the ControlNet
    and the unmodified UNet, predictions fused with the fusion weights every step."""
    from v2v.sampler import encode_prompt

    sch = type(models.scheduler).from_config(models.scheduler.config)
    sch.set_timesteps(steps, device="cpu")
    emb = encode_prompt(models, prompt)
    lat = initial_noise(num_frames, height, width, torch.Generator("cpu").manual_seed(seed), context=context,
                        overlap=overlap) * sch.init_noise_sigma
    wins = plan_windows(num_frames, context, overlap)
    for t in sch.timesteps:
        acc, wsum = torch.zeros_like(lat), torch.zeros(num_frames)
        for r in wins:
            x = sch.scale_model_input(lat[r.start:r.stop], t)
            e = emb.expand(len(r), -1, -1)
            down, mid = models.controlnet(x, t, encoder_hidden_states=e, controlnet_cond=control(list(r)),
                                          conditioning_scale=pose_strength, return_dict=False)
            pred = models.unet(x.permute(1, 0, 2, 3)[None], t, encoder_hidden_states=e,
                               down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
            w = torch.from_numpy(fusion_weights(len(r), fusion))
            acc[r.start:r.stop] += pred[0].permute(1, 0, 2, 3) * w[:, None, None, None]
            wsum[r.start:r.stop] += w
        lat = sch.step(acc / wsum[:, None, None, None], t, lat).prev_sample
    return lat


class FrameCounter:
    """Counts the frames that go through a module's spatial layers (forward hook on its first conv)."""

    def __init__(self, module, halves=1):
        self.frames, self.largest, self.halves = 0, 0, halves
        self.handle = module.conv_in.register_forward_hook(self.hook)

    def hook(self, mod, args, out):
        n = out.shape[0] // self.halves
        self.frames += n
        self.largest = max(self.largest, n)

    def remove(self):
        self.handle.remove()


@pytest.mark.parametrize("fusion", ["pyramid", "flat"])
def test_budget_of_one_window_is_whole_unet_context_windows(models, fusion):
    n, h, w = 40, 32, 32
    _, control, calls = make_control(n, h, w)
    kw = dict(prompt="a person", num_frames=n, height=h, width=w, control=control, steps=2, seed=3,
              context=16, overlap=4, fusion=fusion)
    ref = reference_windows(models, **kw)
    calls.clear()
    seen, stats = [], {}
    got = generate(models, frame_budget=16, progress=lambda d, t: seen.append((d, t)), stats=stats, **kw)
    wins = plan_windows(n, 16, 4)
    assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    # every window, every step; the steps sweep along the video one behind the other (sampling_order)
    assert calls == [list(wins[k]) for _, k in sampling_order(plan_segments(wins, 16), 2)]
    assert calls != [list(r) for r in wins] * 2
    assert seen == [(i, 2 * len(wins)) for i in range(1, 2 * len(wins) + 1)]
    assert stats["segments"] == len(wins) and stats["spatial_passes"] == pytest.approx(48 / 40)


def test_segments_do_spatial_work_once_within_the_budget(models):
    n, h, w = 160, 16, 16
    _, control, calls = make_control(n, h, w)
    kw = dict(prompt="a person", num_frames=n, height=h, width=w, control=control, steps=2, seed=3)
    unet_count, cn_count = FrameCounter(models.unet), FrameCounter(models.controlnet)
    try:
        stats = {}
        out = generate(models, frame_budget=64, stats=stats, **kw)
    finally:
        unet_count.remove(), cn_count.remove()
    segs = plan_segments(plan_windows(n, 16, 4), 64)
    assert [len(s.frames) for s in segs] == [64, 64, 40]
    passes = spatial_passes(segs, n)
    assert passes <= 1.15 and stats["spatial_passes"] == pytest.approx(passes)
    # measured, not computed: the frames that went through the UNet's and the ControlNet's first conv
    assert unet_count.frames == cn_count.frames == round(passes * n) * 2
    assert unet_count.largest <= 64 and cn_count.largest <= 64  # the budget bounds every call
    assert calls == [list(segs[k].frames) for _, k in sampling_order(segs, 2)]
    assert torch.isfinite(out).all() and out.shape == (n, 4, h // 8, w // 8)
    assert torch.equal(out, generate(models, frame_budget=64, **kw)), "reproducible from the seed"
    # whole-UNet windows (budget = one window) compute each frame ~1.33 times; the results differ
    unet_count = FrameCounter(models.unet)
    try:
        classic = generate(models, frame_budget=16, **kw)
    finally:
        unet_count.remove()
    assert unet_count.frames / (n * 2) == pytest.approx(spatial_passes(plan_segments(plan_windows(n, 16, 4), 16), n))
    assert unet_count.frames / (n * 2) >= 1.3  # 13 windows of 16 for 160 frames
    assert not torch.allclose(out, classic, atol=1e-4)


def test_auto_budget_and_bad_budget(models):
    n = 20
    _, control, _ = make_control(n, 16, 16)
    kw = dict(prompt="a person", num_frames=n, height=16, width=16, control=control, steps=1)
    stats = {}
    generate(models, stats=stats, **kw)
    assert stats["frame_budget"] >= 16 and stats["segments"] == 1  # 20 frames fit in the automatic budget
    with pytest.raises(InvalidOptions, match="frame budget"):
        generate(models, frame_budget=8, **kw)


def test_windowed_motion_module_fuses_its_windows(models):
    """A wrapped motion module equals its windows run alone, fused with the shares; one full window is the
    module itself, bit for bit."""
    from v2v.windows import Segment, segment_weights

    inner = models.unet.down_blocks[0].motion_modules[0]
    plan = MotionPlan()
    wrapped = WindowedMotionModule(inner, plan)
    torch.manual_seed(0)
    b, n, c, hh, ww = 2, 10, inner.proj_in.in_features, 3, 2
    x = torch.randn(b * n, c, hh, ww)
    seg = Segment(tuple(range(n)), ((0, 1, 2, 3, 4, 5), (4, 5, 6, 7, 8, 9), (8, 9, 0, 1)))  # the last wraps
    _, shares = segment_weights(seg)
    plan.set(n, seg.windows, shares, "cpu", torch.float32)
    got = wrapped(x, num_frames=n).view(b, n, c, hh, ww)
    xs = x.view(b, n, c, hh, ww)
    want = torch.zeros_like(xs)
    for win, share in zip(seg.windows, shares):
        y = inner(xs[:, list(win)].reshape(-1, c, hh, ww), num_frames=len(win)).view(b, len(win), c, hh, ww)
        want[:, list(win)] += y * torch.from_numpy(share)[None, :, None, None, None]
    assert torch.allclose(got, want, atol=1e-5)
    assert plan.calls == 2  # the two 6-frame windows went through the module together, as one batch
    plan.batch_windows = False  # one call per window: the same result
    one_by_one = wrapped(x, num_frames=n).view(b, n, c, hh, ww)
    assert plan.calls == 2 + 3
    assert torch.allclose(one_by_one, want, atol=1e-5) and torch.allclose(one_by_one, got, atol=1e-5)
    plan.batch_windows = True
    plan.set(n, [tuple(range(n))], [np.ones(n, np.float32)], "cpu", torch.float32)
    assert torch.equal(wrapped(x, num_frames=n), inner(x, num_frames=n))
    with pytest.raises(RuntimeError, match="motion plan"):
        plan.set(4, [(0, 1), (2, 3)], [np.ones(2, np.float32)] * 2, "cpu", torch.float32)
        wrapped(x, num_frames=n)


def test_motion_modules_unwrapped_after_generate(models):
    before = [type(m) for m in models.unet.down_blocks[0].motion_modules]
    n = count_motion_modules(models.unet)
    assert n > 0
    _, control, _ = make_control(30, 16, 16)
    generate(models, prompt="x", num_frames=30, height=16, width=16, control=control, steps=1, frame_budget=30)
    assert [type(m) for m in models.unet.down_blocks[0].motion_modules] == before
    assert not any(isinstance(m, WindowedMotionModule) for m in models.unet.modules())


def test_loop_wraps_the_windows(models):
    n, h, w = 30, 16, 16
    _, control, calls = make_control(n, h, w)
    kw = dict(prompt="a person", num_frames=n, height=h, width=w, control=control, steps=2, seed=3)
    plain = generate(models, **kw)
    calls.clear()
    looped = generate(models, loop=True, frame_budget=16, **kw)
    wins = plan_loop_windows(n, 16, 4)
    assert wins[-1][-1] < wins[-1][0]  # the last window runs past the end into the start
    assert calls == [list(wn) for wn in wins] * 2
    assert torch.isfinite(looped).all() and not torch.allclose(plain, looped, atol=1e-4)
    # the first frames now also hear from the wrapping window; the middle ones only differ by the fused context
    assert not torch.allclose(plain[:4], looped[:4], atol=1e-4)
    short = dict(kw, num_frames=12, control=make_control(12, h, w)[1])
    assert torch.equal(generate(models, loop=True, **short), generate(models, **short))  # one window: no wrap


def test_prompt_travel(models):
    from v2v.sampler import _TextEmbeddings, encode_prompt

    n = 8
    _, control, _ = make_control(n, 16, 16)
    kw = dict(num_frames=n, height=16, width=16, control=control, steps=2, seed=1)
    one = generate(models, prompt="a cat", **kw)
    assert torch.equal(generate(models, prompt="ignored", prompt_travel=[(0, "a cat")], **kw), one)
    travel = generate(models, prompt="ignored", prompt_travel=[(0, "a cat"), (6, "a dog")], **kw)
    assert not torch.allclose(travel, one, atol=1e-5)
    text = _TextEmbeddings(models, "", None, [(0, "a cat"), (4, "a dog")], n)
    cat, dog = encode_prompt(models, "a cat")[0], encode_prompt(models, "a dog")[0]
    e = text.for_frames(list(range(n)))
    assert torch.allclose(e[0], cat) and torch.allclose(e[4], dog) and torch.allclose(e[7], dog)
    assert torch.allclose(e[1], 0.75 * cat + 0.25 * dog, atol=1e-6)
    with pytest.raises(InvalidOptions, match="prompt-at"):
        generate(models, prompt="x", prompt_travel=[(2, "a"), (1, "b")], **kw)


def test_control_start_end(models):
    n = 8
    _, control, calls = make_control(n, 16, 16)
    kw = dict(prompt="a person", num_frames=n, height=16, width=16, control=control, steps=4, seed=1)
    full = generate(models, **kw)
    calls.clear()
    assert torch.equal(generate(models, control_start=0.0, control_end=1.0, **kw), full)
    calls.clear()
    half = generate(models, control_end=0.5, **kw)
    assert len(calls) == 2  # the ControlNet acts in the first two of four steps only
    assert not torch.allclose(half, full, atol=1e-5)
    calls.clear()
    generate(models, control_start=0.25, **kw)
    assert len(calls) == 3
    with pytest.raises(InvalidOptions):
        generate(models, control_start=0.6, control_end=0.5, **kw)


@pytest.mark.parametrize("strength,steps", [(0.5, 4), (0.75, 4), (0.5, 2)])
def test_strength_equals_diffusers_video_to_video(models, strength, steps):
    """--strength < 1 on one window equals diffusers' AnimateDiffVideoToVideoControlNetPipeline given the same
    noised source latents: the same last steps of the schedule, the same updates."""
    from diffusers import AnimateDiffVideoToVideoControlNetPipeline
    from PIL import Image

    from v2v.option_values import strength_steps

    n, h, w = 8, 32, 32
    frames, control, calls = make_control(n, h, w)
    torch.manual_seed(0)
    init = torch.randn(n, 4, h // 8, w // 8)  # stand-in source latents
    got = generate(models, prompt="a dancer", num_frames=n, height=h, width=w, control=control, steps=steps,
                   seed=5, init_latents=init, strength=strength, pose_strength=0.7)
    run = strength_steps(steps, strength)
    assert len(calls) == run  # only the last steps of the schedule run

    sch = type(models.scheduler).from_config(models.scheduler.config)
    sch.set_timesteps(steps)
    t0 = sch.timesteps[steps - run]
    noise = initial_noise(n, h, w, torch.Generator("cpu").manual_seed(5))
    noised = sch.add_noise(init, noise, t0[None])  # what v2v starts from
    pipe = AnimateDiffVideoToVideoControlNetPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=models.unet,
        motion_adapter=None, controlnet=models.controlnet,
        scheduler=type(models.scheduler).from_config(models.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    final = {}
    pipe(prompt="a dancer", latents=noised.permute(1, 0, 2, 3)[None], height=h, width=w,
         conditioning_frames=[Image.fromarray(f) for f in frames], num_inference_steps=steps, strength=strength,
         guidance_scale=1.0, controlnet_conditioning_scale=0.7, output_type="latent",
         generator=torch.Generator("cpu").manual_seed(5),
         callback_on_step_end=lambda p, i, t, kw: final.update(latents=kw["latents"].clone()) or {},
         callback_on_step_end_tensor_inputs=["latents"])
    ref = final["latents"][0].permute(1, 0, 2, 3)
    assert (got - ref).abs().max().item() <= 1e-4
    # and the source shows through: closer to it than a run from pure noise
    from_noise = generate(models, prompt="a dancer", num_frames=n, height=h, width=w, control=control,
                          steps=steps, seed=5, pose_strength=0.7)
    assert (got - init).abs().mean() < (from_noise - init).abs().mean()


def test_strength_off_grid_and_shape(models):
    from v2v.option_values import strength_steps

    assert [strength_steps(4, s) for s in (0.25, 0.5, 0.75, 1.0)] == [1, 2, 3, 4]
    for bad in (0.6, 0.1, 0.0, 1.5):
        with pytest.raises(InvalidOptions):
            strength_steps(4, bad)
    _, control, _ = make_control(4, 16, 16)
    with pytest.raises(InvalidOptions, match="init_latents"):
        generate(models, prompt="x", num_frames=4, height=16, width=16, control=control, steps=2,
                 init_latents=torch.zeros(3, 4, 2, 2), strength=0.5)


def test_encode_frames_is_the_vae_posterior_mean(models):
    from v2v.vae import encode_frames

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    z = encode_frames(models, iter(frames), chunk=2)
    assert z.shape == (5, 4, 4, 4) and z.dtype == torch.float32
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    ref = models.vae.encode(x).latent_dist.mean * models.vae.config.scaling_factor
    assert torch.allclose(z, ref, atol=1e-5)


@pytest.mark.slow
def test_compile_gives_the_same_frames(tmp_path_factory):
    """--compile (per-block torch.compile) changes speed, not results (float rounding only). Slow: compiles."""
    from v2v.models.runtime import compile_models

    tiny = write_tiny_diffusion_set(tmp_path_factory.mktemp("tiny-compile"))
    m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"])
    n = 20
    _, control, _ = make_control(n, 32, 32)
    kw = dict(prompt="a person", num_frames=n, height=32, width=32, control=control, steps=2, seed=3,
              frame_budget=20)
    eager = generate(m, **kw)
    assert compile_models(m) > 10
    compiled = generate(m, **kw)
    assert (compiled - eager).abs().max().item() <= 1e-4 * eager.abs().max().item()
    images = np.stack(list(decode_latents(m, compiled, chunk=8)))
    assert images.shape == (n, 32, 32, 3)


def test_compiled_models_run_under_raised_recompile_limits_in_the_running_thread(tmp_path_factory):
    """Every ResNet/attention block of one class is a new compiled version of the same code: with dynamo's
    default limit (8) most of an SD 1.5 UNet would stay uncompiled. torch keeps config overrides per thread, and
    the pipeline compiles on its loading thread but samples and decodes on another: the limits must be in force
    where the models run (generate, decode), raised, never lowered, and left as they were afterwards.
    (Lazily compiled here: the compiled blocks are not called, the limits are read by hooks.)"""
    import threading

    import torch._dynamo.config as dc

    from v2v.models.runtime import RECOMPILE_LIMIT, compile_models

    tiny = write_tiny_diffusion_set(tmp_path_factory.mktemp("tiny-limit"))
    m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"])
    seen = []
    t = threading.Thread(target=lambda: seen.append(compile_models(m)))   # as the pipeline's loading thread
    t.start()
    t.join()
    assert seen[0] > 10 and m.compiled
    for mod in [*m.unet.modules(), *m.controlnet.modules(), *m.vae.decoder.modules()]:
        if hasattr(mod, "_compiled_call_impl"):
            mod._compiled_call_impl = None                               # keep the blocks eager (no compiling)
    limits = []
    hook = lambda *a: limits.append((dc.recompile_limit, dc.accumulated_recompile_limit))  # noqa: E731
    handles = [m.unet.register_forward_pre_hook(hook), m.vae.decoder.register_forward_pre_hook(hook)]
    before = (dc.recompile_limit, dc.accumulated_recompile_limit)
    try:
        _, control, _ = make_control(16, 32, 32)
        lat = generate(m, prompt="a person", num_frames=16, height=32, width=32, control=control, steps=1, seed=1)
        list(decode_latents(m, lat[:2], chunk=2))
        assert len(limits) >= 2
        assert all(r >= RECOMPILE_LIMIT and a >= 8 * RECOMPILE_LIMIT for r, a in limits), limits
        assert (dc.recompile_limit, dc.accumulated_recompile_limit) == before          # restored afterwards
        limits.clear()
        with dc.patch(recompile_limit=1000):                              # a higher limit of the user's stays
            generate(m, prompt="a person", num_frames=16, height=32, width=32, control=control, steps=1, seed=1)
        assert limits and all(r == 1000 for r, _ in limits)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.gpu
def test_decode_on_another_gpu_equals_the_cpu(tmp_path_factory):
    """The decode's CUDA events and pinned copy follow the models' device: with --device cuda:1 the frames
    must not be read before their copy from that device ends (bare event records go to the current device)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs (the bug was reading frames decoded on cuda:1 by cuda:0's events)")
    tiny = write_tiny_diffusion_set(tmp_path_factory.mktemp("tiny-dev"))
    lat = torch.randn(12, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = np.stack(list(decode_latents(load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"]),
                                       lat, chunk=4)))
    for dev in ("cuda:1",):
        m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], device=dev,
                                  dtype=torch.float32)
        got = np.stack(list(decode_latents(m, lat, chunk=4)))
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.gpu
def test_offload_on_gpu(tmp_path_factory):
    """--offload: the text encoder and VAE sit in CPU RAM between uses; results equal the resident run."""
    from v2v.models.runtime import enable_offload

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")

    tiny = write_tiny_diffusion_set(tmp_path_factory.mktemp("tiny-offload"))
    m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], device="cuda")
    _, control, _ = make_control(8, 32, 32)
    kw = dict(prompt="a person", num_frames=8, height=32, width=32, control=control, steps=2, seed=3)
    resident = generate(m, **kw)
    enable_offload(m)
    assert next(m.text_encoder.parameters()).device.type == "cpu"
    off = generate(m, **kw)
    assert next(m.text_encoder.parameters()).device.type == "cpu" and next(m.vae.parameters()).device.type == "cpu"
    assert torch.allclose(off, resident, atol=1e-5)
    assert len(list(decode_latents(m, off))) == 8 and next(m.vae.parameters()).device.type == "cpu"


def test_control_as_bytes_equals_control_as_floats(models):
    frames, control, _ = make_control(20, 32, 32)
    as_bytes = lambda idx: torch.from_numpy(frames[idx]).permute(0, 3, 1, 2)  # noqa: E731
    kw = dict(prompt="a person", num_frames=20, height=32, width=32, steps=2, seed=2)
    assert torch.equal(generate(models, control=as_bytes, **kw), generate(models, control=control, **kw))


def test_strength_and_init_latents_go_together(models):
    _, control, _ = make_control(4, 16, 16)
    kw = dict(prompt="x", num_frames=4, height=16, width=16, control=control, steps=2)
    with pytest.raises(InvalidOptions, match="init_latents"):
        generate(models, strength=0.5, **kw)
    with pytest.raises(InvalidOptions, match="init_latents"):
        generate(models, init_latents=torch.zeros(4, 4, 2, 2), **kw)


def test_auto_budget_on_cuda_measures_after_handing_the_cache_back(monkeypatch):
    """On CUDA the automatic budget hands torch's cached blocks back first and then reads the free memory:
    counting cached blocks as free overestimated it when some are cached for another stream (pose on the GPU),
    which the sampler cannot use. (Doubles for the CUDA calls; auto_frame_budget itself is tested above.)"""
    from types import SimpleNamespace

    from v2v.sampler import pick_frame_budget
    from v2v.windows import auto_frame_budget

    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (calls.append("info"), (6 * 2**30, 12 * 2**30))[1])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * 2**30)   # would be counted before
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * 2**30)
    m = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float16)
    got = pick_frame_budget(m, 512, 512, False, 16)
    assert calls == ["empty", "info"]
    assert got == auto_frame_budget(6 * 2**30, 512, 512, dtype_bytes=2, cfg=False, context=16)


@pytest.mark.parametrize("case", [
    dict(num_frames=40, frame_budget=16),  # five segments
    dict(num_frames=64, frame_budget=16, steps=4),  # seven segments, four steps: a long wavefront
    dict(num_frames=40, frame_budget=28, guidance=2.0, negative_prompt="blurry"),  # CFG, segments of two windows
    dict(num_frames=30, frame_budget=16, loop=True),  # the last segment wraps: step by step, all at the end
    dict(num_frames=12),  # one window
    dict(num_frames=40, frame_budget=16, steps=1),  # the first step is the last
    dict(num_frames=40, frame_budget=16, strength=0.5),  # from source latents: the last steps of the schedule
    dict(num_frames=40, frame_budget=16, steps=4, control_start=0.25, control_end=0.75),  # ControlNet in 2 of 4
    dict(num_frames=40, frame_budget=16, prompt_travel=[(0, "a cat"), (30, "a dog")]),
])
def test_passes_in_a_wavefront_give_the_step_by_step_frames(models, case, monkeypatch):
    """The passes sweep along the video (windows.sampling_order), each frame stepped as soon as every segment
    holding it has run the step: exactly the latents of running the steps one after the other over the whole video
    (diffusers' scheduler stepping the whole video each step, as before). on_final gets every frame once, in order,
    those same values, each run right after the pass that finished it."""
    import v2v.sampler as G
    from v2v.windows import sampling_order

    case = dict(case)
    n, h, w = case.pop("num_frames"), 16, 16
    _, control, _ = make_control(n, h, w)
    kw = dict(prompt="a person", num_frames=n, height=h, width=w, control=control, seed=5,
              steps=case.pop("steps", 2), **case)
    if kw.get("strength", 1.0) < 1:
        kw["init_latents"] = torch.randn(n, 4, h // 8, w // 8, generator=torch.Generator().manual_seed(2))
    with monkeypatch.context() as m:
        m.setattr(G, "_ELEMENTWISE_STEPS", ())  # step by step, the whole video stepped at once
        stepwise = generate(models, **kw)
    assert torch.equal(generate(models, **kw), stepwise)
    passes = []  # denoising passes done so far
    got = []

    def on_final(start, latents):
        got.append((start, latents.clone(), len(passes)))

    streamed = generate(models, on_final=on_final, progress=lambda d, t: passes.append(d), **kw)
    assert torch.equal(streamed, stepwise)
    assert [s for s, _, _ in got] == [0] + list(np.cumsum([x.shape[0] for _, x, _ in got]))[:-1]
    assert torch.equal(torch.cat([x for _, x, _ in got]), stepwise)
    assert all(x.dtype == torch.float32 and x.device.type == "cpu" for _, x, _ in got)
    # when each run came: simulated from the order, frame by frame (a frame is final once every segment holding it
    # has run the last step; runs are the final prefix's growth)
    segs = plan_segments(plan_loop_windows(n, 16, 4) if kw.get("loop") else plan_windows(n, 16, 4),
                         kw.get("frame_budget") or 64)
    run_steps = len(passes) // len(segs)
    order = sampling_order(segs, run_steps)
    last_left = {f: sum(f in s.frames for s in segs) for f in range(n)}
    want, final = [], 0
    for i, (st, k) in enumerate(order, 1):
        if st == run_steps - 1:
            for f in segs[k].frames:
                last_left[f] -= 1
            start = final
            while final < n and last_left[final] == 0:
                final += 1
            if final > start:
                want.append((start, i))
    assert [(s0, c) for s0, _, c in got] == want
    if not kw.get("loop") and len(segs) > run_steps > 1:
        assert got[0][2] <= order.index((0, len(segs) - 1)), "the first frames were final before step 0 ended"


def test_final_frames_at_the_end_for_a_scheduler_that_is_not_elementwise(models, monkeypatch):
    """A scheduler not known to step frames independently: the whole video once, after the last step."""
    import v2v.sampler as G

    monkeypatch.setattr(G, "_ELEMENTWISE_STEPS", ())
    n = 40
    _, control, _ = make_control(n, 16, 16)
    kw = dict(prompt="a person", num_frames=n, height=16, width=16, control=control, steps=2, seed=5,
              frame_budget=16)
    got, passes = [], []
    out = generate(models, on_final=lambda s, x: got.append((s, x, len(passes))),
                   progress=lambda d, t: passes.append(d), **kw)
    assert len(got) == 1 and got[0][0] == 0 and torch.equal(got[0][1], out) and got[0][2] == len(passes) > 1


def test_next_control_maps_are_made_ahead_on_a_helper_thread(models):
    """While a segment runs, the next segment's control maps (the next the ControlNet acts on) are made on a helper
    thread: every call after the first comes from one (a daemon, never holding up the interpreter's exit), in the
    plan's order, once each; the frames are the same."""
    import threading

    n = 40
    _, control, _ = make_control(n, 16, 16)
    seen = []

    def recording(indices):
        me = threading.current_thread()
        seen.append((me.name if me.daemon or me is threading.main_thread() else "not a daemon", list(indices)))
        return control(indices)

    kw = dict(prompt="a person", num_frames=n, height=16, width=16, steps=4, seed=3, frame_budget=16)
    plain = generate(models, control=control, **kw)
    ahead = generate(models, control=recording, control_start=0.25, **kw)  # the ControlNet skips step 1
    assert torch.equal(generate(models, control=control, control_start=0.25, **kw), ahead)
    assert not torch.equal(plain, ahead)
    segs = plan_segments(plan_windows(n, 16, 4), 16)
    assert [f for _, f in seen] == [list(segs[k].frames) for s, k in sampling_order(segs, 4) if s > 0]
    assert seen[0][0] == threading.current_thread().name
    assert all(name.startswith("v2v-control") for name, _ in seen[1:])


def test_an_error_in_control_maps_made_ahead_comes_back_as_itself(models):
    n = 40
    _, control, _ = make_control(n, 16, 16)
    asked = []

    def failing(indices):
        asked.append(list(indices))
        if len(asked) == 3:
            raise ValueError("pose stage failed (test)")
        return control(indices)

    with pytest.raises(ValueError, match="pose stage failed"):
        generate(models, prompt="a person", num_frames=n, height=16, width=16, control=failing, steps=2, seed=3,
                 frame_budget=16)
    assert len(asked) == 3  # nothing asked for after the failure


def test_control_wait_counts_the_sampler_waiting_for_maps_errors_included(models):
    """stats["control_wait"]: the seconds the sampler waited for control maps, including a wait that ended in an
    error (the pose stage ending early), and not the time the device ran."""
    import time

    n = 40
    _, control, _ = make_control(n, 16, 16)
    asked = []

    def slow(indices):  # the first call is the sampler's own; later ones are made ahead on the helper thread
        asked.append(list(indices))
        time.sleep(0.3 if len(asked) in (1, 3) else 0.0)
        if len(asked) == 3:
            raise ValueError("pose stage ended (test)")
        return control(indices)

    kw = dict(prompt="a person", num_frames=n, height=16, width=16, steps=2, seed=3, frame_budget=16)
    stats: dict = {}
    started = time.perf_counter()
    with pytest.raises(ValueError, match="pose stage ended"):
        generate(models, control=slow, stats=stats, **kw)
    took = time.perf_counter() - started
    # the first call's 0.3 s, and at least most of the third's (made ahead while one pass ran)
    assert 0.4 < stats["control_wait"] < took, (stats, took)
    fast: dict = {}
    generate(models, control=control, stats=fast, **kw)
    assert 0.0 < fast["control_wait"] < 0.2 < stats["control_wait"]


@pytest.mark.parametrize("steps,strength", [(1, 1.0), (4, 0.25), (4, 1.0)])
def test_frames_stepped_as_they_are_ready_give_no_scheduler_warning(models, steps, strength):
    """Frames are stepped by copies of the scheduler as it stands at each step: none may make diffusers warn that
    scale_model_input was not called (it was, for every pass), with one step run (--steps 1, or a strength leaving
    one: the first step is the last) or several; the step-by-step run gives no warning either."""
    import v2v.sampler as G
    import logging

    n = 40
    _, control, _ = make_control(n, 16, 16)
    kw = dict(prompt="a person", num_frames=n, height=16, width=16, control=control, steps=steps, seed=5,
              frame_budget=16, strength=strength)
    if strength < 1:
        kw["init_latents"] = torch.randn(n, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("diffusers.schedulers.scheduling_euler_discrete")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        G._ELEMENTWISE_STEPS, saved = (), G._ELEMENTWISE_STEPS
        try:
            plain = generate(models, **kw)  # step by step
        finally:
            G._ELEMENTWISE_STEPS = saved
        assert not records
        got = []
        out = generate(models, on_final=lambda s, x: got.append(x), **kw)
    finally:
        logger.removeHandler(handler)
    assert len(got) > 1 and torch.equal(out, plain)
    assert not [r for r in records if "scale_model_input" in r]


def test_control_maps_are_released_once_no_pass_needs_them(models):
    """control.release(n), where control has it, says frames before n will not be asked for again: called with
    growing n up to the frame count as the passes sweep along the video, never before a later call for those
    frames; step by step (a loop), only at the end."""
    n = 64
    _, control, _ = make_control(n, 16, 16)

    class Maps:
        def __init__(self):
            self.events = []

        def __call__(self, indices):
            self.events.append(("call", min(indices)))
            return control(indices)

        def release(self, m):
            self.events.append(("release", m))

    kw = dict(prompt="a person", num_frames=n, height=16, width=16, steps=2, seed=3, frame_budget=16)
    for loop in (False, True):
        maps = Maps()
        generate(models, control=maps, loop=loop, **kw)
        released = [m for e, m in maps.events if e == "release"]
        assert released == sorted(set(released)) and released[-1] == n
        for i, (e, m) in enumerate(maps.events):
            if e == "release":
                assert all(lo >= m for e2, lo in maps.events[i + 1:] if e2 == "call")
        if loop:  # the last segment wraps onto the first: nothing is done with before the end
            assert released == [n]
        else:
            assert len(released) > 2 and released[0] < n // 2
