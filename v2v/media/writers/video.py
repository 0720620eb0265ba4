"""Encoded video (H.264, H.265, VP9, AV1, ProRes): frames stamped with their source times, encoded on a
background thread, with the source's audio of the kept span beside them (v2v.media.writers.audio).
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from v2v.errors import EmptyInput, InputNotFound, InvalidOptions, OutputError, VideoDecodeError, one_line
from v2v.media.formats import COPY_AUDIO, FORMATS, TRANSCODE_AUDIO, OutputFormat, crf_for
from v2v.media.pyav import AV_ERRORS, SWS_THREADS, write_failed
from v2v.media.timing import AudioCut, frac
from v2v.media.writers.audio import AudioSource
from v2v.media.writers.subtitles import subtitle_sources
from v2v.media.writers.base import BackgroundWork, ClosingWriter, rgb_frame

MP4_STANDARD_TAGS = {
    "title", "comment", "description", "artist", "album", "album_artist", "date", "year", "genre",
    "composer", "copyright", "encoder", "synopsis", "show", "episode_id", "network", "lyrics",
    "grouping", "keywords",
}  # metadata keys mp4 holds without movflags=use_metadata_tags
ENCODERS = {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "prores": "prores_ks"}
AV1_ENCODERS = ("libsvtav1", "libaom-av1", "librav1e")  # in order of preference; libdav1d only decodes



def av1_encoder() -> str:
    """The AV1 encoder PyAV's FFmpeg has (SVT-AV1, else libaom, else rav1e); OutputError when none."""
    for name in AV1_ENCODERS:
        if name in av.codecs_available:
            try:
                av.Codec(name, "w")
                return name
            except Exception:  # noqa: BLE001 - listed but not an encoder
                continue
    raise OutputError("this PyAV build has no AV1 encoder (libsvtav1, libaom-av1 or librav1e): use --format vp9")


def x264_params(width: int) -> dict[str, str]:
    """libx264 options that keep its output a function of its input alone, for frames ``width`` pixels wide.

    x264's AVX-512 ``mbtree_propagate_list`` works 8 macroblocks at a time (``add r0, 8; jl .loop``) and does
    not mask the end of a row: where the width in macroblocks is not a multiple of 8, the last lanes read
    past the end of x264's lowres motion-vector and cost arrays (uninitialised heap) and can add those stale
    values to in-frame macroblock-tree costs. The bitstream then depends on what the process's heap held
    before (earlier torch work, an earlier encode), so identical frames encode differently, threads or not.
    Its SSE/AVX2 versions finish each row in C and are exact, so on a CPU with AVX-512, at such widths,
    x264 is held to AVX2 (about 6 % slower encoding); at widths of whole groups of 8 macroblocks (113-128,
    241-256... 497-512 pixels) and on other CPUs nothing changes. Every AVX-512 CPU has the
    AVX2/FMA3/BMI2 set that ``asm=AVX2`` turns on.
    """
    if (width + 15) // 16 % 8 == 0:
        return {}
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as cpu
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as cpu  # numpy < 2
        except ImportError:
            return {}
    if cpu.get("AVX512F") and cpu.get("AVX2") and cpu.get("FMA3"):
        return {"x264-params": "asm=AVX2"}
    return {}


