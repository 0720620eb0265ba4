"""Writers: one interface (base.Writer: ``write(image, time)``, ``close()``, ``abort()``, a context manager) and
its implementations. ``open_writer`` picks the one for an output format.

    base.py      the interface, the background thread a writer encodes on, frame checks, the frame spool
    video.py     H.264, H.265, VP9, AV1, ProRes (mp4, mov, webm), with the source's audio
    audio.py     the source's audio of the kept span, copied or transcoded
    subtitles.py the source's subtitles of the kept span, copied or converted to the container's text codec
    gif.py       animated GIF
    png.py       PNG sequence
    wrappers.py  Scaled (--full-size), PingPong (--ping-pong), CompareWriter (--compare)
"""

from __future__ import annotations

import logging

from v2v.media.formats import OutputFormat, crf_for
from v2v.media.timing import AudioCut
from v2v.media.writers.base import Writer
from v2v.media.writers.gif import GifWriter
from v2v.media.writers.png import PngSequenceWriter
from v2v.media.writers.video import VideoWriter
from v2v.media.writers.wrappers import PingPong, Scaled

log = logging.getLogger("v2v")

__all__ = ["Writer", "open_writer"]


def open_writer(path, spec: OutputFormat, width: int, height: int, *, fps, time_base, end,
                audio: AudioCut | None = None, crf: int | None = None, metadata: dict | None = None,
                size: tuple[int, int] | None = None, ping_pong: bool = False, gif_loop: int = 0,
                name: str = "frame", threaded: bool = False, queue_frames: int = 16):
    """A writer for ``spec`` at ``path`` taking ``width`` x ``height`` RGB frames with their output times.

    ``size``: the written size when it differs (frames scaled by :func:`scale_image`; already even where
    ``spec`` needs it). ``end``: where the output ends. ``audio``: the source's audio streams and subtitles of the
    kept span (formats without audio leave them out, logged). ``name``: PNG file prefix. ``ping_pong``: forward
    then backward.
    ``threaded``: the video encoders convert and encode, and the PNG writer compresses, on a background thread
    (VideoWriter(threaded=True)), so the caller (the VAE decode) works meanwhile, with up to ``queue_frames``
    frames waiting; GIF ignores both (it only spools frames until its palette is made, at close).
    """
    out_w, out_h = size or (width, height)
    if audio is not None and not spec.audio:
        log.info("%s holds no audio or subtitles: the source's %s left out", spec.label, _streams(audio))
        audio = None
    if spec.name == "png":
        crf_for(spec, crf)
        writer = PngSequenceWriter(path, out_w, out_h, name=name, threaded=threaded, queue_frames=queue_frames)
    elif spec.name == "gif":
        crf_for(spec, crf)
        writer = GifWriter(path, out_w, out_h, fps=fps, end=end, loop=gif_loop)
    else:
        writer = VideoWriter(path, out_w, out_h, spec=spec, crf=crf, fps=fps, time_base=time_base, audio=audio,
                             metadata=metadata, end=end, threaded=threaded, queue_frames=queue_frames)
    if (out_w, out_h) != (width, height):
        writer = Scaled(writer, width, height, threaded=threaded, queue_frames=queue_frames)
    if ping_pong:
        writer = PingPong(writer, end)
    return writer


def _streams(cut: AudioCut) -> str:
    """"2 audio streams and 1 subtitle stream are": what a cut holds, for messages."""
    parts = [f"{n} {kind} stream{'s' if n > 1 else ''}"
             for n, kind in ((len(cut.audio_streams), "audio"), (len(cut.subtitles), "subtitle")) if n]
    return " and ".join(parts) + (" are" if len(cut.audio_streams) + len(cut.subtitles) > 1 else " is")
