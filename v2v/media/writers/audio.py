"""The source's audio of the kept span, muxed beside the video, one AudioSource per audio stream (each keeps its
language): stream-copied where the container holds its codec, else transcoded (AAC in mp4/mov, Opus in webm), cut
at the same instants as the video.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from v2v.errors import InvalidOptions, one_line
from v2v.media.formats import MP4_COPY_AUDIO
from v2v.media.pyav import AV_ERRORS, codec_name, open_input
from v2v.media.timing import AudioCut

log = logging.getLogger("v2v")

_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class AudioSource:
    """Audio of the kept span, read lazily from the source and muxed into the output: the stream ``index`` of the
    source (default: the cut's first audio stream)."""

    def __init__(self, cut: AudioCut, output, copy_codecs: tuple[str, ...] = MP4_COPY_AUDIO, codec: str = "aac",
                 index: int | None = None):
        """``copy_codecs``: source codecs stream-copied (when the container takes them); others are transcoded
        to ``codec`` at the source's sample rate, or the nearest rate the encoder supports (Opus: 48 kHz)."""
        self.cut = cut
        self.out = output
        index = cut.stream_index if index is None else index
        self.container = open_input(Path(cut.path))
        try:
            self.in_stream = next(s for s in self.container.streams if s.index == index)
        except StopIteration:
            self.container.close()
            raise InvalidOptions(f"{Path(cut.path).name} has no stream {index}") from None
        if self.in_stream.type != "audio":
            self.container.close()
            raise InvalidOptions(f"stream {index} of {Path(cut.path).name} is not audio")
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
        for key in ("language", "title"):  # which track is which: players list them by these
            value = (self.in_stream.metadata or {}).get(key)
            if value:
                self.out_stream.metadata[key] = value
        # start a little early so a packet/frame that straddles the start is not lost
        if cut.start > 0:
            try:
                self.container.seek(max(0, int(math.floor((cut.start - 1) / self.tb))),
                                    stream=self.in_stream, backward=True)
            except AV_ERRORS:
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
        rate = encoder_rate(codec, ictx.sample_rate)
        layout = ictx.layout.name if ictx.layout is not None else "stereo"
        nch = ictx.layout.nb_channels if ictx.layout is not None else 2
        if layout.endswith(" channels"):  # no channel order stated ("1 channels"): encoders want a real layout
            layout = _DEFAULT_LAYOUTS.get(nch, "stereo")
        s = self.out.add_stream(codec, rate=rate)
        try:
            s.codec_context.layout = layout
        except AV_ERRORS:
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
            except AV_ERRORS as e:
                log.warning("audio: reading stopped early (%s); the rest of the audio is left out",
                            one_line(e))
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
                except AV_ERRORS as e:
                    log.warning("audio: skipped a packet that does not decode (%s)", one_line(e))
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

    def finish(self) -> None:
        """Mux the rest of the cut and flush the encoder."""
        self.pump(self.cut.end - self.cut.start + 1)
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if not self.copy:
            for p in self.out_stream.encode(None):
                self.out.mux(p)

    def close(self) -> None:
        self.container.close()


def encoder_rate(codec: str, rate: int) -> int:
    """``rate`` when the encoder takes it, else the lowest supported rate above it (or the highest there is)."""
    rates = sorted(av.Codec(codec, "w").audio_rates or ())
    if not rates or rate in rates:
        return rate
    return next((r for r in rates if r > rate), rates[-1])
