"""Output formats (v2v.media.formats, v2v.media.writers): every format written and judged by ffprobe (codec,
pixels, frames, per-frame times, audio), GIF timing and loops, ping-pong order, lossless PNG, the compare video,
--full-size, the errors."""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import media
import v2v
from v2v.media import decode
from v2v.media import formats
from v2v.media import probe
from v2v.media import timing
from v2v.media import writers
from v2v.media.writers import base as writer_base
from v2v.media.writers import gif
from v2v.media.writers import png
from v2v.media.writers import video as video_writer
from v2v.media.writers import wrappers
from v2v.errors import InvalidOptions, OutputError, VideoDecodeError
from v2v.media.outputs import atomic_output, check_output_path, default_output

pytestmark = pytest.mark.skipif(not media.HAVE_FFMPEG, reason="ffmpeg/ffprobe make the inputs and judge outputs")

ROOT = Path(__file__).resolve().parent.parent
W, H = 64, 48
TB = Fraction(1, 90000)
# irregular (VFR) frame times on a 1/90000 grid, and where the clip ends
TIMES = [Fraction(k, 90000) for k in (0, 3600, 7200, 12600, 14400, 19800, 25200, 27000, 32400, 37800, 40500, 45000)]
END = Fraction(48600, 90000)  # 0.54 s


