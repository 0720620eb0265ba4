"""Restyler: the whole path from an input video to a restyled one, in numbered steps.

    1. options      validate every option (before any weights load)
    2. probe        VideoInfo; bad input fails here
    3. paths        the output path (never the input), its folder writable, a temp file beside it
    4. pose         on its own thread: decode frames (streamed) -> keypoints per frame (detected on several
                    threads, cached or from --pose-json; the pose models load only when detection runs); parts
                    kept, smoothed frame by frame; frames dropped once posed
    5. models       load (or reuse) the diffusion models, on a background thread while step 4 runs
    6. generate     AnimateDiff-Lightning + ControlNet over fused windows; control maps rendered on demand. On a
                    GPU it starts while step 4 runs (the first denoising step of a segment waits for its frames'
                    poses) when the container gives the frame count; generated again if the count proves wrong.
                    The passes sweep along the video (a segment's next step once its neighbours have run this
                    one), so frames that have had every step go on to step 7 while later ones denoise
    7. encode       (from within step 6, once the pose stage has ended) VAE decode in chunks on the sampler's
                    thread -> the output format (H.264 MP4 by default; v2v.outputs; encoded on its own thread)
                    with each frame's source timestamp, audio of the kept span; optionally scaled to the source
                    size, played ping-pong, and a compare video (source decoded again | pose map | result)
    8. rename       temp file -> output path; the run's settings (v2v/settings.py) embedded and beside it
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .media import decode, formats, timing, writers
from .media.outputs import atomic_output, check_output_path, default_output, writable
from .media.probe import probe
from .media.writers.video import VideoWriter
from .media.writers.wrappers import CompareWriter
from . import settings as run_settings
from .errors import Interrupted, InvalidOptions, OutOfMemory, OutputError
from .options import (DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_DWPOSE, DEFAULT_MOTION, DEFAULT_OPENPOSE,
                      RestyleOptions, option_names)
from .progress import ProgressCallback, expected_frames
from .streams import Background, default_workers, parallel_map, prefetch

log = logging.getLogger("v2v")

# progress(stage, done, total): called as work advances; stages and units in v2v.progress (pose: frames,
# generate: denoising passes, encode: frames).
ProgressFn = ProgressCallback

POSE_BATCH = 8  # frames per pose-model call


@dataclass
class RestyleResult:
    output: Path  # the restyled video
    frames: int  # frames written
    fps: float  # average frame rate of the output
    # wall time per stage: probe; pose (until the last frame is posed); load (waiting for the models, which load
    # while the pose stage runs); generate (from the models' arrival, overlapping the pose stage's end); encode;
    # total (the truth: the stages overlap). Time spent inside a stage, running beside the rest of it:
    # video_decode (decoding and converting source frames, in pose), control_wait (the sampler waiting for pose
    # maps, i.e. for the pose stage or the drawing, in generate: the device idles then), vae_decode (the GPU's
    # time, in encode) and, for the H.264/H.265/VP9/AV1/ProRes writers, video_encode (colour conversion,
    # encoder, muxing, in encode)
    seconds: dict[str, float] = field(default_factory=dict)
    frames_without_people: int = 0  # frames whose pose map is empty (nobody found, or no point above the threshold)
    width: int = 0
    height: int = 0
    pose_output: Path | None = None  # the pose-map video, when asked for
    settings: dict = field(default_factory=dict)  # every option used
    compare_output: Path | None = None  # the side-by-side video (source | pose | result), when asked for


@dataclass(frozen=True)
class _Timing:
    times: list[Fraction]  # each output frame's time, relative to the first
    fps: Fraction  # the output's average frame rate
    time_base: Fraction  # the output stream's time base
    audio: timing.AudioCut | None  # the source audio of the kept span
    end: Fraction  # where the output ends (the last frame's display end)


@dataclass
class PoseResult:
    output: Path | None  # the pose-map video, when written
    json: Path | None  # the OpenPose JSON, when written
    png_dir: Path | None  # the folder of PNG maps, when written
    frames: int
    fps: float
    frames_without_people: int = 0
    seconds: dict[str, float] = field(default_factory=dict)






def _check_paths(**paths) -> None:
    """The API's path arguments are str or os.PathLike (None: the default, except for the input)."""
    for name, value in paths.items():
        if (value is None and name != "input") or (isinstance(value, (str, os.PathLike)) and isinstance(
                os.fspath(value), str) and os.fspath(value)):
            continue
        raise InvalidOptions(f"{name} must be a path (str or pathlib.Path), got {value!r}")






def _kept_frames(o: RestyleOptions, info, width: int, height: int) -> decode.Decoder:
    """A decoder of the frames ``o`` keeps (its span, every n-th, frame cap, frame rate) at the processing size:
    the pose stage, --strength and --compare each decode the same frames."""
    return decode.Decoder(info, width, height, start=o.start, end=o.end, every_nth=o.every_nth,
                          max_frames=o.max_frames, fps=o.fps)


# Model loading changes process-wide state for a while (diffusers' lazy imports on first use, torch's default dtype,
# accelerate's empty-weights patch of nn.Module.register_parameter): one load at a time in the whole process, so
# that two Restylers on two threads (or a load left running by a failed video) do not break each other's models.
_LOAD_LOCK = threading.Lock()


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidOptions(f"--device {device}: no CUDA GPU is visible: use --device cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise InvalidOptions(f"--device {device}: this machine has {n} CUDA GPU{'s' if n != 1 else ''} "
                             f"(cuda:0{f' to cuda:{n - 1}' if n > 1 else ''}): choose one of them")
    return device


def _resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class _Stage:
    """One tqdm bar per stage plus the user's progress callback."""

    def __init__(self, name: str, total: int, progress: ProgressFn | None, show: bool):
        from tqdm.auto import tqdm

        self.name, self.total, self.progress, self.done = name, total, progress, 0
        self.bar = tqdm(total=total, desc=f"{name:>8}", unit="frame" if name != "generate" else "pass",
                        disable=not show, leave=False, dynamic_ncols=True)
        if progress:
            progress(name, 0, total)  # the stage begins (its clock starts here)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        if self.progress:
            self.progress(self.name, self.done, self.total)

    def finish(self) -> None:
        """The stage is complete: an estimated total becomes the count done (reported once more)."""
        if self.total != self.done:
            self.total = self.bar.total = self.done
            if self.progress:
                self.progress(self.name, self.done, self.total)

    def close(self) -> None:
        self.bar.close()


