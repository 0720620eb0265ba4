"""Encoding: the H.264 MP4 writer (frames stamped with their source times, on a background thread), the audio
of the kept span stream-copied or transcoded beside it, and the writer bases the other formats share
(:mod:`v2v.outputs`). PyAV only: nothing here calls the ffmpeg binary.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from v2v.errors import EmptyInput, InputNotFound, InvalidOptions, OutputError, VideoDecodeError
from v2v.video import _AV_ERRORS, SWS_THREADS, AudioCut, _frac, _one_line, _open_input, codec_name, write_failed

log = logging.getLogger("v2v")

#: audio codecs that are stream-copied into mp4 (others are transcoded to AAC)
MP4_COPY_AUDIO = ("aac", "mp3", "ac3", "eac3", "alac")
_MP4_STANDARD_TAGS = {
    "title", "comment", "description", "artist", "album", "album_artist", "date", "year", "genre",
    "composer", "copyright", "encoder", "synopsis", "show", "episode_id", "network", "lyrics",
    "grouping", "keywords",
}
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}

class _AudioSource:
    """Audio of the kept span, read lazily from the source and muxed into the output."""

    def __init__(self, cut: AudioCut, output, copy_codecs: tuple[str, ...] = MP4_COPY_AUDIO, codec: str = "aac"):
        """``copy_codecs``: source codecs stream-copied (when the container takes them); others are transcoded
        to ``codec`` at the source's sample rate, or the nearest rate the encoder supports (Opus: 48 kHz)."""
        self.cut = cut
        self.out = output
        self.container = _open_input(Path(cut.path))
        try:
            self.in_stream = next(s for s in self.container.streams if s.index == cut.stream_index)
        except StopIteration:
            self.container.close()
            raise InvalidOptions(f"{Path(cut.path).name} has no stream {cut.stream_index}") from None
        if self.in_stream.type != "audio":
            self.container.close()
            raise InvalidOptions(f"stream {cut.stream_index} of {Path(cut.path).name} is not audio")
        self.tb = Fraction(self.in_stream.time_base)
        ictx = self.in_stream.codec_context
        name = codec_name(ictx)
        self.copy = name in copy_codecs and name in output.supported_codecs
        if self.copy and name == "mp3" and (ictx.sample_rate or 0) < 16000 and output.format.name in ("mp4", "mov"):
            # FFmpeg's MP4/MOV muxer refuses MP3 below 16 kHz (MPEG-2.5: 8, 11.025, 12 kHz) as "not standard"
            self.copy = False
        if self.copy:
            self.out_stream = output.add_stream_from_template(self.in_stream)
            self.out_stream.time_base = self.in_stream.time_base
        else:
            self._setup_transcode(ictx, codec)
        # start a little early so a packet/frame that straddles the start is not lost
        if cut.start > 0:
            try:
                self.container.seek(max(0, int(math.floor((cut.start - 1) / self.tb))),
                                    stream=self.in_stream, backward=True)
            except _AV_ERRORS:
                pass
        self.packets = self.container.demux(self.in_stream)
        self.done = False
        self.written_until = Fraction(0)  # output time up to which audio has been written
        self.next_sample: int | None = None  # transcode: next output sample index
        self.preroll = None  # copy: the packet just before the cut start
        self._last_dts: int | None = None  # copy: source dts of the last packet muxed
        self._warned_order = False
        self._clock: Fraction | None = None  # transcode with a rate change: time of the resampler's next sample

    def _setup_transcode(self, ictx, codec: str = "aac"):
        rate = _encoder_rate(codec, ictx.sample_rate)
        layout = ictx.layout.name if ictx.layout is not None else "stereo"
        nch = ictx.layout.nb_channels if ictx.layout is not None else 2
        if layout.endswith(" channels"):  # no channel order stated ("1 channels"): encoders want a real layout
            layout = _DEFAULT_LAYOUTS.get(nch, "stereo")
        s = self.out.add_stream(codec, rate=rate)
        try:
            s.codec_context.layout = layout
        except _AV_ERRORS:
            s.codec_context.layout = _DEFAULT_LAYOUTS.get(nch, "stereo")
        formats = [f.name for f in (av.Codec(codec, "w").audio_formats or ())]
        s.codec_context.format = "fltp" if not formats or "fltp" in formats else formats[-1]
        s.time_base = Fraction(1, rate)
        self.out_stream = s
        self.rate = rate
        self.resampler = av.AudioResampler(format="fltp", layout=s.codec_context.layout, rate=rate)

    def pump(self, until: Fraction) -> None:
        """Mux the audio whose output time is before ``until`` (output seconds)."""
        cut = self.cut
        lim = min(until, cut.end - cut.start)
        while not self.done and self.written_until < lim:
            try:
                packet = next(self.packets)
            except StopIteration:
                self._finish()
                return
            except _AV_ERRORS as e:
                log.warning("audio: reading stopped early (%s); the rest of the audio is left out",
                            _one_line(e))
                self._finish()
                return
            if packet.pts is None:
                if packet.size == 0:
                    self._finish()
                    return
                continue
            t = packet.pts * self.tb
            dur = (packet.duration or 0) * self.tb
            if self.copy:
                if t + dur <= cut.start or (dur == 0 and t < cut.start):
                    self.preroll = packet  # kept for the decoder's overlap; the edit list hides it
                    continue
                if t >= cut.end:
                    self._finish()
                    return
                if self.preroll is not None:
                    self._mux_copy(self.preroll)
                    self.preroll = None
                self._mux_copy(packet)
                self.written_until = t - cut.start
            else:
                try:
                    frames = packet.decode()
                except _AV_ERRORS as e:
                    log.warning("audio: skipped a packet that does not decode (%s)", _one_line(e))
                    continue
                for fr in frames:
                    self._encode_frame(fr)
                if t >= cut.end:
                    self._finish()
                    return

    def _mux_copy(self, packet) -> None:
        dts = packet.dts if packet.dts is not None else packet.pts
        if self._last_dts is not None and dts is not None and dts <= self._last_dts:
            # a timestamp jump back (joined recordings, concatenated .ts segments): the muxer refuses it
            # ("Invalid argument"), as the video decoder drops its frames that go back in time
            if not self._warned_order:
                log.warning("%s: audio times go backwards at %.3f s; dropping such audio",
                            Path(self.cut.path).name, float(dts * self.tb))
                self._warned_order = True
            return
        if dts is not None:
            self._last_dts = dts
        shift = int(round(self.cut.start / self.tb))
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = self.out_stream
        self.out.mux(packet)

    def _encode_frame(self, fr) -> None:
        cut = self.cut
        if fr.pts is None:
            return
        t0 = fr.pts * (Fraction(fr.time_base) if fr.time_base else self.tb)
        resampled = fr.sample_rate != self.rate
        if resampled:  # a rate change: the resampler's output runs on its own clock, from the first frame's time
            t0 = self._clock = t0 if self._clock is None else self._clock
        for rf in self.resampler.resample(fr):
            arr = rf.to_ndarray()  # (channels, samples) float32, planar
            n = arr.shape[1]
            # sample i of this frame plays at t0 + i / rate
            lo = max(0, math.ceil((cut.start - t0) * self.rate))
            hi = min(n, math.ceil((cut.end - t0) * self.rate))
            t_first = t0
            t0 = t0 + Fraction(n, self.rate)
            if hi <= lo:
                continue
            out_index = int(round((t_first - cut.start) * self.rate)) + lo
            if self.next_sample is not None and out_index < self.next_sample:
                skip = self.next_sample - out_index
                lo += skip
                out_index += skip
                if hi <= lo:
                    continue
            part = np.ascontiguousarray(arr[:, lo:hi])
            of = av.AudioFrame.from_ndarray(part, format="fltp", layout=rf.layout.name)
            of.sample_rate = self.rate
            of.pts = out_index
            of.time_base = Fraction(1, self.rate)
            self.next_sample = out_index + part.shape[1]
            for p in self.out_stream.encode(of):
                self.out.mux(p)
            self.written_until = Fraction(self.next_sample, self.rate)
        if resampled:
            self._clock = t0

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if not self.copy:
            for p in self.out_stream.encode(None):
                self.out.mux(p)

    def close(self) -> None:
        self.container.close()


