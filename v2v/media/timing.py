"""Pure timestamp and size maths: the processing size, resampling to a frame rate, every n-th frame, and the
output's timing. Times are ``fractions.Fraction`` seconds on the source's timeline (``pts * time_base``), exact.
Output frame i carries its source frame's time, so audio stays in sync by construction, variable frame rate
included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from v2v.errors import InvalidOptions

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    index: int  # 0, 1, 2... among the kept frames
    source_index: int  # index among all decoded source frames
    time: Fraction  # absolute source time this output frame carries
    image: np.ndarray  # (H, W, 3) uint8 RGB at the processing size, upright


@dataclass(frozen=True)
class AudioCut:
    """The source's streams that go beside the video, cut to the kept span: its audio streams (``stream_index``
    the first, None when it has none; ``more_audio`` the others, in the file's order) and its subtitles."""

    path: Path
    stream_index: int | None
    start: Fraction  # absolute source times of the kept span
    end: Fraction
    more_audio: tuple[int, ...] = ()
    subtitles: tuple[int, ...] = ()

    @property
    def audio_streams(self) -> tuple[int, ...]:
        return ((self.stream_index,) if self.stream_index is not None else ()) + self.more_audio


@dataclass(frozen=True)
class OutputTiming:
    """When each output frame shows, and what audio goes with them."""

    times: list[Fraction]  # each output frame's time, relative to the first
    fps: Fraction  # the output's average frame rate
    time_base: Fraction  # the output stream's time base
    audio: AudioCut | None  # the source's audio and subtitles of the kept span
    end: Fraction  # where the output ends (the last frame's display end)


def output_timing(info, span: tuple[Fraction, Fraction], times: list[Fraction], fps: Fraction | None) -> OutputTiming:
    """The output's timing for the kept frames' source ``times`` and ``span`` (v2v.media.decode.Decoder's), of the
    video ``info``; ``fps``: the --fps the frames were resampled to (None: the source's own timing)."""
    audio = [a.index for a in info.audio_streams] or ([info.audio.index] if info.audio else [])
    subtitles = tuple(s.index for s in info.subtitles)
    cut = AudioCut(info.path, audio[0] if audio else None, span[0], span[1], tuple(audio[1:]), subtitles)
    # resampled frames sit on the grid k/fps, which 1/fps holds exactly; else the source's own time base
    time_base = info.time_base if fps is None else 1 / Fraction(fps)
    return OutputTiming([t - times[0] for t in times], fps or info.fps, time_base,
                        cut if audio or subtitles else None, span[1] - span[0])


def frac(x: Any) -> Fraction:
    """A number as an exact Fraction (floats through their shortest repr: 0.1 -> 1/10)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise InvalidOptions(f"expected a finite number, got {x!r}; pass a number of seconds")
        return Fraction(repr(x))
    return Fraction(x)


def _round8(x: Fraction) -> int:
    """Nearest multiple of 8 (halves round up), never below 8."""
    return max(8, int(math.floor(Fraction(x) / 8 + Fraction(1, 2))) * 8)


def processing_size(display_w, display_h, size=512, width=None, height=None) -> tuple[int, int]:
    """Size the pipeline works at: multiples of 8, keeping the displayed aspect ratio.

    Default: the short side is ``size`` (rounded to a multiple of 8), the long side follows.
    Only ``width`` or only ``height``: the other side follows the aspect ratio. Both: used as given.
    Given sides must be multiples of 8.
    """
    if not (isinstance(display_w, int) and isinstance(display_h, int)) or display_w <= 0 or display_h <= 0:
        raise InvalidOptions(f"display size must be positive integers, got {display_w}x{display_h}")
    for name, v in (("width", width), ("height", height)):
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or v % 8:
            near = _round8(Fraction(v)) if isinstance(v, (int, float)) and v > 0 else 512
            raise InvalidOptions(f"{name} must be a positive multiple of 8, got {v!r}; try {near}")
    aspect = Fraction(display_w, display_h)
    if width is not None and height is not None:
        return width, height
    if width is not None:
        return width, _round8(width / aspect)
    if height is not None:
        return _round8(height * aspect), height
    if not isinstance(size, (int, Fraction)) or isinstance(size, bool) or size < 8:
        raise InvalidOptions(f"size must be an integer of at least 8, got {size!r}; try 512")
    short = _short_side_for_aspect(_round8(Fraction(size)), max(aspect, 1 / aspect))
    if display_w <= display_h:
        return short, _round8(short / aspect)
    return _round8(short * aspect), short


ASPECT_TOLERANCE = Fraction(175, 10000)  # processing_size keeps the aspect within this (the promise is 2%)


def _short_side_for_aspect(short: int, ratio: Fraction) -> int:
    """The requested short side, or the nearest one (within 3 steps of 8) whose multiple-of-8 long side keeps
    ``ratio`` (long / short, >= 1) within ASPECT_TOLERANCE. Small sizes need it: at a short side of 128 a
    long side rounded to 8 can be 3% off."""
    candidates = [short] + [s for k in (8, 16, 24) for s in (short - k, short + k) if s >= 8]

    def error(s: int) -> Fraction:
        return abs(Fraction(_round8(s * ratio), s) / ratio - 1)

    for s in candidates:
        if error(s) <= ASPECT_TOLERANCE:
            return s
    return min(candidates, key=error)


def resample(items: Iterable[tuple[Fraction, T]], fps) -> Iterator[tuple[Fraction, T]]:
    """Resample a timed sequence onto the grid ``t0 + k/fps``. Pure and lazy.

    ``items`` are ``(time, payload)`` with strictly increasing times; the LAST item only marks the
    end of the span (its payload is never shown). Item j is displayed over ``[t_j, t_{j+1})``.
    Yields ``(grid_time, payload)`` for every grid time before the end, each with the payload
    displayed at that instant (so frames are dropped or repeated). Holds one item at a time.
    """
    step = 1 / frac(fps)
    it = iter(items)
    try:
        cur_t, cur = next(it)
    except StopIteration:
        return
    t0 = cur_t
    k = 0
    for nxt_t, nxt in it:
        while (g := t0 + k * step) < nxt_t:
            yield g, cur
            k += 1
        cur_t, cur = nxt_t, nxt


def resample_times(times: list[Fraction], end: Fraction, fps) -> list[tuple[Fraction, int]]:
    """Eager form of :func:`resample` on plain times: ``[(grid_time, source_position), ...]``."""
    return list(resample([(t, i) for i, t in enumerate(times)] + [(end, -1)], fps))


def select_every_nth(times: list[Fraction], end: Fraction, n: int, max_frames: int | None = None):
    """Pure reference of the every-n-th / max-frames selection: (kept positions, span end).

    ``end`` is where the last source frame stops being displayed. A kept frame stands for itself and
    the n-1 frames after it, so the span ends at the next frame that would be kept, or ``end``.
    """
    kept = list(range(0, len(times), n))
    if max_frames is not None and len(kept) > max_frames:
        return kept[:max_frames], times[kept[max_frames]]
    return kept, end
