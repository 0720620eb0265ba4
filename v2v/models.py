"""Loading the diffusion models: SD1.5 base (diffusers folder or hub repo), AnimateDiff motion module
(AnimateDiff-Lightning file, diffusers ``MotionAdapter`` state dict or the original/ComfyUI layout), ControlNet.

The motion adapter's configuration is inferred from the base UNet's config and the tensors in the file, so the
same code loads the real 1.5 Lightning files and the tiny test models.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import hub
from .errors import InvalidOptions, ModelLoadError, ModelNotFound
from .options import DEFAULT_MOTION, LIGHTNING_STEPS

log = logging.getLogger("v2v")

LIGHTNING_REPO = DEFAULT_MOTION
MOTION_NUM_HEADS = 8  # every AnimateDiff motion module uses 8 heads; it cannot be read from tensor shapes
MOTION_NORM_GROUPS = 32
DEFAULT_MAX_SEQ = 32

_BASE_PATTERNS = [
    "model_index.json", "scheduler/*.json", "tokenizer/*",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model-*.safetensors",
    "text_encoder/*.safetensors.index.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model-*.safetensors",
    "unet/*.safetensors.index.json",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]
def _fast_load() -> dict:
    """from_pretrained kwargs: skip random init where accelerate allows it, and no warning where it is missing."""
    import importlib.util

    return {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}


_SINGLE_MODEL_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors",
                          "diffusion_pytorch_model-*.safetensors", "*.safetensors.index.json"]


@dataclass
class DiffusionModels:
    tokenizer: Any
    text_encoder: Any  # transformers CLIPTextModel
    unet: Any  # diffusers UNetMotionModel
    controlnet: Any  # diffusers ControlNetModel
    vae: Any  # diffusers AutoencoderKL
    scheduler: Any  # a template: the sampler makes a fresh copy per run
    device: torch.device
    dtype: torch.dtype
    offload: bool = False  # text encoder and VAE kept in CPU RAM, moved to the device only while used

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def lightning_filename(steps: int) -> str:
    if steps not in LIGHTNING_STEPS:
        raise InvalidOptions(f"AnimateDiff-Lightning has {', '.join(map(str, LIGHTNING_STEPS))}-step models, "
                             f"not {steps}: pick one of those")
    return f"animatediff_lightning_{steps}step_diffusers.safetensors"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def make_scheduler(config):
    """AnimateDiff-Lightning's sampler: Euler, trailing timesteps, linear betas (4 steps: 999, 749, 499, 249)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing", beta_schedule="linear")


# ---------------------------------------------------------------- base model


def _load_base(folder: Path, spec: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [s for s in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / s).is_dir()]
    if missing:
        raise ModelLoadError(f"base model '{spec}' is not a diffusers SD1.5 folder (no {', '.join(missing)}/): "
                             f"pass a diffusers-format repo or folder such as emilianJR/epiCRealism")
    part = "tokenizer"
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)
        part = "text_encoder"
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype)
        part = "unet"
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, **_fast_load())
        part = "vae"
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype, **_fast_load())
        part = "scheduler"
        from diffusers import EulerDiscreteScheduler

        sched_config = EulerDiscreteScheduler.load_config(folder / "scheduler")
    except Exception as e:
        raise ModelLoadError(f"base model '{spec}': its {part} could not be loaded ({_first_line(e)}): "
                             f"check the files or pass another SD1.5 model") from e
    cfg = unet.config
    xdim = cfg.get("cross_attention_dim")
    if cfg.get("addition_embed_type") == "text_time" or not isinstance(xdim, int) or xdim in (1024, 2048):
        raise ModelLoadError(f"base model '{spec}' is not Stable Diffusion 1.5 (SDXL/SD2 UNet): "
                             f"AnimateDiff-Lightning needs an SD1.5 model")
    return tokenizer, text_encoder, unet, vae, sched_config


# ---------------------------------------------------------------- motion module


def resolve_motion(spec: str, lightning_steps: int = 4) -> Path:
    """The motion module file: a local file, a local folder, the Lightning hub repo (file by step count), or
    another hub repo holding a diffusers ``MotionAdapter`` (``diffusion_pytorch_model.safetensors``)."""
    name = lightning_filename(lightning_steps)
    if hub.is_local(spec):
        p = Path(spec).expanduser()
        if p.is_dir():
            for cand in (name, "diffusion_pytorch_model.safetensors"):
                if (p / cand).is_file():
                    return p / cand
            raise ModelNotFound(f"motion module folder '{p}' has neither {name} nor "
                                f"diffusion_pytorch_model.safetensors: pass the file itself")
        return hub.resolve_file(spec, what="motion module")
    if spec.lower() == LIGHTNING_REPO.lower():
        return hub.resolve_file(spec, name, what="motion module")
    return hub.resolve_file(spec, "diffusion_pytorch_model.safetensors", what="motion module")


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:  # original .ckpt/.pth: tensors only, never pickled code
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
                sd = sd["state_dict"]
    except Exception as e:
        raise ModelLoadError(f"{what} '{path}' cannot be read ({_first_line(e)}): the file is corrupt or "
                             f"not a weights file") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelLoadError(f"{what} '{path}' is not a state dict of tensors")
    return sd


