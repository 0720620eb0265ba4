"""The encode stage: finished latents VAE-decoded in chunks on the sampler's thread, then handed to the writers,
which convert and encode on threads of their own. The output files open once the pose stage has ended (the frame
count, each frame's time and the audio span are known then); they are temp files until the run succeeds.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path

from .. import vae
from .. import settings as run_settings
from ..errors import OutputError
from ..media import formats
from ..media.outputs import atomic_output
from ..media.timing import OutputTiming, output_timing
from ..media.writers import open_writer
from ..media.writers.wrappers import CompareWriter
from ..plan import RunPlan
from ..progress import StageBar
from ..streams import prefetch
from .pose import PoseStage, Poses, StreamEnded

log = logging.getLogger("v2v")


def queue_frames(budget: int, width: int, height: int, cap_bytes: int = 512 * 2**20) -> int:
    """The encoder's queue: room for a segment's frames (the frame budget), so it encodes the frames one pass
    finished while the next pass denoises; at most ``cap_bytes`` of RGB frames as written, at least 16. (With
    --full-size the scaler before it has a queue of as many frames at the processing size.)"""
    return int(max(16, min(budget, cap_bytes // max(3 * width * height, 1))))


def write_pose_video(path: Path, poses: list, timing: OutputTiming, plan, crf: int | None, fmt) -> None:
    """The pose-map video of ``poses`` (at the processing size) in ``fmt``, with the output's timing and audio."""
    from ..pose.render import render_pose

    o = plan.options
    with atomic_output(path) as tmp, open_writer(tmp, fmt, plan.width, plan.height, fps=timing.fps,
                                                 time_base=timing.time_base, end=timing.end, audio=timing.audio,
                                                 crf=crf, name="pose") as w:
        for pose, t in zip(poses, timing.times):
            w.write(render_pose(pose, plan.width, plan.height, o.pose_parts, o.pose_threshold), t)


def write_pose_json(path: Path, poses: list, info) -> None:
    """OpenPose JSON of ``poses`` in the source's pixels (its display size), written atomically."""
    from ..pose.keypoints import save_pose_json

    source = [p.scaled(info.display_width, info.display_height) for p in poses]
    with atomic_output(path) as tmp:
        save_pose_json(tmp, source)


def write_pose_pngs(folder: Path, poses: list, plan) -> None:
    """One lossless PNG pose map per frame, pose_000000.png..., at the processing size."""
    import cv2

    from ..pose.render import render_pose

    o = plan.options
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the PNG folder '{folder}' ({e.strerror or e}): choose another --png "
                          "folder") from None
    for i, p in enumerate(poses):
        img = render_pose(p, plan.width, plan.height, o.pose_parts, o.pose_threshold)
        if not cv2.imwrite(str(folder / f"pose_{i:06d}.png"), img[:, :, ::-1]):
            raise OutputError(f"cannot write the PNG maps in '{folder}': check the folder and the free space")


