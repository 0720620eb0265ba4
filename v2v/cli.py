"""The `v2v` command: parses arguments, calls the API, reports. No logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import EXIT_CODES, InvalidOptions, V2VError
from .option_values import parse_fps
from .options import RestyleOptions

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
    _add_options(p, "restyle")
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
    _add_options(p, "watch")
    _add_common(p)


def _add_batch(sub) -> None:
    p = sub.add_parser(
        "batch", help="restyle many videos on Ray workers (one per GPU)",
        description="Restyle every job of JOBS (a folder of videos with their sidecars, a glob, or a manifest: "
                    ".csv or .jsonl with input, prompt and any option per row) into OUT_DIR as watch mode names "
                    "them, on Ray workers that keep their models loaded: a local Ray instance (one worker per GPU, "
                    "or --workers CPU workers), or a cluster with --address. Each job is recorded in "
                    "OUT_DIR/batch.jsonl; running the same command again skips the jobs done. Needs v2v[ray].",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jobs", metavar="JOBS", help="a folder of videos, a glob (quoted), or a manifest (.csv, .jsonl)")
    p.add_argument("--out", type=Path, metavar="OUT_DIR", required=True, help="where results go")
    p.add_argument("-p", "--prompt", help="the style for jobs without a prompt of their own")
    r = p.add_argument_group("workers")
    r.add_argument("--address", metavar="ADDRESS",
                   help="a Ray cluster: ray://HOST:10001, or auto on a machine of the cluster (default: a local "
                        "Ray instance)")
    r.add_argument("--workers", type=int, metavar="N", help="how many workers (default: one per GPU; without a "
                                                           "GPU, 1)")
    r.add_argument("--gpus-per-job", type=float, default=1.0, metavar="G",
                   help="GPUs each worker reserves; 0.5 puts two on a GPU, 0 makes CPU workers (default 1)")
    r.add_argument("--cpus-per-worker", type=float, metavar="N",
                   help="CPUs each worker reserves (default: 1 with a GPU, else the machine's cores shared)")
    r.add_argument("--max-input-mb", type=float, default=512.0, metavar="MB",
                   help="a larger input is skipped: videos travel to the workers as bytes (default 512)")
    r.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="times a job whose worker died (killed, out of memory) is tried again (default 2)")
    r.add_argument("--retry-failed", action="store_true", help="run again the jobs that failed in an earlier run")
    r.add_argument("--dashboard", action="store_true",
                   help="start Ray's dashboard with the local instance (needs ray[default])")
    _add_options(p, "batch")
    _add_common(p)


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
    _add_options(p, "pose")
    _add_common(p)


def _add_ui(sub) -> None:
    p = sub.add_parser(
        "ui", help="a local web page: upload, see the poses, restyle, compare, download",
        description="Start a web page on this machine for restyling one clip at a time: drop a video, see its poses, "
                    "restyle it with progress, play the result beside the source, download it; earlier runs in "
                    "--out stay listed and can be rerun. Models load once and stay loaded. The options below are "
                    "the form's defaults. Needs the ui extra: pip install 'v2v[ui]'.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; any other needs --auth)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: the first free one from 7860)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where uploads and runs are kept (default: the Videos folder's v2v, e.g. ~/Videos/v2v)")
    p.add_argument("--in", dest="in_dir", type=Path, metavar="DIR", help="a folder of videos to pick from")
    p.add_argument("--auth", metavar="USER:PASS",
                   help="ask for this login (needed with a --host other than this machine; or set V2V_UI_AUTH)")
    p.add_argument("--max-upload", default="4GB", metavar="SIZE",
                   help="largest upload, e.g. 500MB or 10GB (default 4GB)")
    p.add_argument("-p", "--prompt", help="the form's first prompt")
    _add_options(p, "ui")
    c = p.add_argument_group("config and reporting")
    c.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML file of option defaults and presets (its presets are listed on the page)")
    c.add_argument("--preset", metavar="NAME", help="named set of options from the config, as the form's defaults")
    c.add_argument("--quiet", action="store_true", help="errors only in the server's log")
    c.add_argument("--debug", action="store_true", help="verbose log and tracebacks")


def _help(f: dataclasses.Field, command: str) -> str:
    """A field's help on ``command``, with its default (RestyleOptions holds both)."""
    meta = f.metadata
    text = meta["per_command"].get(command, {}).get("help", meta["help"])
    shown = meta["default_help"]
    if shown is None and not isinstance(f.default, bool) and f.default not in (None, (), ""):
        shown = str(f.default)
    return f"{text} (default: {shown})" if shown else text


