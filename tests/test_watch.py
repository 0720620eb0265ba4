"""Folder watch mode: files still being written, claims and restarts (kill -9), racing watchers, bad files,
sidecars, Ctrl-C. Real tiny restyles for the good/bad mix; a spy restyler (same ``restyle`` signature) elsewhere."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import v2v
from v2v.watch import Watcher, is_candidate, watch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "dance.mp4"


class Spy:
    """A restyler double: records every call (with the input's size at that moment), writes a small output."""

    def __init__(self, delay: float = 0.0, raise_for: dict | None = None):
        self.calls: list[SimpleNamespace] = []
        self.delay, self.raise_for = delay, raise_for or {}
        self._lock = threading.Lock()

    def restyle(self, input, output=None, *, prompt=None, progress=None, **options):
        input = Path(input)
        with self._lock:
            self.calls.append(SimpleNamespace(name=input.name, size=input.stat().st_size, prompt=prompt,
                                              options=options, at=time.monotonic()))
        if input.name in self.raise_for:
            raise self.raise_for[input.name]
        time.sleep(self.delay)
        Path(output).write_bytes(b"restyled " + input.name.encode())
        return SimpleNamespace(output=Path(output), frames=1, seconds={"pose": 0.0, "total": self.delay})

    def names(self) -> list[str]:
        return [c.name for c in self.calls]


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def drop(folder: Path, name: str, data: bytes = b"\x00fake video\x00") -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def locks(in_dir: Path) -> list[str]:
    """The claims held in IN_DIR: video locks and job names."""
    return sorted(p.name for p in (in_dir / ".processing").iterdir()
                  if p.suffix in (".lock", ".name") and not p.name.startswith("."))


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------- names, settle
def test_which_files_are_videos():
    for name in ("a.mp4", "b.MOV", "c.mkv", "d.webm", "e.avi", "f.m4v", "my clip.2.mp4"):
        assert is_candidate(Path(name)), name
    for name in (".hidden.mp4", "a.mp4.part", "b.mp4.crdownload", "c.mp4.tmp", "d.part.mp4", "notes.txt",
                 "e.json", "f.mp4~", ".clip.1234abcd.part.mp4"):
        assert not is_candidate(Path(name)), name


def test_ignores_hidden_partial_and_other_files(tmp_path):
    for name in (".hidden.mp4", "a.mp4.part", "b.mp4.crdownload", "c.mp4.tmp", "notes.txt", "keep.json",
                 "e.MOV", "f.mkv"):
        drop(tmp_path, name)
    (tmp_path / "folder.mp4").mkdir()
    spy = Spy()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")
    assert sorted(spy.names()) == ["e.MOV", "f.mkv"] and s.stopped == "once"
    assert listing(tmp_path / "done") == ["e.MOV", "f.mkv"]
    assert listing(tmp_path / "restyled") == ["e.restyled.mp4", "f.restyled.mp4"]
    for name in (".hidden.mp4", "a.mp4.part", "b.mp4.crdownload", "c.mp4.tmp", "notes.txt", "keep.json"):
        assert (tmp_path / name).is_file(), name  # untouched
    assert (tmp_path / "folder.mp4").is_dir() and locks(tmp_path) == []


def test_waits_until_a_growing_file_stops_growing(tmp_path):
    data = SAMPLE.read_bytes()
    chunks = [data[i:i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
    target, finished = tmp_path / "slow copy.mp4", {}

    def writer():  # a slow copy: a chunk every 0.1 s (well under the settle time), then a browser-style rename
        with open(target, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                finished["at"] = time.monotonic()  # the last write
                time.sleep(0.1)
        (tmp_path / "late.mp4.crdownload").write_bytes(data)
        time.sleep(0.3)
        os.rename(tmp_path / "late.mp4.crdownload", tmp_path / "late.mp4")
        finished["renamed"] = time.monotonic()

    spy, stop = Spy(), threading.Event()
    result = {}
    watcher = threading.Thread(target=lambda: result.update(s=watch(tmp_path, restyler=spy, settle=1.0, poll=0.05,
                                                                    stop=stop, prompt="x")))
    w = threading.Thread(target=writer)
    watcher.start()
    w.start()
    try:
        assert wait_for(lambda: len(spy.calls) == 2, timeout=30)
    finally:
        stop.set()
        w.join()
        watcher.join(timeout=10)
    assert not watcher.is_alive() and result["s"].stopped == "stop"
    first, second = spy.calls
    assert first.name == "slow copy.mp4" and first.size == len(data)  # never a half-written file
    assert first.at >= finished["at"] + 1.0 - 0.01  # and only once it had been still for `settle` after the last write
    assert second.name == "late.mp4" and second.size == len(data) and second.at >= finished["renamed"]
    assert listing(tmp_path / "done") == ["late.mp4", "slow copy.mp4"]


# ------------------------------------------------------------------------------------------- real restyles
def test_good_and_bad_files_with_real_tiny_restyles(tmp_path, tiny_models, caplog):
    import av

    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(SAMPLE, in_dir / "good.mp4")
    shutil.copy(SAMPLE, in_dir / "good two.mp4")
    (in_dir / "good two.txt").write_text("anime girl\n")
    drop(in_dir, "noise.mp4", os.urandom(5000))
    drop(in_dir, "notes.mp4", b"this is a text file, not a video\n" * 20)
    drop(in_dir, "empty.mp4", b"")
    r = v2v.Restyler(models="tiny", size=64, max_frames=6, show_progress=False)
    with caplog.at_level(logging.INFO, logger="v2v"):
        s = watch(in_dir, tmp_path / "out", restyler=r, once=True, settle=0, poll=0.01, prompt="claymation")
    assert sorted(v.name for v in s.done) == ["good two.mp4", "good.mp4"]
    assert sorted(v.name for v in s.failed) == ["empty.mp4", "noise.mp4", "notes.mp4"]
    assert listing(in_dir / "done") == ["good two.mp4", "good two.txt", "good.mp4"]
    assert listing(in_dir / "failed") == ["empty.error.txt", "empty.mp4", "noise.error.txt", "noise.mp4",
                                          "notes.error.txt", "notes.mp4"]
    assert [p for p in listing(in_dir) if not p.startswith(".")] == ["done", "failed"] and locks(in_dir) == []
    assert listing(tmp_path / "out") == ["good two.restyled.json", "good two.restyled.mp4",  # + settings records
                                         "good.restyled.json", "good.restyled.mp4"]  # no temp files left
    for v in s.done:
        with av.open(str(v.output)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 6
        assert v.result.frames == 6 and {"pose", "generate", "encode", "total"} <= set(v.seconds)
    prompts = {v.name: v.result.settings["prompt"] for v in s.done}
    assert prompts == {"good.mp4": "claymation", "good two.mp4": "anime girl"}
    for v in s.failed:
        text = v.error_file.read_text()
        assert text == v.error + "\n" and text.count("\n") == 1 and len(text) > 10
    assert len(r.loaded_models) == 1  # one model set, loaded once for every video
    done_lines = [m.getMessage() for m in caplog.records if " done in " in m.getMessage()]
    assert len(done_lines) == 2 and all("generate" in line for line in done_lines)


# ------------------------------------------------------------------------------------------- sidecars
def test_sidecar_precedence_and_outputs_stay_in_out_dir(tmp_path):
    for n in "abcdef":
        drop(tmp_path, f"{n}.mp4")
    (tmp_path / "a.json").write_text(json.dumps({"prompt": "from json", "seed": 5, "steps": 2, "fps": "30000/1001",
                                                 "pose_cache": False, "pose_parts": ["body", "hands"]}))
    (tmp_path / "a.txt").write_text("from txt")
    (tmp_path / "b.txt").write_text("  from\n txt \n")
    (tmp_path / "d.json").write_text(json.dumps({"keep_pose": True}))
    (tmp_path / "e.json").write_text(json.dumps({"prompt": "x", "output": "/tmp/elsewhere.mp4"}))
    (tmp_path / "f.json").write_text(json.dumps({"keep_pose": "/tmp/elsewhere.pose.mp4"}))
    spy = Spy()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="base", seed=1)
    calls = {c.name: c for c in spy.calls}
    assert sorted(calls) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]  # e and f never reach the restyler
    assert calls["a.mp4"].prompt == "from json" and calls["a.mp4"].options["seed"] == 5
    assert calls["a.mp4"].options["steps"] == 2 and calls["a.mp4"].options["fps"] == v2v.options.Fraction(30000, 1001)
    assert calls["a.mp4"].options["pose_cache"] is False and calls["a.mp4"].options["pose_parts"] == ("body", "hands")
    assert calls["b.mp4"].prompt == "from txt" and calls["b.mp4"].options["seed"] == 1
    assert calls["c.mp4"].prompt == "base" and calls["c.mp4"].options == {"seed": 1}
    assert calls["d.mp4"].options["keep_pose"] == tmp_path / "restyled" / "d.pose.mp4"
    assert "keep_pose" not in calls["c.mp4"].options
    assert listing(tmp_path / "done") == ["a.json", "a.mp4", "a.txt", "b.mp4", "b.txt", "c.mp4", "d.json", "d.mp4"]
    assert listing(tmp_path / "failed") == ["e.error.txt", "e.json", "e.mp4", "f.error.txt", "f.json", "f.mp4"]
    errors = {v.name: v.error for v in s.failed}
    assert '"output" cannot be set in a sidecar' in errors["e.mp4"]
    assert "keep_pose" in errors["f.mp4"] and "true or false" in errors["f.mp4"]
    assert not Path("/tmp/elsewhere.mp4").exists() and not Path("/tmp/elsewhere.pose.mp4").exists()


def test_a_settings_record_beside_a_video_restyles_it_the_same_way(tmp_path, tiny_models):
    """NAME.json that is a run's settings record (`restyle -o x.mp4` writes x.json) gives its options, not an error
    about its "input"; keypoints from `v2v pose --json` named like a sidecar fail with what to do instead."""
    from v2v.settings import sidecar_path

    first = tmp_path / "first.mp4"
    r = v2v.restyle(SAMPLE, first, prompt="from the record", seed=9, steps=2, models="tiny", size=64,
                    max_frames=4)
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(SAMPLE, in_dir / "clip.mp4")
    shutil.copy(sidecar_path(r.output), in_dir / "clip.json")
    (in_dir / "clip.txt").write_text("from txt")
    v2v.Restyler(models="tiny").pose(SAMPLE, json_path=in_dir / "other.json", max_frames=2, size=64)
    drop(in_dir, "other.mp4")
    spy = Spy()
    s = watch(in_dir, restyler=spy, once=True, settle=0, poll=0.01, prompt="base", seed=1)
    (call,) = spy.calls
    assert call.name == "clip.mp4" and call.prompt == "from the record"
    assert (call.options["seed"], call.options["steps"], call.options["max_frames"]) == (9, 2, 4)
    assert call.options["models"] == "tiny" and call.options["size"] == 64
    (failed,) = s.failed
    assert failed.name == "other.mp4" and "keypoints" in failed.error and '"pose_json"' in failed.error


def test_a_record_with_another_videos_keypoints_fails_that_video(tmp_path, tiny_models):
    """A record made with --pose-json names keypoints detected in its own input: beside a copy of that input it
    reruns with them; beside another video it fails that video, saying to remove "pose_json"."""
    from media import make_video

    from v2v.settings import sidecar_path

    poses = tmp_path / "dance.pose.json"
    restyler = v2v.Restyler(models="tiny", size=64, max_frames=4)
    restyler.pose(SAMPLE, json_path=poses)
    r = restyler.restyle(SAMPLE, tmp_path / "first.mp4", prompt="p", pose_json=poses)
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(SAMPLE, in_dir / "same.mp4")
    make_video(in_dir / "other.mp4", seconds=0.5, fps=25, size=(64, 48))
    for name in ("same", "other"):
        shutil.copy(sidecar_path(r.output), in_dir / f"{name}.json")
    spy = Spy()
    s = watch(in_dir, restyler=spy, once=True, settle=0, poll=0.01)
    assert [c.name for c in spy.calls] == ["same.mp4"] and spy.calls[0].options["pose_json"] == poses
    (failed,) = s.failed
    assert failed.name == "other.mp4" and '"pose_json"' in failed.error and "another video" in failed.error


def test_malformed_sidecars_fail_their_video_alone(tmp_path):
    bad = {"g.json": "{prompt: 'x'", "h.json": json.dumps({"colour": "red"}), "i.json": json.dumps({"steps": 0}),
           "j.json": json.dumps({"steps": "four"}), "k.json": "[1, 2]", "l.txt": "  \n",
           "m.json": json.dumps({"size": 64, "width": 64}), "n.json": json.dumps({"pose_cache": "no"})}
    for name, text in bad.items():
        drop(tmp_path, name[0] + ".mp4")
        (tmp_path / name).write_text(text)
    drop(tmp_path, "ok.mp4")
    drop(tmp_path, "noprompt.mp4")
    spy = Spy()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, **{"prompt": None})
    assert spy.names() == []  # no prompt anywhere for ok.mp4 either
    assert {v.name for v in s.failed} == {"g.mp4", "h.mp4", "i.mp4", "j.mp4", "k.mp4", "l.mp4", "m.mp4", "n.mp4",
                                          "ok.mp4", "noprompt.mp4"}
    (tmp_path / "failed" / "ok.mp4").rename(tmp_path / "ok.mp4")
    s2 = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="fine")
    assert spy.names() == ["ok.mp4"] and [v.name for v in s2.done] == ["ok.mp4"]
    reasons = {v.name: (tmp_path / "failed" / f"{v.name[:-4]}.error.txt").read_text() for v in s.failed}
    assert "g.json is not valid JSON" in reasons["g.mp4"]
    assert "unknown option(s): colour" in reasons["h.mp4"]
    assert "--steps must be between 1 and 100" in reasons["i.mp4"]
    assert '"steps" must be a whole number, got "four"' in reasons["j.mp4"]
    assert "must hold a JSON object" in reasons["k.mp4"]
    assert "l.txt is empty" in reasons["l.mp4"]
    assert "either --size or --width" in reasons["m.mp4"]
    assert '"pose_cache" must be true or false' in reasons["n.mp4"]
    assert "no prompt for noprompt.mp4" in reasons["noprompt.mp4"]
    for name in bad:  # each sidecar moved along with its video
        assert (tmp_path / "failed" / name).is_file() and not (tmp_path / name).exists()


# ------------------------------------------------------------------------------------------- restarts
HELPER = r'''
import os, sys, time
from pathlib import Path
from types import SimpleNamespace
from v2v.watch import watch

mode, in_dir, log_path = sys.argv[1], sys.argv[2], sys.argv[3]

def note(*words):
    with open(log_path, "a") as f:  # O_APPEND: whole lines from several processes
        f.write(" ".join(map(str, (os.getpid(),) + words)) + "\n")

class Fake:
    def restyle(self, input, output=None, *, prompt=None, progress=None, **options):
        name = Path(input).name.replace(" ", "_")
        note("start", name)
        if mode == "hang":
            time.sleep(600)
        Path(output).write_bytes(b"restyled by " + str(os.getpid()).encode())
        if mode == "write-then-hang":
            note("wrote", name)
            time.sleep(600)
        time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
        note("end", name)
        return SimpleNamespace(output=Path(output), seconds={"total": 0.0})

s = watch(in_dir, restyler=Fake(), once=True, settle=0, poll=0.02, prompt="x")
note("exit", len(s.done), len(s.failed))
'''


@pytest.fixture
def helper(tmp_path):
    path = tmp_path / "watch_helper.py"
    path.write_text(HELPER)
    return path


def _start(helper: Path, mode: str, in_dir: Path, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(helper), mode, str(in_dir), str(log)], cwd=ROOT,
                            env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)


