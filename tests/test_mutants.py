"""The mutation check's list (scripts/mutants.py) cannot rot silently: each mutant's old text occurs exactly once
in its file, its patch changes the code and still compiles, and the tests it names exist. (The check itself runs
on demand: docs/testing.md.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
mutants = sys.modules["mutants"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
spec.loader.exec_module(mutants)


@pytest.mark.parametrize("m", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_still_applies_and_names_tests_that_exist(m):
    source = (ROOT / m.file).read_text()
    assert source.count(m.old) == 1, f"{m.name}: update its old text to what {m.file} holds now"
    patched = mutants.patched(source, m)
    assert patched != source
    compile(patched, m.file, "exec")
    for test in m.tests:
        path, _, node = test.partition("::")
        assert (ROOT / path).is_file(), test
        if node:
            assert re.search(rf"^def {re.escape(node)}\(", (ROOT / path).read_text(), re.M), test


def test_mutant_names_are_unique():
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
