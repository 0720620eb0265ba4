#!/usr/bin/env python3
"""v2v benchmark: end-to-end frames/s and seconds per stage, peak memory, GPU busy fraction, at several lengths,
against diffusers' own AnimateDiffControlNetPipeline on the same components and frames (same run), and v2v's
video I/O path against the ffmpeg command line doing the same decode/resize/encode.

    python scripts/bench.py --device cpu --models tiny --frames 48,160 --size 128       # here, minutes
    python scripts/bench.py --device cuda --models sd15-random --frames 48,160,480      # on a GPU
    python scripts/bench.py --frames 48 --no-baseline --io-input clip1080p.mp4          # I/O on a creator's clip

`sd15-random` builds the real SD 1.5-sized UNet, motion adapter, ControlNet, VAE and CLIP text encoder with
random weights (the same compute as the real ones, no downloads). The pose detector is always the tiny DWPose
(the real weights cannot be downloaded here), so pose figures are not those of the real DWPose.
Also measured: spatial frame-passes per output frame per step (frames through the UNet's first conv, so the
figure is counted, not planned; target <= 1.15), and with --classic, v2v's generate stage with whole-UNet windows
(frame budget = one window) in the same run, as a ratio. On the CPU the peak is resident memory above the level
before the run (sampled every 20 ms); on CUDA, torch's peak allocated memory.
With --profile N, one more default run of N frames under torch.profiler (scripts/profile_run.py: device time per
model and kernel family, the idle gaps on the device's timeline), after the lengths and before the levers, on the
same warm models; its summary goes to --profile-json.
Prints a table and writes the figures as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

for _var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
    os.environ.setdefault(_var, "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402


# ------------------------------------------------------------------------- models


def build_sd15_random(folder: Path, device: str, dtype=torch.float16) -> dict[str, Path]:
    """SD 1.5-sized models with random weights, saved in the real formats (fp16 to keep it quick)."""
    from safetensors.torch import save_file

    from flops import sd15_modules
    from v2v.tiny import tiny_model_paths

    tiny = tiny_model_paths()
    base = folder / "base"
    shutil.copytree(tiny["base"], base, dirs_exist_ok=True)  # tokenizer, scheduler, model_index.json
    torch.manual_seed(0)
    built = sd15_modules(device, dtype)
    unet, vae, te, adapter, cn, taesd = (built.pop(k) for k in ("unet", "vae", "text_encoder", "adapter",
                                                                "controlnet", "taesd"))
    for sub, model in (("unet", unet), ("vae", vae), ("text_encoder", te)):
        shutil.rmtree(base / sub, ignore_errors=True)
        model.save_pretrained(base / sub)
    (folder / "motion").mkdir(exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in adapter.state_dict().items()},
              folder / "motion" / "animatediff_lightning_4step_diffusers.safetensors")
    cn.save_pretrained(folder / "controlnet")
    # TAESD (--fast-decode) at its real size, under its real repo id in a private hub cache (set up in main)
    from v2v.models.defaults import DEFAULT_TAESD
    from v2v.tiny.diffusion import lay_out_hub_repo

    taesd.save_pretrained(folder / "taesd")
    lay_out_hub_repo(os.environ["HF_HUB_CACHE"], DEFAULT_TAESD, {"": folder / "taesd"})
    del unet, vae, te, adapter, cn, taesd
    torch.cuda.empty_cache() if device.startswith("cuda") else None
    return {"base": base, "motion": folder / "motion", "controlnet": folder / "controlnet",
            "dwpose": tiny["dwpose"]}


# ------------------------------------------------------------------------- measuring


class GpuBusy:
    """Samples the run's GPU's utilisation every 20 ms in a thread (NVML through torch). ``fraction``: the share
    of samples in which the GPU was busy at all (the figure of runs 1-2); ``mean``: NVML's utilisation averaged,
    0-1 (NVML's own figure is the share of its last sampling period, 1/6 s to 1 s, in which a kernel ran)."""

    def __init__(self, device: str):
        self.on = device.startswith("cuda")
        self.device = torch.device(device) if self.on else None
        self.samples: list[int] = []
        self._stop = threading.Event()

    def __enter__(self):
        self._read = None
        if self.on:
            try:  # one NVML handle for the run (torch.cuda.utilization re-initialises NVML on every call)
                import pynvml

                handle = torch.cuda._get_pynvml_handler(self.device)
                self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                self._read()
            except Exception:
                self._read = None
        if self.on and self._read is None:
            try:
                torch.cuda.utilization(self.device)
                self._read = lambda: torch.cuda.utilization(self.device)
            except Exception:
                self.on = False
        if self.on:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self._read())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        if self.on:
            self._t.join()

    @property
    def fraction(self) -> float | None:
        return (sum(s > 0 for s in self.samples) / len(self.samples)) if self.samples else None

    @property
    def mean(self) -> float | None:
        return (sum(self.samples) / len(self.samples) / 100.0) if self.samples else None


