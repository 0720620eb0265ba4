#!/usr/bin/env python3
"""The work per frame, counted: the matrix-multiply and convolution FLOPs of v2v's sampler and of diffusers'
AnimateDiffControlNetPipeline (FreeNoise for more than ``context`` frames), the same components and settings.

Counted on the meta device (shapes only, no weights, no data: a second or two on any machine) by running every
model call each of them makes, with torch's FlopCounterMode: v2v's segments through the ControlNet and the UNet
with its motion windows in place, per step, then the decoder (VAE or TAESD) per frame; diffusers' whole video
through the ControlNet and the UNet (with its FreeNoise blocks) per step, then the VAE. The text encoder (once
per prompt) and element-wise work (norms, activations, the sampler's fusion) are left out. The accounting is
checked against torch's count of real runs on the tiny models (tests/test_flops.py).

What it says: the speed-up over diffusers that v2v could get at the same hardware efficiency
(``work_ratio``), and, given a measured time, the TFLOP/s the run achieved.

    python scripts/flops.py --frames 48,160,480            # SD 1.5 geometry at 512x512, 4 steps, CFG 1
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

META = torch.device("meta")


def sd15_modules(device, dtype=torch.float16) -> dict:
    """SD 1.5-sized models, randomly initialised on ``device`` (no weights on "meta"): unet (UNet2DConditionModel),
    vae, text_encoder, adapter (the motion module's geometry: AnimateDiff-Lightning's, SD 1.5 v2), controlnet
    (OpenPose's geometry: the UNet's encoder) and taesd (madebyollin/taesd's geometry)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        built = {
            "unet": unet,
            "vae": AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                                 sample_size=512),
            "text_encoder": CLIPTextModel(CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                max_position_embeddings=77, vocab_size=49408, projection_dim=768, hidden_act="quick_gelu")),
            "adapter": MotionAdapter(),  # the defaults are the SD 1.5 v2 motion module's (Lightning's) geometry
            "controlnet": ControlNetModel.from_unet(unet),
            "taesd": AutoencoderTiny(),  # the defaults are madebyollin/taesd's geometry
        }
    return {k: m.to(dtype) for k, m in built.items()}


