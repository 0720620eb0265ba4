"""Output formats: the format table, the writers beyond H.264 MP4, ping-pong, scaling to the source size, and
the side-by-side compare video.

=========  ==========  ==================  ===============  ==============  ============================
format     extensions  video               pixels           ``crf``         audio
=========  ==========  ==================  ===============  ==============  ============================
h264       .mp4 .mov   libx264             yuv420p          0-51 (18)       copy (AAC, MP3, AC-3, ...)
h265       .mp4 .mov   libx265, tag hvc1   yuv420p          0-51 (20)       or AAC
vp9        .webm       libvpx-vp9, b:v 0   yuv420p          0-63 (24)       copy (Opus, Vorbis) or Opus
av1        .webm .mp4  SVT-AV1 (or aom)    yuv420p          1-63 (30)       webm: as vp9; mp4: as h264
prores     .mov        prores_ks HQ        yuv422p10le      ignored         copy (+ PCM) or AAC
gif        .gif        one palette         pal8             ignored         none
png        a folder    PNG, lossless       rgb24            ignored         none
=========  ==========  ==================  ===============  ==============  ============================

The extension picks the format (.mp4 H.264, .webm VP9, .mov ProRes, .gif GIF, a folder PNG); ``--format`` picks
another one the extension can hold (``--format h265`` for .mp4, ``--format av1`` for .webm).

Every writer has :class:`v2v.encode.VideoWriter`'s interface: ``write(image, time)`` (RGB uint8, time in output
seconds, increasing), ``close()``, and use as a context manager that discards the output on an exception.
Timing: mp4 and mov keep each frame's exact time (the source's time base); webm (Matroska) stores milliseconds,
so each frame is within 0.5 ms of its time; GIF stores centiseconds (see :func:`gif_schedule`); a PNG sequence
has no timing (``RestyleResult.fps`` gives the rate).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import encode, video
from .errors import InvalidOptions, OutputError, VideoDecodeError

log = logging.getLogger("v2v")


@dataclass(frozen=True)
class OutputFormat:
    name: str  # the --format value
    label: str  # for messages: "H.264"
    extensions: tuple[str, ...]  # the file extensions it can be written to (the first is the default); () = folder
    pix_fmt: str  # what the frames are stored as
    crf: tuple[int, int, int] | None  # (lowest, highest, default) of the --crf scale; None: no quality knob
    audio: bool  # whether the format carries the source's audio
    even: bool  # frame sides must be even (chroma subsampling)

    @property
    def folder(self) -> bool:
        return not self.extensions


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("h264", "H.264", (".mp4", ".mov"), "yuv420p", (0, 51, 18), True, True),
    OutputFormat("h265", "H.265", (".mp4", ".mov"), "yuv420p", (0, 51, 20), True, True),
    OutputFormat("vp9", "VP9", (".webm",), "yuv420p", (0, 63, 24), True, True),
    OutputFormat("av1", "AV1", (".webm", ".mp4"), "yuv420p", (1, 63, 30), True, True),
    OutputFormat("prores", "ProRes 422 HQ", (".mov",), "yuv422p10le", None, True, True),
    OutputFormat("gif", "GIF", (".gif",), "pal8", None, False, False),
    OutputFormat("png", "PNG sequence", (), "rgb24", None, False, False),
)}
#: the format an extension gets without --format
BY_EXTENSION = {".mp4": "h264", ".webm": "vp9", ".mov": "prores", ".gif": "gif"}
SUPPORTED = ".mp4 (H.264, H.265, AV1), .webm (VP9, AV1), .mov (ProRes, H.264, H.265), .gif, or a folder (PNG " \
            "sequence: end the path with /)"
CRF_LIMITS = (0, 63)  # the widest --crf scale (VP9's), checked before the format is known
#: audio codecs stream-copied per container (only when the container also takes them); others are transcoded
COPY_AUDIO = {"mp4": encode.MP4_COPY_AUDIO,
              "mov": encode.MP4_COPY_AUDIO + ("pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_f32le"),
              "webm": ("opus", "vorbis")}
TRANSCODE_AUDIO = {"mp4": "aac", "mov": "aac", "webm": "libopus"}
AV1_ENCODERS = ("libsvtav1", "libaom-av1", "librav1e")  # in order of preference; libdav1d only decodes
MIN_GIF_DELAY = 2  # centiseconds: browsers play a GIF delay of 0 or 1 cs as 10 cs, so frames never get less
SEQUENCE_FILE = re.compile(r".+_\d{6}\.png")  # NAME_000000.png: what a PNG sequence folder holds


# ---------------------------------------------------------------------------------------------- choosing a format


def is_folder_target(output: str | os.PathLike, fmt: str | None = None) -> bool:
    """Whether ``output`` names a PNG-sequence folder: ``--format png``, a path ending in '/', or an existing
    folder without a video extension."""
    raw = os.fspath(output)
    if fmt == "png" or raw.endswith(("/", os.sep)):
        return True
    p = Path(raw).expanduser()
    return p.is_dir() and p.suffix.lower() not in BY_EXTENSION


def output_format(output: str | os.PathLike, fmt: str | None = None) -> OutputFormat:
    """The format written to ``output``: ``fmt`` (a --format name) when given, else the extension's.
    OutputError when the path cannot hold it (naming the supported ones)."""
    raw = os.fspath(output)
    suffix = Path(raw.rstrip("/" + os.sep)).suffix.lower()
    if fmt is not None and fmt not in FORMATS:
        raise InvalidOptions(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if is_folder_target(raw, fmt):
        if fmt not in (None, "png"):
            raise OutputError(f"output '{raw}' is a folder, which holds a PNG sequence: give a file name ending in "
                              f"{' or '.join(FORMATS[fmt].extensions)} for --format {fmt}")
        p = Path(raw).expanduser()
        if (suffix in BY_EXTENSION or suffix == ".png") and not p.is_dir():
            raise OutputError(f"output '{raw}': a PNG sequence is written into a folder; give a folder path "
                              f"(e.g. -o {Path(raw).stem}_frames/), or drop --format png to write {suffix}")
        return FORMATS["png"]
    if not suffix:
        raise OutputError(f"output '{raw}' has no extension: use {SUPPORTED}")
    if fmt is None:
        if suffix not in BY_EXTENSION:
            raise OutputError(f"output '{raw}': {suffix} is not a supported output; use {SUPPORTED}")
        return FORMATS[BY_EXTENSION[suffix]]
    spec = FORMATS[fmt]
    if suffix not in spec.extensions:
        raise OutputError(f"output '{raw}': --format {fmt} ({spec.label}) is written to "
                          f"{' or '.join(spec.extensions)}, not {suffix}; change the extension or the format")
    return spec


def default_extension(fmt: str | None) -> str:
    """'.mp4' for None (H.264), the format's first extension, or '' for a PNG sequence (a folder)."""
    spec = FORMATS.get(fmt or "h264", FORMATS["h264"])
    return spec.extensions[0] if spec.extensions else ""


