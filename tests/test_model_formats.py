"""Model formats, each on tiny models written in that exact format: single-file SD1.5 checkpoints (CompVis/A1111
layout) and ControlNets (lllyasviel .pth / .safetensors), motion LoRAs (diffusers repos and original .ckpt),
a custom VAE (repo or file), TAESD for --fast-decode; the configs single files need come from the fake hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from v2v.errors import InvalidOptions, ModelLoadError
from v2v.models.check import check_models
from v2v.models.files import model_kind, read_header
from v2v.models.load import load_diffusion_models
from v2v.models.motion import lora_deltas, merge_motion_loras, resolve_motion_lora
from v2v.option_values import parse_motion_lora
from v2v.options import RestyleOptions
from v2v.tiny import diffusion as tiny_mod
from v2v.tiny.diffusion import (lay_out_diffusion_hub, lay_out_hub_repo, tiny_motion_lora, write_tiny_checkpoint,
                                write_tiny_controlnet_file, write_tiny_diffusion_set, write_tiny_motion,
                                write_tiny_motion_lora, write_tiny_taesd, write_tiny_vae_file)

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "dance.mp4"
ZOOM = "guoyww/animatediff-motion-lora-zoom-in"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    t = write_tiny_diffusion_set(root / "set")
    t["ckpt"] = write_tiny_checkpoint(root / "files" / "tinyRealism_v1.safetensors", t["base"])
    t["cn_pth"] = write_tiny_controlnet_file(root / "files" / "control_v11p_sd15_openpose.pth", t["controlnet"])
    t["lora_dir"] = write_tiny_motion_lora(root / "lora" / "zoom-in", fmt="diffusers").parent
    t["lora_ckpt"] = write_tiny_motion_lora(root / "lora" / "v2_lora_ZoomIn.ckpt", fmt="original")
    t["taesd"] = write_tiny_taesd(root / "taesd")
    # the fake hub: the default repos (the configs single files load with), a VAE repo, TAESD, a motion LoRA repo
    cache = root / "hub"
    lay_out_diffusion_hub(cache, t, steps=(4,))
    lay_out_hub_repo(cache, "stabilityai/sd-vae-ft-mse", {"": t["base"] / "vae"})
    lay_out_hub_repo(cache, "madebyollin/taesd", {"": t["taesd"]})
    lora = "diffusion_pytorch_model.safetensors"
    lay_out_hub_repo(cache, ZOOM, {lora: t["lora_dir"] / lora})
    t["hub"] = cache
    return t


@pytest.fixture
def hub(tiny, monkeypatch):
    """huggingface_hub pointed at the module's fake cache, offline."""
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_CACHE", str(tiny["hub"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tiny["hub"]))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return tiny["hub"]


@pytest.fixture(scope="module")
def folder_models(tiny):
    return load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"])


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------- single-file base and ControlNet


def test_tiny_checkpoint_is_in_the_original_layout(tiny):
    keys = read_header(tiny["ckpt"])
    assert model_kind(keys) == "sd1"
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" not in keys  # no up-sampler in the last level
    assert keys["first_stage_model.encoder.mid.attn_1.q.weight"][2:] == (1, 1)  # attention as 1x1 convs, as LDM
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert not any(k.startswith(("unet.", "vae.", "down_blocks.")) for k in keys)
    cn = read_header(tiny["cn_pth"])
    assert model_kind(cn) == "controlnet" and "control_model.input_hint_block.14.weight" in cn
    assert "control_model.zero_convs.0.0.weight" in cn and "control_model.middle_block_out.0.weight" in cn


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_base_equals_the_folder(tiny, hub, folder_models, suffix, tmp_path):
    """Written back to the original layout and loaded by diffusers' single-file code with the configs of the
    default base repo (from the fake hub, offline): every weight equals the diffusers folder's."""
    path = tiny["ckpt"] if suffix == ".safetensors" else write_tiny_checkpoint(tmp_path / "m.ckpt", tiny["base"])
    m = load_diffusion_models(str(path), tiny["motion"], tiny["controlnet"])
    for part in ("unet", "vae", "text_encoder", "controlnet"):
        assert same(getattr(m, part), getattr(folder_models, part)), part
    assert m.tokenizer("a person dancing").input_ids == folder_models.tokenizer("a person dancing").input_ids
    assert m.scheduler.config.timestep_spacing == "trailing"