def frames(n: int = len(TIMES), w: int = W, h: int = H) -> list[np.ndarray]:
    """Distinct frames: a horizontal gradient, a level that rises with i, and a block that moves."""
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :, 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        img[:, :, 1] = 20 + i * 18
        img[h // 4: h // 2, (i * 4) % (w - 8): (i * 4) % (w - 8) + 8] = 255
        out.append(img)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> probe.VideoInfo:
    """A source with AAC audio, longer than END, whose audio the writers cut."""
    folder = tmp_path_factory.mktemp("src")
    return probe.probe(media.make_video(folder / "src.mp4", seconds=0.8, fps=25, size=(W, H)))


def cut(info: probe.VideoInfo, length: Fraction = END) -> timing.AudioCut:
    return timing.AudioCut(info.path, info.audio.index, info.start, info.start + length)


def write(path, fmt: str, *, times=TIMES, end=END, audio=None, images=None, **kwargs):
    images = images if images is not None else frames(len(times))
    h, w = images[0].shape[:2]
    with writers.open_writer(path, formats.FORMATS[fmt], w, h, fps=25, time_base=TB, end=end, audio=audio,
                             **kwargs) as wr:
        for img, t in zip(images, times):
            wr.write(img, t)
    return Path(path)


def ffprobe_packets(path, stream="v:0") -> list[tuple[Fraction, Fraction]]:
    """(pts, duration) of each packet, in seconds, exact."""
    import json

    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
                          "stream=time_base:packet=pts,duration", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    tb = Fraction(data["streams"][0]["time_base"])
    return [(int(p["pts"]) * tb, int(p.get("duration", 0)) * tb) for p in data["packets"]]


def decode_rgb(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# ---------------------------------------------------------------------------------------------- choosing a format


@pytest.mark.parametrize("path,fmt,expect", [
    ("a.mp4", None, "h264"), ("a.MP4", None, "h264"), ("a.mp4", "h265", "h265"), ("a.mov", "h264", "h264"),
    ("a.webm", None, "vp9"), ("a.webm", "av1", "av1"), ("a.mp4", "av1", "av1"), ("a.mov", None, "prores"),
    ("a.gif", None, "gif"), ("frames/", None, "png"), ("frames", "png", "png"), ("a.restyled", "png", "png"),
])
def test_format_from_extension_or_flag(path, fmt, expect):
    assert formats.output_format(path, fmt).name == expect


@pytest.mark.parametrize("path,fmt,needle", [
    ("a.avi", None, ".avi is not a supported output"), ("a.mkv", None, ".webm"), ("a", None, "no extension"),
    ("a.mp4", "vp9", "--format vp9"), ("a.webm", "h264", ".mp4 or .mov"), ("a.gif", "prores", ".mov"),
    ("a.png", "png", "folder"), ("a.mp4", "png", "folder"), ("frames/", "h264", "PNG sequence"),
])
def test_unsupported_outputs_name_the_supported_ones(path, fmt, needle):
    with pytest.raises(OutputError) as e:
        formats.output_format(path, fmt)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_option_names_match_the_format_table():
    from v2v.options import OUTPUT_FORMATS

    assert tuple(formats.FORMATS) == OUTPUT_FORMATS


def test_existing_folder_is_a_png_sequence_and_its_contents_are_checked(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    seq = tmp_path / "seq"
    seq.mkdir()
    assert formats.output_format(seq).name == "png"
    assert check_output_path(src, seq) == seq.resolve()
    (seq / "clip_000000.png").write_bytes(b"")  # an earlier sequence may be replaced
    assert check_output_path(src, seq) == seq.resolve()
    (seq / "notes.txt").write_text("mine")  # anything else: refused, never deleted
    with pytest.raises(OutputError, match="holds other files"):
        check_output_path(src, seq)
    (tmp_path / "d.mp4").mkdir()  # a folder with a video extension is not a PNG target
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(src, tmp_path / "d.mp4")


def test_default_output_follows_the_format():
    src = Path("/videos/clip.mov")
    assert default_output(src) == Path("/videos/clip.restyled.mp4")
    assert default_output(src, "vp9") == Path("/videos/clip.restyled.webm")
    assert default_output(src, "prores") == Path("/videos/clip.restyled.mov")
    assert default_output(src, "gif") == Path("/videos/clip.restyled.gif")
    assert default_output(src, "png") == Path("/videos/clip.restyled")
    assert formats.output_format(default_output(src, "png"), "png").folder


def test_watch_names_outputs_by_format(tmp_path):
    from v2v.watch import Watcher

    w = Watcher(tmp_path, prompt="x", format="vp9")
    assert w.output_for(tmp_path / "a.mp4").name == "a.restyled.webm"
    assert w.output_for(tmp_path / "a.mp4", "gif").name == "a.restyled.gif"  # a sidecar's format wins
    assert Watcher(tmp_path, prompt="x").output_for(tmp_path / "a.mov").name == "a.restyled.mp4"


@pytest.mark.parametrize("fmt,crf,ok", [
    ("h264", 51, True), ("h264", 52, False), ("h265", 0, True), ("vp9", 63, True), ("vp9", 64, False),
    ("av1", 1, True), ("av1", 0, False), ("prores", 40, True), (None, 63, True), (None, -1, False),
])
def test_crf_scale_per_codec(fmt, crf, ok):
    problem = formats.crf_problem(formats.FORMATS.get(fmt), crf)
    assert (problem is None) == ok
    if not ok:
        assert "--crf" in problem


def test_crf_defaults_and_ignored_knobs(caplog):
    assert formats.crf_for(formats.FORMATS["h264"], None) == 18
    assert formats.crf_for(formats.FORMATS["vp9"], 33) == 33
    with caplog.at_level(logging.INFO, logger="v2v"):
        assert formats.crf_for(formats.FORMATS["prores"], 20) is None
    assert "does not apply to ProRes" in caplog.text


# ---------------------------------------------------------------------------------------------- encoded video


ENCODED = [  # format, file, codec, pixels, codec tag (None: not checked), audio codec from an AAC source
    ("h264", "o.mp4", "h264", "yuv420p", "avc1", "aac"),
    ("h264", "o.mov", "h264", "yuv420p", "avc1", "aac"),
    ("h265", "o.mp4", "hevc", "yuv420p", "hvc1", "aac"),
    ("vp9", "o.webm", "vp9", "yuv420p", None, "opus"),
    ("av1", "o.webm", "av1", "yuv420p", None, "opus"),
    ("av1", "o.mp4", "av1", "yuv420p", "av01", "aac"),
    ("prores", "o.mov", "prores", "yuv422p10le", "apch", "aac"),
]


@pytest.mark.parametrize("fmt,name,codec,pix_fmt,tag,acodec", ENCODED, ids=[f"{c[0]}-{c[1]}" for c in ENCODED])
def test_encoded_formats(fmt, name, codec, pix_fmt, tag, acodec, clip, tmp_path):
    out = write(tmp_path / name, fmt, audio=cut(clip), metadata={"comment": "v2v test"})
    p = media.ffprobe_streams(out)
    v, a = p["video"], p["audio"]
    assert v["codec_name"] == codec and v["pix_fmt"] == pix_fmt
    if tag:
        assert v["codec_tag_string"] == tag
    if fmt == "prores":
        assert v["profile"] == "HQ"
    assert (v["width"], v["height"]) == (W, H)
    got = media.ffprobe_frame_times(out)
    assert len(got) == len(TIMES)
    if name.endswith(".webm"):  # Matroska stores milliseconds
        assert max(abs(g - t) for g, t in zip(got, TIMES)) <= Fraction(1, 2000)
    else:  # mp4/mov: exact
        assert got == TIMES
        assert Fraction(v["duration"]) == END
    assert a is not None and a["codec_name"] == acodec
    assert abs(media.stream_duration(p, "audio") - END) < Fraction(3, 100)  # Opus counts its 20 ms frames
    assert p["format"]["tags"].get("comment", p["format"]["tags"].get("COMMENT")) == "v2v test"


@pytest.mark.parametrize("acodec,name,expect", [
    ("libvorbis", "o.webm", "vorbis"),  # webm holds Vorbis: copied, not made Opus
    ("libopus", "o.webm", "opus"),
    ("pcm_s16le", "o.mov", "pcm_s16le"),  # mov holds PCM: copied
    ("pcm_s16le", "o.mp4", "aac"),  # mp4 does not: AAC
    ("libmp3lame", "o.mov", "mp3"),  # the codec's name, not its decoder's (mp3float)
    ("libmp3lame", "o.mp4", "mp3"),
])
def test_audio_copied_where_the_container_holds_it(acodec, name, expect, tmp_path):
    src = media.make_video(tmp_path / ("src.mkv"), seconds=0.8, fps=25, size=(W, H), acodec=acodec,
                           sample_rate=48000 if acodec == "libopus" else 44100)
    info = probe.probe(src)
    fmt = formats.BY_EXTENSION[Path(name).suffix]
    p = media.ffprobe_streams(write(tmp_path / name, fmt, audio=cut(info)))
    assert p["audio"]["codec_name"] == expect
    assert abs(media.stream_duration(p, "audio") - END) < Fraction(5, 100)


@pytest.mark.parametrize("name", ["o.mp4", "o.mov"])
@pytest.mark.parametrize("rate", [8000, 11025])
def test_low_rate_mp3_is_transcoded_for_mp4(name, rate, tmp_path):
    """FFmpeg's MP4/MOV muxer refuses MP3 below 16 kHz: such audio becomes AAC at the same rate instead of the
    write failing (it did: "writing ... failed (Invalid argument)", exit 4)."""
    src = media.make_video(tmp_path / "src.mkv", seconds=0.8, fps=25, size=(W, H), acodec="libmp3lame",
                           sample_rate=rate)
    info = probe.probe(src)
    assert info.audio.sample_rate == rate
    fmt = formats.BY_EXTENSION[Path(name).suffix]
    p = media.ffprobe_streams(write(tmp_path / name, fmt, audio=cut(info)))
    assert p["audio"]["codec_name"] == "aac" and int(p["audio"]["sample_rate"]) == rate
    assert abs(media.stream_duration(p, "audio") - END) < Fraction(5, 100)


def test_opus_transcode_keeps_the_audio_in_place(tmp_path):
    """44.1 kHz AAC -> Opus at 48 kHz: the resampled audio starts with the video and lasts as long."""
    src = media.make_video(tmp_path / "src.mp4", seconds=0.8, fps=25, size=(W, H), sample_rate=44100)
    out = write(tmp_path / "o.webm", "vp9", audio=cut(probe.probe(src)))
    p = media.ffprobe_streams(out)
    assert p["audio"]["codec_name"] == "opus" and p["audio"]["sample_rate"] == "48000"
    with av.open(str(out)) as c:  # decoded samples: 0.54 s of audio at 48 kHz (pre-skip removed)
        samples = sum(f.samples for f in c.decode(audio=0))
    assert abs(samples - 48000 * END) <= 960  # one 20 ms Opus frame


def test_h264_mp4_goes_through_the_original_writer(tmp_path):
    """open_writer's default H.264 MP4 is VideoWriter itself: the same bytes as before output formats existed."""
    a = write(tmp_path / "a.mp4", "h264")
    with video_writer.VideoWriter(tmp_path / "b.mp4", W, H, fps=25, time_base=TB, end=END) as wr:
        for img, t in zip(frames(), TIMES):
            wr.write(img, t)
    assert a.read_bytes() == (tmp_path / "b.mp4").read_bytes()


# ---------------------------------------------------------------------------------------------- GIF


def gif_loop_count(path) -> int | None:
    """The NETSCAPE2.0 loop count in the file (None: no loop block, the GIF plays once)."""
    data = Path(path).read_bytes()
    i = data.find(b"NETSCAPE2.0")
    if i < 0:
        return None
    assert data[i + 11:i + 13] == b"\x03\x01"
    return int.from_bytes(data[i + 13:i + 15], "little")


def test_gif_schedule_bounds():
    """Every shown frame starts within 5 ms of its time; the total is within 5 ms; no delay under 2 cs."""
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 40)
        steps = [Fraction(rng.randint(5, 200), 1000) for _ in range(n)]  # 5 ms (200 fps) to 200 ms per frame
        times = [sum(steps[:i], Fraction(0)) for i in range(n)]
        end = times[-1] + steps[-1]
        sched = gif.gif_schedule(times, end)
        starts = np.cumsum([0] + [d for _, d in sched])
        assert all(d >= gif.MIN_GIF_DELAY for _, d in sched)
        assert [i for i, _ in sched] == sorted({i for i, _ in sched}) and sched[0][0] == 0
        for (i, _), s in zip(sched, starts):
            assert abs(Fraction(int(s), 100) - times[i]) <= Fraction(1, 200)
        if end >= Fraction(2, 100):
            assert abs(Fraction(int(starts[-1]), 100) - end) <= Fraction(1, 200)
        if all(s >= Fraction(25, 1000) for s in steps):  # slower than 40 frames/s: every frame shown
            assert len(sched) == n


def test_gif_schedule_examples():
    # 30 frames/s: delays 3, 3, 4 cs (rounding each delay would give 3 cs each: 10% fast, drifting)
    t30 = [Fraction(i, 30) for i in range(30)]
    sched = gif.gif_schedule(t30, Fraction(1))
    assert sum(d for _, d in sched) == 100 and {d for _, d in sched} == {3, 4}
    # 100 frames/s: every other frame (a 1 cs delay plays as 10 cs in browsers)
    t100 = [Fraction(i, 100) for i in range(10)]
    assert gif.gif_schedule(t100, Fraction(1, 10)) == [(i, 2) for i in range(0, 10, 2)]
    assert gif.gif_schedule([Fraction(0)], Fraction(1, 1000)) == [(0, 2)]  # a lone short frame: 2 cs


def test_gif_written(clip, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="v2v"):
        out = write(tmp_path / "o.gif", "gif", audio=cut(clip))
    assert caplog.text.count("holds no audio") == 1
    p = media.ffprobe_streams(out)
    assert p["video"]["codec_name"] == "gif" and p["audio"] is None
    assert (p["video"]["width"], p["video"]["height"]) == (W, H)
    assert Path(out).read_bytes()[10] & 0x80  # a global colour table: one palette for the clip
    packets = ffprobe_packets(out)
    sched = gif.gif_schedule(TIMES, END)
    assert len(packets) == len(sched) == len(TIMES)
    for (pts, dur), (i, delay) in zip(packets, sched):
        assert abs(pts - TIMES[i]) <= Fraction(1, 200) and dur == Fraction(delay, 100)
    assert abs(sum(d for _, d in packets) - END) <= Fraction(1, 200)
    assert gif_loop_count(out) == 0  # forever
    # the palette keeps the picture: decoded frames close to what was written
    for got, img in zip(decode_rgb(out), frames()):
        assert np.abs(got.astype(int) - img).mean() < 6


@pytest.mark.parametrize("plays,count", [(0, 0), (1, None), (2, 1), (5, 4)])
def test_gif_loop(plays, count, tmp_path):
    out = write(tmp_path / "o.gif", "gif", times=TIMES[:3], end=TIMES[3], gif_loop=plays)
    assert gif_loop_count(out) == count


# ---------------------------------------------------------------------------------------------- PNG sequence


def test_png_sequence_is_lossless(clip, tmp_path, caplog):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(5)]  # noise: no codec hides it
    folder = tmp_path / "seq"
    with caplog.at_level(logging.INFO, logger="v2v"):
        write(folder, "png", times=TIMES[:5], images=images, audio=cut(clip), name="clip")
    assert caplog.text.count("holds no audio") == 1
    assert sorted(p.name for p in folder.iterdir()) == [f"clip_{i:06d}.png" for i in range(5)]
    for i, img in enumerate(images):
        assert np.array_equal(cv2.imread(str(folder / f"clip_{i:06d}.png"))[:, :, ::-1], img)


def test_png_sequence_replaces_an_earlier_one_atomically(tmp_path):
    target = tmp_path / "seq"
    for n in (6, 3):  # the second, shorter run leaves none of the first run's frames
        with atomic_output(target) as tmp:
            write(tmp, "png", times=TIMES[:n], name="clip")
        assert sorted(p.name for p in target.iterdir()) == [f"clip_{i:06d}.png" for i in range(n)]
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:  # a failure: the old one stays, no temp left
        write(tmp, "png", times=TIMES[:2], name="clip")
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"] and len(list(target.iterdir())) == 3


# ---------------------------------------------------------------------------------------------- ping-pong


def test_ping_pong_times():
    times = [Fraction(0), Fraction(1, 10), Fraction(25, 100), Fraction(3, 10)]
    order, end = wrappers.ping_pong_times(times, Fraction(4, 10))
    assert [i for i, _ in order] == [0, 1, 2, 3, 2, 1]
    assert end == Fraction(4, 10) + Fraction(3, 10) - Fraction(1, 10)
    ts = [t for _, t in order] + [end]
    shown = [b - a for a, b in zip(ts, ts[1:])]
    forward = [b - a for a, b in zip(times + [Fraction(4, 10)], times[1:] + [Fraction(4, 10)])]
    assert shown[4:] == [forward[2], forward[1]]  # each frame keeps its own length on the way back
    assert wrappers.ping_pong_times(times[:2], Fraction(2, 10)) == (list(enumerate(times[:2])), Fraction(2, 10))


def test_ping_pong_png_reverses_the_frames(tmp_path):
    images = frames(5)
    write(tmp_path / "seq", "png", times=TIMES[:5], images=images, ping_pong=True, name="f")
    files = sorted((tmp_path / "seq").iterdir())
    assert len(files) == 8
    for f, i in zip(files, [0, 1, 2, 3, 4, 3, 2, 1]):
        assert np.array_equal(cv2.imread(str(f))[:, :, ::-1], images[i])


def test_ping_pong_gif_and_mp4(clip, tmp_path):
    n = 6
    order, end = wrappers.ping_pong_times(TIMES[:n], TIMES[n])
    gif = write(tmp_path / "o.gif", "gif", times=TIMES[:n], end=TIMES[n], ping_pong=True)
    levels = [f[:, :, 1].mean() for f in decode_rgb(gif)]  # the green level rises with the frame index
    written = [f[:, :, 1].mean() for f in frames(n)]
    assert len(levels) == 2 * n - 2
    assert all(abs(levels[k] - written[i]) < 2 for k, (i, _) in enumerate(order))
    mp4 = write(tmp_path / "o.mp4", "h264", times=TIMES[:n], end=TIMES[n], ping_pong=True,
                audio=cut(clip, TIMES[n]))
    assert media.ffprobe_frame_times(mp4) == [t for _, t in order]
    p = media.ffprobe_streams(mp4)
    assert Fraction(p["video"]["duration"]) == end
    assert abs(media.stream_duration(p, "audio") - TIMES[n]) < Fraction(3, 100)  # audio: the forward half


# ---------------------------------------------------------------------------------------------- full size


def test_scale_image_filters():
    img = frames(1, 64, 48)[0]
    assert wrappers.scale_image(img, 64, 48) is img
    up, down = wrappers.scale_image(img, 131, 97), wrappers.scale_image(img, 33, 25)
    assert up.shape == (97, 131, 3) and down.shape == (25, 33, 3)
    # area averaging when shrinking: a 2x2 block mean, exactly
    flat = np.arange(16, dtype=np.uint8).reshape(4, 4).repeat(3).reshape(4, 4, 3) * 10
    assert np.array_equal(wrappers.scale_image(flat, 2, 2)[0, 0], np.full(3, round(np.mean([0, 10, 40, 50]))))


def test_even_size(caplog):
    with caplog.at_level(logging.INFO, logger="v2v"):
        assert formats.even_size(67, 45, formats.FORMATS["h264"]) == (66, 44)
    assert "67x45 is odd" in caplog.text
    assert formats.even_size(67, 45, formats.FORMATS["gif"]) == (67, 45)
    assert formats.even_size(66, 44, formats.FORMATS["vp9"]) == (66, 44)


# ---------------------------------------------------------------------------------------------- through restyle


@pytest.fixture(scope="module")
def restyler(tiny_models):
    return v2v.Restyler(models="tiny", size=64, show_progress=False, pose_cache=False)


@pytest.fixture(scope="module")
def odd_clip(tmp_path_factory) -> Path:
    """67x45 (odd both ways; 4:4:4 allows it), 12 frames, AAC."""
    return media.make_video(tmp_path_factory.mktemp("odd") / "odd.mp4", seconds=0.48, fps=25, size=(80, 64),
                            pix_fmt="yuv444p", extra=("-vf", "format=yuv444p,crop=67:45:0:0"))


def test_compare_full_size_and_pose_format(odd_clip, restyler, tmp_path, caplog):
    assert media.ffprobe_streams(odd_clip)["video"]["width"] == 67
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO, logger="v2v"):
        r = restyler.restyle(odd_clip, out, prompt="x", full_size=True, compare=True,
                             keep_pose=tmp_path / "pose.webm")
    assert "67x45 is odd" in caplog.text
    p = media.ffprobe_streams(out)
    assert (p["video"]["width"], p["video"]["height"]) == (66, 44) == (r.width, r.height)
    cmp = tmp_path / "out.compare.mp4"
    assert r.compare_output == cmp.resolve()
    c = media.ffprobe_streams(cmp)
    pw, ph = timing.processing_size(67, 45, 64)
    assert (c["video"]["width"], c["video"]["height"]) == (3 * pw, ph)
    assert media.ffprobe_frame_times(cmp) == media.ffprobe_frame_times(out)
    assert len(media.ffprobe_frame_times(cmp)) == 12
    assert c["audio"]["codec_name"] == "aac"
    assert media.ffprobe_streams(tmp_path / "pose.webm")["video"]["codec_name"] == "vp9"
    # the left third is the source (decoded again), the right third the result
    info = probe.probe(odd_clip)
    src = [f.image for f in decode.Decoder(info, pw, ph)]
    got = decode_rgb(cmp)
    res = decode_rgb(out)
    for g, s, rr in zip(got, src, res):
        assert np.abs(g[:, :pw].astype(int) - s).mean() < 8
        # the result went through --full-size's scaling and back and two encodes (the tiny models' frames are
        # full of fine detail, which that blurs): far nearer the result than the source, not equal to it
        right = g[:, 2 * pw:].astype(int)
        assert np.abs(right - wrappers.scale_image(rr, pw, ph)).mean() < np.abs(right - s).mean() / 3
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.compare.mp4", "out.json", "out.mp4", "pose.webm"]


