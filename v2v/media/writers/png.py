"""A PNG sequence: lossless ``NAME_000000.png``, ``NAME_000001.png``... in one folder (no timing)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from v2v.errors import OutputError
from v2v.media.writers.base import BackgroundWork, CheckedWriter

log = logging.getLogger("v2v")


class PngSequenceWriter(BackgroundWork, CheckedWriter):
    """Lossless PNG files ``NAME_000000.png``, ``NAME_000001.png``... in the folder ``path`` (made here).
    Times are checked (increasing) but not stored: a PNG sequence has no timing.

    ``threaded``: the PNG compression (a good part of the GPU's time per frame) runs on a background thread fed
    by a queue of at most ``queue_frames`` frames, as VideoWriter's encoding does; ``write`` copies the image,
    checks it at once and returns; a failed file comes back from the next ``write`` or from ``close``, which
    waits for the queue. The files are the same either way."""

    def __init__(self, path, width: int, height: int, *, name: str = "frame", threaded: bool = False,
                 queue_frames: int = 16):
        super().__init__(path, width, height)
        self.name = name
        self.count = 0
        self._check_queue_frames(queue_frames)
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the folder '{self.path}' ({e.strerror}); check the path") from None
        if threaded:
            self._start_worker(queue_frames, f"v2v-encode-{self.path.name}")

    def file(self, index: int) -> Path:
        return self.path / f"{self.name}_{index:06d}.png"

    def write(self, image: np.ndarray, time) -> None:
        self._check(image, time)
        self._raise_worker_error()
        if self._thread is not None:
            self._put((self.count, image.copy()))  # the caller may reuse its array once write() returns
        else:
            try:
                self._job(self.count, image)
            except OutputError:
                self.abort()
                raise
        self.count += 1

    def _job(self, index: int, image: np.ndarray) -> None:
        """Write frame ``index`` (on the worker when threaded)."""
        import cv2

        try:
            ok = cv2.imwrite(str(self.file(index)), np.ascontiguousarray(image[:, :, ::-1]))
        except cv2.error as e:
            ok = False
            log.debug("cv2.imwrite failed: %s", e)
        if not ok:
            raise OutputError(f"writing {self.file(index).name} failed; check free disk space and that the folder "
                              "may be written")

    def close(self) -> None:
        if self._closed:
            return
        self._drain()  # every queued frame is written first
        if not self.count:
            raise OutputError(f"no frames were written to {self.path.name}; nothing to write")

    def abort(self) -> None:
        self._drop()
