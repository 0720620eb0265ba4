"""The page's form and the options: the choices each field offers, the form's values as RestyleOptions fields
(to run), and a settings record or a preset as form values (to fill the form). Pure: no web library here.

The form holds the options a creator changes; any other option of a loaded record or preset is kept beside the
form ("extras") and applied under it, so that "Use these settings" reruns the record, not a part of it.
"""

from __future__ import annotations

import dataclasses
import math

from ..errors import InvalidOptions
from ..option_values import lightning_for_steps, parse_motion_lora
from ..options import RestyleOptions

STEP_CHOICES = (1, 2, 3, 4, 8)
SIZE_CHOICES = ("auto", 256, 384, 512, 640, 768, 1024)
FORMAT_CHOICES = (("MP4, H.264 (plays everywhere)", "h264"), ("WebM, VP9", "vp9"), ("WebM, AV1", "av1"),
                  ("MP4, H.265 (smaller; many browsers cannot play it)", "h265"),
                  ("MOV, ProRes 422 HQ (for editing; browsers cannot play it)", "prores"), ("GIF", "gif"))
POSE_CHOICES = (("DWPose (whole body, hands and face)", "dwpose"), ("OpenPose", "openpose"))

# the form's fields, each a RestyleOptions field, except the LoRA's strength (folded into motion_loras)
FIELDS = ("prompt", "negative_prompt", "guidance", "base", "steps", "seed", "pose_strength", "strength", "size",
          "start", "end", "motion_loras", "lora_strength", "fast_decode", "pose", "pose_smoothing", "format")
# options of this machine, not of the video: never taken from a record (the server's own are used)
MACHINE = frozenset({"models", "device", "dtype", "compile", "offload", "pose_runtime"})
NOT_FROM_RECORDS = MACHINE | {"keep_pose", "pose_json", "extra"}
DEFAULT_LORA_STRENGTH = 0.8  # the model card's suggestion for motion LoRAs (0.7-0.8)


def step_label(steps: int) -> str:
    model = lightning_for_steps(steps)
    return f"{steps}" if model == steps else f"{steps} (the {model}-step model)"


def strength_choices(steps: int) -> list[tuple[str, float]]:
    """The strengths on the ``steps`` grid (the distilled models know only their own timesteps), strongest first."""
    steps = max(1, int(steps))
    out = []
    for k in range(steps, 0, -1):
        value = k / steps
        out.append(("1 (from noise)" if k == steps else f"{value:g} (keeps more source)", value))
    return out


def nearest_strength(steps: int, strength: float) -> float:
    """``strength`` moved onto the ``steps`` grid (when the steps change, the chosen strength follows)."""
    values = [v for _, v in strength_choices(steps)]
    return min(values, key=lambda v: abs(v - float(strength)))


def defaults(server: dict) -> dict:
    """The form's first values: RestyleOptions' defaults under the server's (``v2v ui`` options, config, preset)."""
    base = {f.name: f.default for f in dataclasses.fields(RestyleOptions)
            if f.default is not dataclasses.MISSING}
    return form_values({**base, "prompt": "", **server})[0]


