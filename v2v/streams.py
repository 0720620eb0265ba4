"""Running a stage ahead of the next one: a bounded queue fed by a background thread.

PyAV (decode, encode) and onnxruntime release the GIL, so a decoder prefetched this way decodes the next
frames while the pose model works on the current ones. Memory stays bounded by ``depth`` items.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(iterable: Iterable[T], depth: int = 8) -> Iterator[T]:
    """Yield ``iterable``'s items, produced on a background thread up to ``depth`` items ahead.

    An exception in the producer is raised in the consumer at the same position. Leaving the loop early
    (break, an exception, Ctrl-C) stops the producer and closes its iterator (so files are closed) before
    this generator finishes.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="v2v-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


def default_workers(limit: int = 4) -> int:
    """Threads for a CPU stage that runs beside the rest: a quarter of the cores, 1 to ``limit``; the
    environment variable ``V2V_POSE_WORKERS`` overrides it."""
    env = os.environ.get("V2V_POSE_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"V2V_POSE_WORKERS must be a whole number, got {env!r}") from None
    return max(1, min(limit, (os.cpu_count() or 1) // 4))


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in the input's order.

    For work that releases the GIL (onnxruntime, OpenCV, large NumPy operations). At most ``workers + 1``
    items are taken from ``items`` ahead of the consumer, so memory stays bounded. An exception in ``fn`` is
    raised at that item's place; leaving early cancels what has not started and waits for what has.
    ``workers == 1`` runs ``fn`` on the caller's thread, with no pool.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    it = iter(items)
    if workers == 1:
        try:
            for item in it:
                yield fn(item)
        finally:
            _close(it)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="v2v-worker")
    pending: deque = deque()
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _close(it)


def _close(it) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


class Background:
    """Run ``fn()`` on a daemon thread now; ``result()`` waits for it and returns its value or raises its error.

    For work that can overlap another stage (loading the diffusion models while the pose stage decodes and
    detects). A daemon thread: an interrupted run exits without waiting for it.
    """

    def __init__(self, fn, name: str = "v2v-background"):
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self._value = fn()
        except BaseException as e:  # handed to the caller of result()
            self._error = e

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once ``fn`` has returned or raised."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