def _moving_person_json(path: Path, n: int, width: int, height: int) -> list:
    """--pose-json of ``n`` frames (source pixels): one person, a column of keypoints that moves right by a few
    pixels a frame, so each frame's pose map differs from its neighbours'."""
    from v2v.pose import FramePose, Person, save_pose_json

    frames = []
    for i in range(n):
        body = np.zeros((18, 3), np.float32)
        body[:, 0] = 8 + i * (width - 16) / max(n - 1, 1)
        body[:, 1] = np.linspace(4, height - 4, 18)
        body[:, 2] = 1.0
        frames.append(FramePose([Person(body)], width, height))
    save_pose_json(path, frames)
    return frames


def test_compare_middle_third_is_the_pose_map_of_the_same_frame(restyler, tmp_path):
    """restyle(compare=True): the compare video's middle third is each frame's own pose map (drawn on the
    composing worker from the run's poses), not a neighbour's, and the --keep-pose maps are the same; every
    worker thread and the source decode's prefetch thread have ended when restyle() returns."""
    import threading

    from v2v.pose import render_pose

    clip = media.make_video(tmp_path / "clip.mp4", seconds=0.48, fps=25, size=(96, 64))
    given = _moving_person_json(tmp_path / "poses.json", 12, 96, 64)
    r = restyler.restyle(clip, tmp_path / "out.mp4", prompt="x", compare=True, pose_json=tmp_path / "poses.json",
                         pose_smoothing=0, keep_pose=f"{tmp_path / 'maps'}/")
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("v2v-encode-", "v2v-prefetch"))]
    pw, ph = timing.processing_size(96, 64, 64)
    want = [render_pose(g.scaled(pw, ph), pw, ph) for g in given]
    assert all(w.any() for w in want)
    got = decode_rgb(r.compare_output)
    assert len(got) == 12 and got[0].shape == (ph, 3 * pw, 3)
    for i, g in enumerate(got):
        diffs = [np.abs(g[:, pw:2 * pw].astype(int) - w).mean() for w in want]
        assert int(np.argmin(diffs)) == i and diffs[i] < 4, (i, diffs)
    pngs = sorted((tmp_path / "maps").iterdir())  # --keep-pose as a PNG folder, renamed with the others
    assert len(pngs) == 12 and all(np.array_equal(cv2.imread(str(p))[:, :, ::-1], w) for p, w in zip(pngs, want))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["clip.mp4", "maps", "out.compare.mp4", "out.json",
                                                         "out.mp4", "poses.json"]


