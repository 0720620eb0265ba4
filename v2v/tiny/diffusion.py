"""Tiny random-weight SD1.5 / AnimateDiff motion adapter / ControlNet models, saved in the real formats.

Deterministic from a seed, about 4 MB in all (weights stored in float16, as the real files), built in seconds.
They run the real loading and sampling code paths without downloading weights (tests, ``--models tiny`` smoke
runs). Their output is no picture, but every input of a run shows in it (v2v/tiny/visible.py).

Real geometry where it matters: the VAE has 4 levels (latents are 1/8 of the frame) and the ControlNet
conditioning embedding downsamples 8x, as in SD1.5 and ``control_v11p_sd15_openpose``.

``lay_out_hub_repo`` lays files out as a Hugging Face hub cache entry so the real hub-id loading path can be
tested offline.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import torch

from ..models.defaults import DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_MOTION
from . import visible

SEED = 1234

# The tiny UNet. MotionAdapter and ControlNet are derived from it.
UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,  # SD1.5 style: "attention_head_dim" holds the number of heads
    norm_num_groups=32,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.18215,
)
MOTION_CONFIG = dict(
    block_out_channels=UNET_CONFIG["block_out_channels"],
    motion_layers_per_block=UNET_CONFIG["layers_per_block"],
    motion_mid_block_layers_per_block=1,
    motion_num_attention_heads=8,  # as the real AnimateDiff modules (heads cannot be read from tensor shapes)
    motion_norm_num_groups=32,
    motion_max_seq_length=32,
    use_motion_mid_block=True,
)
CONTROLNET_EMBEDDING_CHANNELS = (8, 16, 32, 32)  # 4 entries: 3 stride-2 convs, 8x like the real one
# SD1.5's scheduler_config.json
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# a few merges so that common prompt words become single tokens, as with the real vocabulary
_WORDS = ("a", "the", "person", "dancing", "man", "woman", "in", "on", "street", "blurry", "photo")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _tiny_vocab() -> tuple[dict[str, int], list[str]]:
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in _WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right
            merged = parts[0] + parts[1]
            line = f"{parts[0]} {parts[1]}"
            if line not in merges:
                merges.append(line)
            if merged not in tokens:
                tokens.append(merged)
            parts = [merged] + parts[2:]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def _randomize_zeros(model: torch.nn.Module, std: float = 0.05) -> None:
    """Give zero-initialised tensors (ControlNet zero convs, biases) random values so every path matters."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, std)


def _seeded(seed: int):
    torch.manual_seed(seed)


def tiny_unet(seed: int = SEED):
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        _seeded(seed)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        _randomize_zeros(unet)
        visible.unet(unet)
    return unet.eval()


def write_tiny_vae(folder, seed: int = SEED + 1) -> Path:
    """An ``AutoencoderKL`` as a diffusers folder (the base's own is ``seed`` SEED + 1; another seed, another VAE)."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        _seeded(seed)
        vae = AutoencoderKL(**VAE_CONFIG)
        _randomize_zeros(vae)
        visible.vae(vae)
    vae.half().save_pretrained(Path(folder), safe_serialization=True)
    return Path(folder)


def write_tiny_base(folder, seed: int = SEED) -> Path:
    """A diffusers SD1.5-style folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))

    tiny_unet(seed).half().save_pretrained(folder / "unet", safe_serialization=True)

    write_tiny_vae(folder / "vae", seed + 1)

    vocab, merges = _tiny_vocab()
    tok = folder / "tokenizer"
    tok.mkdir(exist_ok=True)
    (tok / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tok / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tok / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace",
        "add_prefix_space": False, "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
    }, indent=2))
    (tok / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=2))

    with torch.random.fork_rng(devices=[]):
        _seeded(seed + 2)
        te = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=UNET_CONFIG["cross_attention_dim"], intermediate_size=37,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
            hidden_act="quick_gelu", bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS]))
    te.eval().half().save_pretrained(folder / "text_encoder", safe_serialization=True)

    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    return folder


def tiny_motion_adapter(seed: int = SEED):
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        _seeded(seed + 3)
        adapter = MotionAdapter(**MOTION_CONFIG)
        _randomize_zeros(adapter)
        visible.motion_adapter(adapter)
    return adapter.eval()


def diffusers_to_original_motion_key(key: str) -> str:
    """MotionAdapter key -> original AnimateDiff (ComfyUI) key; the inverse of diffusers'
    ``convert_animatediff_checkpoint_to_diffusers`` (minus ``pos_encoder.pe``, which that conversion drops)."""
    head, sep, rest = key.partition(".motion_modules.")
    if sep:
        idx, _, tail = rest.partition(".")
        key = f"{head}.motion_modules.{idx}.temporal_transformer.{tail}"
    return (key.replace(".norm1", ".norms.0").replace(".norm2", ".norms.1").replace(".norm3", ".ff_norm")
            .replace(".attn1", ".attention_blocks.0").replace(".attn2", ".attention_blocks.1")
            .replace(".pos_embed.pe", ".pos_encoder.pe"))


