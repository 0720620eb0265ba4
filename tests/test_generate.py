"""The sampler, on the tiny models: equal to diffusers' AnimateDiffControlNetPipeline on one window; windows."""

import numpy as np
import pytest
import torch

from v2v.errors import InvalidOptions
from v2v.generate import decode_latents, decode_to_float, generate, initial_noise
from v2v.models import load_diffusion_models
from v2v.tiny.diffusion import write_tiny_diffusion_set
from v2v.windows import plan_windows


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
    assert (latents - ref_latents).abs().max().item() <= 1e-4
    assert calls == [list(range(num_frames))] * steps  # one window, once per step

    decoded = decode_to_float(models, latents).permute(0, 2, 3, 1).numpy()
    assert np.abs(decoded - ref_frames).max() <= 1e-4
    images = np.stack(list(decode_latents(models, latents, chunk=3)))
    assert images.shape == (num_frames, h, w, 3) and images.dtype == np.uint8
    assert np.abs(images.astype(int) - np.round(ref_frames * 255).astype(int)).max() <= 1


def test_control_and_prompt_matter(models):
    frames, control, _ = make_control(8, 32, 32)
    _, other, _ = make_control(8, 32, 32, seed=8)
    kw = dict(prompt="a man", num_frames=8, height=32, width=32, steps=2, seed=1)
    base = generate(models, control=control, **kw)
    assert not torch.allclose(base, generate(models, control=other, **kw), atol=1e-5)
    assert not torch.allclose(base, generate(models, control=control, **{**kw, "prompt": "a woman"}), atol=1e-5)
    calls = []
    no_pose = generate(models, control=lambda i: calls.append(i), pose_strength=0.0, **kw)
    assert calls == []  # pose strength 0 skips the ControlNet
    assert not torch.allclose(base, no_pose, atol=1e-5)


def test_multi_window_run(models):
    n, h, w = 40, 32, 32
    _, control, calls = make_control(n, h, w)
    seen = []
    kw = dict(prompt="a person", num_frames=n, height=h, width=w, control=control, steps=2, seed=3,
              context=16, overlap=4)
    a = generate(models, progress=lambda d, t: seen.append((d, t)), **kw)
    wins = plan_windows(n, 16, 4)
    assert a.shape == (n, 4, h // 8, w // 8) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert calls == [list(r) for r in wins] * 2  # every window, every step, one at a time
    total = 2 * len(wins)
    assert seen == [(i, total) for i in range(1, total + 1)]

    calls.clear()
    assert torch.equal(a, generate(models, **kw)), "reproducible from the seed"
    assert not torch.allclose(a, generate(models, **{**kw, "seed": 4}))
    flat = generate(models, fusion="flat", **kw)
    assert torch.isfinite(flat).all() and not torch.equal(a, flat)
    # after one step, frames that only the first window sees do not depend on the fusion weights, the others do
    one = {**kw, "steps": 1}
    a1, flat1 = generate(models, **one), generate(models, fusion="flat", **one)
    assert torch.allclose(a1[:12], flat1[:12], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a1[12:16], flat1[12:16], rtol=1e-3, atol=1e-3)
    images = list(decode_latents(models, a, chunk=16))
    assert len(images) == n and all(im.shape == (h, w, 3) for im in images)


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


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_window_batch_equals_one_at_a_time(models, guidance):
    """Windows stacked along the batch give what one window at a time gives; the last group may be shorter."""
    n, h, w = 52, 32, 32  # 4 windows of 16 (stride 12; the last aligned to the end)
    _, control, calls = make_control(n, h, w)
    kw = dict(prompt="a person", negative_prompt="blurry", num_frames=n, height=h, width=w, control=control,
              steps=2, seed=3, context=16, overlap=4, guidance=guidance, pose_strength=0.9)
    wins = plan_windows(n, 16, 4)
    assert len(wins) == 4
    ref = generate(models, window_batch=1, **kw)
    for wb in (2, 3, 4, 8):
        calls.clear()
        seen = []
        got = generate(models, window_batch=wb, progress=lambda d, t: seen.append((d, t)), **kw)
        assert got.shape == ref.shape and got.dtype == torch.float32
        # float32 rounding only (other GEMM blockings at another batch size): the noise predictions (|x| ~ 1)
        # differ by ~2e-6 (below); the latents (|x| up to ~60 after sigma 14.6 scaling) by 1e-5 of their scale
        assert (got - ref).abs().max().item() <= 1e-5 * ref.abs().max().item(), wb
        assert calls == [list(r) for r in wins] * 2  # control still asked window by window, in order
        assert seen == [(i, 8) for i in range(1, 9)]  # progress per window, as before
    # the predictions themselves, 4 windows in one call against one at a time, within 1e-5
    from v2v.generate import _predict_windows, encode_prompt

    sch = type(models.scheduler).from_config(models.scheduler.config)
    sch.set_timesteps(2, device="cpu")
    t = sch.timesteps[0]
    emb = encode_prompt(models, "a person")
    if guidance > 1:
        emb = torch.cat([encode_prompt(models, "blurry"), emb])
    lat = initial_noise(n, h, w, torch.Generator("cpu").manual_seed(0)) * sch.init_noise_sigma

    def predict(group):
        return _predict_windows(models, sch, [lat[r.start:r.stop] for r in group], t, t, emb, control,
                                [list(r) for r in group], h, w, guidance > 1, guidance, 0.9)

    one = [predict([r])[0] for r in wins]
    four = predict(wins)
    for a, b in zip(one, four):
        assert (a - b).abs().max().item() <= 1e-5
    # one window: batching changes nothing
    one = dict(kw, num_frames=12, control=make_control(12, h, w)[1])
    assert torch.equal(generate(models, window_batch=4, **one), generate(models, window_batch=1, **one))


def test_window_batch_groups_and_validation(models):
    from v2v.generate import _groups

    wins = [range(0, 16), range(12, 28), range(24, 40), range(0, 8), range(8, 16)]
    assert [[(r.start, r.stop) for r in g] for g in _groups(wins, 2)] == [
        [(0, 16), (12, 28)], [(24, 40)], [(0, 8), (8, 16)]]  # equal lengths only, at most 2
    assert list(_groups(wins, 1)) == [[r] for r in wins]
    _, control, _ = make_control(4, 32, 32)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidOptions):
            generate(models, prompt="x", num_frames=4, height=32, width=32, control=control, steps=1,
                     window_batch=bad)