class RssPeak:
    """On the CPU: the process's resident memory sampled every 20 ms; peak above the level at the start (MB)."""

    def __init__(self):
        try:  # hand freed heap back to the OS first, so the level at the start is what is really in use
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return (max(self.peak, self._rss()) - self.start) / 2**20


class FrameCounter:
    """Frames through a module's first conv: the spatial frame-passes actually run (measured, not planned)."""

    def __init__(self, module):
        self.frames = 0
        self.handle = module.conv_in.register_forward_hook(self._hook)

    def _hook(self, mod, args, out):
        self.frames += out.shape[0]

    def remove(self):
        self.handle.remove()


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (RSS)


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
        torch.cuda.reset_peak_memory_stats(torch.device(device))


# ------------------------------------------------------------------------- runs


class PoseRecorder:
    """Keeps the final poses of the last v2v run (in frame order, as the sampler got them), for diffusers'
    baseline: the same control frames, and no second detection (it would cost device time and measure nothing).
    Records from ``start()`` (or entering it as a context manager) until ``stop()``."""

    def __init__(self):
        self.poses: list = []
        self._inner = None

    def start(self) -> PoseRecorder:
        from v2v.stages.pose import PoseStage

        inner = self._inner = PoseStage.run

        def run(stage, *args, **kwargs):
            out = inner(stage, *args, **kwargs)
            self.poses = list(out.poses)
            return out

        PoseStage.run = run
        return self

    def stop(self) -> None:
        from v2v.stages.pose import PoseStage

        if self._inner is not None:
            PoseStage.run, self._inner = self._inner, None

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()


def processing_size(video: Path, o) -> tuple[int, int]:
    """The size v2v processes ``video`` at with the options ``o``."""
    from v2v.media.probe import probe
    from v2v.media.timing import processing_size as size

    info = probe(video)
    return size(info.display_width, info.display_height, o.short_side, o.width, o.height)


def set_memory_format(models, fmt) -> None:
    """channels-last (or back) for the conv-heavy models: the UNet, ControlNet and the decoder in use."""
    for m in (models.unet, models.controlnet, models.decoder if models.decoder is not None else models.vae):
        m.to(memory_format=fmt)


def run_v2v(restyler, video: Path, out: Path, device: str, steps: int, **options) -> dict:
    """One restyle; also the spatial frame-passes per output frame per step, counted at the UNet's first conv
    (CFG 1: one pass per frame), and on the CPU the peak resident memory above the level at the start."""
    from v2v.device import resolve_device, resolve_dtype

    o = restyler.options_for("x", **options)
    models = restyler.diffusion_models(o, resolve_device(o.device), resolve_dtype(o.dtype, o.device))
    width, height = processing_size(video, o)  # (the result's is the output's: --full-size)
    counter = FrameCounter(models.unet)
    reset_peak(device)
    rss = RssPeak() if not device.startswith("cuda") else None
    try:
        with GpuBusy(device) as busy:
            t = time.perf_counter()
            r = restyler.restyle(video, out, prompt="claymation astronaut", **options)
            wall = time.perf_counter() - t
    finally:
        counter.remove()
        rss_mb = rss.stop() if rss is not None else None
    work = wall - r.seconds.get("load", 0.0)
    from flops import WORK_SETTINGS

    return {"frames": r.frames, "seconds": {k: round(v, 3) for k, v in r.seconds.items()},
            "settings": {k: r.settings["options"].get(k) for k in WORK_SETTINGS}, "width": width,
            "height": height, "fps": r.frames / work,
            "peak_mb": rss_mb if rss_mb is not None else peak_memory_mb(device),
            "gpu_busy": busy.fraction, "gpu_util_mean": busy.mean,
            "spatial_passes": round(counter.frames / (r.frames * steps), 4)}


