"""The tiny model set: random-weight models in the real formats, built deterministically by v2v itself.

``--models tiny`` uses them (an offline smoke test of the whole path: its output is noise), and the tests lay
them out as a fake Hugging Face cache under the real repo ids, so the default command runs unchanged offline.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from ..models.defaults import DEFAULT_BASE, DEFAULT_CONTROLNET, DEFAULT_DWPOSE, DEFAULT_MOTION, DEFAULT_OPENPOSE
from ..option_values import LIGHTNING_STEPS

log = logging.getLogger("v2v")

TINY_VERSION = "3"  # bump when the tiny models change, so stale copies are rebuilt


def tiny_dir() -> Path:
    """Where the tiny set lives: $V2V_TINY_DIR, else the user cache folder."""
    env = os.environ.get("V2V_TINY_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("v2v")) / f"tiny-v{TINY_VERSION}"


def build_tiny_models(dest: Path) -> None:
    """Write the whole tiny set into ``dest`` (base/, vae/, controlnet/, motion/, dwpose/)."""
    from ..models.motion import lightning_filename
    from .diffusion import SEED, write_tiny_base, write_tiny_controlnet, write_tiny_motion, write_tiny_vae
    from .pose import write_tiny_dwpose

    write_tiny_base(dest / "base")
    write_tiny_vae(dest / "vae", seed=SEED + 7)  # another VAE than the base's (--vae, stabilityai/sd-vae-ft-mse)
    write_tiny_controlnet(dest / "controlnet")
    (dest / "motion").mkdir(parents=True, exist_ok=True)
    for n in LIGHTNING_STEPS:  # a module of its own per step count: --lightning shows in the output
        write_tiny_motion(dest / "motion" / lightning_filename(n), fmt="diffusers", seed=motion_seed(n))
    write_tiny_dwpose(dest / "dwpose")


def motion_seed(steps: int) -> int:
    """The seed of the tiny N-step Lightning module (the 4-step one's is the set's seed)."""
    from .diffusion import SEED

    return SEED if steps == 4 else SEED + 100 * steps


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
    return {"base": root / "base", "vae": root / "vae", "controlnet": root / "controlnet", "motion": root / "motion",
            "dwpose": root / "dwpose", "openpose": _tiny_openpose(root), "taesd": _tiny_taesd(root)}


def _tiny_taesd(root: Path) -> Path:
    """The tiny TAESD (``--fast-decode``), built on first use beside the rest of the set."""
    from .diffusion import write_tiny_taesd

    return _built_once(root / "taesd", write_tiny_taesd, ["config.json"])


def _tiny_openpose(root: Path) -> Path:
    """The tiny OpenPose .pth files, built on first use (a few seconds: it instantiates the full networks)."""
    import importlib.util

    from .pose import OPENPOSE_FILES, write_tiny_openpose

    if importlib.util.find_spec("controlnet_aux") is None:  # the optional extra: loading it says what to install
        return root / "openpose"
    return _built_once(root / "openpose", write_tiny_openpose, OPENPOSE_FILES)


def _built_once(folder: Path, write, files) -> Path:
    """``folder``, written by ``write(tmp)`` into a temp folder and renamed into place unless ``files`` are
    all there already (concurrent first uses are safe: the first rename wins, an incomplete copy is replaced)."""
    def complete() -> bool:
        return all((folder / f).is_file() for f in files)

    if not complete():
        tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
        try:
            write(tmp)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process finished first, or an incomplete copy is in the way
                if not complete():
                    shutil.rmtree(folder, ignore_errors=True)
                    os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_fake_hub_cache(cache_dir: Path) -> Path:
    """Lay the tiny set out in ``cache_dir`` under the default models' real repo ids and file names; also the
    TAESD of ``--fast-decode``, the VAE ``stabilityai/sd-vae-ft-mse`` (another than the base's) and the motion LoRA
    ``guoyww/animatediff-motion-lora-zoom-in`` (diffusers format)."""
    from ..models.defaults import DEFAULT_TAESD
    from .diffusion import lay_out_hub_repo, write_tiny_motion_lora

    t = tiny_model_paths()
    for repo, folder in ((DEFAULT_BASE, t["base"]), (DEFAULT_CONTROLNET, t["controlnet"]),
                         (DEFAULT_MOTION, t["motion"]), (DEFAULT_DWPOSE, t["dwpose"]),
                         (DEFAULT_OPENPOSE, t["openpose"]), (DEFAULT_TAESD, t["taesd"]),
                         ("stabilityai/sd-vae-ft-mse", t["vae"])):
        lay_out_hub_repo(cache_dir, repo, {"": folder})
    from ..pose.dwpose import TORCH_DET, TORCH_POSE

    for repo, name in (TORCH_DET, TORCH_POSE):  # --pose-runtime torch's two repos
        lay_out_hub_repo(cache_dir, repo, {name: t["dwpose"] / name})
    with tempfile.TemporaryDirectory() as tmp:
        lora = write_tiny_motion_lora(Path(tmp), fmt="diffusers")
        lay_out_hub_repo(cache_dir, "guoyww/animatediff-motion-lora-zoom-in", {lora.name: lora})
    return Path(cache_dir)
