"""scripts/bench.py end to end on the tiny models (a few seconds): the figures the performance issue asks for
are there, per length, with the baselines measured in the same run. Speed itself is never asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the I/O baseline needs the ffmpeg binary")
def test_bench_cpu_tiny(tmp_path, tiny_models):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--frames", "16,24", "--size", "64", "--levers", "16", "--lever-list",
                        "default,pose_torch,attention_classic,bfloat16,step_by_step", "--io-size", "48",
                        "--io-repeats", "2", "--flops", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["env"]["device"] == "cpu" and report["env"]["pose_runtime"] == "onnx"
    assert [row["frames"] for row in report["results"]] == [16, 24]
    for row in report["results"]:
        v = row["v2v"]
        assert v["frames"] == row["frames"] and v["fps"] > 0 and v["peak_mb"] > 0
        for stage in ("video_decode", "pose", "generate", "control_wait", "vae_decode", "encode", "video_encode",
                      "total"):
            assert v["seconds"][stage] > 0, stage
        assert v["seconds"]["video_decode"] <= v["seconds"]["pose"]          # inside the pose stage
        assert v["seconds"]["control_wait"] <= v["seconds"]["generate"]      # inside the generate stage
        assert v["spatial_passes"] >= 1.0
        assert row["diffusers"]["fps"] > 0                                      # the baseline, same run
        # (rounded to 3 decimals in the JSON: a ratio far below 1, on a loaded machine, is within 0.0005 only)
        assert row["speedup"] == pytest.approx(v["fps"] / row["diffusers"]["fps"], rel=1e-2, abs=5e-4)
        io = row["io"]
        assert (io["width"], io["height"], io["repeats"]) == (48, 48, 2)     # its own clip, at --io-size
        v_s, f_s, e = io["v2v_io_s"], io["ffmpeg_s"], 0.0005   # seconds rounded to 3 decimals in the JSON
        assert f_s > 0 and (v_s - e) / (f_s + e) <= io["ratio_v2v_over_ffmpeg"] <= (v_s + e) / (f_s - e)
    lev = report["levers"]
    assert lev["frames"] == 16 and all(lev[k]["fps"] > 0 for k in ("default", "pose_torch", "attention_classic",
                                                                    "bfloat16", "step_by_step")), lev
    # --flops: each run's work, counted for the settings it recorded (the tiny models at 64x64, 4 steps)
    sys.path.insert(0, str(ROOT / "scripts"))
    import flops

    tw = flops.twins_for(report)
    work = report["work"]
    for row, w in zip(report["results"], work["lengths"]):
        v = row["v2v"]
        assert v["settings"]["frame_budget"] >= 16 and (v["width"], v["height"]) == (64, 64)
        counted = flops.v2v_work(tw, v["settings"], row["frames"], 64, 64)["total"]
        assert w["frames"] == row["frames"] and w["v2v"]["flop"] == counted > 0
        assert w["v2v"]["tflops_per_s"] == pytest.approx(counted * v["fps"] / row["frames"] / 1e12, rel=0.01, abs=0.01)
        assert w["diffusers"]["tflop"] > 0 and w["work_ratio"] > 0 and not w["v2v"]["settings_assumed"]
        d = row["diffusers"]  # the baseline records how it ran, and is counted so
        assert (d["width"], d["height"], d["steps"], d["guidance"]) == (64, 64, 4, 1.0)
        assert d["free_noise"] == ([16, 12] if row["frames"] > 16 else None)
        assert w["diffusers"]["flop"] == flops.diffusers_work(tw, row["frames"], 64, 64, 4)["total"]
        assert w["v2v"]["passes_match"] is True  # the recorded settings plan the passes the run counted
        # measured speed-up = work ratio x relative efficiency
        assert row["speedup"] == pytest.approx(w["work_ratio"] * w["efficiency_ratio"], rel=0.01, abs=5e-4)
    assert set(work["levers"]) == {"default", "pose_torch", "attention_classic", "bfloat16", "step_by_step"}
    assert all(v["passes_match"] is True for v in work["levers"].values())
    assert "work (matmul and convolution TFLOP" in r.stdout
    # the table: a row per length, "-" where a figure was not measured (no --classic here)
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith(("16 |", "24 |")) and "pose " in line]
    assert len(rows) == 2 and all(" - " in line for line in rows)
    assert "pose_torch" in r.stdout


def test_bench_rejects_unknown_lever(tmp_path, tiny_models):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--frames", "8", "--size", "64", "--no-baseline", "--levers", "8", "--lever-list", "warp_drive",
                        "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "warp_drive" in r.stderr


@pytest.mark.parametrize("flag,value", [("--io-size", "33"), ("--io-size", "0"), ("--io-repeats", "0")])
def test_bench_rejects_bad_io_options_before_any_run(tmp_path, flag, value):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--frames", "8", "--size", "64", "--no-baseline", flag, value,
                        "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and flag in r.stderr and not (tmp_path / "b.json").exists()


def test_diffusers_baseline_leaves_the_shared_unet_as_it_was(tiny_models):
    """The baseline runs diffusers' pipeline on v2v's own loaded components; FreeNoise (on for more than 16
    frames) swaps the motion modules' blocks in place, and v2v's next runs must not inherit them."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    from v2v.models.load import load_diffusion_models
    from v2v.pose.keypoints import FramePose

    m = load_diffusion_models(str(tiny_models["base"]), str(tiny_models["motion"]), str(tiny_models["controlnet"]))

    def blocks():
        return sorted({type(b).__name__ for b in m.unet.modules() if "TransformerBlock" in type(b).__name__})

    before = blocks()
    r = bench.run_diffusers(m, [FramePose([], 32, 32)] * 20, 32, 32, "cpu", 1, 16, 4)
    assert r["frames"] == 20 and r["fps"] > 0
    assert blocks() == before and "FreeNoiseTransformerBlock" not in before


