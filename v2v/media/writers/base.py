"""The writer interface every output format has, and what the writers share.

A writer takes RGB frames with their output times and makes one file (or folder)::

    with open_writer(path, spec, w, h, fps=..., time_base=..., end=...) as writer:   # v2v.media.writers
        writer.write(image, time)      # (H, W, 3) uint8 RGB; Fraction seconds from the output start, increasing
    # leaving the block closes it (the file is finished); an exception aborts it (what was written is discarded)

Implementations: video.py (H.264, H.265, VP9, AV1, ProRes, with the source's audio from audio.py), gif.py,
png.py, and the wrappers in wrappers.py (full size, ping-pong, the compare video) around another writer.
"""

from __future__ import annotations

import queue
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

import av
import numpy as np

from v2v.errors import InvalidOptions, OutputError
from v2v.media.pyav import write_failed
from v2v.media.timing import frac


@runtime_checkable
class Writer(Protocol):
    """What the pipeline writes frames to."""

    path: Path  # the file (or folder) written; a temp name beside the output, renamed by v2v.media.outputs
    width: int  # the frames ``write`` takes
    height: int

    def write(self, image: np.ndarray, time) -> None:
        """One RGB uint8 (height, width, 3) frame shown from ``time`` (output seconds, increasing)."""

    def close(self) -> None:
        """Finish the output (everything queued written); OutputError when it cannot be."""

    def abort(self) -> None:
        """Stop and discard what was written (after an error or Ctrl-C); never raises for a second error."""

    def __enter__(self): ...

    def __exit__(self, exc_type, exc, tb): ...


