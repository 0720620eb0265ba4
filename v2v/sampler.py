"""The sampler: AnimateDiff (motion UNet) + ControlNet over overlapping windows, fused every denoising step.

Written against the components rather than a diffusers pipeline so that the whole video's latents stay on the
CPU and the device only ever holds one segment (a run of windows within the frame budget). Inside a segment the
windows are views inside the motion modules (v2v/motion_windows.py), so each frame's spatial work is done once per
step; segments meet on a few frames, fused. With a single window (``num_frames <= context``) the result equals
diffusers' ``AnimateDiffControlNetPipeline`` run on the same components, prompt, seed and control frames.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np
import torch

from .errors import InvalidOptions
from .models.load import DiffusionModels
from .models.runtime import on_device, under_compiled_limits
from .motion_windows import motion_windows
from .option_values import strength_steps
from .options import NOISE_KINDS
from .windows import (auto_frame_budget, control_scales, fusion_weights, plan_video, plan_windows, prompt_schedule,
                      sampling_order, segment_weights, spatial_passes)

log = logging.getLogger("v2v")


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


def _checked(models: DiffusionModels, num_frames, height, width, steps, guidance, context, overlap, fusion, noise,
             init_latents, strength, control_start, control_end):
    """generate()'s arguments checked: (the steps it runs, the ControlNet's scale at each, the latents' shape)."""
    sf = models.vae_scale_factor
    _check(num_frames, height, width, steps, guidance, context, overlap, sf)
    fusion_weights(1, fusion)  # validates the kind
    if noise not in NOISE_KINDS:
        raise InvalidOptions(f"noise must be one of {', '.join(NOISE_KINDS)}, not {noise!r}")
    max_seq = models.unet.config.get("motion_max_seq_length") or 32
    if min(context, num_frames) > max_seq:
        raise InvalidOptions(f"context {context} is longer than the motion module's {max_seq} frames: "
                             f"use --context {min(16, max_seq)}")
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
    return run_steps, scales, shape


def _start_from(scheduler, noise: torch.Tensor, init_latents: torch.Tensor | None, first: int, timesteps):
    """The latents the denoising starts from: ``noise`` scaled for the schedule, or (strength < 1) the source's
    ``init_latents`` noised to the schedule's step ``first``."""
    if init_latents is None:
        return noise * scheduler.init_noise_sigma
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    return scheduler.add_noise(init_latents.float().cpu(), noise, timesteps[:1])


@under_compiled_limits
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
    run_steps, scales, shape = _checked(models, num_frames, height, width, steps, guidance, context, overlap,
                                        fusion, noise, init_latents, strength, control_start, control_end)
    device, dtype = models.device, models.dtype
    cfg = guidance > 1.0

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
    timesteps = scheduler.timesteps[steps - run_steps:]
    generator = torch.Generator("cpu").manual_seed(int(seed))
    latents = initial_noise(num_frames, height, width, generator, context=ctx, overlap=ovl, kind=noise,
                            channels=shape[1], scale_factor=sf)
    latents = _start_from(scheduler, latents, init_latents, steps - run_steps, timesteps)

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