def motion_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """A motion module file as a diffusers ``MotionAdapter`` state dict, and the max sequence length when the
    file says it (``pos_embed.pe`` / ``pos_encoder.pe``)."""
    sd = _read_state_dict(path, "motion module")
    for prefix in ("model.diffusion_model.", "diffusion_model.", "module."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if ".motion_modules." in k or k.startswith("conv_in.")}
    if not any(".motion_modules." in k for k in sd):
        raise ModelLoadError(f"'{path}' is not an AnimateDiff motion module (no motion_modules weights): "
                             f"pass an animatediff_lightning_*_diffusers.safetensors file")
    max_seq = None
    for k, v in sd.items():
        if k.endswith(("pos_embed.pe", "pos_encoder.pe")) and v.ndim == 3:
            max_seq = int(v.shape[1])
            break
    if any(".temporal_transformer." in k for k in sd):  # original AnimateDiff / ComfyUI layout
        from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

        sd = convert_animatediff_checkpoint_to_diffusers(sd)
    return sd, max_seq


def infer_motion_config(sd: dict[str, torch.Tensor], unet_config, max_seq: int | None) -> dict:
    """MotionAdapter kwargs from the state dict's key layout and shapes, checked against the UNet config."""
    pat = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.motion_modules\.(\d+)\.")
    layers: dict[str, dict[int, int]] = {"down_blocks": {}, "up_blocks": {}}
    for k in sd:
        m = pat.match(k)
        if m:
            d = layers[m.group(1)]
            d[int(m.group(2))] = max(d.get(int(m.group(2)), 0), int(m.group(3)) + 1)
    n_blocks = len(layers["down_blocks"])
    unet_channels = tuple(unet_config.block_out_channels)
    channels = tuple(int(sd[f"down_blocks.{i}.motion_modules.0.norm.weight"].shape[0])
                     if f"down_blocks.{i}.motion_modules.0.norm.weight" in sd else -1 for i in range(n_blocks))
    if channels != unet_channels:
        raise ModelLoadError(f"the motion module is for a UNet with channels {channels}, the base model has "
                             f"{unet_channels}: pair an SD1.5 motion module with an SD1.5 base model")

    def count(prefix: str) -> int:
        rx = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
        return max((int(m.group(1)) + 1 for k in sd if (m := rx.match(k))), default=1)

    mid_layers = 1 + max((int(k.split(".")[2]) for k in sd if k.startswith("mid_block.motion_modules.")), default=-1)
    cfg = dict(
        block_out_channels=unet_channels,
        motion_layers_per_block=tuple(layers["down_blocks"][i] for i in range(n_blocks)),
        motion_transformer_layers_per_block=tuple(
            count(f"down_blocks.{i}.motion_modules.0.") for i in range(n_blocks)),
        motion_num_attention_heads=MOTION_NUM_HEADS,
        motion_norm_num_groups=MOTION_NORM_GROUPS,
        motion_max_seq_length=max_seq or DEFAULT_MAX_SEQ,
        use_motion_mid_block=mid_layers > 0,
        motion_mid_block_layers_per_block=max(mid_layers, 1),
        motion_transformer_layers_per_mid_block=count("mid_block.motion_modules.0.") if mid_layers else 1,
        conv_in_channels=int(sd["conv_in.weight"].shape[1]) if "conv_in.weight" in sd else None,
    )
    lpb = unet_config.layers_per_block
    lpb = tuple(lpb) if isinstance(lpb, (list, tuple)) else (lpb,) * len(unet_channels)
    if cfg["motion_layers_per_block"] != lpb:
        raise ModelLoadError(f"the motion module has {cfg['motion_layers_per_block']} layers per block, the base "
                             f"UNet {lpb}: they do not fit together")
    return cfg


def _on_meta(model: torch.nn.Module) -> list[str]:
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]


def load_motion_adapter(path: Path, unet_config, dtype: torch.dtype = torch.float32):
    """A ``MotionAdapter`` from one file, its config inferred (see ``infer_motion_config``)."""
    from diffusers import MotionAdapter

    sd, max_seq = motion_state_dict(path)
    cfg = infer_motion_config(sd, unet_config, max_seq)
    log.debug("motion adapter config inferred from %s: %s", path.name, cfg)
    with torch.device("meta"):
        adapter = MotionAdapter(**cfg)
    try:
        missing, unexpected = adapter.load_state_dict({k: v.to(dtype) for k, v in sd.items()},
                                                      strict=False, assign=True)
    except RuntimeError as e:
        raise ModelLoadError(f"motion module '{path}' does not fit its inferred layout ({_first_line(e)})") from e
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]
    if missing or unexpected:
        raise ModelLoadError(f"motion module '{path}' has {len(missing)} missing and {len(unexpected)} unexpected "
                             f"weights (e.g. {(missing or unexpected)[0]}): it is not an SD1.5 AnimateDiff module")
    # positional tables the file lacks (original-layout conversion drops them): the fixed sinusoidal ones
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    for name, mod in adapter.named_modules():
        if isinstance(mod, SinusoidalPositionalEmbedding) and mod.pe.is_meta:
            mod.pe = SinusoidalPositionalEmbedding(mod.pe.shape[-1], mod.pe.shape[1]).pe.to(dtype)
    assert not _on_meta(adapter), _on_meta(adapter)[:3]
    return adapter.eval()