def run_diffusers(models, poses, width, height, device: str, steps: int, context: int, overlap: int,
                  guidance: float = 1.0) -> dict:
    """diffusers' AnimateDiffControlNetPipeline on the same components and control frames (FreeNoise > 16)."""
    from diffusers import AnimateDiffControlNetPipeline
    from PIL import Image

    from v2v.pose.render import render_pose

    pipe = AnimateDiffControlNetPipeline(vae=models.vae, text_encoder=models.text_encoder,
                                         tokenizer=models.tokenizer, unet=models.unet, motion_adapter=None,
                                         controlnet=models.controlnet, scheduler=models.scheduler)
    pipe.set_progress_bar_config(disable=True)
    n = len(poses)
    if n > context:
        # FreeNoise reads the motion module's length limit from the adapter's config; ours is inside the UNet
        from types import SimpleNamespace

        object.__setattr__(pipe, "motion_adapter", SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=32)))
        pipe.enable_free_noise(context_length=context, context_stride=context - overlap)
    try:
        frames = [Image.fromarray(render_pose(p, width, height)) for p in poses]
        reset_peak(device)
        rss = RssPeak() if not device.startswith("cuda") else None
        with GpuBusy(device) as busy:
            t = time.perf_counter()
            pipe(prompt="claymation astronaut", num_frames=n, height=height, width=width, conditioning_frames=frames,
                 num_inference_steps=steps, guidance_scale=guidance, output_type="np", decode_chunk_size=16,
                 generator=torch.Generator("cpu").manual_seed(0))
            if device.startswith("cuda"):
                torch.cuda.synchronize(torch.device(device))
            wall = time.perf_counter() - t
    finally:  # FreeNoise swaps the shared UNet's motion blocks in place: v2v's next runs must get them back
        if n > context:
            pipe.disable_free_noise()
    peak = rss.stop() if rss is not None else peak_memory_mb(device)
    return {"frames": n, "width": width, "height": height, "steps": steps, "guidance": guidance,
            "free_noise": [context, context - overlap] if n > context else None,  # context length, stride
            "seconds": round(wall, 3), "fps": n / wall, "peak_mb": peak, "gpu_busy": busy.fraction,
            "gpu_util_mean": busy.mean}


def run_io(video: Path, out: Path, width: int, height: int, repeats: int = 1) -> dict:
    """v2v's I/O path as the pipeline runs it (decoding prefetched on a thread into RGB frames at the processing
    size, then the H.264 writer converting and encoding on its own thread) against the ffmpeg command line: plainly
    (scaling in YUV, no RGB frames at all, x264's defaults), and doing the same work as v2v (frames through RGB at
    the processing size, back to BT.709 YUV, x264 with v2v's options). Each is timed ``repeats`` times, in turn,
    and its best time kept (jobs of a fraction of a second on shared cores: the best is the least noisy)."""
    from v2v.media import decode, probe
    from v2v.media.writers import video as video_writer
    from v2v.streams import prefetch

    def v2v_io() -> float:
        t = time.perf_counter()
        info = probe.probe(video)
        dec = decode.Decoder(info, width, height)
        with video_writer.VideoWriter(out, width, height, fps=info.fps, time_base=info.time_base, audio=None,
                                threaded=True) as w:
            first = None
            for f in prefetch(dec, depth=16):
                first = f.time if first is None else first
                w.write(f.image, f.time - first)
        return time.perf_counter() - t

    def ffmpeg_io(key: str, vf: str, opts: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-vf", vf, "-c:v", "libx264", "-crf",
                        "18", *opts, "-pix_fmt", "yuv420p", "-an", str(out.with_suffix(f".{key}.mp4"))], check=True)
        return time.perf_counter() - t

    # "the same work" also means x264 with v2v's options (on an AVX-512 CPU, at widths that are not whole groups
    # of 8 macroblocks, v2v holds it to AVX2 so that equal frames encode equally: media.writers.video.x264_params)
    same = [x for k, v in video_writer.x264_params(width).items() for x in (f"-{k}", v)]
    jobs = {"v2v_io": v2v_io}
    if shutil.which("ffmpeg"):
        jobs["ffmpeg"] = lambda: ffmpeg_io("ffmpeg", f"scale={width}:{height}", [])
        jobs["ffmpeg_rgb"] = lambda: ffmpeg_io("ffmpeg_rgb", f"scale={width}:{height},format=rgb24,"
                                               "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", same)
    best = {k: float("inf") for k in jobs}
    for _ in range(max(1, repeats)):
        for k, job in jobs.items():
            best[k] = min(best[k], job())
    v2v_s = best["v2v_io"]
    res = {"v2v_io_s": round(v2v_s, 3), "width": width, "height": height, "repeats": max(1, repeats)}
    if "ffmpeg" in best:
        res["ffmpeg_s"], res["ffmpeg_rgb_s"] = round(best["ffmpeg"], 3), round(best["ffmpeg_rgb"], 3)
        res["ratio_v2v_over_ffmpeg"] = round(v2v_s / res["ffmpeg_s"], 3)
        res["ratio_v2v_over_ffmpeg_rgb"] = round(v2v_s / res["ffmpeg_rgb_s"], 3)
    return res


