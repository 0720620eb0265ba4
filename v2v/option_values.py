"""Parsers for option values that are more than a number: frame rates, prompt travel keyframes, motion LoRAs with
a strength, pose parts, and the step-grid rules. Pure: the command line, the config, settings records and the API
all go through them.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .errors import InvalidOptions

LIGHTNING_STEPS = (1, 2, 4, 8)  # the distilled checkpoints that exist
POSE_PARTS = ("body", "hands", "face")


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
