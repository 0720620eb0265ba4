"""A watched video's sidecars: ``NAME.json`` (its options) and ``NAME.txt`` (its prompt) beside ``NAME.mp4``.

    options, files = read_sidecars(Path("inbox/clip.mp4"))

See docs/watch.md for their precedence and what a sidecar may not set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import InvalidOptions, one_line
from .options import FIELD_TYPES, coerce, option_names
from .settings import SCHEMA, input_matches, parse_record

log = logging.getLogger("v2v")

SIDECAR_SUFFIXES = (".json", ".txt")
OUTPUT_KEYS = frozenset({"output", "out", "out_dir", "output_dir", "input"})  # results go to the watch's OUT_DIR only
MODEL_KEYS = frozenset({"models", "base", "motion", "controlnet", "pose_model", "pose", "pose_runtime", "lightning",
                        "steps", "device", "dtype"})  # a sidecar setting one of these owns its model errors


def sidecar_paths(video: Path) -> list[Path]:
    """Where ``video``'s sidecars would be (they may not exist)."""
    return [video.with_suffix(s) for s in SIDECAR_SUFFIXES]


def read_sidecars(video: Path) -> tuple[dict, list[Path]]:
    """This video's own options from ``NAME.json`` and/or ``NAME.txt`` beside it, and the sidecar files found.

    Raises InvalidOptions (one line, naming the file) for a malformed sidecar. ``keep_pose`` comes back as a bool.
    """
    js, txt = sidecar_paths(video)
    found = [p for p in (js, txt) if p.is_file()]
    options: dict = {}
    if txt.is_file():
        try:
            text = " ".join(txt.read_text(encoding="utf-8-sig").split())
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidOptions(f"{txt.name}: cannot be read as UTF-8 text ({one_line(e)})") from None
        if not text:
            raise InvalidOptions(f"{txt.name} is empty: write the prompt in it, or remove it")
        options["prompt"] = text
    if js.is_file():
        try:
            data = json.loads(js.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidOptions(f"{js.name} is not valid JSON: {one_line(e)}") from None
        if isinstance(data, list) and data and all(isinstance(f, dict) and "people" in f for f in data):
            raise InvalidOptions(f"{js.name} holds keypoints (OpenPose JSON), not options: rename "
                                 f"it {video.stem}.pose.json and put {{\"pose_json\": \"{video.stem}.pose.json\"}} "
                                 f"in {js.name}")
        if not isinstance(data, dict):
            raise InvalidOptions(f"{js.name} must hold a JSON object of options, e.g. {{\"prompt\": \"anime\"}}")
        if data.get("schema") == SCHEMA:
            return {**options, **_record_options(data, video, js, txt)}, found
        options.update(_sidecar_options(data, video, js))
        if "prompt" in data and txt.is_file():
            log.info("%s: the prompt in %s wins over %s", video.name, js.name, txt.name)
    return options, found


def _record_options(record: dict, video: Path, js: Path, txt: Path) -> dict:
    """A run's settings record (NAME.restyled.json) beside the video: restyle it the same way."""
    recorded = parse_record(record, js.name)
    # keypoints detected in the recorded input are another video's, unless this is that video
    if "pose_json" in recorded and not input_matches(record, video):
        raise InvalidOptions(f"{js.name}: the record restyles with the keypoints in "
                             f"{recorded['pose_json']}, taken from another video than {video.name}: "
                             f"remove \"pose_json\" from its \"options\" to detect this video's poses")
    log.info("%s: %s is a v2v settings record: restyling with its settings (not its input or output)",
             video.name, js.name)
    if "prompt" in recorded and txt.is_file():
        log.info("%s: the prompt in %s wins over %s", video.name, js.name, txt.name)
    return recorded


def _sidecar_options(data: dict, video: Path, js: Path) -> dict:
    """The options of a sidecar object, typed; InvalidOptions for a key a sidecar may not set."""
    outside = sorted(set(data) & OUTPUT_KEYS)
    if outside:
        raise InvalidOptions(f"{js.name}: \"{outside[0]}\" cannot be set in a sidecar: results always go to "
                             "the watch output folder")
    unknown = sorted(set(data) - option_names() - {"preset"})
    if unknown:
        raise InvalidOptions(f"{js.name}: unknown option(s): {', '.join(unknown)}")
    options = {}
    for key, value in data.items():
        if key == "preset":  # expanded by Watcher.settings_for, which knows the config
            if not isinstance(value, str) or not value:
                raise InvalidOptions(f"{js.name}: \"preset\" must be a preset name")
            options[key] = value
        elif key == "keep_pose":  # a path would send the pose video outside OUT_DIR
            if not isinstance(value, bool):
                raise InvalidOptions(f"{js.name}: \"keep_pose\" must be true or false in watch mode (the pose "
                                     "video goes to the watch output folder as NAME.pose.mp4)")
            options[key] = value
        else:
            options[key] = coerce(key, value, FIELD_TYPES[key], js.name, video.parent)
    return options