def _encoder_rate(codec: str, rate: int) -> int:
    """``rate`` when the encoder takes it, else the lowest supported rate above it (or the highest there is)."""
    rates = sorted(av.Codec(codec, "w").audio_rates or ())
    if not rates or rate in rates:
        return rate
    return next((r for r in rates if r > rate), rates[-1])


def _x264_params(width: int) -> dict[str, str]:
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


def rgb_frame(image: np.ndarray) -> av.VideoFrame:
    """An rgb24 ``VideoFrame`` holding its own copy of ``image`` (H, W, 3 uint8, any strides).

    One copy, into rows that start on 64-byte boundaries (swscale's SIMD paths want aligned rows). PyAV's
    ``from_ndarray`` copies twice (``tobytes``, then row by row): at 512x512 that is 0.38 ms a frame against
    0.04 ms here, a tenth of what the writer spends on a frame besides x264. The frame is the same.
    """
    h, w, _ = image.shape
    row = -(-w * 3 // 64) * 64
    buf = np.empty(h * row + 64, np.uint8)
    view = np.ndarray((h, w, 3), np.uint8, buffer=buf, offset=-buf.ctypes.data % 64, strides=(row, 3, 1))
    view[...] = image
    return av.VideoFrame.from_numpy_buffer(view, format="rgb24")


class ClosingWriter:
    """``with`` support shared by every writer: ``close()`` when the block ends normally, ``_abort()`` (discard
    what was written) when it ends with an exception."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:  # e.g. Ctrl-C while close waits for a worker: stop it, discard the output
                self._abort()
                raise
        else:
            self._abort()
        return False


class BackgroundWork:
    """A writer's per-frame work on one background thread fed by a bounded queue (VideoWriter's conversion and
    encoding, outputs.PngSequenceWriter's PNG compression), so the caller (the sampler, a decode) goes on.

    The writer (which has ``path``, ``_write_failed(e)`` and ``_abort()``) calls ``_start_worker`` (or not: then
    ``_thread`` stays None and it works in line), ``_put(item)`` per frame, ``_stop_worker()`` on close or abort,
    and ``_raise_worker_error()`` before each write. The worker runs ``_job(*item)``; an error of a type in
    ``_job_errors`` comes back as ``OutputError(_write_failed(e))``, any other as itself, from the next write or
    from close, and what is still queued is dropped. The worker keeps draining after an error (or with
    ``_discard`` set), so a caller blocked on a full queue never waits forever.
    """

    _thread: threading.Thread | None = None
    _queue: queue.Queue | None = None
    _error: BaseException | None = None  # raised on the worker, re-raised to the caller
    _discard = False  # the worker drops what is queued (after an error, or on abort)
    _job_errors: tuple = ()

    def _job(self, *item) -> None:  # pragma: no cover - every writer has its own
        raise NotImplementedError

    @staticmethod
    def _check_queue_frames(queue_frames) -> None:
        """Every writer checks its queue size, threaded or not, before it makes anything."""
        if not isinstance(queue_frames, int) or queue_frames < 1:
            raise InvalidOptions(f"queue_frames must be a positive integer, not {queue_frames!r}")

    def _start_worker(self, queue_frames: int, name: str) -> None:
        self._queue = queue.Queue(maxsize=queue_frames)
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._work_loop()
        finally:
            self._ended.set()

    def _work_loop(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is None:
                return
            if self._discard:
                continue  # keep draining so that a caller blocked on put() never waits forever
            try:
                self._job(*item)
            except self._job_errors as e:
                self._error = OutputError(self._write_failed(e))
                self._error.__cause__ = e  # the details, for --debug's traceback
                self._discard = True
            except BaseException as e:  # noqa: BLE001 - handed to the caller as it is
                self._error = e
                self._discard = True

    def _put(self, item) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._ended.is_set():  # cannot happen (the worker drains until told to stop)
                    self._error = self._error or OutputError(f"the writing thread for {self.path.name} stopped")
                    self._raise_worker_error()

    def _stop_worker(self) -> None:
        """Tell the worker to finish what is queued (or drop it, if ``_discard``) and wait for it to end."""
        thread = self._thread
        if thread is None:
            return
        while not self._ended.is_set():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._ended.wait()  # not thread.join(): on 3.11 a join that Ctrl-C interrupted marks the thread ended
        thread.join()
        self._thread = None  # only once ended: an abort after an interrupted join (Ctrl-C) waits for it again

    def _drain(self) -> None:
        """For close: every queued frame done (or the worker's error raised), then the writer marked closed."""
        self._stop_worker()
        self._raise_worker_error()
        self._closed = True

    def _drop(self) -> None:
        """For an abort: the writer marked closed, what is queued dropped, the worker ended."""
        self._closed = True
        self._discard = True
        self._stop_worker()

    def _raise_worker_error(self) -> None:
        err = self._error
        if err is not None:
            self._abort()
            if isinstance(err, OutputError):
                raise OutputError(str(err)) from err.__cause__  # a fresh one, with the worker's cause kept
            raise err


class VideoWriter(BackgroundWork, ClosingWriter):
    """H.264 yuv420p mp4 (crf 18), each frame stamped with the time it is given, plus the audio cut.

    ``write(image, time)``: ``time`` is Fraction seconds relative to the output start. The stream
    time base is ``time_base`` (the source's), so VFR times stay exact. ``end``: output time where
    the video ends (sets the last frame's duration); default: the audio cut's length, else last + 1/fps.

    ``threaded``: the colour conversion, x264 and the muxing (audio too) run on one background thread fed by
    a queue of at most ``queue_frames`` frames, so the caller (rendering, a decode) works while x264 encodes;
    PyAV releases the GIL there. Off by default: with ``decode_latents`` queuing the next chunk on the GPU
    before handing frames over, the GPU already decodes while x264 encodes (H200, 240 frames 512x512:
    3.96 s either way; it took 6.5 s -> 5.7 s before that prefetch), and on 2 CPU cores both share the cores. ``write`` copies the image, checks
    its shape and time at once (ValueError, as unthreaded), and returns; an encoding error raised on the thread
    comes back as the same OutputError from the next ``write`` or from ``close``. ``close`` waits for the
    queue to drain; leaving the ``with`` block on an exception stops the thread and discards what is queued.
    The file is the same byte for byte either way.
    """

    _container = "mp4"  # the muxer; v2v.outputs.EncodedWriter sets its own (and its own _setup)
    _pix_fmt = "yuv420p"  # what each RGB frame is converted to (BT.709, limited range)

    def __init__(self, path, width: int, height: int, *, fps, time_base, audio: AudioCut | None = None,
                 crf: int = 18, metadata: dict | None = None, end=None, threaded: bool = False,
                 queue_frames: int = 16):
        if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0 \
                or width % 2 or height % 2:
            raise InvalidOptions(f"output size must be positive even integers, got {width}x{height}")
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = _frac(fps)
        tb = _frac(time_base)
        self.time_base = Fraction(1, tb.denominator)  # p/q is a multiple of 1/q: exact, and mp4 wants 1/n
        self.end = _frac(end) if end is not None else None
        self._audio_cut = audio
        self._last_time: Fraction | None = None
        self._last_pts: int | None = None
        self._closed = False
        self._audio: _AudioSource | None = None
        self._frames = 0
        self.busy = 0.0  # seconds spent converting, encoding and muxing frames (on the worker when threaded)
        # one swscale context for every frame: frame.reformat() makes a new one per call, which cost 0.3 ms a
        # frame (5x the conversion itself at 128x128; the same output)
        self._reformatter = VideoReformatter()
        self._held = None  # the last video packet, held back so close() can set its duration
        self._first_dts: int | None = None
        self._first_pts: int | None = None
        self._check_queue_frames(queue_frames)
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder does not exist: {self.path.parent}; create it first")
        try:
            self._out = av.open(str(self.path), mode="w", format=self._container)
        except _AV_ERRORS as e:
            raise OutputError(f"cannot create {self.path} ({_one_line(e)}); check the folder exists and is writable") from None
        try:
            self._setup(crf, metadata)
        except OutputError:
            self._abort()
            raise
        except (InvalidOptions, VideoDecodeError, InputNotFound, EmptyInput):
            self._abort()
            raise
        except _AV_ERRORS as e:
            self._abort()
            raise OutputError(f"cannot set up the encoder for {self.path.name} ({_one_line(e)})") from None
        if threaded:
            self._start_worker(queue_frames, f"v2v-encode-{self.path.name}")

    def _setup(self, crf, metadata):
        out = self._out
        self._vs = self._add_video(crf)
        if metadata:
            for k, v in metadata.items():
                out.metadata[str(k)] = str(v)
            if self._container in ("mp4", "mov") and any(str(k).lower() not in _MP4_STANDARD_TAGS for k in metadata):
                out.options["movflags"] = "use_metadata_tags"
        if self._audio_cut is not None:
            self._audio = self._add_audio(self._audio_cut)

    def _add_audio(self, cut: AudioCut) -> _AudioSource:
        """The audio source muxed beside the video (here: copied when mp4 holds the codec, else AAC)."""
        return _AudioSource(cut, self._out)

    def _add_video(self, crf):
        """The video stream (here: libx264 at ``crf``)."""
        return self._video_stream("libx264", {"crf": str(crf), **_x264_params(self.width)})

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
        t = _frac(time)
        pts = int(round(t / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"frame times must increase: {float(t)} s after {float(self._last_time)} s")
        try:
            frame = rgb_frame(image)  # a copy: the caller may reuse the array once write() returns
            frame.pts = pts
            frame.time_base = self.time_base
            if self._thread is None:
                self._encode(frame, t)
        except _AV_ERRORS as e:
            self._abort()
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
        if self._audio is not None:
            self._audio.pump(t)
        self._mux(self._vs.encode(frame))
        self.busy += time.perf_counter() - start

    # the worker's job (BackgroundWork): while it runs, it alone touches the container
    _job_errors = _AV_ERRORS

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
            if self._audio is not None:
                self._audio.pump(end + 1)
                self._audio._finish()
            self._out.close()
        except OutputError:
            self._abort()
            raise
        except _AV_ERRORS as e:
            self._abort()
            raise OutputError(write_failed(f"finishing {self.path.name}", e)) from e
        finally:
            self._closed = True
            if self._audio is not None:
                self._audio.close()

    def _abort(self) -> None:
        """Close everything after an error, ignoring secondary errors."""
        self._drop()
        for closer in (getattr(self._audio, "close", None), getattr(getattr(self, "_out", None), "close", None)):
            if closer is None:
                continue
            try:
                closer()
            except Exception:  # noqa: BLE001 - already failing; keep the first error
                pass
