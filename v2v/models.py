"""Loading the diffusion models: SD1.5 base (diffusers folder, hub repo, or one original-layout checkpoint file),
AnimateDiff motion module (AnimateDiff-Lightning file, diffusers ``MotionAdapter`` state dict or the
original/ComfyUI layout) with motion LoRAs merged in, ControlNet (folder, repo, or one ``.pth``/``.safetensors``),
a custom VAE, and TAESD for ``--fast-decode``.

The motion adapter's configuration is inferred from the base UNet's config and the tensors in the file, so the
same code loads the real 1.5 Lightning files and the tiny test models. Single-file checkpoints are loaded with
diffusers' single-file code; their model configs come from a diffusers repo of the same architecture (the
default base / ControlNet repo, or the tiny set's folders).

``check_models`` is the cheap preflight (tensor names and shapes from file headers, ``config.json`` files; no
weights read): a wrong model fails with one line before any frame is decoded.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import hub
from .errors import InvalidOptions, ModelLoadError, ModelNotFound
from .options import DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_MOTION, LIGHTNING_STEPS

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
_CONFIG_PATTERNS = ["model_index.json", "config.json", "*/config.json", "scheduler/*.json", "tokenizer/*"]
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
DEFAULT_TAESD = "madebyollin/taesd"  # --fast-decode: TAESD, a diffusers AutoencoderTiny


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
    compiled: bool = False  # torch.compile'd blocks (generate.compile_models): run under compiled_limits
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


def _is_file_spec(spec: str) -> bool:
    """A local weights file (or a path that names one), as opposed to a folder or a hub repo."""
    if not hub.is_local(spec):
        return False
    p = Path(spec).expanduser()
    return p.is_file() or (not p.exists() and p.suffix.lower() in WEIGHT_SUFFIXES)


def _config_folder(spec: str, what: str) -> Path:
    """The configs (no weights) of a diffusers repo or folder, for single-file loading."""
    return hub.resolve_folder(spec, what=what, allow_patterns=_CONFIG_PATTERNS)


def _left_on_meta(model, spec: str, part: str) -> None:
    left = _on_meta(model)
    if left:
        raise ModelLoadError(f"'{spec}' lacks {len(left)} {part} weights (e.g. {left[0]}): the file is incomplete or "
                             f"not an SD1.5 model")


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

    ckpt = _read_state_dict(path, "base model")
    part = "UNet"
    try:
        unet = UNet2DConditionModel.from_single_file(ckpt, config=str(config_dir), subfolder="unet",
                                                     torch_dtype=dtype)
        _left_on_meta(unet, spec, part)
        vae = None
        if with_vae:
            part = "VAE"
            vae = AutoencoderKL.from_single_file(ckpt, config=str(config_dir), subfolder="vae", torch_dtype=dtype)
            _left_on_meta(vae, spec, part)
        part = "text encoder"
        text_encoder = _clip_from_checkpoint(ckpt, config_dir / "text_encoder", dtype)
        _left_on_meta(text_encoder, spec, part)
        part = "tokenizer"
        tokenizer = CLIPTokenizer.from_pretrained(config_dir / "tokenizer", model_max_length=77)
        part = "scheduler"
        sched_config = EulerDiscreteScheduler.load_config(config_dir / "scheduler")
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"base model '{spec}': its {part} could not be loaded from the checkpoint "
                             f"({_first_line(e)}): check the file or pass another SD1.5 model") from e
    return tokenizer, text_encoder, unet.eval(), vae, sched_config


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


# ---------------------------------------------------------------- reading weight files


def _torch_load(path: Path, what: str, map_location: str = "cpu"):
    """A ``.ckpt``/``.pth``/``.pt``/``.bin`` file, tensors only (``weights_only=True``: never pickled code)."""
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:
        if "weights only" in str(e).lower():
            raise ModelLoadError(f"{what} '{path}' holds pickled Python objects besides tensors, which v2v does not "
                                 f"load (they can run code): use a .safetensors version of it") from e
        raise


def _tensors(obj, path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded pickle (``{"state_dict": ...}`` wrappers unwrapped), tensors only."""
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)} \
        if isinstance(obj, dict) else {}
    if not sd:
        raise ModelLoadError(f"{what} '{path}' is not a state dict of tensors")
    return sd


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = _torch_load(path, what)  # original .ckpt/.pth: tensors only, never pickled code
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{what} '{path}' cannot be read ({_first_line(e)}): the file is corrupt or "
                             f"not a weights file") from e
    return _tensors(obj, path, what)


