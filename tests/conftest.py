"""Shared fixtures. The tiny model set is built once per test session into a temp folder (never the user's cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny model set, built once; V2V_TINY_DIR points subprocesses at it too. V2V_TEST_TINY_DIR: a set built
    already, of this TINY_VERSION (scripts/mutants.py builds one for all its test runs)."""
    from v2v.tiny import TINY_VERSION, tiny_model_paths

    given = os.environ.get("V2V_TEST_TINY_DIR")
    built = given and (Path(given) / "COMPLETE").is_file() and (Path(given) / "COMPLETE").read_text() == TINY_VERSION
    folder = Path(given) if built else tmp_path_factory.mktemp("tiny") / "models"
    os.environ["V2V_TINY_DIR"] = str(folder)
    return tiny_model_paths()


@pytest.fixture(scope="session")
def fake_hub(tiny_models, tmp_path_factory) -> Path:
    """A Hugging Face cache holding the tiny set under the default models' real repo ids and file names."""
    from v2v.tiny import build_fake_hub_cache

    return build_fake_hub_cache(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="session", autouse=True)
def _pose_cache_dir(tmp_path_factory):
    """Keypoint caching is on by default: keep the tests' entries out of the user's cache folder."""
    folder = tmp_path_factory.mktemp("v2v-cache")
    old = os.environ.get("V2V_CACHE_DIR")
    os.environ["V2V_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("V2V_CACHE_DIR", None)
    else:
        os.environ["V2V_CACHE_DIR"] = old
