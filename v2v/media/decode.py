"""The source's frames, decoded: RGB at the processing size, upright, each with its exact time (PyAV).

``Decoder`` seeks to ``--start``, keeps ``--every-nth``/``--max-frames``/``--fps`` frames, drops a stray frame
that goes back in time, stops at a clock that restarts, and records the kept span for the audio cut. The
timestamp maths it relies on is in :mod:`v2v.media.timing`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from v2v.errors import InvalidOptions, VideoDecodeError, one_line
from v2v.media.probe import VideoInfo
from v2v.media.pyav import AV_ERRORS, SWS_THREADS, open_input, video_stream
from v2v.media.timing import Frame, frac, resample

log = logging.getLogger("v2v")

# the source's clock restarted (an error, not a stray frame to drop): a frame time this far (s) behind the last
# kept one, or three frames in a row behind it
CLOCK_RESTART = Fraction(1)


def _seconds_option(name: str, v) -> Fraction | None:
    if v is None:
        return None
    try:
        f = frac(v)
    except (TypeError, ValueError, ZeroDivisionError):
        raise InvalidOptions(f"{name} must be a number of seconds, got {v!r}") from None
    if f < 0:
        raise InvalidOptions(f"{name} must not be negative, got {v!r}; pass seconds from the first frame")
    return f


class Decoder:
    """Stream frames as RGB uint8 at (width, height), upright, each with its exact source time.

    ``start``/``end``: seconds relative to the first video frame. ``every_nth``: keep every n-th
    frame. ``max_frames``: stop after that many output frames. ``fps``: resample onto a regular grid
    (drop/duplicate) covering the same span. After a complete iteration ``span`` is
    ``(first kept time, end of the kept span)`` in absolute source seconds, for the audio cut.
    """

    def __init__(self, info: VideoInfo, width: int, height: int, *, start=None, end=None, every_nth=1,
                 max_frames=None, fps=None):
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise InvalidOptions(f"decode size must be positive integers, got {width}x{height}")
        self.info = info
        self.width = width
        self.height = height
        self.start = _seconds_option("start", start)
        self.end = _seconds_option("end", end)
        if self.end is not None and self.end <= (self.start or 0):
            raise InvalidOptions(f"end ({end}) must be after start ({start or 0}); check --start/--end")
        if not isinstance(every_nth, int) or isinstance(every_nth, bool) or every_nth < 1:
            raise InvalidOptions(f"every_nth must be an integer of at least 1, got {every_nth!r}")
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise InvalidOptions(f"max_frames must be an integer of at least 1, got {max_frames!r}")
        self.every_nth = every_nth
        self.max_frames = max_frames
        if fps is not None:
            try:
                fps = frac(fps)
            except (TypeError, ValueError, ZeroDivisionError):
                raise InvalidOptions(f"fps must be a positive number, got {fps!r}") from None
            if fps <= 0:
                raise InvalidOptions(f"fps must be a positive number, got {fps}")
            if every_nth != 1:
                raise InvalidOptions("use either fps or every_nth, not both")
        self.fps = fps
        self.span: tuple[Fraction, Fraction] | None = None
        self.busy = 0.0  # seconds the last iteration spent decoding and converting (not waiting for its consumer)
        self.abs_start = info.start + (self.start or 0)
        self.abs_end = info.start + self.end if self.end is not None else None
        self._tail = 1 / info.fps  # display time of the very last source frame

    # -- source frames ------------------------------------------------------------------------

    def _source(self, state: dict) -> Iterator[tuple[Fraction, tuple[int, Any]]]:
        """Decoded source frames ``(time, (source_index, av_frame))`` in [abs_start, abs_end).

        Sets ``state["end"]``: where the last yielded frame stops being displayed.
        """
        info = self.info
        path = info.path
        container = open_input(path)
        decoded = 0
        try:
            stream = video_stream(container)
            stream.codec_context.thread_type = "AUTO"
            tb = Fraction(stream.time_base) if stream.time_base else info.time_base
            seeked = False
            if self.start:
                # land on the keyframe before the start, then drop the frames before it
                target = int(math.floor(self.abs_start / tb))
                try:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                    seeked = True
                except AV_ERRORS as e:
                    log.debug("seek failed (%s); decoding from the beginning", one_line(e))
            prev: Fraction | None = None
            first_checked = not seeked
            index = 0
            last: Fraction | None = None
            warned_order = False
            behind = 0  # frames in a row that went back in time
            for frame in self._frames(container, stream, state):
                if frame.pts is not None:
                    ftb = Fraction(frame.time_base) if frame.time_base else tb
                    t = frame.pts * ftb
                elif prev is not None:
                    t = prev + self._tail
                else:
                    t = info.start
                if prev is not None and t <= prev:
                    behind += 1
                    if prev - t >= CLOCK_RESTART or behind >= 3:  # not a stray frame: a clock that restarted,
                        # whose frames (the rest of the video?) would all be dropped
                        raise VideoDecodeError(
                            f"{path.name}: the frame times jump back from {float(prev):.3f} s to {float(t):.3f} s "
                            "(recordings joined end to end?); v2v keeps each frame's own time, so put the video on "
                            f"one clock first, e.g. ffmpeg -i '{path.name}' -c copy fixed.mp4")
                    if not warned_order:
                        log.warning("%s: frame times go backwards at %.3f s; dropping such frames",
                                    path.name, float(t))
                        warned_order = True
                    continue
                behind = 0
                if not first_checked:
                    first_checked = True
                    if t > self.abs_start:
                        # the seek went past the start: decode from the beginning instead
                        container.seek(0, stream=stream, backward=True)
                        prev = None
                        seeked = False
                        state["restart"] = True
                        continue
                    # estimate the index of the frame we landed on (exact for constant frame rates)
                    index = int(round((t - info.start) * info.fps))
                prev = t
                decoded += 1
                if self.abs_end is not None and t >= self.abs_end:
                    state["end"] = self.abs_end
                    return
                if t >= self.abs_start:
                    last = t
                    yield t, (index, frame)
                index += 1
            if last is not None:
                end = last + self._tail
                state["end"] = min(end, self.abs_end) if self.abs_end is not None else end
            if prev is not None and info.duration:
                expected = info.start + info.duration
                if prev + self._tail < expected - 2 * self._tail - Fraction(1, 10):
                    msg = (f"the video stops at {float(prev + self._tail - info.start):.2f} s but the file says "
                           f"{float(info.duration):.2f} s")
                    if stream.duration:  # the video stream's own length: the data is missing, a truncated file
                        state["truncated"] = (msg, prev + self._tail - info.start)
                    elif "error" not in state:  # only the container's length (may be the audio's): a warning
                        state["error"] = msg + "; it may be truncated"
        finally:
            container.close()
            state["decoded"] = decoded

    def _frames(self, container, stream, state):
        """Decode video frames, keeping what was decoded when the file turns out broken."""
        packets = container.demux(stream)
        bad_packets = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except AV_ERRORS as e:
                state["error"] = one_line(e)
                return
            try:
                frames = packet.decode()
            except av.error.EOFError:
                return
            except AV_ERRORS as e:
                bad_packets += 1
                state["error"] = one_line(e)
                if bad_packets > 50:
                    return
                continue
            yield from frames

    # -- selection ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        self.span = None
        state: dict = {}
        source = self._source(state)
        if self.fps is not None:

            def with_end():
                yield from source
                yield state.get("end", Fraction(0)), None

            items: Iterator = resample(with_end(), self.fps)
        else:
            n = self.every_nth
            items = (item for pos, item in enumerate(source) if pos % n == 0)

        first: Fraction | None = None
        count = 0
        span_end: Fraction | None = None
        self.busy = 0.0
        started = time.perf_counter()
        reformatter = VideoReformatter()  # one conversion context for the whole pass, not one per frame
        try:
            for t, (source_index, frame) in items:
                if self.max_frames is not None and count >= self.max_frames:
                    span_end = t  # the next frame that would have been kept
                    break
                if first is None:
                    first = t
                image = self._image(frame, reformatter)
                self.busy += time.perf_counter() - started  # decoding and converting, not the consumer's time
                yield Frame(count, source_index, t, image)
                started = time.perf_counter()
                count += 1
        finally:
            items.close()
            source.close()
        if count == 0:
            if state.get("decoded", 0) == 0 and not state.get("restart"):
                raise VideoDecodeError(
                    f"cannot decode any video frame of {self.info.path.name}"
                    f" ({state.get('error', 'no frames')}); the file is corrupt or truncated"
                )
            raise InvalidOptions(
                f"no frames between start {float(self.start or 0):.3f} s and end "
                f"{'the end' if self.end is None else f'{float(self.end):.3f} s'}; check --start/--end"
            )
        if "truncated" in state:
            msg, upto = state["truncated"]
            end = float(upto) - 0.05
            if end < 0.005:  # a frame or so before the damage: nothing to keep with --end (it would be negative)
                raise VideoDecodeError(f"{self.info.path.name} is truncated ({msg}): re-export or re-download it")
            raise VideoDecodeError(f"{self.info.path.name} is truncated ({msg}): re-export or re-download it, or "
                                   f"pass --end {end:.2f} to use the part before the damage")
        if "error" in state:
            log.warning("%s: decoding stopped early (%s); kept the %d frames decoded so far",
                        self.info.path.name, state["error"], count)
        if span_end is None:
            span_end = state.get("end")
        self.span = (first, span_end)

    def _image(self, frame, reformatter) -> np.ndarray:
        rot = self.info.rotation
        w, h = (self.height, self.width) if rot in (90, 270) else (self.width, self.height)
        img = reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="BICUBIC",
                                   threads=SWS_THREADS).to_ndarray()
        if rot:
            img = np.ascontiguousarray(np.rot90(img, k=-(rot // 90)))  # clockwise
        return img