def read_header(path: Path, what: str = "model") -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a weights file without reading the weights: the safetensors header, or a
    pickle loaded onto the meta device (``weights_only=True``)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        obj = _torch_load(path, what, map_location="meta")
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{what} '{path}' cannot be read ({_first_line(e)}): the file is corrupt or "
                             f"not a weights file") from e
    return {k: tuple(v.shape) for k, v in _tensors(obj, path, what).items()}


def _meta(header: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in header.items()}


def _xattn_dim(keys: Mapping[str, tuple[int, ...]], prefix: str = "") -> int | None:
    """The cross-attention (text embedding) width, from the first ``attn2.to_k`` weight under ``prefix``."""
    for k, shape in keys.items():
        if k.startswith(prefix) and k.endswith("attn2.to_k.weight") and len(shape) == 2 \
                and ".motion_modules." not in k:
            return shape[1]
    return None


KINDS = {
    "sd1": "a Stable Diffusion 1.x checkpoint",
    "sd2": "a Stable Diffusion 2.x checkpoint",
    "sdxl": "an SDXL checkpoint",
    "motion": "an AnimateDiff motion module",
    "motion_lora": "a motion LoRA",
    "lora": "an image LoRA (it has no motion-module weights)",
    "controlnet": "a ControlNet",
    "vae": "a VAE",
    "unknown": "not a model v2v knows",
}


def model_kind(keys: Mapping[str, tuple[int, ...]]) -> str:
    """What a weights file holds, from its tensor names and shapes: a key of ``KINDS``."""
    names = list(keys)
    if any("lora" in k.lower() for k in names):
        return "motion_lora" if any("motion_modules" in k for k in names) else "lora"
    if any(k.startswith("conditioner.embedders.") for k in names) or "model.diffusion_model.label_emb.0.0.weight" in keys:
        return "sdxl"
    if any("input_hint_block." in k or k.startswith("controlnet_cond_embedding.") for k in names):
        return "controlnet"
    if any(k.startswith("model.diffusion_model.") for k in names):
        if any(".motion_modules." in k for k in names):
            return "motion"  # a motion module saved with the full UNet's prefix
        dim = _xattn_dim(keys, "model.diffusion_model.")
        if dim == 2048:
            return "sdxl"
        if dim == 1024 or any(k.startswith("cond_stage_model.model.") for k in names):
            return "sd2"
        return "sd1"
    if any(".motion_modules." in k for k in names):
        return "motion"
    if any(k.startswith(p) for k in names for p in ("encoder.down.", "encoder.down_blocks.", "decoder.up.",
                                                    "decoder.up_blocks.", "first_stage_model.", "vae.encoder.")):
        return "vae"
    return "unknown"


def _wrong(path, what: str, kind: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"'{path}' is {KINDS[kind]}, not {what}: {fix}")


def _header_of_kind(path: Path, what: str, kinds: tuple[str, ...], expected: str, fix: str,
                    use_instead: bool = True) -> dict[str, tuple[int, ...]]:
    """``path``'s header (``read_header``) when ``model_kind`` finds one of ``kinds``; else the one-line error
    saying what the file is, not ``expected``, and ``fix`` (with ``use_instead``: where a file of the kind
    found goes, when ``_USE_INSTEAD`` knows it)."""
    header = read_header(path, what)
    kind = model_kind(header)
    if kind not in kinds:
        raise _wrong(path, expected, kind, _USE_INSTEAD.get(kind, fix) if use_instead else fix)
    return header


