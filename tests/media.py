"""Synthetic test videos made with the ffmpeg binary (tests only) and an ffprobe judge.

``make_video`` builds a small clip from lavfi sources (``testsrc2`` picture, ``sine`` audio).
``ffprobe_streams`` / ``ffprobe_frame_times`` read files back with ffprobe, an independent judge.
The library itself never calls these binaries.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
HAVE_FFMPEG = FFMPEG is not None and FFPROBE is not None


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def make_video(
    path,
    *,
    seconds: float = 1.0,
    fps: str | float | int = 25,
    size: tuple[int, int] = (64, 48),
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    acodec: str | None = "aac",
    channels: int = 1,
    sample_rate: int = 48000,
    audio_seconds: float | None = None,
    audio_delay: float = 0.0,
    rotation: int = 0,
    vfr: bool = False,
    sar: str | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """Write a synthetic clip to ``path`` and return it.

    ``rotation``: clockwise degrees a player turns the picture to show it upright (display matrix).
    ``audio_delay``: the audio stream starts that many seconds after the video (``-itsoffset``).
    ``vfr``: irregular frame times (steps 40 ms, then 70 ms, with 11 ms jitter); use mkv/mp4.
    ``acodec=None``: no audio stream. ``vcodec=None``: no video stream (audio only).
    """
    path = Path(path)
    w, h = size
    cmd = [FFMPEG, "-v", "error", "-y"]
    if vcodec is not None:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=s={w}x{h}:r={fps}:d={seconds}"]
    if acodec is not None:
        if audio_delay:
            cmd += ["-itsoffset", str(audio_delay)]
        a_len = seconds - audio_delay if audio_seconds is None else audio_seconds
        cmd += ["-f", "lavfi", "-i", f"sine=f=440:r={sample_rate}:d={a_len}"]
    vf = []
    if vfr:
        vf.append("setpts='(N*0.04+gte(N,10)*(N-10)*0.03+eq(mod(N,7),3)*0.011)/TB'")
    if sar:
        vf.append(f"setsar={sar}")
    if vcodec is not None:
        if vf:
            cmd += ["-vf", ",".join(vf)]
        cmd += ["-c:v", vcodec, "-pix_fmt", pix_fmt]
        if vfr:
            cmd += ["-fps_mode", "passthrough"]
    if acodec is not None:
        if channels == 6:
            cmd += ["-af", "aformat=channel_layouts=5.1"]
        elif channels == 2:
            cmd += ["-ac", "2"]
        cmd += ["-c:a", acodec]
    cmd += list(extra)
    if rotation % 360 == 0:
        cmd.append(str(path))
        _run(cmd)
        return path
    # rotation: encode first, then set the display matrix with a stream copy
    tmp = path.with_name("_unrotated_" + path.name)
    cmd.append(str(tmp))
    _run(cmd)
    # The meaning of the legacy ``rotate`` tag changed between FFmpeg versions; check the result.
    for tag in ((-rotation) % 360, rotation % 360):
        _run([FFMPEG, "-v", "error", "-y", "-i", str(tmp), "-map", "0", "-c", "copy",
              "-metadata:s:v:0", f"rotate={tag}", str(path)])
        if display_rotation(path) == rotation % 360:
            break
    else:
        raise RuntimeError(f"could not write rotation {rotation} with this ffmpeg")
    tmp.unlink()
    return path


def display_rotation(path) -> int:
    """Clockwise degrees to show the first video stream upright, per ffprobe (0 when none)."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream_side_data=rotation", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    for s in data.get("streams", []):
        for sd in s.get("side_data_list", []):
            if "rotation" in sd:
                return int(-float(sd["rotation"])) % 360
    return 0


def ffprobe_streams(path) -> dict:
    """``{"format": {...}, "video": {...} | None, "audio": {...} | None}`` from ffprobe's JSON."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    res = {"format": data.get("format", {}), "video": None, "audio": None}
    for s in data.get("streams", []):
        kind = s.get("codec_type")
        if kind in ("video", "audio") and res[kind] is None:
            res[kind] = s
    return res


def ffprobe_frame_times(path, stream: str = "v:0") -> list[Fraction]:
    """Presentation times (seconds, exact) of every decoded frame of ``stream``, sorted."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-select_streams", stream, "-show_entries",
         "stream=time_base:frame=pts,best_effort_timestamp", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    tb = Fraction(data["streams"][0]["time_base"])
    times = []
    for fr in data.get("frames", []):
        pts = fr.get("pts", fr.get("best_effort_timestamp"))
        if pts is not None:
            times.append(int(pts) * tb)
    return sorted(times)


def stream_start(info: dict | None) -> Fraction | None:
    if info is None or info.get("start_time") in (None, "N/A"):
        return None
    return Fraction(info["start_time"])


