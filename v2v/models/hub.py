"""Finding model files: a local file, a local folder, or a Hugging Face hub repo (downloaded to the HF cache).

Every model v2v loads goes through ``resolve_file`` or ``resolve_folder``, so that a missing model always gives
the same kind of error: ``ModelNotFound`` naming the repo and file and saying how to get it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ModelNotFound

log = logging.getLogger("v2v")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache v2v downloads to ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/...)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_local(spec: str) -> bool:
    """True when ``spec`` names something on disk rather than a hub repo id."""
    p = Path(spec).expanduser()
    if p.exists():
        return True
    # "owner/name" with no more slashes and no file suffix is a hub id; anything else is a path.
    return spec.startswith((".", "/", "~")) or spec.count("/") != 1 or p.suffix.lower() in {
        ".safetensors", ".ckpt", ".pth", ".pt", ".bin", ".onnx"}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _how_to_get(what: str, spec: str, filename: str | None) -> str:
    name = f"{spec}/{filename}" if filename else spec
    if offline():
        return (f"{what} '{name}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                f"run once online to download it, or pass a local path")
    return f"{what} '{name}' could not be downloaded: check the repo id and your connection, or pass a local path"


def resolve_file(spec: str, filename: str | None = None, *, what: str = "model") -> Path:
    """The local path of one model file.

    ``spec`` is a file path, a folder path (then ``filename`` inside it), or a hub repo id (then ``filename``
    in the repo, downloaded to the HF cache on first use).
    """
    if is_local(spec):
        p = Path(spec).expanduser()
        if p.is_dir():
            if not filename:
                raise ModelNotFound(f"{what} '{spec}' is a folder: name the file inside it")
            p = p / filename
        if not p.is_file():
            raise ModelNotFound(f"{what} file '{p}' does not exist: check the path")
        return p
    if not filename:
        raise ModelNotFound(f"{what} '{spec}' is a hub repo: name the file to take from it")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(spec, filename))
    except Exception as e:  # network, offline miss, missing repo or entry: all the same to the user
        log.debug("hf_hub_download(%s, %s) failed: %r", spec, filename, e)
        raise ModelNotFound(_how_to_get(what, spec, filename)) from e


def resolve_folder(spec: str, *, what: str = "model", allow_patterns: list[str] | None = None) -> Path:
    """The local folder of a diffusers-format model: a folder path, or a hub repo id (snapshot in the HF cache)."""
    if is_local(spec):
        p = Path(spec).expanduser()
        if not p.is_dir():
            raise ModelNotFound(f"{what} folder '{p}' does not exist: check the path")
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=allow_patterns))
    except Exception as e:
        log.debug("snapshot_download(%s) failed: %r", spec, e)
        raise ModelNotFound(_how_to_get(what, spec, None)) from e


def cached_repo_dir(repo: str) -> Path:
    """Where the HF cache keeps ``repo`` (models--OWNER--NAME)."""
    return hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def hub_revision(repo: str) -> str | None:
    """The commit of ``repo`` in the local HF cache (refs/main; else its only snapshot), without the network."""
    d = cached_repo_dir(repo)
    try:
        return (d / "refs" / "main").read_text().strip() or None
    except OSError:
        pass
    snaps = [p.name for p in (d / "snapshots").glob("*") if p.is_dir()] if (d / "snapshots").is_dir() else []
    return snaps[0] if len(snaps) == 1 else None


def in_hub_cache(path: Path) -> dict | None:
    """{"repo", "revision", "file"} when ``path`` is a file of a snapshot in the HF cache, else None."""
    parts = Path(path).parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            return {"repo": parts[i][len("models--"):].replace("--", "/"), "revision": parts[i + 2],
                    "file": "/".join(parts[i + 3:])}
    return None
