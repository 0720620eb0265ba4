"""Where and how the diffusion models run: kept on the device, or in CPU RAM and brought to the device only while
used (--offload); their building blocks torch.compile'd (--compile), run under raised recompile limits.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager

import torch

from v2v.models.load import DiffusionModels

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


def under_compiled_limits(fn):
    """``fn(models, ...)`` run under :func:`compiled_limits` (a plain function: a config patch held open across
    a generator's yields would outlive the call and could be closed from another thread)."""
    @functools.wraps(fn)
    def call(models, *args, **kwargs):
        with compiled_limits(models):
            return fn(models, *args, **kwargs)
    return call


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
