"""Base model names (--base ALIAS) and `v2v models`: aliases resolve in any spelling, everything else passes
through, and the listing shows what is in the (fake) Hugging Face cache with its size and revision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from v2v.models import catalog
from v2v.errors import ModelNotFound
from v2v.models.defaults import DEFAULT_BASE

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, repo", [
    ("epicrealism", "emilianJR/epiCRealism"),
    ("epiCRealism", "emilianJR/epiCRealism"),
    ("Realistic Vision", "SG161222/Realistic_Vision_V5.1_noVAE"),
    ("realistic-vision", "SG161222/Realistic_Vision_V5.1_noVAE"),
    ("REALISTIC_VISION", "SG161222/Realistic_Vision_V5.1_noVAE"),
    ("DreamShaper", "Lykon/dreamshaper-8"),
    ("toonyou", "frankjoshua/toonyou_beta6"),
    ("ToonYou beta 6", "frankjoshua/toonyou_beta6"),
    ("MeinaMix", "Meina/MeinaMix_V11"),
    ("anime pastel dream", "sinkinai/anime-pastel-dream-soft-baked-vae"),
])
def test_aliases_resolve_in_any_spelling(name, repo):
    assert catalog.resolve_base(name)[0] == repo


def test_alias_needing_a_vae_brings_it():
    assert catalog.resolve_base("realistic vision") == ("SG161222/Realistic_Vision_V5.1_noVAE",
                                                        "stabilityai/sd-vae-ft-mse")
    assert catalog.resolve_base("dreamshaper")[1] is None


def test_other_names_pass_through(tmp_path, monkeypatch):
    assert catalog.resolve_base("someone/my-model") == ("someone/my-model", None)
    assert catalog.resolve_base("not-a-known-name") == ("not-a-known-name", None)
    assert catalog.resolve_base("emilianJR/epiCRealism") == ("emilianJR/epiCRealism", None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toonyou").mkdir()  # a local folder named like an alias is the folder, not the alias
    assert catalog.resolve_base("toonyou") == ("toonyou", None)
    assert catalog.resolve_base(str(tmp_path / "m.safetensors"))[0] == str(tmp_path / "m.safetensors")


# The model card's "Recommendation" (huggingface.co/ByteDance/AnimateDiff-Lightning), both groups, as it names them
MODEL_CARD = {"realistic": ["epiCRealism", "Realistic Vision", "DreamShaper", "AbsoluteReality", "MajicMix Realistic"],
              "anime": ["ToonYou", "IMP", "Mistoon Anime", "DynaVision", "RCNZ Cartoon 3d", "MajicMix Reverie"]}


@pytest.mark.parametrize("kind,name", [(k, n) for k, names in MODEL_CARD.items() for n in names])
def test_every_model_the_card_recommends_has_a_name(kind, name):
    m = catalog.lookup(name)
    assert m is not None and m.kind == kind, name


def test_alias_without_a_hub_copy_is_a_clear_error():
    with pytest.raises(ModelNotFound) as e:
        catalog.resolve_base("IMP")
    assert ".safetensors" in str(e.value) and "--base FILE" in str(e.value)


def test_catalogue_is_consistent():
    seen = {}
    for m in catalog.BASE_MODELS:
        assert m.kind in ("realistic", "anime")
        assert m.repo is None or m.repo.count("/") == 1
        assert m.repo is not None or "no hub copy" in m.note
        for n in {catalog.normalize(x) for x in (m.name, m.title, *m.aliases)}:
            assert seen.setdefault(n, m.name) == m.name, f"{n} names both {seen[n]} and {m.name}"
    assert catalog.lookup("epicrealism").repo == DEFAULT_BASE  # the default base is in the list


def test_model_set_resolves_aliases_and_sets_the_vae(tiny_models):
    from v2v.models.modelset import ModelSet
    from v2v.options import RestyleOptions

    def specs(**kw):
        return ModelSet.for_options(RestyleOptions(prompt="x", **kw)).specs()

    s = specs(base="Realistic Vision")
    assert s["base"] == "SG161222/Realistic_Vision_V5.1_noVAE" and s["vae"] == "stabilityai/sd-vae-ft-mse"
    s = specs(base="realistic-vision", vae="my/vae")  # a VAE the user gave wins
    assert s["vae"] == "my/vae"
    s = specs(base="owner/custom")
    assert s["base"] == "owner/custom" and s["vae"] is None
    assert specs()["base"] == DEFAULT_BASE
    with pytest.raises(ModelNotFound):
        specs(base="dynavision")


def _tree_bytes(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def test_models_command_lists_aliases_and_the_cache(fake_hub, tmp_path):
    from v2v.tiny.diffusion import fake_commit

    env = {**os.environ, "HF_HUB_CACHE": str(fake_hub), "V2V_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "cache" / "poses").mkdir(parents=True)
    (tmp_path / "cache" / "poses" / "k.json.gz").write_bytes(b"x" * 1234)
    p = subprocess.run([sys.executable, "-m", "v2v", "models", "--json"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert [a["name"] for a in info["aliases"]] == [m.name for m in catalog.BASE_MODELS]
    assert info["hf_cache"]["path"] == str(fake_hub)
    repos = {r["repo"]: r for r in info["hf_cache"]["repos"]}
    base = repos[DEFAULT_BASE]
    assert base["size"] == _tree_bytes(fake_hub / "models--emilianJR--epiCRealism" / "snapshots")
    assert base["revisions"] == [fake_commit(DEFAULT_BASE)] and base["alias"] == "epicrealism"
    assert "yzd-v/DWPose" in repos and repos["yzd-v/DWPose"]["alias"] is None
    caches = {c["name"]: c for c in info["v2v_cache"]}
    assert caches["keypoints"]["size"] == 1234 and caches["keypoints"]["files"] == 1
    # the table form names the same repo, with its size
    p = subprocess.run([sys.executable, "-m", "v2v", "models"], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    line = next(ln for ln in p.stdout.splitlines() if DEFAULT_BASE in ln and "(= epicrealism)" in ln)
    assert f"{base['size'] / 1e6:.1f} MB" in line and fake_commit(DEFAULT_BASE)[:12] in line