def test_compare_input_changed_at_the_last_frame_keeps_no_output(restyler, tmp_path, monkeypatch):
    """The input's last frame no longer matches when --compare decodes it again: the composing worker finds it
    after the last write, so the error comes from close, after generation. The run fails and leaves nothing:
    not the output, the compare video, the sidecar, nor the --keep-pose video (which is written once generation
    is done, but renamed only with the others, once the writers have closed)."""
    import dataclasses

    import v2v.stages.encode as P

    clip = media.make_video(tmp_path / "clip.mp4", seconds=0.48, fps=25, size=(96, 64))
    _moving_person_json(tmp_path / "poses.json", 12, 96, 64)
    real = P.prefetch

    def changed(frames):  # (with --pose-json, only --compare's decode is prefetched)
        for f in frames:
            yield dataclasses.replace(f, time=f.time + Fraction(1, 1000)) if f.index == 11 else f

    monkeypatch.setattr(P, "prefetch", lambda it, depth: real(changed(it), depth))
    with pytest.raises(VideoDecodeError, match="input changed"):
        restyler.restyle(clip, tmp_path / "out.mp4", prompt="x", compare=True, pose_json=tmp_path / "poses.json",
                         keep_pose=tmp_path / "pose.mp4")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["clip.mp4", "poses.json"]


