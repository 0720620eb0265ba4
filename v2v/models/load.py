"""Loading the diffusion models: SD1.5 base (diffusers folder, hub repo, or one original-layout checkpoint file),
AnimateDiff motion module (AnimateDiff-Lightning file, diffusers ``MotionAdapter`` state dict or the
original/ComfyUI layout) with motion LoRAs merged in, ControlNet (folder, repo, or one ``.pth``/``.safetensors``),
a custom VAE, and TAESD for ``--fast-decode``.

The motion adapter's configuration is inferred from the base UNet's config and the tensors in the file, so the
same code loads the real 1.5 Lightning files and the tiny test models. Single-file checkpoints are loaded with
diffusers' single-file code; their model configs come from a diffusers repo of the same architecture (the
default base / ControlNet repo, or the tiny set's folders).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from v2v.errors import ModelLoadError, ModelNotFound
from v2v.models import hub
from v2v.models.check import check_models
from v2v.models.files import config_folder, first_line, is_file_spec, left_on_meta, read_state_dict
from v2v.models.defaults import DEFAULT_BASE, DEFAULT_CONTROLNET
from v2v.models.motion import build_motion_unet, load_motion_adapter, resolve_motion, resolve_motion_lora

log = logging.getLogger("v2v")

BASE_PATTERNS = [
    "model_index.json", "scheduler/*.json", "tokenizer/*",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model-*.safetensors",
    "text_encoder/*.safetensors.index.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model-*.safetensors",
    "unet/*.safetensors.index.json",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]


def fast_load() -> dict:
    """from_pretrained kwargs: skip random init where accelerate allows it, and no warning where it is missing."""
    import importlib.util

    return {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}


SINGLE_MODEL_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors",
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
    compiled: bool = False  # torch.compile'd blocks (runtime.compile_models): run under compiled_limits
    decoder: Any = None  # --fast-decode: TAESD (diffusers AutoencoderTiny) decodes instead of the VAE; None: the VAE

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """UNet-space latents (n, 4, h, w) -> images (n, 3, H, W) in [-1, 1] on the device, by TAESD when set,
        else the VAE. Each divides by its own ``config.scaling_factor`` first, as diffusers' pipelines do
        (``vae.decode(latents / vae.config.scaling_factor)``): 0.18215 for SD1.5's VAE, 1.0 for TAESD, which
        was trained on the UNet's (already scaled) latents."""
        vae = self.decoder if self.decoder is not None else self.vae
        z = latents.to(device=self.device, dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(z).sample


def make_scheduler(config):
    """AnimateDiff-Lightning's sampler: Euler, trailing timesteps, linear betas (4 steps: 999, 749, 499, 249)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing", beta_schedule="linear")


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
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, **fast_load())
        part = "vae"
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype, **fast_load())
        part = "scheduler"
        from diffusers import EulerDiscreteScheduler

        sched_config = EulerDiscreteScheduler.load_config(folder / "scheduler")
    except Exception as e:
        raise ModelLoadError(f"base model '{spec}': its {part} could not be loaded ({first_line(e)}): "
                             f"check the files or pass another SD1.5 model") from e
    cfg = unet.config
    xdim = cfg.get("cross_attention_dim")
    if cfg.get("addition_embed_type") == "text_time" or not isinstance(xdim, int) or xdim in (1024, 2048):
        raise ModelLoadError(f"base model '{spec}' is not Stable Diffusion 1.5 (SDXL/SD2 UNet): "
                             f"AnimateDiff-Lightning needs an SD1.5 model")
    return tokenizer, text_encoder, unet, vae, sched_config


def _clip_from_checkpoint(ckpt: Mapping[str, torch.Tensor], config_dir: Path, dtype: torch.dtype):
    """The CLIP text encoder of an original-layout checkpoint (``cond_stage_model.transformer.*``)."""
    from accelerate import init_empty_weights
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():  # parameters on the meta device, buffers (position ids) real
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir))
    own = set(model.state_dict())
    sd = {}
    for k, v in convert_ldm_clip_checkpoint(dict(ckpt)).items():
        # transformers >= 5.6 has no "text_model." level in CLIPTextModel; older checkpoints may lack it too
        for cand in (k, k.removeprefix("text_model."), "text_model." + k):
            if cand in own:
                sd[cand] = v.to(dtype)
                break
    model.load_state_dict(sd, strict=False, assign=True)
    return model


def _load_base_file(path: Path, spec: str, config_dir: Path, dtype: torch.dtype, with_vae: bool = True):
    """A single original-layout SD1.5 checkpoint (``model.diffusion_model.*``, ``first_stage_model.*``,
    ``cond_stage_model.transformer.*``, as civitai/A1111 ship them), through diffusers' single-file loading with
    the configs, tokenizer and scheduler of ``config_dir``. ``with_vae=False``: no VAE (one is given apart)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    ckpt = read_state_dict(path, "base model")
    part = "UNet"
    try:
        unet = UNet2DConditionModel.from_single_file(ckpt, config=str(config_dir), subfolder="unet",
                                                     torch_dtype=dtype)
        left_on_meta(unet, spec, part)
        vae = None
        if with_vae:
            part = "VAE"
            vae = AutoencoderKL.from_single_file(ckpt, config=str(config_dir), subfolder="vae", torch_dtype=dtype)
            left_on_meta(vae, spec, part)
        part = "text encoder"
        text_encoder = _clip_from_checkpoint(ckpt, config_dir / "text_encoder", dtype)
        left_on_meta(text_encoder, spec, part)
        part = "tokenizer"
        tokenizer = CLIPTokenizer.from_pretrained(config_dir / "tokenizer", model_max_length=77)
        part = "scheduler"
        sched_config = EulerDiscreteScheduler.load_config(config_dir / "scheduler")
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"base model '{spec}': its {part} could not be loaded from the checkpoint "
                             f"({first_line(e)}): check the file or pass another SD1.5 model") from e
    return tokenizer, text_encoder, unet.eval(), vae, sched_config