def test_single_file_controlnet_pth_and_safetensors(tiny, hub, folder_models, tmp_path):
    st = write_tiny_controlnet_file(tmp_path / "control_v11p_sd15_openpose_fp16.safetensors", tiny["controlnet"])
    for path in (tiny["cn_pth"], st):
        m = load_diffusion_models(tiny["base"], tiny["motion"], str(path))
        assert same(m.controlnet, folder_models.controlnet), path.name


def test_pickles_load_tensors_only(tiny, tmp_path):
    """A .pth/.ckpt with pickled objects besides tensors is refused (torch.load weights_only=True)."""
    sd = torch.load(tiny["cn_pth"], weights_only=True)
    bad = tmp_path / "control_v11p_sd15_openpose.pth"
    torch.save({"state_dict": sd, "callback": Path("x")}, bad)  # a class instance: code on unpickling
    with pytest.raises(ModelLoadError, match="pickled Python objects") as e:
        load_diffusion_models(tiny["base"], tiny["motion"], str(bad))
    assert "\n" not in str(e.value)
    lora = tmp_path / "v2_lora_ZoomIn.ckpt"
    torch.save({"state_dict": torch.load(tiny["lora_ckpt"], weights_only=True), "cfg": Path("y")}, lora)
    with pytest.raises(ModelLoadError, match="pickled Python objects"):
        load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], motion_loras=[(str(lora), 1.0)])


def test_single_file_configs_missing_offline_name_the_repo(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    empty = tmp_path / "empty-hub"
    empty.mkdir()
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(empty))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from v2v.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match="emilianJR/epiCRealism") as e:
        check_models(str(tiny["ckpt"]), tiny["motion"], tiny["controlnet"])
    assert "single-file" in str(e.value) and "\n" not in str(e.value)
    # a local folder of configs works offline with no cache at all
    check_models(str(tiny["ckpt"]), tiny["motion"], tiny["controlnet"], base_config=str(tiny["base"]))


# ---------------------------------------------------------------- motion LoRAs


def test_parse_motion_lora():
    assert parse_motion_lora(ZOOM) == (ZOOM, 1.0)
    assert parse_motion_lora(f"{ZOOM}:0.8") == (ZOOM, 0.8)
    assert parse_motion_lora(r"C:\loras\v2_lora_ZoomIn.ckpt") == (r"C:\loras\v2_lora_ZoomIn.ckpt", 1.0)
    assert parse_motion_lora(r"C:\loras\v2_lora_ZoomIn.ckpt:0.7") == (r"C:\loras\v2_lora_ZoomIn.ckpt", 0.7)
    assert parse_motion_lora("/loras/a:b.ckpt") == ("/loras/a:b.ckpt", 1.0)
    assert parse_motion_lora("zoom.ckpt:-0.5") == ("zoom.ckpt", -0.5)


