"""v2v.media: probe, decode, the video writer, audio, timestamp maths; ffprobe is the judge."""

from __future__ import annotations

import errno
import logging
import random
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from v2v.media import decode
from v2v.media import probe
from v2v.media import pyav
from v2v.media import timing
from v2v.media.writers import base as writer_base
from v2v.media.writers import video as video_writer
from v2v.errors import (
    EmptyInput,
    InputNotFound,
    InvalidOptions,
    NoVideoStream,
    OutputError,
    VideoDecodeError,
)

import media

pytestmark = pytest.mark.skipif(not media.HAVE_FFMPEG, reason="needs the ffmpeg/ffprobe binaries")


# ---------------------------------------------------------------------------------------------
# helpers


def roundtrip(src, out, *, size=48, **opts):
    """probe -> Decoder -> VideoWriter (identity images) with the audio of the kept span."""
    info = probe.probe(src)
    w, h = timing.processing_size(info.display_width, info.display_height, size=size)
    dec = decode.Decoder(info, w, h, **opts)
    out_fps = dec.fps or info.fps / dec.every_nth
    # a resampled grid needs a time base that holds k/fps exactly
    time_base = 1 / dec.fps if dec.fps else info.time_base
    frames = []
    for fr in dec:  # first pass: the span (the pipeline also knows it before it encodes)
        assert fr.image.shape == (h, w, 3) and fr.image.dtype == np.uint8
        frames.append((fr.index, fr.source_index, fr.time))
    t0, t1 = dec.span
    cut = timing.AudioCut(info.path, info.audio.index, t0, t1) if info.audio else None
    with video_writer.VideoWriter(out, w, h, fps=out_fps, time_base=time_base, audio=cut,
                            metadata={"comment": "v2v test"}) as wr:
        # decode again to write: the same frames come out (deterministic), nothing is held in memory
        for fr in decode.Decoder(info, w, h, **opts):
            wr.write(fr.image, fr.time - t0)
    return info, dec, frames, (w, h)


def displayed_aspect(probe_video: dict) -> float:
    w, h = int(probe_video["width"]), int(probe_video["height"])
    sar = probe_video.get("sample_aspect_ratio", "1:1")
    if sar in ("0:1", "N/A", None):
        sar = "1:1"
    n, d = (int(x) for x in sar.split(":"))
    w = w * n / d
    rot = 0
    for sd in probe_video.get("side_data_list", []):
        if "rotation" in sd:
            rot = int(float(sd["rotation"])) % 360
    if rot in (90, 270):
        w, h = h, w
    return w / h


def judge(src, out, *, fps: Fraction, expect_frames: int | None = None, in_times=None):
    """Compare output to input with ffprobe: frames, per-frame times, audio, size."""
    pin, pout = media.ffprobe_streams(src), media.ffprobe_streams(out)
    tin = media.ffprobe_frame_times(src) if in_times is None else in_times
    tout = media.ffprobe_frame_times(out)
    n = len(tin) if expect_frames is None else expect_frames
    assert len(tout) == n
    half = 1 / (2 * fps)
    for a, b in zip(tin, tout):
        assert abs((b - tout[0]) - (a - tin[0])) <= half, (a, b)
    # size: multiples of 8, displayed aspect ratio kept within 2%
    w, h = int(pout["video"]["width"]), int(pout["video"]["height"])
    assert w % 8 == 0 and h % 8 == 0
    assert abs(w / h / displayed_aspect(pin["video"]) - 1) < 0.02
    assert pout["video"]["codec_name"] == "h264" and pout["video"]["pix_fmt"] == "yuv420p"
    # audio: present exactly when the input has it, same duration and offset within one frame
    assert (pout["audio"] is None) == (pin["audio"] is None)
    if pin["audio"] is not None:
        frame = 1 / fps
        off_in = media.stream_start(pin["audio"]) - media.stream_start(pin["video"])
        off_out = media.stream_start(pout["audio"]) - media.stream_start(pout["video"])
        assert abs(off_out - off_in) <= frame, (off_in, off_out)
        d_in, d_out = media.stream_duration(pin, "audio"), media.stream_duration(pout, "audio")
        if pin["format"]["format_name"] == "matroska,webm" and d_in is not None:
            d_in -= media.stream_start(pin["audio"])  # mkv DURATION tags are end times
        assert d_in is not None and d_out is not None
        assert abs(d_out - d_in) <= frame, (d_in, d_out)
        assert int(pout["audio"]["channels"]) == int(pin["audio"]["channels"])
        assert int(pout["audio"]["sample_rate"]) == int(pin["audio"]["sample_rate"])
    return pin, pout, tin, tout


# ---------------------------------------------------------------------------------------------
# round trips over many kinds of input

FAST_VP9 = ("-deadline", "realtime", "-cpu-used", "8")

