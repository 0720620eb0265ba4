"""The `v2v` command end to end: bad inputs, the tiny smoke run, the default command on a fake hub cache, Ctrl-C.

Outputs are judged by ffprobe, independently of PyAV.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import media

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "dance.mp4"
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is the judge of outputs")


def run_v2v(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return media.run_v2v(*args, env=env, timeout=timeout, cwd=ROOT)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def frame_times(path: Path) -> list[float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=pts_time,best_effort_timestamp_time", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    frames = json.loads(out)["frames"]
    return [float(f.get("pts_time", f.get("best_effort_timestamp_time"))) for f in frames]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- bad inputs


def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    rand = folder / "random.mp4"
    rand.write_bytes(os.urandom(50_000))
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    trunc = folder / "truncated.mp4"
    trunc.write_bytes(SAMPLE.read_bytes()[:4000])
    files = {"missing": folder / "does-not-exist.mp4", "empty": empty, "random": rand, "text": text,
             "truncated": trunc}
    if shutil.which("ffmpeg"):
        audio = folder / "audio only.m4a"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                        "-c:a", "aac", str(audio)], check=True)
        files["audio_only"] = audio
    return files


@pytest.mark.parametrize("kind", ["missing", "empty", "random", "text", "truncated", "audio_only"])
def test_bad_input_one_line_error_no_output(tmp_path, kind):
    files = _bad_inputs(tmp_path / "in")
    if kind not in files:
        pytest.skip("ffmpeg is needed to make an audio-only file")
    src = files[kind]
    before = sha(src) if src.exists() else None
    out = tmp_path / "out" / "result.mp4"
    out.parent.mkdir()
    r = run_v2v("restyle", src, "-p", "a dancer", "-o", out, "--models", "tiny")
    assert r.returncode == 3, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("v2v: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert list(out.parent.iterdir()) == []  # nothing left behind, not even a temp file
    assert (sha(src) if src.exists() else None) == before  # the input untouched


def test_truncated_and_text_errors_say_what_is_wrong(tmp_path):
    files = _bad_inputs(tmp_path)
    r = run_v2v("restyle", files["text"], "-p", "x", "--models", "tiny")
    assert "not" in r.stderr.lower() and "video" in r.stderr.lower()
    r = run_v2v("restyle", files["missing"], "-p", "x", "--models", "tiny")
    assert "does-not-exist.mp4" in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = run_v2v("restyle", tmp_path / "nope.mp4", "-p", "x", "--debug")
    assert r.returncode == 3 and "Traceback" in r.stderr


def test_output_equal_to_input_is_refused(tmp_path):
    src = tmp_path / "clip.mp4"
    shutil.copy(SAMPLE, src)
    before = sha(src)
    r = run_v2v("restyle", src, "-p", "x", "-o", src, "--models", "tiny")
    assert r.returncode == 4 and "input" in r.stderr and "Traceback" not in r.stderr
    assert sha(src) == before


def test_unwritable_output_folder(tmp_path):
    r = run_v2v("restyle", SAMPLE, "-p", "x", "-o", "/proc/v2v-test-out.mp4", "--models", "tiny")
    assert r.returncode == 4 and "not writable" in r.stderr
    r = run_v2v("restyle", SAMPLE, "-p", "x", "-o", tmp_path / "no" / "such" / "dir.mp4", "--models", "tiny")
    assert r.returncode == 4 and "does not exist" in r.stderr


def test_invalid_option_exit_code(tmp_path):
    r = run_v2v("restyle", SAMPLE, "-p", "x", "--width", "100", "--models", "tiny")
    assert r.returncode == 2 and "multiple of 8" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- the smoke run


@needs_ffprobe
def test_tiny_restyle_keeps_frames_times_audio(tmp_path, tiny_models):
    src = tmp_path / "my dänce clip.mp4"  # spaces and non-ASCII letters in the name
    shutil.copy(SAMPLE, src)
    before = sha(src)
    pose = tmp_path / "pose.mp4"
    r = run_v2v("restyle", src, "-p", "claymation astronaut", "--models", "tiny", "--keep-pose", pose)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "my dänce clip.restyled.mp4"
    assert out.is_file() and sha(src) == before
    settings = out.with_suffix(".json")  # the run's settings record (v2v/settings.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name, pose.name, settings.name])
    info, ref = ffprobe(out), ffprobe(SAMPLE)
    v = [s for s in info["streams"] if s["codec_type"] == "video"][0]
    a = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert v["codec_name"] == "h264" and v["pix_fmt"] == "yuv420p"
    assert v["width"] % 8 == 0 and v["height"] % 8 == 0 and v["width"] == 128
    assert abs(v["width"] / v["height"] - 384 / 512) / (384 / 512) < 0.02
    t_out, t_in = frame_times(out), frame_times(SAMPLE)
    assert len(t_out) == len(t_in) == 96
    assert max(abs((x - t_out[0]) - (y - t_in[0])) for x, y in zip(t_out, t_in)) < 0.5 / 24
    assert len(a) == 1
    ref_a = [s for s in ref["streams"] if s["codec_type"] == "audio"][0]
    assert abs(float(a[0]["duration"]) - float(ref_a["duration"])) < 1 / 24
    assert len(frame_times(pose)) == 96


@needs_ffprobe
def test_tiny_restyle_trims_and_resamples(tmp_path, tiny_models):
    out = tmp_path / "cut.mp4"
    r = run_v2v("restyle", SAMPLE, "-p", "x", "--models", "tiny", "--size", "64", "--start", "1", "--end", "3",
                "--fps", "12", "-o", out)
    assert r.returncode == 0, r.stderr
    t = frame_times(out)
    assert len(t) == 24  # 2 s at 12 fps
    assert all(abs((b - a) - 1 / 12) < 1e-3 for a, b in zip(t, t[1:]))
    audio = [s for s in ffprobe(out)["streams"] if s["codec_type"] == "audio"][0]
    assert abs(float(audio["duration"]) - 2.0) < 1 / 12


# ---------------------------------------------------------------- the default command, offline


@needs_ffprobe
def test_default_command_runs_offline_on_fake_hub_cache(tmp_path, fake_hub):
    out = tmp_path / "out.mp4"
    env = {"HF_HUB_CACHE": str(fake_hub), "HF_HUB_OFFLINE": "1"}
    r = run_v2v("restyle", SAMPLE, "-p", "anime girl in a red kimono", "--size", "64", "--max-frames", "20",
                "-o", out, env=env)
    assert r.returncode == 0, r.stderr
    assert len(frame_times(out)) == 20


def test_missing_model_offline_names_repo_and_fix(tmp_path):
    empty_cache = tmp_path / "hub"
    empty_cache.mkdir()
    out = tmp_path / "out.mp4"
    r = run_v2v("restyle", SAMPLE, "-p", "x", "--size", "64", "-o", out,
                env={"HF_HUB_CACHE": str(empty_cache), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 5, r.stderr
    assert "yzd-v/DWPose" in r.stderr or "emilianJR/epiCRealism" in r.stderr
    assert "online" in r.stderr and "Traceback" not in r.stderr and not out.exists()


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_leaves_no_partial_output(tmp_path, tiny_models):
    out = tmp_path / "out.mp4"
    # the child gets Ctrl-C's default disposition: a test run started as a background job of a non-interactive
    # shell ignores SIGINT (POSIX), the child would inherit that, and Python then installs no KeyboardInterrupt
    p = subprocess.Popen([sys.executable, "-m", "v2v", "restyle", str(SAMPLE), "-p", "x", "--models", "tiny",
                          "--size", "256", "-o", str(out)], stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # wait until the run is past the probe (its first log line) and loading a model or the detector, then
    # interrupt it (a child that hangs before that is killed, so the test fails rather than hangs)
    import threading

    watchdog = threading.Timer(120, p.kill)
    watchdog.start()
    line = p.stderr.readline()
    assert "input" in line, line
    seen = [line]
    while not any("loading" in x for x in seen):
        seen.append(p.stderr.readline())
        assert seen[-1], "".join(seen)  # ended before loading anything
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    rest = "".join(seen) + p.communicate(timeout=120)[1]
    watchdog.cancel()
    assert p.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- watch


@needs_ffprobe
def test_watch_once_restyles_good_and_files_bad(tmp_path, tiny_models):
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(SAMPLE, drop / "good.mp4")
    (drop / "good.txt").write_text("anime girl in a red kimono\n")  # the sidecar prompt wins over -p
    (drop / "broken.mp4").write_bytes(os.urandom(20_000))
    r = run_v2v("watch", drop, "--once", "--settle", "0.2", "--poll", "0.1", "-p", "claymation", "--models", "tiny",
                "--size", "64", "--max-frames", "6")
    assert r.returncode == 3, r.stderr  # some videos failed
    assert "1 done, 1 failed" in r.stdout
    out = drop / "restyled" / "good.restyled.mp4"
    assert len(frame_times(out)) == 6
    assert (drop / "done" / "good.mp4").is_file() and (drop / "done" / "good.txt").is_file()
    assert (drop / "failed" / "broken.mp4").is_file()
    assert "broken.mp4" in (drop / "failed" / "broken.error.txt").read_text()
    assert not (drop / "good.mp4").exists() and not (drop / "broken.mp4").exists()


# ------------------------------------------------------------ progress for scripts (--quiet: test_settings.py)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # every stdout line is one JSON object


def test_progress_json_lines(tmp_path, tiny_models):
    out = tmp_path / "o.mp4"
    r = run_v2v("restyle", SAMPLE, "-p", "x", "--models", "tiny", "--size", "64", "--max-frames", "20", "-o", out,
                "--progress", "json")
    assert r.returncode == 0, r.stderr
    lines = _json_lines(r.stdout)
    updates, final = lines[:-1], lines[-1]
    stages = [u["stage"] for u in updates]
    # the stages begin in order; pose and generate may interleave (generation starts while frames are posed),
    # encode comes after both
    assert [stages.index(s) for s in ("pose", "generate", "encode")] == sorted(stages.index(s) for s in
                                                                                ("pose", "generate", "encode"))
    assert set(stages[stages.index("encode"):]) == {"encode"}
    for stage in ("pose", "generate", "encode"):
        mine = [u for u in updates if u["stage"] == stage]
        done = [u["done"] for u in mine]
        assert done[0] == 0 and done == sorted(done) and done[-1] == mine[-1]["total"]  # monotone, to the end
        assert all(u["elapsed"] >= 0 and (u["eta"] is None or u["eta"] >= 0) for u in mine)
    assert [u["total"] for u in updates if u["stage"] == "encode"][-1] == 20
    assert [u["done"] for u in updates if u["stage"] == "pose"][-1] == 20
    assert final["event"] == "done" and final["output"] == str(out) and final["frames"] == 20
    assert Path(final["settings"]).is_file() and final["settings"] == str(out.with_suffix(".json"))
    assert "\r" not in r.stderr  # no progress bars


def test_progress_json_error_line(tmp_path):
    r = run_v2v("restyle", tmp_path / "missing.mp4", "-p", "x", "--models", "tiny", "--progress", "json")
    assert r.returncode == 3
    (line,) = _json_lines(r.stdout)
    assert line["event"] == "error" and line["exit_code"] == 3 and "missing.mp4" in line["message"]


def test_watch_progress_json_reports_each_video(tmp_path, tiny_models):
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(SAMPLE, drop / "good.mp4")
    (drop / "broken.mp4").write_bytes(os.urandom(20_000))
    r = run_v2v("watch", drop, "--once", "--settle", "0.2", "--poll", "0.1", "-p", "x", "--models", "tiny",
                "--size", "64", "--max-frames", "6", "--progress", "json")
    assert r.returncode == 3, r.stderr
    lines = _json_lines(r.stdout)
    videos = [(ln["video"], ln["status"]) for ln in lines if ln.get("event") == "video"]
    assert sorted(videos) == sorted([("good.mp4", "started"), ("good.mp4", "done"), ("broken.mp4", "started"),
                                     ("broken.mp4", "failed")])
    good = [ln for ln in lines if ln.get("video") == "good.mp4" and "stage" in ln]
    assert {ln["stage"] for ln in good} == {"pose", "generate", "encode"}
    failed = next(ln for ln in lines if ln.get("status") == "failed")
    assert "broken.mp4" in failed["error"]
    assert lines[-1] == {"event": "done", "done": ["good.mp4"], "failed": ["broken.mp4"]}


def test_a_reader_that_goes_away_stops_the_command_quietly(tmp_path):
    """`v2v models | head -1` with a long listing: the pipe closes while v2v still prints; that is not an
    internal error."""
    for i in range(1500):  # more lines than a pipe holds
        (tmp_path / f"models--owner--model-{i:04d}" / "snapshots" / "0123456789abcdef").mkdir(parents=True)
    p = subprocess.run(f"{sys.executable} -m v2v models | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                       executable="/bin/bash", capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "HF_HUB_CACHE": str(tmp_path)})
    assert p.stdout.count("\n") == 1
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 141


def test_keep_pose_into_a_folder_to_be_made_keeps_its_slash(tmp_path, tiny_models):
    """--keep-pose NEWDIR/ (a folder that does not exist yet) is a PNG sequence, as -o NEWDIR/ is: the option's
    type used to drop the slash, and the run stopped on 'has no extension'."""
    from v2v.cli import build_parser, main, typed_options

    a = build_parser().parse_args(["restyle", "in.mp4", "-p", "x", "--keep-pose", "maps/"])
    assert typed_options(a, "restyle")["keep_pose"] == "maps/"
    clip = media.make_video(tmp_path / "clip.mp4", seconds=0.2, fps=25, size=(80, 64))
    run = ["restyle", str(clip), "-p", "x", "--models", "tiny", "--size", "64", "--steps", "1", "--quiet",
           "-o", str(tmp_path / "out.mp4")]
    assert main(run + ["--keep-pose", f"{tmp_path / 'maps'}/"]) == 0
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [f"pose_{i:06d}.png" for i in range(5)]


def test_keep_pose_errors_name_keep_pose(tmp_path, capsys):
    from v2v.cli import main

    clip = media.make_video(tmp_path / "clip.mp4", seconds=0.2, fps=25, size=(80, 64))
    rc = main(["restyle", str(clip), "-p", "x", "--models", "tiny", "-o", str(tmp_path / "out.mp4"),
               "--keep-pose", f"{tmp_path / 'no' / 'maps'}/"])
    err = capsys.readouterr().err
    assert rc == 4 and "does not exist: create it or choose another --keep-pose" in err


def test_main_called_in_process_logs_to_the_stderr_of_the_moment(capsys):
    """A handler made by one main() call keeps following sys.stderr (pytest's capture, an embedding program)."""
    import io
    import logging

    from v2v.cli import main

    main(["models", "--json"])
    capsys.readouterr()
    replaced, sys.stderr = sys.stderr, io.StringIO()
    try:
        logging.getLogger("v2v").error("to the new stream")
        assert "to the new stream" in sys.stderr.getvalue()
    finally:
        sys.stderr = replaced
