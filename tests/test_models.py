"""Loading the diffusion models: local files/folders, the HF cache layout under the real repo ids, errors."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from v2v.errors import InvalidOptions, ModelLoadError, ModelNotFound
from v2v.models import (DiffusionModels, build_motion_unet, lightning_filename, load_diffusion_models,
                        load_motion_adapter, resolve_motion)
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
    assert s.timesteps.tolist() == [999, 749, 499, 249]  # DESIGN.md decision 2
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
    assert_one_line_load_error("not Stable Diffusion 1.5", base=xl, motion=tiny["motion"], controlnet=tiny["controlnet"])
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