def crf_problem(spec: OutputFormat | None, crf: int | None) -> str | None:
    """Why ``crf`` does not fit ``spec``'s quality scale (None: it fits, or the format has no scale)."""
    if crf is None:
        return None
    if isinstance(crf, bool) or not isinstance(crf, int):
        return f"--crf must be a whole number, got {crf!r}"
    lo, hi = spec.crf[:2] if spec is not None and spec.crf else CRF_LIMITS
    if not lo <= crf <= hi:
        what = f"for {spec.label} " if spec is not None and spec.crf else ""
        return f"--crf {what}must be between {lo} and {hi} (lower is better quality), got {crf}"
    return None


def crf_for(spec: OutputFormat, crf: int | None) -> int | None:
    """The quality value used for ``spec``: ``crf``, or the format's default; None for formats without one.
    A --crf given for ProRes, GIF or PNG is noted in the log (it does not apply)."""
    if spec.crf is None:
        if crf is not None:
            log.info("--crf does not apply to %s (%s); it is ignored", spec.label,
                     "a fixed-quality profile" if spec.name == "prores" else
                     "lossless" if spec.name == "png" else "a 256-colour palette")
        return None
    return spec.crf[2] if crf is None else crf


def side_crf(side: OutputFormat, main: OutputFormat, crf: int | None) -> int | None:
    """--crf applies to the output; a side video (pose, compare) uses it only when in the same codec."""
    return crf if side.name == main.name else None


