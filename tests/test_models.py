"""Loading the diffusion models: local files/folders, the HF cache layout under the real repo ids, errors."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from v2v.errors import InvalidOptions, ModelLoadError, ModelNotFound
from v2v.models.load import DiffusionModels, load_diffusion_models
from v2v.models.motion import build_motion_unet, lightning_filename, load_motion_adapter, resolve_motion
from v2v.tiny import diffusion as tiny_mod
from v2v.tiny.diffusion import (DEFAULT_REPOS, MOTION_CONFIG, lay_out_diffusion_hub, lay_out_hub_repo,
                                write_tiny_diffusion_set, write_tiny_motion)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    t = write_tiny_diffusion_set(tmp_path_factory.mktemp("tiny"))
    t["comfyui"] = write_tiny_motion(t["motion"].parent / "animatediff_lightning_4step_comfyui.safetensors",
                                     fmt="comfyui")
    return t


@pytest.fixture(scope="module")
def models(tiny):
    return load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"])


def use_hub_cache(monkeypatch, cache_dir):
    """Point huggingface_hub at ``cache_dir``, offline (it reads the env vars at import time: patch both)."""
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)


def test_tiny_files_are_small_and_deterministic(tiny, tmp_path):
    files = [p for k in ("base", "controlnet") for p in tiny[k].rglob("*") if p.is_file()] + [tiny["motion"]]
    assert sum(p.stat().st_size for p in files) < 5_000_000
    again = write_tiny_motion(tmp_path / "m.safetensors")
    a, b = load_file(str(again)), load_file(str(tiny["motion"]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a MotionAdapter state dict, in diffusers' key layout
    assert "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight" in a
    c = load_file(str(tiny["comfyui"]))
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight" \
        in c
    assert "mid_block.motion_modules.0.temporal_transformer.norm.bias" in c  # diffusers' "animatediff_v2" marker


def test_load_local(models, tiny):
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNetMotionModel

    assert isinstance(models, DiffusionModels)
    assert isinstance(models.unet, UNetMotionModel)
    assert isinstance(models.controlnet, ControlNetModel) and isinstance(models.vae, AutoencoderKL)
    assert models.vae_scale_factor == 8
    assert models.unet.dtype == torch.float32 and models.device == torch.device("cpu")
    assert models.tokenizer.model_max_length == 77
    assert models.unet.config.motion_max_seq_length == 32
    assert isinstance(models.scheduler, EulerDiscreteScheduler)
    assert models.scheduler.config.timestep_spacing == "trailing"
    assert models.scheduler.config.beta_schedule == "linear"
    s = type(models.scheduler).from_config(models.scheduler.config)
    s.set_timesteps(4)
    assert s.timesteps.tolist() == [999, 749, 499, 249]  # AnimateDiff-Lightning's 4-step schedule
    s.set_timesteps(2)
    assert s.timesteps.tolist() == [999, 499]
    s.set_timesteps(1)
    assert s.timesteps.tolist() == [999]


def test_inferred_adapter_matches_the_real_build(tiny):
    """The motion UNet built from an inferred config on the meta device equals diffusers' own from_unet2d."""
    from diffusers import UNet2DConditionModel, UNetMotionModel

    unet = UNet2DConditionModel.from_pretrained(tiny["base"] / "unet", torch_dtype=torch.float32)
    adapter = load_motion_adapter(tiny["motion"], unet.config)
    c = adapter.config
    assert tuple(c.block_out_channels) == MOTION_CONFIG["block_out_channels"]
    assert tuple(c.motion_layers_per_block) == (MOTION_CONFIG["motion_layers_per_block"],) * 2
    assert tuple(c.motion_transformer_layers_per_block) == (1, 1)
    assert c.motion_max_seq_length == MOTION_CONFIG["motion_max_seq_length"]  # read from pos_embed.pe
    assert c.use_motion_mid_block and c.motion_mid_block_layers_per_block == 1
    ours = build_motion_unet(unet, adapter).state_dict()
    ref = UNetMotionModel.from_unet2d(unet, adapter).state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)

    comfy = load_motion_adapter(tiny["comfyui"], unet.config).state_dict()
    diff = adapter.state_dict()
    assert comfy.keys() == diff.keys()
    for k in diff:  # same weights; the positional table is recomputed (diffusers' conversion drops it)
        if k.endswith("pos_embed.pe"):
            assert torch.allclose(comfy[k], diff[k], atol=1e-3)
        else:
            assert torch.equal(comfy[k], diff[k]), k


