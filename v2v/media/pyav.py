"""What every PyAV user in v2v shares: opening an input, the errors PyAV raises, swscale's thread count, codec
names, and the one-line message for an output that could not be written. Nothing here calls the ffmpeg binary.
"""

from __future__ import annotations

import errno
from pathlib import Path

import av
import av.error

from v2v.errors import InputError, InputNotReadable, VideoDecodeError, one_line

# swscale threads for every colour conversion and resize: one, not PyAV's automatic count. FFmpeg 8's threaded
# swscale writes wrong values into the first pixels of each slice when converting RGB to 10-bit YUV (ProRes),
# and skips its SIMD converters (slower; BENCHMARKS.md); the decoder and the writers have threads of their own.
SWS_THREADS = 1

# what PyAV raises for a file it cannot read or write
AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError, RuntimeError)

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
    return f"{what} failed ({one_line(err)}); {advice}"


def codec_name(ctx) -> str:
    """A codec context's codec as ffprobe names it ("mp3"), not FFmpeg's decoder for it ("mp3float")."""
    return getattr(ctx.codec, "canonical_name", None) or ctx.name


def open_input(p: Path):
    """The input opened for reading; InputNotReadable or VideoDecodeError, naming the cause and the fix."""
    try:
        return av.open(str(p), mode="r")
    except AV_ERRORS as e:
        raise unreadable(p, e) from None


def unreadable(p: Path, err: BaseException) -> InputError:
    """The error for an input that could not be opened: its permissions, data FFmpeg does not know (a damaged
    file or not a video), or anything else, in words rather than FFmpeg's error number."""
    if getattr(err, "errno", None) in (errno.EACCES, errno.EPERM):
        return InputNotReadable(f"cannot read {p.name}: permission denied; make it readable (chmod u+r '{p}') "
                                "or copy it somewhere you may read it")
    if isinstance(err, av.error.InvalidDataError):
        return VideoDecodeError(f"cannot read {p.name} as a video: FFmpeg finds no format it knows in its data "
                                "(a damaged file, or not a video); check that it plays in a video player, or export "
                                "it again")
    reason = getattr(err, "strerror", None) or one_line(err)
    return VideoDecodeError(f"cannot read {p.name} as a video ({reason}); check that the file is a complete video")


def video_stream(container):
    """The first video stream that is a video, not cover art (an attached picture: one still image); None if none."""
    for stream in container.streams.video:
        try:
            cover = bool(stream.disposition & av.stream.Disposition.attached_pic)
        except (AttributeError, TypeError):
            cover = False
        if not cover:
            return stream
    return None