def test_full_size_gif_keeps_odd_sides(odd_clip, restyler, tmp_path):
    r = restyler.restyle(odd_clip, tmp_path / "o.gif", prompt="x", full_size=True, max_frames=4)
    v = media.ffprobe_streams(r.output)["video"]
    assert (v["width"], v["height"]) == (67, 45)


def test_full_size_follows_rotation(restyler, tmp_path):
    src = media.make_video(tmp_path / "phone.mp4", seconds=0.2, fps=25, size=(64, 48), rotation=90)
    r = restyler.restyle(src, tmp_path / "o.webm", prompt="x", full_size=True)
    v = media.ffprobe_streams(r.output)["video"]
    assert (v["width"], v["height"]) == (48, 64) and media.display_rotation(r.output) == 0


def test_png_output_through_restyle(odd_clip, restyler, tmp_path):
    r = restyler.restyle(odd_clip, str(tmp_path / "frames") + "/", prompt="x", max_frames=3)
    assert r.output == (tmp_path / "frames").resolve()
    assert sorted(p.name for p in r.output.iterdir()) == [f"odd_{i:06d}.png" for i in range(3)]
    assert cv2.imread(str(r.output / "odd_000000.png")).shape == (r.height, r.width, 3)


def test_output_checks_come_before_any_work(odd_clip, restyler, tmp_path):
    with pytest.raises(InvalidOptions, match="--crf for H.264"):
        restyler.restyle(odd_clip, tmp_path / "o.mp4", prompt="x", crf=60)
    with pytest.raises(InvalidOptions, match="--gif-loop"):
        restyler.restyle(odd_clip, tmp_path / "o.mp4", prompt="x", gif_loop=3)
    with pytest.raises(OutputError, match="not a supported output"):
        restyler.restyle(odd_clip, tmp_path / "o.avi", prompt="x")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- the command


def run_v2v(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return media.run_v2v(*args, env=env, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args,code,needle", [
    (["-o", "{d}/o.avi"], 4, ".avi is not a supported output"),
    (["-o", "{d}/o.mp4", "--format", "vp9"], 4, "--format vp9"),
    (["-o", "{d}/o.webm", "--crf", "64"], 2, "--crf"),
])
def test_cli_output_errors(odd_clip, tmp_path, args, code, needle):
    r = run_v2v("restyle", odd_clip, "-p", "x", "--models", "tiny", *[a.format(d=tmp_path) for a in args])
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("v2v: input")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_maps_the_output_options(odd_clip, tmp_path, tiny_models):
    out = tmp_path / "o.mp4"
    r = run_v2v("restyle", odd_clip, "-p", "x", "--models", "tiny", "--size", "64", "--max-frames", "5", "-o", out,
                "--format", "h265", "--crf", "30", "--ping-pong", "--compare", "--full-size", "--quiet")
    assert r.returncode == 0, r.stderr
    v = media.ffprobe_streams(out)["video"]
    assert v["codec_name"] == "hevc" and (v["width"], v["height"]) == (66, 44)
    assert len(media.ffprobe_frame_times(out)) == 8  # 5 forward, 3 back
    assert len(media.ffprobe_frame_times(tmp_path / "o.compare.mp4")) == 5


def test_pose_video_follows_its_extension(odd_clip, restyler, tmp_path):
    r = restyler.pose(odd_clip, tmp_path / "pose.gif", max_frames=4)
    v = media.ffprobe_streams(r.output)
    assert v["video"]["codec_name"] == "gif" and v["audio"] is None
    assert len(media.ffprobe_frame_times(r.output)) == 4
    r = restyler.pose(odd_clip, str(tmp_path / "maps") + "/", max_frames=2)
    assert sorted(p.name for p in r.output.iterdir()) == ["pose_000000.png", "pose_000001.png"]