def _add_options(p: argparse.ArgumentParser, command: str) -> None:
    """The RestyleOptions fields ``command`` takes, as options in their --help groups. Options not typed come
    back as None, so that a config file, a preset or a settings record can fill them."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(RestyleOptions):
        meta = f.metadata
        if command not in meta.get("commands", ()):
            continue
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], p.add_argument_group(meta["group"]))
        kind = str(f.type).replace("| None", "").strip()
        kw: dict = dict(dest=f.name, default=None, help=_help(f, command))
        if kind == "bool":
            kw["action"] = "store_false" if f.default is True else "store_true"
        elif kind.startswith("tuple") and f.name == "motion_loras":
            kw["action"] = "append"
        else:  # paths stay as typed: a trailing slash names a folder to make (--keep-pose NEWDIR/, as -o)
            kw["type"] = {"int": int, "float": float}.get(kind, str)
        for key in ("choices", "metavar"):
            if meta[key] is not None and "action" not in kw:
                kw[key] = meta[key]
        if f.name == "motion_loras":
            kw["metavar"] = meta["metavar"]
        override = {k: v for k, v in meta["per_command"].get(command, {}).items() if k != "help"}
        if override.get("action") in ("store_true", "store_false"):
            kw = {k: v for k, v in kw.items() if k not in ("type", "choices", "metavar")}
        kw.update(override)
        group.add_argument(meta["flag"] or f"--{f.name.replace('_', '-')}", **kw)


def typed_options(a: argparse.Namespace, command: str) -> dict:
    """The RestyleOptions the user typed on ``command``'s line (left out: not typed)."""
    out = {}
    for f in dataclasses.fields(RestyleOptions):
        if command not in f.metadata.get("commands", ()) or getattr(a, f.name, None) is None:
            continue
        value = getattr(a, f.name)
        if f.name == "fps":
            value = parse_fps(value)
        elif f.name == "motion_loras":
            value = tuple(value)
        out[f.name] = value
    return out


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
    _add_batch(sub)
    _add_models(sub)
    _add_ui(sub)
    return ap


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is logged, not to the stream of the moment it was made
    (main() called in-process, by a test or an embedding program, must not leave a handler on a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO
    handler = _Stderr()
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
    opts = _options(a, dict(typed_options(a, "restyle"), prompt=a.prompt),
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

    opts = _options(a, typed_options(a, "pose"))
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
    opts = _given(dict(typed_options(a, "watch"), prompt=a.prompt))
    keep_pose = opts.pop("keep_pose", False)
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
                        settle=a.settle, keep_pose=keep_pose, config=cfg,
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


def _batch(a: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from .batch import run
    from .batch.report import BatchBar, all_done, summary_line
    from .config import load_config
    from .errors import Interrupted

    cfg = load_config(a.config)
    opts = {**cfg.layers(a.preset), **_given(dict(typed_options(a, "batch"), prompt=a.prompt))}
    keep_pose = bool(opts.pop("keep_pose", False))
    rep = _reporter(a)
    bar = BatchBar(_bars(a))

    def on_event(event: dict) -> None:
        if rep is None:
            bar(event)
        else:
            rep.event(event.pop("event"), **event)

    if bar.show:
        from tqdm.contrib.logging import logging_redirect_tqdm

        quiet_log = logging_redirect_tqdm(loggers=[log])  # the log above the bar, not through it
    else:
        quiet_log = nullcontext()
    try:
        with quiet_log:
            summary = run(a.jobs, a.out, address=a.address, workers=a.workers, gpus_per_job=a.gpus_per_job,
                          cpus_per_worker=a.cpus_per_worker, max_input_mb=a.max_input_mb, max_retries=a.max_retries,
                          retry_failed=a.retry_failed, keep_pose=keep_pose, config=cfg, dashboard=a.dashboard,
                          on_event=on_event, **opts)
    except Interrupted as e:
        bar.close()
        s = getattr(e, "summary", None)
        if s is not None and not a.quiet and rep is None:
            print(f"stopped: {summary_line(s)}", file=sys.stderr)
        raise
    finally:
        bar.close()
    if rep is not None:
        rep.event("done", done=[str(r.input) for r in summary.done], failed=[str(r.input) for r in summary.failed],
                  skipped=[str(r.input) for r in summary.skipped], already_done=len(summary.already_done),
                  failed_before=[str(p) for p in summary.failed_before], ledger=str(summary.ledger))
    elif not a.quiet:
        print(summary_line(summary))
    return 0 if all_done(summary) else 3


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


def _ui(a: argparse.Namespace) -> int:
    from .config import load_config
    from .ui.server import check_access, is_local, serve
    from .ui.uploads import parse_size

    check_access(a.host, a.auth)  # before anything heavy: a page open to the network needs a login
    max_upload = parse_size(a.max_upload)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InvalidOptions("v2v ui needs the ui extra: pip install 'v2v[ui]' (or bash scripts/setup.sh --dev)") \
            from None
    cfg = load_config(a.config)
    options = _options(a, dict(typed_options(a, "ui"), prompt=a.prompt))
    out = a.out
    if out is None:
        from platformdirs import user_videos_dir

        out = Path(user_videos_dir()) / "v2v"
    server = serve(host=a.host, port=a.port, out=out, in_dir=a.in_dir, auth=a.auth, max_upload=max_upload,
                   options=options, presets=cfg.presets)
    print(f"v2v ui: open {server.url} in a browser (runs are kept in {server.page.out}; Ctrl-C stops)", flush=True)
    if not is_local(a.host):
        from urllib.parse import urlparse

        port = urlparse(server.url).port
        print(f"v2v ui: listening on {a.host} too: other machines open http://THIS-MACHINE:{port}/ and log in",
              flush=True)
    server.wait()
    print("v2v ui: stopped", flush=True)
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
        return {"restyle": _restyle, "pose": _pose, "watch": _watch, "batch": _batch,
                "models": _models, "ui": _ui}[a.command](a)
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
    except BrokenPipeError:  # the reader of stdout went away (`v2v models | head`): stop quietly, as `yes` does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as e:  # a bug: one line, the traceback with --debug
        if a.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"v2v: internal error: {type(e).__name__}: {msg} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