class OutputFiles:
    """The run's files: the output, the compare video and the pose-map video (temp files, each renamed onto its
    path when ``stack`` closes without an error, deleted otherwise), and the settings record embedded in them."""

    def __init__(self, plan: RunPlan, stack: ExitStack, progress=None, show: bool = False):
        self.plan, self.stack, self.progress, self.show = plan, stack, progress, show
        self.writers: list = []  # what each frame is written to: the output's writer first
        self.timing: OutputTiming | None = None
        self.bar: StageBar | None = None
        self.record: dict = {}  # the settings record
        self.opened_at: float | None = None
        self._pose_tmp: Path | None = None

    @property
    def output_writer(self):
        return self.writers[0]

    def open(self, poses: Poses) -> None:
        """Open every output for ``poses`` (the pose stage's result). The closing order is the reverse: the
        writers close, then the temp files take their names (the output last)."""
        plan, o, stack = self.plan, self.plan.options, self.stack
        self.timing = timing = output_timing(plan.info, poses.span, poses.times, o.fps)
        self.opened_at = time.perf_counter()
        self.bar = StageBar("encode", len(poses.poses), self.progress, self.show)
        stack.callback(self.bar.close)
        self.record = run_settings.build_settings(o, plan.models, input_path=plan.input, output_path=plan.output,
                                                  device=plan.device, dtype=plan.dtype)
        meta = run_settings.metadata(self.record)  # embedded in the output; also written beside it
        tmp = stack.enter_context(atomic_output(plan.output))
        if plan.pose_video is not None:  # written after generation, renamed only once the writers have closed
            self._pose_tmp = stack.enter_context(atomic_output(plan.pose_video))  # (their errors may come late)
        writers = []
        if plan.compare is not None:
            ctmp = stack.enter_context(atomic_output(plan.compare))
            writers.append(stack.enter_context(self._compare_writer(ctmp, poses, meta)))
        # threaded: colour conversion and encoding run beside the sampler and the VAE decode, with room for a
        # segment's frames, so that the encoder works while the next segment denoises
        main = stack.enter_context(open_writer(
            tmp, plan.format, plan.width, plan.height, fps=timing.fps, time_base=timing.time_base, end=timing.end,
            audio=timing.audio, crf=o.crf, metadata=meta, size=plan.out_size, ping_pong=o.ping_pong,
            gif_loop=o.gif_loop, name=plan.input.stem, threaded=True,
            queue_frames=queue_frames(o.frame_budget or 16, *plan.out_size)))
        self.writers = [main, *writers]

    def _compare_writer(self, path: Path, poses: Poses, metadata: dict):
        """source | pose map | result (H.264, 3x the width, the output's timing and audio). The source is decoded
        again with the same span options (the pose stage kept no frames), running ahead on a thread."""
        from ..pose.render import render_pose

        plan, o, timing = self.plan, self.plan.options, self.timing
        w, h = plan.width, plan.height
        h264 = formats.FORMATS["h264"]
        sources = prefetch(plan.decoder(), depth=4)
        writer = open_writer(path, h264, 3 * w, h, fps=timing.fps, time_base=timing.time_base, end=timing.end,
                             audio=timing.audio, crf=formats.side_crf(h264, plan.format, o.crf), metadata=metadata,
                             threaded=True)  # beside the sampler
        return CompareWriter(writer, sources,
                             lambda i: render_pose(poses.poses[i], w, h, o.pose_parts, o.pose_threshold),
                             poses.times[0], threaded=True,  # composed beside the sampler, like the encoding
                             queue_frames=queue_frames(o.frame_budget or 16, w, h))

    def write_pose_video(self, poses: Poses) -> None:
        """--keep-pose's video, once generation is done (a failed run writes none), before the renames."""
        if self._pose_tmp is None:
            return
        plan = self.plan
        write_pose_video(self._pose_tmp, poses.poses, self.timing, plan,
                         formats.side_crf(plan.pose_format, plan.format, plan.options.crf), plan.pose_format)


class EncodeStage:
    """Step 7, as the sampler's ``on_final``: each run of finished latents is VAE-decoded in chunks (on the
    sampler's thread, so the device never holds the decoder's activations beside the UNet's) and written. The
    files open once the pose stage has ended; until then finished runs wait as latents (views of the sampler's,
    no copy), so the sampler never waits for the pose stage here. ``flush()`` after generation opens the files
    at the latest and writes what waits."""

    def __init__(self, files: OutputFiles, pose: PoseStage, models):
        self.files, self.pose, self.models = files, pose, models
        self.frames = 0  # the frame count the sampler plans for (set before each generation, with reset())
        self.pending: list = []  # finished latents not decoded yet
        self.handed = 0  # frames handed over by the sampler
        self.written = 0
        self.vae: dict = {"seconds": 0.0}  # the VAE decode's time (the sampler's stats)

    @property
    def opened(self) -> bool:
        return bool(self.files.writers)

    def reset(self, frames: int) -> None:
        """Before a generation of ``frames`` frames (again, after a wrong count: nothing was opened then)."""
        if self.opened:
            raise RuntimeError("the outputs are already open")
        self.frames, self.pending, self.handed = frames, [], 0

    def __call__(self, start: int, latents) -> None:
        if start != self.handed:
            raise RuntimeError(f"frames {start}.. handed on after {self.handed} frames")
        self.pending.append(latents)
        self.handed += latents.shape[0]
        if self.opened or self.pose.ended():
            self.flush()

    def flush(self) -> None:
        if not self.opened:
            poses = self.pose.result()
            if len(poses.poses) != self.frames:
                raise StreamEnded  # the header's count was wrong: generated again (GenerateStage.run)
            self.files.open(poses)
        if self.pending:  # runs that waited for the pose stage, decoded together (full chunks of 8)
            import torch

            waiting = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending = []
            times = self.files.timing.times
            for img in vae.decode_latents(self.models, waiting, stats=self.vae):
                t = times[self.written]
                for w in self.files.writers:
                    w.write(img, t)
                self.written += 1
                self.files.bar.update()