LEVERS = ("default", "pose_then_generate", "step_by_step", "pose_onnx", "pose_torch", "fast_decode",
          "fast_decode_compile", "channels_last",
          "frame_budget_32", "frame_budget_128", "pose_workers_1", "unbatched_windows", "cudnn_benchmark",
          "attention_classic", "bfloat16", "compile")


def classic_attention(models):
    """Every attention of the UNet (motion modules included), ControlNet and VAE on diffusers' plain
    ``AttnProcessor`` (matmuls and a softmax) instead of the default SDPA one; returns the undo."""
    from diffusers.models.attention_processor import AttnProcessor

    nets = [n for n in (models.unet, models.controlnet, models.vae) if hasattr(n, "set_attn_processor")]
    saved = [(n, dict(n.attn_processors)) for n in nets]
    for n in nets:
        n.set_attn_processor(AttnProcessor())

    def undo():
        for n, procs in saved:
            n.set_attn_processor(procs)
    return undo


def run_levers(restyler, video: Path, work: Path, device: str, steps: int, which: list[str], deadline: float,
               on_result=None) -> dict:
    """v2v at one length with one speed lever changed at a time (same run, same frames): --fast-decode (TAESD),
    channels-last memory format, another frame budget, generation only after the pose stage (as before they
    overlapped), the denoising steps one after the other over the whole video with the VAE decode and encoding
    after the last (as before the passes swept along the video, handing finished frames on), --fast-decode and
    --compile together, DWPose on onnxruntime or on torch (TorchScript), pose detection on one thread (as before
    it ran on several), one motion-module call per window (as before windows were batched), cuDNN's autotuner, plain
    attention instead of SDPA (what SDPA/flash attention buys), bfloat16 instead of float16, --compile.
    A lever that fails is recorded, not fatal; none starts after ``deadline`` (time.perf_counter()).
    ``on_result(results so far)`` after each lever (the JSON is saved then: a run cut off keeps what it measured)."""
    import v2v.sampler as G
    import v2v.stages.generate as P
    from v2v.device import resolve_device, resolve_dtype
    from v2v.motion_windows import MotionPlan

    out: dict = {}
    for name in which:
        if time.perf_counter() > deadline:
            out[name] = {"skipped": "past the deadline"}
            if on_result is not None:  # (the report and its table list every lever asked for)
                on_result(out)
            continue
        opts: dict = {}
        if name == "fast_decode":
            opts["fast_decode"] = True
        elif name.startswith("frame_budget_"):
            opts["frame_budget"] = int(name.rsplit("_", 1)[1])
        elif name == "compile":
            opts["compile"] = True
        elif name == "fast_decode_compile":  # the two measured levers together: the fastest set of options
            opts.update(fast_decode=True, compile=True)
        elif name in ("pose_onnx", "pose_torch"):  # DWPose on onnxruntime / on torch (TorchScript), not "auto"
            opts["pose_runtime"] = name.split("_")[1]
        elif name == "bfloat16":  # a model set in bfloat16 (float16 is the GPU default; on the CPU: float32)
            opts["dtype"] = "bfloat16"
        models, undo = None, None
        saved = (os.environ.get("V2V_POSE_WORKERS"), MotionPlan.batch_windows, torch.backends.cudnn.benchmark,
                 P.streamable_frames, G._ELEMENTWISE_STEPS)
        try:
            if name == "pose_then_generate":
                P.streamable_frames = lambda plan: 0
            elif name == "step_by_step":  # the whole video one step after another, the encode after the last
                G._ELEMENTWISE_STEPS = ()
            if name == "pose_workers_1":
                os.environ["V2V_POSE_WORKERS"] = "1"
            elif name == "unbatched_windows":
                MotionPlan.batch_windows = False
            elif name == "cudnn_benchmark":  # its first use: the autotuning is in the figure
                torch.backends.cudnn.benchmark = True
            if name in ("channels_last", "attention_classic"):
                o = restyler.options_for("x")
                models = restyler.diffusion_models(o, resolve_device(o.device), resolve_dtype(o.dtype, o.device))
                if name == "channels_last":
                    set_memory_format(models, torch.channels_last)
                else:
                    undo = classic_attention(models)
            if "compile" in name:  # the first run compiles: timed apart from a second, warm one
                t = time.perf_counter()
                run_v2v(restyler, video, work / f"lever-{name}-warm.mp4", device, steps, **opts)
                out[f"{name}_first_run_s"] = round(time.perf_counter() - t, 1)
            out[name] = run_v2v(restyler, video, work / f"lever-{name}.mp4", device, steps, **opts)
        except Exception as e:
            out[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        finally:
            if undo is not None:
                undo()
            elif models is not None:
                set_memory_format(models, torch.contiguous_format)
            if saved[0] is None:
                os.environ.pop("V2V_POSE_WORKERS", None)
            else:
                os.environ["V2V_POSE_WORKERS"] = saved[0]
            MotionPlan.batch_windows, torch.backends.cudnn.benchmark, P.streamable_frames, \
                G._ELEMENTWISE_STEPS = saved[1:]
        print(json.dumps({"lever": name, **out[name]}), flush=True)
        if on_result is not None:
            on_result(out)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def run_profile(restyler, video: Path, work: Path, device: str, dest: Path, env: dict) -> tuple[dict, dict | None]:
    """scripts/profile_run.py's profile of one default run on the bench's loaded, warm models; its summary is
    written to ``dest``. Returns (the bench report's entry, the summary); a failure is recorded, not fatal."""
    import profile_run

    try:
        s = profile_run.profile_restyle(restyler, video, work / "profile.mp4", device)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}, None
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    s["env"] = env
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(s, indent=1))
    entry = {"json": dest.name, "frames": s["frames"], "wall_s": s["wall_s"], "busy_ms": s["busy_ms"],
             "span_ms": s["span_ms"], "models_ms": {k: v["ms"] for k, v in s["models"].items()}}
    return entry, s


