"""Writers around another writer: ``Scaled`` (--full-size), ``PingPong`` (--ping-pong) and ``CompareWriter``
(--compare: source | pose map | result side by side), with their pure timing and image helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from v2v.errors import VideoDecodeError
from v2v.media.timing import frac
from v2v.media.writers.base import BackgroundWork, ClosingWriter, Spool, check_frame


def ping_pong_times(times: list[Fraction], end: Fraction) -> tuple[list[tuple[int, Fraction]], Fraction]:
    """Forward then backward: ``([(frame index, time), ...], new end)``.

    Frames 0..n-1 play at their times, then n-2..1 (the turning frames are not doubled, so a looping player
    goes 0..n-1..1, 0.. without a stall); each frame keeps its own display length in both directions, so the
    total is ``end + times[n-1] - times[1]``. Fewer than 3 frames: nothing to play back.
    """
    n = len(times)
    order = [(i, t) for i, t in enumerate(times)]
    if n < 3:
        return order, end
    # backward frame j starts once frames n-2 .. j+1 have played again after the end
    order += [(j, end + times[n - 1] - times[j + 1]) for j in range(n - 2, 0, -1)]
    return order, end + times[n - 1] - times[1]


def scale_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to ``width`` x ``height``: area averaging when it shrinks, Lanczos (8x8) when it grows."""
    import cv2

    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LANCZOS4
    return cv2.resize(image, (width, height), interpolation=interp)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images of one height, left to right."""
    return np.ascontiguousarray(np.concatenate(images, axis=1))


class Wrapper(ClosingWriter):
    """A writer around another one; ``path``, ``width``, ``height`` and ``end`` are the inner writer's."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def path(self) -> Path:
        return self.inner.path

    @property
    def width(self) -> int:
        return self.inner.width

    @property
    def height(self) -> int:
        return self.inner.height

    @property
    def end(self):
        return self.inner.end

    @end.setter
    def end(self, value) -> None:
        self.inner.end = value

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()


class FrameWork(BackgroundWork, Wrapper):
    """A wrapper whose per-frame work (``_job(image, time)``, ending in the inner write) runs on a background
    thread fed by a queue of at most ``queue_frames`` frames when ``threaded``, else in line. ``write`` checks the
    frame against ``in_size`` and its time at once (ValueError), and queues a copy (the caller may reuse its array
    once write() returns); an error from the worker comes back from the next ``write`` or from ``close``, which
    waits for the queue. The output is the same either way."""

    def __init__(self, inner, in_size: tuple[int, int], threaded: bool, queue_frames: int, name: str):
        super().__init__(inner)
        self.in_size = in_size
        self._last: Fraction | None = None
        self._closed = False
        self._check_queue_frames(queue_frames)
        if threaded:
            self._start_worker(queue_frames, f"v2v-encode-{name}-{self.path.name}")

    def write(self, image: np.ndarray, time) -> None:
        t = check_frame(self, image, time, *self.in_size)
        self._raise_worker_error()
        if self._thread is None:
            self._job(image, t)
        else:
            self._put((image.copy(), t))

    def close(self) -> None:
        if self._closed:
            return
        self._drain()  # every queued frame is written first
        self.inner.close()

    def abort(self) -> None:
        self._drop()
        self.inner.abort()


class Scaled(FrameWork):
    """Takes ``width`` x ``height`` frames and scales each to the inner writer's size (:func:`scale_image`) before
    writing it (``--full-size``). ``threaded``: on a background thread (:class:`FrameWork`), so that a large
    upscale is not done on the sampler's thread between passes while the GPU waits."""

    def __init__(self, inner, width: int, height: int, *, threaded: bool = False, queue_frames: int = 16):
        super().__init__(inner, (width, height), threaded, queue_frames, "scale")

    def _job(self, image: np.ndarray, t: Fraction) -> None:
        """Scale and write one frame (on the worker when threaded)."""
        self.inner.write(scale_image(image, self.inner.width, self.inner.height), t)


class PingPong(Wrapper):
    """Plays forward, then backward (:func:`ping_pong_times`): the frames are written forward as they come and
    spooled; at close the way back is written from the spool and the inner writer's ``end`` moved to the new end.
    With audio, the source's audio plays once, under the forward half."""

    def __init__(self, inner, end):
        super().__init__(inner)
        self.forward_end = frac(end)
        self.times: list[Fraction] = []
        self._spool: Spool | None = None

    def write(self, image: np.ndarray, time) -> None:
        self.inner.write(image, time)
        if self._spool is None:
            self._spool = Spool(Path(self.path).parent, image.shape)
        self._spool.append(image)
        self.times.append(frac(time))

    def close(self) -> None:
        try:
            order, end = ping_pong_times(self.times, self.forward_end)
            for i, t in order[len(self.times):]:
                self.inner.write(self._spool.read(i), t)
            self.inner.end = end
        except BaseException:
            self.abort()
            raise
        if self._spool is not None:
            self._spool.close()
        self.inner.close()

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.close()
        self.inner.abort()


class CompareWriter(FrameWork):
    """source | pose map | result, side by side, into ``inner`` (3x the width). The source frames come from
    ``sources`` (a fresh decode with the same span options, so no frame is kept from the pose step); their times
    must match the results' (relative to ``t0``), else the input changed during the run (VideoDecodeError).
    ``threaded``: drawing the pose map, putting the three side by side and the inner write run on a background
    thread (:class:`FrameWork`), not on the sampler's between passes; an input that changed comes back from the
    next ``write`` or ``close``."""

    def __init__(self, inner, sources: Iterator, pose_map: Callable[[int], np.ndarray], t0: Fraction, *,
                 threaded: bool = False, queue_frames: int = 16):
        self.sources = sources
        self.pose_map = pose_map
        self.t0 = t0
        self.count = 0
        super().__init__(inner, (inner.width // 3, inner.height), threaded, queue_frames, "compare")

    def _job(self, image: np.ndarray, time: Fraction) -> None:
        """Check the source frame, put the three side by side and write them (on the worker when threaded)."""
        src = next(self.sources, None)
        if src is None or src.time - self.t0 != time:
            raise VideoDecodeError("the input changed while it was being restyled (its frames no longer match): "
                                   "run again on a file that is not being written")
        self.inner.write(side_by_side(src.image, self.pose_map(self.count), image), time)
        self.count += 1

    def _stop(self) -> None:
        """Stop the source decode, once the worker (which reads it) has ended: after a Ctrl-C that cut the wait
        for it short, closing a generator it is running would raise over the interrupt (the abort that follows
        waits for the worker, then stops the decode)."""
        close = getattr(self.sources, "close", None)
        if close is not None and self._thread is None:
            close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            super().close()
        finally:
            self._stop()

    def abort(self) -> None:
        try:
            super().abort()
        finally:
            self._stop()
