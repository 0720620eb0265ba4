"""What a video is: ``probe(path) -> VideoInfo`` (streams, size, rotation, frame rate, time base, audio), failing fast
on anything unusable. PyAV only.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from v2v.errors import EmptyInput, InputNotFound, InputNotReadable, NoVideoStream, VideoDecodeError, one_line
from v2v.media.pyav import AV_ERRORS, codec_name, open_input, video_stream

log = logging.getLogger("v2v")


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    start: Fraction  # absolute start time of the audio stream (source timeline)
    duration: Fraction | None
    language: str | None = None  # the stream's language tag (ISO 639-2, "eng"), when it has one


@dataclass(frozen=True)
class SubtitleInfo:
    index: int
    codec: str
    language: str | None
    text: bool  # text (convertible to any container's text subtitles) rather than pictures


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
    audio: AudioInfo | None  # the first audio stream
    audio_streams: tuple[AudioInfo, ...] = ()  # every audio stream, in the file's order
    subtitles: tuple[SubtitleInfo, ...] = ()


def _normalise_rotation(ccw: float | int | None) -> int:
    """FFmpeg's display-matrix angle (counter-clockwise) -> clockwise degrees in {0, 90, 180, 270}."""
    if not ccw:
        return 0
    return int(round(-float(ccw) / 90.0)) * 90 % 360


def _check_path(path) -> Path:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputNotFound(f"input not found: {p}; check the path") from None
    except PermissionError:  # a folder on the way that may not be searched
        raise InputNotReadable(f"cannot reach {p}: permission denied on a folder on its way; make the folders "
                               "readable (chmod u+rx) or copy the video somewhere you may read it") from None
    except OSError as e:
        raise InputNotFound(f"cannot reach {p} ({e.strerror or one_line(e)}); check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputNotFound(f"input is not a file: {p}; pass a video file")
    if st.st_size == 0:
        raise EmptyInput(f"input is empty (0 bytes): {p}; pass a complete video file")
    return p


def _first_frame(container, stream):
    """Decode the first video frame (presentation order) or return None."""
    stream.codec_context.thread_type = "AUTO"
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.EOFError:
                return None
            except AV_ERRORS:
                continue
            for frame in frames:
                return frame
    except AV_ERRORS:
        return None
    return None


def probe(path) -> VideoInfo:
    """Read what v2v needs to know about a video; fail fast on anything unusable."""
    p = _check_path(path)
    container = open_input(p)
    try:
        stream = video_stream(container)
        if stream is None:
            cover = " (only a cover picture)" if container.streams.video else ""
            if container.streams.audio:
                raise NoVideoStream(f"{p.name} has audio but no video stream{cover}; pass a video file")
            raise NoVideoStream(f"{p.name} holds no video stream{cover}; pass a video file")
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else "unknown"
        audio_streams = _audio_infos(container)
        subtitles = _subtitle_infos(container)
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
        duration=duration, frames=frames_known, audio=audio_streams[0] if audio_streams else None,
        audio_streams=audio_streams, subtitles=subtitles,
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


def _language(stream) -> str | None:
    lang = (stream.metadata or {}).get("language")
    return lang if lang and lang != "und" else None


def _audio_infos(container) -> tuple[AudioInfo, ...]:
    infos = []
    for a in container.streams.audio:
        ctx = a.codec_context
        tb = Fraction(a.time_base) if a.time_base else Fraction(1, ctx.sample_rate or 1)
        layout = ctx.layout
        infos.append(AudioInfo(
            index=a.index,
            codec=codec_name(ctx),
            sample_rate=ctx.sample_rate,
            channels=layout.nb_channels if layout is not None else ctx.channels,
            layout=layout.name if layout is not None else "",
            start=a.start_time * tb if a.start_time is not None else Fraction(0),
            duration=a.duration * tb if a.duration else None,
            language=_language(a),
        ))
    return tuple(infos)


def _subtitle_infos(container) -> tuple[SubtitleInfo, ...]:
    infos = []
    for s in container.streams.subtitles:
        try:
            name = codec_name(s.codec_context)
            text = bool(av.Codec(name, "r").text_sub)
        except AV_ERRORS + (AttributeError,):  # a codec this FFmpeg does not know: kept only as it is, if at all
            name, text = getattr(s, "codec_name", None) or "unknown", False
        infos.append(SubtitleInfo(s.index, name, _language(s), text))
    return tuple(infos)
