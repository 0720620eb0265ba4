"""The `v2v` command: parses arguments, calls the API, reports. No logic of its own."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import EXIT_CODES, InvalidOptions, V2VError
from .option_values import LIGHTNING_STEPS, parse_fps
from .options import MODEL_SETS, OUTPUT_FORMATS, POSE_DETECTORS, POSE_RUNTIMES

log = logging.getLogger("v2v")

EPILOG = "exit codes:\n" + "\n".join(f"  {k:<4} {v}" for k, v in EXIT_CODES.items())


def _add_restyle(sub) -> None:
    p = sub.add_parser(
        "restyle", help="restyle the people in a video",
        description="Restyle the people in a video: same motion, timing and audio, new look.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, nargs="?",
                   help="the video to restyle (never modified); with --settings, default: the recorded input")
    p.add_argument("-p", "--prompt", help="the style, e.g. 'claymation astronaut' (needed unless --settings, a "
                                          "preset or the config gives one)")
    p.add_argument("-o", "--output", help="output .mp4, .webm, .mov, .gif, or a folder/ for PNG frames "
                                          "(default: NAME.restyled.mp4 beside the input; with --format, its extension)")
    p.add_argument("--settings", type=Path, metavar="FILE",
                   help="rerun an earlier run: its NAME.restyled.json (or the video itself); options given "
                        "here override the recorded ones")
    o = _add_restyle_options(p)
    o.add_argument("--keep-pose", type=Path, metavar="PATH", help="also write the pose-map video here")
    _add_common(p)


def _add_watch(sub) -> None:
    p = sub.add_parser(
        "watch", help="restyle every video dropped into a folder",
        description="Watch IN_DIR: each video that has stopped growing is restyled (models loaded once) into "
                    "OUT_DIR as NAME.restyled.mp4, then moved to IN_DIR/done (or IN_DIR/failed with "
                    "NAME.error.txt). A sidecar beside a video sets its own options: clip.json (any option, "
                    "e.g. {\"prompt\": \"...\", \"seed\": 3}) or clip.txt (the prompt). A video in progress when "
                    "the watcher is killed is taken again on the next start.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="the folder to watch")
    p.add_argument("--out", type=Path, metavar="OUT_DIR", help="where results go (default IN_DIR/restyled)")
    p.add_argument("-p", "--prompt", help="the style for videos without a sidecar prompt")
    p.add_argument("--once", action="store_true", help="process what is there, then exit")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between scans of the folder (default 1)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds a file must stay unchanged before it is taken (default 2)")
    o = _add_restyle_options(p)
    o.add_argument("--keep-pose", action="store_true", help="also write OUT_DIR/NAME.pose.mp4")
    _add_common(p)


def _add_restyle_options(p):
    """The generation, frame, model, pose and output options of restyle and watch; returns the output group."""
    g = p.add_argument_group("generation")
    g.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    g.add_argument("--lightning", type=int, choices=LIGHTNING_STEPS,
                   help="Lightning checkpoint (1, 2, 4, 8 steps); default: from --steps (3 steps -> 2-step model)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--guidance", type=float, default=1.0, help="CFG scale; 1 = no negative pass (default)")
    g.add_argument("--negative-prompt", default="", help="what to avoid (needs --guidance > 1)")
    g.add_argument("--pose-strength", type=float, default=1.0, help="ControlNet scale (default 1.0)")
    g.add_argument("--context", type=int, default=16, help="frames per window (default 16, at most 32)")
    g.add_argument("--overlap", type=int, default=4, help="frames shared by neighbouring windows (default 4)")
    g.add_argument("--frame-budget", type=int, metavar="N",
                   help="most frames in the UNet at once; bounds GPU memory (default: what fits, at most 64)")
    g.add_argument("--loop", action="store_true", help="closed loop: the end flows into the start")
    g.add_argument("--fusion", choices=("pyramid", "flat"), default="pyramid",
                   help="blending of overlapping windows (default pyramid)")
    g.add_argument("--noise", choices=("freenoise", "random"), default="freenoise",
                   help="initial noise: freenoise (shuffled per window, default) or random")
    g.add_argument("--control-start", type=float, default=0.0, metavar="F",
                   help="fraction of the steps before the pose starts steering (default 0)")
    g.add_argument("--control-end", type=float, default=1.0, metavar="F",
                   help="fraction of the steps after which the pose stops steering (default 1)")
    g.add_argument("--prompt-at", metavar="SPEC",
                   help="prompt travel: '0:a cat;48:a dog' (frame:prompt; -p holds until the first) or a .json "
                        "file; blended between keyframes")
    g.add_argument("--strength", type=float, default=1.0,
                   help="below 1: start from the source frames to keep colours; on the step grid, e.g. 0.5 or "
                        "0.75 with 4 steps (default 1: from noise)")

    _add_frame_options(p.add_argument_group("frames"))

    m = p.add_argument_group("models")
    m.add_argument("--models", choices=MODEL_SETS, default="default",
                   help="'default': the real models (downloaded once); 'tiny': random weights, an offline "
                        "smoke test whose output is noise")
    m.add_argument("--base", help="SD 1.5 base model: a name from `v2v models` (e.g. toonyou), hub id, local "
                                  "diffusers folder, or one .safetensors checkpoint (civitai/A1111 layout)")
    m.add_argument("--motion", help="motion module: hub repo or .safetensors file")
    m.add_argument("--controlnet", help="ControlNet OpenPose: hub id, folder, or one .pth/.safetensors file")
    m.add_argument("--motion-lora", action="append", default=[], metavar="PATH_OR_REPO[:STRENGTH]",
                   help="motion LoRA merged into the motion module, repeatable: a diffusers repo such as "
                        "guoyww/animatediff-motion-lora-zoom-in, or a v2_lora_*.ckpt file; strength default 1.0 "
                        "(0.7-0.8 suggested), e.g. guoyww/animatediff-motion-lora-zoom-in:0.8")
    m.add_argument("--vae", help="VAE replacing the base's: hub id, folder or file, e.g. stabilityai/sd-vae-ft-mse")
    m.add_argument("--fast-decode", action="store_true",
                   help="decode with TAESD (madebyollin/taesd) instead of the VAE: much faster, a little softer")
    m.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    m.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32"),
                   help="auto: float16 on CUDA, float32 on CPU")
    m.add_argument("--compile", action="store_true", help="torch.compile the networks (faster, slow first run)")
    m.add_argument("--offload", action="store_true",
                   help="keep the text encoder and VAE in CPU RAM until used (GPUs with little memory)")

    _add_pose_options(p.add_argument_group("pose"), restyle=True)

    o = p.add_argument_group("output")
    o.add_argument("--crf", type=int, help="quality, lower is better: H.264/H.265 0-51 (default 18/20), VP9 0-63 "
                                           "(24), AV1 1-63 (30); ProRes, GIF and PNG ignore it")
    o.add_argument("--format", choices=OUTPUT_FORMATS,
                   help="h264 or h265 (.mp4), vp9 or av1 (.webm), prores (.mov), gif, png (a folder of frames); "
                        "default: from the output's extension")
    o.add_argument("--gif-loop", type=int, default=0, metavar="N", help="GIF: play N times (default 0: forever)")
    o.add_argument("--ping-pong", action="store_true", help="play forward, then backward (audio: forward half only)")
    o.add_argument("--compare", action="store_true",
                   help="also write OUTPUT.compare.mp4: source | pose | result side by side, with the audio")
    o.add_argument("--full-size", action="store_true",
                   help="scale the result to the source's size (rounded down to even for video codecs)")
    return o


def _add_frame_options(f) -> None:
    """Which frames, at what size: shared by restyle, watch and pose."""
    f.add_argument("--size", type=int, help="short side of the processing size (default 512; 128 with --models tiny)")
    f.add_argument("--width", type=int, help="processing width, multiple of 8 (height follows unless given)")
    f.add_argument("--height", type=int, help="processing height, multiple of 8")
    f.add_argument("--start", type=float, help="start at this second")
    f.add_argument("--end", type=float, help="end at this second")
    f.add_argument("--max-frames", type=int, help="keep at most this many frames")
    f.add_argument("--every-nth", type=int, default=1, help="keep every n-th frame (timing kept)")
    f.add_argument("--fps", help="output frame rate, e.g. 12 or 30000/1001 (duration kept); default: the source's")


def _frame_opts(a: argparse.Namespace) -> dict:
    return dict(size=a.size, width=a.width, height=a.height, start=a.start, end=a.end, max_frames=a.max_frames,
                every_nth=a.every_nth, fps=parse_fps(a.fps))


def _restyle_opts(a: argparse.Namespace) -> dict:
    return dict(negative_prompt=a.negative_prompt, steps=a.steps, lightning=a.lightning, seed=a.seed,
                guidance=a.guidance, pose_strength=a.pose_strength, context=a.context, overlap=a.overlap,
                frame_budget=a.frame_budget, loop=a.loop, fusion=a.fusion, noise=a.noise,
                control_start=a.control_start, control_end=a.control_end, prompt_at=a.prompt_at,
                strength=a.strength, compile=a.compile, offload=a.offload,
                models=a.models, base=a.base, motion=a.motion, controlnet=a.controlnet, device=a.device,
                motion_loras=tuple(a.motion_lora) if a.motion_lora else None, vae=a.vae, fast_decode=a.fast_decode,
                dtype=a.dtype, crf=a.crf, format=a.format, gif_loop=a.gif_loop, ping_pong=a.ping_pong,
                compare=a.compare, full_size=a.full_size, **_frame_opts(a), **_pose_opts(a))


def _add_pose(sub) -> None:
    p = sub.add_parser(
        "pose", help="detect poses: pose-map video, OpenPose JSON, PNG maps",
        description="Detect every person's pose in a video. Writes the pose-map video (source timing, with the "
                    "audio), and/or the OpenPose-format JSON (source pixels, one object per frame), and/or "
                    "lossless PNG maps. With none of -o/--json/--png: NAME.pose.mp4 beside the input.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="the video (never modified)")
    p.add_argument("-o", "--output", help="pose-map video (.mp4; .webm, .mov, .gif, or a folder/ of PNGs too)")
    p.add_argument("--json", type=Path, help="write the keypoints as OpenPose JSON here")
    p.add_argument("--png", type=Path, metavar="DIR", help="write one lossless PNG pose map per frame here")
    _add_frame_options(p.add_argument_group("frames"))
    p.add_argument("--models", choices=MODEL_SETS, default="default", help="'tiny': random pose models (smoke test)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--crf", type=int, help="quality of the pose video, lower is better (H.264: 0-51, default 18)")
    _add_pose_options(p, restyle=False)
    _add_common(p)


def _add_pose_options(g, restyle: bool) -> None:
    g.add_argument("--pose", choices=POSE_DETECTORS, default="dwpose",
                   help="pose detector: dwpose (default; ONNX, whole body) or openpose (controlnet_aux networks)")
    g.add_argument("--pose-model", help="pose weights: hub id or folder (dwpose: yolox_l.onnx, dw-ll_ucoco_384.onnx, "
                                        "or with --pose-runtime torch yolox_l.torchscript.pt, "
                                        "dw-ll_ucoco_384_bs5.torchscript.pt; openpose: body_pose_model.pth, "
                                        "hand_pose_model.pth, facenet.pth)")
    g.add_argument("--pose-runtime", choices=POSE_RUNTIMES, default="auto",
                   help="what runs DWPose: onnx (onnxruntime; the GPU with onnxruntime-gpu), torch (TorchScript "
                        "files on torch's device); auto (default): onnx, or torch on a GPU onnxruntime cannot use")
    g.add_argument("--pose-parts", default="body,hands,face", metavar="PARTS",
                   help="comma-separated parts to keep and draw: body, hands, face (default all)")
    g.add_argument("--pose-threshold", type=float, default=0.3,
                   help="keypoints at or below this confidence are not drawn (default 0.3)")
    g.add_argument("--pose-smoothing", type=float, default=0.5,
                   help="temporal keypoint smoothing, 0 (off) to 1 (strongest); default 0.5")
    g.add_argument("--pose-json", type=Path, metavar="FILE",
                   help=("use these keypoints (OpenPose JSON, source pixels, one object per kept frame) instead "
                         "of detecting; the pose models are not loaded") if restyle else
                        "render this OpenPose JSON (one object per kept frame) instead of detecting")
    g.add_argument("--no-cache", dest="pose_cache", action="store_false",
                   help="detect again instead of reusing cached keypoints (and do not cache them)")


def _pose_opts(a: argparse.Namespace) -> dict:
    return dict(pose=a.pose, pose_runtime=a.pose_runtime, pose_model=a.pose_model, pose_parts=a.pose_parts, pose_threshold=a.pose_threshold,
                pose_smoothing=a.pose_smoothing, pose_json=a.pose_json, pose_cache=a.pose_cache)


def _add_common(p) -> None:
    c = p.add_argument_group("config and reporting")
    c.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML file of option defaults and presets (default: $V2V_CONFIG, else the user's "
                        "config.toml)")
    c.add_argument("--preset", metavar="NAME",
                   help="named set of options from the config (built in: fast = 2 steps, quality = 8 steps)")
    c.add_argument("--progress", choices=("bars", "json"), default="bars",
                   help="bars (default, on a terminal) or json: one JSON object per line on stdout")
    c.add_argument("--quiet", action="store_true", help="errors only: no bars, no summary line")
    c.add_argument("--debug", action="store_true", help="verbose log and tracebacks")


def _add_models(sub) -> None:
    p = sub.add_parser(
        "models", help="base model names, and the models already downloaded",
        description="List the short names --base accepts (the base models the AnimateDiff-Lightning model card "
                    "recommends, mapped to diffusers copies on the Hugging Face hub), the models already in the "
                    "local Hugging Face cache ($HF_HUB_CACHE) with their sizes and revisions, and v2v's own "
                    "caches (tiny models, keypoints).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--debug", action="store_true", help="verbose log and tracebacks")


def _unset_option_defaults(parser: argparse.ArgumentParser) -> None:
    """Options the user does not type come back as None, so that a config file, a preset or a settings file can
    fill them; the values shown in --help stay the built-in defaults (RestyleOptions' own)."""
    from .options import option_names

    parser.set_defaults(**dict.fromkeys(option_names()))


def _given(opts: dict) -> dict:
    """The options the user typed (None: not given)."""
    return {k: v for k, v in opts.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="v2v", description="Video-to-video pose restyling.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"v2v {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_restyle(sub)
    _add_pose(sub)
    _add_watch(sub)
    _add_models(sub)
    for name in ("restyle", "pose", "watch"):
        _unset_option_defaults(sub.choices[name])
    return ap


def _setup_logging(quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s" if debug else "v2v: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    if not debug:  # the libraries' own chatter (download notices, deprecations) is noise to a creator
        import os
        import warnings

        for var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):  # read when those libraries load
            os.environ.setdefault(var, "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

        warnings.filterwarnings("ignore")
        for name in ("diffusers", "transformers", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _reporter(a: argparse.Namespace):
    """The JSON-lines progress reporter for --progress json, else None (bars, or nothing with --quiet)."""
    if getattr(a, "progress", "bars") != "json":
        return None
    from .progress import JsonLines

    return JsonLines()


def _bars(a: argparse.Namespace) -> bool:
    return not a.quiet and a.progress == "bars" and sys.stderr.isatty()


def _options(a: argparse.Namespace, typed: dict, settings: dict | None = None) -> dict:
    """The run's options: config defaults < preset < settings record < what was typed (v2v/config.py)."""
    from .config import load_config, resolve

    return resolve(_given(typed), config=load_config(a.config), preset=a.preset, settings=settings)


def restyle_request(a: argparse.Namespace) -> tuple[Path, dict, object]:
    """(input, options with the prompt, the settings record or None) of a parsed `v2v restyle` command line."""
    from .errors import InputNotFound
    from .settings import check_input, load_settings

    recorded = load_settings(a.settings) if a.settings is not None else None
    inp = a.input
    if inp is None:
        if recorded is None:
            raise InvalidOptions("give the video to restyle: v2v restyle INPUT -p 'the style'")
        if recorded.input is None or not recorded.input.is_file():
            raise InputNotFound(f"the input recorded in {recorded.source.name} ('{recorded.input}') is not there: "
                                "give the input video on the command line")
        inp = recorded.input
    opts = _options(a, dict(_restyle_opts(a), keep_pose=a.keep_pose, prompt=a.prompt),
                    recorded.options if recorded else None)
    if recorded is not None:
        check_input(recorded, inp)
    return inp, opts, recorded


def _restyle(a: argparse.Namespace) -> int:
    from .pipeline import Restyler

    inp, opts, _ = restyle_request(a)
    prompt = opts.pop("prompt", None)
    rep = _reporter(a)
    r = Restyler(show_progress=_bars(a)).restyle(inp, a.output, prompt=prompt, progress=rep, **opts)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items() if k != "total")
    if rep is not None:
        from .settings import sidecar_path

        rep.event("done", output=str(r.output), settings=str(sidecar_path(r.output)), frames=r.frames,
                  frames_without_people=r.frames_without_people, width=r.width, height=r.height, fps=r.fps,
                  seconds={k: round(v, 3) for k, v in r.seconds.items()},
                  pose_output=str(r.pose_output) if r.pose_output else None)
    elif not a.quiet:
        print(f"{r.output}  ({r.frames} frames, {r.frames_without_people} without people, {r.width}x{r.height}, "
              f"{r.fps:.3f} fps, {r.seconds['total']:.1f}s: {stages})")
    return 0


def _pose(a: argparse.Namespace) -> int:
    from .pipeline import Restyler

    opts = _options(a, dict(models=a.models, device=a.device, crf=a.crf, **_frame_opts(a), **_pose_opts(a)))
    opts.pop("prompt", None)
    rep = _reporter(a)
    r = Restyler(show_progress=_bars(a)).pose(a.input, a.output, json_path=a.json, png_dir=a.png, progress=rep,
                                              **opts)
    if rep is not None:
        rep.event("done", output=str(r.output) if r.output else None, json=str(r.json) if r.json else None,
                  png_dir=str(r.png_dir) if r.png_dir else None, frames=r.frames,
                  frames_without_people=r.frames_without_people, fps=r.fps,
                  seconds={k: round(v, 3) for k, v in r.seconds.items()})
    elif not a.quiet:
        written = ", ".join(str(p) for p in (r.output, r.json, r.png_dir) if p is not None)
        print(f"{written}  ({r.frames} frames, {r.frames_without_people} without people, "
              f"{r.seconds['total']:.1f}s)")
    return 0


def _watch_restyler(a: argparse.Namespace, defaults: dict, rep):
    """A Restyler whose defaults are the config and preset (under the watch options and each sidecar), reporting
    its progress to ``rep``."""
    from .pipeline import Restyler

    class _Reporting(Restyler):
        def restyle(self, input, output=None, *, progress=None, **options):
            return super().restyle(input, output, progress=progress or rep, **options)

    return (_Reporting if rep is not None else Restyler)(show_progress=_bars(a), **defaults)


def _watch(a: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import Interrupted
    from .watch import watch

    cfg = load_config(a.config)
    defaults = cfg.layers(a.preset)  # config < preset, under the watch options and each video's sidecar
    opts = _given(dict(_restyle_opts(a), prompt=a.prompt))
    rep = _reporter(a)

    def on_video(event: str, name: str, item) -> None:
        if event == "started":
            rep.reset()
            rep.context = {"video": name}
            rep.event("video", status="started")
            return
        fields = {"status": event, "seconds": {k: round(v, 3) for k, v in (item.seconds or {}).items()}}
        if item.output is not None:
            fields["output"] = str(item.output)
        if item.error:
            fields["error"] = item.error
        rep.event("video", **fields)
        rep.context = {}

    try:
        summary = watch(a.in_dir, a.out, restyler=_watch_restyler(a, defaults, rep), once=a.once, poll=a.poll,
                        settle=a.settle, keep_pose=a.keep_pose, config=cfg,
                        on_video=on_video if rep is not None else None, **opts)
    except Interrupted as e:
        s = getattr(e, "summary", None)
        if s is not None and not a.quiet and rep is None:
            print(f"stopped: {len(s.done)} done, {len(s.failed)} failed", file=sys.stderr)
        raise
    if rep is not None:
        rep.event("done", done=[v.name for v in summary.done], failed=[v.name for v in summary.failed])
    elif not a.quiet:
        print(f"{len(summary.done)} done, {len(summary.failed)} failed")
    return 0 if not summary.failed else 3


def _human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _models(a: argparse.Namespace) -> int:
    import json

    from .models.catalog import listing

    info = listing()
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    print("Base model names (--base NAME; case and punctuation do not matter):")
    rows = [(m["name"], m["repo"] or "-", m["kind"], ("needs VAE " + m["vae"] + "; " if m["vae"] else "") + m["note"])
            for m in info["aliases"]]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for name, repo, kind, note in rows:
        print(f"  {name:<{w0}}  {repo:<{w1}}  {kind:<9}  {note}")
    hf = info["hf_cache"]
    print(f"\nIn the Hugging Face cache ({hf['path']}):")
    if not hf["repos"]:
        print("  nothing yet")
    for r in hf["repos"]:
        alias = f"  (= {r['alias']})" if r.get("alias") else ""
        revs = ", ".join(rev[:12] for rev in r["revisions"]) or "-"
        print(f"  {r['repo']:<{max(40, w1)}}  {_human_size(r['size']):>9}  revision {revs}{alias}")
    print("\nv2v's own caches:")
    for c in info["v2v_cache"]:
        print(f"  {c['name']:<12} {_human_size(c['size']):>9}  {c['files']} files  {c['path']}")
    return 0


def _sigterm(signum, frame):  # `kill` gets the same clean stop as Ctrl-C (temp files removed, claims released)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    a.quiet, a.debug = getattr(a, "quiet", False), getattr(a, "debug", False)
    _setup_logging(a.quiet, a.debug)
    try:
        import signal

        signal.signal(signal.SIGTERM, _sigterm)
        return {"restyle": _restyle, "pose": _pose, "watch": _watch, "models": _models}[a.command](a)
    except V2VError as e:
        if a.debug:
            log.exception("failed")
        print(f"v2v: error: {e}", file=sys.stderr)
        if getattr(a, "progress", None) == "json":  # scripts reading stdout see the end too
            import json

            print(json.dumps({"event": "error", "message": str(e), "exit_code": e.exit_code}), flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("v2v: interrupted: no output was written", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line, the traceback with --debug
        if a.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"v2v: internal error: {type(e).__name__}: {msg} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