def build_motion_unet(unet, adapter):
    """``UNetMotionModel.from_unet2d(unet, adapter)`` without the random initialisation of a full-size model:
    built on the meta device and filled from the two state dicts (their keys are the motion UNet's keys)."""
    from diffusers import UNetMotionModel

    try:
        with torch.device("meta"):
            model = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
        sd = dict(unet.state_dict())
        sd.update(adapter.state_dict())
        model.load_state_dict(sd, strict=True, assign=True)
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"the motion module does not fit the base UNet ({_first_line(e)})") from e
    left = _on_meta(model)
    if left:
        raise ModelLoadError(f"the motion UNet has weights no file provides (e.g. {left[0]})")
    return model.eval()


# ---------------------------------------------------------------- entry point


def load_diffusion_models(base: str, motion: str, controlnet: str, *, lightning_steps: int = 4,
                          vae: str | None = None, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32) -> DiffusionModels:
    """Load everything the sampler needs. ``base``/``controlnet``/``vae``: hub repo id or local diffusers folder;
    ``motion``: ``ByteDance/AnimateDiff-Lightning`` (file picked by ``lightning_steps``), another hub repo, or a
    local file/folder. Raises ``ModelNotFound`` (missing) or ``ModelLoadError`` (wrong or corrupt)."""
    from diffusers import AutoencoderKL, ControlNetModel

    device = torch.device(device)
    base, motion, controlnet = str(base), str(motion), str(controlnet)
    motion_path = resolve_motion(motion, lightning_steps)  # cheap checks first: fail before the big downloads
    base_dir = hub.resolve_folder(base, what="base model", allow_patterns=_BASE_PATTERNS)
    cn_dir = hub.resolve_folder(controlnet, what="ControlNet", allow_patterns=_SINGLE_MODEL_PATTERNS)
    vae_dir = hub.resolve_folder(str(vae), what="VAE", allow_patterns=_SINGLE_MODEL_PATTERNS + ["vae/*"]) \
        if vae else None

    log.info("loading base model %s", base)
    tokenizer, text_encoder, unet2d, base_vae, sched_config = _load_base(base_dir, base, dtype)
    log.info("loading motion module %s", motion_path.name)
    adapter = load_motion_adapter(motion_path, unet2d.config, dtype)
    unet = build_motion_unet(unet2d, adapter)
    del unet2d, adapter

    log.info("loading ControlNet %s", controlnet)
    try:
        cn = ControlNetModel.from_pretrained(cn_dir, torch_dtype=dtype, **_fast_load())
    except Exception as e:
        raise ModelLoadError(f"ControlNet '{controlnet}' could not be loaded ({_first_line(e)}): pass a diffusers "
                             f"ControlNet folder or repo such as lllyasviel/control_v11p_sd15_openpose") from e
    if cn.config.cross_attention_dim != unet.config.cross_attention_dim or \
            tuple(cn.config.block_out_channels) != tuple(unet.config.block_out_channels):
        raise ModelLoadError(f"ControlNet '{controlnet}' does not fit the base model (channels "
                             f"{tuple(cn.config.block_out_channels)} vs {tuple(unet.config.block_out_channels)}): "
                             f"use an SD1.5 ControlNet")

    if vae_dir is not None:
        log.info("loading VAE %s", vae)
        sub = "vae" if (vae_dir / "vae" / "config.json").is_file() else None
        try:
            base_vae = AutoencoderKL.from_pretrained(vae_dir, subfolder=sub, torch_dtype=dtype, **_fast_load())
        except Exception as e:
            raise ModelLoadError(f"VAE '{vae}' could not be loaded ({_first_line(e)}): pass a diffusers "
                                 f"AutoencoderKL folder or repo such as stabilityai/sd-vae-ft-mse") from e

    for m in (text_encoder, unet, cn, base_vae):
        if m.dtype != dtype:  # e.g. a float32 file loaded as float16 is already cast; moving dtype warns
            m.to(dtype=dtype)
        m.to(device=device)
        m.eval()
        m.requires_grad_(False)
    return DiffusionModels(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, controlnet=cn, vae=base_vae,
                           scheduler=make_scheduler(sched_config), device=device, dtype=dtype)
