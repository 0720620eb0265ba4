"""Model files: what kind of weights a file holds (from its header, no weights read), reading state dicts
safely (pickles with ``weights_only=True`` or not at all), and the small helpers the loader and the checks share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from v2v.errors import ModelLoadError
from v2v.models import hub

CONFIG_PATTERNS = ["model_index.json", "config.json", "*/config.json", "scheduler/*.json", "tokenizer/*"]
_USE_INSTEAD = {"motion": "pass it with --motion", "motion_lora": "pass it with --motion-lora",
                "controlnet": "pass it with --controlnet", "vae": "pass it with --vae"}
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def is_file_spec(spec: str) -> bool:
    """A local weights file (or a path that names one), as opposed to a folder or a hub repo."""
    if not hub.is_local(spec):
        return False
    p = Path(spec).expanduser()
    return p.is_file() or (not p.exists() and p.suffix.lower() in WEIGHT_SUFFIXES)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"'{path}' cannot be read as JSON ({first_line(e)}): the model folder is damaged") from e


def config_folder(spec: str, what: str) -> Path:
    """The configs (no weights) of a diffusers repo or folder, for single-file loading."""
    return hub.resolve_folder(spec, what=what, allow_patterns=CONFIG_PATTERNS)


def on_meta(model: torch.nn.Module) -> list[str]:
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]


def left_on_meta(model, spec: str, part: str) -> None:
    left = on_meta(model)
    if left:
        raise ModelLoadError(f"'{spec}' lacks {len(left)} {part} weights (e.g. {left[0]}): the file is incomplete or "
                             f"not an SD1.5 model")


def torch_load(path: Path, what: str, map_location: str = "cpu"):
    """A ``.ckpt``/``.pth``/``.pt``/``.bin`` file, tensors only (``weights_only=True``: never pickled code)."""
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:
        if "weights only" in str(e).lower():
            raise ModelLoadError(f"{what} '{path}' holds pickled Python objects besides tensors, which v2v does not "
                                 f"load (they can run code): use a .safetensors version of it") from e
        raise


def tensors(obj, path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded pickle (``{"state_dict": ...}`` wrappers unwrapped), tensors only."""
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)} \
        if isinstance(obj, dict) else {}
    if not sd:
        raise ModelLoadError(f"{what} '{path}' is not a state dict of tensors")
    return sd


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch_load(path, what)  # original .ckpt/.pth: tensors only, never pickled code
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{what} '{path}' cannot be read ({first_line(e)}): the file is corrupt or "
                             f"not a weights file") from e
    return tensors(obj, path, what)


def read_header(path: Path, what: str = "model") -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a weights file without reading the weights: the safetensors header, or a
    pickle loaded onto the meta device (``weights_only=True``)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        obj = torch_load(path, what, map_location="meta")
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{what} '{path}' cannot be read ({first_line(e)}): the file is corrupt or "
                             f"not a weights file") from e
    return {k: tuple(v.shape) for k, v in tensors(obj, path, what).items()}


def meta_tensors(header: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in header.items()}


def xattn_dim(keys: Mapping[str, tuple[int, ...]], prefix: str = "") -> int | None:
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
    if (any(k.startswith("conditioner.embedders.") for k in names)
            or "model.diffusion_model.label_emb.0.0.weight" in keys):
        return "sdxl"
    if any("input_hint_block." in k or k.startswith("controlnet_cond_embedding.") for k in names):
        return "controlnet"
    if any(k.startswith("model.diffusion_model.") for k in names):
        if any(".motion_modules." in k for k in names):
            return "motion"  # a motion module saved with the full UNet's prefix
        dim = xattn_dim(keys, "model.diffusion_model.")
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


def wrong_kind(path, what: str, kind: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"'{path}' is {KINDS[kind]}, not {what}: {fix}")


def header_of_kind(path: Path, what: str, kinds: tuple[str, ...], expected: str, fix: str,
                    use_instead: bool = True) -> dict[str, tuple[int, ...]]:
    """``path``'s header (``read_header``) when ``model_kind`` finds one of ``kinds``; else the one-line error
    saying what the file is, not ``expected``, and ``fix`` (with ``use_instead``: where a file of the kind
    found goes, when ``_USE_INSTEAD`` knows it)."""
    header = read_header(path, what)
    kind = model_kind(header)
    if kind not in kinds:
        raise wrong_kind(path, expected, kind, _USE_INSTEAD.get(kind, fix) if use_instead else fix)
    return header