class VideoWriter(BackgroundWork, ClosingWriter):
    """An encoded video: H.264 yuv420p (``spec`` None) or ``spec``'s codec (H.265, VP9, AV1, ProRes), in the
    container of ``path``'s extension (.mp4, .mov, .webm), each frame stamped with the time it is given, plus
    the audio cut: every audio stream, copied when the container holds its codec, else transcoded (mp4/mov: AAC;
    webm: Opus), and the subtitles the container can hold (v2v.media.writers.subtitles).
    ``crf``: on the codec's scale (None: its default, v2v.media.formats).

    ``write(image, time)``: ``time`` is Fraction seconds relative to the output start. The stream
    time base is ``time_base`` (the source's), so VFR times stay exact. ``end``: output time where
    the video ends (sets the last frame's duration); default: the audio cut's length, else last + 1/fps.

    ``threaded``: the colour conversion, the encoder and the muxing (audio too) run on one background thread fed
    by a queue of at most ``queue_frames`` frames, so the caller (the sampler, a decode) works while the encoder
    does; PyAV releases the GIL there. ``write`` copies the image, checks its shape and time at once
    (ValueError, as unthreaded), and returns; an encoding error raised on the thread comes back as the same
    OutputError from the next ``write`` or from ``close``. ``close`` waits for the
    queue to drain; leaving the ``with`` block on an exception stops the thread and discards what is queued.
    The file is the same byte for byte either way.
    """

    def __init__(self, path, width: int, height: int, *, fps, time_base, spec: OutputFormat | None = None,
                 audio: AudioCut | None = None, crf: int | None = None, metadata: dict | None = None, end=None,
                 threaded: bool = False, queue_frames: int = 16):
        self.spec = spec or FORMATS["h264"]
        if self.spec.name not in ENCODERS:
            raise InvalidOptions(f"{self.spec.label} is not an encoded video format: use open_writer")
        self._container = {".mp4": "mp4", ".mov": "mov", ".webm": "webm"}.get(Path(path).suffix.lower(), "mp4")
        self._pix_fmt = self.spec.pix_fmt  # what each RGB frame is converted to (BT.709, limited range)
        self._encoder = av1_encoder() if self.spec.name == "av1" else ENCODERS[self.spec.name]
        crf = crf_for(self.spec, crf)
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0 \
                or width % 2 or height % 2:
            raise InvalidOptions(f"output size must be positive even integers, got {width}x{height}")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = frac(fps)
        tb = frac(time_base)
        self.time_base = Fraction(1, tb.denominator)  # p/q is a multiple of 1/q: exact, and mp4 wants 1/n
        self.end = frac(end) if end is not None else None
        self._audio_cut = audio
        self._last_time: Fraction | None = None
        self._last_pts: int | None = None
        self._closed = False
        self._sources: list = []  # the audio streams' and the subtitles' (AudioSource, SubtitleSource)
        self._frames = 0
        self.busy = 0.0  # seconds spent converting, encoding and muxing frames (on the worker when threaded)
        # one swscale context for every frame: frame.reformat() makes a new one per call, which costs more than the
        # conversion itself at small sizes (the same output)
        self._reformatter = VideoReformatter()
        self._held = None  # the last video packet, held back so close() can set its duration
        self._first_dts: int | None = None
        self._first_pts: int | None = None
        self._check_queue_frames(queue_frames)
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder does not exist: {self.path.parent}; create it first")
        try:
            self._out = av.open(str(self.path), mode="w", format=self._container)
        except AV_ERRORS as e:
            raise OutputError(f"cannot create {self.path} ({one_line(e)}); check the folder exists and is "
                              "writable") from None
        try:
            self._setup(crf, metadata)
        except OutputError:
            self.abort()
            raise
        except (InvalidOptions, VideoDecodeError, InputNotFound, EmptyInput):
            self.abort()
            raise
        except AV_ERRORS as e:
            self.abort()
            raise OutputError(f"cannot set up the encoder for {self.path.name} ({one_line(e)})") from None
        if threaded:
            self._start_worker(queue_frames, f"v2v-encode-{self.path.name}")

    def _setup(self, crf, metadata):
        out = self._out
        self._vs = self._add_video(crf)
        if metadata:
            for k, v in metadata.items():
                out.metadata[str(k)] = str(v)
            if self._container in ("mp4", "mov") and any(str(k).lower() not in MP4_STANDARD_TAGS for k in metadata):
                out.options["movflags"] = "use_metadata_tags"
        if self._audio_cut is not None:
            self._add_sources(self._audio_cut)

    def _add_sources(self, cut: AudioCut) -> None:
        """The streams muxed beside the video, in the source's order: each audio stream (copied when the
        container holds its codec, else transcoded), then the subtitles the container can hold."""
        c = self._container
        for index in cut.audio_streams:
            self._sources.append(AudioSource(cut, self._out, copy_codecs=COPY_AUDIO[c], codec=TRANSCODE_AUDIO[c],
                                             index=index))
        self._sources += subtitle_sources(cut, self._out, c)

    def _add_video(self, crf):
        vs = self._video_stream(self._encoder, self._encoder_options(crf))
        if self.spec.name == "h265":
            vs.codec_context.codec_tag = "hvc1"  # what Apple's players need for HEVC in mp4/mov (default: hev1)
        return vs

    def _encoder_options(self, crf) -> dict[str, str]:
        enc = self._encoder
        if enc == "libx264":
            return {"crf": str(crf), **x264_params(self.width)}
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

    def _video_stream(self, encoder: str, options: dict[str, str]):
        """A video stream of ``encoder`` with ``options``, at this writer's size, time base and pixel format,
        tagged BT.709 limited range (what ``_encode`` converts to)."""
        vs = self._out.add_stream(encoder, rate=self.fps)
        vs.width = self.width
        vs.height = self.height
        vs.pix_fmt = self._pix_fmt
        vs.time_base = self.time_base
        cc = vs.codec_context
        cc.time_base = self.time_base
        cc.framerate = self.fps
        cc.thread_type = "AUTO"
        cc.options = options
        cc.colorspace = 1  # BT.709, matching the conversion below
        cc.color_primaries = 1
        cc.color_trc = 1
        cc.color_range = 1  # limited ("tv") range
        return vs

    def write(self, image: np.ndarray, time) -> None:
        """Encode one RGB uint8 (H, W, 3) image shown from ``time`` (output seconds)."""
        if self._closed:
            raise OutputError(f"{self.path.name} is already closed; create a new VideoWriter")
        self._raise_worker_error()
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image of shape {(self.height, self.width, 3)}, "
                             f"got {image.dtype} {image.shape}")
        t = frac(time)
        pts = int(round(t / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"frame times must increase: {float(t)} s after {float(self._last_time)} s")
        try:
            frame = rgb_frame(image)  # a copy: the caller may reuse the array once write() returns
            frame.pts = pts
            frame.time_base = self.time_base
            if self._thread is None:
                self._encode(frame, t)
        except AV_ERRORS as e:
            self.abort()
            raise OutputError(self._write_failed(e)) from e
        if self._thread is not None:
            self._put((frame, t))
        self._last_time = t
        self._last_pts = pts
        self._frames += 1

    def _write_failed(self, e: BaseException) -> str:
        return write_failed(f"writing {self.path.name}", e)

    def _convert(self, frame):
        """An rgb24 frame in the encoder's pixel format, BT.709 limited range (on the worker when threaded)."""
        return self._reformatter.reformat(frame, format=self._pix_fmt, dst_colorspace="ITU709", threads=SWS_THREADS)

    def _encode(self, frame, t: Fraction) -> None:
        """Convert, encode and mux one frame (and the audio before it). Runs on the worker when threaded."""
        start = time.perf_counter()
        frame = self._convert(frame)
        for source in self._sources:
            source.pump(t)
        self._mux(self._vs.encode(frame))
        self.busy += time.perf_counter() - start

    # the worker's job (BackgroundWork): while it runs, it alone touches the container
    _job_errors = AV_ERRORS

    def _job(self, frame, t: Fraction) -> None:
        self._encode(frame, t)

    def _mux(self, packets) -> None:
        for p in packets:
            if self._first_dts is None:
                self._first_dts = p.dts if p.dts is not None else p.pts
            if p.pts is not None and (self._first_pts is None or p.pts < self._first_pts):
                self._first_pts = p.pts
            if self._held is not None:
                self._out.mux(self._held)
            self._held = p

    def _end_time(self) -> Fraction | None:
        if self._last_time is None:
            return None
        if self.end is not None:
            return self.end
        if self._audio_cut is not None:
            return self._audio_cut.end - self._audio_cut.start
        return self._last_time + 1 / self.fps

    def close(self) -> None:
        """Flush the encoder and the rest of the audio, and finish the file."""
        if self._closed:
            return
        self._stop_worker()  # everything queued is encoded first
        self._raise_worker_error()
        try:
            end = self._end_time()
            if end is None:
                raise OutputError(f"no frames were written to {self.path.name}; nothing to encode")
            self._mux(self._vs.encode(None))
            held, self._held = self._held, None
            if held is not None:
                # mp4 stores the video's length as the sum of the sample durations in decode order:
                # give the last packet the duration that makes the video end exactly at `end`
                end_pts = int(round(end / self.time_base))
                last_dts = held.dts if held.dts is not None else held.pts
                held.duration = max(1, (end_pts - self._first_pts) - (last_dts - self._first_dts))
                self._out.mux(held)
            for source in self._sources:
                source.finish()
            self._out.close()
        except OutputError:
            self.abort()
            raise
        except AV_ERRORS as e:
            self.abort()
            raise OutputError(write_failed(f"finishing {self.path.name}", e)) from e
        finally:
            self._closed = True
            for source in self._sources:
                source.close()

    def abort(self) -> None:
        """Close everything after an error, ignoring secondary errors."""
        self._drop()
        closers = [s.close for s in getattr(self, "_sources", ())]
        for closer in (*closers, getattr(getattr(self, "_out", None), "close", None)):
            if closer is None:
                continue
            try:
                closer()
            except Exception:  # noqa: BLE001 - already failing; keep the first error
                pass