CASES = {
    "mp4_h264_aac": dict(name="a.mp4", seconds=1, fps=25),
    "mov_prores_pcm_23976": dict(name="a.mov", seconds=1, fps="24000/1001", vcodec="prores_ks",
                                 pix_fmt="yuv422p10le", acodec="pcm_s16le"),
    "webm_vp9_opus": dict(name="a.webm", seconds=1, fps=25, vcodec="libvpx-vp9", acodec="libopus",
                          extra=FAST_VP9),
    "mkv_vfr": dict(name="a.mkv", seconds=1.2, fps=25, vfr=True),
    "fps60": dict(name="a.mp4", seconds=1, fps=60),
    "odd_size_444": dict(name="a.mp4", seconds=0.5, fps=25, size=(321, 241), pix_fmt="yuv444p"),
    "rotation90_phone": dict(name="a.mp4", seconds=0.5, fps=30, size=(64, 48), rotation=90),
    "audio_delayed_0.7": dict(name="a.mp4", seconds=2, fps=25, audio_delay=0.7),
    "aac_5.1_copied": dict(name="a.mp4", seconds=0.5, fps=25, channels=6),
    "pcm_5.1_transcoded": dict(name="a.mov", seconds=0.5, fps=25, acodec="pcm_s16le", channels=6),
    "no_audio": dict(name="a.mp4", seconds=0.5, fps=25, acodec=None),
    "one_frame": dict(name="a.mp4", seconds=0.04, fps=25),
    "name_spaces_unicode": dict(name="my clip été 動画.mp4", seconds=0.5, fps=25),
    "raw_h264_no_timestamps": dict(name="a.h264", seconds=0.5, fps=25, acodec=None),
    "anamorphic_sar": dict(name="a.mp4", seconds=0.5, fps=25, size=(48, 48), sar="4/3"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_roundtrip(case, tmp_path):
    spec = dict(CASES[case])
    src = media.make_video(tmp_path / spec.pop("name"), **spec)
    out = tmp_path / "out put ü.mp4"
    info, dec, frames, _ = roundtrip(src, out)
    fps = Fraction(str(spec["fps"])) if "/" not in str(spec["fps"]) else Fraction(spec["fps"])
    in_times = None
    if case == "raw_h264_no_timestamps":  # no timestamps in the file: frames are 1/fps apart
        in_times = [k / fps for k in range(media.ffprobe_frame_count(src))]
        assert len(in_times) == 13
    pin, pout, tin, tout = judge(src, out, fps=fps, in_times=in_times)
    # the decoder's own timestamps are the source's, exactly
    assert [f[2] for f in frames] == tin
    assert [f[0] for f in frames] == list(range(len(tin)))
    assert [f[1] for f in frames] == list(range(len(tin)))
    # the output's frame times are the source's, shifted to start at 0 (exact within a tick)
    tick = Fraction(1, 90000)
    for a, b in zip(tin, tout):
        assert abs((b - tout[0]) - (a - tin[0])) <= tick
    assert pout["format"]["tags"]["comment"] == "v2v test"
    # the video lasts as long as the kept span: the last frame keeps its display time
    t0, t1 = dec.span
    assert t1 - t0 == (tin[-1] + 1 / info.fps) - tin[0]
    assert abs(media.stream_duration(pout, "video") - (t1 - t0)) <= Fraction(1, 1000)
    assert (info.audio is None) == (pin["audio"] is None)
    if info.audio:
        assert info.audio.channels == int(pin["audio"]["channels"])


def test_probe_fields(tmp_path):
    src = media.make_video(tmp_path / "p.mov", seconds=1, fps="24000/1001", size=(64, 48), vcodec="prores_ks",
                           pix_fmt="yuv422p10le", acodec="pcm_s16le", channels=6, sample_rate=44100)
    info = probe.probe(src)
    assert info.codec == "prores" and info.pix_fmt == "yuv422p10le"
    assert (info.width, info.height, info.display_width, info.display_height) == (64, 48, 64, 48)
    assert info.fps == Fraction(24000, 1001)
    assert info.start == 0 and info.rotation == 0 and info.sar == 1
    assert info.frames == 24
    assert info.duration is not None and abs(info.duration - Fraction(24 * 1001, 24000)) < Fraction(1, 100)
    a = info.audio
    assert (a.codec, a.sample_rate, a.channels) == ("pcm_s16le", 44100, 6)
    assert a.layout.startswith("5.1")


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_matches_ffmpeg_autorotate(rotation, tmp_path):
    src = media.make_video(tmp_path / "r.mp4", seconds=0.2, fps=25, size=(64, 48), rotation=rotation)
    info = probe.probe(src)
    assert info.rotation == rotation
    w, h = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.display_width, info.display_height) == (w, h)
    ours = next(iter(decode.Decoder(info, w, h))).image.astype(np.int16)
    # ffmpeg applies the display matrix itself (autorotate): the judge of "upright"
    raw = subprocess.run([media.FFMPEG, "-v", "error", "-i", str(src), "-frames:v", "1", "-vf",
                          f"scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(np.int16)
    good = np.abs(ours - ref).mean()
    wrong = np.abs(ours - ref[::-1, ::-1]).mean()  # the picture turned by 180 degrees
    assert good < 12 and good < wrong / 3, (good, wrong)


# ---------------------------------------------------------------------------------------------
# decoder options


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s, 25 fps, keyframe every 10 frames, AAC audio: 50 frames at k/25."""
    d = tmp_path_factory.mktemp("clip")
    return media.make_video(d / "clip.mp4", seconds=2, fps=25, extra=("-g", "10", "-keyint_min", "10"))


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("vfr")
    return media.make_video(d / "vfr.mkv", seconds=1.2, fps=25, vfr=True)


def _decode(path, **opts):
    info = probe.probe(path)
    dec = decode.Decoder(info, 32, 24, **opts)
    frames = [(f.index, f.source_index, f.time) for f in dec]
    return info, dec, frames


@pytest.mark.parametrize(
    "opts, times, span",
    [
        ({}, [Fraction(k, 25) for k in range(50)], (0, 2)),
        ({"start": 0.5, "end": 1.5}, [Fraction(k, 25) for k in range(13, 38)], (Fraction(13, 25), Fraction(3, 2))),
        ({"start": 1.0}, [Fraction(k, 25) for k in range(25, 50)], (1, 2)),
        ({"start": 0.9}, [Fraction(k, 25) for k in range(23, 50)], (Fraction(23, 25), 2)),
        ({"end": 0.1}, [0, Fraction(1, 25), Fraction(2, 25)], (0, Fraction(1, 10))),
        ({"end": 5}, [Fraction(k, 25) for k in range(50)], (0, 2)),
        ({"every_nth": 3}, [Fraction(k, 25) for k in range(0, 50, 3)], (0, 2)),
        ({"every_nth": 2, "max_frames": 4}, [Fraction(k, 25) for k in (0, 2, 4, 6)], (0, Fraction(8, 25))),
        ({"max_frames": 5}, [Fraction(k, 25) for k in range(5)], (0, Fraction(5, 25))),
        ({"max_frames": 500}, [Fraction(k, 25) for k in range(50)], (0, 2)),
        ({"fps": 10}, [Fraction(k, 10) for k in range(20)], (0, 2)),
        # the grid starts at the first frame at or after start (0.52 = frame 13)
        ({"fps": 10, "start": 0.5, "max_frames": 3}, [Fraction(13, 25) + Fraction(k, 10) for k in range(3)],
         (Fraction(13, 25), Fraction(13, 25) + Fraction(3, 10))),
        ({"fps": 60, "end": 0.5}, [Fraction(k, 60) for k in range(30)], (0, Fraction(1, 2))),
    ],
)
def test_decoder_options(clip, opts, times, span):
    info, dec, frames = _decode(clip, **opts)
    assert [f[2] for f in frames] == times
    assert [f[0] for f in frames] == list(range(len(times)))
    assert dec.span == (Fraction(span[0]), Fraction(span[1]))
    # source_index is the index of the source frame shown (25 fps source: floor(t * 25))
    assert [f[1] for f in frames] == [int(t * 25) for t in times]


def test_fps_resampling_on_vfr_matches_pure_function(vfr_clip):
    src_times = media.ffprobe_frame_times(vfr_clip)
    info, dec, frames = _decode(vfr_clip, fps=20)
    end = src_times[-1] + 1 / info.fps
    expect = timing.resample_times(src_times, end, 20)
    assert [(f[2], f[1]) for f in frames] == expect
    assert dec.span == (src_times[0], end)
    assert len(frames) == int(np.ceil(float((end - src_times[0]) * 20)))


@pytest.mark.parametrize("opts", [{"start": 0.3, "end": 0.9, "every_nth": 2}, {"fps": 12, "end": 1.0}])
def test_trimmed_output_keeps_audio_in_step(clip, tmp_path, opts):
    out = tmp_path / "trim.mp4"
    info, dec, frames, _ = roundtrip(clip, out, size=24, **opts)
    t0, t1 = dec.span
    tout = media.ffprobe_frame_times(out)
    assert tout == [f[2] - t0 for f in frames]
    p = media.ffprobe_streams(out)
    fps = Fraction(opts.get("fps", 25))
    assert abs(media.stream_duration(p, "audio") - (t1 - t0)) <= 1 / fps
    assert abs(media.stream_duration(p, "video") - (t1 - t0)) <= 1 / fps
    assert abs(media.stream_start(p["audio"])) <= 1 / fps


def test_audio_delay_kept_after_trim(tmp_path):
    """Audio starting 0.7 s after the video: cutting at 0.4 s leaves a 0.3 s offset."""
    src = media.make_video(tmp_path / "d.mp4", seconds=2, fps=25, audio_delay=0.7)
    info = probe.probe(src)
    assert abs(info.audio.start - Fraction(7, 10)) <= Fraction(1, 25)
    out = tmp_path / "o.mp4"
    roundtrip(src, out, size=24, start=0.4)
    p = media.ffprobe_streams(out)
    want = info.audio.start - Fraction(2, 5)
    assert abs(media.stream_start(p["audio"]) - want) <= Fraction(1, 25)


@pytest.mark.parametrize("bad", [{"every_nth": 0}, {"max_frames": 0}, {"fps": 0}, {"start": -1},
                                 {"start": 1, "end": 0.5}, {"fps": 10, "every_nth": 2}])
def test_decoder_rejects_bad_options(clip, bad):
    info = probe.probe(clip)
    with pytest.raises(InvalidOptions) as e:
        list(decode.Decoder(info, 32, 24, **bad))
    assert "\n" not in str(e.value)


def test_start_past_end(clip):
    info = probe.probe(clip)
    with pytest.raises(InvalidOptions):
        list(decode.Decoder(info, 32, 24, start=10))


def test_decoder_streams_lazily(clip):
    info = probe.probe(clip)
    it = iter(decode.Decoder(info, 32, 24))
    first = next(it)
    assert first.index == 0 and first.time == 0
    it.close()  # stopping early closes the file; nothing else was decoded into memory


# ---------------------------------------------------------------------------------------------
# pure maths


def _brute_resample(times, end, fps):
    step = 1 / Fraction(fps)
    out, k = [], 0
    while (g := times[0] + k * step) < end:
        j = max(i for i, t in enumerate(times) if t <= g)
        out.append((g, j))
        k += 1
    return out


@pytest.mark.parametrize("seed", range(60))
def test_resample_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    den = rng.choice([1000, 12800, 90000, 30000])
    t = Fraction(rng.randint(-500, 500), den)
    times = []
    for _ in range(n):
        times.append(t)
        t += Fraction(rng.randint(1, den // 5), den)
    end = t
    fps = rng.choice([Fraction(24000, 1001), 10, 25, 60, Fraction(1, 2), Fraction(7, 3), 120])
    got = timing.resample_times(times, end, fps)
    assert got == _brute_resample(times, end, fps)
    # every output is a source frame; the grid is regular and covers the span
    assert all(b[0] - a[0] == 1 / Fraction(fps) for a, b in zip(got, got[1:]))
    assert got[-1][0] < end <= got[-1][0] + 1 / Fraction(fps)


def test_resample_edges():
    ts = [Fraction(0), Fraction(1, 10), Fraction(2, 10)]
    assert timing.resample_times(ts, Fraction(3, 10), 10) == [(0, 0), (Fraction(1, 10), 1), (Fraction(2, 10), 2)]
    assert timing.resample_times(ts, Fraction(3, 10), 20) == [
        (Fraction(k, 20), k // 2) for k in range(6)]
    assert timing.resample_times(ts, Fraction(3, 10), 5) == [(0, 0), (Fraction(1, 5), 2)]
    assert timing.resample_times([], Fraction(1), 5) == []


@pytest.mark.parametrize("n, maxf, kept, end", [
    (1, None, list(range(10)), 10), (3, None, [0, 3, 6, 9], 10), (3, 2, [0, 3], 6),
    (1, 4, [0, 1, 2, 3], 4), (4, 3, [0, 4, 8], 10), (20, None, [0], 10)])
def test_select_every_nth(n, maxf, kept, end):
    times = [Fraction(i) for i in range(10)]
    assert timing.select_every_nth(times, Fraction(10), n, maxf) == (kept, end)


@pytest.mark.parametrize("dw, dh, kw, expect", [
    (1920, 1080, {}, (912, 512)),
    (1080, 1920, {}, (512, 912)),
    (64, 48, {"size": 48}, (64, 48)),
    (321, 241, {"size": 48}, (64, 48)),
    (640, 480, {"size": 500}, (672, 504)),
    (10, 1000, {"size": 8}, (8, 800)),
    (1000, 10, {"size": 8}, (800, 8)),
    (1920, 1080, {"width": 640}, (640, 360)),
    (1920, 1080, {"height": 360}, (640, 360)),
    (1920, 1080, {"width": 256, "height": 256}, (256, 256)),
    (1, 1000, {"width": 8}, (8, 8000)),
    (1000, 1, {"height": 8}, (8000, 8)),
])
def test_processing_size(dw, dh, kw, expect):
    w, h = timing.processing_size(dw, dh, **kw)
    assert (w, h) == expect
    assert w % 8 == 0 and h % 8 == 0 and w > 0 and h > 0


@pytest.mark.parametrize("kw", [{"width": 100}, {"height": 0}, {"width": 64, "height": 50}, {"size": 0},
                                {"width": -8}])
def test_processing_size_rejects(kw):
    with pytest.raises(InvalidOptions) as e:
        timing.processing_size(640, 480, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("seed", range(20))
def test_processing_size_keeps_aspect(seed):
    rng = random.Random(seed)
    dw, dh = rng.randint(16, 4000), rng.randint(16, 4000)
    size = rng.choice([256, 384, 512, 768])
    w, h = timing.processing_size(dw, dh, size=size)
    assert w % 8 == 0 and h % 8 == 0 and abs(min(w, h) - size) <= 24
    if size >= 512:  # the long side's rounding is always within 0.8% there: the short side is kept
        assert min(w, h) == size
    assert abs(w / h - dw / dh) <= (4 / min(w, h) + 4 / max(w, h)) * (w / h) + 1e-9


@pytest.mark.parametrize("dw, dh", [(321, 241), (1100, 1000), (1000, 1100), (1920, 1080), (1080, 1920), (720, 576),
                                    (1280, 1024), (1440, 1080), (2560, 1080), (900, 1000)])
@pytest.mark.parametrize("size", [128, 256, 512])
def test_processing_size_aspect_within_two_percent(dw, dh, size):
    """Small sizes move the short side a step of 8 when the plain rounding would be more than 1.75% off."""
    w, h = timing.processing_size(dw, dh, size=size)
    assert abs((w / h) / (dw / dh) - 1) <= 0.0175
    assert abs(min(w, h) - size) <= 24


# ---------------------------------------------------------------------------------------------
# bad inputs


def _audio_only(p):
    return media.make_video(p, vcodec=None, seconds=0.5)


def _audio_with_cover(p):
    """A music file with album art: audio and one attached picture (a video stream that is not a video)."""
    audio = media.make_video(p.with_name("plain.m4a"), vcodec=None, seconds=0.5)
    cover = p.with_name("cover.png")
    subprocess.run([media.FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=red:s=32x32", "-frames:v", "1",
                    str(cover)], check=True)
    out = p.with_suffix(".m4a")
    subprocess.run([media.FFMPEG, "-v", "error", "-y", "-i", str(audio), "-i", str(cover), "-map", "0", "-map", "1",
                    "-c:a", "copy", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", str(out)], check=True)
    return out


BAD = {
    "missing": (lambda p: p, InputNotFound),
    "directory": (lambda p: (p.mkdir(), p)[1], InputNotFound),
    "empty": (lambda p: (p.write_bytes(b""), p)[1], EmptyInput),
    "random_bytes": (lambda p: (p.write_bytes(random.Random(1).randbytes(5000)), p)[1], VideoDecodeError),
    "text_named_mp4": (lambda p: (p.write_text("hello, this is not a video\n" * 50), p)[1], VideoDecodeError),
    "audio_only": (lambda p: _audio_only(p.with_suffix(".m4a")), NoVideoStream),
    # was taken for a 1-frame video, then called truncated with "pass --end -0.01"
    "audio_with_cover_art": (_audio_with_cover, NoVideoStream),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_inputs(kind, tmp_path):
    make, err = BAD[kind]
    path = make(tmp_path / "bad in.mp4")
    with pytest.raises(err) as e:
        probe.probe(path)
    msg = str(e.value)
    assert msg and "\n" not in msg
    assert e.value.exit_code == 3
    assert "Errno" not in msg and "1094995529" not in msg  # FFmpeg's error numbers mean nothing to a creator
    if kind in ("random_bytes", "text_named_mp4"):
        assert "damaged file, or not a video" in msg and "plays in a video player" in msg


def _as_a_user(code: str) -> subprocess.CompletedProcess:
    """Python ``code`` run where file permissions hold: as this user, or for root (who reads anything) with the
    capabilities that bypass them dropped (util-linux setpriv)."""
    import os
    import shutil
    import sys

    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be made to hold")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_an_input_that_may_not_be_read_says_so(tmp_path, locked):
    """A file without read permission (or in a folder that may not be searched) is InputNotReadable, saying
    permission denied and how to fix it: not 'check that the file is a complete video', nor a traceback."""
    folder = tmp_path / "clips"
    folder.mkdir()
    src = media.make_video(folder / "locked.mp4", seconds=0.2, fps=25)
    (src if locked == "file" else folder).chmod(0)
    try:
        r = _as_a_user(f"import v2v\nfrom v2v.media import probe\ntry:\n    probe.probe({str(src)!r})\n"
                       "except v2v.InputError as e:\n    print(type(e).__name__, e.exit_code, e)\n")
    finally:
        (src if locked == "file" else folder).chmod(0o755)
    assert r.returncode == 0, r.stderr
    name, code, message = r.stdout.split(" ", 2)
    assert (name, code) == ("InputNotReadable", "3") and "permission denied" in message
    assert ("chmod u+r" if locked == "file" else "chmod u+rx") in message and "complete video" not in message


def test_cover_art_beside_the_video_is_not_the_video(tmp_path):
    """A video with a cover picture (attached_pic) as well: the real video stream is decoded, all its frames."""
    src = media.make_video(tmp_path / "v.mp4", seconds=0.4, fps=25, size=(64, 48))
    cover = tmp_path / "cover.png"
    subprocess.run([media.FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=red:s=32x32", "-frames:v", "1",
                    str(cover)], check=True)
    both = tmp_path / "with cover.mp4"
    subprocess.run([media.FFMPEG, "-v", "error", "-y", "-i", str(src), "-i", str(cover), "-map", "0", "-map", "1",
                    "-c:a", "copy", "-c:v:0", "copy", "-c:v:1", "mjpeg", "-disposition:v:1", "attached_pic",
                    str(both)], check=True)
    info = probe.probe(both)
    assert (info.width, info.height, info.codec) == (64, 48, "h264")
    assert [f.time for f in decode.Decoder(info, 32, 24)] == [Fraction(k, 25) for k in range(10)]


def test_joined_ts_whose_audio_jumps_back_is_written(tmp_path):
    """Two .ts recordings joined with `cat`, the second's clock restarting a little before the first's end: the
    video frames and the copied audio packets that go back in time are dropped (with a warning each) instead of
    the muxer failing at the end with "Invalid argument" (exit 4, "check free disk space")."""
    import av

    parts = [media.make_video(tmp_path / f"p{k}.ts", seconds=1, fps=25, size=(64, 48),
                              extra=("-output_ts_offset", str(k), "-f", "mpegts")) for k in (0, 1)]
    src = tmp_path / "joined.ts"
    src.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    with av.open(str(src)) as c:  # the premise: the audio's timestamps do go back
        dts = [p.dts for p in c.demux(c.streams.audio[0]) if p.dts is not None]
    assert any(b <= a for a, b in zip(dts, dts[1:]))
    out = tmp_path / "o.mp4"
    info, dec, frames, _ = roundtrip(src, out)
    assert info.audio.codec == "aac"  # stream-copied into the MP4
    tout = media.ffprobe_frame_times(out)
    assert len(tout) == len(frames) >= 45
    p = media.ffprobe_streams(out)
    assert p["audio"]["codec_name"] == "aac"
    t0, t1 = dec.span
    assert abs(media.stream_duration(p, "audio") - (t1 - t0)) <= Fraction(2, 25)


def test_truncated_without_index(tmp_path):
    src = media.make_video(tmp_path / "t.mp4", seconds=1, fps=25)  # moov atom at the end
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError) as e:
        probe.probe(src)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, extra", [("t.mp4", ("-movflags", "+faststart")), ("t.mkv", ())])
def test_truncated_keeps_decoded_frames(name, extra, tmp_path, caplog):
    src = media.make_video(tmp_path / name, seconds=2, fps=25, size=(64, 48), acodec=None,
                           extra=extra + ("-g", "5"))
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * 0.6)])
    info = probe.probe(src)
    frames = []
    with caplog.at_level(logging.WARNING, logger="v2v"):
        if name.endswith(".mp4"):  # the stream's own length is known: missing data is an error, with the way out
            with pytest.raises(VideoDecodeError) as e:
                frames.extend(f.time for f in decode.Decoder(info, 32, 24))
            msg = str(e.value)
            assert "truncated" in msg and "--end" in msg and "\n" not in msg
        else:  # only the container's length (could be the audio's): keep the frames, warn
            frames.extend(f.time for f in decode.Decoder(info, 32, 24))
            assert any("truncated" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert 5 <= len(frames) < 50
    assert frames == [Fraction(k, 25) for k in range(len(frames))]
    if name.endswith(".mp4"):  # the part before the damage is usable with --end
        end = float(msg.split("--end ")[1].split()[0])
        kept = [f.time for f in decode.Decoder(info, 32, 24, end=end)]
        assert kept == frames[:len(kept)] and len(kept) >= len(frames) - 2


def test_truncated_after_one_frame_suggests_no_negative_end(tmp_path):
    """A download cut off after its first frame: the error says truncated, without "pass --end -0.01" (which
    --end rejects); after two frames the --end advice is back, positive."""
    import json

    src = media.make_video(tmp_path / "t.mp4", seconds=2, fps=25, size=(64, 48), acodec=None,
                           extra=("-movflags", "+faststart", "-bf", "0"))
    out = subprocess.run([media.FFPROBE, "-v", "error", "-select_streams", "v", "-show_entries", "packet=pos,size",
                          "-of", "json", str(src)], capture_output=True, text=True, check=True).stdout
    ends = [int(p["pos"]) + int(p["size"]) for p in json.loads(out)["packets"][:2]]
    data = src.read_bytes()
    msgs = []
    for end in ends:  # cut after the first packet, then after the second
        src.write_bytes(data[:end])
        with pytest.raises(VideoDecodeError) as e:
            list(decode.Decoder(probe.probe(src), 32, 24))
        msgs.append(str(e.value))
    assert "truncated" in msgs[0] and "--end" not in msgs[0] and "\n" not in msgs[0]
    assert "truncated" in msgs[1] and float(msgs[1].split("--end ")[1].split()[0]) > 0


def test_truncated_before_first_frame(tmp_path):
    src = media.make_video(tmp_path / "t.mkv", seconds=1, fps=25, size=(64, 48), acodec=None)
    data = src.read_bytes()
    src.write_bytes(data[:600])  # header only
    with pytest.raises(VideoDecodeError) as e:
        probe.probe(src)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# writer


def test_writer_exact_vfr_times_and_duration(tmp_path):
    out = tmp_path / "vfr.mp4"
    times = [Fraction(0), Fraction(33, 1000), Fraction(80, 1000), Fraction(81, 1000), Fraction(500, 1000)]
    colours = np.array([(200, 30, 40), (30, 200, 40), (40, 30, 200), (220, 220, 30), (128, 128, 128)], np.uint8)
    with video_writer.VideoWriter(out, 32, 24, fps=25, time_base=Fraction(1, 1000), end=Fraction(7, 10)) as wr:
        for c, t in zip(colours, times):
            wr.write(np.broadcast_to(c, (24, 32, 3)).copy(), t)
    assert media.ffprobe_frame_times(out) == times
    p = media.ffprobe_streams(out)
    assert p["audio"] is None
    assert abs(media.stream_duration(p, "video") - Fraction(7, 10)) <= Fraction(1, 1000)
    # colours survive the encode, read back by ffmpeg and by our own decoder
    raw = subprocess.run([media.FFMPEG, "-v", "error", "-i", str(out), "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    px = np.frombuffer(raw, np.uint8).reshape(len(times), 24, 32, 3)
    assert np.abs(px.astype(int).mean(axis=(1, 2)) - colours).max() < 6
    info = probe.probe(out)
    ours = np.stack([f.image for f in decode.Decoder(info, 32, 24)])
    assert np.abs(ours.astype(int).mean(axis=(1, 2)) - colours).max() < 6


def test_writer_metadata_custom_keys(tmp_path):
    out = tmp_path / "m.mp4"
    with video_writer.VideoWriter(out, 16, 16, fps=25, time_base=Fraction(1, 12800),
                            metadata={"comment": "hello", "v2v_settings": "{\"steps\": 4}"}) as wr:
        wr.write(np.zeros((16, 16, 3), np.uint8), Fraction(0))
    tags = media.ffprobe_streams(out)["format"]["tags"]
    assert tags["comment"] == "hello" and tags["v2v_settings"] == "{\"steps\": 4}"


def _churn_heap(seed: int) -> None:
    """Allocate and free buffers of random bytes, as earlier torch work or an earlier encode does."""
    rng = np.random.default_rng(seed)
    junk = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (64, 256, 1024, 4096, 32768)]
    del junk


def _video_bitstream(path) -> bytes:
    import av

    with av.open(str(path)) as c:
        return b"".join(bytes(p) for p in c.demux(c.streams.video[0]))


@pytest.mark.parametrize("width", [200, 256])
def test_writer_same_frames_same_bitstream(tmp_path, width):
    """Identical frames give an identical H.264 stream, whatever the process's heap held before.

    200x144 is 13 macroblocks wide (not a multiple of 8): with its AVX-512 kernels x264's mbtree
    read stale heap bytes past its row arrays there and the stream changed from run to run (on
    AVX-512 CPUs; elsewhere this passed anyway). 256 is 16 macroblocks wide: there x264 keeps its
    AVX-512 kernels, which must then be exact.
    """
    import av

    rng = np.random.default_rng(0)
    frames = [av.VideoFrame.from_ndarray(rng.integers(60, 200, (18, 25, 3), dtype=np.uint8), format="rgb24")
              .reformat(width=width, height=144, interpolation="BICUBIC").to_ndarray() for _ in range(6)]
    streams = []
    for k in range(12):
        out = tmp_path / f"same{k}.mp4"
        with video_writer.VideoWriter(out, width, 144, fps=24, time_base=Fraction(1, 12288)) as wr:
            for i, img in enumerate(frames):
                _churn_heap(100 * k + i)
                wr.write(img, Fraction(i, 24))
        streams.append(_video_bitstream(out))
    assert all(s == streams[0] for s in streams), f"{len(set(streams))} different bitstreams from the same frames"


def test_x264_held_to_avx2_only_where_its_avx512_reads_past_a_row():
    """The AVX2 cap applies on AVX-512 CPUs at widths that are not whole groups of 8 macroblocks, and only there."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as cpu
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__ as cpu
    avx512 = bool(cpu.get("AVX512F") and cpu.get("AVX2") and cpu.get("FMA3"))
    for width in range(2, 2050, 2):
        whole = -(-width // 16) % 8 == 0
        assert video_writer.x264_params(width) == ({} if whole or not avx512 else {"x264-params": "asm=AVX2"}), width
    assert video_writer.x264_params(512) == {} and video_writer.x264_params(1920) == {}


def test_rgb_frame_is_a_copy_with_aligned_rows():
    """rgb_frame: the same pixels as the array (strided or not), rows on 64-byte boundaries, and its own memory."""
    rng = np.random.default_rng(3)
    for w, h in ((16, 16), (200, 144), (504, 288), (7, 5)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for src in (img.copy(), np.swapaxes(np.swapaxes(img, 0, 1).copy(), 0, 1)):  # C order, then strided
            f = writer_base.rgb_frame(src)
            assert (f.width, f.height, f.format.name) == (w, h, "rgb24")
            assert f.planes[0].line_size % 64 == 0
            assert np.array_equal(f.to_ndarray(), img)
            src[...] = 0  # the caller reuses its array
            assert np.array_equal(f.to_ndarray(), img)


def test_writer_unwritable_folder(tmp_path):
    with pytest.raises(OutputError) as e:
        video_writer.VideoWriter(tmp_path / "no such dir" / "o.mp4", 16, 16, fps=25, time_base=Fraction(1, 25))
    assert "\n" not in str(e.value) and e.value.exit_code == 4


def test_writer_rejects_non_increasing_times(tmp_path):
    wr = video_writer.VideoWriter(tmp_path / "o.mp4", 16, 16, fps=25, time_base=Fraction(1, 25))
    wr.write(np.zeros((16, 16, 3), np.uint8), Fraction(1, 25))
    with pytest.raises(ValueError):
        wr.write(np.zeros((16, 16, 3), np.uint8), Fraction(1, 25))
    wr.close()
    assert media.ffprobe_frame_times(tmp_path / "o.mp4") == [Fraction(1, 25)]


# ---------------------------------------------------------------------------------------------
# threaded writer: same file, errors surface in the caller, no thread left behind


def _encoder_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("v2v-encode-")]


def test_writer_threaded_same_bitstream_as_unthreaded(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)]
    streams = []
    for threaded, q in ((False, 16), (True, 16), (True, 1)):
        out = tmp_path / f"t{int(threaded)}{q}.mp4"
        with video_writer.VideoWriter(out, 64, 48, fps=24, time_base=Fraction(1, 12288), threaded=threaded,
                                queue_frames=q) as wr:
            for i, img in enumerate(frames):
                buf = img.copy()
                wr.write(buf, Fraction(i, 24))
                buf[:] = 0  # the writer copied it: changing the caller's buffer afterwards changes nothing
        streams.append(_video_bitstream(out))
        assert media.ffprobe_frame_times(out) == [Fraction(i, 24) for i in range(30)]
    assert streams[0] == streams[1] == streams[2]
    assert _encoder_threads() == []


def test_writer_threaded_audio_matches_unthreaded(clip, tmp_path):
    outs = []
    for threaded in (False, True):
        out = tmp_path / f"a{int(threaded)}.mp4"
        info = probe.probe(clip)
        dec = decode.Decoder(info, 48, 48)
        for _ in dec:  # the span is known once decoded
            pass
        cut = timing.AudioCut(info.path, info.audio.index, *dec.span) if info.audio else None
        with video_writer.VideoWriter(out, 48, 48, fps=info.fps, time_base=info.time_base, audio=cut,
                                threaded=threaded) as wr:
            t0 = None
            for fr in decode.Decoder(info, 48, 48):
                t0 = fr.time if t0 is None else t0
                wr.write(fr.image, fr.time - t0)
        outs.append(out)
    with_av = [media.ffprobe_streams(o) for o in outs]
    assert with_av[0]["audio"] is not None
    assert media.stream_duration(with_av[0], "audio") == media.stream_duration(with_av[1], "audio")
    assert media.ffprobe_frame_times(outs[0]) == media.ffprobe_frame_times(outs[1])


def test_writer_threaded_error_surfaces_as_output_error(tmp_path, monkeypatch):
    """An encoder error on the worker comes back as the same OutputError on the next write (or close)."""
    import av.error

    real_encode = video_writer.VideoWriter._encode
    calls = []

    def failing(self, frame, t):
        calls.append(t)
        if len(calls) == 3:
            raise av.error.FFmpegError(28, "No space left on device")
        return real_encode(self, frame, t)

    monkeypatch.setattr(video_writer.VideoWriter, "_encode", failing)
    img = np.zeros((16, 16, 3), np.uint8)
    # on the next write
    wr = video_writer.VideoWriter(tmp_path / "w.mp4", 16, 16, fps=25, time_base=Fraction(1, 25), threaded=True,
                            queue_frames=1)
    with pytest.raises(OutputError) as e:
        for i in range(100):
            wr.write(img, Fraction(i, 25))
    assert "writing w.mp4 failed" in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 4
    assert len(calls) == 3  # the worker stopped encoding at the error
    with pytest.raises(OutputError, match="already closed"):
        wr.write(img, Fraction(200, 25))
    wr.close()  # closed already: nothing to do
    assert _encoder_threads() == []
    # on close, when the error comes after the last write
    calls.clear()
    with pytest.raises(OutputError) as e2:
        with video_writer.VideoWriter(tmp_path / "c.mp4", 16, 16, fps=25, time_base=Fraction(1, 25),
                                      threaded=True) as wr:
            for i in range(3):
                wr.write(img, Fraction(i, 25))
    assert "writing c.mp4 failed" in str(e2.value)
    assert _encoder_threads() == []


def test_writer_threaded_abort_leaves_no_thread(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(KeyboardInterrupt):
        with video_writer.VideoWriter(tmp_path / "k.mp4", 16, 16, fps=25, time_base=Fraction(1, 25), threaded=True,
                                queue_frames=2) as wr:
            for i in range(10):
                wr.write(img, Fraction(i, 25))
            raise KeyboardInterrupt
    assert _encoder_threads() == []
    # shape and time errors are raised at once by write (the writer stays usable), as unthreaded
    wr = video_writer.VideoWriter(tmp_path / "v.mp4", 16, 16, fps=25, time_base=Fraction(1, 25), threaded=True)
    with pytest.raises(ValueError):
        wr.write(np.zeros((8, 16, 3), np.uint8), Fraction(0))
    wr.write(img, Fraction(0))
    with pytest.raises(ValueError):
        wr.write(img, Fraction(0))
    wr.close()
    assert media.ffprobe_frame_times(tmp_path / "v.mp4") == [Fraction(0)]
    assert _encoder_threads() == []
    with pytest.raises(InvalidOptions):
        video_writer.VideoWriter(tmp_path / "q.mp4", 16, 16, fps=25, time_base=Fraction(1, 25), queue_frames=0)


@pytest.mark.parametrize("code, says, not_says", [
    (errno.ENOSPC, "the disk is full", "--debug"),
    (errno.EDQUOT, "the disk is full", "--debug"),
    (errno.EROFS, "may be written", "disk is full"),
    (errno.EACCES, "may be written", "disk is full"),
    (errno.EINVAL, "rerun with --debug", "check free disk space"),   # a stream the muxer refuses: not the disk
    (None, "rerun with --debug", "check free disk space"),
])
def test_write_failed_advice_follows_the_cause(code, says, not_says):
    import av.error

    err = av.error.FFmpegError(code, "some reason") if code is not None else RuntimeError("some\nreason")
    msg = pyav.write_failed("writing o.mp4", err)
    assert msg.startswith("writing o.mp4 failed (") and "some" in msg and "reason" in msg and "\n" not in msg
    assert says in msg and not_says not in msg


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "the disk is full"), (errno.EINVAL, "rerun with --debug")])
def test_writer_error_names_its_cause_and_keeps_it_for_debug(tmp_path, monkeypatch, threaded, code, says):
    """A full disk says so; a muxer that refuses a stream ("Invalid argument") is not blamed on the disk (it was:
    every write error said "check free disk space"); the FFmpeg error stays the cause, for --debug's traceback."""
    import av.error

    def failing(self, frame, t):
        raise av.error.FFmpegError(code, "boom")

    monkeypatch.setattr(video_writer.VideoWriter, "_encode", failing)
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(OutputError) as e:
        with video_writer.VideoWriter(tmp_path / "o.mp4", 16, 16, fps=25, time_base=Fraction(1, 25),
                                threaded=threaded) as wr:
            for i in range(5):
                wr.write(img, Fraction(i, 25))
    assert "writing o.mp4 failed" in str(e.value) and says in str(e.value) and e.value.exit_code == 4
    assert isinstance(e.value.__cause__, av.error.FFmpegError) and e.value.__cause__.errno == code


def test_joined_ts_whose_clock_restarts_is_an_error_not_half_a_video(tmp_path):
    """Two .ts recordings on the same clock joined with `cat`: the second's frames all go back in time. Dropping
    them (as a stray frame is dropped) kept half the video with one warning and exit 0; it is now a
    VideoDecodeError that says how to put the video on one clock, and that advice works."""
    parts = [media.make_video(tmp_path / f"p{k}.ts", seconds=1, fps=25, size=(64, 48), extra=("-f", "mpegts"))
             for k in (0, 1)]
    src = tmp_path / "joined.ts"
    src.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    info = probe.probe(src)
    with pytest.raises(VideoDecodeError) as e:
        list(decode.Decoder(info, 32, 24))
    msg = str(e.value)
    assert "joined.ts" in msg and "jump back" in msg and "ffmpeg -i 'joined.ts' -c copy" in msg and "\n" not in msg
    assert e.value.exit_code == 3
    fixed = tmp_path / "fixed.mp4"  # the advice, followed
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-c", "copy", str(fixed)], check=True)
    times = [f.time for f in decode.Decoder(probe.probe(fixed), 32, 24)]
    assert len(times) == 50 and all(b > a for a, b in zip(times, times[1:]))


def test_probe_names_the_audio_codec_not_its_decoder(tmp_path):
    """ffprobe's codec_name ("mp3"), as the writer's copy decision uses it: not FFmpeg's decoder ("mp3float")."""
    src = media.make_video(tmp_path / "a.mkv", seconds=0.4, fps=25, acodec="libmp3lame")
    assert probe.probe(src).audio.codec == media.ffprobe_streams(src)["audio"]["codec_name"] == "mp3"
