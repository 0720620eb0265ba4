"""The code style, checked with ruff (pyproject.toml [tool.ruff]: lines within 120 columns, pyflakes, pycodestyle)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (it comes with the dev extra: scripts/setup.sh --dev)")
    return [found]


def test_ruff_finds_nothing():
    p = subprocess.run([*_ruff(), "check", "--no-cache", "v2v", "scripts", "tests"], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_would_find_a_long_line(tmp_path):
    """The check can fail: a 121-column line in a copy of the config is reported."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "long.py").write_text("X = " + repr("a" * 115) + "\n")
    p = subprocess.run([*_ruff(), "check", "--no-cache", "long.py"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 1 and "E501" in p.stdout