def write_tiny_motion(path, fmt: str = "diffusers", seed: int = SEED) -> Path:
    """A motion module as one safetensors file.

    ``fmt="diffusers"``: a ``MotionAdapter`` state dict, as ``animatediff_lightning_{N}step_diffusers.safetensors``.
    ``fmt="comfyui"``: the original AnimateDiff key layout, as ``animatediff_lightning_{N}step_comfyui.safetensors``.
    ``path`` is the file, or a folder (then the 4-step file name is used).
    """
    from safetensors.torch import save_file

    if fmt not in ("diffusers", "comfyui"):
        raise ValueError(f"fmt must be 'diffusers' or 'comfyui', not {fmt!r}")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / f"animatediff_lightning_4step_{fmt}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.half().contiguous() for k, v in tiny_motion_adapter(seed).state_dict().items()}
    if fmt == "comfyui":
        sd = {diffusers_to_original_motion_key(k): v for k, v in sd.items()}
    save_file(sd, str(path))
    return path


def write_tiny_controlnet(folder, seed: int = SEED) -> Path:
    """ControlNetModel.from_unet(tiny unet) with an 8x conditioning embedding, as a diffusers folder."""
    from diffusers import ControlNetModel

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        _seeded(seed + 4)
        cn = ControlNetModel.from_unet(tiny_unet(seed),
                                       conditioning_embedding_out_channels=CONTROLNET_EMBEDDING_CHANNELS)
        _randomize_zeros(cn)
        visible.controlnet(cn)
    cn.eval().half().save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_diffusion_set(folder, seed: int = SEED, steps=(4,)) -> dict[str, Path]:
    """All three under ``folder``: {"base": folder, "motion": file (first of ``steps``), "controlnet": folder,
    "motion_files": {N: file}}."""
    folder = Path(folder)
    base = write_tiny_base(folder / "base", seed)
    motion_files = {}
    for i, n in enumerate(steps):
        target = folder / "motion" / f"animatediff_lightning_{n}step_diffusers.safetensors"
        if i == 0:
            write_tiny_motion(target, seed=seed)
        else:
            shutil.copyfile(motion_files[steps[0]], target)
        motion_files[n] = target
    cn = write_tiny_controlnet(folder / "controlnet", seed)
    return {"base": base, "motion": motion_files[steps[0]], "controlnet": cn, "motion_files": motion_files}


def fake_commit(repo_id: str) -> str:
    return hashlib.sha1(f"v2v-fake-{repo_id}".encode()).hexdigest()


def lay_out_hub_repo(cache_dir, repo_id: str, files: dict[str, str | Path], commit: str | None = None) -> Path:
    """Lay files out as a Hugging Face hub cache entry; returns the snapshot folder.

    ``cache_dir/models--OWNER--NAME/refs/main`` holds the commit hash and ``snapshots/<commit>/<relpath>`` the
    files. ``files`` maps a path in the repo to a local file, or to a local folder copied whole under that path
    (``""`` for the repo root). Point ``HF_HUB_CACHE`` (and ``huggingface_hub.constants.HF_HUB_CACHE``) at
    ``cache_dir`` and set ``HF_HUB_OFFLINE=1`` to load it by ``repo_id``.
    """
    commit = commit or fake_commit(repo_id)
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for rel, src in files.items():
        src = Path(src)
        dst = snap / rel if rel else snap
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return snap


DEFAULT_REPOS = {"base": DEFAULT_BASE, "motion": DEFAULT_MOTION, "controlnet": DEFAULT_CONTROLNET}


def lay_out_diffusion_hub(cache_dir, tiny: dict[str, Path], steps=(1, 2, 4, 8)) -> None:
    """The tiny base, motion and ControlNet under the real default repo ids (``DEFAULT_REPOS``) in a fake cache.
    ``tiny`` is ``write_tiny_diffusion_set``'s result; the motion file is laid out for every step count."""
    lay_out_hub_repo(cache_dir, DEFAULT_REPOS["base"], {"": tiny["base"]})
    lay_out_hub_repo(cache_dir, DEFAULT_REPOS["motion"], {
        f"animatediff_lightning_{n}step_diffusers.safetensors": tiny["motion"] for n in steps})
    lay_out_hub_repo(cache_dir, DEFAULT_REPOS["controlnet"], {"": tiny["controlnet"]})


# ---------------------------------------------------------------- single files and add-ons in their real formats
#
# The inverse of diffusers' single-file conversions (``diffusers.loaders.single_file_utils``): the tiny diffusers
# models written back in the original CompVis / A1111 / lllyasviel key layouts, so the tests run diffusers' real
# single-file loading on them.

