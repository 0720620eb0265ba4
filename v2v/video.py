"""What a video is (probe, with PyAV) and all the timestamp maths: processing sizes, resampling, every n-th.

Times are ``fractions.Fraction`` seconds on the source's timeline (``pts * time_base``), exact.
Output frame i carries its source frame's time (DESIGN.md decision 1), so audio stays in sync by
construction, variable frame rate included. Decoding is in :mod:`v2v.decode`, encoding in :mod:`v2v.encode`.
Nothing here calls the ffmpeg binary.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import av.error
import numpy as np

from v2v.errors import (
    EmptyInput,
    InputNotFound,
    InvalidOptions,
    NoVideoStream,
    VideoDecodeError,
)

log = logging.getLogger("v2v")

T = TypeVar("T")

# swscale threads for every colour conversion and resize. Not 0 ("automatic", PyAV's default): FFmpeg 8's
# threaded swscale
# - writes wrong values into the first pixels of each slice's first row when converting RGB to 10-bit YUV (the
#   ProRes writer's yuv422p10le: off by up to a third of the range, and with many threads not even the same
#   from run to run); on one thread it equals the ffmpeg command line's conversion (tested);
# - skips its SIMD unscaled converters: a same-size YUV->RGB conversion cost 0.1-0.5 ms of CPU a frame at
#   512x512 instead of 0.07-0.08 ms, RGB->YUV 0.42-0.67 instead of 0.38-0.44 (8-bit: the same pixels); a resize
#   on one thread costs less CPU too (bicubic 1280x720 -> 512x288: 0.86 ms against 1.12) for a little more wall
#   time. The decoder and the writer each run on their own thread beside x264's, which already fills the cores.
SWS_THREADS = 1

_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError, RuntimeError)


# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    start: Fraction  # absolute start time of the audio stream (source timeline)
    duration: Fraction | None


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    format: str
    codec: str
    pix_fmt: str
    width: int  # coded size
    height: int
    sar: Fraction  # sample aspect ratio (1 when unknown)
    rotation: int  # clockwise degrees to display upright: 0, 90, 180, 270
    display_width: int  # after SAR and rotation: what a player shows
    display_height: int
    fps: Fraction  # average frame rate
    time_base: Fraction
    start: Fraction  # time of the first video frame
    duration: Fraction | None
    frames: int | None  # frame count when the container knows it
    audio: AudioInfo | None


@dataclass(frozen=True)
class Frame:
    index: int  # 0, 1, 2... among the kept frames
    source_index: int  # index among all decoded source frames
    time: Fraction  # absolute source time this output frame carries
    image: np.ndarray  # (H, W, 3) uint8 RGB at the processing size, upright


@dataclass(frozen=True)
class AudioCut:
    path: Path
    stream_index: int
    start: Fraction  # absolute source times of the kept span
    end: Fraction
    # output audio time = source time - start


# --------------------------------------------------------------------------------------------
# small helpers


def _frac(x: Any) -> Fraction:
    """A number as an exact Fraction (floats through their shortest repr: 0.1 -> 1/10)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise InvalidOptions(f"expected a finite number, got {x!r}; pass a number of seconds")
        return Fraction(repr(x))
    return Fraction(x)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def write_failed(what: str, err: BaseException) -> str:
    """One line for an output that could not be written (``what``: "writing out.mp4"), with the advice its cause
    calls for: a full disk, a folder that may not be written, or anything else (a stream the muxer refuses),
    which is not the creator's disk and must not be blamed on it."""
    code = getattr(err, "errno", None)
    if code in _DISK_FULL:
        advice = "the disk is full: free some space or write the output elsewhere"
    elif code in _NOT_ALLOWED:
        advice = "check that the output folder may be written"
    else:
        advice = "rerun with --debug for the details and report it if the disk is not full"
    return f"{what} failed ({_one_line(err)}); {advice}"


def codec_name(ctx) -> str:
    """A codec context's codec as ffprobe names it ("mp3"), not FFmpeg's decoder for it ("mp3float")."""
    return getattr(ctx.codec, "canonical_name", None) or ctx.name


def _round8(x: Fraction) -> int:
    """Nearest multiple of 8 (halves round up), never below 8."""
    return max(8, int(math.floor(Fraction(x) / 8 + Fraction(1, 2))) * 8)


def _normalise_rotation(ccw: float | int | None) -> int:
    """FFmpeg's display-matrix angle (counter-clockwise) -> clockwise degrees in {0, 90, 180, 270}."""
    if not ccw:
        return 0
    return int(round(-float(ccw) / 90.0)) * 90 % 360


# --------------------------------------------------------------------------------------------
# probe


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputNotFound(f"input not found: {p}; check the path")
    if not p.is_file():
        raise InputNotFound(f"input is not a file: {p}; pass a video file")
    if p.stat().st_size == 0:
        raise EmptyInput(f"input is empty (0 bytes): {p}; pass a complete video file")
    return p