@dataclass
class Twins:
    """Shape-only twins (meta device) of a model set: the motion UNet, ControlNet, VAE, TAESD (or None)."""

    unet: torch.nn.Module
    controlnet: torch.nn.Module
    vae: torch.nn.Module
    taesd: torch.nn.Module | None
    dtype: torch.dtype
    text_tokens: int = 77  # the text encoder's sequence length (the cross-attention's keys)

    @property
    def scale_factor(self) -> int:
        """Pixels per latent, as ``DiffusionModels.vae_scale_factor``."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def of(cls, models) -> Twins:
        """Twins of a loaded ``v2v.models.DiffusionModels`` (the same configs; compiled or wrapped or not)."""
        def twin(module):
            base = getattr(module, "_orig_mod", module)
            with torch.device(META):
                return type(base).from_config(base.config).to(models.dtype).eval()

        # the prompt embeddings' length: the tokenizer pads every prompt to it (v2v.sampler.encode_prompt)
        tokens = getattr(models.tokenizer, "model_max_length", 77)
        return cls(twin(models.unet), twin(models.controlnet), twin(models.vae),
                   twin(models.decoder) if models.decoder is not None else None, models.dtype, tokens)

    @classmethod
    def sd15(cls, dtype=torch.float16) -> Twins:
        """SD 1.5's geometry with AnimateDiff's motion module, the OpenPose ControlNet and TAESD."""
        from diffusers import UNetMotionModel

        m = sd15_modules(META, dtype)
        with torch.device(META):
            unet = UNetMotionModel.from_unet2d(m["unet"], m["adapter"], load_weights=False).to(dtype)
        return cls(unet.eval(), m["controlnet"].eval(), m["vae"].eval(), m["taesd"].eval(), dtype)


def _sig(x: float, digits: int = 5) -> float:
    """``x`` to ``digits`` significant figures (the tiny models do a millionth of the real ones' work)."""
    return float(f"{x:.{digits}g}")


def _flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _meta(*shape, dtype) -> torch.Tensor:
    return torch.empty(*shape, device=META, dtype=dtype)


def _pass_flops(tw: Twins, n: int, h: int, w: int, halves: int, controlnet: bool) -> tuple[int, int]:
    """(ControlNet, UNet) FLOPs of one call on ``n`` frames of latents h x w, as v2v's ``_predict_segment``
    makes it: the ControlNet on (halves * n) frames, the motion UNet on (halves, 4, n, h, w)."""
    sf = tw.scale_factor
    x = _meta(halves * n, tw.unet.config.in_channels, h, w, dtype=tw.dtype)
    emb = _meta(halves * n, tw.text_tokens, tw.unet.config.cross_attention_dim, dtype=tw.dtype)
    t = torch.full((), 500.0, device=META)
    res: dict = {}

    def run_cn():
        res["cn"] = tw.controlnet(x, t, encoder_hidden_states=emb, controlnet_cond=_meta(
            halves * n, 3, h * sf, w * sf, dtype=tw.dtype), conditioning_scale=1.0, return_dict=False)

    cn = _flops(run_cn) if controlnet else 0
    down, mid = res.get("cn", (None, None))
    sample = x.reshape(halves, n, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    unet = _flops(lambda: tw.unet(sample, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid))
    return cn, unet


def _decode_flops(decoder, n: int, h: int, w: int, dtype) -> int:
    return _flops(lambda: decoder.decode(_meta(n, 4, h, w, dtype=dtype)))


def _sampler_plan(s: Mapping, num_frames: int) -> tuple[int, list[bool], int, list]:
    """What v2v.sampler.generate runs for ``settings``: the steps it runs, per step whether the ControlNet acts,
    the CFG halves, and the segments (each through the ControlNet and the UNet once per step)."""
    from v2v.option_values import strength_steps
    from v2v.windows import control_scales, plan_video

    steps = int(s.get("steps", 4))
    strength = float(s.get("strength", 1.0))
    run_steps = strength_steps(steps, strength) if strength < 1 else steps
    scales = control_scales(run_steps, float(s.get("control_start", 0.0)), float(s.get("control_end", 1.0)))
    acting = [float(s.get("pose_strength", 1.0)) * c != 0 for c in scales]
    halves = 2 if float(s.get("guidance", 1.0)) > 1 else 1
    _, segments = plan_video(num_frames, int(s.get("context", 16)), int(s.get("overlap", 4)),
                             int(s["frame_budget"]), bool(s.get("loop", False)))
    return run_steps, acting, halves, segments


def planned_passes(settings: Mapping, num_frames: int) -> float:
    """The frames through the UNet's first convolution per output frame per requested step that ``settings``
    plan (what scripts/bench.py's ``spatial_passes`` counts in a run: CFG halves and the steps --strength skips
    included), to check a record's settings against what the run did."""
    run_steps, _, halves, segments = _sampler_plan(settings, num_frames)
    frames = sum(len(seg.frames) for seg in segments)
    return halves * run_steps * frames / (num_frames * int(settings.get("steps", 4)))


def v2v_work(tw: Twins, settings: Mapping, num_frames: int, width: int, height: int) -> dict[str, int]:
    """FLOPs of one v2v restyle of ``num_frames`` frames at width x height with ``settings`` (a
    ``RestyleResult.settings``: steps, guidance, context, overlap, frame_budget (resolved), loop, strength,
    control_start, control_end, pose_strength, fast_decode), by model: controlnet, unet, encode (the VAE's encoder
    for strength < 1), decode (VAE or TAESD), and total."""
    from v2v.motion_windows import motion_windows
    from v2v.windows import segment_weights

    s = settings
    strength = float(s.get("strength", 1.0))
    _, acting, halves, segments = _sampler_plan(s, num_frames)
    h, w = height // tw.scale_factor, width // tw.scale_factor
    out = {"controlnet": 0, "unet": 0, "encode": 0, "decode": 0}
    seen: dict = {}
    with motion_windows(tw.unet) as plan:
        for seg in segments:
            for on in set(acting):
                key = (len(seg.frames), seg.windows, on)
                if key not in seen:
                    plan.set(len(seg.frames), seg.windows, segment_weights(seg)[1], META, tw.dtype)
                    seen[key] = _pass_flops(tw, len(seg.frames), h, w, halves, on)
                cn, unet = seen[key]
                times = acting.count(on)
                out["controlnet"] += cn * times
                out["unet"] += unet * times
    if strength < 1:
        out["encode"] = _flops(lambda: tw.vae.encode(_meta(num_frames, 3, height, width, dtype=tw.dtype)))
    decoder = tw.taesd if s.get("fast_decode") else tw.vae
    if decoder is None:
        raise ValueError("fast_decode needs the TAESD twin")
    out["decode"] = _decode_flops(decoder, num_frames, h, w, tw.dtype)
    out["total"] = sum(out.values())
    return out


def diffusers_work(tw: Twins, num_frames: int, width: int, height: int, steps: int = 4, guidance: float = 1.0,
                   context: int = 16, stride: int = 12) -> dict[str, int]:
    """FLOPs of diffusers' AnimateDiffControlNetPipeline on the same models (FreeNoise with ``context`` and
    ``stride`` for more than ``context`` frames, as the bench runs it), by model: controlnet, unet, decode
    (the VAE), total. Every step runs the ControlNet and the UNet on the whole video at once."""
    from diffusers import AnimateDiffControlNetPipeline, EulerDiscreteScheduler

    unet = copy.deepcopy(tw.unet)  # FreeNoise swaps its motion blocks
    if num_frames > context:
        pipe = AnimateDiffControlNetPipeline(vae=tw.vae, text_encoder=None, tokenizer=None, unet=unet,
                                             motion_adapter=None, controlnet=tw.controlnet,
                                             scheduler=EulerDiscreteScheduler())
        # FreeNoise reads the motion module's length limit from the adapter's config; here it is in the UNet's
        limit = unet.config.get("motion_max_seq_length") or 32
        object.__setattr__(pipe, "motion_adapter", SimpleNamespace(config=SimpleNamespace(motion_max_seq_length=limit)))
        pipe.enable_free_noise(context_length=context, context_stride=stride)
    halves = 2 if guidance > 1 else 1
    h, w = height // tw.scale_factor, width // tw.scale_factor
    cn, un = _pass_flops(Twins(unet, tw.controlnet, tw.vae, None, tw.dtype, tw.text_tokens), num_frames, h, w,
                         halves, True)
    out = {"controlnet": cn * steps, "unet": un * steps, "decode": _decode_flops(tw.vae, num_frames, h, w, tw.dtype)}
    out["total"] = sum(out.values())
    return out


def compare(tw: Twins, settings: Mapping, num_frames: int, width: int, height: int, context: int = 16,
            stride: int = 12) -> dict:
    """Both counts, per frame in TFLOP, and ``work_ratio``: diffusers' work over v2v's, the speed-up v2v would
    have at the same hardware efficiency (a ratio of wall times above it is efficiency, below it waste)."""
    v = v2v_work(tw, settings, num_frames, width, height)
    d = diffusers_work(tw, num_frames, width, height, int(settings.get("steps", 4)),
                       float(settings.get("guidance", 1.0)), context, stride)
    return {"frames": num_frames, "v2v_flop": v["total"], "diffusers_flop": d["total"],
            "v2v_tflop_per_frame": {k: _sig(x / num_frames / 1e12) for k, x in v.items()},
            "diffusers_tflop_per_frame": {k: _sig(x / num_frames / 1e12) for k, x in d.items()},
            "work_ratio": round(d["total"] / v["total"], 4)}


# the options a run's work depends on (RestyleResult.settings["options"]), as the bench records them per run
WORK_SETTINGS = ("steps", "guidance", "context", "overlap", "frame_budget", "loop", "strength", "control_start",
                 "control_end", "pose_strength", "fast_decode")
# what a bench record made before runs recorded their settings ran with: the defaults, the automatic budget 64
ASSUMED = {"steps": 4, "guidance": 1.0, "context": 16, "overlap": 4, "frame_budget": 64}


def twins_for(report: Mapping) -> Twins:
    """The twins of the model set a bench report ran (env.models: "tiny" or "sd15-random")."""
    if report["env"]["models"] == "sd15-random":
        return Twins.sd15()
    from v2v.models.load import load_diffusion_models
    from v2v.tiny import tiny_model_paths

    p = tiny_model_paths()
    return Twins.of(load_diffusion_models(str(p["base"]), str(p["motion"]), str(p["controlnet"]),
                                          decoder=str(p["taesd"])))


def _run_work(tw: Twins, run: Mapping, frames: int, size: int, steps: int) -> dict:
    """One v2v run's work and the rates it achieved: TFLOP in all, TFLOP/s over the run's wall time (models
    loaded) and the denoiser's (ControlNet + UNet) TFLOP/s over the generate stage (which also holds the decoding
    of frames finished during it and any wait for poses, so a lower bound). ``passes_match``: whether the
    spatial passes the run counted are those its settings (recorded or assumed) plan (None: none counted)."""
    recorded = run.get("settings", run.get("legacy", {}))
    settings = {**ASSUMED, "steps": steps, **{k: v for k, v in recorded.items() if v is not None}}
    frames = run.get("frames", frames)  # the frames the run made (fps is per those)
    w = v2v_work(tw, settings, frames, run.get("width", size), run.get("height", size))
    wall = frames / run["fps"]
    gen = run["seconds"].get("generate")
    counted = run.get("spatial_passes")
    return {"flop": w["total"], "tflop": _sig(w["total"] / 1e12), "tflops_per_s": _sig(w["total"] / wall / 1e12),
            "denoise_tflops_per_s": _sig((w["unet"] + w["controlnet"]) / gen / 1e12) if gen else None,
            "settings_assumed": "settings" not in run,
            # the bench rounds its count to 4 decimals; a wrong budget or CFG differs by far more
            "passes_match": None if counted is None else abs(planned_passes(settings, frames) - counted) < 5e-4}


def _lever_settings(name: str) -> dict:
    """The settings a bench lever of that name changes (for records that predate the settings in the JSON)."""
    if name.startswith("frame_budget_"):
        return {"frame_budget": int(name.rsplit("_", 1)[1])}
    return {"fast_decode": True} if name.startswith("fast_decode") else {}


def annotate(report: Mapping, tw: Twins) -> dict:
    """The work of every run in a bench report (``scripts/bench.py``'s JSON) and the rates achieved: per length
    v2v's and diffusers' TFLOP, TFLOP/s and their ``work_ratio`` (the speed-up at equal efficiency; the measured
    speed-up over it is v2v's efficiency relative to diffusers'), and per lever v2v's."""
    env = report["env"]
    size, steps = env["size"], env["steps"]
    out: dict = {"lengths": [], "levers": {}}
    for row in report.get("results", []):
        n = row["frames"]
        entry = {"frames": n, "v2v": _run_work(tw, row["v2v"], n, size, steps)}
        d = row.get("diffusers", {})
        if "fps" in d:
            context, stride = d.get("free_noise") or (16, 12)  # (older records: the bench's FreeNoise)
            nd, nv = d.get("frames", n), row["v2v"].get("frames", n)
            dw = diffusers_work(tw, nd, d.get("width", size), d.get("height", size), d.get("steps", steps),
                                d.get("guidance", 1.0), context, stride)["total"]
            vw = entry["v2v"]["flop"]
            entry["diffusers"] = {"flop": dw, "tflop": _sig(dw / 1e12),
                                  "tflops_per_s": _sig(dw * d["fps"] / nd / 1e12)}
            entry["work_ratio"] = round((dw / nd) / (vw / nv), 4)  # per frame
            entry["efficiency_ratio"] = round((vw / nv * row["v2v"]["fps"]) / (dw / nd * d["fps"]), 4)
        out["lengths"].append(entry)
    levers = report.get("levers", {})
    for name, run in levers.items():
        if isinstance(run, dict) and "fps" in run:
            if "settings" not in run:  # an older record: what the lever changed is in its name
                run = {**run, "legacy": _lever_settings(name)}
            out["levers"][name] = _run_work(tw, run, levers["frames"], size, steps)
    return out


def _notes(v: Mapping) -> str:
    notes = ["settings assumed"] if v["settings_assumed"] else []
    if v.get("passes_match") is False:
        notes.append("SETTINGS DO NOT MATCH THE SPATIAL PASSES COUNTED: figures wrong")
    return f"  ({'; '.join(notes)})" if notes else ""


def print_work(work: Mapping) -> None:
    print(f"{'frames':>6} | {'v2v TFLOP':>9} | {'TFLOP/s':>7} | {'denoise':>7} | {'diffusers TFLOP':>15} | "
          f"{'TFLOP/s':>7} | {'work ratio':>10} | {'efficiency ratio':>16}")
    for e in work["lengths"]:
        v, d = e["v2v"], e.get("diffusers", {})
        print(f"{e['frames']:>6} | {v['tflop']:>9.4g} | {v['tflops_per_s']:>7.4g} | "
              f"{_g(v['denoise_tflops_per_s'], 7)} | "
              f"{_g(d.get('tflop'), 15)} | {_g(d.get('tflops_per_s'), 7)} | {_g(e.get('work_ratio'), 10)} | "
              f"{_g(e.get('efficiency_ratio'), 16)}{_notes(v)}")
    for name, v in work["levers"].items():
        print(f"  lever {name:>20}: {v['tflop']:8.4g} TFLOP, {v['tflops_per_s']:6.4g} TFLOP/s, denoise "
              f"{_g(v['denoise_tflops_per_s'], 6)}{_notes(v)}")


def _g(value, width: int) -> str:
    return f"{value:>{width}.4g}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def main() -> None:
    from v2v.windows import DEFAULT_FRAME_BUDGET

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="48,160,480")
    ap.add_argument("--size", type=int, default=512, help="square processing size")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--frame-budget", type=int, default=DEFAULT_FRAME_BUDGET)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--bench", type=Path, default=None,
                    help="a bench report (scripts/bench.py's JSON): the work of its runs and the TFLOP/s they achieved")
    ap.add_argument("--write", action="store_true", help="with --bench: also store the figures in it, as \"work\"")
    a = ap.parse_args()
    if a.bench is not None:
        report = json.loads(a.bench.read_text())
        work = annotate(report, twins_for(report))
        print_work(work)
        if a.write:
            report["work"] = work
            a.bench.write_text(json.dumps(report, indent=2))
        return
    if a.size < 8 or a.size % 8:
        raise SystemExit(f"--size must be a positive multiple of 8, not {a.size}")
    tw = Twins.sd15()
    rows = []
    print(f"SD 1.5 + AnimateDiff + ControlNet, {a.size}x{a.size}, {a.steps} steps, guidance {a.guidance}, "
          f"frame budget {a.frame_budget}; TFLOP per frame (matmuls and convolutions)")
    print(f"{'frames':>6} | {'v2v':>6} | {'v2v taesd':>9} | {'diffusers':>9} | {'diffusers/v2v':>13} | "
          f"{'with taesd':>10} | v2v: controlnet, unet, decode")
    for n in [int(x) for x in a.frames.split(",") if x]:
        base = {"steps": a.steps, "guidance": a.guidance, "frame_budget": a.frame_budget}
        row = compare(tw, base, n, a.size, a.size)
        tae = v2v_work(tw, {**base, "fast_decode": True}, n, a.size, a.size)["total"]
        row.update(v2v_fast_decode_flop=tae, work_ratio_fast_decode=round(row["diffusers_flop"] / tae, 4))
        rows.append(row)
        p = row["v2v_tflop_per_frame"]
        print(f"{n:>6} | {p['total']:>6.3f} | {tae / n / 1e12:>9.3f} | "
              f"{row['diffusers_tflop_per_frame']['total']:>9.3f} | "
              f"{row['work_ratio']:>13.3f} | {row['work_ratio_fast_decode']:>10.3f} | "
              f"{p['controlnet']:.3f}, {p['unet']:.3f}, {p['decode']:.3f}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
