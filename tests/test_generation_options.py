"""Generation options through the whole path (tiny models): strength, prompt travel, loop, frame budget,
control start/end, noise and fusion, and the control-map cache."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

import v2v
from v2v.stages.generate import ControlMaps

import media


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return media.make_video(tmp_path_factory.mktemp("gen") / "clip.mp4", seconds=0.8, fps=25, size=(80, 64))


@pytest.fixture(scope="module")
def restyler(tiny_models):
    return v2v.Restyler(models="tiny", show_progress=False, size=64)


def frames_of(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def run(restyler, clip, tmp_path, name, **kw):
    r = restyler.restyle(clip, tmp_path / f"{name}.mp4", prompt="a robot", **kw)
    return r, frames_of(r.output)


def test_options_change_the_result_and_keep_the_frames(restyler, clip, tmp_path):
    base, f0 = run(restyler, clip, tmp_path, "base")
    assert base.frames == 20 and len(f0) == 20
    budget = base.settings["options"]["frame_budget"]  # the automatic budget, resolved and recorded
    assert isinstance(budget, int) and 16 <= budget <= 64
    again = run(restyler, clip, tmp_path, "again")[1]
    assert np.array_equal(f0, again), "same options, same frames"
    for name, kw in [("strength", dict(strength=0.5)), ("travel", dict(prompt_at="0:a robot;12:a knight")),
                     ("loop", dict(loop=True)), ("budget", dict(frame_budget=16)),
                     ("control", dict(control_end=0.5)), ("noise", dict(noise="random")),
                     ("flat", dict(fusion="flat"))]:
        r, f = run(restyler, clip, tmp_path, name, **kw)
        assert r.frames == 20 and f.shape == f0.shape, name
        assert not np.array_equal(f, f0), f"{name} changed nothing"
        key, value = next(iter(kw.items()))
        recorded = r.settings["options"][key]
        assert recorded == value or (key == "prompt_at" and recorded == [[0, "a robot"], [12, "a knight"]]), name


def test_strength_keeps_more_of_the_source(restyler, clip, tmp_path):
    """With the source's latents as the start, the result stays nearer to what a pure VAE round trip of the
    source gives than a run from noise does, the more so the lower the strength (tiny random models: a
    relative test, not a look; the tiny VAE's round trip is far from the source, so it is the reference)."""
    import cv2

    from v2v.device import resolve_device, resolve_dtype
    from v2v.vae import decode_latents, encode_frames

    far = run(restyler, clip, tmp_path, "s1")[1].astype(float)
    mid = run(restyler, clip, tmp_path, "s50", strength=0.5)[1].astype(float)
    near = run(restyler, clip, tmp_path, "s25", strength=0.25)[1].astype(float)
    # the source at the processing size (8-bit YUV through the encoder: near, not equal), through the VAE
    small = [cv2.resize(f, (far.shape[2], far.shape[1]), interpolation=cv2.INTER_AREA) for f in frames_of(clip)]
    o = restyler.options_for("a robot")
    device = resolve_device(o.device)
    models = restyler.diffusion_models(o, device, resolve_dtype(o.dtype, device))
    trip = np.stack(list(decode_latents(models, encode_frames(models, small)))).astype(float)
    gaps = [np.abs(f - trip).mean() for f in (near, mid, far)]  # the tiny denoiser pulls hard: levels apart
    assert gaps[0] + 2 < gaps[1] and gaps[1] + 1 < gaps[2], gaps


def test_prompt_travel_errors(restyler, clip, tmp_path):
    with pytest.raises(v2v.InvalidOptions, match="past the last frame"):
        restyler.restyle(clip, tmp_path / "x.mp4", prompt="a robot", prompt_at="0:a;20:b")
    with pytest.raises(v2v.InvalidOptions, match="FRAME:PROMPT"):
        restyler.restyle(clip, tmp_path / "x.mp4", prompt="a robot", prompt_at="a cat")
    with pytest.raises(v2v.InvalidOptions, match="grid"):
        restyler.restyle(clip, tmp_path / "x.mp4", prompt="a robot", strength=0.3)
    assert not (tmp_path / "x.mp4").exists()


def test_prompt_at_json_file(restyler, clip, tmp_path):
    spec = tmp_path / "travel.json"
    spec.write_text('{"0": "a robot", "12": "a knight"}')
    a = run(restyler, clip, tmp_path, "json", prompt_at=str(spec))[1]
    b = run(restyler, clip, tmp_path, "inline", prompt_at="0:a robot;12:a knight")[1]
    assert np.array_equal(a, b)
    c = run(restyler, clip, tmp_path, "implicit0", prompt_at="12:a knight")[1]  # -p holds until frame 12
    assert np.array_equal(a, c)


def test_control_maps_rendered_once_per_frame(tiny_models):
    from v2v.pose.keypoints import FramePose

    poses = [FramePose(people=[], width=64, height=64) for _ in range(10)]
    maps = ControlMaps(poses, 64, 64, ("body", "hands", "face"), 0.3)
    a = maps([0, 1, 2])
    b = maps([1, 2, 3])
    assert a.shape == (3, 3, 64, 64) and a.dtype == torch.uint8  # bytes: the sampler scales them on the device
    assert maps.renders == 4  # frames 1 and 2 came from the cache
    tiny = ControlMaps(poses, 64, 64, ("body",), 0.3, cap=64 * 64 * 3)  # room for one map
    tiny([0, 1]), tiny([0, 1])
    assert tiny.renders == 3 and len(tiny.maps) == 1
    assert np.array_equal(b[0].numpy(), a[1].numpy())
    maps.release(2)  # the sampler is done with frames 0 and 1: their maps go, the others stay
    assert sorted(maps.maps) == [2, 3]
    maps([2, 3])
    assert maps.renders == 4
    maps.release(10)
    assert not maps.maps


def test_control_maps_are_the_rendered_poses_in_order(tiny_models):
    """Each map of a call is its frame's pose drawn by render_pose (channels first), whatever the order asked."""
    from v2v.pose.keypoints import FramePose, Person
    from v2v.pose.render import render_pose

    rng = np.random.default_rng(4)
    poses = []
    for _ in range(6):
        body = np.concatenate([rng.uniform(4, 44, (18, 2)), rng.uniform(0.5, 1, (18, 1))], axis=1)
        poses.append(FramePose([Person(body.astype(np.float32))], 48, 40))
    maps = ControlMaps(poses, 48, 40, ("body",), 0.3)
    got = maps([4, 1, 5])
    assert got.shape == (3, 3, 40, 48) and got.dtype == torch.uint8
    for j, i in enumerate([4, 1, 5]):
        want = render_pose(poses[i], 48, 40, ("body",), 0.3)
        assert want.any() and np.array_equal(got[j].permute(1, 2, 0).numpy(), want)


def test_cli_generation_flags(tiny_models, clip, tmp_path):
    from v2v.cli import main

    out = tmp_path / "cli.mp4"
    rc = main(["restyle", str(clip), "-p", "a robot", "-o", str(out), "--models", "tiny", "--size", "64",
               "--frame-budget", "20", "--loop", "--fusion", "flat", "--noise", "random", "--control-end", "0.5",
               "--prompt-at", "0:a robot;10:a cat", "--strength", "0.5", "--quiet"])
    assert rc == 0 and media.ffprobe_frame_count(out) == 20
    assert main(["restyle", str(clip), "-p", "x", "-o", str(tmp_path / "bad.mp4"), "--models", "tiny",
                 "--frame-budget", "8", "--quiet"]) == 2
    assert main(["restyle", str(clip), "-p", "x", "-o", str(tmp_path / "bad.mp4"), "--models", "tiny",
                 "--offload", "--device", "cpu", "--quiet"]) == 2
    assert not (tmp_path / "bad.mp4").exists()


def test_models_load_on_a_background_thread_during_pose(tiny_models, clip, tmp_path, monkeypatch):
    import threading

    import v2v.models.load as M

    loads = []
    real = M.load_diffusion_models

    def recording(*a, **kw):
        loads.append(threading.current_thread().name)
        return real(*a, **kw)

    monkeypatch.setattr(M, "load_diffusion_models", recording)
    r = v2v.Restyler(models="tiny", show_progress=False, size=64)
    first = r.restyle(clip, tmp_path / "a.mp4", prompt="a robot")
    r.restyle(clip, tmp_path / "b.mp4", prompt="a robot", seed=1)  # models kept: no second load
    assert loads == ["v2v-load-models"]
    assert first.frames == 20 and "load" in first.seconds


def test_out_of_memory_is_one_line_naming_what_to_lower(tiny_models, clip, tmp_path, monkeypatch, capsys):
    import v2v.sampler as G
    from v2v.cli import main

    def oom(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(G, "generate", oom)
    with pytest.raises(v2v.OutOfMemory, match="--frame-budget"):
        v2v.Restyler(models="tiny", size=64, show_progress=False).restyle(clip, tmp_path / "x.mp4", prompt="a")
    rc = main(["restyle", str(clip), "-p", "a", "--models", "tiny", "--size", "64", "-o", str(tmp_path / "y.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 6 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("v2v: error:") and "--frame-budget" in err[-1] and "--size" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.gpu
def test_control_maps_pinned_for_cuda_give_the_same_frames(tiny_models):
    """On CUDA the maps are drawn straight into pinned memory and copied as they lie (channels-last strides):
    generation gives the frames it gives from unpinned maps."""
    from v2v.sampler import generate
    from v2v.models.load import load_diffusion_models
    from v2v.pose.keypoints import FramePose, Person

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rng = np.random.default_rng(5)
    poses = [FramePose([Person(np.concatenate([rng.uniform(4, 28, (18, 2)), np.ones((18, 1))], axis=1)
                               .astype(np.float32))], 32, 32) for _ in range(20)]
    pinned = ControlMaps(poses, 32, 32, ("body",), 0.3, pin=True)
    assert pinned([0, 1]).is_pinned()
    m = load_diffusion_models(str(tiny_models["base"]), str(tiny_models["motion"]), str(tiny_models["controlnet"]),
                              device="cuda", dtype=torch.float32)
    kw = dict(prompt="a person", num_frames=20, height=32, width=32, steps=2, seed=1, frame_budget=16)
    a = generate(m, control=pinned, **kw)
    b = generate(m, control=ControlMaps(poses, 32, 32, ("body",), 0.3), **kw)
    assert torch.allclose(a, b, atol=1e-4)
