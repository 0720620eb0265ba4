"""The models' cheap preflight: each model is the right kind and they fit together, from file headers (tensor names
and shapes) and ``config.json`` files only, so a wrong model fails with one line before any frame is decoded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from v2v.errors import ModelLoadError
from v2v.models import hub
from v2v.models.files import (WEIGHT_SUFFIXES, config_folder, header_of_kind, is_file_spec, meta_tensors, read_json,
                              xattn_dim)
from v2v.models.defaults import DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_TAESD
from v2v.models.motion import (check_motion_lora, infer_motion_config, motion_layout, resolve_motion,
                              resolve_motion_lora)

_SD15 = "AnimateDiff-Lightning needs a Stable Diffusion 1.5 model such as emilianJR/epiCRealism or an SD1.5 " \
        ".safetensors checkpoint"
_OPENPOSE_CN = "v2v draws OpenPose pose maps: pass an SD1.5 OpenPose ControlNet such as " + DEFAULT_CONTROLNET
# other ControlNet conditions, as named in lllyasviel's and others' file and repo names
_OTHER_CONTROLS = {"canny", "depth", "mlsd", "normal", "normalbae", "seg", "lineart", "scribble",
                   "softedge", "hed", "pidi", "pidinet", "tile", "inpaint", "shuffle", "ip2p", "qrcode", "sketch",
                   "recolor", "brightness", "illumination", "sparsectrl", "t2iadapter"}


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
    if is_file_spec(base):
        path = hub.resolve_file(base, what="base model")
        header = header_of_kind(path, "base model", ("sd1",), "a Stable Diffusion 1.5 base model", _SD15)
        config_dir = config_folder(base_config, "the SD1.5 configs for single-file checkpoints,")
        if not (config_dir / "unet" / "config.json").is_file():
            raise ModelLoadError(f"'{base_config}' has no unet/config.json: the configs for single-file checkpoints "
                                 f"come from a diffusers SD1.5 repo or folder")
        cfg = read_json(config_dir / "unet" / "config.json")
        _check_unet_config(cfg, base_config)
        conv_in = header.get("model.diffusion_model.input_blocks.0.0.weight", ())
        if len(conv_in) == 4 and conv_in[1] != cfg.get("in_channels", 4):
            raise ModelLoadError(f"base model '{path}' is not a Stable Diffusion 1.5 text-to-image model (its UNet "
                                 f"takes {conv_in[1]} channels, e.g. an inpainting model): {_SD15}")
        xdim = xattn_dim(header, "model.diffusion_model.")
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
    folder = config_folder(base, "base model")
    if not (folder / "unet" / "config.json").is_file():
        own = read_json(folder / "config.json").get("_class_name") if (folder / "config.json").is_file() else None
        raise ModelLoadError(f"base model '{base}' is not a diffusers SD1.5 folder (no unet/"
                             + (f"; it holds a {own}" if own else "") + f"): {_SD15}")
    missing = [s for s in ("vae", "text_encoder", "tokenizer", "scheduler") if not (folder / s).is_dir()]
    if missing:
        raise ModelLoadError(f"base model '{base}' is not a diffusers SD1.5 folder (no {', '.join(missing)}/): "
                             f"pass a diffusers-format repo or folder such as {DEFAULT_BASE}")
    cfg = read_json(folder / "unet" / "config.json")
    _check_unet_config(cfg, base)
    return cfg, None


def _check_motion(path: Path, unet_cfg: Mapping) -> dict[str, tuple[int, ...]]:
    """The motion module fits the base UNet; returns its weights' shapes (diffusers names) for the LoRA checks."""
    header = header_of_kind(path, "motion module", ("motion",), "an AnimateDiff motion module",
                             "pass an AnimateDiff-Lightning file (animatediff_lightning_*_diffusers.safetensors) "
                             "or an SD1.5 AnimateDiff motion module")
    sd, max_seq = motion_layout(meta_tensors(header), path)
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
    if is_file_spec(spec):
        path = hub.resolve_file(spec, what="ControlNet")
        header = header_of_kind(path, "ControlNet", ("controlnet",), "a ControlNet", _OPENPOSE_CN)
        h = {k.removeprefix("control_model."): v for k, v in header.items()}
        hint = h.get("input_hint_block.0.weight") or h.get("controlnet_cond_embedding.conv_in.weight") or ()
        cn_xdim = xattn_dim(h)
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
        config_dir = config_folder(controlnet_config, "the ControlNet config for single-file ControlNets,")
        if read_json(config_dir / "config.json").get("_class_name") != "ControlNetModel":
            raise ModelLoadError(f"'{controlnet_config}' is not a diffusers ControlNet: single-file ControlNets take "
                                 f"their config from one such as {DEFAULT_CONTROLNET}")
        return config_dir
    folder = hub.resolve_folder(spec, what="ControlNet", allow_patterns=["config.json"])
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
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
            return read_json(folder / rel)
    return {}


def _check_vae(spec: str) -> None:
    if is_file_spec(spec):
        path = hub.resolve_file(spec, what="VAE")
        header = header_of_kind(path, "VAE", ("vae", "sd1"), "an SD1.5 VAE",
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
    cfg = read_json(hub.resolve_folder(spec, what="TAESD (--fast-decode)", allow_patterns=["config.json"])
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
        header = header_of_kind(path, "motion LoRA", ("motion_lora",), "a motion LoRA",
                                 "pass an AnimateDiff motion LoRA such as guoyww/animatediff-motion-lora-zoom-in "
                                 "or v2_lora_ZoomIn.ckpt")
        check_motion_lora(path, header, motion_shapes)