class ClosingWriter:
    """``with`` support shared by every writer: ``close()`` when the block ends normally, ``_abort()`` (discard
    what was written) when it ends with an exception."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:  # e.g. Ctrl-C while close waits for a worker: stop it, discard the output
                self.abort()
                raise
        else:
            self.abort()
        return False


class BackgroundWork:
    """A writer's per-frame work on one background thread fed by a bounded queue (VideoWriter's conversion and
    encoding, outputs.PngSequenceWriter's PNG compression), so the caller (the sampler, a decode) goes on.

    The writer (which has ``path``, ``_write_failed(e)`` and ``abort()``) calls ``_start_worker`` (or not: then
    ``_thread`` stays None and it works in line), ``_put(item)`` per frame, ``_stop_worker()`` on close or abort,
    and ``_raise_worker_error()`` before each write. The worker runs ``_job(*item)``; an error of a type in
    ``_job_errors`` comes back as ``OutputError(_write_failed(e))``, any other as itself, from the next write or
    from close, and what is still queued is dropped. The worker keeps draining after an error (or with
    ``_discard`` set), so a caller blocked on a full queue never waits forever.
    """

    _thread: threading.Thread | None = None
    _queue: queue.Queue | None = None
    _error: BaseException | None = None  # raised on the worker, re-raised to the caller
    _discard = False  # the worker drops what is queued (after an error, or on abort)
    _job_errors: tuple = ()

    def _job(self, *item) -> None:  # pragma: no cover - every writer has its own
        raise NotImplementedError

    @staticmethod
    def _check_queue_frames(queue_frames) -> None:
        """Every writer checks its queue size, threaded or not, before it makes anything."""
        if not isinstance(queue_frames, int) or queue_frames < 1:
            raise InvalidOptions(f"queue_frames must be a positive integer, not {queue_frames!r}")

    def _start_worker(self, queue_frames: int, name: str) -> None:
        self._queue = queue.Queue(maxsize=queue_frames)
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._work_loop()
        finally:
            self._ended.set()

    def _work_loop(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is None:
                return
            if self._discard:
                continue  # keep draining so that a caller blocked on put() never waits forever
            try:
                self._job(*item)
            except self._job_errors as e:
                self._error = OutputError(self._write_failed(e))
                self._error.__cause__ = e  # the details, for --debug's traceback
                self._discard = True
            except BaseException as e:  # noqa: BLE001 - handed to the caller as it is
                self._error = e
                self._discard = True

    def _put(self, item) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._ended.is_set():  # cannot happen (the worker drains until told to stop)
                    self._error = self._error or OutputError(f"the writing thread for {self.path.name} stopped")
                    self._raise_worker_error()

    def _stop_worker(self) -> None:
        """Tell the worker to finish what is queued (or drop it, if ``_discard``) and wait for it to end."""
        thread = self._thread
        if thread is None:
            return
        while not self._ended.is_set():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._ended.wait()  # not thread.join(): on 3.11 a join that Ctrl-C interrupted marks the thread ended
        thread.join()
        self._thread = None  # only once ended: an abort after an interrupted join (Ctrl-C) waits for it again

    def _drain(self) -> None:
        """For close: every queued frame done (or the worker's error raised), then the writer marked closed."""
        self._stop_worker()
        self._raise_worker_error()
        self._closed = True

    def _drop(self) -> None:
        """For an abort: the writer marked closed, what is queued dropped, the worker ended."""
        self._closed = True
        self._discard = True
        self._stop_worker()

    def _raise_worker_error(self) -> None:
        err = self._error
        if err is not None:
            self.abort()
            if isinstance(err, OutputError):
                raise OutputError(str(err)) from err.__cause__  # a fresh one, with the worker's cause kept
            raise err


def check_frame(writer, image: np.ndarray, time, width: int, height: int) -> Fraction:
    """A frame for ``writer`` (which has ``path``, ``_closed`` and ``_last``, the last frame's time): refused when
    the writer is closed (OutputError), not a ``width`` x ``height`` uint8 RGB image or not later than the last
    frame (ValueError); its time, as a Fraction, becomes the last."""
    if writer._closed:
        raise OutputError(f"{writer.path.name} is already closed")
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image of shape {(height, width, 3)}, got {image.dtype} {image.shape}")
    t = frac(time)
    if writer._last is not None and t <= writer._last:
        raise ValueError(f"frame times must increase: {float(t)} s after {float(writer._last)} s")
    writer._last = t
    return t


class CheckedWriter(ClosingWriter):
    """A writer of ``width`` x ``height`` frames at ``path`` that checks each frame's shape and time itself
    (GIF, PNG)."""

    def __init__(self, path, width: int, height: int):
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise InvalidOptions(f"output size must be positive integers, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self._last: Fraction | None = None
        self._closed = False

    def _check(self, image: np.ndarray, time) -> Fraction:
        return check_frame(self, image, time, self.width, self.height)

    def close(self) -> None:  # pragma: no cover - every writer has its own
        raise NotImplementedError

    def abort(self) -> None:
        self._closed = True


class Spool:
    """Frames of one shape in an unnamed temp file (the OS deletes it even if the process dies), read by index.

    Keeps RAM bounded where a format needs every frame before it can write (GIF's palette, ping-pong's way back).
    """

    def __init__(self, folder: Path, shape: tuple[int, ...]):
        self.shape = shape
        self.size = int(np.prod(shape))
        self.count = 0
        try:
            self.file = tempfile.TemporaryFile(dir=folder, prefix=".v2v-frames-")
        except OSError as e:
            raise OutputError(f"cannot write a temp file in '{folder}' ({e.strerror}); check free space") from None

    def append(self, image: np.ndarray) -> None:
        try:
            self.file.seek(self.count * self.size)
            self.file.write(np.ascontiguousarray(image).tobytes())
        except OSError as e:
            raise OutputError(write_failed("writing frames to a temp file", e)) from e
        self.count += 1

    def read(self, index: int) -> np.ndarray:
        self.file.seek(index * self.size)
        return np.frombuffer(self.file.read(self.size), dtype=np.uint8).reshape(self.shape)

    def close(self) -> None:
        self.file.close()


def rgb_frame(image: np.ndarray) -> av.VideoFrame:
    """An rgb24 ``VideoFrame`` holding its own copy of ``image`` (H, W, 3 uint8, any strides).

    One copy, into rows that start on 64-byte boundaries (swscale's SIMD paths want aligned rows), where PyAV's
    ``from_ndarray`` copies twice (``tobytes``, then row by row): several times faster, the same frame.
    """
    h, w, _ = image.shape
    row = -(-w * 3 // 64) * 64
    buf = np.empty(h * row + 64, np.uint8)
    view = np.ndarray((h, w, 3), np.uint8, buffer=buf, offset=-buf.ctypes.data % 64, strides=(row, 3, 1))
    view[...] = image
    return av.VideoFrame.from_numpy_buffer(view, format="rgb24")
