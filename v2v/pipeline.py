"""Restyler: the whole path from an input video to a restyled one, in numbered steps (``Restyler.restyle``).

    1. options   every option checked (RestyleOptions.validate, v2v/options.py) before anything is read or loaded
    2. plan      the input probed (a bad one fails here), then the sizes, the output paths and formats, the model
                 set, the device and dtype, each checked before any work (v2v/plan.py)
    3. preflight the models' headers and configs (v2v/models/check.py): a wrong model fails before any frame is
                 decoded
    4. start     the pose stage on its own thread (decode -> keypoints -> smoothed poses, streamed;
                 v2v/stages/pose.py), and the diffusion models loading on another once the pose stage has built
                 its detector
    5. models    wait for the load (v2v/models/load.py)
    6. generate  AnimateDiff-Lightning + ControlNet over fused windows (v2v/stages/generate.py -> v2v/sampler.py),
                 on the first frames' poses while later ones are posed when the frame count is known; each run of
                 frames that has had every step goes at once to
    7. encode    VAE decode on this thread (v2v/vae.py), then the writers (v2v/media/writers/), each encoding on
                 its own thread (v2v/stages/encode.py); the files open once the pose stage has ended; the pose-map
                 video, if asked for, is written after generation
    8. rename    the writers close, then each temp file takes its name, the output last
                 (v2v/media/outputs.py: atomic_output); the run's record is written beside it (v2v/settings.py)

What runs alongside what: the pose thread (decoding, detection on several threads), the model loader, this thread
(sampling and VAE decoding, with a helper drawing the next pass's control maps) and the writers' threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import settings as run_settings
from .device import resolve_device
from .errors import Interrupted, InvalidOptions, OutOfMemory
from .media import formats
from .media.outputs import check_pose_outputs
from .media.probe import probe
from .media.timing import output_timing
from .models.modelset import ModelSet
from .options import RestyleOptions, option_names
from .plan import InputPlan, check_paths, plan_input, plan_restyle
from .progress import ProgressCallback, cancellable, serialized
from .stages.encode import EncodeStage, OutputFiles, write_pose_json, write_pose_pngs, write_pose_video
from .stages.generate import GenerateStage
from .stages.pose import PoseStage, builds_torch_detector
from .streams import Background

log = logging.getLogger("v2v")

# progress(stage, done, total): called as work advances; stages and units in v2v.progress
ProgressFn = ProgressCallback

# Loading changes process-wide state for a while (diffusers' lazy imports, torch's default dtype, accelerate's
# empty-weights patch of nn.Module.register_parameter): one load at a time in the whole process, Restylers too.
_LOAD_LOCK = threading.Lock()


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


@dataclass
class PoseResult:
    output: Path | None  # the pose-map video, when written
    json: Path | None  # the OpenPose JSON, when written
    png_dir: Path | None  # the folder of PNG maps, when written
    frames: int
    fps: float
    frames_without_people: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def _errors_for_the_user(device: str):
    """Ctrl-C and out-of-memory as v2v's own errors."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted("interrupted: no output was written") from None
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":
            raise OutOfMemory(f"the {device} ran out of memory: lower --frame-budget (e.g. 32; it bounds the frames "
                              "on the GPU at once) or --size, or add --offload") from e
        raise


def _with_frame_budget(plan, models):
    """``plan`` with its frame budget resolved when automatic, so the record holds it and a rerun makes the same
    frames."""
    if plan.options.frame_budget is not None:
        return plan
    from .sampler import pick_frame_budget

    o = plan.options
    return plan.with_options(frame_budget=pick_frame_budget(models, plan.height, plan.width, o.guidance > 1,
                                                            o.context))