def even_size(width: int, height: int, spec: OutputFormat, what: str = "output") -> tuple[int, int]:
    """``(width, height)``, each rounded down to even when ``spec`` needs it (4:2:0/4:2:2 chroma), logged."""
    if not spec.even or (width % 2 == 0 and height % 2 == 0):
        return width, height
    w, h = max(2, width - width % 2), max(2, height - height % 2)
    log.info("%s size %dx%d is odd; %s needs even sides: writing %dx%d", what, width, height, spec.label, w, h)
    return w, h


def av1_encoder() -> str:
    """The AV1 encoder PyAV's FFmpeg has (SVT-AV1, else libaom, else rav1e); OutputError when none."""
    import av

    for name in AV1_ENCODERS:
        if name in av.codecs_available:
            try:
                av.Codec(name, "w")
                return name
            except Exception:  # noqa: BLE001 - listed but not an encoder
                continue
    raise OutputError("this PyAV build has no AV1 encoder (libsvtav1, libaom-av1 or librav1e): use --format vp9")


# ---------------------------------------------------------------------------------------------- pure timing


def _centiseconds(t: Fraction) -> int:
    """``t`` seconds to the nearest centisecond (halves up), exactly."""
    return math.floor(Fraction(t) * 100 + Fraction(1, 2))


def gif_schedule(times: list[Fraction], end: Fraction) -> list[tuple[int, int]]:
    """Which frames a GIF shows, and for how long: ``[(frame index, delay in centiseconds), ...]``.

    ``times``: each frame's start (increasing, output seconds); ``end``: where the clip ends. A GIF stores a
    whole number of centiseconds per frame. Each frame's *start* is rounded (not its delay), so the rounding
    errors never add up: every shown frame starts within 0.5 cs (5 ms) of its true time, and the total is
    ``round(100 * end) - round(100 * times[0])`` cs, within 1 cs of the true length (within 0.5 cs, 5 ms, when
    the first frame is at 0, as v2v writes). Browsers play delays under 2 cs as 10 cs, so a frame that would
    show for less than :data:`MIN_GIF_DELAY` is left out and the frame before it shows on (above 50 frames/s
    some frames drop; the timing stays right). A lone frame shorter than 2 cs shows for 2 cs. (GIF cannot hold
    one delay over 655.35 s.)
    """
    if not times:
        return []
    cs = [_centiseconds(t) for t in times]
    c_end = _centiseconds(end)
    kept = [0]
    for i in range(1, len(cs)):
        if cs[i] - cs[kept[-1]] >= MIN_GIF_DELAY:
            kept.append(i)
    while len(kept) > 1 and c_end - cs[kept[-1]] < MIN_GIF_DELAY:
        kept.pop()  # the last frame would flash: the one before it shows to the end
    starts = [cs[i] for i in kept] + [max(c_end, cs[kept[-1]] + MIN_GIF_DELAY)]
    return [(i, starts[k + 1] - starts[k]) for k, i in enumerate(kept)]


def ping_pong_times(times: list[Fraction], end: Fraction) -> tuple[list[tuple[int, Fraction]], Fraction]:
    """Forward then backward: ``([(frame index, time), ...], new end)``.

    Frames 0..n-1 play at their times, then n-2..1 (the turning frames are not doubled, so a looping player
    goes 0..n-1..1, 0.. without a stall); each frame keeps its own display length in both directions, so the
    total is ``end + times[n-1] - times[1]``. Fewer than 3 frames: nothing to play back.
    """
    n = len(times)
    order = [(i, t) for i, t in enumerate(times)]
    if n < 3:
        return order, end
    # backward frame j starts once frames n-2 .. j+1 have played again after the end
    order += [(j, end + times[n - 1] - times[j + 1]) for j in range(n - 2, 0, -1)]
    return order, end + times[n - 1] - times[1]


# ---------------------------------------------------------------------------------------------- images


