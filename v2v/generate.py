"""The sampler: AnimateDiff (motion UNet) + ControlNet over overlapping windows, fused every denoising step.

Written against the components rather than a diffusers pipeline so that the whole video's latents stay on the
CPU and the device only ever holds one window. With a single window (``num_frames <= context``) the result equals
diffusers' ``AnimateDiffControlNetPipeline`` run on the same components, prompt, seed and control frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .errors import InvalidOptions
from .models import DiffusionModels
from .windows import plan_windows, fusion_weights

log = logging.getLogger("v2v")

NOISE_KINDS = ("freenoise", "random")


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


@torch.no_grad()
def generate(models: DiffusionModels, *, prompt: str, negative_prompt: str = "", num_frames: int, height: int,
             width: int, control: Callable[[list[int]], torch.Tensor], steps: int = 4, guidance: float = 1.0,
             seed: int = 0, context: int = 16, overlap: int = 4, pose_strength: float = 1.0,
             fusion: str = "pyramid", noise: str = "freenoise", window_batch: int = 1,
             progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Denoise a whole video's latents; returns (num_frames, 4, height/8, width/8) float32 on the CPU.

    ``window_batch``: how many windows go through the ControlNet and the motion UNet in one call (windows of
    equal length stack along the batch; the result equals one at a time within float rounding; activation
    memory grows with it). Default 1: on an H200 at 512x512 one 16-frame window already fills the GPU
    (2 windows: 4 % faster, 4: 5 % slower, +1.3 GiB per window); it can pay at small sizes or on small windows.

    ``control(indices)`` gives the control maps of those frames, (n, 3, height, width) float in [0, 1]; it is
    called once per window per step (maps are rendered on demand, never held for the whole video).
    ``guidance`` 1 runs no negative pass; above 1 it runs classifier-free guidance with ``negative_prompt``.
    ``progress(done, total)`` is called after every window of every step.
    """
    sf = models.vae_scale_factor
    _check(num_frames, height, width, steps, guidance, context, overlap, sf)
    fusion_weights(1, fusion)  # validates the kind
    max_seq = models.unet.config.get("motion_max_seq_length") or 32
    if min(context, num_frames) > max_seq:
        raise InvalidOptions(f"context {context} is longer than the motion module's {max_seq} frames: "
                             f"use --context {min(16, max_seq)}")
    device, dtype = models.device, models.dtype
    cfg = guidance > 1.0

    embeds = encode_prompt(models, prompt)
    if cfg:
        embeds = torch.cat([encode_prompt(models, negative_prompt or ""), embeds])

    scheduler = type(models.scheduler).from_config(models.scheduler.config)  # fresh state for every run
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = scheduler.timesteps

    generator = torch.Generator("cpu").manual_seed(int(seed))
    channels = models.unet.config.in_channels
    latents = initial_noise(num_frames, height, width, generator, context=context, overlap=overlap, kind=noise,
                            channels=channels, scale_factor=sf)
    latents = latents * scheduler.init_noise_sigma

    windows = plan_windows(num_frames, context, overlap)
    weights = {len(w): torch.from_numpy(fusion_weights(len(w), fusion)) for w in windows}
    total, done = len(timesteps) * len(windows), 0
    wb = _check_window_batch(window_batch)
    log.debug("sampling %d frames %dx%d: %d windows x %d steps", num_frames, width, height, len(windows), steps)

    for t in timesteps:
        t_dev = t.to(device)
        fused = None
        if len(windows) > 1:
            acc = torch.zeros_like(latents)
            wsum = torch.zeros(num_frames, dtype=torch.float32)
        for group in _groups(windows, wb):
            preds = _predict_windows(models, scheduler, [latents[w.start:w.stop] for w in group], t, t_dev, embeds,
                                     control, [list(w) for w in group], height, width, cfg, guidance, pose_strength)
            for win, pred in zip(group, preds):
                if len(windows) == 1:
                    fused = pred
                else:
                    w = weights[len(win)]
                    acc[win.start:win.stop] += pred * w[:, None, None, None]
                    wsum[win.start:win.stop] += w
                done += 1
                if progress is not None:
                    progress(done, total)
        if fused is None:
            fused = acc / wsum[:, None, None, None]
        latents = scheduler.step(fused, t, latents, generator=generator).prev_sample
    return latents.float()


def _check_window_batch(window_batch) -> int:
    if isinstance(window_batch, bool) or not isinstance(window_batch, int) or window_batch < 1:
        raise InvalidOptions(f"window_batch must be a positive integer, not {window_batch!r}")
    return window_batch


def _groups(windows: list[range], size: int) -> Iterator[list[range]]:
    """Consecutive windows, ``size`` at a time, only windows of the same length together."""
    group: list[range] = []
    for w in windows:
        if group and (len(group) == size or len(w) != len(group[0])):
            yield group
            group = []
        group.append(w)
    if group:
        yield group