def test_motion_lora_options_and_cli():
    from v2v.cli import build_parser, typed_options

    o = RestyleOptions(prompt="x", motion_loras=f"{ZOOM}:0.8").validate()
    assert o.motion_loras == (f"{ZOOM}:0.8",)
    assert RestyleOptions(prompt="x", motion_loras=["a.ckpt", "b.ckpt:0.5"]).validate().motion_loras == \
        ("a.ckpt", "b.ckpt:0.5")
    for bad, needle in ((f"{ZOOM}:3", "between -2 and 2"), (f"{ZOOM}:nan", "between -2 and 2"),
                        (":0.7", "names no LoRA")):
        with pytest.raises(InvalidOptions, match=needle):
            RestyleOptions(prompt="x", motion_loras=(bad,)).validate()
    with pytest.raises(InvalidOptions, match="--vae"):
        RestyleOptions(prompt="x", vae=" ").validate()
    a = build_parser().parse_args(["restyle", "in.mp4", "-p", "x", "--motion-lora", f"{ZOOM}:0.8", "--motion-lora",
                                   r"C:\x.ckpt", "--vae", "stabilityai/sd-vae-ft-mse", "--fast-decode"])
    opts = typed_options(a, "restyle")
    assert opts["motion_loras"] == (f"{ZOOM}:0.8", r"C:\x.ckpt")
    assert opts["vae"] == "stabilityai/sd-vae-ft-mse" and opts["fast_decode"] is True
    RestyleOptions(prompt="x", **{k: v for k, v in opts.items() if v is not None}).validate()
    b = typed_options(build_parser().parse_args(["restyle", "in.mp4", "-p", "x"]), "restyle")
    # not typed: left out, so a config file or preset can fill them (RestyleOptions' defaults otherwise)
    assert b == {}


