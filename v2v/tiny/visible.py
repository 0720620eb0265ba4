"""Weights that make every input of a tiny run show in its output (tests/test_inputs.py, docs/testing.md).

Plain random weights hide the control path: the pose maps, the prompt and a motion LoRA moved the frames of a
tiny run by a level or less, since the latents were 25 times the start noise and the conditioning's signal died
in the random layers. Each function here takes a freshly initialised tiny model and adjusts it in place; what
it draws comes from the builder's seeded generator in a fixed order, so the set stays deterministic.
"""

from __future__ import annotations

import re

import torch

# Gains, chosen so each input moves some output pixel by 100 levels or more (docs/testing.md gives each factor)
# while the equality tests against diffusers still hold at 1e-4 on the latents: float rounding that depends on a
# tensor's memory layout is amplified by the same paths, so stronger is not better without bound.
GAINS = dict(
    cross_attention=3.0,  # queries, keys and values of the UNet's cross-attention: sharper, larger text attention
    cross_attention_out=6.0,  # its values and output projection again: the prompt carries its weight
    control_embedding=2.0,  # the ControlNet's 7 conditioning convs, per sqrt(fan-in): a map's signal survives them
    control_embedding_out=0.7,  # its last conv: the map's features a few times the latents' in the ControlNet
    control_residuals=0.5,  # the zero convs, per sqrt(fan-in): the residuals added to the UNet's skips
    unet_out=0.15,  # the UNet's output conv on the network's features (beside its input, see below)
    motion=3.0,  # the motion modules' output projections: the module, and a LoRA's strength, show
    lora=0.5,  # the std of the tiny motion LoRA's factors (v2v.tiny.diffusion.tiny_motion_lora)
    vae_latents=20.0,  # the VAE encoder's output: latents of SD's scale (scaled latents of about unit std)
    vae_out=2.0,  # the VAE decoder's output: frames over most of 0..255, not around mid-grey
)


def _scale(model: torch.nn.Module, pattern: str, gain: float) -> None:
    """Multiply the parameters whose names match ``pattern`` by ``gain``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(pattern, name):
                p.mul_(gain)


def _redraw(model: torch.nn.Module, pattern: str, std: float) -> None:
    """Weights (not biases) whose names match ``pattern`` drawn again, normal with ``std`` / sqrt(fan-in)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(pattern, name) and name.endswith(".weight"):
                p.normal_(0.0, std / p[0].numel() ** 0.5)


def unet(model, through: float = 10.0, offset: float = 8.0) -> None:
    """Stronger cross-attention, and the noise prediction made the UNet's own input (standardised) plus what the
    rest of the network adds, as a trained denoiser's is at high noise. Sampling then cancels the start noise and
    leaves latents of about unit scale made by the network, as with real models.

    The input's channels go straight through: copied by ``conv_in``, carried by the first skip connection into
    the last ResNet (its 1x1 shortcut, ``through`` times; nothing else writes those channels on the way out),
    standardised per channel by ``conv_norm_out`` (one channel per group), lifted by ``offset`` to where SiLU is
    close to linear, and copied out by ``conv_out``. The ControlNet (built from this UNet) leaves them alone too:
    see :func:`controlnet`."""
    _scale(model, r"\.attn2\.(to_q|to_k|to_v)\.weight$", GAINS["cross_attention"])
    _scale(model, r"\.attn2\.(to_v|to_out\.0)\.weight$", GAINS["cross_attention_out"])
    _scale(model, r"^conv_out\.", GAINS["unet_out"])
    c = model.config.in_channels
    with torch.no_grad():
        model.conv_in.weight[:c] = 0.0
        model.conv_in.weight[:c, :, 1, 1] = torch.eye(c)
        model.conv_in.bias[:c] = 0.0
        last = model.up_blocks[-1].resnets[-1]
        skip = last.conv_shortcut.weight.shape[1] - model.conv_in.out_channels  # cat(hidden, skip): skip last
        last.conv_shortcut.weight[:c] = 0.0
        last.conv_shortcut.weight[:c, skip:skip + c, 0, 0] = through * torch.eye(c)
        last.conv_shortcut.bias[:c] = 0.0
        for layer in (last.conv2, model.up_blocks[-1].attentions[-1].proj_out):
            layer.weight[:c] = 0.0
            layer.bias[:c] = 0.0
        model.conv_norm_out.weight[:c] = 1.0
        model.conv_norm_out.bias[:c] = offset
        model.conv_out.weight[:, :c] = 0.0
        model.conv_out.weight[:c, :c, 1, 1] = torch.eye(c)
        model.conv_out.bias[:] = -offset


def controlnet(model, latent_channels: int = 4) -> None:
    """A conditioning embedding through which a map's signal survives (random convs with default init shrink it
    to its biases), larger zero convs, and nothing added to the skip that carries the UNet's input out."""
    _redraw(model, r"^controlnet_cond_embedding\.(conv_in|blocks)\.", GAINS["control_embedding"])
    _scale(model, r"^controlnet_cond_embedding\.(conv_in|blocks)\..*bias$", 0.1)
    _redraw(model, r"^controlnet_cond_embedding\.conv_out\.", GAINS["control_embedding_out"])
    _redraw(model, r"^controlnet_(down_blocks\.\d+|mid_block)\.", GAINS["control_residuals"])
    with torch.no_grad():
        model.controlnet_down_blocks[0].weight[:latent_channels] = 0.0
        model.controlnet_down_blocks[0].bias[:latent_channels] = 0.0


def motion_adapter(model, latent_channels: int = 4) -> None:
    """Larger motion-module outputs; the last module adds nothing to the channels the UNet's input goes out by."""
    _scale(model, r"\.proj_out\.", GAINS["motion"])
    with torch.no_grad():
        model.up_blocks[-1].motion_modules[-1].proj_out.weight[:latent_channels] = 0.0
        model.up_blocks[-1].motion_modules[-1].proj_out.bias[:latent_channels] = 0.0


def vae(model) -> None:
    """Latents of SD's scale from the encoder, frames over most of the range from the decoder."""
    _scale(model, r"^encoder\.conv_out\.", GAINS["vae_latents"])
    _scale(model, r"^decoder\.conv_out\.", GAINS["vae_out"])
