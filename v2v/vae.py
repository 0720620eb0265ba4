"""The VAE: finished latents decoded to RGB frames in chunks (by TAESD with --fast-decode), and source frames
encoded to latents (--strength below 1).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from v2v.errors import InvalidOptions
from v2v.models.load import DiffusionModels
from v2v.models.runtime import on_device, under_compiled_limits


@under_compiled_limits
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
    (the encoder) works. Chunk 8: 16 decodes no faster and needs more memory (BENCHMARKS.md).
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


@under_compiled_limits
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
