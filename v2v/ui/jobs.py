"""One job at a time: a worker thread runs the page's work (poses, restyles) in order, around one Restyler, so
the models stay loaded and never serve two runs at once. Each job keeps its progress per stage (from the API's
``progress(stage, done, total)``), its place in the line, and a cancel event (the API's ``cancel=``).

A job's work is ``work(progress, cancel) -> result``. Its outcome is ``done`` (with the result), ``failed`` (with
the one-line message the command line would print; the server keeps serving), or ``cancelled``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import Interrupted, OutOfMemory, V2VError, one_line

log = logging.getLogger("v2v")

KEEP_FINISHED = 200  # finished jobs remembered (a page that reconnects can still read its outcome)


@dataclass
class StageProgress:
    """One stage of a job: units done of total, and when it began (for the ETA)."""

    name: str
    done: int = 0
    total: int = 0
    started: float = 0.0
    updated: float = 0.0

    def eta(self) -> float | None:
        """Seconds left at the stage's average rate so far; None until something is done."""
        if self.done <= 0 or self.total < self.done:
            return None
        return (self.updated - self.started) / self.done * (self.total - self.done)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


@dataclass
class Job:
    kind: str  # "pose" or "restyle"
    work: Callable
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "queued"  # queued, running, done, failed, cancelled
    stages: dict[str, StageProgress] = field(default_factory=dict)
    result: object = None
    error: str | None = None  # one line, for the page
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = 0.0
    started: float | None = None
    finished_at: float | None = None
    version: int = 0  # bumped on every change: a page re-renders only then

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


class JobRunner:
    """Runs submitted jobs one at a time on its own thread. ``clock`` is for the tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._cond = threading.Condition()
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._jobs: dict[str, Job] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="v2v-ui-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the page's side
    def submit(self, kind: str, work: Callable, *, first: bool = False) -> Job:
        """Queue ``work``; ``first``: ahead of the waiting jobs (a pose preview is short and wanted now)."""
        job = Job(kind, work, submitted=self.clock())
        with self._cond:
            if self._closed:
                raise Interrupted("the page is shutting down: no new runs")
            self._jobs[job.id] = job
            if first:
                self._waiting.insert(sum(1 for j in self._waiting if j.kind == kind), job)
            else:
                self._waiting.append(job)
            self._forget_old()
            self._cond.notify_all()
        return job

    def get(self, job_id: str | None) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id) if job_id else None

    def place(self, job: Job) -> int:
        """How many jobs run before this one: 0 when it runs (or ran), else the running one plus those ahead."""
        with self._cond:
            if job not in self._waiting:
                return 0
            return self._waiting.index(job) + (1 if self._running is not None else 0)

    def cancel(self, job_id: str | None) -> bool:
        """Stop a job: a waiting one is dropped at once, a running one stops within a frame or a pass (the API
        leaves nothing behind). False when there is no such job or it has finished."""
        with self._cond:
            job = self._jobs.get(job_id) if job_id else None
            if job is None or job.finished:
                return False
            job.cancel.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, "cancelled", error="cancelled before it started: nothing was written")
            return True

    def follow(self, job: Job, interval: float = 0.25) -> Iterator[Job]:
        """Yields ``job`` after each change (at most every ``interval`` seconds, and at least that often while it
        waits, so that its place in the line is shown), until it has finished."""
        seen = -1
        while True:
            with self._cond:
                if job.version == seen and not job.finished:
                    self._cond.wait(interval)
                seen = job.version
                finished = job.finished
            yield job
            if finished:
                return
            time.sleep(interval)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every job and stop the worker (at most ``timeout`` seconds for the running job to stop)."""
        with self._cond:
            self._closed = True
            for job in list(self._waiting):
                job.cancel.set()
                self._finish(job, "cancelled", error="cancelled: the page was shut down")
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker's side
    def _progress(self, job: Job) -> Callable[[str, int, int], None]:
        def progress(stage: str, done: int, total: int) -> None:
            now = self.clock()
            with self._cond:
                st = job.stages.get(stage)
                if st is None or done < st.done:  # a new stage, or one that starts again (a recount of the frames)
                    st = job.stages[stage] = StageProgress(stage, started=now)
                st.done, st.total, st.updated = done, total, now
                job.version += 1
                self._cond.notify_all()
        return progress

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._running = self._waiting.pop(0)
                job.state, job.started = "running", self.clock()
                job.version += 1
                self._cond.notify_all()
            state, result, error = self._run(job)
            with self._cond:
                job.result = result
                self._finish(job, state, error)
                self._running = None

    def _run(self, job: Job) -> tuple[str, object, str | None]:
        try:
            return "done", job.work(self._progress(job), job.cancel), None
        except Interrupted as e:
            return "cancelled", None, one_line(e)
        except OutOfMemory as e:
            _free_device_memory()
            return "failed", None, one_line(e)
        except V2VError as e:
            return "failed", None, one_line(e)
        except Exception as e:  # a bug: one line for the page, the traceback in the server's log
            log.exception("the %s job failed", job.kind)
            first = str(e).splitlines()[0] if str(e) else ""
            return "failed", None, f"internal error: {type(e).__name__}: {first} (the server's log has the details)"

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.finished_at = state, error, self.clock()
        job.version += 1
        self._cond.notify_all()

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.finished]
        for j in done[:max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[j.id]


def _free_device_memory() -> None:
    """After an out-of-memory error: hand the GPU's cached blocks back, so that the next run starts clean."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