def scale_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to ``width`` x ``height``: area averaging when it shrinks, Lanczos (8x8) when it grows."""
    import cv2

    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LANCZOS4
    return cv2.resize(image, (width, height), interpolation=interp)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images of one height, left to right."""
    return np.ascontiguousarray(np.concatenate(images, axis=1))


class _Spool:
    """Frames of one shape in an unnamed temp file (the OS deletes it even if the process dies), read by index.

    Keeps RAM bounded where a format needs every frame before it can write (GIF's palette, ping-pong's way back).
    """

    def __init__(self, folder: Path, shape: tuple[int, ...]):
        self.shape = shape
        self.size = int(np.prod(shape))
        self.count = 0
        try:
            self.file = tempfile.TemporaryFile(dir=folder, prefix=".v2v-frames-")
        except OSError as e:
            raise OutputError(f"cannot write a temp file in '{folder}' ({e.strerror}); check free space") from None

    def append(self, image: np.ndarray) -> None:
        try:
            self.file.seek(self.count * self.size)
            self.file.write(np.ascontiguousarray(image).tobytes())
        except OSError as e:
            raise OutputError(video.write_failed("writing frames to a temp file", e)) from e
        self.count += 1

    def read(self, index: int) -> np.ndarray:
        self.file.seek(index * self.size)
        return np.frombuffer(self.file.read(self.size), dtype=np.uint8).reshape(self.shape)

    def close(self) -> None:
        self.file.close()


def _check_frame(writer, image: np.ndarray, time, width: int, height: int) -> Fraction:
    """A frame for ``writer`` (which has ``path``, ``_closed`` and ``_last``, the last frame's time): refused when
    the writer is closed (OutputError), not a ``width`` x ``height`` uint8 RGB image or not later than the last
    frame (ValueError); its time, as a Fraction, becomes the last."""
    if writer._closed:
        raise OutputError(f"{writer.path.name} is already closed")
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image of shape {(height, width, 3)}, got {image.dtype} {image.shape}")
    t = video._frac(time)
    if writer._last is not None and t <= writer._last:
        raise ValueError(f"frame times must increase: {float(t)} s after {float(writer._last)} s")
    writer._last = t
    return t