def _number(value, name: str, kind=float):
    if value is None or value == "":
        return None
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)  # exact, past float's 2**53 (a recorded 64-bit seed)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidOptions(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidOptions(f"{name} must be a finite number, got {value!r}")
    if kind is int:
        if not number.is_integer():
            raise InvalidOptions(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return number


def _has_strength(item: str) -> bool:
    _, sep, tail = item.rpartition(":")
    try:
        float(tail)
    except ValueError:
        return False
    return bool(sep)


def _loras(text: str | None, strength) -> tuple[str, ...]:
    """One LoRA per line (or ';'-separated), each 'PATH_OR_REPO' or 'PATH_OR_REPO:STRENGTH'; the slider's
    strength for those without one."""
    items = [s.strip() for s in str(text or "").replace(";", "\n").splitlines() if s.strip()]
    s = DEFAULT_LORA_STRENGTH if strength is None else _number(strength, "LoRA strength")
    return tuple(item if _has_strength(item) else f"{item}:{s:g}" for item in items)


def _or(value, default):
    return default if value is None else value


def run_options(values: dict, extras: dict | None = None, duration: float | None = None) -> tuple[str, dict]:
    """(prompt, options) to run from the form's ``values`` (keyed as FIELDS), over ``extras`` (a loaded record's
    or preset's other options). ``duration``: the input's, so that an end at (or past) it means "to the end"."""
    v = dict(values)
    base = str(v.get("base") or "").strip()
    size = v.get("size")
    start, end = _number(v.get("start"), "start"), _number(v.get("end"), "end")
    opts = {
        **(extras or {}),
        "negative_prompt": str(v.get("negative_prompt") or ""),
        "guidance": _or(_number(v.get("guidance"), "guidance"), 1.0),
        "base": base or None,
        "steps": _or(_number(v.get("steps"), "steps", int), 4),
        "seed": _or(_number(v.get("seed"), "seed", int), 0),
        "pose_strength": _or(_number(v.get("pose_strength"), "pose strength"), 1.0),
        "strength": _or(_number(v.get("strength"), "strength"), 1.0),
        "size": None if size in (None, "", "auto") else _number(size, "size", int),
        "start": start or None,
        "end": None if end is None or (duration is not None and end >= duration - 1e-3) else end,
        "motion_loras": _loras(v.get("motion_loras"), v.get("lora_strength")),
        "fast_decode": bool(v.get("fast_decode")),
        "pose": v.get("pose") or "dwpose",
        "pose_smoothing": _or(_number(v.get("pose_smoothing"), "pose smoothing"), 0.5),
        "format": v.get("format") or "h264",
    }
    if opts["format"] == "png":
        raise InvalidOptions("the page makes videos: choose a video format (for PNG frames: v2v restyle --format png)")
    return str(v.get("prompt") or ""), opts


def form_values(options: dict) -> tuple[dict, dict]:
    """(form values, extras) from options (a record's, as settings.load_settings gives them, or a preset's):
    the fields the form shows, and the other options to keep beside it (machine options left out)."""
    o = dict(options)
    values: dict = {}
    if "prompt" in o:
        values["prompt"] = o.pop("prompt") or ""
    for name in ("negative_prompt", "guidance", "seed", "pose_strength", "fast_decode", "pose", "pose_smoothing",
                 "end"):
        if name in o:
            values[name] = o.pop(name)
    if "start" in o:
        values["start"] = o.pop("start") or 0
    if "base" in o:
        values["base"] = o.pop("base") or ""
    if "steps" in o:
        values["steps"] = int(o.pop("steps"))
    if "strength" in o:
        values["strength"] = float(o.pop("strength"))
    if "size" in o:
        size = o.pop("size")
        values["size"] = "auto" if size is None else int(size)
    if "format" in o:
        values["format"] = o.pop("format") or "h264"
    if "motion_loras" in o:
        loras = [parse_motion_lora(item) for item in o.pop("motion_loras") or ()]
        strengths = {s for _, s in loras}
        if len(strengths) == 1:
            values["lora_strength"] = strengths.pop()
            values["motion_loras"] = "\n".join(spec for spec, _ in loras)
        else:
            values["motion_loras"] = "\n".join(f"{spec}:{s:g}" for spec, s in loras)
    extras = {k: v for k, v in o.items() if k not in NOT_FROM_RECORDS and k in _FIELD_NAMES}
    return values, extras


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RestyleOptions))


def describe_extras(extras: dict) -> str:
    """The extras that differ from the defaults, as 'name value' pairs for a line under the form ('' if none)."""
    base = {f.name: f.default for f in dataclasses.fields(RestyleOptions) if f.default is not dataclasses.MISSING}
    shown = []
    for k, v in sorted(extras.items()):
        default = base.get(k)
        if (list(v) if isinstance(v, tuple) else v) == (list(default) if isinstance(default, tuple) else default):
            continue
        shown.append(f"{k.replace('_', ' ')} {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}")
    return "; ".join(shown)
