"""The pose stage: the kept frames decoded (streamed, never all held), their keypoints (from --pose-json, the
keypoint cache, or the detector, loaded only then), the parts kept and smoothed frame by frame.

In a restyle it runs on its own thread (``v2v-pose``) and pushes each frame's final pose into a ``PoseStream`` as
soon as it is known, so the sampler can start on the first frames while later ones are decoded and posed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import InvalidOptions
from ..plan import InputPlan
from ..progress import StageBar, expected_frames
from ..streams import Background, default_workers, parallel_map, prefetch

log = logging.getLogger("v2v")

POSE_BATCH = 8  # frames per pose-model call


@dataclass
class Poses:
    """The pose stage's result: one final pose per kept frame, at the processing size."""

    poses: list  # FramePose per kept frame (parts kept, smoothed)
    times: list[Fraction]  # each kept frame's source time
    span: tuple[Fraction, Fraction]  # [first kept time, end of the kept span): the audio cut
    empty: int  # frames whose pose map is empty (nobody found, or no point above the threshold)
    decode_seconds: float  # decoding and converting source frames, within the stage's time


class StreamEnded(Exception):
    """The frame count the sampler planned with proved wrong: the pose stage ended before the frame it asked for,
    or made more frames than planned."""


class Cancelled(Exception):
    """The run failed elsewhere: the pose thread stops."""


class PoseStream:
    """Final poses, in frame order, as the pose stage makes them on its thread, for a sampler that starts before
    the stage ends: ``stream[i]`` waits for frame i. The stage's error is raised there too; a stage that ended
    before frame i raises StreamEnded; ``cancel()`` makes the stage stop at its next frame."""

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
                raise Cancelled()
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
            raise Cancelled()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def raise_if_longer_than(self, n: int) -> None:
        """StreamEnded once the stage has made more than ``n`` frames (the header promised too few)."""
        if len(self._poses) > n:
            raise StreamEnded(f"the pose stage passed {n} frames")

    def __getitem__(self, i: int):
        with self._cond:
            while len(self._poses) <= i and not self._ended:
                self._cond.wait(0.1)
            if i < len(self._poses):
                return self._poses[i]
            if self._error is not None:
                raise self._error
            raise StreamEnded(f"the pose stage ended at {len(self._poses)} frames; frame {i} was asked for")


class CancellableDecoder:
    """A decoder whose iteration stops (``check()`` raises) once the run is cancelled."""

    def __init__(self, dec, check):
        self._dec, self._check = dec, check

    def __getattr__(self, name):
        return getattr(self._dec, name)

    def __iter__(self):
        for frame in self._dec:
            self._check()
            yield frame


def builds_torch_detector(o) -> bool:
    """Whether ``o``'s pose detector is built from torch modules (OpenPose, DWPose on torch)."""
    return o.pose_json is None and (o.pose == "openpose" or o.pose_runtime == "torch")


def cache_key(plan: InputPlan) -> str:
    """The keypoint cache's key for ``plan``: the input's content, the detector and its files, the frames kept."""
    from ..pose import cache

    o = plan.options
    files = plan.models.pose_files(o.pose, o.pose_runtime)
    settings = {"size": [plan.width, plan.height], "start": o.start, "end": o.end, "every_nth": o.every_nth,
                "max_frames": o.max_frames, "fps": str(o.fps) if o.fps is not None else None,
                "parts": list(o.pose_parts) if o.pose == "openpose" else None}
    return cache.cache_key(plan.input, o.pose, files, settings)