def test_run_v2v_records_the_processing_size_the_work_is_counted_at(tiny_models, tmp_path):
    """A run's width and height are the size the models worked at, not the output's (--full-size scales the
    result to the source's size): what scripts/flops.py counts the run's work at."""
    from media import make_video

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench
    import flops

    from v2v import Restyler

    from v2v.device import resolve_device, resolve_dtype

    src = make_video(tmp_path / "wide.mp4", seconds=0.4, fps=20, size=(160, 96), acodec=None)
    r = Restyler(models="tiny", device="cpu", size=64, pose_cache=False, show_progress=False)
    o = r.options_for("x")
    models = r.diffusion_models(o, resolve_device(o.device), resolve_dtype(o.dtype, o.device))  # the run's
    seen = set()  # the latents' sizes the UNet was called on
    hook = models.unet.conv_in.register_forward_hook(lambda mod, args, out: seen.add(tuple(args[0].shape[-2:])))
    try:
        run = bench.run_v2v(r, src, tmp_path / "o.mp4", "cpu", 4, full_size=True, frame_budget=16)
    finally:
        hook.remove()
    assert len(seen) == 1 and (run["height"], run["width"]) == tuple(8 * x for x in seen.pop())
    assert (run["width"], run["height"]) != (160, 96)  # the output's size (--full-size)
    assert run["frames"] == 8 and run["settings"]["frame_budget"] == 16
    assert flops.planned_passes(run["settings"], run["frames"]) == run["spatial_passes"]