_UNET_TOP = {  # diffusers -> original, for the UNet and the ControlNet
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
    "controlnet_mid_block": "middle_block_out.0",
    "controlnet_cond_embedding.conv_in": "input_hint_block.0",
    "controlnet_cond_embedding.conv_out": "input_hint_block.14",
}
_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def _ldm_resnet(tail: str) -> str:
    head, _, rest = tail.partition(".")
    return dict(_RESNET).get(head, head) + "." + rest


def diffusers_to_ldm_unet(sd: dict, config: dict) -> dict:
    """A diffusers ``UNet2DConditionModel`` / ``ControlNetModel`` state dict in the original layout (no
    ``model.diffusion_model.`` / ``control_model.`` prefix); the inverse of ``convert_ldm_unet_checkpoint`` and
    ``convert_controlnet_checkpoint``."""
    lpb = config["layers_per_block"]
    n = len(config["block_out_channels"])
    up_attn = {int(k.split(".")[1]) for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for k, v in sd.items():
        module, _, param = k.rpartition(".")
        if module in _UNET_TOP:
            out[f"{_UNET_TOP[module]}.{param}"] = v
            continue
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$", k)
        if m:
            kind, b, part, j, tail = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if kind == "down_blocks":
                idx = 1 + b * (lpb + 1) + (lpb if part == "downsamplers" else j)
                out[{"resnets": f"input_blocks.{idx}.0.{_ldm_resnet(tail)}",
                     "attentions": f"input_blocks.{idx}.1.{tail}",
                     "downsamplers": f"input_blocks.{idx}.0.op.{tail.removeprefix('conv.')}"}[part]] = v
            else:
                idx = b * (lpb + 1) + (lpb if part == "upsamplers" else j)
                out[{"resnets": f"output_blocks.{idx}.0.{_ldm_resnet(tail)}",
                     "attentions": f"output_blocks.{idx}.1.{tail}",
                     "upsamplers": f"output_blocks.{idx}.{2 if b in up_attn else 1}.{tail}"}[part]] = v
            continue
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", k)
        if m:
            j, tail = int(m.group(2)), m.group(3)
            out[f"middle_block.{2 * j}.{_ldm_resnet(tail)}" if m.group(1) == "resnets"
                else f"middle_block.1.{tail}"] = v
            continue
        m = re.match(r"controlnet_down_blocks\.(\d+)\.(.+)$", k)
        if m:
            out[f"zero_convs.{m.group(1)}.0.{m.group(2)}"] = v
            continue
        m = re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)$", k)
        if m:
            out[f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"] = v
            continue
        raise ValueError(f"no original name for UNet weight {k} ({n} blocks)")
    return out


def diffusers_to_ldm_vae(sd: dict, n_blocks: int) -> dict:
    """A diffusers ``AutoencoderKL`` state dict in the original layout (attention weights as 1x1 convs)."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        side, _, rest = k.partition(".")
        if side not in ("encoder", "decoder"):
            out[k] = v  # quant_conv, post_quant_conv
            continue
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)$", rest)
        if m:
            b = int(m.group(2)) if m.group(1) == "down_blocks" else n_blocks - 1 - int(m.group(2))
            level = "down" if m.group(1) == "down_blocks" else "up"
            tail = m.group(5).replace("conv_shortcut", "nin_shortcut")
            name = {"resnets": f"{level}.{b}.block.{m.group(4)}.{tail}", "downsamplers": f"down.{b}.downsample.{tail}",
                    "upsamplers": f"up.{b}.upsample.{tail}"}[m.group(3)]
        elif rest.startswith("mid_block.resnets."):
            j, _, tail = rest.removeprefix("mid_block.resnets.").partition(".")
            name = f"mid.block_{int(j) + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif rest.startswith("mid_block.attentions.0."):
            module, _, param = rest.removeprefix("mid_block.attentions.0.").rpartition(".")
            name = f"mid.attn_1.{attn[module]}.{param}"
            if v.ndim == 2:
                v = v[:, :, None, None]
        else:
            name = rest.replace("conv_norm_out", "norm_out")
        out[f"{side}.{name}"] = v
    return out


def _read_folder_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def tiny_checkpoint_state_dict(base) -> dict:
    """The tiny diffusers base folder as one original-layout SD1.5 state dict: ``model.diffusion_model.*``,
    ``first_stage_model.*``, ``cond_stage_model.transformer.text_model.*`` (as civitai / A1111 checkpoints)."""
    base = Path(base)
    unet_cfg = json.loads((base / "unet" / "config.json").read_text())
    vae_cfg = json.loads((base / "vae" / "config.json").read_text())
    sd = {f"model.diffusion_model.{k}": v
          for k, v in diffusers_to_ldm_unet(_read_folder_weights(base / "unet"), unet_cfg).items()}
    sd.update({f"first_stage_model.{k}": v for k, v in
               diffusers_to_ldm_vae(_read_folder_weights(base / "vae"), len(vae_cfg["block_out_channels"])).items()})
    for k, v in _read_folder_weights(base / "text_encoder").items():
        sd["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    return sd


def _save(sd: dict, path: Path, wrap: bool = False) -> Path:
    """safetensors for ``.safetensors``, else a torch zip pickle of tensors only (``{"state_dict": sd}`` if wrap)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd} if wrap else sd, str(path))
    return path


