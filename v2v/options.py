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

# The models v2v uses by default (DESIGN.md, decision 2). Downloaded to the Hugging Face cache on first use.
DEFAULT_BASE = "emilianJR/epiCRealism"
DEFAULT_MOTION = "ByteDance/AnimateDiff-Lightning"
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_openpose"
DEFAULT_DWPOSE = "yzd-v/DWPose"
DEFAULT_OPENPOSE = "lllyasviel/Annotators"  # body_pose_model.pth, hand_pose_model.pth, facenet.pth

LIGHTNING_STEPS = (1, 2, 4, 8)  # the distilled checkpoints that exist
MODEL_SETS = ("default", "tiny")
DTYPES = ("auto", "float16", "bfloat16", "float32")
DEFAULT_SIZE = {"default": 512, "tiny": 128}  # short side of the processing size
MAX_CONTEXT = 32  # the motion module's positional embedding stops at 32 frames
POSE_DETECTORS = ("dwpose", "openpose")
POSE_RUNTIMES = ("auto", "onnx", "torch")  # DWPose's: v2v.pose.dwpose.choose_runtime
NOISE_KINDS = ("freenoise", "random")
FUSION_KINDS = ("pyramid", "flat")
POSE_PARTS = ("body", "hands", "face")
MODEL_PATH_FIELDS = frozenset({"base", "motion", "controlnet", "vae", "pose_model"})  # str or os.PathLike
OUTPUT_FORMATS = ("h264", "h265", "vp9", "av1", "prores", "gif", "png")  # v2v.outputs.FORMATS describes each


def parse_pose_parts(value) -> tuple[str, ...]:
    """'body,hands' or ['body', 'hands'] -> ('body', 'hands') in canonical order; unknown names kept (validate
    rejects them)."""
    if isinstance(value, str):
        items = [v.strip().lower() for v in value.split(",")]
    else:
        items = [str(v).strip().lower() for v in value]
    items = [v for v in items if v]
    known = [p for p in POSE_PARTS if p in items]
    return tuple(known + sorted(set(items) - set(POSE_PARTS)))


def parse_prompt_at(value) -> tuple[tuple[int, str], ...]:
    """Prompt travel keyframes: "0:a cat;48:a dog", a JSON file ({"0": "a cat", "48": "a dog"} or
    [[0, "a cat"], [48, "a dog"]]), or pairs -> ((0, 'a cat'), (48, 'a dog')) sorted by frame."""
    import json

    if value is None or value == "" or value == ():
        return ()
    if isinstance(value, (str, Path)) and str(value).lower().endswith(".json"):
        path = Path(value).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise InvalidOptions(f"--prompt-at file '{value}' cannot be read ({e.strerror}): check the path") from None
        except ValueError as e:
            raise InvalidOptions(f"--prompt-at file '{value}' is not valid JSON ({e})") from None
        value = list(data.items()) if isinstance(data, dict) else data
    if isinstance(value, str):
        pairs = []
        for part in value.split(";"):
            if not part.strip():
                continue
            frame, sep, text = part.partition(":")
            if not sep:
                raise InvalidOptions(f"--prompt-at part {part.strip()!r} needs FRAME:PROMPT, e.g. '0:a cat;48:a dog'")
            pairs.append((frame.strip(), text.strip()))
        value = pairs
    out = []
    try:
        for frame, text in value:
            if isinstance(frame, bool) or not str(frame).strip().isdigit():
                raise InvalidOptions(f"--prompt-at frame {frame!r} is not a frame number (0, 1, 2, ...)")
            if not isinstance(text, str) or not text.strip():
                raise InvalidOptions(f"--prompt-at frame {frame} has no prompt")
            out.append((int(str(frame).strip()), text.strip()))
    except InvalidOptions:
        raise
    except (TypeError, ValueError):
        raise InvalidOptions("--prompt-at must be 'FRAME:PROMPT;FRAME:PROMPT' or a JSON file of frame -> prompt") \
            from None
    frames = [f for f, _ in out]
    if len(set(frames)) != len(frames):
        raise InvalidOptions(f"--prompt-at gives frame {max(frames, key=frames.count)} twice")
    return tuple(sorted(out))


