"""The prepared GPU scripts stay in step with the tests: a lent GPU comes seldom, and a stale file name there
(a renamed test file) costs the whole lease's test run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _named_in_gpu_tests() -> set[str]:
    return set(re.findall(r"\btests/[\w/]+\.py\b", (ROOT / "scripts" / "gpu_tests.sh").read_text()))


def _has_gpu_tests(path: Path) -> bool:
    return re.search(r"\bpytest\.mark\.gpu\b", path.read_text()) is not None


def _imports_controlnet_aux_at_module_level(path: Path) -> bool:
    """A top-level ``import controlnet_aux...`` / ``from controlnet_aux... import``: the file cannot even be
    collected on the GPU machine, which lacks that optional package."""
    for node in ast.parse(path.read_text()).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "controlnet_aux" or n.startswith("controlnet_aux.") for n in names):
            return True
    return False


def test_every_file_gpu_tests_names_exists():
    named = _named_in_gpu_tests()
    assert named, "scripts/gpu_tests.sh names no test file"
    missing = sorted(f for f in named if not (ROOT / f).is_file())
    assert not missing, f"scripts/gpu_tests.sh names files that do not exist: {missing}"


def test_every_file_with_gpu_tests_is_run_by_gpu_tests():
    named = _named_in_gpu_tests()
    with_gpu = [p for p in sorted((ROOT / "tests").glob("test_*.py")) if _has_gpu_tests(p)]
    assert with_gpu  # the search itself works
    left_out = [p.relative_to(ROOT).as_posix() for p in with_gpu
                if p.relative_to(ROOT).as_posix() not in named and not _imports_controlnet_aux_at_module_level(p)]
    assert not left_out, f"GPU tests that scripts/gpu_tests.sh never runs: {left_out}"
    # and the ones it names must be collectable there
    unimportable = sorted(f for f in named if _imports_controlnet_aux_at_module_level(ROOT / f))
    assert not unimportable, f"scripts/gpu_tests.sh names files importing controlnet_aux: {unimportable}"


def test_the_controlnet_aux_check_sees_top_level_imports_only(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("import os\nfrom controlnet_aux.open_pose import util\n")
    assert _imports_controlnet_aux_at_module_level(f)
    f.write_text("import controlnet_aux as ca\n")
    assert _imports_controlnet_aux_at_module_level(f)
    f.write_text("def t():\n    import controlnet_aux\n")
    assert not _imports_controlnet_aux_at_module_level(f)
    f.write_text("import controlnet_aux_extra\n")
    assert not _imports_controlnet_aux_at_module_level(f)