def _open_input(p: Path):
    try:
        return av.open(str(p), mode="r")
    except _AV_ERRORS as e:
        raise VideoDecodeError(
            f"cannot read {p.name} as a video ({_one_line(e)}); check that the file is a complete video"
        ) from None


def _first_frame(container, stream):
    """Decode the first video frame (presentation order) or return None."""
    stream.codec_context.thread_type = "AUTO"
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.EOFError:
                return None
            except _AV_ERRORS:
                continue
            for frame in frames:
                return frame
    except _AV_ERRORS:
        return None
    return None


def _video_stream(container):
    """The first video stream that is a video, not cover art (an attached picture: one still image); None if none."""
    for stream in container.streams.video:
        try:
            cover = bool(stream.disposition & av.stream.Disposition.attached_pic)
        except (AttributeError, TypeError):
            cover = False
        if not cover:
            return stream
    return None


def probe(path) -> VideoInfo:
    """Read what v2v needs to know about a video; fail fast on anything unusable."""
    p = _check_path(path)
    container = _open_input(p)
    try:
        stream = _video_stream(container)
        if stream is None:
            cover = " (only a cover picture)" if container.streams.video else ""
            if container.streams.audio:
                raise NoVideoStream(f"{p.name} has audio but no video stream{cover}; pass a video file")
            raise NoVideoStream(f"{p.name} holds no video stream{cover}; pass a video file")
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else "unknown"
        audio = _audio_info(container)
        fmt = container.format.name
        duration = _stream_duration(container, stream)
        frames_known = stream.frames or None
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1_000_000)
        first = _first_frame(container, stream)
        if first is None:
            raise VideoDecodeError(
                f"cannot decode any video frame of {p.name} ({codec}); the file is corrupt or truncated"
            )
        width, height = first.width, first.height
        pix_fmt = first.format.name
        sar = _sar(stream, first)
        rotation = _normalise_rotation(getattr(first, "rotation", 0))
        if first.pts is not None:
            start = first.pts * (Fraction(first.time_base) if first.time_base else tb)
        elif stream.start_time is not None:
            start = stream.start_time * tb
        else:
            start = Fraction(0)
        fps = _fps(stream, duration, frames_known)
    finally:
        container.close()
    dw = max(1, int(round(width * sar))) if sar != 1 else width
    dh = height
    if rotation in (90, 270):
        dw, dh = dh, dw
    return VideoInfo(
        path=p, format=fmt, codec=codec, pix_fmt=pix_fmt, width=width, height=height, sar=sar,
        rotation=rotation, display_width=dw, display_height=dh, fps=fps, time_base=tb, start=start,
        duration=duration, frames=frames_known, audio=audio,
    )


def _sar(stream, frame) -> Fraction:
    for src in (frame, stream, stream.codec_context):
        sar = getattr(src, "sample_aspect_ratio", None)
        if sar:
            try:
                f = Fraction(sar)
            except (TypeError, ValueError, ZeroDivisionError):
                continue
            if f > 0:
                return f
    return Fraction(1)


def _stream_duration(container, stream) -> Fraction | None:
    if stream.duration and stream.time_base:
        return stream.duration * Fraction(stream.time_base)
    if container.duration:
        return Fraction(container.duration, av.time_base)
    return None


def _fps(stream, duration, frames) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            f = Fraction(rate)
            if 0 < f < 1000:
                return f
    if duration and frames:
        return Fraction(frames) / duration
    log.warning("frame rate unknown; assuming 25 fps")
    return Fraction(25)


def _audio_info(container) -> AudioInfo | None:
    if not container.streams.audio:
        return None
    a = container.streams.audio[0]
    ctx = a.codec_context
    tb = Fraction(a.time_base) if a.time_base else Fraction(1, ctx.sample_rate or 1)
    start = a.start_time * tb if a.start_time is not None else Fraction(0)
    duration = a.duration * tb if a.duration else None
    layout = ctx.layout
    return AudioInfo(
        index=a.index,
        codec=codec_name(ctx),
        sample_rate=ctx.sample_rate,
        channels=layout.nb_channels if layout is not None else ctx.channels,
        layout=layout.name if layout is not None else "",
        start=start,
        duration=duration,
    )


# --------------------------------------------------------------------------------------------
# sizes


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


# --------------------------------------------------------------------------------------------
# pure timestamp maths


def resample(items: Iterable[tuple[Fraction, T]], fps) -> Iterator[tuple[Fraction, T]]:
    """Resample a timed sequence onto the grid ``t0 + k/fps``. Pure and lazy.

    ``items`` are ``(time, payload)`` with strictly increasing times; the LAST item only marks the
    end of the span (its payload is never shown). Item j is displayed over ``[t_j, t_{j+1})``.
    Yields ``(grid_time, payload)`` for every grid time before the end, each with the payload
    displayed at that instant (so frames are dropped or repeated). Holds one item at a time.
    """
    step = 1 / _frac(fps)
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