def test_load_comfyui_motion_file(tiny, models):
    m = load_diffusion_models(tiny["base"], tiny["comfyui"], tiny["controlnet"])
    a, b = m.unet.state_dict(), models.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("pos_embed.pe"))


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lightning_file_names(steps, tmp_path, monkeypatch):
    assert lightning_filename(steps) == f"animatediff_lightning_{steps}step_diffusers.safetensors"
    src = tmp_path / "src.safetensors"
    save_file({"x": torch.zeros(1)}, str(src))
    lay_out_hub_repo(tmp_path / "hub", DEFAULT_REPOS["motion"], {lightning_filename(n): src for n in (1, 2, 4, 8)})
    use_hub_cache(monkeypatch, tmp_path / "hub")
    p = resolve_motion("ByteDance/AnimateDiff-Lightning", steps)
    assert p.name == lightning_filename(steps) and p.is_file()
    assert "models--ByteDance--AnimateDiff-Lightning" in str(p)
    # a local folder holding the Lightning files picks by step count too
    assert resolve_motion(str(p.parent), steps).name == lightning_filename(steps)


@pytest.mark.parametrize("steps", [0, 3, 16])
def test_lightning_steps_invalid(steps):
    with pytest.raises(InvalidOptions):
        lightning_filename(steps)


def test_load_from_fake_hub_cache(tiny, tmp_path, monkeypatch, models):
    cache = tmp_path / "hub"
    lay_out_diffusion_hub(cache, tiny, steps=(2, 4))
    use_hub_cache(monkeypatch, cache)
    m = load_diffusion_models("emilianJR/epiCRealism", "ByteDance/AnimateDiff-Lightning",
                              "lllyasviel/control_v11p_sd15_openpose", lightning_steps=2)
    a, b = m.unet.state_dict(), models.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the 8-step file is not cached: offline, that is ModelNotFound naming the repo and the file
    with pytest.raises(ModelNotFound, match=r"ByteDance/AnimateDiff-Lightning/animatediff_lightning_8step"):
        load_diffusion_models("emilianJR/epiCRealism", "ByteDance/AnimateDiff-Lightning",
                              "lllyasviel/control_v11p_sd15_openpose", lightning_steps=8)


@pytest.mark.parametrize("which", ["base", "controlnet", "vae"])
def test_missing_repo_offline(tiny, tmp_path, monkeypatch, which):
    cache = tmp_path / "hub"
    lay_out_diffusion_hub(cache, tiny, steps=(4,))
    use_hub_cache(monkeypatch, cache)
    kw = dict(base="emilianJR/epiCRealism", motion="ByteDance/AnimateDiff-Lightning",
              controlnet="lllyasviel/control_v11p_sd15_openpose")
    if which == "vae":
        kw["vae"] = "stabilityai/sd-vae-ft-mse"
        name = "stabilityai/sd-vae-ft-mse"
    else:
        kw[which] = name = "nobody/not-cached"
    with pytest.raises(ModelNotFound, match=name) as e:
        load_diffusion_models(**kw)
    assert "HF_HUB_OFFLINE" in str(e.value) and "\n" not in str(e.value)


