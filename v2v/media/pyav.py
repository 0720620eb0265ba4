"""What every PyAV user in v2v shares: opening an input, the errors PyAV raises, swscale's thread count, codec
names, and the one-line message for an output that could not be written. Nothing here calls the ffmpeg binary.
"""

from __future__ import annotations

import errno
from pathlib import Path

import av
import av.error

from v2v.errors import VideoDecodeError, one_line

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
    try:
        return av.open(str(p), mode="r")
    except AV_ERRORS as e:
        raise VideoDecodeError(
            f"cannot read {p.name} as a video ({one_line(e)}); check that the file is a complete video"
        ) from None


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
