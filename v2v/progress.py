"""Progress reporting: the callback type of the API, and the JSON-lines reporter behind ``--progress json``.

The API calls ``progress(stage, done, total)`` as work advances (``Restyler.restyle(..., progress=fn)``):

=========  ====================================================================================
stage      unit of ``done`` / ``total``
=========  ====================================================================================
pose       frames decoded and posed (detected, read from the cache or from --pose-json); ``total`` is
           estimated from the container's frame count and the trimming until the stage ends, when a last
           call reports ``done == total``
generate   denoising passes: steps x segments (one pass is one step of one segment: a run of windows within the
           frame budget, through the UNet in one call)
encode     frames VAE-decoded and encoded
=========  ====================================================================================

Each stage starts with a call ``done == 0``; ``done`` never decreases within a stage; the stages begin in the order
pose, generate, encode (``v2v pose`` and ``Restyler.pose`` report "pose" only). On a GPU "generate" usually begins
before "pose" ends (generation starts on the first frames while later ones are posed): their calls interleave, from two
threads, never two at once. "encode" begins after "pose" has ended, once the first frames have had every denoising
step (the passes sweep along the video, so finished frames are encoded while later ones denoise), so it interleaves
with "generate". When the container's frame count proves wrong, generation runs again and "generate" starts
again from 0.

``--progress json`` prints one JSON object per line on stdout (see :class:`JsonLines`)::

    {"stage": "pose", "done": 8, "total": 96, "unit": "frame", "elapsed": 0.41, "eta": 4.5}
    {"event": "done", "output": "/videos/clip.restyled.mp4", "frames": 96, ...}
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Literal, Protocol, TextIO

Stage = Literal["pose", "generate", "encode"]
STAGES: dict[str, str] = {"pose": "frame", "generate": "pass", "encode": "frame"}  # stage -> unit of done/total


class ProgressCallback(Protocol):
    """``progress(stage, done, total)``: ``stage`` one of STAGES, ``done`` of ``total`` units done so far."""

    def __call__(self, stage: str, done: int, total: int, /) -> None: ...


def expected_frames(decoder) -> int:
    """How many frames a ``decode.Decoder`` will give, estimated before decoding (for the pose bar's total).

    From the container's frame count (or duration x rate) and the decoder's start/end, every_nth, fps and
    max_frames. 0 when unknown. The exact count is known once the stage ends.
    """
    info = decoder.info
    duration = float(info.duration or 0) or (float(info.frames) / float(info.fps) if info.frames else 0.0)
    if duration <= 0:
        return 0
    start = float(decoder.start or 0)
    end = min(float(decoder.end), duration) if decoder.end is not None else duration
    # source frame k shows at k / rate and is kept when start <= k / rate < end (the decoder's rule)
    rate = float(info.fps)
    first = math.ceil(start * rate - 1e-6)
    if decoder.fps is not None:  # the grid first + j / fps, every point before the end
        n = max(0, math.ceil((end - first / rate) * float(decoder.fps) - 1e-6))
    else:
        total = int(info.frames or round(duration * rate))
        last = min(math.ceil(end * rate - 1e-6), total) if decoder.end is not None else total
        n = max(0, last - first)
        n = -(-n // decoder.every_nth)
    if decoder.max_frames is not None:
        n = min(n, decoder.max_frames)
    return max(0, int(n))


class JsonLines:
    """A progress callback that writes JSON lines: ``{"stage", "done", "total", "unit", "elapsed", "eta"}``.

    ``elapsed``: seconds since the stage began (its ``done == 0`` call); ``eta``: seconds left at the stage's
    average rate so far (null until something is done). At most one line per ``interval`` seconds per stage;
    a stage's first line, its ``done == total`` line and the last update before another stage reports (or
    before :meth:`event`/:meth:`flush`) are always written. ``context`` fields (e.g. ``{"video": "a.mp4"}`` in
    watch mode) are added to every line. ``event(name, **fields)`` writes ``{"event": name, ...}``.
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stdout
        self.interval = interval
        self.clock = clock
        self.context: dict = {}
        self._stages: dict[str, dict] = {}  # stage -> {"start", "last", "done", "pending"}

    def _write(self, obj: dict) -> None:
        self.stream.write(json.dumps({**obj, **self.context}, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()

    def _line(self, stage: str, done: int, total: int, now: float) -> dict:
        st = self._stages[stage]
        elapsed = now - st["start"]
        eta = elapsed / done * max(0, total - done) if done > 0 and total >= done else None
        return {"stage": stage, "done": done, "total": total, "unit": STAGES.get(stage, "item"),
                "elapsed": round(elapsed, 3), "eta": round(eta, 3) if eta is not None else None}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        st = self._stages.get(stage)
        if st is None or done < st["done"]:  # a new stage, or the same stage of the next video
            self.flush()
            st = self._stages[stage] = {"start": now, "last": None, "done": done, "pending": None}
        else:
            for other in list(self._stages):
                if other != stage:
                    self._flush_stage(other)
        st["done"] = done
        line = self._line(stage, done, total, now)
        if st["last"] is None or done == total or now - st["last"] >= self.interval:
            st["last"], st["pending"] = now, None
            self._write(line)
        else:
            st["pending"] = line

    def _flush_stage(self, stage: str) -> None:
        st = self._stages.get(stage)
        if st and st["pending"] is not None:
            self._write(st["pending"])
            st["pending"], st["last"] = None, self.clock()

    def flush(self) -> None:
        """Write every update held back by the throttle."""
        for stage in list(self._stages):
            self._flush_stage(stage)

    def reset(self) -> None:
        """Forget the stages (the next video starts afresh)."""
        self.flush()
        self._stages.clear()

    def event(self, name: str, **fields) -> None:
        self.flush()
        self._write({"event": name, **fields})


class StageBar:
    """One stage's progress: a tqdm bar (when ``show``) and the API's ``progress`` callback, from one counter."""

    def __init__(self, name: str, total: int, progress: ProgressCallback | None, show: bool):
        from tqdm.auto import tqdm

        self.name, self.total, self.progress, self.done = name, total, progress, 0
        self.bar = tqdm(total=total, desc=f"{name:>8}", unit=STAGES.get(name, "item"), disable=not show,
                        leave=False, dynamic_ncols=True)
        if progress:
            progress(name, 0, total)  # the stage begins (its clock starts here)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        if self.progress:
            self.progress(self.name, self.done, self.total)

    def retotal(self, total: int) -> None:
        """A new estimate of the total (the sampler's pass count once it has planned)."""
        self.total = self.bar.total = total

    def finish(self) -> None:
        """The stage is complete: an estimated total becomes the count done (reported once more)."""
        if self.total != self.done:
            self.total = self.bar.total = self.done
            if self.progress:
                self.progress(self.name, self.done, self.total)

    def close(self) -> None:
        self.bar.close()


def cancellable(progress: ProgressCallback | None, cancel) -> ProgressCallback | None:
    """``progress`` that raises Interrupted once ``cancel`` (a threading.Event) is set: every stage reports as it
    goes, so a run stops within a frame or a pass of it, and cleans up as after Ctrl-C."""
    if cancel is None:
        return progress
    from .errors import Interrupted

    def call(stage: str, done: int, total: int) -> None:
        if cancel.is_set():
            raise Interrupted("cancelled: no output was written")
        if progress is not None:
            progress(stage, done, total)

    return call


def serialized(progress: ProgressCallback | None) -> ProgressCallback | None:
    """``progress`` called under a lock: the pose and generate stages report from two threads."""
    if progress is None:
        return None
    import threading

    lock = threading.Lock()

    def call(stage: str, done: int, total: int) -> None:
        with lock:
            progress(stage, done, total)

    return call