def _motion_layout(sd: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """Any motion module state dict (real or meta tensors) in diffusers' ``MotionAdapter`` layout, and the max
    sequence length when it says (``pos_embed.pe`` / ``pos_encoder.pe``)."""
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


def motion_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """A motion module file as a diffusers ``MotionAdapter`` state dict, and the max sequence length when the
    file says it (``pos_embed.pe`` / ``pos_encoder.pe``)."""
    return _motion_layout(_read_state_dict(path, "motion module"), path)


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
    unet_channels = tuple(unet_config["block_out_channels"])
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
    lpb = unet_config["layers_per_block"]
    lpb = tuple(lpb) if isinstance(lpb, (list, tuple)) else (lpb,) * len(unet_channels)
    if cfg["motion_layers_per_block"] != lpb:
        raise ModelLoadError(f"the motion module has {cfg['motion_layers_per_block']} layers per block, the base "
                             f"UNet {lpb}: they do not fit together")
    return cfg


# ---------------------------------------------------------------- motion LoRAs
#
# Formats: the diffusers repos guoyww/animatediff-motion-lora-* (``unet.`` prefix, diffusers names, attention-
# processor LoRA: ``...attn1.processor.to_q_lora.down.weight``), AnimateDiff's original v2_lora_*.ckpt
# (``...temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_q_lora.down.weight``), and the
# generic LoRA namings (``.lora.down/.lora.up``, peft ``.lora_A/.lora_B``, ``.lora_down/.lora_up`` with ``.alpha``).
# They are merged into the motion module's weights (W += strength * alpha/rank * up @ down; no alpha: 1, as
# AnimateDiff's own loader does), so inference costs nothing extra.

_LORA_FORMS = (
    re.compile(r"^(?P<m>.+)\.processor\.(?P<p>to_q|to_k|to_v|to_out)_lora\.(?P<r>down|up)\.weight$"),
    re.compile(r"^(?P<m>.+)\.lora\.(?P<r>down|up)\.weight$"),
    re.compile(r"^(?P<m>.+)\.lora_(?P<r>A|B)(?:\.default)?\.weight$"),
    re.compile(r"^(?P<m>.+)\.lora_(?P<r>down|up)\.weight$"),
)
_LORA_ALPHA = re.compile(r"^(?P<m>.+)\.alpha$")


def _motion_module_name(name: str) -> str:
    """A module name in any of the layouts above -> its name in diffusers' MotionAdapter / UNetMotionModel."""
    for prefix in ("unet.", "model.diffusion_model.", "diffusion_model.", "module."):
        name = name.removeprefix(prefix)
    name = name.replace(".temporal_transformer", "")
    return re.sub(r"\.attention_blocks\.(\d+)", lambda m: f".attn{int(m.group(1)) + 1}", name)


def lora_pairs(keys, path: Path | str = "LoRA") -> dict[str, dict[str, str]]:
    """{target weight (MotionAdapter key): {"down": key, "up": key[, "alpha": key]}} from a LoRA's tensor names.
    A ModelLoadError when a factor has no partner or no name is a LoRA factor v2v can read."""
    pairs: dict[str, dict[str, str]] = {}
    alphas: dict[str, str] = {}
    for k in keys:
        for rx in _LORA_FORMS:
            m = rx.match(k)
            if m:
                module = m["m"]
                if "p" in m.groupdict():
                    module += "." + m["p"] + (".0" if m["p"] == "to_out" else "")
                role = {"A": "down", "B": "up"}.get(m["r"], m["r"])
                pairs.setdefault(_motion_module_name(module) + ".weight", {})[role] = k
                break
        else:
            m = _LORA_ALPHA.match(k)
            if m:
                alphas[_motion_module_name(m["m"]) + ".weight"] = k
    if not pairs:
        raise ModelLoadError(f"motion LoRA '{path}' has no LoRA weights v2v can read (e.g. {next(iter(keys), '?')}): "
                             f"pass an AnimateDiff motion LoRA such as guoyww/animatediff-motion-lora-zoom-in")
    for target, pair in pairs.items():
        if set(pair) != {"down", "up"}:
            raise ModelLoadError(f"motion LoRA '{path}' has a {'down' if 'down' in pair else 'up'} factor without "
                                 f"its partner ({next(iter(pair.values()))}): the file is incomplete")
        if target in alphas:
            pair["alpha"] = alphas[target]
    return pairs


def check_motion_lora(path, lora_shapes: Mapping[str, tuple[int, ...]],
                      motion_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, dict[str, str]]:
    """Every LoRA pair must name a linear weight of the motion module, with matching shapes; returns the pairs."""
    pairs = lora_pairs(lora_shapes, path)
    missing = [t for t in pairs if t not in motion_shapes]
    if missing:
        raise ModelLoadError(f"motion LoRA '{path}' changes {len(missing)} of its {len(pairs)} layers that the "
                             f"motion module does not have (e.g. {missing[0]}): it was made for another motion "
                             f"module (AnimateDiff-Lightning takes v2 motion LoRAs)")
    for target, pair in pairs.items():
        up, down = lora_shapes[pair["up"]], lora_shapes[pair["down"]]
        up, down = (up[0], math.prod(up[1:])), (down[0], math.prod(down[1:]))
        want = motion_shapes[target]
        if up[1] != down[0] or (up[0], down[1]) != tuple(want):
            raise ModelLoadError(f"motion LoRA '{path}' does not fit the motion module: {target} is {tuple(want)}, "
                                 f"the LoRA gives {(up[0], down[1])} (rank {down[0]}): it was made for another "
                                 f"motion module")
    return pairs


def lora_deltas(lora: Mapping[str, torch.Tensor], path: Path | str = "LoRA") -> dict[str, torch.Tensor]:
    """{MotionAdapter weight key: alpha/rank * up @ down} (float32), whatever the LoRA's key format."""
    out = {}
    for target, pair in lora_pairs(lora, path).items():
        up = lora[pair["up"]].float().flatten(1)
        down = lora[pair["down"]].float().flatten(1)
        scale = float(lora[pair["alpha"]]) / down.shape[0] if "alpha" in pair else 1.0
        out[target] = scale * (up @ down)
    return out


def merge_motion_loras(sd: Mapping[str, torch.Tensor],
                       loras: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """A new motion state dict with each LoRA merged in: W + strength * delta, in float32 (merged weights stay
    float32; the loader casts them to the run's dtype). Strength 0 leaves the weights untouched. Unchecked: run
    ``check_motion_lora`` first."""
    out = dict(sd)
    for lora, strength in loras:
        if strength == 0:
            continue
        for target, delta in lora_deltas(lora).items():
            w = out[target]
            out[target] = w.float() + strength * delta.reshape(w.shape)
    return out


def resolve_motion_lora(spec: str) -> Path:
    """A motion LoRA file: a local file, a local folder (its ``diffusion_pytorch_model.safetensors``, or its only
    weights file), or a hub repo in diffusers format (``diffusion_pytorch_model.safetensors``)."""
    if hub.is_local(spec):
        p = Path(spec).expanduser()
        if p.is_dir():
            if (p / "diffusion_pytorch_model.safetensors").is_file():
                return p / "diffusion_pytorch_model.safetensors"
            files = [f for f in sorted(p.iterdir()) if f.is_file() and f.suffix.lower() in WEIGHT_SUFFIXES]
            if len(files) == 1:
                return files[0]
            raise ModelNotFound(f"motion LoRA folder '{p}' has no diffusion_pytorch_model.safetensors: pass the "
                                f"file itself")
        return hub.resolve_file(spec, what="motion LoRA")
    return hub.resolve_file(spec, "diffusion_pytorch_model.safetensors", what="motion LoRA")


def _on_meta(model: torch.nn.Module) -> list[str]:
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]


def load_motion_adapter(path: Path, unet_config, dtype: torch.dtype = torch.float32,
                        loras: Sequence[tuple[Path, float]] = ()):
    """A ``MotionAdapter`` from one file, its config inferred (see ``infer_motion_config``), with the motion
    LoRAs ``(file, strength)`` merged into its weights (see ``merge_motion_loras``)."""
    from diffusers import MotionAdapter

    sd, max_seq = motion_state_dict(path)
    cfg = infer_motion_config(sd, unet_config, max_seq)
    if loras:
        shapes = {k: tuple(v.shape) for k, v in sd.items()}
        read = []
        for lora_path, strength in loras:
            lora = _read_state_dict(Path(lora_path), "motion LoRA")
            check_motion_lora(lora_path, {k: tuple(v.shape) for k, v in lora.items()}, shapes)
            read.append((lora, strength))
        sd = merge_motion_loras(sd, read)
        log.info("merged %d motion LoRA(s) into the motion module", len(read))
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


# ---------------------------------------------------------------- preflight: the right kind of model?


_USE_INSTEAD = {"motion": "pass it with --motion", "motion_lora": "pass it with --motion-lora",
                "controlnet": "pass it with --controlnet", "vae": "pass it with --vae"}
_SD15 = "AnimateDiff-Lightning needs a Stable Diffusion 1.5 model such as emilianJR/epiCRealism or an SD1.5 " \
        ".safetensors checkpoint"
_OPENPOSE_CN = "v2v draws OpenPose pose maps: pass an SD1.5 OpenPose ControlNet such as " + DEFAULT_CONTROLNET
# other ControlNet conditions, as named in lllyasviel's and others' file and repo names
_OTHER_CONTROLS = {"canny", "depth", "mlsd", "normal", "normalbae", "seg", "lineart", "scribble",
                   "softedge", "hed", "pidi", "pidinet", "tile", "inpaint", "shuffle", "ip2p", "qrcode", "sketch",
                   "recolor", "brightness", "illumination", "sparsectrl", "t2iadapter"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"'{path}' cannot be read as JSON ({_first_line(e)}): the model folder is damaged") from e


def _check_unet_config(cfg: Mapping, spec: str) -> None:
    xdim = cfg.get("cross_attention_dim")
    kind = ("an SDXL UNet" if cfg.get("addition_embed_type") == "text_time" or xdim == 2048
            or isinstance(xdim, (list, tuple)) else "a Stable Diffusion 2.x UNet" if xdim == 1024 else None)
    if kind is None and not isinstance(xdim, int):
        kind = "a UNet without cross-attention"
    if kind:
        raise ModelLoadError(f"base model '{spec}' is not Stable Diffusion 1.5 ({kind}): {_SD15}")
    if cfg.get("in_channels", 4) != 4:
        raise ModelLoadError(f"base model '{spec}' is not a Stable Diffusion 1.5 text-to-image model (its UNet "
                             f"takes {cfg.get('in_channels')} channels, e.g. an inpainting model): {_SD15}")


def _check_base(base: str, base_config: str, has_vae: bool) -> tuple[dict, Path | None]:
    """The base's UNet config, and the folder of configs a single-file checkpoint loads with (None: a folder)."""
    if _is_file_spec(base):
        path = hub.resolve_file(base, what="base model")
        header = _header_of_kind(path, "base model", ("sd1",), "a Stable Diffusion 1.5 base model", _SD15)
        config_dir = _config_folder(base_config, "the SD1.5 configs for single-file checkpoints,")
        if not (config_dir / "unet" / "config.json").is_file():
            raise ModelLoadError(f"'{base_config}' has no unet/config.json: the configs for single-file checkpoints "
                                 f"come from a diffusers SD1.5 repo or folder")
        cfg = _read_json(config_dir / "unet" / "config.json")
        _check_unet_config(cfg, base_config)
        conv_in = header.get("model.diffusion_model.input_blocks.0.0.weight", ())
        if len(conv_in) == 4 and conv_in[1] != cfg.get("in_channels", 4):
            raise ModelLoadError(f"base model '{path}' is not a Stable Diffusion 1.5 text-to-image model (its UNet "
                                 f"takes {conv_in[1]} channels, e.g. an inpainting model): {_SD15}")
        xdim = _xattn_dim(header, "model.diffusion_model.")
        if (conv_in and conv_in[0] != cfg["block_out_channels"][0]) or xdim != cfg["cross_attention_dim"]:
            raise ModelLoadError(f"base model '{path}' does not match the SD1.5 configs of '{base_config}' "
                                 f"(channels {conv_in[:1]}, text width {xdim}): it is not a standard SD1.5 model")
        if not any(k.startswith("cond_stage_model.transformer.") for k in header):
            raise ModelLoadError(f"base model '{path}' has no CLIP text encoder (cond_stage_model.transformer "
                                 f"weights): use a full SD1.5 checkpoint")
        if not has_vae and not any(k.startswith("first_stage_model.") for k in header):
            raise ModelLoadError(f"base model '{path}' has no VAE (first_stage_model weights): pass one with --vae, "
                                 f"e.g. --vae stabilityai/sd-vae-ft-mse")
        return cfg, config_dir
    folder = _config_folder(base, "base model")
    if not (folder / "unet" / "config.json").is_file():
        own = _read_json(folder / "config.json").get("_class_name") if (folder / "config.json").is_file() else None
        raise ModelLoadError(f"base model '{base}' is not a diffusers SD1.5 folder (no unet/"
                             + (f"; it holds a {own}" if own else "") + f"): {_SD15}")
    missing = [s for s in ("vae", "text_encoder", "tokenizer", "scheduler") if not (folder / s).is_dir()]
    if missing:
        raise ModelLoadError(f"base model '{base}' is not a diffusers SD1.5 folder (no {', '.join(missing)}/): "
                             f"pass a diffusers-format repo or folder such as {DEFAULT_BASE}")
    cfg = _read_json(folder / "unet" / "config.json")
    _check_unet_config(cfg, base)
    return cfg, None


def _check_motion(path: Path, unet_cfg: Mapping) -> dict[str, tuple[int, ...]]:
    """The motion module fits the base UNet; returns its weights' shapes (diffusers names) for the LoRA checks."""
    header = _header_of_kind(path, "motion module", ("motion",), "an AnimateDiff motion module",
                             "pass an AnimateDiff-Lightning file (animatediff_lightning_*_diffusers.safetensors) "
                             "or an SD1.5 AnimateDiff motion module")
    sd, max_seq = _motion_layout(_meta(header), path)
    infer_motion_config(sd, unet_cfg, max_seq)
    return {k: tuple(v.shape) for k, v in sd.items()}


def _control_type(spec: str) -> str | None:
    """The condition a ControlNet's name says (``control_v11p_sd15_canny`` -> canny); None: OpenPose or unknown."""
    name = Path(spec.replace("\\", "/")).name.lower()
    for suffix in WEIGHT_SUFFIXES:
        name = name.removesuffix(suffix)
    tokens = set(re.split(r"[^a-z0-9]+", name))
    if any("pose" in t for t in tokens):
        return None
    return next((t for t in sorted(tokens) if t in _OTHER_CONTROLS), None)


def _check_controlnet(spec: str, controlnet_config: str, unet_cfg: Mapping) -> Path | None:
    """An SD1.5 OpenPose ControlNet that fits the base; returns the config folder for a single file (else None)."""
    other = _control_type(spec)
    if other:
        raise ModelLoadError(f"ControlNet '{spec}' is a {other} ControlNet (by its name), not OpenPose: {_OPENPOSE_CN}")
    xdim, channels = unet_cfg["cross_attention_dim"], tuple(unet_cfg["block_out_channels"])
    if _is_file_spec(spec):
        path = hub.resolve_file(spec, what="ControlNet")
        header = _header_of_kind(path, "ControlNet", ("controlnet",), "a ControlNet", _OPENPOSE_CN)
        h = {k.removeprefix("control_model."): v for k, v in header.items()}
        hint = h.get("input_hint_block.0.weight") or h.get("controlnet_cond_embedding.conv_in.weight") or ()
        cn_xdim = _xattn_dim(h)
        conv_in = h.get("input_blocks.0.0.weight") or h.get("conv_in.weight") or (None,)
        if any(k.startswith(("label_emb.", "add_embedding.")) for k in h) or cn_xdim == 2048:
            raise ModelLoadError(f"ControlNet '{path}' is an SDXL ControlNet: {_OPENPOSE_CN}")
        if cn_xdim != xdim or conv_in[0] != channels[0]:
            raise ModelLoadError(f"ControlNet '{path}' does not fit the base model (text width {cn_xdim} vs {xdim}, "
                                 f"channels {conv_in[0]} vs {channels[0]}): "
                                 f"{'it is an SD 2.x ControlNet: ' if cn_xdim == 1024 else ''}use an SD1.5 ControlNet")
        if len(hint) == 4 and hint[1] != 3:
            raise ModelLoadError(f"ControlNet '{path}' takes {hint[1]}-channel conditions, not RGB pose maps: "
                                 f"{_OPENPOSE_CN}")
        config_dir = _config_folder(controlnet_config, "the ControlNet config for single-file ControlNets,")
        if _read_json(config_dir / "config.json").get("_class_name") != "ControlNetModel":
            raise ModelLoadError(f"'{controlnet_config}' is not a diffusers ControlNet: single-file ControlNets take "
                                 f"their config from one such as {DEFAULT_CONTROLNET}")
        return config_dir
    folder = hub.resolve_folder(spec, what="ControlNet", allow_patterns=["config.json"])
    cfg = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if cfg.get("_class_name") != "ControlNetModel":
        raise ModelLoadError(f"ControlNet '{spec}' is not a diffusers ControlNet folder (config.json says "
                             f"{cfg.get('_class_name') or 'nothing'}): {_OPENPOSE_CN}")
    if cfg.get("addition_embed_type") == "text_time" or cfg.get("cross_attention_dim") == 2048:
        raise ModelLoadError(f"ControlNet '{spec}' is an SDXL ControlNet: {_OPENPOSE_CN}")
    if cfg.get("cross_attention_dim") != xdim or tuple(cfg.get("block_out_channels", ())) != channels:
        raise ModelLoadError(f"ControlNet '{spec}' does not fit the base model (channels "
                             f"{tuple(cfg.get('block_out_channels', ()))} vs {channels}, text width "
                             f"{cfg.get('cross_attention_dim')} vs {xdim}): use an SD1.5 ControlNet")
    if cfg.get("conditioning_channels", 3) != 3:
        raise ModelLoadError(f"ControlNet '{spec}' takes {cfg['conditioning_channels']}-channel conditions, not RGB "
                             f"pose maps: {_OPENPOSE_CN}")
    return None


def _vae_config(folder: Path) -> dict:
    for rel in ("vae/config.json", "config.json"):
        if (folder / rel).is_file():
            return _read_json(folder / rel)
    return {}


def _check_vae(spec: str) -> None:
    if _is_file_spec(spec):
        path = hub.resolve_file(spec, what="VAE")
        header = _header_of_kind(path, "VAE", ("vae", "sd1"), "an SD1.5 VAE",
                                 "pass an SD1.5 VAE such as stabilityai/sd-vae-ft-mse or "
                                 "vae-ft-mse-840000-ema-pruned.safetensors", use_instead=False)
        quant = next((v for k, v in header.items() if k.endswith("quant_conv.weight") and "post_" not in k), None)
        if quant and quant[0] != 8:
            raise ModelLoadError(f"VAE '{path}' has {quant[0] // 2} latent channels, SD1.5 has 4: pass an SD1.5 VAE "
                                 f"such as stabilityai/sd-vae-ft-mse")
        return
    cfg = _vae_config(hub.resolve_folder(spec, what="VAE", allow_patterns=["config.json", "vae/config.json"]))
    if cfg.get("_class_name") != "AutoencoderKL":
        raise ModelLoadError(f"VAE '{spec}' is not a diffusers AutoencoderKL (its config says "
                             f"{cfg.get('_class_name') or 'nothing'}): pass an SD1.5 VAE such as "
                             f"stabilityai/sd-vae-ft-mse")
    if cfg.get("latent_channels", 4) != 4:
        raise ModelLoadError(f"VAE '{spec}' has {cfg['latent_channels']} latent channels, SD1.5 has 4: pass an SD1.5 "
                             f"VAE such as stabilityai/sd-vae-ft-mse")


def _check_decoder(spec: str) -> None:
    cfg = _read_json(hub.resolve_folder(spec, what="TAESD (--fast-decode)", allow_patterns=["config.json"])
                     / "config.json")
    if cfg.get("_class_name") != "AutoencoderTiny" or cfg.get("latent_channels", 4) != 4:
        raise ModelLoadError(f"'{spec}' is not an SD1.5 TAESD (a diffusers AutoencoderTiny with 4 latent channels, "
                             f"as {DEFAULT_TAESD})")


def check_models(base: str, motion: str, controlnet: str, *, lightning_steps: int = 4, vae: str | None = None,
                 motion_loras: Sequence[tuple[str, float]] = (), decoder: str | None = None,
                 base_config: str = DEFAULT_BASE, controlnet_config: str = DEFAULT_CONTROLNET) -> None:
    """The cheap preflight: each model is the right kind and they fit together, from file headers (tensor names
    and shapes) and ``config.json`` files only; no weights are read. Raises ``ModelNotFound`` (missing; a hub file
    not cached is downloaded, as the load would) or ``ModelLoadError`` (wrong: SDXL / SD2 checkpoints, a file that
    is not a motion module, a non-OpenPose or non-SD1.5 ControlNet, a LoRA that is not a motion LoRA...).
    Arguments as ``load_diffusion_models``."""
    base, motion, controlnet = str(base), str(motion), str(controlnet)
    unet_cfg, _ = _check_base(base, str(base_config), has_vae=vae is not None)
    _check_controlnet(controlnet, str(controlnet_config), unet_cfg)
    if vae:
        _check_vae(str(vae))
    if decoder:
        _check_decoder(str(decoder))
    motion_shapes = _check_motion(resolve_motion(motion, lightning_steps), unet_cfg)
    for spec, _strength in motion_loras:
        path = resolve_motion_lora(str(spec))
        header = _header_of_kind(path, "motion LoRA", ("motion_lora",), "a motion LoRA",
                                 "pass an AnimateDiff motion LoRA such as guoyww/animatediff-motion-lora-zoom-in "
                                 "or v2_lora_ZoomIn.ckpt")
        check_motion_lora(path, header, motion_shapes)


# ---------------------------------------------------------------- entry point


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
    if _is_file_spec(base):
        base_path = hub.resolve_file(base, what="base model")
        config_dir = _config_folder(base_config, "the SD1.5 configs for single-file checkpoints,")
        tokenizer, text_encoder, unet2d, base_vae, sched_config = _load_base_file(
            base_path, base, config_dir, dtype, with_vae=not vae)
    else:
        config_dir = hub.resolve_folder(base, what="base model", allow_patterns=_BASE_PATTERNS)
        tokenizer, text_encoder, unet2d, base_vae, sched_config = _load_base(config_dir, base, dtype)
    log.info("loading motion module %s%s", motion_path.name,
             f" with {len(lora_paths)} motion LoRA(s)" if lora_paths else "")
    adapter = load_motion_adapter(motion_path, unet2d.config, dtype, loras=lora_paths)
    unet = build_motion_unet(unet2d, adapter)
    del unet2d, adapter

    log.info("loading ControlNet %s", controlnet)
    try:
        if _is_file_spec(controlnet):
            cn_path = hub.resolve_file(controlnet, what="ControlNet")
            cn = ControlNetModel.from_single_file(
                _read_state_dict(cn_path, "ControlNet"), torch_dtype=dtype,
                config=str(_config_folder(controlnet_config, "the ControlNet config for single-file ControlNets,")))
            _left_on_meta(cn, controlnet, "ControlNet")
        else:
            cn_dir = hub.resolve_folder(controlnet, what="ControlNet", allow_patterns=_SINGLE_MODEL_PATTERNS)
            cn = ControlNetModel.from_pretrained(cn_dir, torch_dtype=dtype, **_fast_load())
    except (ModelLoadError, ModelNotFound):
        raise
    except Exception as e:
        raise ModelLoadError(f"ControlNet '{controlnet}' could not be loaded ({_first_line(e)}): pass a diffusers "
                             f"ControlNet folder or repo such as lllyasviel/control_v11p_sd15_openpose") from e
    if cn.config.cross_attention_dim != unet.config.cross_attention_dim or \
            tuple(cn.config.block_out_channels) != tuple(unet.config.block_out_channels):
        raise ModelLoadError(f"ControlNet '{controlnet}' does not fit the base model (channels "
                             f"{tuple(cn.config.block_out_channels)} vs {tuple(unet.config.block_out_channels)}): "
                             f"use an SD1.5 ControlNet")

    if vae:
        log.info("loading VAE %s", vae)
        try:
            if _is_file_spec(str(vae)):
                base_vae = AutoencoderKL.from_single_file(
                    _read_state_dict(hub.resolve_file(str(vae), what="VAE"), "VAE"), config=str(config_dir),
                    subfolder="vae", torch_dtype=dtype)
                _left_on_meta(base_vae, str(vae), "VAE")
            else:
                vae_dir = hub.resolve_folder(str(vae), what="VAE", allow_patterns=_SINGLE_MODEL_PATTERNS + ["vae/*"])
                sub = "vae" if (vae_dir / "vae" / "config.json").is_file() else None
                base_vae = AutoencoderKL.from_pretrained(vae_dir, subfolder=sub, torch_dtype=dtype, **_fast_load())
        except (ModelLoadError, ModelNotFound):
            raise
        except Exception as e:
            raise ModelLoadError(f"VAE '{vae}' could not be loaded ({_first_line(e)}): pass a diffusers "
                                 f"AutoencoderKL folder or repo such as stabilityai/sd-vae-ft-mse") from e

    taesd = None
    if decoder:
        log.info("loading TAESD %s for --fast-decode", decoder)
        if vae:
            log.warning("with --fast-decode TAESD decodes the frames: the VAE '%s' only encodes", vae)
        dec_dir = hub.resolve_folder(str(decoder), what="TAESD (--fast-decode)", allow_patterns=_SINGLE_MODEL_PATTERNS)
        try:
            taesd = AutoencoderTiny.from_pretrained(dec_dir, torch_dtype=dtype, **_fast_load())
        except Exception as e:
            raise ModelLoadError(f"TAESD '{decoder}' could not be loaded ({_first_line(e)}): check the files, or "
                                 f"drop --fast-decode") from e

    for m in (text_encoder, unet, cn, base_vae) + ((taesd,) if taesd is not None else ()):
        if m.dtype != dtype:  # e.g. a float32 file loaded as float16 is already cast; moving dtype warns
            m.to(dtype=dtype)
        m.to(device=device)
        m.eval()
        m.requires_grad_(False)
    return DiffusionModels(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, controlnet=cn, vae=base_vae,
                           scheduler=make_scheduler(sched_config), device=device, dtype=dtype, decoder=taesd)
