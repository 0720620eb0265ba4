"""RestyleOptions: every setting of a restyle run, in one frozen dataclass, validated before any weights load."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .errors import InvalidOptions
from .media.formats import FORMATS, crf_problem
from .option_values import (LIGHTNING_STEPS, POSE_PARTS, lightning_for_steps, parse_fps, parse_motion_lora,
                            parse_pose_parts, parse_prompt_at, strength_steps)
from .windows import FUSION_KINDS

MODEL_SETS = ("default", "tiny")
DTYPES = ("auto", "float16", "bfloat16", "float32")
DEFAULT_SIZE = {"default": 512, "tiny": 128}  # short side of the processing size
MAX_CONTEXT = 32  # the motion module's positional embedding stops at 32 frames
POSE_DETECTORS = ("dwpose", "openpose")
POSE_RUNTIMES = ("auto", "onnx", "torch")  # DWPose's: v2v.pose.dwpose.choose_runtime
NOISE_KINDS = ("freenoise", "random")
MODEL_PATH_FIELDS = frozenset({"base", "motion", "controlnet", "vae", "pose_model"})  # str or os.PathLike
OUTPUT_FORMATS = ("h264", "h265", "vp9", "av1", "prores", "gif", "png")  # v2v.media.formats.FORMATS describes each


RESTYLE = ("restyle", "watch", "batch", "ui")  # the commands an option is on (v2v/cli.py; on ui: the page's defaults)
ALL = ("restyle", "watch", "batch", "pose", "ui")


def _cli(help: str, group: str, *, flag: str | None = None, metavar: str | None = None, choices=None,
         commands: tuple[str, ...] = RESTYLE, default_help: str | None = None, per_command: dict | None = None,
         cli: bool = True) -> dict:
    """A field's help and how the command line shows it: its ``group`` in --help, ``flag`` (default --NAME with
    - for _), ``default_help`` (how the default reads; "" hides it; None: the default itself), and argparse
    settings that differ on one command (``per_command``)."""
    return dict(help=help, group=group, flag=flag, metavar=metavar, choices=choices, commands=commands if cli else (),
                default_help=default_help, per_command=per_command or {})


def opt(default, help: str, group: str, **cli):
    """A RestyleOptions field: its default, its help, and how the command line shows it (see _cli)."""
    return field(default=default, metadata=_cli(help, group, **cli))


@dataclass(frozen=True)
class RestyleOptions:
    """Every setting of a restyle run. Each field's default and its help (the command line's, generated from
    them by v2v/cli.py) are here; ``validate()`` checks them and the rules between them."""

    # --- what to make ---
    prompt: str = field(metadata=_cli("the style to give the people, e.g. 'claymation astronaut'", "", cli=False))
    negative_prompt: str = opt("", "what to avoid (needs --guidance above 1)", "generation", default_help="none")
    steps: int = opt(4, "denoising steps", "generation")
    lightning: int | None = opt(None, "Lightning checkpoint (1, 2, 4, 8 steps)", "generation", choices=LIGHTNING_STEPS,
                                default_help="from --steps: 3 steps -> the 2-step model")
    seed: int = opt(0, "random seed: the same seed and options give the same video", "generation")
    guidance: float = opt(1.0, "classifier-free guidance scale; 1 = no negative pass (Lightning's own)", "generation")
    pose_strength: float = opt(1.0, "ControlNet scale: how strongly the poses steer", "generation")
    control_start: float = opt(0.0, "fraction of the steps before the pose starts steering", "generation", metavar="F")
    control_end: float = opt(1.0, "fraction of the steps after which the pose stops steering", "generation",
                             metavar="F")
    prompt_at: tuple[tuple[int, str], ...] = opt(
        (), "prompt travel: '0:a cat;48:a dog' (frame:prompt; -p holds until the first) or a .json file; blended "
            "between keyframes", "generation", metavar="SPEC", default_help="")
    strength: float = opt(1.0, "below 1: start from the source frames to keep colours; on the step grid, e.g. 0.5 "
                               "or 0.75 with 4 steps", "generation", default_help="1, from noise")
    # --- frames ---
    size: int | None = opt(None, "short side of the processing size", "frames", commands=ALL,
                           default_help="512; 128 with --models tiny")
    width: int | None = opt(None, "processing width, multiple of 8 (height follows unless given)", "frames",
                            commands=ALL)
    height: int | None = opt(None, "processing height, multiple of 8", "frames", commands=ALL)
    start: float | None = opt(None, "start at this second", "frames", commands=ALL)
    end: float | None = opt(None, "end at this second", "frames", commands=ALL)
    max_frames: int | None = opt(None, "keep at most this many frames", "frames", commands=ALL)
    every_nth: int = opt(1, "keep every n-th frame (timing kept)", "frames", commands=ALL)
    fps: Fraction | None = opt(None, "output frame rate, e.g. 12 or 30000/1001 (duration kept)", "frames",
                               commands=ALL, default_help="the source's timing, variable rates included")
    # --- windows ---
    context: int = opt(16, f"frames per window (at most {MAX_CONTEXT})", "generation")
    overlap: int = opt(4, "frames shared by neighbouring windows", "generation")
    frame_budget: int | None = opt(None, "most frames in the UNet at once; bounds GPU memory", "generation",
                                   metavar="N", default_help="what fits, at most 64")
    loop: bool = opt(False, "closed loop: the end flows into the start", "generation")
    fusion: str = opt("pyramid", "blending of overlapping windows", "generation", choices=FUSION_KINDS)
    noise: str = opt("freenoise", "initial noise: freenoise (shuffled per window) or random", "generation",
                     choices=NOISE_KINDS)
    # --- models ---
    models: str = opt("default", "'default': the real models (downloaded once); 'tiny': random weights, an offline "
                                 "smoke test whose output is noise", "models", choices=MODEL_SETS, commands=ALL)
    base: str | None = opt(None, "SD 1.5 base model: a name from `v2v models` (e.g. toonyou), hub id, local "
                                 "diffusers folder, or one .safetensors checkpoint (civitai/A1111 layout)", "models",
                           default_help="emilianJR/epiCRealism")
    motion: str | None = opt(None, "motion module: hub repo, folder, or one .safetensors/.ckpt file", "models",
                             default_help="ByteDance/AnimateDiff-Lightning")
    controlnet: str | None = opt(None, "ControlNet OpenPose: hub id, folder, or one .pth/.safetensors file", "models",
                                 default_help="lllyasviel/control_v11p_sd15_openpose")
    motion_loras: tuple[str, ...] = opt(
        (), "motion LoRA merged into the motion module, repeatable: a diffusers repo such as "
            "guoyww/animatediff-motion-lora-zoom-in, or a v2_lora_*.ckpt file; strength 1.0 unless given "
            "(0.7-0.8 suggested), e.g. guoyww/animatediff-motion-lora-zoom-in:0.8", "models", flag="--motion-lora",
        metavar="PATH_OR_REPO[:STRENGTH]", default_help="")
    vae: str | None = opt(None, "VAE replacing the base's: hub id, folder or file, e.g. stabilityai/sd-vae-ft-mse",
                          "models", default_help="the base's")
    fast_decode: bool = opt(False, "decode with TAESD (madebyollin/taesd) instead of the VAE: much faster, a little "
                                   "softer", "models")
    pose_model: str | None = opt(None, "pose weights: hub id or folder (dwpose: yolox_l.onnx, dw-ll_ucoco_384.onnx, "
                                       "or with --pose-runtime torch yolox_l.torchscript.pt, "
                                       "dw-ll_ucoco_384_bs5.torchscript.pt; openpose: body_pose_model.pth, "
                                       "hand_pose_model.pth, facenet.pth)", "pose", commands=ALL,
                                 default_help="yzd-v/DWPose or lllyasviel/Annotators")
    device: str = opt("auto", "auto (CUDA when present), cpu, cuda, cuda:N, mps (Apple GPUs, untested)", "models",
                      commands=ALL)
    dtype: str = opt("auto", "auto: float16 on CUDA, float32 on the CPU", "models", choices=DTYPES)
    compile: bool = opt(False, "torch.compile the networks (faster, slow first run)", "models")
    offload: bool = opt(False, "keep the text encoder and VAE in CPU RAM until used (GPUs with little memory)",
                        "models")
    # --- pose ---
    pose: str = opt("dwpose", "pose detector: dwpose (ONNX, whole body) or openpose (controlnet_aux networks)",
                    "pose", choices=POSE_DETECTORS, commands=ALL)
    # DWPose's runtime only, not OpenPose's (always torch): a rerun's recorded runtime must not stop --pose openpose
    pose_runtime: str = opt("auto", "what runs DWPose: onnx (onnxruntime; the GPU with onnxruntime-gpu), torch "
                                    "(TorchScript files on torch's device); auto: onnx, or torch on a GPU "
                                    "onnxruntime cannot use", "pose", choices=POSE_RUNTIMES, commands=ALL)
    pose_parts: tuple[str, ...] = opt(POSE_PARTS, "comma-separated parts to keep and draw: body, hands, face",
                                      "pose", metavar="PARTS", commands=ALL, default_help="all")
    pose_threshold: float = opt(0.3, "keypoints at or below this confidence are not drawn", "pose", commands=ALL)
    pose_smoothing: float = opt(0.5, "temporal keypoint smoothing (people tracked across frames), 0 (off) to 1 "
                                     "(strongest)", "pose", commands=ALL)
    pose_json: Path | None = opt(None, "use these keypoints (OpenPose JSON, source pixels, one object per kept "
                                       "frame) instead of detecting; the pose models are not loaded", "pose",
                                 metavar="FILE", commands=("restyle", "watch", "batch", "pose"), default_help="",
                                 per_command={"pose": {"help": "render this OpenPose JSON (one object per kept "
                                                               "frame) instead of detecting"}})
    pose_cache: bool = opt(True, "detect again instead of reusing cached keypoints (and do not cache them)", "pose",
                           flag="--no-cache", commands=ALL)
    # --- outputs ---
    keep_pose: Path | None = opt(None, "also write the pose-map video here", "output", metavar="PATH", default_help="",
                                 commands=("restyle", "watch", "batch"),
                                 per_command={c: {"action": "store_true", "help": "also write OUT_DIR/NAME.pose.mp4"}
                                              for c in ("watch", "batch")})
    crf: int | None = opt(None, "quality, lower is better: H.264/H.265 0-51 (default 18/20), VP9 0-63 (24), AV1 "
                                "1-63 (30); ProRes, GIF and PNG ignore it", "output", commands=ALL, default_help="",
                          per_command={"pose": {"help": "quality of the pose video, lower is better (H.264: 0-51, "
                                                        "default 18)"}})
    format: str | None = opt(None, "h264 or h265 (.mp4), vp9 or av1 (.webm), prores (.mov), gif, png (a folder of "
                                   "frames)", "output", choices=OUTPUT_FORMATS, default_help="from the extension")
    gif_loop: int = opt(0, "GIF: play N times, 0 = forever", "output", metavar="N")
    ping_pong: bool = opt(False, "play forward, then backward (audio: forward half only)", "output")
    compare: bool = opt(False, "also write OUTPUT.compare.mp4: source | pose | result side by side, with the audio",
                        "output")
    full_size: bool = opt(False, "scale the result to the source's size (rounded down to even for video codecs)",
                          "output")
    extra: dict = field(default_factory=dict, compare=False, repr=False, metadata=_cli("reserved for front ends", "",
                                                                                        cli=False))

    def __post_init__(self):
        self._plain_numbers()
        if isinstance(self.pose_parts, (str, list, tuple)):  # accept "body,hands" and lists; stored as a tuple
            object.__setattr__(self, "pose_parts", parse_pose_parts(self.pose_parts))
        if isinstance(self.pose_json, str):
            object.__setattr__(self, "pose_json", Path(self.pose_json))
        if isinstance(self.fps, str):  # "24", "29.97", "30000/1001", as on the command line
            object.__setattr__(self, "fps", parse_fps(self.fps))
        if not (isinstance(self.prompt_at, tuple) and all(isinstance(k, tuple) for k in self.prompt_at)):
            object.__setattr__(self, "prompt_at", parse_prompt_at(self.prompt_at))
        if self.negative_prompt is None:  # "none", as diffusers' pipelines take it (and as a record can rerun)
            object.__setattr__(self, "negative_prompt", "")
        if isinstance(self.motion_loras, (str, Path)):  # one LoRA as a plain string; lists stored as a tuple
            object.__setattr__(self, "motion_loras", (str(self.motion_loras),))
        elif isinstance(self.motion_loras, list):
            object.__setattr__(self, "motion_loras", tuple(str(v) for v in self.motion_loras))

    # ---------------------------------------------------------------- derived values
    @property
    def lightning_steps(self) -> int:
        return self.lightning if self.lightning is not None else lightning_for_steps(self.steps)

    @property
    def short_side(self) -> int:
        return self.size if self.size is not None else DEFAULT_SIZE.get(self.models, 512)

    def replace(self, **changes) -> RestyleOptions:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- the one validator
    def validate(self) -> RestyleOptions:
        """Check every field and every cross-field rule; raise InvalidOptions naming the fix. Returns self."""
        def bad(msg: str) -> None:
            raise InvalidOptions(msg)

        self._check_types()
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            bad("a prompt is needed: pass -p 'the style you want', e.g. -p 'claymation astronaut'")
        if self.steps < 1 or self.steps > 100:
            bad(f"--steps must be between 1 and 100, got {self.steps}")
        if self.lightning is not None and self.lightning not in LIGHTNING_STEPS:
            bad(f"--lightning must be one of {', '.join(map(str, LIGHTNING_STEPS))}, got {self.lightning}")
        if self.guidance < 1.0:
            bad(f"--guidance must be >= 1 (1 = no negative pass), got {self.guidance}")
        if self.negative_prompt and self.guidance <= 1.0:
            bad("--negative-prompt only acts with --guidance above 1: add e.g. --guidance 1.5, or drop it")
        if not 0.0 <= self.pose_strength <= 2.0:
            bad(f"--pose-strength must be between 0 and 2, got {self.pose_strength}")
        if not 0.0 <= self.control_start < self.control_end <= 1.0:
            bad(f"--control-start/--control-end must satisfy 0 <= start < end <= 1, got {self.control_start} and "
                f"{self.control_end}")
        strength_steps(self.steps, self.strength)  # in (0, 1] and on the step grid
        if self.prompt_at:
            frames = [f for f, _ in self.prompt_at]
            if frames != sorted(set(frames)) or frames[0] < 0:
                bad(f"--prompt-at frames must be distinct and >= 0, got {frames}")
        if self.size is not None and (self.width is not None or self.height is not None):
            bad("give either --size or --width/--height, not both")
        if self.size is not None and not 64 <= self.size <= 4096:
            bad(f"--size must be between 64 and 4096, got {self.size}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (v < 64 or v > 4096 or v % 8):
                bad(f"--{name} must be a multiple of 8 between 64 and 4096, got {v} (try {max(64, v // 8 * 8)})")
        if self.start is not None and self.start < 0:
            bad(f"--start must be >= 0, got {self.start}")
        if self.end is not None and self.end <= 0:
            bad(f"--end must be > 0, got {self.end}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            bad(f"--end ({self.end}) must be after --start ({self.start})")
        if self.max_frames is not None and self.max_frames < 1:
            bad(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.every_nth < 1:
            bad(f"--every-nth must be >= 1, got {self.every_nth}")
        if self.fps is not None and self.fps <= 0:
            bad(f"--fps must be positive, got {self.fps}")
        if self.fps is not None and self.every_nth != 1:
            bad("--fps and --every-nth both choose frames: use one of them")
        if not 1 <= self.context <= MAX_CONTEXT:
            bad(f"--context must be between 1 and {MAX_CONTEXT} (the motion module's limit), got {self.context}")
        if not 0 <= self.overlap < self.context:
            bad(f"--overlap must be >= 0 and smaller than --context ({self.context}), got {self.overlap}")
        if self.frame_budget is not None and not self.context <= self.frame_budget <= 4096:
            bad(f"--frame-budget must hold at least one window (--context {self.context}) and be at most 4096, "
                f"got {self.frame_budget}")
        if self.fusion not in FUSION_KINDS:
            bad(f"--fusion must be one of {', '.join(FUSION_KINDS)}, got {self.fusion!r}")
        if self.noise not in NOISE_KINDS:
            bad(f"--noise must be one of {', '.join(NOISE_KINDS)}, got {self.noise!r}")
        if self.models not in MODEL_SETS:
            bad(f"--models must be one of {', '.join(MODEL_SETS)}, got {self.models!r}")
        if not isinstance(self.motion_loras, tuple):
            bad(f"motion_loras must be a list of 'PATH_OR_REPO[:STRENGTH]' strings, got {self.motion_loras!r}")
        for item in self.motion_loras:
            spec, strength = parse_motion_lora(item)
            if not spec.strip():
                bad(f"--motion-lora {item!r} names no LoRA: give a path or hub repo, e.g. "
                    f"guoyww/animatediff-motion-lora-zoom-in:0.8")
            if not math.isfinite(strength) or not -2.0 <= strength <= 2.0:
                bad(f"--motion-lora strength must be between -2 and 2 (0.7-0.8 is a good start), got {item!r}")
        if self.vae is not None and not str(self.vae).strip():
            bad("--vae is empty: give a hub id, folder or file, e.g. stabilityai/sd-vae-ft-mse")
        if not isinstance(self.fast_decode, bool):
            bad(f"fast_decode must be true or false, got {self.fast_decode!r}")
        if self.dtype not in DTYPES:
            bad(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        dev = self.device
        cuda_n = dev.startswith("cuda:") and dev[5:].isascii() and dev[5:].isdecimal()
        if not (dev in ("auto", "cpu", "cuda", "mps") or cuda_n):
            bad(f"--device must be auto, cpu, cuda, cuda:N or mps, got {dev!r}")
        if self.dtype == "float16" and dev == "cpu":
            bad("--dtype float16 is not supported on the CPU: use float32 (the default there) or bfloat16")
        if self.offload and dev == "cpu":
            bad("--offload moves models between the GPU and CPU RAM: it does nothing with --device cpu; drop it")
        if self.pose not in POSE_DETECTORS:
            bad(f"--pose must be one of {', '.join(POSE_DETECTORS)}, got {self.pose!r}")
        if self.pose_runtime not in POSE_RUNTIMES:
            bad(f"--pose-runtime must be one of {', '.join(POSE_RUNTIMES)}, got {self.pose_runtime!r}")
        parts = self.pose_parts
        if not isinstance(parts, tuple) or not parts or any(p not in POSE_PARTS for p in parts):
            bad(f"--pose-parts must be a comma-separated subset of {','.join(POSE_PARTS)}, got "
                f"{','.join(map(str, parts)) if isinstance(parts, tuple) else parts!r}")
        if not 0.0 <= self.pose_threshold < 1.0:
            bad(f"--pose-threshold must be >= 0 and < 1, got {self.pose_threshold}")
        if not 0.0 <= self.pose_smoothing <= 1.0:
            bad(f"--pose-smoothing must be between 0 (off) and 1, got {self.pose_smoothing}")
        if self.pose_json is not None and not Path(self.pose_json).expanduser().is_file():
            bad(f"--pose-json file '{self.pose_json}' does not exist: check the path")
        if self.format is not None and self.format not in FORMATS:
            bad(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        problem = crf_problem(FORMATS.get(self.format), self.crf)  # before the extension is known: 0-63
        if problem:
            bad(problem)
        if isinstance(self.gif_loop, bool) or not isinstance(self.gif_loop, int) or not 0 <= self.gif_loop <= 65536:
            bad(f"--gif-loop must be 0 (forever) or how many times the GIF plays (1-65536), got {self.gif_loop!r}")
        if self.gif_loop and self.format not in (None, "gif"):
            bad(f"--gif-loop applies to GIF output only, not --format {self.format}: drop it")
        return self

    def _plain_numbers(self) -> None:
        """Numbers of other types that _check_types accepts (numpy's np.int64, np.float32...) as plain int and
        float, as the command line gives them: the decoder, the writers and the size maths take Python numbers."""
        for f in dataclasses.fields(self):
            kind, value = str(f.type).replace("| None", "").strip(), getattr(self, f.name)
            if value is None or isinstance(value, bool):
                continue
            if kind == "int" and isinstance(value, numbers.Integral) and type(value) is not int:
                object.__setattr__(self, f.name, int(value))
            elif (kind in ("float", "Fraction") and isinstance(value, numbers.Real)
                  and not isinstance(value, (int, float, Fraction))):
                try:  # np.float32(29.97) -> 29.97 (its shortest text), not 29.969999313354492
                    plain = float(str(value))
                except ValueError:
                    plain = float(value)
                object.__setattr__(self, f.name, plain)

    def _check_types(self) -> None:
        """Each field's value of its annotated type (the API takes any Python value: "4" for steps, "no" for a
        flag or NaN must not slip through to a comparison or a truth test). Tuples are checked by validate()."""
        for f in dataclasses.fields(self):
            kind, value = str(f.type), getattr(self, f.name)
            if value is None and "None" in kind:
                continue
            kind = kind.replace("| None", "").strip()
            flag = "prompt" if f.name == "prompt" else f"--{f.name.replace('_', '-')}"
            got = f"got {value!r} ({type(value).__name__})"
            if kind == "str" and f.name in MODEL_PATH_FIELDS:  # a hub id, or a local folder or file
                ok, what = isinstance(value, (str, os.PathLike)), "a hub id or a path"
            elif kind == "str":
                ok, what = isinstance(value, str), "a string"
            elif kind == "bool":
                ok, what = isinstance(value, bool), "True or False"
            elif kind == "int":
                ok, what = isinstance(value, numbers.Integral) and not isinstance(value, bool), "a whole number"
            elif kind in ("float", "Fraction"):
                ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                      and math.isfinite(float(value)))
                what = "a finite number" if kind == "float" else "a frame rate such as 24, 29.97 or '30000/1001'"
            elif kind == "Path":
                ok, what = isinstance(value, (str, os.PathLike)) and bool(str(value)), "a file path"
            else:
                continue
            if not ok:
                raise InvalidOptions(f"{flag} must be {what}, {got}")
        if not -2**63 <= self.seed < 2**64:  # what torch.Generator.manual_seed takes
            raise InvalidOptions(f"--seed must fit in 64 bits (e.g. 0 to 2**64-1), got {self.seed}")

    def settings(self) -> dict:
        """A JSON-friendly record of every option (for metadata and result objects)."""
        d = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            d[f.name] = str(v) if isinstance(v, (Path, Fraction)) else _plain(v) if isinstance(v, tuple) else v
        d["lightning_steps"] = self.lightning_steps
        d["short_side"] = self.short_side
        return d


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


def option_names() -> set[str]:
    return {f.name for f in dataclasses.fields(RestyleOptions)}


# ---------------------------------------------------------------------------------------------- typed values
# Sidecars, config files and settings records give options as JSON/TOML values: each is checked against its field.
FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(RestyleOptions)}


def coerce(name: str, value, annotation: str, source: str, folder: Path):
    """A JSON value checked against a RestyleOptions field's annotation (relative paths: from ``folder``)."""
    import json

    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise InvalidOptions(f"{source}: \"{name}\" cannot be null")
    kind = annotation.replace("| None", "").strip()

    def bad(what: str):
        raise InvalidOptions(f"{source}: \"{name}\" must be {what}, got {json.dumps(value)}")

    if kind == "str":
        if not isinstance(value, str):
            bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if kind.startswith("tuple"):  # a list of names, or "a,b"
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad("a list of names")
        return tuple(value)
    if kind == "Path":  # an input file (outputs never come from a sidecar)
        if not isinstance(value, str) or not value:
            bad("a file path")
        return folder / Path(value).expanduser()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            bad("a whole number")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
        return float(value)
    if kind == "Fraction":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            bad("a frame rate such as 24, 29.97 or \"30000/1001\"")
        try:
            return parse_fps(value)
        except InvalidOptions as e:
            raise InvalidOptions(f"{source}: {e}") from None
    if kind == "dict":
        if not isinstance(value, dict):
            bad("an object")
        return value
    return value