def test_missing_local_paths(tiny, tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_diffusion_models(tmp_path / "nope", tiny["motion"], tiny["controlnet"])
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_diffusion_models(tiny["base"], tmp_path / "nope.safetensors", tiny["controlnet"])
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_diffusion_models(tiny["base"], tiny["motion"], tmp_path / "nope")
    with pytest.raises(ModelNotFound):  # a folder with no motion file
        load_diffusion_models(tiny["base"], tmp_path, tiny["controlnet"])


def assert_one_line_load_error(match, **kw):
    with pytest.raises(ModelLoadError, match=match) as e:
        load_diffusion_models(**kw)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 5


def test_wrong_motion_files(tiny, tmp_path):
    kw = dict(base=tiny["base"], controlnet=tiny["controlnet"])
    # the ControlNet's weights are a safetensors file, but not a motion module
    assert_one_line_load_error("not an AnimateDiff motion module",
                        motion=tiny["controlnet"] / "diffusion_pytorch_model.safetensors", **kw)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all" * 10)
    assert_one_line_load_error("cannot be read", motion=junk, **kw)
    # an SDXL-like motion module (other channels) does not fit an SD1.5 UNet
    from diffusers import MotionAdapter

    xl = MotionAdapter(**{**MOTION_CONFIG, "block_out_channels": (64, 128)})
    save_file({k: v.contiguous() for k, v in xl.state_dict().items()}, str(tmp_path / "xl.safetensors"))
    assert_one_line_load_error("channels", motion=tmp_path / "xl.safetensors", **kw)
    # missing weights in a motion file
    sd = load_file(str(tiny["motion"]))
    sd = {k: v for k, v in sd.items() if "proj_out" not in k}
    save_file(sd, str(tmp_path / "cut.safetensors"))
    assert_one_line_load_error("missing", motion=tmp_path / "cut.safetensors", **kw)


def test_wrong_base_and_controlnet(tiny, tmp_path):
    from diffusers import UNet2DConditionModel

    # an SDXL-style UNet (text_time added embeddings) in an otherwise fine base folder
    xl = tmp_path / "xl"
    shutil.copytree(tiny["base"], xl)
    shutil.rmtree(xl / "unet")
    UNet2DConditionModel(**{**tiny_mod.UNET_CONFIG, "addition_embed_type": "text_time",
                            "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80}
                         ).save_pretrained(xl / "unet")
    assert_one_line_load_error("not Stable Diffusion 1.5", base=xl, motion=tiny["motion"],
                               controlnet=tiny["controlnet"])
    # a folder that is not a diffusers pipeline
    assert_one_line_load_error("not a diffusers SD1.5 folder", base=tiny["controlnet"], motion=tiny["motion"],
                        controlnet=tiny["controlnet"])
    # the VAE folder passed as ControlNet
    assert_one_line_load_error("ControlNet", base=tiny["base"], motion=tiny["motion"], controlnet=tiny["base"] / "vae")
    # a corrupt UNet weights file
    bad = tmp_path / "bad"
    shutil.copytree(tiny["base"], bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 100)
    assert_one_line_load_error("unet", base=bad, motion=tiny["motion"], controlnet=tiny["controlnet"])


def test_vae_override(tiny, models):
    m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], vae=str(tiny["base"]))
    a, b = m.vae.state_dict(), models.vae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_max_seq_length_read_from_file(tiny, tmp_path):
    """v1 modules have 24 positions, later ones 32: read from the positional table, both layouts."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny["base"] / "unet")
    sd = MotionAdapter(**{**MOTION_CONFIG, "motion_max_seq_length": 24}).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "v1.safetensors"))
    save_file({tiny_mod.diffusers_to_original_motion_key(k): v.contiguous() for k, v in sd.items()},
              str(tmp_path / "v1_orig.safetensors"))
    for name in ("v1.safetensors", "v1_orig.safetensors"):
        assert load_motion_adapter(tmp_path / name, unet.config).config.motion_max_seq_length == 24


# ---------------------------------------------------------------- the preflight: wrong models, one line, early


@pytest.fixture(scope="module")
def ckpt(tiny, tmp_path_factory):
    """The tiny base as one original-layout checkpoint (civitai style)."""
    return tiny_mod.write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", tiny["base"])


def _edit_config(src, dst, rel="config.json", **changes):
    import json

    shutil.copytree(src, dst)
    cfg = json.loads((dst / rel).read_text())
    cfg.update(changes)
    (dst / rel).write_text(json.dumps(cfg))
    return dst


def test_wrong_single_file_base(tiny, ckpt, tmp_path):
    kw = dict(motion=tiny["motion"], controlnet=tiny["controlnet"], base_config=str(tiny["base"]))
    sd = load_file(str(ckpt))

    def variant(name, changes=None, drop=()):
        d = {k: v for k, v in sd.items() if not k.startswith(tuple(drop))}
        d.update(changes or {})
        save_file(d, str(tmp_path / name))
        return str(tmp_path / name)

    z = torch.zeros(1)
    assert_one_line_load_error("is an SDXL checkpoint, not a Stable Diffusion 1.5 base model", **kw,
                               base=variant("xl.safetensors",
                                            {"conditioner.embedders.1.model.positional_embedding": z}))
    assert_one_line_load_error("is a Stable Diffusion 2.x checkpoint", **kw, base=variant(
        "sd2.safetensors", {"cond_stage_model.model.token_embedding.weight": z}, drop=["cond_stage_model."]))
    conv = sd["model.diffusion_model.input_blocks.0.0.weight"]
    assert_one_line_load_error("inpainting", **kw, base=variant(
        "inpaint.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(conv.shape[0], 9, 3, 3)}))
    assert_one_line_load_error("no CLIP text encoder", **kw,
                               base=variant("note.safetensors", drop=["cond_stage_model."]))
    # a motion module, a ControlNet given as the base: say where they go
    assert_one_line_load_error("is an AnimateDiff motion module, not a Stable Diffusion 1.5 base model: pass it "
                               "with --motion", **kw, base=str(tiny["comfyui"]))
    cn_file = tiny_mod.write_tiny_controlnet_file(tmp_path / "cn.pth", tiny["controlnet"])
    assert_one_line_load_error("pass it with --controlnet", **kw, base=str(cn_file))


def test_wrong_folders_by_config(tiny, tmp_path):
    kw = dict(motion=tiny["motion"], controlnet=tiny["controlnet"])
    sd2 = tmp_path / "sd2"
    shutil.copytree(tiny["base"], sd2)
    _edit_config(tiny["base"] / "unet", tmp_path / "u", cross_attention_dim=1024)
    shutil.rmtree(sd2 / "unet")
    shutil.move(tmp_path / "u", sd2 / "unet")
    assert_one_line_load_error(r"not Stable Diffusion 1.5 \(a Stable Diffusion 2.x UNet\)", base=sd2, **kw)
    # ControlNets: SD2 (text width 1024), SDXL, 1-channel conditions, named for another condition, not a ControlNet
    kw = dict(base=tiny["base"], motion=tiny["motion"])
    assert_one_line_load_error("does not fit the base model", **kw, controlnet=_edit_config(
        tiny["controlnet"], tmp_path / "cn_sd2", cross_attention_dim=1024))
    assert_one_line_load_error("is an SDXL ControlNet", **kw, controlnet=_edit_config(
        tiny["controlnet"], tmp_path / "cn_xl", addition_embed_type="text_time"))
    assert_one_line_load_error("1-channel conditions", **kw, controlnet=_edit_config(
        tiny["controlnet"], tmp_path / "cn_gray", conditioning_channels=1))
    canny = tmp_path / "control_v11p_sd15_canny"
    shutil.copytree(tiny["controlnet"], canny)
    assert_one_line_load_error("is a canny ControlNet", **kw, controlnet=canny)
    assert_one_line_load_error("is a depth ControlNet", **kw, controlnet="lllyasviel/control_v11f1p_sd15_depth")
    assert_one_line_load_error("is a Stable Diffusion 1.x checkpoint, not a ControlNet", **kw,
                               controlnet=str(tiny_mod.write_tiny_checkpoint(tmp_path / "sd.safetensors",
                                                                             tiny["base"])))
    # VAEs: 16 latent channels (SD3/Flux style), or not a VAE at all
    assert_one_line_load_error("16 latent channels", **kw, controlnet=tiny["controlnet"],
                               vae=_edit_config(tiny["base"] / "vae", tmp_path / "vae16", latent_channels=16))
    assert_one_line_load_error("not a diffusers AutoencoderKL", **kw, controlnet=tiny["controlnet"],
                               vae=tiny["controlnet"])
    assert_one_line_load_error("not an SD1.5 TAESD", **kw, controlnet=tiny["controlnet"], decoder=tiny["base"] / "vae")


def test_wrong_motion_kinds(tiny, ckpt, tmp_path):
    kw = dict(base=tiny["base"], controlnet=tiny["controlnet"])
    assert_one_line_load_error("is a Stable Diffusion 1.x checkpoint, not an AnimateDiff motion module",
                               motion=ckpt, **kw)
    lora = tiny_mod.write_tiny_motion_lora(tmp_path / "v2_lora_PanLeft.ckpt", fmt="original")
    assert_one_line_load_error("is a motion LoRA, not an AnimateDiff motion module: pass it with --motion-lora",
                               motion=lora, **kw)


def test_preflight_reads_no_weights(tiny, ckpt, tmp_path, monkeypatch):
    """check_models passes a good set (single-file base and ControlNet, both LoRA formats, a VAE file) from
    headers and configs alone: loading any tensor data fails the test."""
    import safetensors.torch

    from v2v.models import check as models_mod

    lora_ckpt = tiny_mod.write_tiny_motion_lora(tmp_path / "v2_lora_ZoomIn.ckpt", fmt="original")
    lora_dir = tiny_mod.write_tiny_motion_lora(tmp_path / "zoom", fmt="diffusers").parent
    cn = tiny_mod.write_tiny_controlnet_file(tmp_path / "control_v11p_sd15_openpose.pth", tiny["controlnet"])
    vae = tiny_mod.write_tiny_vae_file(tmp_path / "vae.safetensors", tiny["base"])
    real_load = torch.load

    def meta_only(*a, **k):
        assert k.get("map_location") == "meta", "the preflight read weights"
        return real_load(*a, **k)

    def no(*a, **k):
        raise AssertionError("the preflight read weights")

    monkeypatch.setattr(safetensors.torch, "load_file", no)
    monkeypatch.setattr(torch, "load", meta_only)
    models_mod.check_models(str(ckpt), tiny["motion"], str(cn), vae=str(vae), base_config=str(tiny["base"]),
                            controlnet_config=str(tiny["controlnet"]),
                            motion_loras=[(str(lora_ckpt), 0.8), (str(lora_dir), 1.0)])
    with pytest.raises(ModelLoadError, match="SDXL"):  # and it does catch what it should
        models_mod.check_models(str(ckpt), tiny["motion"], tiny["controlnet"], base_config=str(xl_unet_folder(
            tiny, tmp_path)))


def xl_unet_folder(tiny, tmp_path):
    """The tiny base's configs with an SDXL UNet config (as a wrong base_config)."""
    folder = tmp_path / "xl_configs"
    shutil.copytree(tiny["base"], folder)
    shutil.rmtree(folder / "unet")
    _edit_config(tiny["base"] / "unet", folder / "unet", addition_embed_type="text_time")
    return folder