def _predict_windows(models: DiffusionModels, scheduler, window_latents: list[torch.Tensor], t, t_dev, embeds,
                     control, indices: list[list[int]], height: int, width: int, cfg: bool, guidance: float,
                     pose_strength: float) -> list[torch.Tensor]:
    """The (guided) noise predictions for windows of equal length, each (n, 4, h, w) float32 on the CPU.

    Batch layout (k windows, CFG halves outermost as in diffusers): [uncond w1..wk, text w1..wk], each a
    window's n frames; the ControlNet sees them flattened to (2k * n, ...), the motion UNet as (2k, 4, n, h, w).
    """
    device, dtype = models.device, models.dtype
    k, n = len(indices), len(indices[0])
    x = torch.cat([scheduler.scale_model_input(wl, t) for wl in window_latents]) if k > 1 else \
        scheduler.scale_model_input(window_latents[0], t)
    x = x.to(device=device, dtype=dtype)  # (k * n, 4, h, w)
    halves = 2 if cfg else 1
    x = torch.cat([x] * halves) if cfg else x  # (halves * k * n, 4, h, w): frames flattened into the batch
    emb = embeds.repeat_interleave(k * n, dim=0)  # (halves * k * n, 77, D)

    down = mid = None
    if pose_strength != 0:
        conds = []
        for idx in indices:
            c = control(idx)
            if tuple(c.shape) != (n, 3, height, width):
                raise ValueError(f"control({idx[0]}..{idx[-1]}) returned shape {tuple(c.shape)}, "
                                 f"expected {(n, 3, height, width)}")
            conds.append(c)
        cond = (torch.cat(conds) if k > 1 else conds[0]).to(device=device, dtype=dtype)
        if cfg:
            cond = torch.cat([cond] * 2)
        down, mid = models.controlnet(x, t_dev, encoder_hidden_states=emb, controlnet_cond=cond,
                                      conditioning_scale=float(pose_strength), guess_mode=False, return_dict=False)

    sample = x.reshape(halves * k, n, *x.shape[1:]).permute(0, 2, 1, 3, 4)  # (halves * k, 4, n, h, w)
    pred = models.unet(sample, t_dev, encoder_hidden_states=emb, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
    if cfg:
        uncond, text = pred.chunk(2)
        pred = uncond + guidance * (text - uncond)
    pred = pred.permute(0, 2, 1, 3, 4).float().cpu()  # (k, n, 4, h, w): one copy to the CPU for all k
    return list(pred.unbind(0))


@torch.no_grad()
def decode_to_float(models: DiffusionModels, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode a few frames' latents: (n, 3, H, W) float32 in [0, 1] on the CPU."""
    images = models.decode(latents)  # the VAE, or TAESD with --fast-decode (DiffusionModels.decode)
    return (images * 0.5 + 0.5).clamp(0, 1).float().cpu()


def decode_latents(models: DiffusionModels, latents: torch.Tensor, chunk: int = 8) -> Iterator[np.ndarray]:
    """Decode latents (F, 4, h, w) chunk by chunk; yields (H, W, 3) uint8 RGB frames in order as they come.

    Frames are made uint8 on the device (float32 maths, the same values as on the CPU) and copied to the CPU
    once per chunk; on CUDA the copy goes into pinned memory without blocking, and the next chunk's decode is
    queued on the GPU before this chunk's frames are handed over, so the GPU decodes while the caller
    (the encoder) works. Chunk 8: on an H200 at 512x512, 16 decodes no faster and needs 4 GiB more.
    """
    if chunk < 1:
        raise InvalidOptions(f"decode chunk must be at least 1, not {chunk}")
    pending = None
    for i in range(0, latents.shape[0], chunk):
        started = _decode_uint8(models, latents[i:i + chunk])  # queued on the GPU (CUDA), done (CPU)
        if pending is not None:
            yield from _frames(pending)
        pending = started
    if pending is not None:
        yield from _frames(pending)


@torch.no_grad()
def _decode_uint8(models: DiffusionModels, latents: torch.Tensor):
    """Start decoding a chunk: ((n, H, W, 3) uint8 CPU tensor, CUDA event to wait for or None)."""
    images = models.decode(latents)  # the VAE, or TAESD with --fast-decode (DiffusionModels.decode)
    images = (images * 0.5 + 0.5).clamp(0, 1).float()  # as decode_to_float
    frames = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    if frames.device.type != "cuda":
        return frames.contiguous().cpu(), None
    host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


def _frames(started) -> Iterator[np.ndarray]:
    host, done = started
    if done is not None:
        done.synchronize()
    yield from host.numpy()