def test_merge_is_w_plus_strength_up_down():
    """On a hand-made LoRA: W + s * up @ down; with an alpha: W + s * alpha/rank * up @ down; strength 0: W."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g)
    up, down = torch.randn(6, 2, generator=g), torch.randn(2, 5, generator=g)
    key = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
    sd = {key: w, "other.weight": torch.ones(3)}
    orig = {"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
            ".processor.to_q_lora.down.weight": down,
            "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
            ".processor.to_q_lora.up.weight": up}
    merged = merge_motion_loras(sd, [(orig, 0.75)])
    assert torch.allclose(merged[key], w + 0.75 * up @ down, atol=1e-6)
    assert not torch.allclose(merged[key], w, atol=1e-3)
    assert merged["other.weight"] is sd["other.weight"] and sd[key] is w  # untouched, input not mutated
    kohya = {f"unet.{key[:-len('.weight')]}.lora_down.weight": down,
             f"unet.{key[:-len('.weight')]}.lora_up.weight": up,
             f"unet.{key[:-len('.weight')]}.alpha": torch.tensor(1.0)}
    assert torch.allclose(merge_motion_loras(sd, [(kohya, 2.0)])[key], w + 2.0 * 0.5 * up @ down, atol=1e-6)
    assert torch.equal(merge_motion_loras(sd, [(orig, 0.0)])[key], w)
    both = merge_motion_loras(sd, [(orig, 0.5), (kohya, 1.0)])  # several LoRAs add up
    assert torch.allclose(both[key], w + 0.5 * up @ down + 0.5 * up @ down, atol=1e-6)


def test_both_lora_formats_give_the_same_deltas(tiny):
    d = lora_deltas(load_file(str(tiny["lora_dir"] / "diffusion_pytorch_model.safetensors")))
    o = lora_deltas(torch.load(tiny["lora_ckpt"], weights_only=True))
    made = tiny_motion_lora()
    # q, k, v, out x 2 attentions x 7 modules (2 down, mid, 4 up)
    assert d.keys() == o.keys() == made.keys() and len(d) == 4 * 2 * 7
    for k, (up, down) in made.items():
        assert torch.equal(d[k], o[k])
        assert torch.allclose(d[k], up.half().float() @ down.half().float())
    raw = load_file(str(tiny["lora_dir"] / "diffusion_pytorch_model.safetensors"))
    assert "unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight" in raw
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor" \
           ".to_out_lora.up.weight" in torch.load(tiny["lora_ckpt"], weights_only=True)


def _motion_weights(m):
    return {k: v for k, v in m.unet.state_dict().items() if ".motion_modules." in k}


def test_load_with_motion_loras(tiny, hub, folder_models):
    """Hub repo (diffusers format) at 0.8 plus the original .ckpt at 0.5: each target weight is
    W + 0.8 delta + 0.5 delta; everything else is untouched; strength 0 changes nothing."""
    m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"],
                              motion_loras=[(ZOOM, 0.8), (str(tiny["lora_ckpt"]), 0.5)])
    base, got = _motion_weights(folder_models), _motion_weights(m)
    deltas = lora_deltas(torch.load(tiny["lora_ckpt"], weights_only=True))
    for k in base:
        if k in deltas:
            assert torch.allclose(got[k], base[k] + 1.3 * deltas[k], atol=1e-5), k
        else:
            assert torch.equal(got[k], base[k]), k
    assert same(m.controlnet, folder_models.controlnet)
    zero = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], motion_loras=[(ZOOM, 0.0)])
    assert same(zero.unet, folder_models.unet)


def test_motion_lora_resolution(tiny, hub):
    assert resolve_motion_lora(ZOOM).name == "diffusion_pytorch_model.safetensors"
    assert "models--guoyww--animatediff-motion-lora-zoom-in" in str(resolve_motion_lora(ZOOM))
    assert resolve_motion_lora(str(tiny["lora_dir"])) == tiny["lora_dir"] / "diffusion_pytorch_model.safetensors"
    assert resolve_motion_lora(str(tiny["lora_ckpt"])) == tiny["lora_ckpt"]


def test_lora_errors(tiny, tmp_path):
    kw = dict(base=tiny["base"], motion=tiny["motion"], controlnet=tiny["controlnet"])

    def fails(match, sd, name="lora.safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / name))
        with pytest.raises(ModelLoadError, match=match) as e:
            load_diffusion_models(**kw, motion_loras=[(str(tmp_path / name), 1.0)])
        assert "\n" not in str(e.value) and e.value.exit_code == 5

    good = load_file(str(tiny["lora_dir"] / "diffusion_pytorch_model.safetensors"))
    # keys that match nothing in the motion module (another module's layout)
    fails("does not have", {k.replace("motion_modules.0", "motion_modules.7"): v for k, v in good.items()})
    # right names, wrong shapes (made for a wider module)
    fails("does not fit", {k: torch.zeros(v.shape[0], 2 * v.shape[1]) if k.endswith("down.weight") else v
                           for k, v in good.items()})
    # an image LoRA (spatial attention, no motion modules)
    fails("image LoRA", {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight":
                         torch.zeros(2, 32),
                         "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight":
                         torch.zeros(32, 2)})
    # a down factor without its up factor
    fails("without its partner", {k: v for k, v in good.items() if not k.endswith("to_q_lora.up.weight")})
    # the motion module itself given as a LoRA
    with pytest.raises(ModelLoadError, match="pass it with --motion"):
        load_diffusion_models(**kw, motion_loras=[(str(tiny["motion"]), 1.0)])


# ---------------------------------------------------------------- VAE and TAESD


def test_custom_vae_repo_and_file(tiny, hub, folder_models, tmp_path):
    from diffusers import AutoencoderKL

    other = tmp_path / "other_vae"
    torch.manual_seed(7)
    AutoencoderKL(**tiny_mod.VAE_CONFIG).save_pretrained(other)
    ref = AutoencoderKL.from_pretrained(other)
    folder = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], vae=str(other))
    assert same(folder.vae, ref) and not same(folder.vae, folder_models.vae)
    # the same VAE as one original-layout file (as vae-ft-mse-840000-ema-pruned.safetensors)
    ldm = tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"
    sd = {k: v for k, v in ref.state_dict().items()}
    save_file({k: v.contiguous() for k, v in tiny_mod.diffusers_to_ldm_vae(sd, 4).items()}, str(ldm))
    assert model_kind(read_header(ldm)) == "vae"
    single = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], vae=str(ldm))
    assert same(single.vae, ref)
    assert same(single.unet, folder_models.unet)  # the rest is the base's
    # a hub id, from the fake cache
    repo = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], vae="stabilityai/sd-vae-ft-mse")
    assert same(repo.vae, folder_models.vae)


def test_checkpoint_without_vae_needs_vae(tiny, hub, folder_models, tmp_path):
    sd = load_file(str(tiny["ckpt"]))
    novae = tmp_path / "realistic_noVAE.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}, str(novae))
    with pytest.raises(ModelLoadError, match="--vae stabilityai/sd-vae-ft-mse"):
        load_diffusion_models(str(novae), tiny["motion"], tiny["controlnet"])
    vae_file = write_tiny_vae_file(tmp_path / "vae.safetensors", tiny["base"])
    m = load_diffusion_models(str(novae), tiny["motion"], tiny["controlnet"], vae=str(vae_file))
    assert same(m.vae, folder_models.vae) and same(m.unet, folder_models.unet)


def test_fast_decode_matches_diffusers_taesd_decoding(tiny, hub, folder_models):
    """TAESD's scaling_factor is 1.0: it decodes the UNet's latents as they are. v2v's decode equals diffusers'
    AnimateDiff pipeline decode_latents with vae=AutoencoderTiny, and differs from dividing by 0.18215."""
    from diffusers import AnimateDiffControlNetPipeline, AutoencoderTiny

    from v2v.vae import decode_latents, decode_to_float

    m = load_diffusion_models(tiny["base"], tiny["motion"], tiny["controlnet"], decoder="madebyollin/taesd")
    assert isinstance(m.decoder, AutoencoderTiny) and m.decoder.config.scaling_factor == 1.0
    assert same(m.vae, folder_models.vae)  # the VAE stays (it encodes), the decoder is added
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = decode_to_float(m, latents)
    assert ours.shape == (3, 3, 64, 64)
    pipe = AnimateDiffControlNetPipeline(vae=m.decoder, text_encoder=m.text_encoder, tokenizer=m.tokenizer,
                                         unet=m.unet, motion_adapter=None, controlnet=m.controlnet,
                                         scheduler=m.scheduler)
    ref = pipe.decode_latents(latents.permute(1, 0, 2, 3)[None])  # (1, 3, frames, H, W) in [-1, 1]
    ref = (ref[0].permute(1, 0, 2, 3) * 0.5 + 0.5).clamp(0, 1)
    assert torch.allclose(ours, ref, atol=1e-5)
    wrong = (m.decoder.decode(latents / 0.18215).sample * 0.5 + 0.5).clamp(0, 1)
    assert (ours - wrong).abs().max() > 0.05
    assert (ours - decode_to_float(folder_models, latents)).abs().max() > 0.05  # not the VAE
    frames = list(decode_latents(m, latents, chunk=2))
    assert all(f.dtype.name == "uint8" and f.shape == (64, 64, 3) for f in frames)
    assert all((f.astype(float) - (o.permute(1, 2, 0).numpy() * 255)).__abs__().max() <= 1
               for f, o in zip(frames, ours))


# ---------------------------------------------------------------- the pipeline


def test_restyle_preflight_fails_before_decoding(tiny_models, tmp_path, monkeypatch):
    """A wrong model stops the run before the first frame is decoded (and before any output exists)."""
    import v2v
    from v2v.media import decode

    opened = []

    class NoDecoder:
        def __init__(self, *a, **k):
            opened.append(1)
            raise AssertionError("decoded before the models were checked")

    monkeypatch.setattr(decode, "Decoder", NoDecoder)
    r = v2v.Restyler(models="tiny", size=64, max_frames=4, show_progress=False)
    lora = write_tiny_motion_lora(tmp_path / "v2_lora_ZoomIn.ckpt", fmt="original")
    with pytest.raises(ModelLoadError, match="is a motion LoRA, not an AnimateDiff motion module: pass it with "
                                             "--motion-lora"):
        r.restyle(SAMPLE, tmp_path / "o.mp4", prompt="x", motion=str(lora))
    with pytest.raises(ModelLoadError, match="is a ControlNet, not an AnimateDiff motion module"):
        r.restyle(SAMPLE, tmp_path / "o.mp4", prompt="x",
                  motion=str(tiny_models["controlnet"] / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelLoadError, match="is a canny ControlNet"):
        r.restyle(SAMPLE, tmp_path / "o.mp4", prompt="x", controlnet="lllyasviel/control_v11p_sd15_canny")
    assert opened == [] and list(tmp_path.iterdir()) == [lora]


def test_restyler_model_key_has_loras_and_decoder(tiny_models, tmp_path):
    """Merged LoRAs change the weights: a new strength loads anew; the same options reuse the loaded set."""
    import v2v

    lora = write_tiny_motion_lora(tmp_path / "zoom", fmt="diffusers")
    r = v2v.Restyler(models="tiny", size=64, max_frames=4, show_progress=False)
    a = r.restyle(SAMPLE, tmp_path / "a.mp4", prompt="x", motion_loras=(f"{lora}:0.8",), fast_decode=True)
    first = r.loaded_models[0]
    assert first.decoder is not None
    r.restyle(SAMPLE, tmp_path / "b.mp4", prompt="x", motion_loras=(f"{lora}:0.8",), fast_decode=True)
    assert r.loaded_models[0] is first
    r.restyle(SAMPLE, tmp_path / "c.mp4", prompt="x", motion_loras=(f"{lora}:0.4",), fast_decode=True)
    second = r.loaded_models[0]
    assert second is not first and len(r.loaded_models) == 1
    diff = [k for k, v in first.unet.state_dict().items() if not torch.equal(v, second.unet.state_dict()[k])]
    assert diff and all(".motion_modules." in k for k in diff)
    assert a.frames == 4 and a.settings["options"]["motion_loras"] == [f"{lora}:0.8"] and \
        a.settings["options"]["fast_decode"] is True


def test_cli_formats_on_fake_hub(fake_hub, tmp_path):
    """The default command with a motion LoRA from the hub, a VAE repo and --fast-decode, offline."""
    import subprocess
    import sys

    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "v2v", "restyle", str(SAMPLE), "-p", "x", "--size", "64",
                        "--max-frames", "4", "--motion-lora", f"{ZOOM}:0.8", "--vae", "stabilityai/sd-vae-ft-mse",
                        "--fast-decode", "-o", str(out)], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "HF_HUB_CACHE": str(fake_hub), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    import av

    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    assert "merged 1 motion LoRA" in r.stderr and "TAESD" in r.stderr


def test_missing_lora_offline_names_repo_and_file(fake_hub, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "v2v", "restyle", str(SAMPLE), "-p", "x", "--size", "64",
                        "--motion-lora", "guoyww/animatediff-motion-lora-pan-left:0.7", "-o", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_CACHE": str(fake_hub), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 5, r.stderr
    assert "guoyww/animatediff-motion-lora-pan-left/diffusion_pytorch_model.safetensors" in r.stderr
    assert "online" in r.stderr and "Traceback" not in r.stderr and not out.exists()
    assert "loading the pose detector" not in r.stderr  # failed before the pose stage started


def test_original_motion_module_ckpt(tiny, folder_models, tmp_path):
    """An original AnimateDiff v2 module as a .ckpt pickle (as mm_sd_v15_v2.ckpt) loads to the same weights."""
    sd = load_file(str(write_tiny_motion(tmp_path / "c.safetensors", fmt="comfyui")))
    ckpt = tmp_path / "mm_sd_v15_v2.ckpt"
    torch.save({"state_dict": sd}, ckpt)
    assert model_kind(read_header(ckpt)) == "motion"
    m = load_diffusion_models(tiny["base"], str(ckpt), tiny["controlnet"])
    a, b = _motion_weights(m), _motion_weights(folder_models)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith("pos_embed.pe"))