def _cell(value, width: int, fmt: str) -> str:
    """A table cell: the number, or "-" where the figure was not measured."""
    return f"{value:>{width}{fmt}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def _stages(seconds: dict) -> str:
    """Stage seconds for the table: the overlapping stages, the work inside them in brackets."""
    inner = {"pose": ["video_decode"], "generate": ["control_wait"], "encode": ["vae_decode", "video_encode"]}
    parts = []
    for stage in ("pose", "generate", "encode"):
        if stage in seconds:
            within = ", ".join(f"{k.replace('_', ' ')} {seconds[k]:.2f}" for k in inner.get(stage, [])
                               if k in seconds)
            parts.append(f"{stage} {seconds[stage]:.2f}" + (f" ({within})" if within else ""))
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", choices=("tiny", "sd15-random"), default="tiny")
    ap.add_argument("--frames", default="48,160,480")
    ap.add_argument("--size", type=int, default=None, help="short side (default 512, 128 for tiny)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--no-baseline", action="store_true", help="skip diffusers' pipeline")
    ap.add_argument("--baseline-max-frames", type=int, default=480)
    ap.add_argument("--json", type=Path, default=Path("bench.json"))
    ap.add_argument("--frame-budget", type=int, default=None, help="v2v's frame budget (default: automatic)")
    ap.add_argument("--classic", action="store_true",
                    help="also time v2v with whole-UNet windows (frame budget = one window) in the same run")
    ap.add_argument("--classic-max-frames", type=int, default=480, help="--classic only up to this length")
    ap.add_argument("--compile", action="store_true", help="v2v with --compile")
    ap.add_argument("--warmup", type=int, default=None,
                    help="frames of an untimed first run of v2v and of diffusers (default: 32 on CUDA, 0 on the CPU)")
    ap.add_argument("--levers", type=int, default=0,
                    help="also time v2v at this length with one speed lever changed at a time (0: none)")
    ap.add_argument("--lever-list", default=",".join(LEVERS), help=f"which levers (of {','.join(LEVERS)})")
    ap.add_argument("--io-size", type=int, default=None,
                    help="side of the square clip for the I/O comparison with ffmpeg (default: --size)")
    ap.add_argument("--io-input", type=Path, action="append", default=[], metavar="FILE",
                    help="also compare the I/O path with ffmpeg's on this video (a creator's clip: 1080p, portrait, "
                         "VFR...), resized to v2v's processing size for --size; repeatable")
    ap.add_argument("--io-repeats", type=int, default=3, help="I/O jobs timed this many times each, best kept")
    ap.add_argument("--flops", action="store_true",
                    help="also count every run's work (scripts/flops.py) and print the TFLOP/s achieved (seconds on "
                         "the tiny models, half a minute for sd15-random: on a lent GPU, count later with "
                         "scripts/flops.py --bench JSON instead)")
    ap.add_argument("--deadline", type=float, default=float("inf"),
                    help="seconds after which no further lever run starts (the figures so far are kept)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also profile one default run of N frames (scripts/profile_run.py), after the lengths and "
                         "before the levers (no deadline: it always runs); 0: none")
    ap.add_argument("--profile-json", type=Path, default=None,
                    help="where the profile's summary goes (default: beside --json, NAME-profile.json)")
    a = ap.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="v2v-bench-"))
    if a.models != "tiny":  # a private, offline hub cache: --fast-decode's TAESD is laid out in it (real size)
        os.environ["HF_HUB_CACHE"] = str(work / "hub")
        os.environ["HF_HUB_OFFLINE"] = "1"

    logging.getLogger("v2v").setLevel(logging.WARNING)
    import v2v
    from make_sample import make

    which = [x for x in a.lever_list.split(",") if x]
    bad = [x for x in which if x not in LEVERS]
    if bad:  # before any run: a typo must not cost a GPU session's minutes
        raise SystemExit(f"unknown levers {bad}: choose from {', '.join(LEVERS)}")
    if a.io_size is not None and (a.io_size < 2 or a.io_size % 2):
        raise SystemExit(f"--io-size must be a positive even number of pixels, not {a.io_size}")
    for f in a.io_input:  # before any run: a typo must not cost the run
        if not f.is_file():
            raise SystemExit(f"--io-input {f}: no such file")
    if a.io_repeats < 1:
        raise SystemExit(f"--io-repeats must be at least 1, not {a.io_repeats}")
    if a.profile < 0:
        raise SystemExit(f"--profile must be a number of frames (0: none), not {a.profile}")
    size = a.size or (128 if a.models == "tiny" else 512)
    cuda = a.device.startswith("cuda")
    t = time.perf_counter()
    if a.models == "tiny":
        from v2v.tiny import tiny_model_paths

        paths = tiny_model_paths()
    else:
        paths = build_sd15_random(work / "models", a.device)
    build_s = time.perf_counter() - t
    dtype = "float16" if cuda else "float32"
    restyler = v2v.Restyler(base=str(paths["base"]), motion=str(paths["motion"]), controlnet=str(paths["controlnet"]),
                            pose_model=str(paths["dwpose"]), device=a.device, dtype=dtype, size=size, steps=a.steps,
                            frame_budget=a.frame_budget, compile=a.compile, pose_cache=False, show_progress=False,
                            models="tiny" if a.models == "tiny" else "default")
    env = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "device": a.device,
           "gpu": torch.cuda.get_device_name(torch.device(a.device)) if cuda else None,
           "models": a.models, "size": size, "steps": a.steps, "dtype": dtype, "build_models_s": round(build_s, 1)}
    from v2v.streams import default_workers

    env["pose_workers"] = default_workers()
    for mod in ("diffusers", "transformers", "onnxruntime", "av"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    report: dict = {"env": env, "results": []}

    def save():
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=2))

    def sample(n: int, side: int = size) -> Path:
        video = work / f"in{n}_{side}.mp4"
        if not video.exists():
            make(work / f"s{n}_{side}", seconds=n / 24, fps=24, width=side, height=side)
            shutil.move(work / f"s{n}_{side}" / "dance.mp4", video)
        return video

    from v2v.device import concrete_pose_runtime
    from v2v.models.modelset import ModelSet

    o = restyler.options_for("x")
    o = concrete_pose_runtime(o, a.device, ModelSet.for_options(o).pose_model)  # what restyle() will load
    restyler.pose_detector(o, a.device)  # loaded before the timed runs, as the models are by the warm-up
    recorder = PoseRecorder().start()  # for the rest of the bench
    env["pose_runtime"] = o.pose_runtime
    warm = a.warmup if a.warmup is not None else (32 if cuda else 0)
    if warm:  # untimed: CUDA context, cuDNN autotuning, the allocator's first growth, lazy imports
        t = time.perf_counter()
        restyler.restyle(sample(warm), work / "warm.mp4", prompt="warm-up")
        if not a.no_baseline:
            models = restyler.loaded_models[0]
            w, h = processing_size(sample(warm), restyler.options_for("x"))  # v2v's processing size
            run_diffusers(models, recorder.poses[:16], w, h, a.device, a.steps, 16, 4)
        env["warmup_s"] = round(time.perf_counter() - t, 1)

    results = report["results"]
    for n in [int(x) for x in a.frames.split(",")]:
        video = sample(n)
        recorder.poses = []
        row = {"frames": n, "v2v": run_v2v(restyler, video, work / f"out{n}.mp4", a.device, a.steps)}
        poses = recorder.poses[:n]
        if a.classic and n <= a.classic_max_frames:
            row["v2v_classic"] = run_v2v(restyler, video, work / f"cl{n}.mp4", a.device, a.steps, frame_budget=16)
            # the generate stage alone (both runs detect poses the same way)
            row["spatial_once_speedup"] = round(row["v2v_classic"]["seconds"]["generate"]
                                                / row["v2v"]["seconds"]["generate"], 3)
        models = next(iter(restyler._diffusion.values()))
        if not a.no_baseline and n <= a.baseline_max_frames:
            try:
                # at v2v's processing size (--size rounded to what the models take), on the same control frames
                row["diffusers"] = run_diffusers(models, poses, row["v2v"]["width"], row["v2v"]["height"],
                                                 a.device, a.steps, 16, 4)
                row["speedup"] = round(row["v2v"]["fps"] / row["diffusers"]["fps"], 3)
            except Exception as e:  # e.g. out of memory at long lengths: record it, keep going
                row["diffusers"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            if cuda:
                torch.cuda.empty_cache()
        io_size = a.io_size or size
        io_video = video if io_size == size else sample(n, io_size)
        row["io"] = run_io(io_video, work / f"io{n}.mp4", io_size, io_size, a.io_repeats)
        results.append(row)
        save()
        print(json.dumps(row), flush=True)

    if a.io_input:
        from v2v.media import probe, timing

        report["io_inputs"] = []
        for k, f in enumerate(a.io_input):
            info = probe.probe(f)
            w, h = timing.processing_size(info.display_width, info.display_height, size)
            res = {"input": f.name, "source": [info.display_width, info.display_height], "fps": float(info.fps),
                   "frames": info.frames, **run_io(f, work / f"io_in{k}.mp4", w, h, a.io_repeats)}
            report["io_inputs"].append(res)
            save()
            print(json.dumps(res), flush=True)

    profiled = None
    if a.profile:  # before the levers, which --deadline may cut short: every GPU run must bring its profile back
        dest = a.profile_json or a.json.with_name(a.json.stem + "-profile.json")
        report["profile"], profiled = run_profile(restyler, sample(a.profile), work, a.device, dest, env)
        save()
        print(json.dumps({"profile": report["profile"]}), flush=True)

    if a.levers:
        models = None  # the levers that load other model sets (--fast-decode, --compile) must not count this one's
        report["levers"] = {"frames": a.levers}

        def lever_done(results: dict) -> None:
            report["levers"].update(results)
            save()

        run_levers(restyler, sample(a.levers), work, a.device, a.steps, which, t_start + a.deadline, lever_done)

    if a.flops:  # counted on the meta device: shapes only, no device time
        import flops

        report["work"] = flops.annotate(report, flops.twins_for(report))
        save()

    print(f"\n{env}\n")
    print(f"{'frames':>6} | {'v2v f/s':>8} | {'peak MB':>8} | {'busy':>5} | {'util':>5} | {'passes':>6} | "
          f"{'gen x classic':>13} | "
          f"{'diffusers f/s':>13} | {'peak MB':>8} | {'speed-up':>8} | {'io/ffmpeg':>9} | {'io/ff-rgb':>9} | "
          "stages (s)")
    for r in results:
        v, d = r["v2v"], r.get("diffusers", {})
        busy = f"{v['gpu_busy']:.2f}" if v.get("gpu_busy") is not None else "-"
        print(f"{r['frames']:>6} | {v['fps']:>8.2f} | {v['peak_mb']:>8.0f} | {busy:>5} | "
              f"{_cell(v.get('gpu_util_mean'), 5, '.2f')} | {v['spatial_passes']:>6.3f} | "
              f"{_cell(r.get('spatial_once_speedup'), 13, '.2f')} | {_cell(d.get('fps'), 13, '.2f')} | "
              f"{_cell(d.get('peak_mb'), 8, '.0f')} | {_cell(r.get('speedup'), 8, '.2f')} | "
              f"{_cell(r['io'].get('ratio_v2v_over_ffmpeg'), 9, '.2f')} | "
              f"{_cell(r['io'].get('ratio_v2v_over_ffmpeg_rgb'), 9, '.2f')} | {_stages(v['seconds'])}")
    for r in results:  # a baseline that failed (out of memory at a long length...) says why, not just "-"
        if "error" in r.get("diffusers", {}):
            print(f"{r['frames']:>6} frames: diffusers' pipeline failed: {r['diffusers']['error']}")
    for r in report.get("io_inputs", []):
        frames = r["frames"] if r["frames"] is not None else "?"  # (a container that does not count them: mkv)
        print(f"I/O path on {r['input']} ({r['source'][0]}x{r['source'][1]}, {frames} frames -> "
              f"{r['width']}x{r['height']}): v2v {r['v2v_io_s']:.3f} s, "
              f"{_cell(r.get('ratio_v2v_over_ffmpeg'), 4, '.2f').strip()}x ffmpeg, "
              f"{_cell(r.get('ratio_v2v_over_ffmpeg_rgb'), 4, '.2f').strip()}x ffmpeg through RGB")
    if a.levers:
        base = report["levers"].get("default", {}).get("fps")
        print(f"\nlevers at {a.levers} frames (one changed at a time):")
        for name in which:
            r = report["levers"].get(name, {"skipped": "not run"})
            if "fps" in r:
                ratio = f"{r['fps'] / base:.2f}x default" if base else ""
                print(f"  {name:>18}: {r['fps']:7.2f} f/s  {ratio:>14}  peak {r['peak_mb']:.0f} MB  "
                      f"{_stages(r['seconds'])}")
            else:
                print(f"  {name:>18}: {r}")
    if profiled is not None:
        import profile_run

        print("\n" + profile_run.table(profiled))
    elif "profile" in report:
        print(f"\nprofile failed: {report['profile']['error']}")
    if a.flops:
        print("\nwork (matmul and convolution TFLOP, scripts/flops.py) and the rates achieved:")
        flops.print_work(report["work"])
    save()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
