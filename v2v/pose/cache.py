"""Keypoint cache: a second run on the same clip (new prompt, new seed) skips pose detection.

Entries live in ``$V2V_CACHE_DIR/poses`` (default: platformdirs ``user_cache_dir("v2v")/poses``), one gzipped
OpenPose-format JSON file per key. The key is a SHA-256 over:

* the input file's content: the full SHA-256 of files up to 64 MiB; for larger files, the size, the modification
  time and the SHA-256 of the first and the last MiB (so a 2 GB file costs two reads, not a full pass);
* the detector name and every model file it loads (resolved path, size, modification time; hub files resolve to
  content-addressed blobs);
* the settings that change the detections: processing size, trimming (start, end, every n-th, max frames, fps)
  and pose parts; plus :data:`CACHE_VERSION`.

The entry holds the *raw* detections, before smoothing and thresholding, which are cheap and applied after the
cache: changing ``--pose-smoothing`` or ``--pose-threshold`` also reuses it. A corrupt or mismatching entry is
ignored with one warning and rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

from .keypoints import FramePose, poses_from_json, poses_to_json

log = logging.getLogger("v2v")

CACHE_VERSION = 1
FULL_HASH_LIMIT = 64 << 20   # files up to this size are hashed in full
EDGE = 1 << 20               # bytes hashed at each end of a larger file


def cache_dir() -> Path:
    """``$V2V_CACHE_DIR/poses``, else the user cache folder's ``poses``."""
    env = os.environ.get("V2V_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "poses"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("v2v")) / "poses"


def file_fingerprint(path) -> str:
    """Content fingerprint of the input file (see the module docstring for the rule)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with path.open("rb") as f:
        if st.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return "full:" + h.hexdigest()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(f.read(EDGE))
        f.seek(st.st_size - EDGE)
        h.update(f.read(EDGE))
    return "edges:" + h.hexdigest()


def model_fingerprint(files) -> list:
    out = []
    for p in files:
        p = Path(p)
        real = p.resolve()
        st = real.stat()
        out.append([p.name, str(real), st.st_size, st.st_mtime_ns])
    return out


def cache_key(input_path, detector: str, model_files, settings: dict) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "input": file_fingerprint(input_path), "detector": detector,
                       "models": model_fingerprint(model_files), "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def entry_path(key: str) -> Path:
    return cache_dir() / f"{key}.json.gz"


def load(key: str, width: int, height: int) -> list[FramePose] | None:
    """The cached frames, or None (no entry; a corrupt one is removed with a warning)."""
    path = entry_path(key)
    if not path.is_file():
        return None
    try:
        obj = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        poses = poses_from_json(obj["frames"])
        if obj.get("v") != CACHE_VERSION or len(poses) != obj["count"] or not poses:
            raise ValueError("frame count or version mismatch")
        if any((p.width, p.height) != (width, height) for p in poses):
            raise ValueError("canvas mismatch")
    except Exception as e:  # anything wrong with the file: detect again
        log.warning("pose cache entry %s is unreadable (%s): ignoring it and detecting again", path.name,
                    str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
        path.unlink(missing_ok=True)
        return None
    log.info("pose keypoints from the cache (%s): detection skipped", path.name)
    return poses


def save(key: str, poses: list[FramePose]) -> Path | None:
    """Write an entry atomically; a cache that cannot be written only gives a warning."""
    path = entry_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        data = {"v": CACHE_VERSION, "count": len(poses), "frames": poses_to_json(poses)}
        tmp.write_bytes(gzip.compress(json.dumps(data).encode("utf-8"), compresslevel=5))
        tmp.replace(path)
        return path
    except OSError as e:
        log.warning("cannot write the pose cache in %s (%s): continuing without it", path.parent,
                    e.strerror or e)
        return None