def write_tiny_checkpoint(path, base) -> Path:
    """The tiny base (a diffusers folder from ``write_tiny_base``) as one SD1.5 checkpoint in the original layout:
    ``.safetensors`` (civitai style) or ``.ckpt`` (a ``{"state_dict": ...}`` pickle of tensors)."""
    path = Path(path)
    return _save(tiny_checkpoint_state_dict(base), path, wrap=path.suffix == ".ckpt")


def write_tiny_vae_file(path, base) -> Path:
    """The tiny base's VAE as one original-layout file (as ``vae-ft-mse-840000-ema-pruned.safetensors``)."""
    base = Path(base)
    cfg = json.loads((base / "vae" / "config.json").read_text())
    return _save(diffusers_to_ldm_vae(_read_folder_weights(base / "vae"), len(cfg["block_out_channels"])), path)


def write_tiny_controlnet_file(path, controlnet) -> Path:
    """The tiny ControlNet folder as one file in lllyasviel's layout (``control_model.*`` keys), ``.pth`` as
    ``control_v11p_sd15_openpose.pth`` or ``.safetensors``."""
    controlnet = Path(controlnet)
    cfg = json.loads((controlnet / "config.json").read_text())
    sd = diffusers_to_ldm_unet(_read_folder_weights(controlnet), cfg)
    return _save({f"control_model.{k}": v for k, v in sd.items()}, path)


TAESD_CONFIG = dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)


def write_tiny_taesd(folder, seed: int = SEED) -> Path:
    """A tiny ``AutoencoderTiny`` (TAESD: 8x, scaling_factor 1.0) as a diffusers folder, as ``madebyollin/taesd``."""
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        _seeded(seed + 5)
        taesd = AutoencoderTiny(**TAESD_CONFIG)
        _randomize_zeros(taesd)
        with torch.no_grad():  # mid-grey plus noise rather than clipped black: its decodes carry information
            taesd.decoder.layers[-1].bias.add_(0.5)
    taesd.eval().half().save_pretrained(Path(folder), safe_serialization=True)
    return Path(folder)


def tiny_motion_lora(seed: int = SEED, rank: int = 2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random LoRA factors for every attention projection of the tiny motion adapter:
    {MotionAdapter weight key: (up (out, rank), down (rank, in))}."""
    sd = tiny_motion_adapter(seed).state_dict()
    gen = torch.Generator().manual_seed(seed + 6)
    out = {}
    for k, w in sd.items():
        if re.search(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$", k):
            out[k] = (torch.randn(w.shape[0], rank, generator=gen) * visible.GAINS["lora"],
                      torch.randn(rank, w.shape[1], generator=gen) * visible.GAINS["lora"])
    return out


def write_tiny_motion_lora(path, fmt: str = "diffusers", seed: int = SEED, rank: int = 2) -> Path:
    """A motion LoRA for the tiny motion module.

    ``fmt="diffusers"``: as the ``guoyww/animatediff-motion-lora-*`` repos (``unet.`` prefix, attention-processor
    names: ``unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight``);
    ``path`` is the file or a folder (then ``diffusion_pytorch_model.safetensors`` in it).
    ``fmt="original"``: as ``v2_lora_ZoomIn.ckpt`` (``...motion_modules.0.temporal_transformer.transformer_blocks.0
    .attention_blocks.0.processor.to_q_lora.down.weight``, a torch pickle of tensors).
    """
    if fmt not in ("diffusers", "original"):
        raise ValueError(f"fmt must be 'diffusers' or 'original', not {fmt!r}")
    path = Path(path)
    if fmt == "diffusers" and path.suffix != ".safetensors":
        path = path / "diffusion_pytorch_model.safetensors"
    sd = {}
    for k, (up, down) in tiny_motion_lora(seed, rank).items():
        module = k.removesuffix(".weight")
        head, _, proj = module.rpartition(".")  # "...attn1", "to_q" (to_out.0: "...attn1.to_out", "0")
        if proj == "0":
            head, _, proj = head.rpartition(".")
        if fmt == "original":
            head = diffusers_to_original_motion_key(head)
        else:
            head = "unet." + head
        for role, t in (("down", down), ("up", up)):
            sd[f"{head}.processor.{proj}_lora.{role}.weight"] = t.half()
    return _save(sd, path)
