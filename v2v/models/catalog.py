"""Short names for the SD 1.5 base models the AnimateDiff-Lightning model card recommends (``--base NAME``).

The model card (huggingface.co/ByteDance/AnimateDiff-Lightning, "Recommendation") lists civitai models by name.
v2v loads diffusers-format folders, so each name maps to a diffusers copy on the Hugging Face hub where one is
known. Names are matched ignoring case and punctuation: ``--base "Realistic Vision"``, ``--base realistic-vision``
and ``--base realisticvision`` are the same. Anything that is not a known name passes through unchanged (a hub
repo id, a local folder, a single file), so a local folder named like an alias still wins: an existing path is
never taken for an alias.

Where a copy is not the model author's own upload, ``note`` says so; ``repo is None`` means no diffusers copy is
known, and using the name is a ``ModelNotFound`` telling the user to download the checkpoint and pass the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFound
from .hub import hub_cache_dir

SD_VAE_FT_MSE = "stabilityai/sd-vae-ft-mse"


@dataclass(frozen=True)
class BaseModel:
    name: str  # the alias shown by `v2v models` ("realistic-vision")
    title: str  # the model's own name ("Realistic Vision V5.1")
    kind: str  # "realistic" or "anime" (the model card's two groups)
    repo: str | None  # diffusers-format hub repo; None: no hub copy known (give a .safetensors file)
    vae: str | None = None  # a VAE the model needs (set unless the user gives --vae)
    source: str = ""  # where the model is published (civitai page)
    note: str = ""  # provenance and caveats, shown by `v2v models`
    aliases: tuple[str, ...] = ()  # more names that resolve to it


BASE_MODELS: tuple[BaseModel, ...] = (
    # --- realistic ---
    BaseModel("epicrealism", "epiCRealism", "realistic", "emilianJR/epiCRealism",
              source="https://civitai.com/models/25694",
              note="the default; community diffusers copy (emilianJR)"),
    BaseModel("realistic-vision", "Realistic Vision V5.1", "realistic", "SG161222/Realistic_Vision_V5.1_noVAE",
              vae=SD_VAE_FT_MSE, source="https://civitai.com/models/4201",
              note="the author's repo (its card asks for that VAE)",
              aliases=("realisticvision51",)),
    BaseModel("dreamshaper", "DreamShaper 8", "realistic", "Lykon/dreamshaper-8",
              source="https://civitai.com/models/4384", note="the author's repo", aliases=("dreamshaper8",)),
    BaseModel("absolutereality", "AbsoluteReality", "realistic", "Lykon/AbsoluteReality",
              source="https://civitai.com/models/81458",
              note="the author's repo; which version it holds is not stated (uncertain)"),
    BaseModel("majicmix-realistic", "MajicMix Realistic", "realistic", "emilianJR/majicMIX_realistic",
              source="https://civitai.com/models/43331",
              note="community diffusers copy (emilianJR); version not stated (uncertain)", aliases=("majicmix",)),
    # --- anime & cartoon ---
    BaseModel("toonyou", "ToonYou beta 6", "anime", "frankjoshua/toonyou_beta6",
              source="https://civitai.com/models/30240",
              note="community diffusers copy, the one diffusers' AnimateDiff docs use"),
    BaseModel("imp", "IMP", "anime", None, source="https://civitai.com/models/56680",
              note="no hub copy: give a .safetensors file"),
    BaseModel("mistoon-anime", "Mistoon Anime v2", "anime", "Yntec/mistoonAnime2",
              source="https://civitai.com/models/24149", note="community diffusers copy (Yntec; uncertain)"),
    BaseModel("dynavision", "DynaVision", "anime", None,
              note="no hub copy: give a .safetensors file (the hub's DynaVision XL copies are SDXL and do not fit)"),
    BaseModel("rcnz-cartoon-3d", "RCNZ Cartoon 3d v2", "anime", "Yntec/ResidentCNZCartoon3D",
              note="community diffusers copy (Yntec) of rcnzCartoon3d_v20 (uncertain)", aliases=("rcnzcartoon",)),
    BaseModel("majicmix-reverie", "MajicMix Reverie v1.0", "anime", None, source="https://civitai.com/models/65055",
              note="no hub copy in diffusers format (only third-party single files): give the civitai "
                   ".safetensors file"),
    BaseModel("meinamix", "MeinaMix V11", "anime", "Meina/MeinaMix_V11",
              source="https://civitai.com/models/7240", note="the author's repo"),
    BaseModel("anime-pastel-dream", "Anime Pastel Dream (soft baked VAE)", "anime",
              "sinkinai/anime-pastel-dream-soft-baked-vae", source="https://civitai.com/models/23521",
              note="diffusers copy by SinkIn (the author's own repo holds single files only)"),
)


def normalize(name: str) -> str:
    """'Realistic Vision' -> 'realisticvision': lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