def test_encoder_queue_cap_counts_the_frames_as_written_at_full_size(restyler, tmp_path, monkeypatch):
    """The encoder's queue (room for a segment's frames) holds at most the byte cap of frames as the writer gets
    them: with --full-size those are the source's size, not the processing size."""
    import v2v.stages.encode as P

    src = media.make_video(tmp_path / "big.mp4", seconds=0.8, fps=25, size=(192, 256))
    seen = []
    real_init = video_writer.VideoWriter.__init__

    def init(self, path, width, height, **kw):
        seen.append((width, height, kw.get("queue_frames", 16)))
        real_init(self, path, width, height, **kw)

    monkeypatch.setattr(video_writer.VideoWriter, "__init__", init)
    cap = 40 * 64 * 88 * 3  # room for 40 frames at the processing size, for 1 at the source's
    monkeypatch.setattr(P.queue_frames, "__defaults__", (cap,))
    r = restyler.restyle(src, tmp_path / "o.mp4", prompt="x", full_size=True, frame_budget=40)
    assert (r.width, r.height) == (192, 256)
    (w, h, q), = seen
    assert (w, h) == (192, 256)
    assert q == 16 or q * w * h * 3 <= cap, q  # the floor, or within the cap


def _planes(frame) -> list[np.ndarray]:
    """A planar YUV frame's planes as arrays (uint16 for 10-bit formats), without the rows' padding."""
    dtype = np.uint16 if frame.format.name.endswith("10le") else np.uint8
    return [np.frombuffer(bytes(p), dtype).reshape(p.height, -1)[:, :p.width] for p in frame.planes]


@pytest.mark.parametrize("fmt,pix_fmt", [("h264", "yuv420p"), ("prores", "yuv422p10le")])
def test_writer_colour_conversion_equals_ffmpegs(tmp_path, fmt, pix_fmt):
    """The writers' RGB -> BT.709 limited-range YUV conversion, 8-bit and 10-bit (ProRes), equals the ffmpeg
    command line's, value for value, on a smooth and a noisy image; a flat colour stays flat. (FFmpeg 8's threaded
    swscale, PyAV's default, wrote wrong values into the first pixels of each slice's first row in 10-bit.)"""
    w, h = 200, 144
    ext = formats.FORMATS[fmt].extensions[0]
    wr = writers.open_writer(tmp_path / f"o{ext}", formats.FORMATS[fmt], w, h, fps=24, time_base=Fraction(1, 24),
                             end=Fraction(1, 24))
    try:
        assert wr._pix_fmt == pix_fmt
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.dstack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (w + h - 2)])
        noisy = np.random.default_rng(5).integers(0, 256, (h, w, 3))
        flat = np.broadcast_to(np.array([200, 80, 30]), (h, w, 3))
        for img in (smooth, noisy, flat):
            img = np.ascontiguousarray(img, dtype=np.uint8)
            ours = _planes(wr._convert(writer_base.rgb_frame(img)))
            if np.array_equal(img, np.broadcast_to(img[0, 0], img.shape)):  # the flat colour
                assert all(p.min() == p.max() for p in ours), [(p.min(), p.max()) for p in ours]
            if shutil.which("ffmpeg"):
                raw = tmp_path / "in.rgb"
                raw.write_bytes(img.tobytes())
                ref = subprocess.run(["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                                      "-i", str(raw), "-filter_threads", "1", "-vf",
                                      f"scale=out_color_matrix=bt709:out_range=tv:flags=bilinear,format={pix_fmt}",
                                      "-f", "rawvideo", "-"], check=True, capture_output=True).stdout
                frame = av.VideoFrame(w, h, pix_fmt)
                sizes = [p.height * (p.width * (2 if pix_fmt.endswith("10le") else 1)) for p in frame.planes]
                assert len(ref) == sum(sizes)
                dtype = np.uint16 if pix_fmt.endswith("10le") else np.uint8
                at = 0
                for plane, ours_p, size in zip(frame.planes, ours, sizes):
                    theirs = np.frombuffer(ref[at:at + size], dtype).reshape(plane.height, plane.width)
                    at += size
                    assert np.array_equal(ours_p, theirs), np.argwhere(ours_p != theirs)[:5]
    finally:
        wr.abort()  # nothing written: close() would say so


def _writer_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("v2v-encode-")]


