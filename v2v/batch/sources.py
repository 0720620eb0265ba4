"""Reading JOBS, before anything starts: a folder of videos (each with its sidecars, as watch mode reads them), a
glob, one video, or a manifest (CSV, or JSON lines: ``input``, ``prompt`` and any option per row).

    rows = read_jobs("campaign.csv")   # [Row(input=Path(".../a.mp4"), options={"prompt": "...", "seed": 3}), ...]

A problem with the manifest itself (not readable, no ``input``, an unknown option, an output path) is an
``InvalidOptions`` error here, before any job starts. A problem with one job's values (a value of the wrong type, a
malformed sidecar) is kept in its row's ``error``: that job fails, the others run. See docs/batch.md.
"""

from __future__ import annotations

import csv
import difflib
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputNotFound, InvalidOptions, one_line
from ..options import FIELD_TYPES, coerce, option_names
from ..sidecars import OUTPUT_KEYS, read_sidecars
from ..watch import is_candidate

MANIFESTS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
OPTION_KEYS = frozenset(option_names() - {"extra"})
ROW_KEYS = OPTION_KEYS | {"input", "preset"}  # what a manifest row may set
TRUE, FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Row:
    """One job as JOBS gives it: its input and its own options (typed; ``prompt``, ``preset`` and ``keep_pose``, a
    bool, included), before the batch's options and the config are merged in."""

    input: Path  # absolute
    options: dict = field(default_factory=dict)
    source: str = ""  # where the row came from, for messages: "jobs.csv line 3", "clip.json"
    error: str | None = None  # this job's own problem (a bad value or sidecar): it fails, the others run


def read_jobs(jobs: str | os.PathLike) -> list[Row]:
    """The rows of JOBS: a folder, a manifest (.csv, .jsonl/.ndjson/.json), one video, or a glob."""
    text = os.fspath(jobs)
    path = Path(text).expanduser()
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if is_candidate(p) and p.is_file())
        if not videos:
            raise InputNotFound(f"no videos in '{path}': put the clips there (.mp4, .mov, .mkv, .webm...), or give "
                                "a glob or a manifest")
        return [video_row(p) for p in videos]
    if path.is_file():
        kind = MANIFESTS.get(path.suffix.lower())
        if kind is not None:
            return csv_rows(path) if kind == "csv" else jsonl_rows(path)
        if is_candidate(path):
            return [video_row(path)]
        raise InvalidOptions(f"'{path.name}' is neither a video nor a manifest: give a folder of videos, a glob, or "
                             "a manifest ending in .csv or .jsonl")
    if any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        videos = [p for p in found if is_candidate(p) and p.is_file()]
        if not videos:
            raise InputNotFound(f"no videos match '{text}': check the pattern (quote it, so that the shell leaves "
                                "it to v2v)")
        return [video_row(p) for p in videos]
    raise InputNotFound(f"'{text}' does not exist: give a folder of videos, a glob such as 'clips/*.mp4', or a "
                        "manifest (.csv, .jsonl)")


def video_row(video: Path) -> Row:
    """A video with its own options from its sidecars (NAME.json, NAME.txt), as watch mode reads them."""
    video = Path(os.path.abspath(video))
    try:
        options, found = read_sidecars(video)
    except InvalidOptions as e:
        return Row(video, {}, video.name, one_line(e))
    return Row(video, options, ", ".join(p.name for p in found) or video.name)


# ---------------------------------------------------------------------------------------------- manifests
def check_keys(keys, where: str) -> None:
    """InvalidOptions for a column or key a manifest may not have: an output path, or not an option."""
    keys = set(keys)
    outside = sorted((keys & OUTPUT_KEYS) - {"input"})
    if outside:
        raise InvalidOptions(f"{where}: \"{outside[0]}\" cannot be set in a manifest: results go to --out, named "
                             "after their input")
    unknown = sorted(keys - ROW_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(ROW_KEYS), n=1)
        hint = f" (did you mean \"{close[0]}\"?)" if close else ""
        raise InvalidOptions(f"{where}: unknown option(s): {', '.join(unknown)}{hint}: use the names of the "
                             "command-line options with _ for -")


