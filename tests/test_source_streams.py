"""The source's streams beside the video: every audio stream with its language, in the file's order, and the
subtitles, cut to the kept span: copied or converted to the container's text subtitles (mp4/mov: mov_text, webm:
WebVTT); picture subtitles, and everything in GIF and PNG outputs, left out and logged. ffprobe judges."""

from __future__ import annotations

import logging
from fractions import Fraction

import pytest

import media
from v2v.media import formats, probe, timing
from v2v.media.decode import Decoder
from v2v.media.writers import open_writer

pytestmark = pytest.mark.skipif(not media.HAVE_FFMPEG, reason="ffmpeg/ffprobe make the inputs and judge outputs")

W, H = 64, 48
START = Fraction(3, 10)  # the cut: the first subtitle is cut short, the second moves earlier


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return media.make_multitrack(tmp_path_factory.mktemp("streams") / "multi.mkv", seconds=2, size=(W, H),
                                 picture_subtitles=True)


def restyle_like(src, out, fmt: str):
    """What a run writes: the kept frames (from START) with the output's timing and the source's streams."""
    info = probe.probe(src)
    dec = Decoder(info, W, H, start=float(START))
    frames = [(f.time, f.image) for f in dec]
    t = timing.output_timing(info, dec.span, [time for time, _ in frames], None)
    with open_writer(out, formats.FORMATS[fmt], W, H, fps=t.fps, time_base=t.time_base, end=t.end,
                     audio=t.audio) as w:
        for (_, image), at in zip(frames, t.times):
            w.write(image, at)
    return dec.span


def test_probe_lists_every_audio_stream_and_the_subtitles(source):
    info = probe.probe(source)
    assert [(a.index, a.codec, a.language) for a in info.audio_streams] == [(1, "aac", "eng"), (2, "aac", "fra")]
    assert info.audio == info.audio_streams[0]
    assert [(s.index, s.codec, s.language, s.text) for s in info.subtitles] == [
        (3, "subrip", "deu", True), (4, "dvd_subtitle", "jpn", False)]


@pytest.mark.parametrize("name,fmt,audio,text", [("out.mp4", "h264", "aac", "mov_text"),
                                                 ("out.webm", "vp9", "opus", "webvtt")])
def test_every_audio_stream_and_the_text_subtitles_are_kept(source, tmp_path, caplog, name, fmt, audio, text):
    out = tmp_path / name
    with caplog.at_level(logging.WARNING, logger="v2v"):
        t0, t1 = restyle_like(source, out, fmt)
    streams = media.ffprobe_all_streams(out)
    kinds = [(s["codec_type"], s["codec_name"], s.get("tags", {}).get("language")) for s in streams]
    assert kinds == [("video", fmt if fmt != "h264" else "h264", kinds[0][2]), ("audio", audio, "eng"),
                     ("audio", audio, "fra"), ("subtitle", text, "deu")]
    for s in streams[1:3]:  # each audio track as long as the video (Opus's pre-skip aside)
        assert abs(media.stream_duration({"audio": s, "format": {}}, "audio") - (t1 - t0)) <= Fraction(1, 20)
    # the subtitles keep their source times minus the cut's start; the first, begun before it, starts at 0
    tick = Fraction(1, 100)
    want = [(max(a, t0) - t0, min(b, t1) - t0) for a, b in media.ffprobe_cues(source)]
    got = media.ffprobe_cues(out)
    assert len(got) == len(want) == 2 and want[0][0] == 0
    assert all(abs(ga - wa) <= tick and abs(gb - wb) <= tick for (ga, gb), (wa, wb) in zip(got, want)), (got, want)
    assert media.ffmpeg_subtitle_text(out) == [words for *_, words in media.SUBTITLES]
    # the picture subtitles cannot go in: said, naming the stream and its language
    assert "subtitle stream 4 (dvd_subtitle, jpn) is left out" in caplog.text


def test_subtitles_already_in_the_container_s_codec_are_copied(source, tmp_path):
    first = tmp_path / "first.mp4"
    restyle_like(source, first, "h264")  # mov_text now
    again = tmp_path / "again.mp4"
    t0, _ = restyle_like(first, again, "h264")
    kinds = [(s["codec_type"], s.get("tags", {}).get("language")) for s in media.ffprobe_all_streams(again)]
    assert kinds[1:] == [("audio", "eng"), ("audio", "fra"), ("subtitle", "deu")]
    assert media.ffmpeg_subtitle_text(again) == ["Second line"]  # the first ended before the second cut's start
    assert media.ffprobe_cues(again)[0][0] == media.ffprobe_cues(first)[1][0] - t0


@pytest.mark.parametrize("fmt,path", [("gif", "out.gif"), ("png", "frames/")])
def test_formats_without_audio_say_what_they_leave_out(source, tmp_path, caplog, fmt, path):
    with caplog.at_level(logging.INFO, logger="v2v"):
        restyle_like(source, tmp_path / path, fmt)
    assert "the source's 2 audio streams and 2 subtitle streams are left out" in caplog.text


def test_a_run_keeps_them(source, tiny_models, tmp_path):
    """Through a whole command (v2v pose: the same output timing and writers as restyle, no generation)."""
    import v2v

    out = tmp_path / "pose.mp4"
    v2v.Restyler(models="tiny", show_progress=False, size=64).pose(source, out, start=0.3, max_frames=6)
    kinds = [(s["codec_type"], s.get("tags", {}).get("language")) for s in media.ffprobe_all_streams(out)]
    assert kinds[1:] == [("audio", "eng"), ("audio", "fra"), ("subtitle", "deu")]
    assert media.ffmpeg_subtitle_text(out) == ["Hello there"]  # six frames from 0.3 s: only the first cue
