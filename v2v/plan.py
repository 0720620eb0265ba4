"""The plan of a run, worked out in one place before any work starts: the input and its kept frames, the
processing and output sizes, the output paths and formats, the model set, the device and dtype. The later steps
take it as a value (v2v/pipeline.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .device import concrete_pose_runtime, resolve_device, resolve_dtype
from .errors import InvalidOptions, OutputError
from .media import formats, timing
from .media.decode import Decoder
from .media.formats import OutputFormat
from .media.outputs import check_output_path, default_output
from .media.probe import VideoInfo
from .models.modelset import ModelSet
from .options import RestyleOptions
from .settings import check_sidecar, sidecar_path

log = logging.getLogger("v2v")


@dataclass(frozen=True)
class InputPlan:
    """What a run reads: the input, the frames it keeps and at what size, the models and the device."""

    options: RestyleOptions  # validated; DWPose's runtime made concrete for the device
    input: Path
    info: VideoInfo  # the probed input
    width: int  # the processing size (multiples of 8, the source's aspect)
    height: int
    models: ModelSet
    device: str  # concrete: "cpu", "cuda", "cuda:1"...

    def decoder(self) -> Decoder:
        """A decoder of the kept frames (span, every n-th, frame cap, frame rate) at the processing size: the pose
        stage, --strength and --compare each decode the same frames."""
        o = self.options
        return Decoder(self.info, self.width, self.height, start=o.start, end=o.end, every_nth=o.every_nth,
                       max_frames=o.max_frames, fps=o.fps)

    def with_options(self, **changes) -> InputPlan:
        """The same plan with options changed (the frame budget, once the models are loaded)."""
        return dataclasses.replace(self, options=self.options.replace(**changes))


@dataclass(frozen=True)
class RunPlan(InputPlan):
    """A restyle run: what it reads (InputPlan) and what it writes."""

    dtype: object = None  # torch dtype of the diffusion models
    output: Path = Path()  # absolute; its folder exists and can be written
    format: OutputFormat = formats.FORMATS["h264"]
    out_size: tuple[int, int] = (0, 0)  # the written frames' size (the source's display size with --full-size)
    pose_video: Path | None = None  # --keep-pose
    pose_format: OutputFormat | None = None
    compare: Path | None = None  # --compare: OUTPUT.compare.mp4
    settings_file: Path = Path()  # the run's record beside the output (NAME.restyled.json)


def check_paths(**paths) -> None:
    """The API's path arguments are str or os.PathLike (None: the default, except for the input)."""
    for name, value in paths.items():
        if (value is None and name != "input") or (isinstance(value, (str, os.PathLike)) and isinstance(
                os.fspath(value), str) and os.fspath(value)):
            continue
        raise InvalidOptions(f"{name} must be a path (str or pathlib.Path), got {value!r}")


def plan_input(o: RestyleOptions, info: VideoInfo) -> InputPlan:
    """The processing size of the probed input ``info``, the model set and the device."""
    in_path = info.path
    width, height = timing.processing_size(info.display_width, info.display_height, o.short_side, o.width, o.height)
    log.info("input %s: %dx%d, %.3f fps, %s audio; processing at %dx%d", in_path.name, info.display_width,
             info.display_height, float(info.fps), "with" if info.audio else "no", width, height)
    device = resolve_device(o.device)
    models = ModelSet.for_options(o)
    o = concrete_pose_runtime(o, device, models.pose_model)
    return InputPlan(options=o, input=in_path, info=info, width=width, height=height, models=models, device=device)


def plan_restyle(o: RestyleOptions, info: VideoInfo, output: str | os.PathLike | None) -> RunPlan:
    """The whole plan of a restyle of the probed input ``info``: the input's, then the outputs (their formats from
    the extension or --format; a folder is a PNG sequence), each checked before any work."""
    base = plan_input(o, info)
    in_path, info = base.input, base.info
    target = output if output is not None else default_output(in_path, o.format)
    fmt = formats.output_format(target, o.format)  # from the path as given: "frames/" names a folder
    out_path = check_output_path(in_path, target, o.format)
    problem = formats.crf_problem(fmt, o.crf)
    if problem:
        raise InvalidOptions(problem)
    if o.gif_loop and fmt.name != "gif":
        raise InvalidOptions(f"--gif-loop applies to GIF output only, and the output is {fmt.label}: drop it")
    pose_path = check_output_path(in_path, o.keep_pose, flag="--keep-pose") if o.keep_pose else None
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
    out_size = (base.width, base.height)
    if o.full_size:  # the source's display size (rotation and SAR applied), even where the codec needs it
        out_size = formats.even_size(info.display_width, info.display_height, fmt)
    settings_file = sidecar_path(out_path)
    check_sidecar(settings_file, [in_path, o.pose_json, pose_path, compare_path])
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(InputPlan)}
    return RunPlan(**fields, dtype=resolve_dtype(o.dtype, base.device), output=out_path, format=fmt,
                   out_size=out_size, pose_video=pose_path, pose_format=pose_fmt, compare=compare_path,
                   settings_file=settings_file)