class Restyler:
    """Keeps models loaded across calls: ``Restyler().restyle("in.mp4", prompt="...")``.

    Keyword arguments given here are defaults for every ``restyle`` call (any RestyleOptions field).
    """

    def __init__(self, *, show_progress: bool | None = None, **defaults):
        unknown = set(defaults) - option_names()
        if unknown:
            raise InvalidOptions(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.defaults = defaults
        self.show_progress = show_progress
        self._diffusion: dict[tuple, object] = {}
        self._load_lock = _LOAD_LOCK  # process-wide: loading is not thread-safe across Restylers either
        self._pose: dict[tuple, object] = {}

    # ------------------------------------------------------------------ models
    def _model_specs(self, o: RestyleOptions) -> dict[str, str]:
        if o.models == "tiny":
            from .tiny import tiny_model_paths

            t = tiny_model_paths()
            d = {"base": str(t["base"]), "motion": str(t["motion"]), "controlnet": str(t["controlnet"]),
                 "pose_model": str(t["openpose" if o.pose == "openpose" else "dwpose"])}
        else:
            d = {"base": DEFAULT_BASE, "motion": DEFAULT_MOTION, "controlnet": DEFAULT_CONTROLNET,
                 "pose_model": DEFAULT_OPENPOSE if o.pose == "openpose" else DEFAULT_DWPOSE}
        for k in d:
            if getattr(o, k):
                d[k] = getattr(o, k)
        # single-file checkpoints take their configs from the model set's own base and ControlNet repos
        from .catalog import resolve_base
        from .models import DEFAULT_TAESD
        from .tiny import tiny_model_paths

        d["base"], alias_vae = resolve_base(d["base"])  # short names (--base toonyou): v2v/catalog.py
        t = tiny_model_paths() if o.models == "tiny" else None
        d["base_config"] = str(t["base"]) if t else DEFAULT_BASE
        d["controlnet_config"] = str(t["controlnet"]) if t else DEFAULT_CONTROLNET
        d["decoder"] = (str(t["taesd"]) if t else DEFAULT_TAESD) if o.fast_decode else None
        d["vae"] = o.vae or alias_vae
        return d

    def _diffusion_args(self, o: RestyleOptions) -> dict:
        """load_diffusion_models' / check_models' arguments for ``o`` (also the loaded models' cache key)."""
        from .options import parse_motion_lora

        s = self._model_specs(o)
        return dict(base=s["base"], motion=s["motion"], controlnet=s["controlnet"],
                    lightning_steps=o.lightning_steps, vae=s["vae"], decoder=s["decoder"],
                    motion_loras=tuple(parse_motion_lora(v) for v in o.motion_loras),
                    base_config=s["base_config"], controlnet_config=s["controlnet_config"])

    def check_models(self, o: RestyleOptions) -> None:
        """The models' cheap preflight (headers and configs only): a wrong model fails before any frame is
        decoded. Skipped when these models are already loaded."""
        from .models import check_models

        args = self._diffusion_args(o)
        if not any(k[0] == tuple(sorted(args.items())) for k in list(self._diffusion)):  # a snapshot: a
            # background load may change the dict meanwhile
            check_models(**args)

    def diffusion_models(self, o: RestyleOptions, device: str, dtype):
        from .models import load_diffusion_models

        with self._load_lock:  # one load at a time (a background load may still run after a failed video)
            from .generate import compile_models, enable_offload

            args = self._diffusion_args(o)
            # LoRAs and strengths included (merged weights); compiled and offloaded sets differ too
            key = (tuple(sorted(args.items())), device, str(dtype), o.compile, o.offload)
            if key not in self._diffusion:
                self._diffusion.clear()  # one set on the device at a time
                log.info("loading models: base %s, motion %s (%d-step), controlnet %s",
                         args["base"], args["motion"], o.lightning_steps, args["controlnet"])
                import torch

                default_dtype = torch.get_default_dtype()
                try:
                    models = load_diffusion_models(**args, device=device, dtype=dtype)
                finally:  # diffusers/transformers set float16 as torch's default while loading, and a failed load
                    torch.set_default_dtype(default_dtype)  # can leave it so for the rest of the process (watch)
                if o.offload:
                    enable_offload(models)
                if o.compile:
                    log.info("compiling %d modules with torch.compile (the first frames take longer)",
                             compile_models(models))
                self._diffusion[key] = models
            return self._diffusion[key]

    def _pose_class(self, o: RestyleOptions):
        if o.pose == "openpose":
            from .pose.openpose import OpenPose

            return OpenPose
        from .pose.dwpose import DWPose

        return DWPose

    def _concrete_pose_runtime(self, o: RestyleOptions, device: str) -> RestyleOptions:
        """``o`` with DWPose's runtime "auto" made concrete for ``device`` (so the pose cache, the model files and
        the settings record name what runs, and a --settings rerun runs the same)."""
        if o.pose != "dwpose" or o.pose_runtime != "auto":
            return o
        from .pose.dwpose import resolve_runtime

        return o.replace(pose_runtime=resolve_runtime("auto", device, self._model_specs(o)["pose_model"],
                                                      offload=o.offload))

    def _pose_files(self, o: RestyleOptions) -> list[Path]:
        spec = self._model_specs(o)["pose_model"]
        if o.pose == "openpose":
            return self._pose_class(o).model_files(spec)
        o = self._concrete_pose_runtime(o, _resolve_device(o.device))
        return self._pose_class(o).model_files(spec, o.pose_runtime)

    @staticmethod
    def _builds_torch_detector(o: RestyleOptions) -> bool:
        """Whether ``o``'s pose detector is built from torch modules (OpenPose, DWPose on torch)."""
        return o.pose_json is None and (o.pose == "openpose" or o.pose_runtime == "torch")

    def _build_detector(self, o: RestyleOptions, device: str, check=None):
        """:meth:`pose_detector`, built under the model-loading lock when it is made of torch modules: loading
        the diffusion models changes process-wide torch state for a while (diffusers/transformers set the default
        dtype to float16; accelerate's empty-weights init patches ``nn.Module.register_parameter``), and a torch
        module built at the same time on another thread could come out float16 or on the meta device."""
        if not self._builds_torch_detector(o):
            return self.pose_detector(o, device)
        while not self._load_lock.acquire(timeout=0.1):  # a load left by a failed video may hold it a while:
            if check is not None:                          # a cancelled run stops waiting (``check`` raises)
                check()
        try:
            return self.pose_detector(o, device)
        finally:
            self._load_lock.release()

    def pose_detector(self, o: RestyleOptions, device: str):
        """The pose detector for ``o`` (kept loaded across calls); ``.detect(images) -> list[FramePose]``."""
        spec = self._model_specs(o)["pose_model"]
        cls = self._pose_class(o)
        kwargs = {"parts": o.pose_parts} if o.pose == "openpose" else {"runtime": o.pose_runtime}
        key = (o.pose, spec, device, tuple(sorted(kwargs.items())))
        if key not in self._pose:
            self._pose.clear()  # one pose detector at a time
            log.info("loading the pose detector: %s%s %s", o.pose,
                     f" ({o.pose_runtime})" if o.pose == "dwpose" else "", spec)
            self._pose[key] = cls.from_spec(spec, device=device, **kwargs)
        return self._pose[key]

    def _cache_key(self, o: RestyleOptions, in_path: Path, width: int, height: int) -> str:
        from .pose import cache

        files = self._pose_files(o)
        settings = {"size": [width, height], "start": o.start, "end": o.end, "every_nth": o.every_nth,
                    "max_frames": o.max_frames, "fps": str(o.fps) if o.fps is not None else None,
                    "parts": list(o.pose_parts) if o.pose == "openpose" else None}
        return cache.cache_key(in_path, o.pose, files, settings)

    # ------------------------------------------------------------------ shared steps
    def _options(self, prompt: str | None, options: dict, need_prompt: bool = True,
                 progress=None) -> RestyleOptions:
        if progress is not None and not callable(progress):
            raise InvalidOptions(f"progress must be a function progress(stage, done, total), got {progress!r}")
        unknown = set(options) - option_names()
        if unknown:
            raise InvalidOptions(f"unknown option(s): {', '.join(sorted(unknown))}")
        merged = {**self.defaults, **options}
        if prompt is not None:
            merged["prompt"] = prompt
        merged.setdefault("prompt", "" if need_prompt else "(pose only)")
        return RestyleOptions(**merged).validate()

    def _probe(self, in_path: Path, o: RestyleOptions):
        info = probe(in_path)
        width, height = timing.processing_size(info.display_width, info.display_height, o.short_side,
                                              o.width, o.height)
        log.info("input %s: %dx%d, %.3f fps, %s audio; processing at %dx%d", in_path.name, info.display_width,
                 info.display_height, float(info.fps), "with" if info.audio else "no", width, height)
        return info, width, height

    def _show(self) -> bool:
        return self.show_progress if self.show_progress is not None else log.isEnabledFor(logging.INFO)

    def _poses(self, o: RestyleOptions, info, width: int, height: int, device: str, progress, sink=None,
               check=None, seconds: dict | None = None, detector_ready: threading.Event | None = None):
        """Keypoints per kept frame (at the processing size), their times, the kept span, the empty-map count.

        The frames are always decoded (their timestamps are the truth); the keypoints come from ``--pose-json``,
        the cache, or the detector (loaded only then), in that order. Then parts are kept and smoothing applied,
        frame by frame as they come (smoothing looks only at earlier frames): ``sink(pose)``, when given, gets
        each frame's final pose in order as soon as it is known, so generation can start on the first frames.
        ``detector_ready`` is set once the pose stage builds no more torch modules (see :meth:`_build_detector`).
        """
        from .pose import cache
        from .pose.keypoints import has_visible_person, keep_parts
        from .pose.smooth import PoseSmoother

        smoother = (PoseSmoother(strength=o.pose_smoothing, threshold=o.pose_threshold)
                    if o.pose_smoothing > 0 else None)
        final: list = []

        def finalise(pose, t) -> None:
            pose = keep_parts(pose, o.pose_parts)
            if smoother is not None:
                pose = smoother(pose, t)
            final.append(pose)
            if sink is not None:
                sink(pose)

        def decoder():
            dec = _kept_frames(o, info, width, height)
            return _Checked(dec, check) if check is not None else dec

        def ready() -> None:
            if detector_ready is not None:
                detector_ready.set()

        if not self._builds_torch_detector(o):
            ready()
        show = self._show()
        if o.pose_json is not None:
            dec = decoder()
            poses, times = self._json_stage(o, dec, info, width, height, progress, show)
        else:
            key = self._cache_key(o, info.path, width, height) if o.pose_cache else None
            poses = cache.load(key, width, height) if key else None
            if poses is not None:
                ready()  # (a mismatching entry means detecting after all: _build_detector's lock covers that)
                dec = decoder()
                times = self._times_stage(dec, len(poses), progress, show)
                if len(times) != len(poses):
                    log.warning("pose cache entry has %d frames, the video %d: detecting again",
                                len(poses), len(times))
                    poses = None
            if poses is None:
                dec = decoder()
                detector = self._build_detector(o, device, check)
                ready()
                poses, times = self._pose_stage(dec, detector, progress, show, info, on_pose=finalise)
                if key and poses:
                    cache.save(key, poses)
        if not poses:
            raise InvalidOptions("no frames are left to process: check --start/--end/--max-frames")
        if not final:  # from --pose-json or the cache: all at once
            for pose, t in zip(poses, times):
                finalise(pose, t)
        empty = sum(1 for p in final if not has_visible_person(p, o.pose_threshold))
        if empty:
            log.info("%d of %d frames have no person: their pose maps are empty", empty, len(final))
        if seconds is not None:
            seconds["video_decode"] = dec.busy  # within the pose stage's time
        return final, times, dec.span, empty

    def _times_stage(self, decoder, total: int, progress, show) -> list[Fraction]:
        stage = _Stage("pose", total, progress, show)
        times = []
        for frame in decoder:
            times.append(frame.time)
            stage.update()
        stage.finish()
        stage.close()
        return times

    def _json_stage(self, o: RestyleOptions, decoder, info, width, height, progress, show):
        """Keypoints from ``--pose-json`` (source pixels) scaled to the processing size; one per kept frame."""
        from .pose.keypoints import load_pose_json

        given = load_pose_json(Path(o.pose_json).expanduser(), info.display_width, info.display_height)
        times = self._times_stage(decoder, len(given), progress, show)
        if len(given) != len(times):
            raise InvalidOptions(
                f"--pose-json '{Path(o.pose_json).name}' has {len(given)} frames but the video has {len(times)} "
                f"kept frames: use a JSON made from this clip with the same --start/--end/--max-frames/"
                f"--every-nth/--fps")
        return [p.scaled(width, height) for p in given], times

    @staticmethod
    def _timing(o: RestyleOptions, info, span, times) -> _Timing:
        """Output times relative to the first frame, the output frame rate and time base, and the audio cut."""
        audio_cut = timing.AudioCut(info.path, info.audio.index, span[0], span[1]) if info.audio else None
        # resampled frames sit on the grid k/fps, which 1/fps holds exactly; else the source's own time base
        time_base = info.time_base if o.fps is None else 1 / Fraction(o.fps)
        return _Timing([t - times[0] for t in times], o.fps or info.fps, time_base, audio_cut, span[1] - span[0])

    @staticmethod
    def _writer(path: Path, width: int, height: int, timing: _Timing, crf: int | None, metadata: dict | None = None,
                fmt: formats.OutputFormat | None = None, **kwargs):
        """H.264 MP4 (fmt None; kwargs: threaded, queue_frames), or any output format (v2v.outputs.open_writer;
        kwargs: size, ping_pong, gif_loop, name, threaded, queue_frames)."""
        if fmt is None:
            return VideoWriter(path, width, height, fps=timing.fps, time_base=timing.time_base,
                                      audio=timing.audio, crf=formats.crf_for(formats.FORMATS["h264"], crf),
                                      metadata=metadata, end=timing.end, **kwargs)
        return writers.open_writer(path, fmt, width, height, fps=timing.fps, time_base=timing.time_base,
                                   end=timing.end, audio=timing.audio, crf=crf, metadata=metadata, **kwargs)

    def _write_pose_video(self, path: Path, poses, timing: _Timing, width, height, o: RestyleOptions,
                          crf: int | None = None, fmt: formats.OutputFormat | None = None):
        """The pose-map video in ``fmt`` (default: from ``path``'s extension), at quality ``crf`` (None: the
        format's default)."""
        from .pose.render import render_pose

        fmt = fmt or formats.output_format(path)
        with atomic_output(path) as tmp, self._writer(tmp, width, height, timing, crf, fmt=fmt, name="pose") as w:
            for fp, tt in zip(poses, timing.times):
                w.write(render_pose(fp, width, height, o.pose_parts, o.pose_threshold), tt)

    @staticmethod
    def _guard(device: str):
        """Turns Ctrl-C and out-of-memory into v2v's own errors."""
        @contextmanager
        def guard():
            try:
                yield
            except KeyboardInterrupt:
                raise Interrupted("interrupted: no output was written") from None
            except Exception as e:
                if type(e).__name__ == "OutOfMemoryError":
                    raise OutOfMemory(f"the {device} ran out of memory: lower --frame-budget (e.g. 32; it bounds "
                                      "the frames on the GPU at once) or --size, or add --offload") from e
                raise
        return guard()

    # ------------------------------------------------------------------ restyle
    def restyle(self, input: str | os.PathLike, output: str | os.PathLike | None = None, *, prompt: str | None = None,
                progress: ProgressFn | None = None, **options) -> RestyleResult:
        """Restyle ``input`` into ``output`` (default NAME.restyled.mp4 beside it). Returns a RestyleResult."""
        seconds: dict[str, float] = {}
        t_all = time.perf_counter()

        # 1. options
        _check_paths(input=input, output=output)
        o = self._options(prompt, options, progress=progress)

        # 2. probe (bad input fails here, before anything is written)
        t = time.perf_counter()
        in_path = Path(input).expanduser()
        info, width, height = self._probe(in_path, o)
        seconds["probe"] = time.perf_counter() - t

        # 3. paths (the output's format from its extension or --format; a folder is a PNG sequence)
        target = output if output is not None else default_output(in_path, o.format)
        fmt = formats.output_format(target, o.format)  # from the path as given: "frames/" names a folder
        out_path = check_output_path(in_path, target, o.format)
        problem = formats.crf_problem(fmt, o.crf)
        if problem:
            raise InvalidOptions(problem)
        if o.gif_loop and fmt.name != "gif":
            raise InvalidOptions(f"--gif-loop applies to GIF output only, and the output is {fmt.label}: drop it")
        pose_path = check_output_path(in_path, o.keep_pose) if o.keep_pose else None
        pose_fmt = formats.output_format(o.keep_pose) if o.keep_pose else None
        if pose_path is not None and pose_path == out_path:
            raise OutputError("--keep-pose must differ from the output path")
        compare_path = None
        if o.compare:  # OUTPUT.compare.mp4 beside the output (H.264, whatever the output's format)
            stem = out_path.name if fmt.folder else out_path.stem
            compare_path = check_output_path(in_path, out_path.with_name(f"{stem}.compare.mp4"))
            if compare_path in (out_path, pose_path):
                raise OutputError(f"the compare video '{compare_path.name}' would overwrite another output: "
                                  "choose another -o or --keep-pose")
        out_size = (width, height)
        if o.full_size:  # the source's display size (rotation and SAR applied), even where the codec needs it
            out_size = formats.even_size(info.display_width, info.display_height, fmt)
        self.check_models(o)  # a wrong or missing model fails here, before any frame is decoded
        settings_path = run_settings.sidecar_path(out_path)  # NAME.restyled.json: the record of this run
        run_settings.check_sidecar(settings_path, [in_path, o.pose_json, pose_path, compare_path])

        device = _resolve_device(o.device)
        dtype = _resolve_dtype(o.dtype, device)
        o = self._concrete_pose_runtime(o, device)
        progress = _serialized(progress)  # the pose and generate stages report from two threads
        # the outputs (step 7) open during step 6, at its first finished frames; leaving on an error discards them
        with self._guard(device), ExitStack() as stack:
            # 5 (started first). the diffusion models load on a background thread while the pose stage runs, once
            #    the pose stage has built its detector when that is made of torch modules (_build_detector)
            detector_ready = threading.Event()

            def load():
                detector_ready.wait()  # a pose stage that failed first: this run will not need the models
                return None if stream.failed else self.diffusion_models(o, device, dtype)

            # 4. pose, on its own thread (decode streamed; frames dropped once posed; the pose models load only
            #    when detection runs: not with --pose-json, not on a cache hit). Each frame's final pose goes into
            #    `stream` as soon as it is known, so step 6 starts on the first frames while later ones are still
            #    being decoded and posed.
            t = time.perf_counter()
            stream = _PoseStream()

            def pose_stage():
                try:
                    return stream.run(lambda: self._poses(o, info, width, height, device, progress, sink=stream.push,
                                                          check=stream.check, seconds=seconds,
                                                          detector_ready=detector_ready))
                finally:
                    detector_ready.set()  # the loader never waits for a stage that has ended

            posing = Background(pose_stage, name="v2v-pose")
            loading = Background(load, name="v2v-load-models")  # after the pose thread: it waits on that thread
            run: dict = {}  # what step 7 opened

            def open_outputs(n: int):
                """Step 7's start, when the sampler hands over its first finished frames: the pose stage's
                result (its frame count checked against the ``n`` generated), the writers."""
                poses, times, span, empty = posing.result()
                if len(poses) != n:
                    raise _StreamEnded  # the header's count was wrong: generated again below
                timing = self._timing(o, info, span, times)
                run.update(t=time.perf_counter(), timing=timing, stage=_Stage("encode", n, progress, self._show()))
                stack.callback(run["stage"].close)
                run["record"] = run_settings.build_settings(o, self._model_specs(o), input_path=in_path,
                                                            output_path=out_path, device=device, dtype=dtype)
                meta = run_settings.metadata(run["record"])  # embedded in the output; also written beside it
                tmp = stack.enter_context(atomic_output(out_path))  # closed in reverse: writers, then renames
                if pose_path is not None:  # written after generation, renamed only once the writers have closed:
                    run["pose_tmp"] = stack.enter_context(atomic_output(pose_path))  # (their errors may come late)
                writers = []
                if compare_path is not None:
                    ctmp = stack.enter_context(atomic_output(compare_path))
                    cmp_crf = formats.side_crf(formats.FORMATS["h264"], fmt, o.crf)
                    writers.append(stack.enter_context(self._compare_writer(ctmp, o, info, width, height, timing,
                                                                            poses, times[0], cmp_crf, meta)))
                # threaded: colour conversion and encoding run beside the sampler and the VAE decode, with room for
                # a segment's frames, so that the encoder works while the next segment denoises
                run["writer"] = stack.enter_context(self._writer(
                    tmp, width, height, timing, o.crf, meta, fmt=fmt, size=out_size, ping_pong=o.ping_pong,
                    gif_loop=o.gif_loop, name=in_path.stem, threaded=True,
                    queue_frames=_queue_frames(o.frame_budget or 16, *out_size)))  # frames as written
                writers.insert(0, run["writer"])
                return writers, timing.times, run["stage"]

            encode = _EncodeStage(open_outputs, can_open=lambda: posing.wait(0))
            try:
                # 5. models (what is left of their loading; a pose-stage error ends the wait)
                t_load = time.perf_counter()
                while not loading.wait(0.05):
                    stream.raise_if_failed()
                stream.raise_if_failed()  # (an abandoned load returns None at once)
                models = loading.result()
                seconds["load"] = time.perf_counter() - t_load
                encode.models = models

                # 6. generate: streamed from the pose stage when the frame count is known up front (from the
                #    container); with --strength < 1 from the source frames' latents, after the pose stage.
                #    Finished frames go on to step 7 (encode) while later ones denoise.
                t_gen = time.perf_counter()
                if o.frame_budget is None:  # resolved now and recorded, so a --settings rerun makes the same frames
                    from .generate import pick_frame_budget

                    o = o.replace(frame_budget=pick_frame_budget(models, height, width, o.guidance > 1, o.context))
                expected = _streamable_frames(o, info, width, height, device)
                latents, failed = None, None
                if expected:
                    try:
                        encode.reset(expected)
                        latents = self._generate(models, o, stream, width, height, progress, n=expected,
                                                 on_final=encode, seconds=seconds)
                    except _StreamEnded:
                        pass
                    except InvalidOptions as e:  # maybe the header's count's fault (e.g. more frames than the
                        failed = e               # model's context allows): believed once the true count is known
                poses, times, span, empty = posing.result()
                seconds["pose"] = (stream.finished_at or time.perf_counter()) - t
                if not expected:  # generation starts now: the wait for the pose stage is not its time
                    t_gen = time.perf_counter()
                if expected and len(poses) == expected and failed is not None:
                    raise failed
                if expected and (latents is None or len(poses) != expected):
                    log.info("the video has %d kept frames, not the %d its header gave: generating again",
                             len(poses), expected)
                    latents = None
                if latents is None:
                    init = self._source_latents(models, o, info, width, height) if o.strength < 1 else None
                    encode.reset(len(poses))
                    latents = self._generate(models, o, poses, width, height, progress, init, on_final=encode,
                                             seconds=seconds)
                seconds["generate"] = time.perf_counter() - t_gen
                encode.flush()  # what waited for the pose stage's end, if anything
            except BaseException:
                stream.cancel()  # the pose thread stops at its next frame
                stream.wait_ended(30)  # and is done before the caller (watch mode: the next video) goes on
                raise
            if encode.written != len(poses):  # cannot happen: generate hands on every frame once
                raise RuntimeError(f"{encode.written} of {len(poses)} frames were encoded")
            if pose_path is not None:  # once generation is done (a failed run writes none), before the renames
                self._write_pose_video(run["pose_tmp"], poses, run["timing"], width, height, o,
                                       formats.side_crf(pose_fmt, fmt, o.crf), pose_fmt)
            # 8. rename: the writers close, then the temp files take their names (the output last)
            stack.close()
        run_settings.write_sidecar(settings_path, run["record"])
        seconds["encode"] = time.perf_counter() - run["t"]
        seconds["vae_decode"] = encode.vae["seconds"]  # within the encode stage's time, as is the writer's:
        if isinstance(getattr(run["writer"], "busy", None), float):
            seconds["video_encode"] = run["writer"].busy
        timing = run["timing"]
        seconds["total"] = time.perf_counter() - t_all
        log.info("wrote %s: %d frames (%d without people) in %.1f s", out_path, len(poses), empty,
                 seconds["total"])
        return RestyleResult(output=out_path, frames=len(poses), fps=float(timing.fps), seconds=seconds,
                             frames_without_people=empty, width=out_size[0], height=out_size[1],
                             pose_output=pose_path, settings=run["record"], compare_output=compare_path)

    def _compare_writer(self, path: Path, o: RestyleOptions, info, width: int, height: int, timing: _Timing, poses,
                        t0: Fraction, crf: int | None, metadata: dict):
        """source | pose map | result (H.264, 3x the width, the output's timing and audio). The source is decoded
        again with the same span options (the pose step kept no frames), running ahead on a thread."""
        from .pose.render import render_pose

        sources = prefetch(_kept_frames(o, info, width, height), depth=4)
        writer = self._writer(path, 3 * width, height, timing, crf, metadata, threaded=True)  # beside the sampler
        return CompareWriter(writer, sources,
                                     lambda i: render_pose(poses[i], width, height, o.pose_parts, o.pose_threshold),
                                     t0, threaded=True,  # composed beside the sampler, like the encoding
                                     queue_frames=_queue_frames(o.frame_budget or 16, width, height))

    # ------------------------------------------------------------------ pose only
    def pose(self, input: str | os.PathLike, output: str | os.PathLike | None = None, *,
             json_path: str | os.PathLike | None = None, png_dir: str | os.PathLike | None = None,
             progress: ProgressFn | None = None, **options) -> PoseResult:
        """Detect poses: write the pose-map video (source timing, with audio), and/or the OpenPose JSON
        (source pixels, one object per frame), and/or lossless PNG maps. With none given: NAME.pose.mp4."""
        import cv2

        from .pose.keypoints import save_pose_json
        from .pose.render import render_pose

        t_all = time.perf_counter()
        _check_paths(input=input, output=output, json_path=json_path, png_dir=png_dir)
        o = self._options(None, options, need_prompt=False, progress=progress)
        in_path = Path(input).expanduser()
        info, width, height = self._probe(in_path, o)
        if output is None and json_path is None and png_dir is None:
            output = in_path.with_name(f"{in_path.stem}.pose.mp4")
        out_path = check_output_path(in_path, output) if output is not None else None
        out_fmt = formats.output_format(output) if output is not None else None
        problem = formats.crf_problem(out_fmt, o.crf) if out_fmt is not None else None
        if problem:
            raise InvalidOptions(problem)
        json_out = Path(json_path).expanduser().resolve() if json_path is not None else None
        if json_out is not None and (json_out == in_path.resolve() or not json_out.parent.is_dir()):
            raise OutputError(f"cannot write the pose JSON to '{json_out}': choose another --json path")
        if json_out is not None and json_out.is_dir():  # (renaming the JSON onto it failed after the detection)
            raise OutputError(f"--json '{json_out}' is a folder, not a file: give a file path, e.g. "
                              f"'{json_out / (in_path.stem + '.pose.json')}'")
        if json_out is not None and not writable(json_out.parent):  # before the detection, not after it
            raise OutputError(f"cannot write the pose JSON to '{json_out}': its folder is not writable; choose "
                              "another --json path")
        png_out = Path(png_dir).expanduser() if png_dir is not None else None
        if png_out is not None:
            png_out = png_out.resolve()
            if png_out.exists() and not png_out.is_dir():
                raise OutputError(f"--png '{png_out}' is a file, not a folder: choose another --png folder")
            existing = next(p for p in (png_out, *png_out.parents) if p.exists())  # made below, parents too
            if not existing.is_dir() or not writable(existing):
                raise OutputError(f"cannot write the PNG maps to '{png_out}': '{existing}' is not writable; "
                                  "choose another --png folder")
        device = _resolve_device(o.device)
        o = self._concrete_pose_runtime(o, device)
        with self._guard(device):
            poses, times, span, empty = self._poses(o, info, width, height, device, progress)
            timing = self._timing(o, info, span, times)
            if out_path is not None:
                self._write_pose_video(out_path, poses, timing, width, height, o, o.crf, out_fmt)
            if json_out is not None:
                source = [p.scaled(info.display_width, info.display_height) for p in poses]
                with atomic_output(json_out) as tmp:
                    save_pose_json(tmp, source)
            if png_out is not None:
                try:
                    png_out.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise OutputError(f"cannot make the PNG folder '{png_out}' ({e.strerror or e}): choose another "
                                      "--png folder") from None
                for i, p in enumerate(poses):
                    img = render_pose(p, width, height, o.pose_parts, o.pose_threshold)
                    if not cv2.imwrite(str(png_out / f"pose_{i:06d}.png"), img[:, :, ::-1]):
                        raise OutputError(f"cannot write the PNG maps in '{png_out}': check the folder and the "
                                          "free space")
        return PoseResult(output=out_path, json=json_out, png_dir=png_out, frames=len(poses), fps=float(timing.fps),
                          frames_without_people=empty, seconds={"total": time.perf_counter() - t_all})

    # ------------------------------------------------------------------ stages
    def _pose_stage(self, decoder, detector, progress, show, info, on_pose=None):
        """Keypoints and times of the kept frames: batches of POSE_BATCH frames detected on several threads
        (a detector that can be called from several at once, as DWPose's onnxruntime sessions can; results in
        frame order, the same as one thread's) while decoding runs ahead on another. ``on_pose(pose, time)``
        gets each frame's detection in order as its batch completes."""
        total = expected_frames(decoder)
        stage = _Stage("pose", total, progress, show)
        workers = default_workers() if getattr(detector, "thread_safe", False) else 1
        poses, times = [], []

        def batches():
            batch = []
            for frame in prefetch(decoder, depth=2 * POSE_BATCH * workers):
                batch.append(frame)
                if len(batch) == POSE_BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def detect(batch):
            return detector.detect([f.image for f in batch]), [f.time for f in batch]

        for found, batch_times in parallel_map(detect, batches(), workers):
            poses.extend(found)
            times.extend(batch_times)
            if on_pose is not None:
                for pose, t in zip(found, batch_times):
                    on_pose(pose, t)
            stage.update(len(batch_times))
        stage.finish()
        stage.close()
        return poses, times

    def _source_latents(self, models, o: RestyleOptions, info, width: int, height: int):
        """The kept source frames, decoded again and VAE-encoded (for --strength < 1)."""
        from .generate import encode_frames

        return encode_frames(models, (f.image for f in prefetch(_kept_frames(o, info, width, height), depth=16)))

    def _generate(self, models, o: RestyleOptions, poses, width, height, progress, init_latents=None,
                  n: int | None = None, on_final=None, seconds: dict | None = None):
        """The latents of ``n`` frames (default ``len(poses)``); ``poses[i]`` is read as the sampler reaches
        frame i (a _PoseStream waits there for the pose stage). ``on_final``: v2v.generate.generate's.
        ``seconds["control_wait"]``, when given, adds up the sampler's wait for control maps (poses included)."""
        from .generate import generate

        n = len(poses) if n is None else n
        travel = list(o.prompt_at)
        if travel and travel[0][0] != 0:
            travel.insert(0, (0, o.prompt))  # -p holds until the first keyframe
        if travel and travel[-1][0] >= n:
            raise InvalidOptions(f"--prompt-at keyframe {travel[-1][0]} is past the last frame ({n - 1}): frames "
                                 "count from 0 among the kept frames")
        stage = _Stage("generate", o.steps, progress, self._show())
        control = _ControlMaps(poses, width, height, o.pose_parts, o.pose_threshold,
                               pin=str(models.device).startswith("cuda"))

        def on_progress(done: int, total: int) -> None:
            stage.total = stage.bar.total = total
            stage.update(done - stage.done)
            if isinstance(poses, _PoseStream):
                poses.raise_if_longer_than(n)  # a plan for too few frames: stop now, not after the last step

        stats: dict = {}
        try:
            latents = generate(models, prompt=o.prompt, negative_prompt=o.negative_prompt, num_frames=n,
                               height=height, width=width, control=control, steps=o.steps, guidance=o.guidance,
                               seed=o.seed, context=o.context, overlap=o.overlap, pose_strength=o.pose_strength,
                               fusion=o.fusion, noise=o.noise, frame_budget=o.frame_budget, loop=o.loop,
                               prompt_travel=travel or None, control_start=o.control_start,
                               control_end=o.control_end, init_latents=init_latents, strength=o.strength,
                               progress=on_progress, stats=stats, on_final=on_final)
        finally:
            stage.close()
            if seconds is not None:  # a run generated again (wrong header count) waited in both
                seconds["control_wait"] = seconds.get("control_wait", 0.0) + stats.get("control_wait", 0.0)
        log.info("generated %d frames: %d windows in %d segments of at most %d frames (%.2f spatial passes per "
                 "frame)", n, stats.get("windows", 0), stats.get("segments", 0), stats.get("frame_budget", 0),
                 stats.get("spatial_passes", 0.0))
        return latents


def _serialized(progress: ProgressFn | None) -> ProgressFn | None:
    """``progress`` called under a lock: the pose and generate stages may report at the same time."""
    if progress is None:
        return None
    lock = threading.Lock()

    def call(stage: str, done: int, total: int) -> None:
        with lock:
            progress(stage, done, total)

    return call


# Generation overlaps the pose stage only where it runs on another processor than pose detection's CPU work: on
# the CPU both stages use every core, and running them together was measured slower (1.11x, 2 cores, tiny models).
OVERLAP_ON_CPU = False  # tests set it to exercise the streamed path without a GPU


def _streamable_frames(o: RestyleOptions, info, width: int, height: int, device: str = "cuda") -> int:
    """The kept-frame count the container promises, when generation may start before the pose stage ends:
    0 when it may not (--strength < 1 needs every source latent first; an unknown count; a --prompt-at
    keyframe the estimate does not reach; a CPU run, see OVERLAP_ON_CPU)."""
    if o.strength < 1 or (str(device).startswith("cpu") and not OVERLAP_ON_CPU):
        return 0
    n = expected_frames(_kept_frames(o, info, width, height))
    if n <= 0 or (o.prompt_at and max(k for k, _ in o.prompt_at) >= n):
        return 0
    return n


class _EncodeStage:
    """Step 7 as generate's ``on_final``: each run of finished latents VAE-decoded in chunks (on the sampler's
    thread, so the device never holds the decoder's activations beside the UNet's) and handed to the writers,
    whose encoding runs on their own threads. The outputs open (``open_outputs(n)`` gives (writers, output times,
    progress stage)) once ``can_open()``, that is once the pose stage has ended (the frame count, the times and
    the audio span are known then); until then finished runs wait as latents (views of the sampler's, no copy),
    so the sampler never waits for the pose stage here. ``flush()`` after generation opens the outputs at the
    latest and writes what waits."""

    def __init__(self, open_outputs, can_open=lambda: True):
        self.open_outputs, self.can_open = open_outputs, can_open
        self.models = None  # set once loaded
        self.frames = 0  # the frame count the sampler plans for (set before each generate call, with reset())
        self.writers = None
        self.times: list = []
        self.stage = None
        self.pending: list = []  # finished latents not decoded yet
        self.handed = 0  # frames handed over by the sampler
        self.written = 0
        self.vae: dict = {"seconds": 0.0}

    def reset(self, frames: int) -> None:
        """Before a generation of ``frames`` frames (again, after a wrong count: nothing was opened then)."""
        if self.writers is not None:
            raise RuntimeError("the outputs are already open")
        self.frames, self.pending, self.handed = frames, [], 0

    def __call__(self, start: int, latents) -> None:
        if start != self.handed:
            raise RuntimeError(f"frames {start}.. handed on after {self.handed} frames")
        self.pending.append(latents)
        self.handed += latents.shape[0]
        if self.writers is not None or self.can_open():
            self.flush()

    def flush(self) -> None:
        from .generate import decode_latents

        if self.writers is None:
            self.writers, self.times, self.stage = self.open_outputs(self.frames)
        if self.pending:  # runs that waited for the pose stage, decoded together (full chunks of 8)
            import torch

            waiting = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending = []
            for img in decode_latents(self.models, waiting, stats=self.vae):
                t = self.times[self.written]
                for w in self.writers:
                    w.write(img, t)
                self.written += 1
                self.stage.update()


def _queue_frames(budget: int, width: int, height: int, cap_bytes: int = 512 * 2**20) -> int:
    """The encoder's queue: room for a segment's frames (the frame budget), so it encodes the frames one pass
    finished while the next pass denoises; at most ``cap_bytes`` of RGB frames as written, at least 16. (With
    --full-size the scaler before it has a queue of as many frames at the processing size, smaller where the
    source is larger.)"""
    return int(max(16, min(budget, cap_bytes // max(3 * width * height, 1))))


class _StreamEnded(Exception):
    """The frame count the sampler planned with proved wrong: the pose stage ended before the frame it asked for,
    or made more frames than planned."""


class _Cancelled(Exception):
    """The run failed elsewhere: the pose thread stops."""


class _PoseStream:
    """Final poses, in frame order, as the pose stage makes them on its thread, for a sampler that starts before
    the stage ends: ``stream[i]`` waits for frame i. The stage's error is raised there too; a stage that ended
    before frame i raises _StreamEnded; ``cancel()`` makes the stage stop at its next frame."""

    def __init__(self) -> None:
        self._poses: list = []
        self._cond = threading.Condition()
        self._ended = False
        self._error: BaseException | None = None
        self._cancelled = False
        self.finished_at: float | None = None  # perf_counter() when the stage ended well

    def run(self, fn):
        """``fn()`` (the pose stage, which pushes each pose), marking the stream ended or failed."""
        try:
            result = fn()
        except BaseException as e:
            with self._cond:
                self._error, self._ended = e, True
                self._cond.notify_all()
            raise
        with self._cond:
            self._ended, self.finished_at = True, time.perf_counter()
            self._cond.notify_all()
        return result

    def push(self, pose) -> None:
        with self._cond:
            if self._cancelled:
                raise _Cancelled()
            self._poses.append(pose)
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True

    def wait_ended(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for the stage to end. Not Thread.join: on 3.11 a Ctrl-C inside join()
        marks the thread stopped while it still runs, and a second join returns at once."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ended and time.monotonic() < deadline:
                self._cond.wait(0.1)

    def check(self) -> None:
        if self._cancelled:
            raise _Cancelled()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def raise_if_longer_than(self, n: int) -> None:
        """_StreamEnded once the stage has made more than ``n`` frames (the header promised too few)."""
        if len(self._poses) > n:
            raise _StreamEnded(f"the pose stage passed {n} frames")

    def __getitem__(self, i: int):
        with self._cond:
            while len(self._poses) <= i and not self._ended:
                self._cond.wait(0.1)
            if i < len(self._poses):
                return self._poses[i]
            if self._error is not None:
                raise self._error
            raise _StreamEnded(f"the pose stage ended at {len(self._poses)} frames; frame {i} was asked for")


class _Checked:
    """A decoder whose iteration stops (``check()`` raises) once the run is cancelled."""

    def __init__(self, dec, check):
        self._dec, self._check = dec, check

    def __getattr__(self, name):
        return getattr(self._dec, name)

    def __iter__(self):
        for frame in self._dec:
            self._check()
            yield frame


class _ControlMaps:
    """The sampler's control(indices): pose maps rendered on first use and kept as uint8 (up to ``cap`` bytes)
    until the sampler releases them, so the steps after the first reuse them instead of drawing again. Returned
    as uint8 (n, 3, H, W), pinned when the sampler runs on CUDA, for a fast copy; the sampler scales them to
    [0, 1] on the device."""

    def __init__(self, poses, width: int, height: int, parts, threshold: float, cap: int = 2 * 2**30,
                 pin: bool = False):
        self.poses, self.width, self.height, self.parts, self.threshold = poses, width, height, parts, threshold
        self.pin = pin  # pinned host memory for a fast copy to a CUDA device (never touched on a CPU run)
        self.keep = max(0, cap // (width * height * 3))
        self.maps: dict[int, np.ndarray] = {}
        self.renders = 0

    def _map(self, i: int) -> np.ndarray:
        m = self.maps.get(i)
        if m is None:
            from .pose.render import render_pose

            m = render_pose(self.poses[i], self.width, self.height, self.parts, self.threshold)
            self.renders += 1
            if len(self.maps) < self.keep:
                self.maps[i] = m
        return m

    def release(self, n: int) -> None:
        """The sampler is done with frames before ``n`` (v2v.generate.generate): their maps go, so the cache holds
        the frames in flight, not the whole video. (Called on the sampler's thread while the helper may add maps:
        single dict operations, each atomic.)"""
        for i in [i for i in list(self.maps) if i < n]:
            self.maps.pop(i, None)

    def __call__(self, indices):
        import torch

        shape = (len(indices), self.height, self.width, 3)
        # on CUDA drawn straight into pinned memory (one copy of the maps, not a stack and then a pinned copy)
        out = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        held = out.numpy()
        for j, i in enumerate(indices):
            held[j] = self._map(i)
        return out.permute(0, 3, 1, 2)  # uint8: the sampler makes it [0, 1] on the device


def restyle(input: str | os.PathLike, output: str | os.PathLike | None = None, *, prompt: str,
            progress: ProgressFn | None = None, **options) -> RestyleResult:
    """Restyle one video: ``v2v.restyle("dance.mp4", prompt="claymation astronaut")``.

    Options are RestyleOptions fields (steps, seed, size, start, end, fps, models, ...). For several videos,
    use a Restyler, which keeps the models loaded.
    """
    return Restyler().restyle(input, output, prompt=prompt, progress=progress, **options)