def parse_motion_lora(value: str) -> tuple[str, float]:
    """'guoyww/animatediff-motion-lora-zoom-in:0.8' -> (spec, 0.8); without ':NUMBER' the strength is 1.0.

    Only a number after the last ':' is a strength, so a Windows path stays whole: 'C:\\loras\\zoom.ckpt' ->
    ('C:\\loras\\zoom.ckpt', 1.0), 'C:\\loras\\zoom.ckpt:0.7' -> ('C:\\loras\\zoom.ckpt', 0.7).
    """
    spec, sep, tail = str(value).rpartition(":")
    if sep:
        try:
            return spec, float(tail)
        except ValueError:
            pass
    return str(value), 1.0


def strength_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` denoising steps run from the source latents at ``strength`` (as diffusers' img2img:
    the last ``steps * strength`` of the schedule). InvalidOptions unless 0 < strength <= 1 and on the step
    grid: the distilled models know only their own timesteps."""
    if not 0.0 < strength <= 1.0:
        raise InvalidOptions(f"--strength must be above 0 and at most 1, got {strength}")
    run = round(steps * strength)
    if abs(run - steps * strength) > 1e-6 or run < 1:
        grid = ", ".join(f"{k / steps:g}" for k in range(1, steps + 1))
        raise InvalidOptions(f"--strength {strength:g} is not on the {steps}-step grid (the distilled models know "
                             f"only their own timesteps): use one of {grid}")
    return run


def lightning_for_steps(steps: int) -> int:
    """The Lightning checkpoint for a step count: the one with that many steps, else the largest below it.

    3 steps -> the 2-step model (what the model card recommends), 6 -> 4, 20 -> 8.
    """
    return max(s for s in LIGHTNING_STEPS if s <= max(steps, 1))


def parse_fps(value: str | float | Fraction | None) -> Fraction | None:
    """'30', '29.97', '30000/1001' -> Fraction. None stays None."""
    if value is None:
        return None
    try:
        f = Fraction(str(value)).limit_denominator(1_000_000)
    except (ValueError, ZeroDivisionError):
        raise InvalidOptions(f"--fps {value!r} is not a number: give e.g. 24, 29.97 or 30000/1001") from None
    if f <= 0:
        raise InvalidOptions(f"--fps must be positive, got {value}")
    return f


@dataclass(frozen=True)
class RestyleOptions:
    # --- what to make ---
    prompt: str  # the style to give the people ("claymation astronaut")
    negative_prompt: str = ""  # what to avoid; only used with guidance > 1
    steps: int = 4  # denoising steps
    lightning: int | None = None  # which distilled checkpoint (1, 2, 4, 8); None: chosen from `steps`
    seed: int = 0  # the same seed and options give the same video
    guidance: float = 1.0  # classifier-free guidance; 1 = no negative pass (Lightning's default)
    pose_strength: float = 1.0  # ControlNet conditioning scale
    control_start: float = 0.0  # fraction of the steps after which the ControlNet starts acting
    control_end: float = 1.0  # fraction of the steps after which it stops (diffusers' control_guidance_end)
    prompt_at: tuple[tuple[int, str], ...] = ()  # prompt travel: (frame, prompt) keyframes, blended in between
    strength: float = 1.0  # < 1: start from the source frames (keeps colours); on the step grid (0.5 of 4 steps)
    # --- frames ---
    size: int | None = None  # short side of the processing size; None: 512 (128 with models="tiny")
    width: int | None = None  # processing width (multiple of 8); the height follows the aspect unless given
    height: int | None = None  # processing height (multiple of 8)
    start: float | None = None  # seconds from the first frame where the output starts
    end: float | None = None  # seconds from the first frame where the output ends
    max_frames: int | None = None  # keep at most this many frames
    every_nth: int = 1  # keep every n-th frame (timestamps kept, so the duration stays)
    fps: Fraction | None = None  # resample to this frame rate (same duration); None: the source's own timing
    # --- windows ---
    context: int = 16  # frames the motion module sees at once
    overlap: int = 4  # frames shared by neighbouring windows
    frame_budget: int | None = None  # most frames in the UNet at once (bounds memory); None: from free memory, <= 64
    loop: bool = False  # closed loop: the last windows wrap around to the first frames (seamless loops)
    fusion: str = "pyramid"  # how overlapping windows are blended: "pyramid" (default) or "flat"
    noise: str = "freenoise"  # initial noise: "freenoise" (shuffled repeats per window) or "random"
    # --- models ---
    models: str = "default"  # "default" (real models, downloaded once) or "tiny" (random, offline smoke test)
    base: str | None = None  # SD 1.5 base: hub id, local diffusers folder or single checkpoint file; None: the model set's
    motion: str | None = None  # motion module: hub repo or .safetensors file; None: AnimateDiff-Lightning
    controlnet: str | None = None  # ControlNet OpenPose: hub id, folder or single file; None: the model set's
    motion_loras: tuple[str, ...] = ()  # motion LoRAs "PATH_OR_REPO[:STRENGTH]" (strength 1.0 if none), merged in
    vae: str | None = None  # VAE replacing the base's: hub id, diffusers folder or single file; None: the base's
    fast_decode: bool = False  # decode with TAESD (madebyollin/taesd) instead of the VAE: faster, a little softer
    pose_model: str | None = None  # pose weights: hub id or folder (DWPose's 2 ONNX / OpenPose's 3 .pth); None: default
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"...
    dtype: str = "auto"  # "auto" (float16 on CUDA, float32 on CPU), "float16", "bfloat16", "float32"
    compile: bool = False  # torch.compile the UNet blocks, ControlNet and VAE decoder (slow first run)
    offload: bool = False  # keep the text encoder and VAE in CPU RAM, on the GPU only while used (small GPUs)
    # --- pose ---
    pose: str = "dwpose"  # pose detector: "dwpose" (ONNX, whole body) or "openpose" (controlnet_aux networks)
    pose_runtime: str = "auto"  # DWPose's runtime: "onnx" (onnxruntime), "torch" (TorchScript files on torch's
    #   device); "auto": onnx, or torch on a GPU onnxruntime cannot use. Not OpenPose's (always torch): a rerun's
    #   recorded DWPose runtime must not stop `--pose openpose`
    pose_parts: tuple[str, ...] = POSE_PARTS  # which parts are kept and drawn: any of body, hands, face
    pose_threshold: float = 0.3  # keypoints at or below this confidence are not drawn (and count as missing)
    pose_smoothing: float = 0.5  # temporal keypoint smoothing, 0 (off) .. 1 (strongest); people tracked across frames
    pose_json: Path | None = None  # OpenPose JSON (source pixels, one object per kept frame) used instead of detection
    pose_cache: bool = True  # reuse keypoints cached for the same input, detector, models and settings
    # --- outputs ---
    keep_pose: Path | None = None  # also write the pose-map video here
    crf: int | None = None  # quality, lower is better, on the codec's scale (v2v.outputs); None: the codec's default
    format: str | None = None  # h264, h265, vp9, av1, prores, gif, png; None: from the output's extension
    gif_loop: int = 0  # GIF: how many times it plays, 0 = forever
    ping_pong: bool = False  # play forward, then backward (any format; the audio plays once, under the forward half)
    compare: bool = False  # also write OUTPUT.compare.mp4: source | pose map | result, side by side, with the audio
    full_size: bool = False  # scale the result to the source's display size (even sides where the codec needs it)
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # reserved for front ends

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
        if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isascii() and dev[5:].isdecimal())):
            bad(f"--device must be auto, cpu, cuda or cuda:N, got {dev!r}")
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
        from .outputs import FORMATS, crf_problem

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
        """Numbers of other types that _check_types accepts (numpy's np.int64, np.float32...) as plain int and float,
        as the command line gives them: the decoder, the writers and the size maths take Python numbers only, and
        refused np.int64(4) for --max-frames (\"must be an integer\") after validate() had passed it."""
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