def load_diffusion_models(base: str, motion: str, controlnet: str, *, lightning_steps: int = 4,
                          vae: str | None = None, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, motion_loras: Sequence[tuple[str, float]] = (),
                          decoder: str | None = None, base_config: str = DEFAULT_BASE,
                          controlnet_config: str = DEFAULT_CONTROLNET) -> DiffusionModels:
    """Load everything the sampler needs, after ``check_models`` (the same arguments).

    ``base``: hub repo id, local diffusers folder, or one original-layout SD1.5 checkpoint file (``.safetensors``,
    or ``.ckpt`` loaded with ``weights_only=True``); ``controlnet``: hub id, folder, or one ``.pth``/``.safetensors``
    file; ``vae``: hub id, folder or file replacing the base's VAE; ``motion``: ``ByteDance/AnimateDiff-Lightning``
    (file picked by ``lightning_steps``), another hub repo, or a local file/folder; ``motion_loras``:
    ``(hub repo / folder / file, strength)`` pairs merged into the motion module; ``decoder``: a TAESD repo or
    folder (``--fast-decode``) that decodes instead of the VAE. Single files take their model configs (and the
    tokenizer and scheduler) from ``base_config`` / ``controlnet_config``: a diffusers repo or folder of the same
    architecture. Raises ``ModelNotFound`` (missing) or ``ModelLoadError`` (wrong or corrupt)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel

    device = torch.device(device)
    base, motion, controlnet = str(base), str(motion), str(controlnet)
    base_config, controlnet_config = str(base_config), str(controlnet_config)
    motion_loras = tuple((str(spec), float(strength)) for spec, strength in motion_loras)
    # the preflight first: cheap, and it fails before the big downloads
    check_models(base, motion, controlnet, lightning_steps=lightning_steps, vae=vae, motion_loras=motion_loras,
                 decoder=decoder, base_config=base_config, controlnet_config=controlnet_config)
    motion_path = resolve_motion(motion, lightning_steps)
    lora_paths = [(resolve_motion_lora(spec), strength) for spec, strength in motion_loras]

    log.info("loading base model %s", base)
    if is_file_spec(base):
        base_path = hub.resolve_file(base, what="base model")
        config_dir = config_folder(base_config, "the SD1.5 configs for single-file checkpoints,")
        tokenizer, text_encoder, unet2d, base_vae, sched_config = _load_base_file(
            base_path, base, config_dir, dtype, with_vae=not vae)
    else:
        config_dir = hub.resolve_folder(base, what="base model", allow_patterns=BASE_PATTERNS)
        tokenizer, text_encoder, unet2d, base_vae, sched_config = _load_base(config_dir, base, dtype)
    log.info("loading motion module %s%s", motion_path.name,
             f" with {len(lora_paths)} motion LoRA(s)" if lora_paths else "")
    adapter = load_motion_adapter(motion_path, unet2d.config, dtype, loras=lora_paths)
    unet = build_motion_unet(unet2d, adapter)
    del unet2d, adapter

    log.info("loading ControlNet %s", controlnet)
    try:
        if is_file_spec(controlnet):
            cn_path = hub.resolve_file(controlnet, what="ControlNet")
            cn = ControlNetModel.from_single_file(
                read_state_dict(cn_path, "ControlNet"), torch_dtype=dtype,
                config=str(config_folder(controlnet_config, "the ControlNet config for single-file ControlNets,")))
            left_on_meta(cn, controlnet, "ControlNet")
        else:
            cn_dir = hub.resolve_folder(controlnet, what="ControlNet", allow_patterns=SINGLE_MODEL_PATTERNS)
            cn = ControlNetModel.from_pretrained(cn_dir, torch_dtype=dtype, **fast_load())
    except (ModelLoadError, ModelNotFound):
        raise
    except Exception as e:
        raise ModelLoadError(f"ControlNet '{controlnet}' could not be loaded ({first_line(e)}): pass a diffusers "
                             f"ControlNet folder or repo such as lllyasviel/control_v11p_sd15_openpose") from e
    if cn.config.cross_attention_dim != unet.config.cross_attention_dim or \
            tuple(cn.config.block_out_channels) != tuple(unet.config.block_out_channels):
        raise ModelLoadError(f"ControlNet '{controlnet}' does not fit the base model (channels "
                             f"{tuple(cn.config.block_out_channels)} vs {tuple(unet.config.block_out_channels)}): "
                             f"use an SD1.5 ControlNet")

    if vae:
        log.info("loading VAE %s", vae)
        try:
            if is_file_spec(str(vae)):
                base_vae = AutoencoderKL.from_single_file(
                    read_state_dict(hub.resolve_file(str(vae), what="VAE"), "VAE"), config=str(config_dir),
                    subfolder="vae", torch_dtype=dtype)
                left_on_meta(base_vae, str(vae), "VAE")
            else:
                vae_dir = hub.resolve_folder(str(vae), what="VAE", allow_patterns=SINGLE_MODEL_PATTERNS + ["vae/*"])
                sub = "vae" if (vae_dir / "vae" / "config.json").is_file() else None
                base_vae = AutoencoderKL.from_pretrained(vae_dir, subfolder=sub, torch_dtype=dtype, **fast_load())
        except (ModelLoadError, ModelNotFound):
            raise
        except Exception as e:
            raise ModelLoadError(f"VAE '{vae}' could not be loaded ({first_line(e)}): pass a diffusers "
                                 f"AutoencoderKL folder or repo such as stabilityai/sd-vae-ft-mse") from e

    taesd = None
    if decoder:
        log.info("loading TAESD %s for --fast-decode", decoder)
        if vae:
            log.warning("with --fast-decode TAESD decodes the frames: the VAE '%s' only encodes", vae)
        dec_dir = hub.resolve_folder(str(decoder), what="TAESD (--fast-decode)", allow_patterns=SINGLE_MODEL_PATTERNS)
        try:
            taesd = AutoencoderTiny.from_pretrained(dec_dir, torch_dtype=dtype, **fast_load())
        except Exception as e:
            raise ModelLoadError(f"TAESD '{decoder}' could not be loaded ({first_line(e)}): check the files, or "
                                 f"drop --fast-decode") from e

    for m in (text_encoder, unet, cn, base_vae) + ((taesd,) if taesd is not None else ()):
        if m.dtype != dtype:  # e.g. a float32 file loaded as float16 is already cast; moving dtype warns
            m.to(dtype=dtype)
        m.to(device=device)
        m.eval()
        m.requires_grad_(False)
    return DiffusionModels(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, controlnet=cn, vae=base_vae,
                           scheduler=make_scheduler(sched_config), device=device, dtype=dtype, decoder=taesd)