def test_png_sequence_threaded_same_files_and_the_caller_may_reuse_its_array(tmp_path):
    """Threaded, the PNGs are compressed on a worker: the same files as in line, written from the caller's copy
    (it overwrites its one array after every write), all written by close, and no thread left."""
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(12)]
    plain = png.PngSequenceWriter(tmp_path / "plain", 40, 24)
    threaded = png.PngSequenceWriter(tmp_path / "thr", 40, 24, threaded=True, queue_frames=2)
    assert len(_writer_threads()) == 1
    buf = np.empty((24, 40, 3), np.uint8)
    for i, img in enumerate(images):
        plain.write(img, Fraction(i, 25))
        buf[...] = img
        threaded.write(buf, Fraction(i, 25))
        buf[...] = 0
    plain.close()
    threaded.close()
    assert _writer_threads() == []
    names = [f"frame_{i:06d}.png" for i in range(12)]
    assert sorted(p.name for p in (tmp_path / "thr").iterdir()) == names
    for name, img in zip(names, images):
        assert (tmp_path / "thr" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
        assert np.array_equal(cv2.imread(str(tmp_path / "thr" / name))[:, :, ::-1], img)


@pytest.fixture
def imwrite_fails_at(monkeypatch):
    """fails_at(k): cv2.imwrite fails (returns False) at its k-th call from now; the calls' paths are returned,
    and ``fails_at(None)`` puts the real one back."""
    real = cv2.imwrite

    def fails_at(k):
        calls = []

        def imwrite(path, image, *a):
            calls.append(path)
            return False if len(calls) == k else real(path, image, *a)

        monkeypatch.setattr(cv2, "imwrite", real if k is None else imwrite)
        return calls

    return fails_at


def test_png_sequence_threaded_errors_come_back_and_leave_no_thread(tmp_path, imwrite_fails_at):
    """A file that fails on the worker comes back as OutputError from the next write or from close; a checked
    error (shape, time) at once; leaving a with block on an exception stops the worker."""
    img = np.zeros((16, 16, 3), np.uint8)
    calls = imwrite_fails_at(3)
    wr = png.PngSequenceWriter(tmp_path / "a", 16, 16, threaded=True, queue_frames=1)
    with pytest.raises(OutputError, match="writing frame_000002.png failed") as e:
        for i in range(100):
            wr.write(img, Fraction(i, 25))
    assert "\n" not in str(e.value) and len(calls) == 3  # nothing written after the failure
    assert _writer_threads() == []
    with pytest.raises(OutputError, match="already closed"):
        wr.write(img, Fraction(200, 25))
    calls = imwrite_fails_at(3)
    with pytest.raises(OutputError, match="frame_000002.png"):  # the last frame fails: close says so
        with png.PngSequenceWriter(tmp_path / "b", 16, 16, threaded=True) as wr:
            for i in range(3):
                wr.write(img, Fraction(i, 25))
    assert _writer_threads() == []
    imwrite_fails_at(None)
    with pytest.raises(KeyboardInterrupt):
        with png.PngSequenceWriter(tmp_path / "c", 16, 16, threaded=True, queue_frames=2) as wr:
            for i in range(10):
                wr.write(img, Fraction(i, 25))
            with pytest.raises(ValueError):
                wr.write(np.zeros((8, 16, 3), np.uint8), Fraction(20, 25))
            raise KeyboardInterrupt
    assert _writer_threads() == []
    with pytest.raises(InvalidOptions):
        png.PngSequenceWriter(tmp_path / "d", 16, 16, queue_frames=0)


def _write_from_one_array(wr, images, refused):
    """Write ``images`` at 1/25 s apart from one array the caller overwrites after every write; then a frame of
    the wrong shape (``refused``) and one out of time order must be refused at once (ValueError)."""
    buf = np.empty_like(images[0])
    for i, img in enumerate(images):
        buf[...] = img
        wr.write(buf, Fraction(i, 25))
        buf[...] = 0
    with pytest.raises(ValueError, match="shape"):
        wr.write(refused, Fraction(len(images) + 4, 25))
    with pytest.raises(ValueError, match="increase"):
        wr.write(images[0], Fraction(1, 25))


@pytest.mark.parametrize("fmt,ping_pong", [("h264", False), ("png", True)])
def test_scaled_threaded_same_output_and_the_caller_may_reuse_its_array(tmp_path, fmt, ping_pong):
    """--full-size's scaling on a worker (open_writer(threaded=True)): the same output as in line, each frame the
    Lanczos-scaled image, from the caller's copy (it overwrites its one array after every write); shape and time
    errors at once; no thread left."""
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(6)]
    spec = formats.FORMATS[fmt]
    outs = {}
    for threaded in (False, True):
        path = tmp_path / (f"t{int(threaded)}" + ("" if fmt == "png" else ".mp4"))
        wr = writers.open_writer(path, spec, 32, 24, fps=25, time_base=Fraction(1, 25), end=Fraction(6, 25),
                                 size=(80, 60), ping_pong=ping_pong, threaded=threaded, queue_frames=2)
        _write_from_one_array(wr, images, refused=np.zeros((60, 80, 3), np.uint8))  # already at the written size
        wr.close()
        outs[threaded] = path
    assert _writer_threads() == []
    if fmt == "png":
        files = sorted(outs[True].iterdir())
        order, _ = wrappers.ping_pong_times([Fraction(i, 25) for i in range(6)], Fraction(6, 25))
        assert [f.name for f in files] == sorted(f.name for f in outs[False].iterdir()) and len(files) == len(order)
        for f in files:
            assert f.read_bytes() == (outs[False] / f.name).read_bytes()
        for f, (i, _) in zip(files, order):  # forward, then back
            assert np.array_equal(cv2.imread(str(f))[:, :, ::-1], wrappers.scale_image(images[i], 80, 60))
    else:
        assert outs[True].read_bytes() == outs[False].read_bytes()
        assert media.ffprobe_frame_times(outs[True]) == [Fraction(i, 25) for i in range(6)]


def test_scaled_threaded_inner_error_comes_back_and_leaves_no_thread(tmp_path, imwrite_fails_at):
    img = np.zeros((24, 32, 3), np.uint8)
    calls = imwrite_fails_at(2)
    wr = writers.open_writer(tmp_path / "s", formats.FORMATS["png"], 32, 24, fps=25, time_base=Fraction(1, 25),
                             end=None, size=(64, 48), threaded=True, queue_frames=1)
    with pytest.raises(OutputError, match="writing frame_000001.png failed"):
        for i in range(100):
            wr.write(img, Fraction(i, 25))
    assert len(calls) == 2 and _writer_threads() == []
    with pytest.raises(OutputError, match="already closed"):
        wr.write(img, Fraction(200, 25))
    imwrite_fails_at(None)
    with pytest.raises(KeyboardInterrupt):
        with writers.open_writer(tmp_path / "k.mp4", formats.FORMATS["h264"], 32, 24, fps=25,
                                 time_base=Fraction(1, 25), end=None, size=(64, 48), threaded=True) as wr:
            for i in range(10):
                wr.write(img, Fraction(i, 25))
            raise KeyboardInterrupt
    assert _writer_threads() == []


@pytest.mark.parametrize("fmt", ["h264", "png"])
def test_ctrl_c_while_close_waits_for_the_workers_leaves_no_thread(tmp_path, monkeypatch, fmt):
    """Ctrl-C (a real SIGINT) while close() waits for the --full-size scaler's queue to drain: the interrupt comes
    back, and neither the scaler's thread nor the inner writer's is left behind (a join interrupted on 3.11 marks
    its thread ended while it still runs, so the workers are awaited by an event of their own)."""
    import signal
    import threading
    import time

    real = wrappers.Scaled._job

    def slow(self, image, t):
        time.sleep(0.1)
        real(self, image, t)

    monkeypatch.setattr(wrappers.Scaled, "_job", slow)
    img = np.zeros((24, 32, 3), np.uint8)
    path = tmp_path / ("o" if fmt == "png" else "o.mp4")
    interrupted = False
    try:
        with writers.open_writer(path, formats.FORMATS[fmt], 32, 24, fps=25, time_base=Fraction(1, 25), end=None,
                                 size=(64, 48), threaded=True, queue_frames=16) as wr:
            for i in range(12):
                wr.write(img, Fraction(i, 25))
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(3)  # (had close ended first, the interrupt would land here, still inside the try)
    except KeyboardInterrupt:
        interrupted = True
    assert interrupted
    assert _writer_threads() == []


class _Source:
    """A decoded source frame as CompareWriter reads them (time, image)."""

    def __init__(self, time, image):
        self.time, self.image = time, image


def _sources(images, t0, bad_at=None):
    for i, img in enumerate(images):
        yield _Source(t0 + Fraction(i + (1 if i == bad_at else 0), 25), img)