_BY_NAME: dict[str, BaseModel] = {}
for _m in BASE_MODELS:
    for _n in (_m.name, _m.title, *_m.aliases):
        _BY_NAME.setdefault(normalize(_n), _m)


def lookup(name: str) -> BaseModel | None:
    """The catalogue entry for a name (any case, any punctuation), or None."""
    return _BY_NAME.get(normalize(str(name))) if name else None


def resolve_base(spec: str) -> tuple[str, str | None]:
    """(what to load, the VAE the model needs or None) for a ``--base`` value.

    An existing path, a hub id (``owner/name``) and any unknown name pass through unchanged. A known alias gives
    its hub repo and VAE; an alias without a hub copy raises ModelNotFound saying what to do.
    """
    spec = str(spec)
    if "/" in spec or "\\" in spec or Path(spec).expanduser().exists():
        return spec, None
    entry = lookup(spec)
    if entry is None:
        return spec, None
    if entry.repo is None:
        raise ModelNotFound(f"base model '{spec}' ({entry.title}) has no diffusers copy on the hub that v2v "
                            f"knows: download its .safetensors checkpoint ({entry.source or 'civitai.com'}) and pass "
                            f"--base FILE")
    return entry.repo, entry.vae


def by_repo() -> dict[str, BaseModel]:
    """Hub repo id (lower case) -> entry, for marking cached repos with their alias."""
    return {m.repo.lower(): m for m in BASE_MODELS if m.repo}


# ---------------------------------------------------------------------------------------------- `v2v models`
def _tree_size(folder: Path) -> tuple[int, int]:
    size = files = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                size += p.stat().st_size
                files += 1
        except OSError:
            continue
    return size, files


def cached_repos(cache_dir: Path | None = None) -> list[dict]:
    """The model repos in the local HF cache: repo id, size on disk, revisions (commit hashes), refs, alias."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache_dir = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    names = by_repo()
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        revs = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        entry = names.get(repo.repo_id.lower())
        out.append({"repo": repo.repo_id, "size": repo.size_on_disk, "files": repo.nb_files,
                    "revisions": [r.commit_hash for r in revs],
                    "refs": sorted(ref for r in revs for ref in r.refs),
                    "alias": entry.name if entry else None, "path": str(repo.repo_path)})
    return out


def v2v_caches() -> list[dict]:
    """v2v's own caches: the tiny model set and the keypoint cache, with their sizes."""
    from ..pose.cache import cache_dir as pose_cache_dir
    from ..tiny import tiny_dir

    out = []
    for name, folder in (("tiny models", tiny_dir()), ("keypoints", pose_cache_dir())):
        size, files = _tree_size(folder) if folder.is_dir() else (0, 0)
        out.append({"name": name, "path": str(folder), "size": size, "files": files, "exists": folder.is_dir()})
    return out


def listing() -> dict:
    """Everything `v2v models` shows: the aliases, the HF cache's model repos, v2v's own caches."""
    from dataclasses import asdict

    return {"aliases": [asdict(m) | {"aliases": list(m.aliases)} for m in BASE_MODELS],
            "hf_cache": {"path": str(hub_cache_dir()), "repos": cached_repos()},
            "v2v_cache": v2v_caches()}
