"""Motion modules: which file a spec stands for (AnimateDiff-Lightning's per step count), the state-dict layouts
(diffusers MotionAdapter, original AnimateDiff, ComfyUI), the adapter's config inferred from its tensors, motion
LoRAs merged in, and the motion UNet built from the base UNet.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from v2v.errors import InvalidOptions, ModelLoadError, ModelNotFound
from v2v.models import hub
from v2v.models.files import (WEIGHT_SUFFIXES, first_line, on_meta, read_state_dict)
from v2v.models.defaults import DEFAULT_MOTION
from v2v.options import LIGHTNING_STEPS

log = logging.getLogger("v2v")

LIGHTNING_REPO = DEFAULT_MOTION
MOTION_NUM_HEADS = 8  # every AnimateDiff motion module uses 8 heads; it cannot be read from tensor shapes
MOTION_NORM_GROUPS = 32
DEFAULT_MAX_SEQ = 32


def lightning_filename(steps: int) -> str:
    if steps not in LIGHTNING_STEPS:
        raise InvalidOptions(f"AnimateDiff-Lightning has {', '.join(map(str, LIGHTNING_STEPS))}-step models, "
                             f"not {steps}: pick one of those")
    return f"animatediff_lightning_{steps}step_diffusers.safetensors"


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


def motion_layout(sd: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
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
    return motion_layout(read_state_dict(path, "motion module"), path)


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
            lora = read_state_dict(Path(lora_path), "motion LoRA")
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
        raise ModelLoadError(f"motion module '{path}' does not fit its inferred layout ({first_line(e)})") from e
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]
    if missing or unexpected:
        raise ModelLoadError(f"motion module '{path}' has {len(missing)} missing and {len(unexpected)} unexpected "
                             f"weights (e.g. {(missing or unexpected)[0]}): it is not an SD1.5 AnimateDiff module")
    # positional tables the file lacks (original-layout conversion drops them): the fixed sinusoidal ones
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    for name, mod in adapter.named_modules():
        if isinstance(mod, SinusoidalPositionalEmbedding) and mod.pe.is_meta:
            mod.pe = SinusoidalPositionalEmbedding(mod.pe.shape[-1], mod.pe.shape[1]).pe.to(dtype)
    assert not on_meta(adapter), on_meta(adapter)[:3]
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
        raise ModelLoadError(f"the motion module does not fit the base UNet ({first_line(e)})") from e
    left = on_meta(model)
    if left:
        raise ModelLoadError(f"the motion UNet has weights no file provides (e.g. {left[0]})")
    return model.eval()
