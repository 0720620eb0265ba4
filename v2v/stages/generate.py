"""The generation stage: the sampler (v2v/sampler.py) run over the video's poses, with the control maps drawn on
demand, streamed from the pose stage when the container's frame count can be trusted, and run again when that
count proves wrong. Each run of frames that has had every denoising step goes on to the encode stage.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import sampler, vae
from ..errors import InvalidOptions
from ..plan import RunPlan
from ..progress import StageBar, expected_frames
from ..streams import prefetch
from .pose import PoseStage, PoseStream, StreamEnded

log = logging.getLogger("v2v")

# Generation overlaps the pose stage only where it runs on another processor than pose detection's CPU work: on
# the CPU both stages use every core, and running them together is slower (BENCHMARKS.md).
OVERLAP_ON_CPU = False  # tests set it to exercise the streamed path without a GPU


def streamable_frames(plan: RunPlan) -> int:
    """The kept-frame count the container promises, when generation may start before the pose stage ends:
    0 when it may not (--strength < 1 needs every source latent first; an unknown count; a --prompt-at
    keyframe the estimate does not reach; a CPU run, see OVERLAP_ON_CPU)."""
    o = plan.options
    if o.strength < 1 or (str(plan.device).startswith("cpu") and not OVERLAP_ON_CPU):
        return 0
    n = expected_frames(plan.decoder())
    if n <= 0 or (o.prompt_at and max(k for k, _ in o.prompt_at) >= n):
        return 0
    return n


class ControlMaps:
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
            from ..pose.render import render_pose

            m = render_pose(self.poses[i], self.width, self.height, self.parts, self.threshold)
            self.renders += 1
            if len(self.maps) < self.keep:
                self.maps[i] = m
        return m

    def release(self, n: int) -> None:
        """The sampler is done with frames before ``n``: their maps go, so the cache holds the frames in flight,
        not the whole video. (Called on the sampler's thread while its helper may add maps: single dict
        operations, each atomic.)"""
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


class GenerateStage:
    """Step 6 of a restyle. ``seconds`` gets "generate" and "control_wait" (the sampler waiting for control
    maps: for the pose stage or the drawing; the device idles then)."""

    def __init__(self, plan: RunPlan, progress=None, show: bool = False, seconds: dict | None = None):
        self.plan, self.progress, self.show = plan, progress, show
        self.seconds = seconds if seconds is not None else {}

    def run(self, models, pose: PoseStage, encode) -> None:
        """Generate every frame, handing finished ones to ``encode`` (an EncodeStage): from the pose stream as it
        comes when the frame count is known up front; with --strength < 1 from the source frames' latents,
        after the pose stage; again, after the pose stage, when the header's count proved wrong."""
        started = time.perf_counter()
        expected = streamable_frames(self.plan)
        latents, failed = None, None
        if expected:
            try:
                encode.reset(expected)
                latents = self.sample(models, pose.stream, expected, on_final=encode)
            except StreamEnded:
                pass
            except InvalidOptions as e:  # maybe the header's count's fault (e.g. more frames than the model's
                failed = e               # context allows): believed once the true count is known
        poses = pose.result().poses
        if not expected:  # generation starts now: the wait for the pose stage is not its time
            started = time.perf_counter()
        if expected and len(poses) == expected and failed is not None:
            raise failed
        if expected and (latents is None or len(poses) != expected):
            log.info("the video has %d kept frames, not the %d its header gave: generating again",
                     len(poses), expected)
            latents = None
        if latents is None:
            init = self.source_latents(models) if self.plan.options.strength < 1 else None
            encode.reset(len(poses))
            self.sample(models, poses, len(poses), init, on_final=encode)
        self.seconds["generate"] = time.perf_counter() - started
        encode.flush()  # what waited for the pose stage's end, if anything

    def source_latents(self, models):
        """The kept source frames, decoded again and VAE-encoded (for --strength < 1)."""
        return vae.encode_frames(models, (f.image for f in prefetch(self.plan.decoder(), depth=16)))

    def sample(self, models, poses, n: int, init_latents=None, on_final=None):
        """The latents of ``n`` frames; ``poses[i]`` is read as the sampler reaches frame i (a PoseStream waits
        there for the pose stage). ``on_final``: v2v.sampler.generate's."""
        o, plan = self.plan.options, self.plan
        travel = list(o.prompt_at)
        if travel and travel[0][0] != 0:
            travel.insert(0, (0, o.prompt))  # -p holds until the first keyframe
        if travel and travel[-1][0] >= n:
            raise InvalidOptions(f"--prompt-at keyframe {travel[-1][0]} is past the last frame ({n - 1}): frames "
                                 "count from 0 among the kept frames")
        bar = StageBar("generate", o.steps, self.progress, self.show)
        control = ControlMaps(poses, plan.width, plan.height, o.pose_parts, o.pose_threshold,
                              pin=str(models.device).startswith("cuda"))

        def on_progress(done: int, total: int) -> None:
            bar.retotal(total)
            bar.update(done - bar.done)
            if isinstance(poses, PoseStream):
                poses.raise_if_longer_than(n)  # a plan for too few frames: stop now, not after the last step

        stats: dict = {}
        try:
            latents = sampler.generate(
                models, prompt=o.prompt, negative_prompt=o.negative_prompt, num_frames=n, height=plan.height,
                width=plan.width, control=control, steps=o.steps, guidance=o.guidance, seed=o.seed,
                context=o.context, overlap=o.overlap, pose_strength=o.pose_strength, fusion=o.fusion, noise=o.noise,
                frame_budget=o.frame_budget, loop=o.loop, prompt_travel=travel or None,
                control_start=o.control_start, control_end=o.control_end, init_latents=init_latents,
                strength=o.strength, progress=on_progress, stats=stats, on_final=on_final)
        finally:
            bar.close()
            # a run generated again (wrong header count) waited in both
            self.seconds["control_wait"] = self.seconds.get("control_wait", 0.0) + stats.get("control_wait", 0.0)
        log.info("generated %d frames: %d windows in %d segments of at most %d frames (%.2f spatial passes per "
                 "frame)", n, stats.get("windows", 0), stats.get("segments", 0), stats.get("frame_budget", 0),
                 stats.get("spatial_passes", 0.0))
        return latents
