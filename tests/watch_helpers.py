"""What the watch-mode tests share (test_watch, test_claims, test_sidecars): a spy restyler and folder helpers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "dance.mp4"


class Spy:
    """A restyler double: records every call (with the input's size at that moment), writes a small output."""

    def __init__(self, delay: float = 0.0, raise_for: dict | None = None):
        self.calls: list[SimpleNamespace] = []
        self.delay, self.raise_for = delay, raise_for or {}
        self._lock = threading.Lock()

    def restyle(self, input, output=None, *, prompt=None, progress=None, **options):
        input = Path(input)
        with self._lock:
            self.calls.append(SimpleNamespace(name=input.name, size=input.stat().st_size, prompt=prompt,
                                              options=options, at=time.monotonic()))
        if input.name in self.raise_for:
            raise self.raise_for[input.name]
        time.sleep(self.delay)
        Path(output).write_bytes(b"restyled " + input.name.encode())
        return SimpleNamespace(output=Path(output), frames=1, seconds={"pose": 0.0, "total": self.delay})

    def names(self) -> list[str]:
        return [c.name for c in self.calls]


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def drop(folder: Path, name: str, data: bytes = b"\x00fake video\x00") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def locks(in_dir: Path) -> list[str]:
    """The claims held in IN_DIR: video locks and job names."""
    return sorted(p.name for p in (in_dir / ".processing").iterdir()
                  if p.suffix in (".lock", ".name") and not p.name.startswith("."))


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
