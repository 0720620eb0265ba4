"""The source's subtitles of the kept span, muxed beside the video: copied where the output container takes their
codec, text subtitles (SubRip, ASS, WebVTT, mov_text...) converted to the container's own (mp4/mov: mov_text,
webm: WebVTT), picture subtitles (DVD, PGS, DVB) left out where the container does not take them, logged.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

from v2v.errors import InvalidOptions, one_line
from v2v.media.pyav import AV_ERRORS, codec_name, open_input
from v2v.media.timing import AudioCut

log = logging.getLogger("v2v")

TEXT_SUBTITLES = {"mp4": "mov_text", "mov": "mov_text", "webm": "webvtt"}  # what each container holds
_MS = Fraction(1, 1000)  # converted subtitles: times in milliseconds, as the decoder gives them


def subtitle_sources(cut: AudioCut, output, container: str) -> list[SubtitleSource]:
    """A source for each of ``cut``'s subtitle streams the ``container`` can hold; the others are logged."""
    sources = []
    for index in cut.subtitles:
        source = SubtitleSource(cut, index, output, TEXT_SUBTITLES[container])
        if source.dropped:
            log.warning("%s: subtitle stream %d (%s%s) is left out: %s holds %s subtitles only, and pictures "
                        "cannot be converted to text", Path(cut.path).name, index, source.codec,
                        f", {source.language}" if source.language else "", container, TEXT_SUBTITLES[container])
            source.close()
        else:
            sources.append(source)
    return sources


class SubtitleSource:
    """One subtitle stream of the kept span, read lazily from the source. ``dropped``: the container cannot hold
    it (pictures in a container of text subtitles); nothing is added to the output then."""

    def __init__(self, cut: AudioCut, index: int, output, codec: str):
        self.cut, self.out = cut, output
        self.container = open_input(Path(cut.path))
        self.in_stream = next((s for s in self.container.streams if s.index == index), None)
        if self.in_stream is None or self.in_stream.type != "subtitle":
            self.container.close()
            raise InvalidOptions(f"stream {index} of {Path(cut.path).name} is not a subtitle stream")
        ictx = self.in_stream.codec_context
        self.codec = codec_name(ictx)
        self.language = (self.in_stream.metadata or {}).get("language")
        self.tb = Fraction(self.in_stream.time_base)
        self.copy = self.codec == codec
        try:
            text = bool(ictx.codec.text_sub)
        except AV_ERRORS + (AttributeError,):  # no decoder for it in this FFmpeg
            text = False
        self.dropped = not self.copy and not text
        self.done = False
        if self.dropped:
            return
        if self.copy:
            self.out_stream = output.add_stream_from_template(self.in_stream)
            self.out_stream.time_base = self.in_stream.time_base
        else:  # the encoder takes the decoder's ASS header: open the decoder first to have it
            ictx.open(strict=False)
            self.out_stream = output.add_stream(codec)
            self.out_stream.codec_context.subtitle_header = ictx.subtitle_header
            self.out_stream.time_base = _MS
        for key in ("language", "title"):
            value = (self.in_stream.metadata or {}).get(key)
            if value:
                self.out_stream.metadata[key] = value
        self.packets = self.container.demux(self.in_stream)

    def pump(self, until: Fraction) -> None:
        """Mux the subtitles that start before ``until`` (output seconds), cut to the kept span."""
        while not self.done:
            try:
                packet = next(self.packets)
            except (StopIteration, *AV_ERRORS) as e:
                if not isinstance(e, StopIteration):
                    log.warning("subtitles: reading stopped early (%s); the rest are left out", one_line(e))
                self.done = True
                return
            if packet.pts is None or packet.size == 0:
                continue
            start, length = packet.pts * self.tb, (packet.duration or 0) * self.tb
            if start >= self.cut.end:
                self.done = True
                return
            if start + length <= self.cut.start:
                continue
            self._mux(packet, max(start, self.cut.start) - self.cut.start,
                      min(start + length, self.cut.end) - max(start, self.cut.start))
            if start - self.cut.start >= until:
                return

    def _mux(self, packet, start: Fraction, length: Fraction) -> None:
        if self.copy:
            tb = self.tb
        else:
            subtitle = self.in_stream.codec_context.decode2(packet)
            if subtitle is None:
                return
            packet, tb = self.out_stream.codec_context.encode_subtitle(subtitle), _MS
        packet.pts = packet.dts = int(round(start / tb))
        packet.duration = max(1, int(round(length / tb)))
        packet.stream = self.out_stream
        self.out.mux(packet)

    def finish(self) -> None:
        self.pump(self.cut.end - self.cut.start + 1)

    def close(self) -> None:
        self.container.close()