def test_pose_recorder_keeps_the_frame_order(tiny_models, tmp_path):
    """The baseline gets the control frames v2v used, in frame order (pose threads finish out of order)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    from v2v import Restyler

    r = Restyler(models="tiny", device="cpu", size=64, max_frames=10, pose_cache=False, show_progress=False)
    with bench.PoseRecorder() as rec:
        res = r.pose(ROOT / "samples" / "dance.mp4", json_path=tmp_path / "p.json")
    assert res.frames == 10 and len(rec.poses) == 10
    saved = json.loads((tmp_path / "p.json").read_text())
    # same people per frame, in order, as the JSON the run wrote
    assert [len(f["people"]) for f in saved] == [len(p.people) for p in rec.poses]


def test_classic_attention_lever_is_undone(tiny_models):
    """The lever puts every attention on diffusers' plain processor for one run and puts the originals back."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    from v2v.models.load import load_diffusion_models

    m = load_diffusion_models(str(tiny_models["base"]), str(tiny_models["motion"]), str(tiny_models["controlnet"]))

    def kinds():
        return {name: type(p).__name__ for net in (m.unet, m.controlnet, m.vae)
                for name, p in net.attn_processors.items()}

    before = kinds()
    undo = bench.classic_attention(m)
    during = kinds()
    assert during.keys() == before.keys() and set(during.values()) == {"AttnProcessor"}
    assert set(before.values()) != {"AttnProcessor"}                 # the default is SDPA's
    undo()
    assert kinds() == before


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the I/O baseline needs the ffmpeg binary")
def test_bench_baseline_runs_at_v2vs_processing_size(tmp_path, tiny_models):
    """--size 68 is not a size the models take: v2v processes at a multiple of 8, and the baseline (and its
    warm-up, which is not guarded) must run at that size too, not fail on 68 (it did: a "-" in the table)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--frames", "16", "--size", "68", "--warmup", "8", "--io-repeats", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text())["results"][0]
    w, h = row["v2v"]["width"], row["v2v"]["height"]
    assert w % 8 == 0 and h % 8 == 0 and (w, h) != (68, 68)
    d = row["diffusers"]
    assert "error" not in d, d
    assert (d["width"], d["height"]) == (w, h) and d["fps"] > 0
    assert "failed" not in r.stdout


def test_bench_table_says_why_a_baseline_failed(tmp_path, tiny_models, monkeypatch, capsys):
    """A baseline that fails (out of memory at 480 frames on a GPU) is recorded and named under the table."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    monkeypatch.setattr(bench, "run_diffusers", boom)
    monkeypatch.setattr(bench, "run_io", lambda video, out, w, h, repeats=1: {"ratio_v2v_over_ffmpeg": None,
                                                                              "ratio_v2v_over_ffmpeg_rgb": None})
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["bench.py", "--device", "cpu", "--models", "tiny", "--frames", "16",
                                      "--size", "64", "--json", str(out)])
    bench.main()
    row = json.loads(out.read_text())["results"][0]
    assert row["diffusers"] == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"}
    assert "speedup" not in row
    assert "16 frames: diffusers' pipeline failed: RuntimeError: CUDA out of memory" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the I/O baseline needs the ffmpeg binary")
def test_bench_io_on_a_given_clip(tmp_path, tiny_models):
    """--io-input: the I/O comparison on a creator's own clip (here portrait, 30 fps), at v2v's processing size for
    --size; a missing file stops the bench before any run."""
    from media import make_video

    from v2v.media import timing

    clip = make_video(tmp_path / "portrait clip.mp4", seconds=1, fps=30, size=(72, 128))
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--frames", "16", "--size", "64", "--no-baseline", "--io-repeats", "1", "--io-input", str(clip),
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (io,) = json.loads(out.read_text())["io_inputs"]
    assert io["input"] == "portrait clip.mp4" and io["source"] == [72, 128] and io["frames"] == 30
    assert (io["width"], io["height"]) == timing.processing_size(72, 128, 64) and io["width"] < io["height"]
    v_s, f_s, e = io["v2v_io_s"], io["ffmpeg_s"], 0.0005
    assert f_s > 0 and (v_s - e) / (f_s + e) <= io["ratio_v2v_over_ffmpeg"] <= (v_s + e) / (f_s - e)
    assert f"I/O path on portrait clip.mp4 (72x128, 30 frames -> {io['width']}x{io['height']})" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--io-input", str(tmp_path / "nope.mp4"), "--json", str(tmp_path / "b2.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--io-input" in r.stderr and "no such file" in r.stderr
    assert not (tmp_path / "b2.json").exists()
