"""The runs kept in ``--out``: one folder per restyle, the history read back from their records, and the work
the page's jobs do (a pose preview, a restyle), each through the public API.

    OUT/runs/20250102-140311-dance/     dance.restyled.mp4, dance.restyled.json (the record), dance.pose.mp4,
                                        dance.pose.json (the keypoints), thumb.jpg
    OUT/poses/dance-1a2b3c4d5e/         pose.mp4, pose.json, summary.json: a pose preview, reused when asked again

A run's folder holds a finished video or nothing: a failed or cancelled run's folder is removed, and a folder
without a video (a server killed mid-run) is not listed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import V2VError
from ..media.formats import default_extension
from ..options import RestyleOptions
from .uploads import original_stem

log = logging.getLogger("v2v")

RUNS = "runs"
POSES = "poses"
THUMB = "thumb.jpg"
# the options `v2v pose` takes: a pose preview and the run's keypoints use these, so that both hit the cache
POSE_OPTIONS = frozenset(f.name for f in dataclasses.fields(RestyleOptions)
                         if "pose" in f.metadata.get("commands", ()))


@dataclass(frozen=True)
class Run:
    """One finished restyle in --out, as its folder and its record hold it."""

    folder: Path
    video: Path
    settings_file: Path | None  # NAME.restyled.json, when there
    pose_video: Path | None
    pose_json: Path | None
    thumb: Path | None
    record: dict | None  # the settings record (from the JSON, else from the video's metadata)

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def prompt(self) -> str:
        return str((self.record or {}).get("prompt") or "")

    @property
    def seed(self):
        return (self.record or {}).get("seed")

    @property
    def created(self) -> str:
        """Local time of the run, 'YYYY-MM-DD HH:MM'."""
        text = (self.record or {}).get("created")
        try:
            when = _dt.datetime.fromisoformat(str(text)).astimezone()
        except ValueError:
            when = _dt.datetime.fromtimestamp(self.video.stat().st_mtime)
        return when.strftime("%Y-%m-%d %H:%M")

    @property
    def input(self) -> Path | None:
        inp = (self.record or {}).get("input")
        path = inp.get("path") if isinstance(inp, dict) else None
        return Path(path) if isinstance(path, str) and path else None


@dataclass(frozen=True)
class PosePreview:
    video: Path
    json: Path
    frames: int
    frames_without_people: int


# ---------------------------------------------------------------------------------------------- the history
def _first(folder: Path, pattern: str) -> Path | None:
    found = sorted(p for p in folder.glob(pattern) if not p.name.startswith(".") and p.is_file())
    return found[0] if found else None


def load_run(folder: Path) -> Run | None:
    """The run in ``folder``; None when it holds no finished video."""
    from ..settings import load_settings

    video = next((p for p in sorted(folder.glob("*.restyled.*")) if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() != ".json"), None)
    if video is None:
        return None
    sidecar = video.with_suffix(".json")
    record = None
    for source in ((sidecar, video) if sidecar.is_file() else (video,)):
        try:
            record = load_settings(source).record
            break
        except V2VError:
            continue
    thumb = folder / THUMB
    return Run(folder=folder, video=video, settings_file=sidecar if sidecar.is_file() else None,
               pose_video=_first(folder, "*.pose.mp4"), pose_json=_first(folder, "*.pose.json"),
               thumb=thumb if thumb.is_file() else None, record=record)


def list_runs(out: Path) -> list[Run]:
    """The finished runs in ``OUT/runs``, newest first."""
    root = Path(out) / RUNS
    if not root.is_dir():
        return []
    runs = [load_run(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((r for r in runs if r is not None), key=lambda r: (r.video.stat().st_mtime, r.id), reverse=True)


def find_run(out: Path, run_id: str | None) -> Run | None:
    """The run named ``run_id`` (a folder name from the page: only a plain name directly under OUT/runs)."""
    if not run_id or run_id != Path(run_id).name or run_id.startswith("."):
        return None
    folder = Path(out) / RUNS / run_id
    return load_run(folder) if folder.is_dir() else None


# ---------------------------------------------------------------------------------------------- the work
def _new_folder(root: Path, stem: str) -> Path:
    """A new folder ``root/YYYYmmdd-HHMMSS-STEM`` (made exclusively: two runs in one second get -2, -3...)."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    for n in range(1, 1000):
        folder = root / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise V2VError(f"too many runs named {base} in {root}")


def thumbnail(video: Path, dest: Path, width: int = 320) -> Path | None:
    """A JPEG of the video's first frame, ``width`` wide; None when it cannot be made (no harm to the run)."""
    import av
    import cv2

    try:
        with av.open(str(video)) as c:
            frame = next(c.decode(video=0))
            image = frame.to_ndarray(format="bgr24")
    except Exception as e:  # a thumbnail is a nicety: log why there is none
        log.warning("no thumbnail for %s (%s)", video.name, e)
        return None
    h, w = image.shape[:2]
    image = cv2.resize(image, (width, max(2, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        return None
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(dest)
    return dest


def restyle_run(restyler, input: Path, out: Path, prompt: str, options: dict, progress, cancel) -> Run:
    """Restyle ``input`` into a new run folder under ``OUT/runs``: the video (with its record beside it), the
    pose-map video, the keypoints (OpenPose JSON, from the keypoint cache) and a thumbnail. On any error or a
    cancel the folder is removed: nothing is left."""
    stem = original_stem(input)
    folder = _new_folder(Path(out) / RUNS, stem)
    try:
        video = folder / f"{stem}.restyled{default_extension(options.get('format'))}"
        restyler.restyle(input, video, prompt=prompt, progress=progress, cancel=cancel,
                         keep_pose=folder / f"{stem}.pose.mp4", **options)
        restyler.pose(input, json_path=folder / f"{stem}.pose.json", cancel=cancel,
                      **{k: v for k, v in options.items() if k in POSE_OPTIONS})
        thumbnail(video, folder / THUMB)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return load_run(folder)


def _preview_key(input: Path, options: dict) -> str:
    st = Path(input).stat()
    text = json.dumps([str(Path(input).resolve()), st.st_size, st.st_mtime_ns, sorted(options.items())], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def pose_preview(restyler, input: Path, out: Path, options: dict, progress, cancel) -> PosePreview:
    """The pose-map video and keypoints of ``input`` with the pose options of ``options`` (from the keypoint
    cache when it was posed before), in ``OUT/poses``; kept, so asking again costs nothing."""
    opts = {k: v for k, v in options.items() if k in POSE_OPTIONS}
    folder = Path(out) / POSES / f"{original_stem(input)}-{_preview_key(input, opts)}"
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
            found = PosePreview(folder / "pose.mp4", folder / "pose.json", int(data["frames"]),
                                int(data["frames_without_people"]))
            if found.video.is_file() and found.json.is_file():
                return found
        except (OSError, ValueError, KeyError, TypeError):
            pass  # made again below
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r = restyler.pose(input, folder / "pose.mp4", json_path=folder / "pose.json", progress=progress,
                          cancel=cancel, **opts)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    summary.write_text(json.dumps({"frames": r.frames, "frames_without_people": r.frames_without_people}),
                       encoding="utf-8")
    return PosePreview(folder / "pose.mp4", folder / "pose.json", r.frames, r.frames_without_people)
