"""Uploads and the input folder: a browser's video stored under ``OUT/uploads`` under a name v2v makes (never the
browser's name as given), size-limited, and checked to be a video before it is kept.

Stored names are ``STEM-HASH.EXT``: the browser's name reduced to safe characters (for a creator to recognise),
and the first hex digits of the content's SHA-256, so one clip uploaded twice is stored once (and its keypoints
come from the cache the second time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import unicodedata
import uuid
from pathlib import Path

from ..errors import EmptyInput, InputError, InputNotFound, InvalidOptions

UPLOADS = "uploads"  # the folder under --out
DEFAULT_LIMIT = 4_000_000_000  # bytes: a long 4K phone clip fits
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".mts",
                    ".m2ts", ".wmv", ".flv", ".3gp", ".ogv")
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_size(text: str | int) -> int:
    """'500MB', '4GB', '1.5 gb', '2000000' -> bytes (decimal units, as file managers show them)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?b?)\s*", str(text), re.I)
        if not m:
            raise InvalidOptions(f"--max-upload {text!r} is not a size: give e.g. 500MB or 4GB")
        value, unit = float(m.group(1)), m.group(2).lower()
        unit = unit if unit in ("", "b") or unit.endswith("b") else unit + "b"
    size = int(value * _UNITS[unit])
    if size < 1:
        raise InvalidOptions(f"--max-upload must be above 0, got {text!r}")
    return size


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1000
    return f"{n:.1f} TB"


def safe_name(name: str, default: str = "video", limit: int = 60) -> str:
    """A browser's file name as a safe file stem: the last path part only, accents dropped, letters, digits, '-'
    and '_' kept, the rest as '_'; never empty, never starting with '.', at most ``limit`` characters."""
    base = re.split(r"[\\/]", str(name))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    ascii_ = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_).strip("_-")
    return clean[:limit].rstrip("_-") or default


def safe_extension(name: str) -> str:
    """The name's extension when it is a known video one (lower case), else '.video' (PyAV reads by content)."""
    ext = os.path.splitext(re.split(r"[\\/]", str(name))[-1])[1].lower()
    return ext if ext in VIDEO_EXTENSIONS else ".video"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _place(src: Path, dest: Path) -> None:
    """``src`` at ``dest``: a hard link when both are on one disk (no copy of a big file), else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def store_upload(src: str | os.PathLike, out: Path, *, limit: int = DEFAULT_LIMIT, name: str | None = None):
    """Check the uploaded file ``src`` (its size, then that it is a video) and keep it as
    ``OUT/uploads/STEM-HASH.EXT``. ``name``: the browser's file name, used only to make the stem. Returns
    (the stored path, its VideoInfo). InputError (one line, naming the file as the browser did) when it is too
    big, empty or not a video; nothing is kept then."""
    from ..media.probe import probe

    src = Path(src)
    shown = safe_name(name or src.name) + safe_extension(name or src.name)
    try:
        size = src.stat().st_size
    except OSError:
        raise InputNotFound(f"the upload of {shown} did not arrive: try again") from None
    if size > limit:
        raise InputError(f"{shown} is {human_size(size)}: the upload limit is {human_size(limit)} (start the page "
                         "with a larger --max-upload, or trim the clip first)")
    if size == 0:
        raise EmptyInput(f"{shown} is empty (0 bytes): upload a complete video file")
    folder = Path(out) / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        staged = staging / shown  # probe's messages name the file as the creator knows it
        _place(src, staged)
        try:
            info = probe(staged)
        except InputError as e:  # FFmpeg's own words may name the path: the page shows the name only
            raise type(e)(str(e).replace(f"'{staged}'", shown).replace(str(staged), shown)) from None
        dest = folder / f"{safe_name(name or src.name)}-{_sha256(staged)[:10]}{safe_extension(shown)}"
        if not (dest.is_file() and dest.stat().st_size == size):  # the same content is kept once
            os.replace(staged, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest, dataclasses.replace(info, path=dest)


def original_stem(path: Path) -> str:
    """The stem a creator gave a file: an upload's name without the content hash v2v added (``dance`` for
    ``OUT/uploads/dance-1a2b3c4d5e.mp4``), any other file's own stem, made safe."""
    path = Path(path)
    m = re.fullmatch(r"(.+)-[0-9a-f]{10}", path.stem)
    return safe_name(m.group(1) if m and path.parent.name == UPLOADS else path.stem)


def list_inputs(folder: Path | None) -> list[Path]:
    """The videos (by extension) directly in the --in folder, by name; [] without one."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in VIDEO_EXTENSIONS), key=lambda p: p.name.lower())


def inside(path: Path, *folders: Path | None) -> bool:
    """Whether ``path`` (resolved) lies in one of ``folders``: a path from a form or a record is only used then."""
    p = Path(path).resolve()
    return any(f is not None and (p == Path(f).resolve() or Path(f).resolve() in p.parents) for f in folders)