def _check_cancel(cancel) -> None:
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise InvalidOptions(f"cancel must be a threading.Event, got {cancel!r}")


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
        self._diffusion: dict[tuple, object] = {}  # one loaded model set, by what was loaded
        self._pose: dict[tuple, object] = {}  # one pose detector
        self._load_lock = _LOAD_LOCK

    # ------------------------------------------------------------------ restyle
    def restyle(self, input: str | os.PathLike, output: str | os.PathLike | None = None, *, prompt: str | None = None,
                progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                **options) -> RestyleResult:
        """Restyle ``input`` into ``output`` (default NAME.restyled.mp4 beside it). Returns a RestyleResult.
        ``cancel``: set it (from another thread) to stop the run: Interrupted is raised and nothing is left."""
        seconds: dict[str, float] = {}
        t_all = time.perf_counter()

        # 1. options
        check_paths(input=input, output=output)
        o = self.options_for(prompt, progress=progress, **options)
        _check_cancel(cancel)

        # 2. plan
        t = time.perf_counter()
        info = probe(Path(input).expanduser())
        seconds["probe"] = time.perf_counter() - t
        plan = plan_restyle(o, info, output)

        # 3. preflight
        self.check_models(plan.models)

        progress = serialized(cancellable(progress, cancel))  # the pose and generate stages report from two threads
        with _errors_for_the_user(plan.device), ExitStack() as files:  # leaving on an error discards the files
            # 4. start the pose stage, and the models' load once it has built its detector
            pose = PoseStage(plan, lambda check: self.detector(plan.options, plan.device, check), progress,
                             self._show())
            pose.start()
            loading = Background(lambda: self._load_when_ready(plan, pose), name="v2v-load-models")
            try:
                # 5. models (and the automatic frame budget, from the memory they leave free)
                t = time.perf_counter()
                models = self._wait_for_models(loading, pose, cancel)
                seconds["load"] = time.perf_counter() - t
                plan = _with_frame_budget(plan, models)

                # 6. generate, and 7. encode the frames it finishes
                out = OutputFiles(plan, files, progress, self._show())
                encode = EncodeStage(out, pose, models)
                GenerateStage(plan, progress, self._show(), seconds).run(models, pose, encode)
                seconds["pose"] = pose.seconds()
            except BaseException:
                pose.cancel()  # the pose thread stops at its next frame, before the caller goes on
                raise
            poses = pose.result()
            if encode.written != len(poses.poses):  # cannot happen: the sampler hands on every frame once
                raise RuntimeError(f"{encode.written} of {len(poses.poses)} frames were encoded")
            out.write_pose_video(poses)

            # 8. rename
            files.close()
        run_settings.write_sidecar(plan.settings_file, out.record)
        seconds["encode"] = time.perf_counter() - out.opened_at
        seconds["video_decode"] = poses.decode_seconds  # within the pose stage's time
        seconds["vae_decode"] = encode.vae["seconds"]  # within the encode stage's time, as is the writer's:
        if isinstance(getattr(out.output_writer, "busy", None), float):
            seconds["video_encode"] = out.output_writer.busy
        seconds["total"] = time.perf_counter() - t_all
        log.info("wrote %s: %d frames (%d without people) in %.1f s", plan.output, len(poses.poses), poses.empty,
                 seconds["total"])
        return RestyleResult(output=plan.output, frames=len(poses.poses), fps=float(out.timing.fps), seconds=seconds,
                             frames_without_people=poses.empty, width=plan.out_size[0], height=plan.out_size[1],
                             pose_output=plan.pose_video, settings=out.record, compare_output=plan.compare)

    def _load_when_ready(self, plan, pose: PoseStage):
        """The diffusion models, on the loader's thread, once the pose stage builds no more torch modules; None
        when the pose stage failed first (this run will not need them)."""
        pose.detector_ready.wait()
        return None if pose.stream.failed else self.diffusion_models(plan.options, plan.device, plan.dtype)

    @staticmethod
    def _wait_for_models(loading: Background, pose: PoseStage, cancel: threading.Event | None = None):
        """The loaded models; the pose stage's error, as itself, as soon as it fails."""
        while not loading.wait(0.05):
            pose.stream.raise_if_failed()
            if cancel is not None and cancel.is_set():
                raise Interrupted("cancelled: no output was written")
        pose.stream.raise_if_failed()  # (an abandoned load returns None at once)
        return loading.result()

    # ------------------------------------------------------------------ pose only
    def pose(self, input: str | os.PathLike, output: str | os.PathLike | None = None, *,
             json_path: str | os.PathLike | None = None, png_dir: str | os.PathLike | None = None,
             progress: ProgressFn | None = None, cancel: threading.Event | None = None, **options) -> PoseResult:
        """Detect poses: write the pose-map video (source timing, with audio), and/or the OpenPose JSON
        (source pixels, one object per frame), and/or lossless PNG maps. With none given: NAME.pose.mp4."""
        t_all = time.perf_counter()
        # 1. options
        check_paths(input=input, output=output, json_path=json_path, png_dir=png_dir)
        o = self.options_for(None, need_prompt=False, progress=progress, **options)
        _check_cancel(cancel)
        progress = cancellable(progress, cancel)
        # 2. plan: the input, then every output checked before the detection
        plan = plan_input(o, probe(Path(input).expanduser()))
        wanted = check_pose_outputs(plan.input, output, json_path, png_dir)
        problem = formats.crf_problem(wanted.video_format, o.crf) if wanted.video_format is not None else None
        if problem:
            raise InvalidOptions(problem)
        with _errors_for_the_user(plan.device):
            # 3. the pose stage, in this thread
            poses = PoseStage(plan, lambda check: self.detector(plan.options, plan.device, check), progress,
                              self._show()).run()
            timing = output_timing(plan.info, poses.span, poses.times, plan.options.fps)
            # 4. the outputs
            if wanted.video is not None:
                write_pose_video(wanted.video, poses.poses, timing, plan, o.crf, wanted.video_format)
            if wanted.json is not None:
                write_pose_json(wanted.json, poses.poses, plan.info)
            if wanted.png_dir is not None:
                write_pose_pngs(wanted.png_dir, poses.poses, plan)
        return PoseResult(output=wanted.video, json=wanted.json, png_dir=wanted.png_dir, frames=len(poses.poses),
                          fps=float(timing.fps), frames_without_people=poses.empty,
                          seconds={"total": time.perf_counter() - t_all})

    # ------------------------------------------------------------------ options
    def options_for(self, prompt: str | None = None, *, need_prompt: bool = True, progress=None,
                    **options) -> RestyleOptions:
        """The options a call with these arguments runs with (this Restyler's defaults under them), validated;
        InvalidOptions naming the fix."""
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

    def _show(self) -> bool:
        return self.show_progress if self.show_progress is not None else log.isEnabledFor(logging.INFO)

    # ------------------------------------------------------------------ models
    @property
    def loaded_models(self) -> list:
        """The diffusion model sets loaded now (one at most)."""
        return list(self._diffusion.values())

    @property
    def loaded_detectors(self) -> list:
        """The pose detectors loaded now (one at most)."""
        return list(self._pose.values())

    def check_models(self, models: ModelSet) -> None:
        """The models' cheap preflight (headers and configs only): a wrong model fails before any frame is
        decoded. Skipped when these models are already loaded."""
        from .models.check import check_models

        args = models.diffusion_args()
        # a snapshot of the keys: a background load may change the dict meanwhile
        if not any(k[0] == tuple(sorted(args.items())) for k in list(self._diffusion)):
            check_models(**args)

    def diffusion_models(self, o: RestyleOptions, device: str, dtype):
        """The diffusion models for ``o`` on ``device`` (loaded once and kept; one set at a time)."""
        from .models.load import load_diffusion_models

        with self._load_lock:  # one load at a time (a background load may still run after a failed video)
            from .models.runtime import compile_models, enable_offload

            args = ModelSet.for_options(o).diffusion_args()
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

    def detector(self, o: RestyleOptions, device: str, check=None):
        """:meth:`pose_detector`, built under the model-loading lock when it is made of torch modules: loading the
        diffusion models changes process-wide torch state for a while, and a torch module built at the same time
        on another thread could come out float16 or on the meta device. ``check()`` raises once the run is
        cancelled (a load left by a failed video may hold the lock a while)."""
        if not builds_torch_detector(o):
            return self.pose_detector(o, device)
        while not self._load_lock.acquire(timeout=0.1):
            if check is not None:
                check()
        try:
            return self.pose_detector(o, device)
        finally:
            self._load_lock.release()

    def pose_detector(self, o: RestyleOptions, device: str):
        """The pose detector for ``o`` (kept loaded across calls); ``.detect(images) -> list[FramePose]``."""
        spec = ModelSet.for_options(o).pose_model
        if o.pose == "openpose":
            from .pose.openpose import OpenPose as cls

            kwargs = {"parts": o.pose_parts}
        else:
            from .pose.dwpose import DWPose as cls

            kwargs = {"runtime": o.pose_runtime}
        key = (o.pose, spec, device, tuple(sorted(kwargs.items())))
        if key not in self._pose:
            self._pose.clear()  # one pose detector at a time
            log.info("loading the pose detector: %s%s %s", o.pose,
                     f" ({o.pose_runtime})" if o.pose == "dwpose" else "", spec)
            self._pose[key] = cls.from_spec(spec, device=device, **kwargs)
        return self._pose[key]


def restyle(input: str | os.PathLike, output: str | os.PathLike | None = None, *, prompt: str,
            progress: ProgressFn | None = None, **options) -> RestyleResult:
    """Restyle one video: ``v2v.restyle("dance.mp4", prompt="claymation astronaut")``.

    Options are RestyleOptions fields (steps, seed, size, start, end, fps, models, ...). For several videos,
    use a Restyler, which keeps the models loaded.
    """
    return Restyler().restyle(input, output, prompt=prompt, progress=progress, **options)


__all__ = ["Restyler", "RestyleResult", "PoseResult", "restyle", "resolve_device", "InputPlan"]
