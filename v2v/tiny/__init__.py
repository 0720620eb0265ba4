"""The tiny model set: random-weight models in the real formats, built deterministically by v2v itself.

``--models tiny`` uses them (an offline smoke test of the whole path: its output is noise), and the tests lay
them out as a fake Hugging Face cache under the real repo ids, so the default command runs unchanged offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from ..options import DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_DWPOSE, DEFAULT_MOTION, LIGHTNING_STEPS

log = logging.getLogger("v2v")

TINY_VERSION = "1"  # bump when the tiny models change, so stale copies are rebuilt


def motion_filename(steps: int, fmt: str = "diffusers") -> str:
    """The AnimateDiff-Lightning file name for a step count, as in the ByteDance/AnimateDiff-Lightning repo."""
    return f"animatediff_lightning_{steps}step_{fmt}.safetensors"


def tiny_dir() -> Path:
    """Where the tiny set lives: $V2V_TINY_DIR, else the user cache folder."""
    env = os.environ.get("V2V_TINY_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("v2v")) / f"tiny-v{TINY_VERSION}"


def build_tiny_models(dest: Path) -> None:
    """Write the whole tiny set into ``dest`` (base/, controlnet/, motion/, dwpose/)."""
    from .diffusion import write_tiny_base, write_tiny_controlnet, write_tiny_motion
    from .pose import write_tiny_dwpose

    write_tiny_base(dest / "base")
    write_tiny_controlnet(dest / "controlnet")
    (dest / "motion").mkdir(parents=True, exist_ok=True)
    for n in LIGHTNING_STEPS:
        write_tiny_motion(dest / "motion" / motion_filename(n), fmt="diffusers")
    write_tiny_dwpose(dest / "dwpose")


def tiny_model_paths() -> dict[str, Path]:
    """The tiny set's paths, built on first use (atomically: concurrent first uses are safe)."""
    root = tiny_dir()
    if not (root / "COMPLETE").exists():
        log.info("building the tiny model set in %s", root)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.with_name(f".{root.name}.{uuid.uuid4().hex[:8]}")
        try:
            build_tiny_models(tmp)
            (tmp / "COMPLETE").write_text(TINY_VERSION)
            try:
                os.rename(tmp, root)
            except OSError:  # another process finished first (or a stale incomplete copy is in the way)
                if not (root / "COMPLETE").exists():
                    shutil.rmtree(root, ignore_errors=True)
                    os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"base": root / "base", "controlnet": root / "controlnet", "motion": root / "motion",
            "dwpose": root / "dwpose"}


def lay_out_hub_repo(cache_dir: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Put files into a Hugging Face cache as repo ``repo_id`` at revision main; returns the snapshot folder.

    The layout is the hub client's own (``models--OWNER--NAME/refs/main``, ``snapshots/<commit>/...``), so
    ``hf_hub_download`` and ``snapshot_download`` find them with ``HF_HUB_OFFLINE=1``.
    """
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    for rel, src in files.items():
        dst = snap / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def _tree(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {prefix + str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def build_fake_hub_cache(cache_dir: Path) -> Path:
    """Lay the tiny set out in ``cache_dir`` under the default models' real repo ids and file names."""
    t = tiny_model_paths()
    lay_out_hub_repo(cache_dir, DEFAULT_BASE, _tree(t["base"]))
    lay_out_hub_repo(cache_dir, DEFAULT_CONTROLNET, _tree(t["controlnet"]))
    lay_out_hub_repo(cache_dir, DEFAULT_MOTION, _tree(t["motion"]))
    lay_out_hub_repo(cache_dir, DEFAULT_DWPOSE, _tree(t["dwpose"]))
    return Path(cache_dir)