def _kill9(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    # leave it a zombie (not reaped): a dead owner must be recognised as dead in that state too
    assert wait_for(lambda: Path(f"/proc/{p.pid}/stat").read_text().split(")")[-1].split()[0] == "Z", 10)


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_kill_9_mid_job_then_restart_processes_it_exactly_once(tmp_path, helper):
    in_dir, log = tmp_path / "in", tmp_path / "calls.log"
    in_dir.mkdir()
    drop(in_dir, "clip.mp4")
    (in_dir / "clip.txt").write_text("the prompt")
    p = _start(helper, "hang", in_dir, log)
    try:
        assert wait_for(lambda: any(w[1:] == ["start", "clip.mp4"] for w in _lines(log)))
        assert locks(in_dir) == ["clip.mp4.lock", "clip.name"]  # the video and the job's name
        _kill9(p)
        assert (in_dir / "clip.mp4").is_file() and listing(in_dir / "restyled") == []  # nothing lost, nothing made
        spy = Spy()
        s = watch(in_dir, restyler=spy, once=True, settle=0, poll=0.01)  # the prompt comes from clip.txt
    finally:
        p.kill()
        p.wait()
    assert s.reclaimed == ["clip.mp4"] and spy.names() == ["clip.mp4"] and spy.calls[0].prompt == "the prompt"
    assert listing(in_dir / "done") == ["clip.mp4", "clip.txt"] and not (in_dir / "clip.mp4").exists()
    assert listing(in_dir / "restyled") == ["clip.restyled.mp4"] and locks(in_dir) == []
    assert [w for w in _lines(log) if w[1] == "end"] == []


@pytest.mark.parametrize("earlier", [False, True])
def test_kill_9_after_the_output_was_written_does_not_restyle_again(tmp_path, helper, earlier):
    """The killed run's result is found and its input filed, not restyled again. ``earlier``: a result of an
    earlier clip.mp4 is there, so the job was clip-2 (its claim records that name; the restart looks for it)."""
    in_dir, log = tmp_path / "in", tmp_path / "calls.log"
    (in_dir / "restyled").mkdir(parents=True)
    if earlier:
        (in_dir / "restyled" / "clip.restyled.mp4").write_bytes(b"the first clip's result")
    drop(in_dir, "clip.mp4")
    p = _start(helper, "write-then-hang", in_dir, log)
    try:
        assert wait_for(lambda: any(w[1:] == ["wrote", "clip.mp4"] for w in _lines(log)))
        _kill9(p)
        spy = Spy()
        s = watch(in_dir, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")
    finally:
        p.kill()
        p.wait()
    stem = "clip-2" if earlier else "clip"
    assert spy.names() == [] and s.reclaimed == ["clip.mp4"]  # produced once, by the killed run
    assert [(v.name, v.status, v.input.name, v.output.name) for v in s.videos] == [
        ("clip.mp4", "done", f"{stem}.mp4", f"{stem}.restyled.mp4")]
    assert listing(in_dir / "done") == [f"{stem}.mp4"] and locks(in_dir) == []
    assert (in_dir / "restyled" / f"{stem}.restyled.mp4").read_bytes() == f"restyled by {p.pid}".encode()
    if earlier:
        assert (in_dir / "restyled" / "clip.restyled.mp4").read_bytes() == b"the first clip's result"


def test_claims_of_live_or_foreign_owners_are_kept_dead_ones_reclaimed(tmp_path):
    for n in "abc":
        drop(tmp_path, f"{n}.mp4")
    (tmp_path / ".processing").mkdir()
    me = socket.gethostname()
    lock = {"a": {"pid": os.getpid(), "host": me, "start": None, "token": "live"},  # this process: alive
            "b": {"pid": 1, "host": "some-other-host", "start": None, "token": "foreign"},  # cannot be checked
            "c": {"pid": os.getpid(), "host": me, "start": "1", "token": "reused-pid"}}  # pid reused: dead owner
    for n, info in lock.items():
        (tmp_path / ".processing" / f"{n}.mp4.lock").write_text(json.dumps(info))
    spy = Spy()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")
    assert spy.names() == ["c.mp4"] and s.reclaimed == ["c.mp4"]
    assert locks(tmp_path) == ["a.mp4.lock", "b.mp4.lock"] and (tmp_path / "a.mp4").exists()


def test_ctrl_c_abandons_the_video_and_releases_the_claim(tmp_path):
    drop(tmp_path, "clip.mp4")
    spy = Spy(raise_for={"clip.mp4": KeyboardInterrupt()})
    with pytest.raises(v2v.Interrupted) as e:
        watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")
    assert e.value.summary.stopped == "interrupted" and e.value.summary.videos == []
    assert (tmp_path / "clip.mp4").is_file() and locks(tmp_path) == [] and listing(tmp_path / "restyled") == []
    s = watch(tmp_path, restyler=Spy(), once=True, settle=0, poll=0.01, prompt="x")  # the next run takes it
    assert [v.name for v in s.done] == ["clip.mp4"]


class Vanishing(Spy):
    """Removes the input mid-restyle, then fails like the pipeline (``error``) or finishes (None)."""

    def __init__(self, error=None):
        super().__init__()
        self.error = error

    def restyle(self, input, output=None, **kw):
        if Path(input).name != "gone.mp4":
            return super().restyle(input, output, **kw)
        Path(input).unlink()
        if self.error is not None:
            raise self.error
        Path(output).write_bytes(b"restyled")
        return SimpleNamespace(output=Path(output), frames=1, seconds={})


@pytest.mark.parametrize("error", [v2v.InputNotFound("input 'gone.mp4' is no longer there"), None])
def test_a_video_removed_mid_job_does_not_stop_the_watcher(tmp_path, error):
    drop(tmp_path, "gone.mp4")
    drop(tmp_path, "next.mp4")
    os.utime(tmp_path / "gone.mp4", (1, 1))  # taken first
    s = watch(tmp_path, restyler=Vanishing(error), once=True, settle=0, poll=0.01, prompt="x")
    assert [v.name for v in s.done] == (["next.mp4"] if error else ["gone.mp4", "next.mp4"])
    assert [v.name for v in s.failed] == (["gone.mp4"] if error else [])
    assert locks(tmp_path) == [] and listing(tmp_path / "failed") == [] and listing(tmp_path / "done") == ["next.mp4"]


def test_ctrl_c_while_idle_says_so(tmp_path, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Watcher, "scan", interrupted)
    with pytest.raises(v2v.Interrupted, match="no video was in progress"):  # not "the video ... was put back"
        watch(tmp_path, restyler=Spy(), settle=0, poll=0.01, prompt="x")


def test_errors_that_would_fail_every_video_stop_the_watcher(tmp_path):
    drop(tmp_path, "a.mp4")
    drop(tmp_path, "b.mp4")
    (tmp_path / "b.json").write_text(json.dumps({"base": "/no/such/model"}))
    missing = v2v.ModelNotFound("model 'x' is not cached: run once online")
    spy = Spy(raise_for={"a.mp4": missing, "b.mp4": missing})
    os.utime(tmp_path / "a.mp4", (1, 1))  # a is the oldest: taken first
    with pytest.raises(v2v.ModelNotFound):
        watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")
    assert (tmp_path / "a.mp4").is_file() and locks(tmp_path) == [] and spy.names() == ["a.mp4"]
    (tmp_path / "a.mp4").unlink()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")  # b chose its own model
    assert [v.name for v in s.failed] == ["b.mp4"] and "not cached" in s.failed[0].error


def test_bad_watch_arguments(tmp_path):
    with pytest.raises(v2v.InputNotFound):
        watch(tmp_path / "missing", once=True)
    with pytest.raises(v2v.InvalidOptions):
        watch(tmp_path, tmp_path, once=True, prompt="x")
    with pytest.raises(v2v.InvalidOptions):
        watch(tmp_path, once=True, prompt="x", steps=0)
    with pytest.raises(v2v.InvalidOptions):
        watch(tmp_path, once=True, prompt="x", colour="red")
    with pytest.raises(v2v.InvalidOptions):
        watch(tmp_path, once=True, prompt="x", keep_pose="/tmp/one.pose.mp4")


def test_same_name_again_is_filed_beside_the_first(tmp_path):
    """A video dropped again under the same name gets its own result, named as its input is filed: the first
    result is never replaced (it was: done/clip-2.mp4, but restyled/clip.restyled.mp4 overwritten)."""
    spy = Spy()
    for k in range(2):
        drop(tmp_path, "clip.mp4", f"take {k}".encode())
        (tmp_path / "clip.txt").write_text("p")
        watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, keep_pose=True)
    assert listing(tmp_path / "done") == ["clip-2.mp4", "clip-2.txt", "clip.mp4", "clip.txt"]
    assert (tmp_path / "done" / "clip-2.mp4").read_bytes() == b"take 1"
    out = tmp_path / "restyled"
    assert [c.options["keep_pose"] for c in spy.calls] == [out / "clip.pose.mp4", out / "clip-2.pose.mp4"]
    assert listing(out) == ["clip-2.restyled.mp4", "clip.restyled.mp4"]
    # a result is there, its input gone from done/ (or the pose video alone): still not replaced
    (tmp_path / "done" / "clip-2.mp4").unlink()
    (tmp_path / "done" / "clip-2.txt").unlink()
    drop(tmp_path, "clip.mp4")
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x")
    assert s.videos[0].output.name == "clip-3.restyled.mp4" and s.videos[0].input.name == "clip-3.mp4"


def test_two_videos_of_one_name_at_once_get_their_own_results(tmp_path):
    """clip.mp4 and clip.mov dropped together (and claimed while both are in progress) write two results."""
    spy = Spy()
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    w = Watcher(tmp_path, restyler=spy, settle=0, poll=0.01, prompt="x")
    ready, _ = w.scan()
    ready, _ = w.scan() if not ready else (ready, None)
    claims = [w.claim(*r) for r in sorted(ready)]
    assert sorted(c.stem for c in claims) == ["clip", "clip-2"]  # the second sees the first's claim
    for c in claims:
        w.process(c)
    assert listing(tmp_path / "restyled") == ["clip-2.restyled.mp4", "clip.restyled.mp4"]
    assert listing(tmp_path / "done") == ["clip-2.mov", "clip.mp4"] or \
        listing(tmp_path / "done") == ["clip-2.mp4", "clip.mov"]  # each input filed under its result's name


def test_two_watchers_naming_two_videos_of_one_name_at_the_same_moment_write_two_results(tmp_path):
    """Two watchers that choose a job name at the same moment (clip.mp4 on one, clip.mov on the other, before
    either claim is on disk) must not both write clip.restyled.mp4: one result overwrote the other."""
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    watchers = [Watcher(tmp_path, restyler=Spy(), settle=0, poll=0.01, prompt="x") for _ in range(2)]
    both_chose = threading.Barrier(2, timeout=10)
    for w in watchers:
        def chosen(video, real=w.job_stem):
            stem = real(video)
            both_chose.wait()  # each has its name before the other's claim exists
            return stem
        w.job_stem = chosen
    claims = {}

    def take(w, name):
        ready, _ = w.scan()
        claims[name] = w.claim(name, dict(ready or w.scan()[0])[name])

    threads = [threading.Thread(target=take, args=(w, n)) for w, n in zip(watchers, ["clip.mp4", "clip.mov"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [c for c in claims.values() if c is not None]
    assert len({c.stem for c in held}) == len(held)  # never one name for two jobs
    for c in held:
        watchers[0].process(c)
    watch(tmp_path, restyler=Spy(), once=True, settle=0, poll=0.01, prompt="x")  # what gave way is taken now
    assert listing(tmp_path / "restyled") == ["clip-2.restyled.mp4", "clip.restyled.mp4"]


# ------------------------------------------------------------------------------------------- races
def test_two_failures_filed_under_one_name_at_the_same_moment_keep_both_reasons(tmp_path):
    """clip.mp4 and clip.mov failing at once on two watchers, each finding failed/clip.* free: neither
    reason may replace the other (each was written to the free name it found)."""
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    watchers = [Watcher(tmp_path, restyler=Spy(), settle=0, poll=0.01, prompt="x") for _ in range(2)]
    both_chose = threading.Barrier(2, timeout=10)
    for w in watchers:
        def free(video, folder, real=w._free_stem, first=[True]):
            stem = real(video, folder)
            if first[0]:
                first[0] = False
                both_chose.wait()  # each has found the name free before the other filed anything
            return stem
        w._free_stem = free
    messages = {"clip.mp4": "bad a", "clip.mov": "bad b"}
    items = {}

    def fail(w, name):
        items[name] = w._fail(SimpleNamespace(name=name, video=tmp_path / name), messages[name], 0.0)

    threads = [threading.Thread(target=fail, args=(w, n)) for w, n in zip(watchers, messages)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, item in items.items():
        assert item.error_file.read_text() == messages[name] + "\n"
        assert item.error_file.name == f"{item.input.stem}.error.txt" and item.input.suffix == Path(name).suffix
    assert sorted(listing(tmp_path / "failed")) == sorted(
        [items[n].input.name for n in messages] + [items[n].error_file.name for n in messages])
    assert len({item.error_file for item in items.values()}) == 2


def test_threads_racing_on_one_folder_take_each_video_once(tmp_path):
    names = [f"v{i:02d}.mp4" for i in range(12)]
    for n in names:
        drop(tmp_path, n)
    spy, barrier, summaries = Spy(delay=0.02), threading.Barrier(3), []

    def run():
        barrier.wait()
        summaries.append(watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="x"))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert Counter(spy.names()) == Counter(names)  # each exactly once
    assert sorted(v.name for s in summaries for v in s.done) == names
    assert listing(tmp_path / "done") == names and locks(tmp_path) == []


def test_processes_racing_on_one_folder_take_each_video_once(tmp_path, helper):
    in_dir, log = tmp_path / "in", tmp_path / "calls.log"
    in_dir.mkdir()
    names = [f"v{i}.mp4" for i in range(8)]
    for n in names:
        drop(in_dir, n)
    procs = [_start(helper, "once", in_dir, log, FAKE_DELAY="0.05") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    lines = _lines(log)
    assert Counter(w[2] for w in lines if w[1] == "start") == Counter(names)
    assert Counter(w[2] for w in lines if w[1] == "end") == Counter(names)
    exits = [w for w in lines if w[1] == "exit"]
    assert len(exits) == 2 and sum(int(w[2]) for w in exits) == 8 and all(w[3] == "0" for w in exits)
    assert listing(in_dir / "done") == names and locks(in_dir) == []


def test_watcher_api_pieces(tmp_path):
    drop(tmp_path, "clip.mp4")
    w = Watcher(tmp_path, restyler=Spy(), settle=0, prompt="x")
    (ready, wait) = w.scan()
    assert [n for n, _ in ready] == ["clip.mp4"] and wait is None
    claim = w.claim(*ready[0])
    assert claim is not None and w.claim(*ready[0]) is None  # a claimed video cannot be claimed twice
    assert w.scan()[0] == []  # nor is it offered again
    w.release(claim)
    assert [n for n, _ in w.scan()[0]] == ["clip.mp4"]