def _pose_map(i):
    img = np.zeros((24, 32, 3), np.uint8)
    img[i % 24, :, 1] = 255  # a line that moves with the frame
    return img


def _compare_writer(path, images, threaded, bad_at=None, queue_frames=2):
    inner = writers.open_writer(path, formats.FORMATS["h264"], 3 * 32, 24, fps=25, time_base=Fraction(1, 25),
                                end=None, threaded=threaded)
    t0 = Fraction(3, 25)
    return wrappers.CompareWriter(inner, _sources(images, t0, bad_at), _pose_map, t0, threaded=threaded,
                                 queue_frames=queue_frames)


def test_compare_threaded_same_video_and_the_caller_may_reuse_its_array(tmp_path):
    """--compare's composition (source | pose map | result) on a worker: the same file as in line, from the
    caller's copy (it overwrites its one array after every write); shape and time errors at once; no thread
    left."""
    rng = np.random.default_rng(6)
    sources = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]
    results = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]
    outs = {}
    for threaded in (False, True):
        path = tmp_path / f"c{int(threaded)}.mp4"
        wr = _compare_writer(path, sources, threaded)
        assert len(_writer_threads()) == (2 if threaded else 0)  # composition, then the encoder
        _write_from_one_array(wr, results, refused=np.zeros((24, 96, 3), np.uint8))  # already side by side
        wr.close()
        outs[threaded] = path
    assert _writer_threads() == []
    assert outs[True].read_bytes() == outs[False].read_bytes()
    assert media.ffprobe_frame_times(outs[True]) == [Fraction(i, 25) for i in range(8)]
    with av.open(str(outs[True])) as c:  # the pose map's line is in the middle third, where frame 5 put it
        frame = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][5]
    middle = frame[:, 32:64, 1].astype(int)
    assert middle.mean(axis=1).argmax() == 5


@pytest.mark.parametrize("threaded", [False, True])
def test_compare_input_changed_is_reported_and_leaves_no_thread(tmp_path, threaded):
    """A source frame whose time no longer matches (the input changed during the run) is a VideoDecodeError: at
    that write in line, from a later write or from close when threaded; the writers end, no thread left."""
    images = [np.zeros((24, 32, 3), np.uint8)] * 6
    wr = _compare_writer(tmp_path / "c.mp4", images, threaded, bad_at=3, queue_frames=1)
    with pytest.raises(VideoDecodeError, match="input changed"):
        with wr:
            for i in range(6):
                wr.write(images[i], Fraction(i, 25))
    assert _writer_threads() == []
    with pytest.raises(OutputError, match="already closed"):
        wr.write(images[0], Fraction(10, 25))


def test_ctrl_c_while_compare_waits_for_its_worker_is_an_interrupt_and_leaves_no_thread(tmp_path):
    """Ctrl-C (a real SIGINT) while close() waits for --compare's worker, which is reading the source decode: the
    interrupt comes back as it is (closing the decode while the worker runs it would raise over it), the decode
    is stopped once the worker has ended, and no thread is left."""
    import signal
    import threading
    import time

    stopped = []

    def slow_sources(t0):
        try:
            for i in range(100):
                time.sleep(0.1)  # the worker spends its time inside the decode
                yield _Source(t0 + Fraction(i, 25), np.zeros((24, 32, 3), np.uint8))
        finally:
            stopped.append(True)

    inner = writers.open_writer(tmp_path / "c.mp4", formats.FORMATS["h264"], 96, 24, fps=25,
                                time_base=Fraction(1, 25), end=None, threaded=True)
    t0 = Fraction(0)
    interrupted = False
    try:
        with wrappers.CompareWriter(inner, slow_sources(t0), _pose_map, t0, threaded=True, queue_frames=16) as wr:
            for i in range(12):
                wr.write(np.zeros((24, 32, 3), np.uint8), Fraction(i, 25))
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(3)  # (had close ended first, the interrupt would land here, still inside the try)
    except KeyboardInterrupt:
        interrupted = True
    assert interrupted and stopped == [True]
    assert _writer_threads() == []


class _FailingInner(writer_base.ClosingWriter):
    """An inner writer (96x24) whose write fails at frame ``fail_at``; records what it was told."""

    def __init__(self, path, fail_at=None):
        self.path, self.width, self.height, self.end = Path(path), 96, 24, None
        self.fail_at, self.frames, self.calls = fail_at, 0, []

    def write(self, image, time):
        if self.frames == self.fail_at:
            raise OutputError(f"writing {self.path.name} failed (test); check free disk space")
        self.frames += 1

    def close(self):
        self.calls.append("close")

    def abort(self):
        self.calls.append("abort")


@pytest.mark.parametrize("case", ["closed", "input changed", "inner failed", "aborted"])
def test_compare_with_a_prefetched_source_leaves_no_thread(tmp_path, case):
    """CompareWriter reading a real prefetch() decode (as the pipeline's): whether it closes, finds the input
    changed, gets the inner writer's error or is aborted mid-way, the composing worker and the prefetch thread
    have ended, and the inner writer is closed or aborted as it should be."""
    import threading

    from v2v.streams import prefetch

    def alive():
        return [t.name for t in threading.enumerate() if t.name.startswith(("v2v-encode-", "v2v-prefetch"))]

    images = [np.full((24, 32, 3), i, np.uint8) for i in range(40)]
    srcs = list(_sources(images, Fraction(0), bad_at=5 if case == "input changed" else None))
    inner = _FailingInner(tmp_path / "c.mp4", fail_at=5 if case == "inner failed" else None)
    wr = wrappers.CompareWriter(inner, prefetch(iter(srcs), depth=4), _pose_map, Fraction(0), threaded=True,
                               queue_frames=2)
    expect = {"closed": None, "input changed": VideoDecodeError, "inner failed": OutputError,
              "aborted": KeyboardInterrupt}[case]
    try:
        with wr:
            for i in range(12):  # of 40 source frames: the decode is left part-way
                if case == "aborted" and i == 6:
                    raise KeyboardInterrupt
                wr.write(images[i], Fraction(i, 25))
        got = None
    except BaseException as e:  # noqa: BLE001 - checked below
        got = type(e)
    assert got is expect
    assert alive() == []
    assert inner.calls[-1:] == (["close"] if case == "closed" else ["abort"]) and "close" not in inner.calls[:-1]
    assert inner.frames == 12 if case == "closed" else inner.frames <= 6 if case == "aborted" else inner.frames == 5
