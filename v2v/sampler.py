"""The sampler: AnimateDiff (motion UNet) + ControlNet over overlapping windows, fused every denoising step.

Written against the components rather than a diffusers pipeline so that the whole video's latents stay on the
CPU and the device only ever holds one segment (a run of windows within the frame budget). Inside a segment the
windows are views inside the motion modules (v2v/motion_windows.py), so each frame's spatial work is done once per step;
segments meet on a few frames, fused. With a single window (``num_frames <= context``) the result equals
diffusers' ``AnimateDiffControlNetPipeline`` run on the same components, prompt, seed and control frames.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

import numpy as np
import torch

from .errors import InvalidOptions
from .models.load import DiffusionModels
from .motion_windows import motion_windows
from .option_values import strength_steps
from .options import NOISE_KINDS
from .windows import (auto_frame_budget, control_scales, fusion_weights, plan_video, plan_windows, prompt_schedule,
                      sampling_order, segment_weights, spatial_passes)

log = logging.getLogger("v2v")

# The building blocks torch.compile gets, each compiled on its own: the windowed motion modules and the sampler's
# Python around them stay eager, so a new segment plan never forces a recompile of the whole UNet.
RECOMPILE_LIMIT = 64  # compiled versions per block class: its shapes x the segment lengths of a plan (and tails)
_COMPILED_BLOCKS = ("ResnetBlock2D", "Transformer2DModel", "AnimateDiffTransformer3D", "Downsample2D", "Upsample2D")


@contextmanager
def compiled_limits(models: DiffusionModels):
    """dynamo's recompile limits raised (never lowered) while compiled ``models`` run, in the calling thread.

    Blocks of one class share their code, so each distinct shape (channels, resolution, segment length) is one
    more compiled version of it: the SD 1.5 UNet's ResNets alone need about 15 per segment length. dynamo's
    default limit of 8 versions per function leaves the rest uncompiled (seen on an H200). torch keeps config
    overrides per thread (a ContextVar), so the limits are set here, in the thread that runs the models, not
    where they were compiled (the loading thread): set there, they never reached the sampler."""
    if not getattr(models, "compiled", False):
        yield
        return
    import torch._dynamo.config as dynamo_config

    changes = {name: value for name, value in (("recompile_limit", RECOMPILE_LIMIT),
                                               ("accumulated_recompile_limit", 8 * RECOMPILE_LIMIT))
               if isinstance(getattr(dynamo_config, name, None), int) and getattr(dynamo_config, name) < value}
    if not changes:
        yield
        return
    with dynamo_config.patch(**changes):
        yield


def _under_compiled_limits(fn):
    """``fn(models, ...)`` run under :func:`compiled_limits` (a plain function: a config patch held open across
    a generator's yields would outlive the call and could be closed from another thread)."""
    @functools.wraps(fn)
    def call(models, *args, **kwargs):
        with compiled_limits(models):
            return fn(models, *args, **kwargs)
    return call


@torch.no_grad()
def encode_prompt(models: DiffusionModels, prompt: str) -> torch.Tensor:
    """CLIP hidden states (1, 77, D) for one prompt, as diffusers' ``encode_prompt`` (no clip skip)."""
    tok = models.tokenizer
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    full = tok(prompt, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > ids.shape[-1]:
        log.warning("the prompt is longer than CLIP's %d tokens: the end was cut off", tok.model_max_length)
    te = models.text_encoder
    mask = None
    if getattr(te.config, "use_attention_mask", False):
        mask = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").attention_mask.to(models.device)
    return te(ids.to(models.device), attention_mask=mask)[0].to(models.dtype)


def initial_noise(num_frames: int, height: int, width: int, generator: torch.Generator, *,
                  context: int = 16, overlap: int = 4, kind: str = "freenoise", channels: int = 4,
                  scale_factor: int = 8) -> torch.Tensor:
    """Unit Gaussian noise (F, C, H/8, W/8) float32 on the CPU.

    Drawn as diffusers' ``prepare_latents`` draws it, shape (1, C, F, h, w) from ``generator``, so a one-window run
    matches the pipeline. ``freenoise`` (the default) then makes frames past the first window shuffled copies of
    earlier noise, as diffusers' FreeNoise ``shuffle_context`` does; it changes nothing for a single window.
    """
    if kind not in NOISE_KINDS:
        raise InvalidOptions(f"noise must be one of {', '.join(NOISE_KINDS)}, not {kind!r}")
    shape = (1, channels, num_frames, height // scale_factor, width // scale_factor)
    noise = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32)
    if kind == "freenoise" and num_frames > context:
        stride = context - overlap if overlap < context else context
        for i in range(context, num_frames, stride):
            start = max(0, i - context)
            end = min(num_frames, start + stride)
            n = end - start
            if n == 0:
                break
            shuffled = torch.arange(start, end)[torch.randperm(n, generator=generator)]
            cur_end = min(num_frames, i + n)
            noise[:, :, i:cur_end] = noise[:, :, shuffled[: cur_end - i]]
    return noise[0].permute(1, 0, 2, 3).contiguous()


def _check(num_frames, height, width, steps, guidance, context, overlap, scale_factor):
    if num_frames < 1:
        raise InvalidOptions(f"num_frames must be at least 1, not {num_frames}")
    if height % scale_factor or width % scale_factor or height < scale_factor or width < scale_factor:
        raise InvalidOptions(f"width and height must be positive multiples of {scale_factor}, not {width}x{height}")
    if steps < 1:
        raise InvalidOptions(f"steps must be at least 1, not {steps}")
    if guidance < 1:
        raise InvalidOptions(f"guidance must be at least 1 (1 = no classifier-free guidance), not {guidance}")
    try:
        plan_windows(num_frames, context, overlap)
    except ValueError as e:
        raise InvalidOptions(str(e)) from e


def pick_frame_budget(models: DiffusionModels, height: int, width: int, cfg: bool, context: int) -> int:
    """The automatic frame budget: what fits in 70 % of the device's free memory, at most DEFAULT_FRAME_BUDGET."""
    device = torch.device(models.device)
    dtype_bytes = torch.finfo(models.dtype).bits // 8
    if device.type == "cuda":
        # memory torch holds in its cache (an earlier run's activations) is free to this run too, but only once
        # handed back: a block cached for another stream (the pose threads' on the GPU) is not the sampler's
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 8 * 2**30
    return auto_frame_budget(free, height, width, dtype_bytes=dtype_bytes, cfg=cfg, context=context)


@_under_compiled_limits
@torch.no_grad()
def generate(models: DiffusionModels, *, prompt: str, negative_prompt: str = "", num_frames: int, height: int,
             width: int, control: Callable[[list[int]], torch.Tensor], steps: int = 4, guidance: float = 1.0,
             seed: int = 0, context: int = 16, overlap: int = 4, pose_strength: float = 1.0,
             fusion: str = "pyramid", noise: str = "freenoise", frame_budget: int | None = None,
             loop: bool = False, prompt_travel: Sequence[tuple[int, str]] | None = None,
             control_start: float = 0.0, control_end: float = 1.0, init_latents: torch.Tensor | None = None,
             strength: float = 1.0, progress: Callable[[int, int], None] | None = None,
             stats: dict | None = None,
             on_final: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Denoise a whole video's latents; returns (num_frames, 4, height/8, width/8) float32 on the CPU.

    Windows of ``context`` frames overlapping by ``overlap`` (the last aligned to the end, or wrapping around
    with ``loop``) are the motion modules' views; consecutive windows are grouped into segments of at most
    ``frame_budget`` frames (None: what fits in free memory, at most 64) that go through the ControlNet and
    the UNet in one call. So each frame's spatial work is done about once per step (1.0 inside a segment; the
    frames where segments meet twice) and device memory is bounded by the budget, not the video's length. The
    motion modules fuse their windows inside a segment, and the predictions of neighbouring segments are fused
    where they meet, with the same ``fusion`` weights (pyramid or flat). With ``frame_budget == context`` this is
    classic whole-UNet context windows; a single window equals diffusers' ``AnimateDiffControlNetPipeline``.

    ``control(indices)`` gives the control maps of those frames, (n, 3, height, width), float in [0, 1] or uint8
    in [0, 255] (converted on the device: a quarter of the bytes to copy, no float maths on the CPU); it is
    called once per segment per step where the ControlNet acts (``control_start``..``control_end``, fractions of
    the steps run, as diffusers' ``control_guidance_start/end``), the next call's on a helper thread while the
    current pass runs. ``control.release(n)``, where it exists, is called once frames before n are done with (a
    cache of maps can let them go). ``guidance`` 1 runs no negative pass; above 1,
    classifier-free guidance with ``negative_prompt``. ``prompt_travel``: (frame, prompt) keyframes from frame 0
    whose CLIP embeddings are blended linearly between keyframes (``prompt`` is then unused).
    ``init_latents`` (num_frames, 4, h, w), the source frames' VAE latents (already scaled), with ``strength`` < 1:
    start from them noised to the matching timestep of the schedule and run the last ``steps * strength`` steps.
    ``progress(done, total)`` is called after every segment of every step. ``stats``, when given, receives the
    plan's figures (segments, windows, spatial passes, frame budget) and ``control_wait``: the seconds the sampler
    spent waiting for control maps (their frames' poses, or the drawing) instead of driving the device.
    ``on_final(start, latents)``, when given, receives the finished latents in frame order, in contiguous runs
    covering every frame once, float32 on the CPU, each run as soon as its frames have had every step: with the
    passes sweeping along the video (:func:`~v2v.windows.sampling_order`), the first frames are final after a few
    passes, so the caller can decode and encode them while the rest of the video denoises on the device. The
    same values as the returned latents, which are returned all the same.
    """
    sf = models.vae_scale_factor
    _check(num_frames, height, width, steps, guidance, context, overlap, sf)
    fusion_weights(1, fusion)  # validates the kind
    if noise not in NOISE_KINDS:
        raise InvalidOptions(f"noise must be one of {', '.join(NOISE_KINDS)}, not {noise!r}")
    max_seq = models.unet.config.get("motion_max_seq_length") or 32
    if min(context, num_frames) > max_seq:
        raise InvalidOptions(f"context {context} is longer than the motion module's {max_seq} frames: "
                             f"use --context {min(16, max_seq)}")
    device, dtype = models.device, models.dtype
    cfg = guidance > 1.0
    if (init_latents is None) != (strength == 1.0):
        raise InvalidOptions("strength < 1 needs init_latents (the source frames' latents), and init_latents need "
                             f"strength < 1: got strength {strength} with{'out' if init_latents is None else ''} "
                             "init_latents")
    run_steps = strength_steps(steps, strength) if init_latents is not None else steps
    try:
        scales = control_scales(run_steps, control_start, control_end)
    except ValueError as e:
        raise InvalidOptions(str(e)) from e
    shape = (num_frames, models.unet.config.in_channels, height // sf, width // sf)
    if init_latents is not None and tuple(init_latents.shape) != shape:
        raise InvalidOptions(f"init_latents have shape {tuple(init_latents.shape)}, expected {shape}")

    # 1. plan: motion windows, grouped into segments within the frame budget
    ctx = min(context, num_frames)
    ovl = min(overlap, ctx - 1)
    budget = frame_budget if frame_budget is not None else pick_frame_budget(models, height, width, cfg, ctx)
    try:
        windows, segments = plan_video(num_frames, context, overlap, budget, loop)
    except ValueError as e:
        raise InvalidOptions(f"--frame-budget: {e}") from e
    plans = [(seg, *segment_weights(seg, fusion)) for seg in segments]
    passes = spatial_passes(segments, num_frames)
    if stats is not None:
        stats.update(segments=len(segments), windows=len(windows), frame_budget=budget, spatial_passes=passes,
                     control_wait=0.0)
    log.debug("sampling %d frames %dx%d: %d windows in %d segments (budget %d, %.3f spatial passes) x %d steps",
              num_frames, width, height, len(windows), len(segments), budget, passes, run_steps)

    # 2. text: one embedding per prompt; with prompt travel, blended per frame
    with on_device(models, "text_encoder"):
        text = _TextEmbeddings(models, prompt, negative_prompt if cfg else None, prompt_travel, num_frames)

    # 3. schedule and initial latents (the noise is drawn for the whole video: the same whatever the budget)
    scheduler = type(models.scheduler).from_config(models.scheduler.config)  # fresh state for every run
    scheduler.set_timesteps(steps, device="cpu")
    first = steps - run_steps
    timesteps = scheduler.timesteps[first:]
    generator = torch.Generator("cpu").manual_seed(int(seed))
    latents = initial_noise(num_frames, height, width, generator, context=ctx, overlap=ovl, kind=noise,
                            channels=shape[1], scale_factor=sf)
    if init_latents is not None:  # strength < 1 (checked above)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        latents = scheduler.add_noise(init_latents.float().cpu(), latents, timesteps[:1])
    else:
        latents = latents * scheduler.init_noise_sigma

    # 4. denoise: each segment through ControlNet + UNet once per step; a frame's predictions from the segments
    #    holding it are fused, and the frame stepped, once all of them have run that step. With an elementwise
    #    scheduler the passes sweep along the video one step behind another (sampling_order): later segments
    #    wait for their frames' poses while earlier ones go on, and finished frames reach on_final early.
    wave = _steps_elementwise(scheduler)
    order = sampling_order(segments, len(timesteps), wavefront=wave)
    # the control maps of the next pass the ControlNet acts in are made on a helper thread while this one runs
    acting = [u for u in order if pose_strength * scales[u[0]] != 0]
    then = {a: plans[b[1]][0].frames for a, b in zip(acting, acting[1:])}
    fuse = _Fusion(scheduler, timesteps, latents, segments, generator, elementwise=wave)
    emitted = 0
    waited = 0.0  # seconds the sampler waited for control maps (stats["control_wait"])
    release = getattr(control, "release", None)  # control.release(n): frames before n will not be asked for again
    with motion_windows(models.unet) as plan, _Lookahead(control) as maps:
        for done, (step, k) in enumerate(order, 1):
            seg, seg_w, shares = plans[k]
            t = timesteps[step]
            plan.set(len(seg.frames), seg.windows, shares, device, dtype)
            cond = None
            if pose_strength * scales[step] != 0:
                asked = time.perf_counter()
                try:
                    cond = maps(seg.frames)
                finally:  # a wait that ends in an error (the pose stage ended early) was a wait all the same
                    waited += time.perf_counter() - asked
                    if stats is not None:
                        stats["control_wait"] = waited
                if (step, k) in then:
                    maps.ahead(then[step, k])
            pred = _predict_segment(models, fuse.scheduler_at(step, seg.frames), fuse.latents, t, seg.frames,
                                    t.to(device), text, cond, height, width, cfg, guidance,
                                    pose_strength * scales[step])
            fuse.add(step, seg.frames, pred, seg_w)
            if progress is not None:
                progress(done, len(order))
            if fuse.final > emitted:
                if release is not None:  # no pass holds these frames any more
                    release(fuse.final)
                if on_final is not None:
                    on_final(emitted, fuse.latents[emitted:fuse.final])
                emitted = fuse.final
    return fuse.latents


# Schedulers whose step is elementwise and draws no noise (Euler's at the default s_churn = 0, as the sampler
# calls it): stepping some frames gives exactly the values of stepping the whole video, so frames can be stepped
# as they are ready. Others are stepped a whole video at a time, step by step.
_ELEMENTWISE_STEPS = ("EulerDiscreteScheduler",)


def _steps_elementwise(scheduler) -> bool:
    return type(scheduler).__name__ in _ELEMENTWISE_STEPS


class _Fusion:
    """The video's latents (F, C, h, w) float32 on the CPU, each frame at its own step, and the predictions on
    their way: ``add`` weights a segment's prediction into the frames it holds; a frame whose every segment has
    run the step is fused (weighted sum / summed weights, as one division over the whole video would give) and
    stepped. Elementwise schedulers step those frames at once with a copy of the scheduler as it stands at that
    step (copies: stepping advances the scheduler's step counter); others wait for the whole video and step it
    with the scheduler itself. ``final``: the frames ``[0, final)`` have had every step."""

    def __init__(self, scheduler, timesteps, latents: torch.Tensor, segments, generator, elementwise: bool):
        self.scheduler, self.timesteps, self.generator = scheduler, timesteps, generator
        self.latents = latents.float()
        self.elementwise = elementwise
        self.single = len(segments) == 1  # one segment holds every frame: its prediction is the fused one
        n = latents.shape[0]
        self.holders = np.zeros(n, dtype=np.int64)
        for seg in segments:
            self.holders[list(seg.frames)] += 1
        self.level = np.zeros(n, dtype=np.int64)  # steps each frame has had
        self.left: dict[int, np.ndarray] = {}  # per step in flight: segments still to run it, per frame
        self.acc: dict[int, dict[int, torch.Tensor]] = {}  # per step: weighted sums of the frames in flight
        self.wsum: dict[int, dict[int, torch.Tensor]] = {}
        self.whole: dict[int, torch.Tensor] = {}  # per step (not elementwise): the fused video being filled
        self.templates = [copy.deepcopy(scheduler)] if elementwise else []  # the scheduler as at each step
        self.final = 0
        self._zero = torch.zeros(latents.shape[1:], dtype=torch.float32)
        self._wzero = torch.zeros((), dtype=torch.float32)

    def scheduler_at(self, step: int, frames):
        """The scheduler as it stands at ``step`` (for scale_model_input), after checking that every one of
        ``frames`` has had ``step`` steps (what the order promises)."""
        lv = self.level[list(frames)]
        if (lv != step).any():
            raise AssertionError(f"step {step} of frames {frames[0]}..{frames[-1]}, some at step {int(lv.min())}")
        return self.templates[step] if self.elementwise else self.scheduler

    def add(self, step: int, frames, pred: torch.Tensor, seg_w: np.ndarray) -> None:
        left = self.left.setdefault(step, self.holders.copy())
        if self.single:
            ready, fused = list(frames), pred
            left[ready] = 0
        else:
            w = torch.from_numpy(seg_w)
            part = pred * w[:, None, None, None]
            acc, wsum = self.acc.setdefault(step, {}), self.wsum.setdefault(step, {})
            ready = []
            for j, f in enumerate(frames):  # summed in the segments' order, as index_add_ over the whole video
                acc[f] = acc.get(f, self._zero) + part[j]
                wsum[f] = wsum.get(f, self._wzero) + w[j]
                left[f] -= 1
                if left[f] == 0:
                    ready.append(f)
            fused = torch.stack([acc.pop(f) / wsum.pop(f) for f in ready]) if ready else None
        if ready:
            self._step(step, ready, fused)

    def _step(self, step: int, ready: list[int], fused: torch.Tensor) -> None:
        t = self.timesteps[step]
        if not self.elementwise:
            whole = self.whole.setdefault(step, torch.empty_like(self.latents))
            whole[torch.tensor(ready)] = fused
            if self.left[step].any():
                return
            self.latents = self.scheduler.step(self.whole.pop(step), t, self.latents,
                                               generator=self.generator).prev_sample.float()
            self.level += 1
        else:
            idx = torch.tensor(ready)
            sched = copy.deepcopy(self.templates[step])
            self.latents[idx] = sched.step(fused, t, self.latents[idx], generator=self.generator).prev_sample.float()
            if len(self.templates) == step + 1:  # a copy that has stepped once stands at the next step
                self.templates.append(sched)
            self.level[ready] += 1
        if not self.left[step].any():
            del self.left[step]
        steps = len(self.timesteps)
        while self.final < len(self.level) and self.level[self.final] == steps:
            self.final += 1


class _TextEmbeddings:
    """CLIP embeddings per frame: one prompt, or keyframe prompts blended linearly (prompt travel)."""

    def __init__(self, models: DiffusionModels, prompt: str, negative: str | None,
                 travel: Sequence[tuple[int, str]] | None, num_frames: int):
        self.negative = encode_prompt(models, negative) if negative is not None else None
        if travel:
            try:
                prompts, self.lo, self.hi, blend = prompt_schedule(travel, num_frames)
            except ValueError as e:
                raise InvalidOptions(f"--prompt-at: {e}") from e
            self.keys = torch.cat([encode_prompt(models, p) for p in prompts])  # (P, 77, D)
            self.blend = torch.from_numpy(blend).to(device=self.keys.device, dtype=self.keys.dtype)
        else:
            self.keys = encode_prompt(models, prompt)
            self.lo = None

    def for_frames(self, frames: Sequence[int]) -> torch.Tensor:
        """(halves * n, 77, D): the negative embedding n times (with CFG), then each frame's own."""
        n = len(frames)
        if self.lo is None:
            pos = self.keys.expand(n, -1, -1)
        else:
            idx = list(frames)
            b = self.blend[idx][:, None, None]
            pos = self.keys[self.lo[idx]] * (1 - b) + self.keys[self.hi[idx]] * b
        if self.negative is None:
            return pos
        return torch.cat([self.negative.expand(n, -1, -1), pos])


class _Lookahead:
    """``control(frames)``, with the next call's maps made ahead on a helper thread (``ahead(frames)``) while the
    device runs the current pass: drawing, stacking and pinning them is then off the path between two passes'
    kernels, where the GPU would wait. Calls run in the order asked for, one at a time (the sampler asks for the
    next only once it holds the current one); an error comes back at the call for those frames. The helper is a
    daemon thread: one still waiting for a pose after a failed run never holds up the interpreter's exit."""

    def __init__(self, control):
        self.control = control
        self.pending: dict[tuple[int, ...], list[Future]] = {}

    def ahead(self, frames) -> None:
        key, fut = tuple(frames), Future()

        def run():
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(self.control(list(key)))
                except BaseException as e:  # noqa: BLE001 - handed to the call for these frames
                    fut.set_exception(e)

        self.pending.setdefault(key, []).append(fut)
        threading.Thread(target=run, name="v2v-control", daemon=True).start()

    def __call__(self, frames):
        queued = self.pending.get(tuple(frames))
        if queued:
            return queued.pop(0).result()
        return self.control(list(frames))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for queued in self.pending.values():  # nothing is left after the last pass; after an error, dropped
            for fut in queued:
                fut.cancel()
        self.pending.clear()
        return False


def _predict_segment(models: DiffusionModels, scheduler, latents: torch.Tensor, t, frames: tuple[int, ...], t_dev,
                     text: _TextEmbeddings, cond, height: int, width: int, cfg: bool, guidance: float,
                     pose_scale: float) -> torch.Tensor:
    """The (guided) noise prediction for one segment's frames, (n, 4, h, w) float32 on the CPU. ``cond``: their
    control maps (from ``control(frames)``), or None where the ControlNet does not act (``pose_scale`` 0).

    Batch layout (CFG halves outermost, as in diffusers): [uncond f1..fn, text f1..fn]; the ControlNet sees the
    frames flattened to (halves * n, ...), the motion UNet (halves, 4, n, h, w) with the motion plan set.
    """
    device, dtype = models.device, models.dtype
    n = len(frames)
    contiguous = list(frames) == list(range(frames[0], frames[0] + n))
    x = latents[frames[0]:frames[0] + n] if contiguous else latents[list(frames)]
    x = scheduler.scale_model_input(x, t)  # per segment: no scaled copy of the whole video
    x = x.to(device=device, dtype=dtype)
    halves = 2 if cfg else 1
    x = torch.cat([x] * halves) if cfg else x  # (halves * n, 4, h, w)
    emb = text.for_frames(frames)  # (halves * n, 77, D)

    down = mid = None
    if pose_scale != 0:
        if tuple(cond.shape) != (n, 3, height, width):
            raise ValueError(f"control({frames[0]}..{frames[-1]}) returned shape {tuple(cond.shape)}, "
                             f"expected {(n, 3, height, width)}")
        if cond.dtype == torch.uint8:  # maps sent as bytes (4x less to copy), made [0, 1] on the device
            # (n, 3, H, W), a view of (n, H, W, 3): copied as it lies (dense, so straight from pinned memory)
            cond = cond.to(device=device, non_blocking=True).float().div_(255.0).to(dtype)
        else:
            cond = cond.to(device=device, dtype=dtype)
        if cfg:
            cond = torch.cat([cond] * 2)
        down, mid = models.controlnet(x, t_dev, encoder_hidden_states=emb, controlnet_cond=cond,
                                      conditioning_scale=float(pose_scale), guess_mode=False, return_dict=False)

    sample = x.reshape(halves, n, *x.shape[1:]).permute(0, 2, 1, 3, 4)  # (halves, 4, n, h, w)
    pred = models.unet(sample, t_dev, encoder_hidden_states=emb, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
    if cfg:
        uncond, txt = pred.chunk(2)
        pred = uncond + guidance * (txt - uncond)
    return pred[0].permute(1, 0, 2, 3).float().cpu()


@_under_compiled_limits
@torch.no_grad()
def decode_to_float(models: DiffusionModels, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode a few frames' latents: (n, 3, H, W) float32 in [0, 1] on the CPU."""
    with on_device(models, *_decoding(models)):
        images = models.decode(latents)  # the VAE, or TAESD with --fast-decode (DiffusionModels.decode)
        return (images.float() * 0.5 + 0.5).clamp(0, 1).cpu()  # float32 maths, as on the CPU


def decode_latents(models: DiffusionModels, latents: torch.Tensor, chunk: int = 8,
                   stats: dict | None = None) -> Iterator[np.ndarray]:
    """Decode latents (F, 4, h, w) chunk by chunk; yields (H, W, 3) uint8 RGB frames in order as they come.

    Frames are made uint8 on the device (float32 maths, the same values as on the CPU) and copied to the CPU
    once per chunk; on CUDA the copy goes into pinned memory without blocking, and the next chunk's decode is
    queued on the GPU before this chunk's frames are handed over, so the GPU decodes while the caller
    (the encoder) works. Chunk 8: on an H200 at 512x512, 16 decodes no faster and needs 4 GiB more.
    ``stats["seconds"]``, when given, adds up the decoding time (the GPU's, timed by CUDA events; on the CPU
    the decode calls' wall time), which overlaps the caller's work.
    """
    if chunk < 1:
        raise InvalidOptions(f"decode chunk must be at least 1, not {chunk}")
    stats = {} if stats is None else stats
    stats.setdefault("seconds", 0.0)
    pending = None
    with on_device(models, *_decoding(models)):
        for i in range(0, latents.shape[0], chunk):
            started = _decode_uint8(models, latents[i:i + chunk], stats)  # queued on the GPU (CUDA), done (CPU)
            if pending is not None:
                yield from _frames(pending, stats)
            pending = started
        if pending is not None:
            yield from _frames(pending, stats)


@_under_compiled_limits
@torch.no_grad()
def _decode_uint8(models: DiffusionModels, latents: torch.Tensor, stats: dict):
    """Start decoding a chunk: ((n, H, W, 3) uint8 CPU tensor, CUDA events (start, done) or None)."""
    dev = torch.device(models.device)
    cuda = dev.type == "cuda"
    if cuda:  # events on the models' device's stream: a bare record() takes the current device's (cuda:0 for
        #       --device cuda:1), and the frames would be read before their copy from cuda:1 ends
        stream = torch.cuda.current_stream(dev)
        start = torch.cuda.Event(enable_timing=True)
        start.record(stream)
    else:
        t = time.perf_counter()
    images = models.decode(latents)  # the VAE, or TAESD with --fast-decode (DiffusionModels.decode)
    images = (images.float() * 0.5 + 0.5).clamp(0, 1)  # as decode_to_float (float32 maths)
    frames = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    if not cuda:
        frames = frames.contiguous().cpu()
        stats["seconds"] += time.perf_counter() - t
        return frames, None
    host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    done = torch.cuda.Event(enable_timing=True)
    done.record(stream)
    return host, (start, done)


def _frames(started, stats: dict) -> Iterator[np.ndarray]:
    host, events = started
    if events is not None:
        events[1].synchronize()
        stats["seconds"] += events[0].elapsed_time(events[1]) / 1000.0
    yield from host.numpy()


@torch.no_grad()
def encode_frames(models: DiffusionModels, frames: Iterable[np.ndarray], chunk: int = 8) -> torch.Tensor:
    """VAE-encode uint8 RGB frames (H, W, 3) into scaled latents (N, 4, H/8, W/8) float32 on the CPU.

    The posterior mean is used (not a sample), so the same frames always give the same latents.
    """
    out, batch = [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
        x = x.to(device=models.device, dtype=models.vae.dtype) / 127.5 - 1.0
        z = models.vae.encode(x).latent_dist.mean * models.vae.config.scaling_factor
        out.append(z.float().cpu())
        batch.clear()

    with on_device(models, "vae"):
        for f in frames:
            batch.append(np.ascontiguousarray(f))
            if len(batch) == chunk:
                flush()
        if batch:
            flush()
    if not out:
        raise InvalidOptions("no frames to encode")
    return torch.cat(out)


def _decoding(models: DiffusionModels) -> tuple[str, ...]:
    """What on_device must bring for decoding: the VAE, unless TAESD decodes (it stays on the device)."""
    return ("vae",) if getattr(models, "decoder", None) is None else ()


@contextmanager
def on_device(models: DiffusionModels, *names: str):
    """With ``models.offload``: move these components to the device for the duration, then back to CPU RAM."""
    if not getattr(models, "offload", False):
        yield
        return
    mods = [getattr(models, n) for n in names]
    for m in mods:
        m.to(models.device)
    try:
        yield
    finally:
        for m in mods:
            m.to("cpu")
        if torch.device(models.device).type == "cuda":
            torch.cuda.empty_cache()


def enable_offload(models: DiffusionModels) -> DiffusionModels:
    """Keep the text encoder and the VAE in CPU RAM, moved to the device only while they work (the UNet and
    ControlNet, used every step, stay on it). Saves their ~0.4 GB of fp16 weights during denoising."""
    models.text_encoder.to("cpu")
    models.vae.to("cpu")
    models.offload = True
    return models


def compile_models(models: DiffusionModels) -> int:
    """torch.compile the UNet's blocks, the ControlNet and the decoder in use (the VAE's, or TAESD's with
    --fast-decode) in place; returns how many modules.

    The first run pays the compilation (a minute or more); later segments and runs reuse it. Equal results
    within float rounding. The compiled models run under :func:`compiled_limits`."""
    n = 0
    for m in models.unet.modules():
        if type(m).__name__ in _COMPILED_BLOCKS:
            m.compile()
            n += 1
    models.controlnet.compile()
    (models.decoder if models.decoder is not None else models.vae).decoder.compile()  # what decodes (TAESD too)
    models.compiled = True
    return n + 2