class PoseStage:
    """Keypoints per kept frame of ``plan``. ``detector(check)`` gives the pose detector (built, or kept loaded,
    by the Restyler; ``check()`` raises once the run is cancelled). ``run()`` does the work in the calling thread
    (`v2v pose`); ``start()`` runs it on the ``v2v-pose`` thread, feeding ``stream`` (a restyle)."""

    def __init__(self, plan: InputPlan, detector: Callable, progress=None, show: bool = False):
        self.plan, self.detector, self.progress, self.show = plan, detector, progress, show
        self.stream = PoseStream()
        # set once the stage builds no more torch modules: the diffusion models may load then (Restyler.detector)
        self.detector_ready = threading.Event()
        self.started_at: float | None = None
        self._thread: Background | None = None

    # ---------------------------------------------------------------- on its own thread (restyle)
    def start(self) -> None:
        self.started_at = time.perf_counter()

        def stage():
            try:
                return self.stream.run(lambda: self.run(sink=self.stream.push, check=self.stream.check))
            finally:
                self.detector_ready.set()  # the model loader never waits for a stage that has ended

        self._thread = Background(stage, name="v2v-pose")

    def ended(self) -> bool:
        """Whether the stage has ended (well or not), without waiting."""
        return self._thread.wait(0)

    def result(self) -> Poses:
        """The stage's result, waiting for it; its error, raised as itself."""
        return self._thread.result()

    def seconds(self) -> float:
        """How long the stage ran (so far)."""
        return (self.stream.finished_at or time.perf_counter()) - self.started_at

    def cancel(self) -> None:
        """Stop the thread at its next frame, and wait (a while) until it has: watch mode's next video must not
        meet it."""
        self.stream.cancel()
        self.stream.wait_ended(30)

    # ---------------------------------------------------------------- the work
    def run(self, sink=None, check=None) -> Poses:
        """The frames are always decoded (their timestamps are the truth); the keypoints come from --pose-json,
        the cache, or the detector, in that order. Parts are kept and smoothing applied frame by frame as the
        poses come (smoothing looks only at earlier frames); ``sink(pose)`` gets each final pose in order."""
        from ..pose import cache
        from ..pose.keypoints import has_visible_person, keep_parts
        from ..pose.smooth import PoseSmoother

        o = self.plan.options
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
            dec = self.plan.decoder()
            return CancellableDecoder(dec, check) if check is not None else dec

        if not builds_torch_detector(o):
            self.detector_ready.set()
        if o.pose_json is not None:
            dec = decoder()
            poses, times = self._from_json(dec)
        else:
            key = cache_key(self.plan) if o.pose_cache else None
            poses = cache.load(key, self.plan.width, self.plan.height) if key else None
            if poses is not None:
                self.detector_ready.set()  # (a mismatching entry means detecting after all: under the load lock)
                dec = decoder()
                times = self._times(dec, len(poses))
                if len(times) != len(poses):
                    log.warning("pose cache entry has %d frames, the video %d: detecting again",
                                len(poses), len(times))
                    poses = None
            if poses is None:
                dec = decoder()
                detector = self.detector(check)
                self.detector_ready.set()
                poses, times = self._detect(dec, detector, on_pose=finalise)
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
        return Poses(final, times, dec.span, empty, dec.busy)

    def _bar(self, total: int) -> StageBar:
        return StageBar("pose", total, self.progress, self.show)

    def _times(self, decoder, total: int) -> list[Fraction]:
        """The kept frames' times (keypoints from elsewhere: the decode gives the timing)."""
        bar = self._bar(total)
        times = []
        for frame in decoder:
            times.append(frame.time)
            bar.update()
        bar.finish()
        bar.close()
        return times

    def _from_json(self, decoder):
        """Keypoints from --pose-json (source pixels) scaled to the processing size; one per kept frame."""
        from ..pose.keypoints import load_pose_json

        o, info = self.plan.options, self.plan.info
        given = load_pose_json(Path(o.pose_json).expanduser(), info.display_width, info.display_height)
        times = self._times(decoder, len(given))
        if len(given) != len(times):
            raise InvalidOptions(
                f"--pose-json '{Path(o.pose_json).name}' has {len(given)} frames but the video has {len(times)} "
                f"kept frames: use a JSON made from this clip with the same --start/--end/--max-frames/"
                f"--every-nth/--fps")
        return [p.scaled(self.plan.width, self.plan.height) for p in given], times

    def _detect(self, decoder, detector, on_pose=None):
        """Keypoints and times of the kept frames: batches of POSE_BATCH frames detected on several threads
        (a detector that can be called from several at once, as DWPose's onnxruntime sessions can; results in
        frame order, the same as one thread's) while decoding runs ahead on another. ``on_pose(pose, time)``
        gets each frame's detection in order as its batch completes."""
        bar = self._bar(expected_frames(decoder))
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
            bar.update(len(batch_times))
        bar.finish()
        bar.close()
        return poses, times