def csv_rows(path: Path) -> list[Row]:
    """A CSV manifest: a header line naming the columns (``input`` and options), then one job per line; an empty
    cell leaves that option to the batch's options."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "input" not in header:
                raise InvalidOptions(f"{path.name}: the first line must name the columns, an 'input' column among "
                                     "them, e.g. input,prompt,seed")
            check_keys([h for h in header if h], path.name)
            rows = []
            for record in reader:
                where = f"{path.name} line {reader.line_num}"
                if None in record:
                    raise InvalidOptions(f"{where}: more cells than columns: quote cells holding commas")
                values = {k: v.strip() for k, v in record.items() if k and v is not None and v.strip()}
                if values:
                    rows.append(_row(values, where, path.parent, text=True))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InvalidOptions(f"manifest '{path}' cannot be read ({one_line(e)})") from None
    return _some(rows, path)


def jsonl_rows(path: Path) -> list[Row]:
    """A JSON-lines manifest: one object per line (``{"input": "a.mp4", "prompt": "...", "seed": 3}``); a file
    holding one JSON array of such objects is read too."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidOptions(f"manifest '{path}' cannot be read ({one_line(e)})") from None
    if text.lstrip().startswith("["):
        try:
            items = [(f"{path.name} item {i + 1}", obj) for i, obj in enumerate(json.loads(text))]
        except ValueError as e:
            raise InvalidOptions(f"{path.name} is not valid JSON: {one_line(e)}") from None
    else:
        items = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append((f"{path.name} line {n}", json.loads(line)))
                except ValueError as e:
                    raise InvalidOptions(f"{path.name} line {n} is not valid JSON: {one_line(e)}") from None
    rows = []
    for where, obj in items:
        if not isinstance(obj, dict):
            raise InvalidOptions(f"{where} must be a JSON object, e.g. {{\"input\": \"clip.mp4\", \"prompt\": "
                                 "\"anime\"}")
        check_keys(obj, where)
        rows.append(_row(dict(obj), where, path.parent, text=False))
    return _some(rows, path)


def _some(rows: list[Row], path: Path) -> list[Row]:
    if not rows:
        raise InvalidOptions(f"manifest '{path}' lists no jobs: one row per video, with its 'input'")
    return rows


def _row(values: dict, where: str, folder: Path, *, text: bool) -> Row:
    """One manifest row: its input (relative to the manifest's folder) and its typed options."""
    inp = values.pop("input", None)
    if not isinstance(inp, str) or not inp.strip():
        raise InvalidOptions(f"{where}: no \"input\": every row names its video (relative to the manifest)")
    video = Path(os.path.abspath(folder / Path(inp.strip()).expanduser()))
    options: dict = {}
    try:
        for key, value in values.items():
            if text:
                value = from_text(key, value)
            if key == "preset":
                if not isinstance(value, str) or not value:
                    raise InvalidOptions(f"{where}: \"preset\" must be a preset name")
                options[key] = value
            elif key == "keep_pose":  # a path would send the pose video outside --out
                if not isinstance(value, bool):
                    raise InvalidOptions(f"{where}: \"keep_pose\" must be true or false in a batch (the pose video "
                                         "goes to --out as NAME.pose.mp4)")
                options[key] = value
            else:
                options[key] = coerce(key, value, FIELD_TYPES[key], where, folder)
    except InvalidOptions as e:
        return Row(video, {}, where, one_line(e))
    return Row(video, options, where)


def from_text(key: str, text: str):
    """A CSV cell as the JSON value its option takes (``"3"`` -> 3 for ``seed``, ``"yes"`` -> True for a flag);
    left as text when it is not one, so that :func:`v2v.options.coerce` says what is wrong."""
    kind = FIELD_TYPES.get(key, "str").replace("| None", "").strip()
    if kind == "int" and _INT.fullmatch(text):
        return int(text)
    if kind in ("int", "float"):
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "bool" or key == "keep_pose":
        low = text.lower()
        return True if low in TRUE else False if low in FALSE else text
    return text