def stream_duration(probe: dict, kind: str) -> Fraction | None:
    """Duration of a stream; falls back to the container's for formats without per-stream durations."""
    s = probe[kind]
    if s is None:
        return None
    d = s.get("duration")
    if d in (None, "N/A"):
        d = s.get("tags", {}).get("DURATION")  # mkv/webm: "00:00:01.000000000"
        if d:
            hh, mm, ss = d.split(":")
            return Fraction(int(hh) * 3600 + int(mm) * 60) + Fraction(ss)
        return None
    return Fraction(d)


def ffprobe_frame_count(path, stream: str = "v:0") -> int:
    """Number of frames ffprobe decodes from ``stream``."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-count_frames", "-select_streams", stream, "-show_entries",
         "stream=nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    return int(json.loads(out)["streams"][0]["nb_read_frames"])


def run_v2v(*args, env: dict | None = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """``python -m v2v ARGS`` captured. A run still going after ``timeout`` seconds is a hang: it gets SIGABRT
    with faulthandler on, so the assertion error shows every thread's stack instead of a bare timeout."""
    import os
    import signal
    import sys

    cmd = [sys.executable, "-m", "v2v", *map(str, args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                         env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        raise AssertionError(f"v2v {' '.join(map(str, args))} hung for {timeout} s; its threads:\n{err[-8000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


SUBTITLES = [(Fraction(1, 10), Fraction(6, 10), "Hello there"), (Fraction(7, 10), Fraction(15, 10), "Second line")]


def make_multitrack(path, *, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (64, 48),
                    languages: tuple[str, ...] = ("eng", "fra"), subtitle_language: str = "deu",
                    picture_subtitles: bool = False) -> Path:
    """A clip (mkv, H.264) with one AAC track per language (sines of 440, 660... Hz) and SubRip subtitles
    (``SUBTITLES``); ``picture_subtitles``: also a DVD (picture) subtitle stream, in Japanese."""
    import av

    path = Path(path)
    srt = path.with_suffix(".srt")

    def stamp(t: Fraction) -> str:
        ms = int(t * 1000)
        return f"00:00:{ms // 1000:02d},{ms % 1000:03d}"

    srt.write_text("".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n"
                           for i, (a, b, text) in enumerate(SUBTITLES, 1)))
    w, h = size
    cmd = [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={w}x{h}:r={fps}:d={seconds}"]
    for k in range(len(languages)):
        cmd += ["-f", "lavfi", "-i", f"sine=f={440 + 220 * k}:d={seconds}"]
    cmd += ["-i", str(srt)]
    inputs = len(languages) + 2
    if picture_subtitles:  # no encoder makes DVD subtitles from text: one packet written by PyAV, copied in
        pic = path.with_name("_dvdsub_" + path.stem + ".mkv")
        with av.open(str(pic), "w") as c:
            s = c.add_stream("dvdsub")
            s.time_base = Fraction(1, 1000)
            packet = av.Packet(b"\x00\x08\x00\x04\x00\x00\x00\x00")
            packet.pts = packet.dts = 200
            packet.duration, packet.stream = 500, s
            c.mux(packet)
        cmd += ["-i", str(pic)]
        inputs += 1
    for i in range(inputs):
        cmd += ["-map", str(i)]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s:0", "srt"]
    if picture_subtitles:
        cmd += ["-c:s:1", "copy", "-metadata:s:s:1", "language=jpn"]
    for k, lang in enumerate(languages):
        cmd += [f"-metadata:s:a:{k}", f"language={lang}"]
    cmd += ["-metadata:s:s:0", f"language={subtitle_language}", str(path)]
    _run(cmd)
    return path


def ffprobe_all_streams(path) -> list[dict]:
    """Every stream of ``path``, as ffprobe lists them (codec_type, codec_name, tags...)."""
    out = subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"]


def ffprobe_cues(path, stream: str = "s:0") -> list[tuple[Fraction, Fraction]]:
    """(start, end) in seconds of each cue of subtitle ``stream``, as stored (no start-time shift); the empty
    samples mov_text puts between cues (2 bytes: a zero text length) are not cues."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", stream, "-show_entries",
                          "stream=time_base:packet=pts,duration,size", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    tb = Fraction(data["streams"][0]["time_base"])
    return [(int(p["pts"]) * tb, (int(p["pts"]) + int(p.get("duration", 0))) * tb) for p in data["packets"]
            if int(p["size"]) > 2]


def ffmpeg_subtitle_text(path, stream: str = "s:0") -> list[str]:
    """The text of each subtitle of ``stream``, read back by ffmpeg as SubRip."""
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-f", "srt", "-"],
                         capture_output=True, text=True, check=True).stdout
    return [" ".join(block.strip().splitlines()[2:]) for block in out.strip().split("\n\n")]