class _Checked(encode.ClosingWriter):
    """Shape and time checks shared by the writers that are not a VideoWriter."""

    def __init__(self, path, width: int, height: int):
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
            raise InvalidOptions(f"output size must be positive integers, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self._last: Fraction | None = None
        self._closed = False

    def _check(self, image: np.ndarray, time) -> Fraction:
        return _check_frame(self, image, time, self.width, self.height)

    def close(self) -> None:  # pragma: no cover - every writer has its own
        raise NotImplementedError

    def _abort(self) -> None:
        self._closed = True


# ---------------------------------------------------------------------------------------------- encoded video


class EncodedWriter(encode.VideoWriter):
    """H.265, VP9, AV1 or ProRes (or H.264 in .mov): VideoWriter with another encoder, muxer and audio policy.

    Same timing (each frame stamped with its time; the last frame's duration reaches ``end``), same audio cut,
    the audio copied when the container holds its codec, else transcoded (mp4/mov: AAC; webm: Opus at 48 kHz).
    """

    def __init__(self, path, spec: OutputFormat, width: int, height: int, *, crf: int | None = None, **kwargs):
        self.spec = spec
        suffix = Path(path).suffix.lower()
        self._container = {".mp4": "mp4", ".mov": "mov", ".webm": "webm"}.get(suffix, "mp4")
        self._pix_fmt = spec.pix_fmt
        self._encoder = av1_encoder() if spec.name == "av1" else {
            "h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9", "prores": "prores_ks"}[spec.name]
        super().__init__(path, width, height, crf=crf_for(spec, crf), **kwargs)

    def _add_video(self, crf):
        vs = self._video_stream(self._encoder, self._encoder_options(crf))
        if self.spec.name == "h265":
            vs.codec_context.codec_tag = "hvc1"  # what Apple's players need for HEVC in mp4/mov (default: hev1)
        return vs

    def _encoder_options(self, crf) -> dict[str, str]:
        enc = self._encoder
        if enc == "libx264":
            return {"crf": str(crf), **encode._x264_params(self.width)}
        if enc == "libx265":
            return {"crf": str(crf), "x265-params": "log-level=error"}
        if enc == "libvpx-vp9":  # constant quality: crf with a zero bitrate target
            return {"crf": str(crf), "b": "0", "cpu-used": "4", "row-mt": "1", "deadline": "good"}
        if enc == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr unless told: errors only
            return {"crf": str(crf), "preset": "8"}
        if enc == "libaom-av1":
            return {"crf": str(crf), "b": "0", "cpu-used": "6", "row-mt": "1"}
        if enc == "librav1e":
            return {"qp": str(min(255, crf * 4)), "speed": "8"}  # rav1e's quantizer is 0-255
        return {"profile": "3", "vendor": "apl0"}  # prores_ks: profile 3 = HQ

    def _add_audio(self, cut):
        c = self._container
        return encode._AudioSource(cut, self._out, copy_codecs=COPY_AUDIO[c], codec=TRANSCODE_AUDIO[c])


# ---------------------------------------------------------------------------------------------- GIF


class GifWriter(_Checked):
    """An animated GIF with one 256-colour palette for the whole clip (FFmpeg's palettegen over every frame,
    then paletteuse with Sierra-2-4A error diffusion, redrawing only the changed rectangle of each frame).

    Frames are spooled to an unnamed temp file as they come (RAM stays bounded) and encoded at ``close``.
    Delays follow :func:`gif_schedule`. ``loop``: how many times it plays, 0 = forever (the NETSCAPE loop count
    written is ``loop - 1``, which players read as repeats after the first play; 1 writes no loop block).
    ``end``: output time where the last frame stops (default: last time + 1/fps); may be changed before close.
    """

    def __init__(self, path, width: int, height: int, *, fps, end=None, loop: int = 0):
        super().__init__(path, width, height)
        if not isinstance(loop, int) or isinstance(loop, bool) or not 0 <= loop <= 65536:
            raise InvalidOptions(f"gif loop must be 0 (forever) or a play count up to 65536, got {loop!r}")
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder does not exist: {self.path.parent}; create it first")
        self.fps = video._frac(fps)
        self.end = video._frac(end) if end is not None else None
        self.loop = loop
        self.times: list[Fraction] = []
        self._spool = _Spool(self.path.parent, (height, width, 3))

    def write(self, image: np.ndarray, time) -> None:
        """Keep one RGB uint8 (H, W, 3) frame shown from ``time`` (output seconds)."""
        t = self._check(image, time)
        self._spool.append(image)
        self.times.append(t)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if not self.times:
                raise OutputError(f"no frames were written to {self.path.name}; nothing to encode")
            end = self.end if self.end is not None else self.times[-1] + 1 / self.fps
            self._encode(gif_schedule(self.times, end))
        except OutputError:
            self._abort()
            raise
        except video._AV_ERRORS as e:
            self._abort()
            raise OutputError(video.write_failed(f"writing {self.path.name}", e)) from e
        self._closed = True
        self._spool.close()

    def _frame(self, index: int, pts: int):
        f = encode.rgb_frame(self._spool.read(index))
        f.pts = pts
        f.time_base = Fraction(1, 100)
        return f

    def _pull(self, graph) -> list:
        import av

        out = []
        while True:
            try:
                out.append(graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out

    def _encode(self, schedule: list[tuple[int, int]]) -> None:
        import av

        tb = Fraction(1, 100)
        starts = np.cumsum([0] + [d for _, d in schedule])
        # pass 1: one palette from every shown frame
        g = av.filter.Graph()
        src = g.add_buffer(width=self.width, height=self.height, format="rgb24", time_base=tb)
        gen = g.add("palettegen", "max_colors=256:reserve_transparent=0:stats_mode=full")
        sink = g.add("buffersink")
        src.link_to(gen)
        gen.link_to(sink)
        g.configure()
        for (i, _), pts in zip(schedule, starts):
            src.push(self._frame(i, int(pts)))
        src.push(None)
        palette = g.vpull()
        # pass 2: map each frame onto it and encode
        g = av.filter.Graph()
        src = g.add_buffer(width=self.width, height=self.height, format="rgb24", time_base=tb)
        pal = g.add_buffer(width=palette.width, height=palette.height, format=palette.format.name, time_base=tb)
        use = g.add("paletteuse", "dither=sierra2_4a:diff_mode=rectangle")
        sink = g.add("buffersink")
        src.link_to(use, 0, 0)
        pal.link_to(use, 0, 1)
        use.link_to(sink)
        g.configure()
        palette.pts = 0
        pal.push(palette)
        pal.push(None)
        loop = "0" if self.loop == 0 else "-1" if self.loop == 1 else str(self.loop - 1)  # muxer: -1 = no loop block
        options = {"loop": loop, "final_delay": str(schedule[-1][1])}
        with av.open(str(self.path), mode="w", format="gif", options=options) as out:
            st = out.add_stream("gif", rate=self.fps)
            st.width, st.height, st.pix_fmt = self.width, self.height, "pal8"
            st.time_base = tb
            st.codec_context.time_base = tb
            for (i, _), pts in zip(schedule, starts):
                src.push(self._frame(i, int(pts)))
                for f in self._pull(g):
                    out.mux(st.encode(f))
            src.push(None)
            for f in self._pull(g):
                out.mux(st.encode(f))
            out.mux(st.encode(None))

    def _abort(self) -> None:
        self._closed = True
        self._spool.close()


# ---------------------------------------------------------------------------------------------- PNG sequence


class PngSequenceWriter(encode.BackgroundWork, _Checked):
    """Lossless PNG files ``NAME_000000.png``, ``NAME_000001.png``... in the folder ``path`` (made here).
    Times are checked (increasing) but not stored: a PNG sequence has no timing.

    ``threaded``: the PNG compression (5.5 ms a frame at 512x512, where the GPU makes one in about 20) runs on a
    background thread fed by a queue of at most ``queue_frames`` frames, as VideoWriter's encoding does; ``write``
    copies the image, checks it at once and returns; a failed file comes back from the next ``write`` or from
    ``close``, which waits for the queue. The files are the same either way."""

    def __init__(self, path, width: int, height: int, *, name: str = "frame", threaded: bool = False,
                 queue_frames: int = 16):
        super().__init__(path, width, height)
        self.name = name
        self.count = 0
        self._check_queue_frames(queue_frames)
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the folder '{self.path}' ({e.strerror}); check the path") from None
        if threaded:
            self._start_worker(queue_frames, f"v2v-encode-{self.path.name}")

    def file(self, index: int) -> Path:
        return self.path / f"{self.name}_{index:06d}.png"

    def write(self, image: np.ndarray, time) -> None:
        self._check(image, time)
        self._raise_worker_error()
        if self._thread is not None:
            self._put((self.count, image.copy()))  # the caller may reuse its array once write() returns
        else:
            try:
                self._job(self.count, image)
            except OutputError:
                self._abort()
                raise
        self.count += 1

    def _job(self, index: int, image: np.ndarray) -> None:
        """Write frame ``index`` (on the worker when threaded)."""
        import cv2

        try:
            ok = cv2.imwrite(str(self.file(index)), np.ascontiguousarray(image[:, :, ::-1]))
        except cv2.error as e:
            ok = False
            log.debug("cv2.imwrite failed: %s", e)
        if not ok:
            raise OutputError(f"writing {self.file(index).name} failed; check free disk space and that the folder "
                              "may be written")

    def close(self) -> None:
        if self._closed:
            return
        self._drain()  # every queued frame is written first
        if not self.count:
            raise OutputError(f"no frames were written to {self.path.name}; nothing to write")

    def _abort(self) -> None:
        self._drop()


def replaceable_folder(folder: Path) -> bool:
    """An existing folder that a PNG sequence may replace: empty, or holding only an earlier sequence."""
    try:
        return all(e.is_file() and SEQUENCE_FILE.fullmatch(e.name) for e in os.scandir(folder))
    except OSError:
        return False


def replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` onto ``target`` (absent, empty, or an earlier sequence, then removed)."""
    if target.is_dir() and any(target.iterdir()):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------- wrappers


class _Wrapper(encode.ClosingWriter):
    """A writer around another one; ``path``, ``width``, ``height`` and ``end`` are the inner writer's."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def path(self) -> Path:
        return self.inner.path

    @property
    def width(self) -> int:
        return self.inner.width

    @property
    def height(self) -> int:
        return self.inner.height

    @property
    def end(self):
        return self.inner.end

    @end.setter
    def end(self, value) -> None:
        self.inner.end = value

    def close(self) -> None:
        self.inner.close()

    def _abort(self) -> None:
        self.inner._abort()


class _FrameWork(encode.BackgroundWork, _Wrapper):
    """A wrapper whose per-frame work (``_job(image, time)``, ending in the inner write) runs on a background
    thread fed by a queue of at most ``queue_frames`` frames when ``threaded``, else in line. ``write`` checks the
    frame against ``in_size`` and its time at once (ValueError), and queues a copy (the caller may reuse its array
    once write() returns); an error from the worker comes back from the next ``write`` or from ``close``, which
    waits for the queue. The output is the same either way."""

    def __init__(self, inner, in_size: tuple[int, int], threaded: bool, queue_frames: int, name: str):
        super().__init__(inner)
        self.in_size = in_size
        self._last: Fraction | None = None
        self._closed = False
        self._check_queue_frames(queue_frames)
        if threaded:
            self._start_worker(queue_frames, f"v2v-encode-{name}-{self.path.name}")

    def write(self, image: np.ndarray, time) -> None:
        t = _check_frame(self, image, time, *self.in_size)
        self._raise_worker_error()
        if self._thread is None:
            self._job(image, t)
        else:
            self._put((image.copy(), t))

    def close(self) -> None:
        if self._closed:
            return
        self._drain()  # every queued frame is written first
        self.inner.close()

    def _abort(self) -> None:
        self._drop()
        self.inner._abort()


class Scaled(_FrameWork):
    """Takes ``width`` x ``height`` frames and scales each to the inner writer's size (:func:`scale_image`) before
    writing it (``--full-size``). ``threaded``: on a background thread (:class:`_FrameWork`): a Lanczos upscale
    of 512x288 to 1920x1080 costs about 12 ms a frame, which the sampler's thread would otherwise spend between
    passes while the GPU waits."""

    def __init__(self, inner, width: int, height: int, *, threaded: bool = False, queue_frames: int = 16):
        super().__init__(inner, (width, height), threaded, queue_frames, "scale")

    def _job(self, image: np.ndarray, t: Fraction) -> None:
        """Scale and write one frame (on the worker when threaded)."""
        self.inner.write(scale_image(image, self.inner.width, self.inner.height), t)


class PingPong(_Wrapper):
    """Plays forward, then backward (:func:`ping_pong_times`): the frames are written forward as they come and
    spooled; at close the way back is written from the spool and the inner writer's ``end`` moved to the new end.
    With audio, the source's audio plays once, under the forward half."""

    def __init__(self, inner, end):
        super().__init__(inner)
        self.forward_end = video._frac(end)
        self.times: list[Fraction] = []
        self._spool: _Spool | None = None

    def write(self, image: np.ndarray, time) -> None:
        self.inner.write(image, time)
        if self._spool is None:
            self._spool = _Spool(Path(self.path).parent, image.shape)
        self._spool.append(image)
        self.times.append(video._frac(time))

    def close(self) -> None:
        try:
            order, end = ping_pong_times(self.times, self.forward_end)
            for i, t in order[len(self.times):]:
                self.inner.write(self._spool.read(i), t)
            self.inner.end = end
        except BaseException:
            self._abort()
            raise
        if self._spool is not None:
            self._spool.close()
        self.inner.close()

    def _abort(self) -> None:
        if self._spool is not None:
            self._spool.close()
        self.inner._abort()


class CompareWriter(_FrameWork):
    """source | pose map | result, side by side, into ``inner`` (3x the width). The source frames come from
    ``sources`` (a fresh decode with the same span options, so no frame is kept from the pose step); their times
    must match the results' (relative to ``t0``), else the input changed during the run (VideoDecodeError).
    ``threaded``: drawing the pose map, putting the three side by side and the inner write run on a background
    thread (:class:`_FrameWork`): 1-2 ms a frame at 512x512, which the sampler's thread would otherwise spend
    between passes while the GPU waits; an input that changed comes back from the next ``write`` or ``close``."""

    def __init__(self, inner, sources: Iterator, pose_map: Callable[[int], np.ndarray], t0: Fraction, *,
                 threaded: bool = False, queue_frames: int = 16):
        self.sources = sources
        self.pose_map = pose_map
        self.t0 = t0
        self.count = 0
        super().__init__(inner, (inner.width // 3, inner.height), threaded, queue_frames, "compare")

    def _job(self, image: np.ndarray, time: Fraction) -> None:
        """Check the source frame, put the three side by side and write them (on the worker when threaded)."""
        src = next(self.sources, None)
        if src is None or src.time - self.t0 != time:
            raise VideoDecodeError("the input changed while it was being restyled (its frames no longer match): "
                                   "run again on a file that is not being written")
        self.inner.write(side_by_side(src.image, self.pose_map(self.count), image), time)
        self.count += 1

    def _stop(self) -> None:
        """Stop the source decode, once the worker (which reads it) has ended: after a Ctrl-C that cut the wait
        for it short, closing a generator it is running would raise over the interrupt (the abort that follows
        waits for the worker, then stops the decode)."""
        close = getattr(self.sources, "close", None)
        if close is not None and self._thread is None:
            close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            super().close()
        finally:
            self._stop()

    def _abort(self) -> None:
        try:
            super()._abort()
        finally:
            self._stop()


# ---------------------------------------------------------------------------------------------- the front door


def open_writer(path, spec: OutputFormat, width: int, height: int, *, fps, time_base, end,
                audio: video.AudioCut | None = None, crf: int | None = None, metadata: dict | None = None,
                size: tuple[int, int] | None = None, ping_pong: bool = False, gif_loop: int = 0,
                name: str = "frame", threaded: bool = False, queue_frames: int = 16):
    """A writer for ``spec`` at ``path`` taking ``width`` x ``height`` RGB frames with their output times.

    ``size``: the written size when it differs (frames scaled by :func:`scale_image`; already even where
    ``spec`` needs it). ``end``: where the output ends. ``audio``: the source audio of the kept span (formats
    without audio leave it out, logged). ``name``: PNG file prefix. ``ping_pong``: forward then backward.
    ``threaded``: the video encoders convert and encode, and the PNG writer compresses, on a background thread
    (VideoWriter(threaded=True)), so the caller (the VAE decode) works meanwhile, with up to ``queue_frames``
    frames waiting; GIF ignores both (it only spools frames until its palette is made, at close).
    """
    out_w, out_h = size or (width, height)
    if audio is not None and not spec.audio:
        log.info("%s holds no audio: the source's audio is left out", spec.label)
        audio = None
    if spec.name == "png":
        crf_for(spec, crf)
        writer = PngSequenceWriter(path, out_w, out_h, name=name, threaded=threaded, queue_frames=queue_frames)
    elif spec.name == "gif":
        crf_for(spec, crf)
        writer = GifWriter(path, out_w, out_h, fps=fps, end=end, loop=gif_loop)
    elif spec.name == "h264" and Path(path).suffix.lower() == ".mp4":
        writer = encode.VideoWriter(path, out_w, out_h, fps=fps, time_base=time_base, audio=audio,
                                    crf=crf_for(spec, crf), metadata=metadata, end=end, threaded=threaded,
                                    queue_frames=queue_frames)
    else:
        writer = EncodedWriter(path, spec, out_w, out_h, crf=crf, fps=fps, time_base=time_base, audio=audio,
                               metadata=metadata, end=end, threaded=threaded, queue_frames=queue_frames)
    if (out_w, out_h) != (width, height):
        writer = Scaled(writer, width, height, threaded=threaded, queue_frames=queue_frames)
    if ping_pong:
        writer = PingPong(writer, end)
    return writer
