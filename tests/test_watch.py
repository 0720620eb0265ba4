"""The watch loop: which files are videos, files still being written, good and bad files (real tiny restyles),
Ctrl-C and errors that stop it, job names for videos of one name. Claims, restarts and racing watchers are in
test_claims, sidecars in test_sidecars. A spy restyler (same ``restyle`` signature) stands in for the pipeline."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from watch_helpers import SAMPLE, Spy, drop, listing, locks, wait_for

import v2v
from v2v.claims import Claims
from v2v.watch import Watcher, is_candidate, watch


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


# ------------------------------------------------------------------------------------------- stopping, errors
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


# ------------------------------------------------------------------------------------------- job names
def test_same_name_again_is_filed_beside_the_first(tmp_path):
    """A video dropped again under the same name gets its own result, named as its input is filed: the first
    result is never replaced, even when only the result (or only its pose video) is left."""
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
    either claim is on disk) must not both write clip.restyled.mp4."""
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    watchers = [Watcher(tmp_path, restyler=Spy(), settle=0, poll=0.01, prompt="x") for _ in range(2)]
    both_chose = threading.Barrier(2, timeout=10)

    class Rendezvous(Claims):
        def claim(self, *args, **kw):
            both_chose.wait()  # each watcher has chosen its job's name; neither claim is on disk yet
            return super().claim(*args, **kw)

    for w in watchers:
        w.claims = Rendezvous(tmp_path)
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


def test_a_name_chosen_just_before_another_job_files_its_result_under_it_is_not_taken(tmp_path):
    """Watcher A has chosen 'clip' for clip.mov (nothing held that name yet); before A's claim is on disk, watcher
    B restyles clip.mp4 as 'clip', files it and lets the name go. A must not write clip.restyled.mp4 again."""
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    a, b = (Watcher(tmp_path, restyler=Spy(), settle=0, poll=0.01, prompt="x") for _ in range(2))
    a_chose, b_filed = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=10)

    class Late(Claims):
        def claim(self, *args, **kw):
            a_chose.wait()  # A has its name...
            b_filed.wait()  # ...and claims it only once B's job under that name is over
            return super().claim(*args, **kw)

    a.claims = Late(tmp_path)
    taken = {}
    t = threading.Thread(target=lambda: taken.update(a=a.claim("clip.mov", dict(a.scan()[0])["clip.mov"])))
    t.start()
    a_chose.wait()
    item = b.process(b.claim("clip.mp4", dict(b.scan()[0])["clip.mp4"]))
    b_filed.wait()
    t.join()
    assert item.output.name == "clip.restyled.mp4"
    assert taken["a"] is None or taken["a"].stem != "clip"
    if taken["a"] is not None:
        a.process(taken["a"])
    watch(tmp_path, restyler=Spy(), once=True, settle=0, poll=0.01, prompt="x")  # what gave way is taken now
    assert listing(tmp_path / "restyled") == ["clip-2.restyled.mp4", "clip.restyled.mp4"]
    assert (tmp_path / "restyled" / "clip.restyled.mp4").read_bytes() == b"restyled clip.mp4"
    assert listing(tmp_path / "done") == ["clip-2.mov", "clip.mp4"] and locks(tmp_path) == []


def test_two_watchers_taking_one_video_at_the_same_moment_keep_its_name(tmp_path):
    """Watcher A holds the name 'clip' for clip.mp4 and has not locked the video yet when watcher B claims it too:
    one of them restyles it, as clip.restyled.mp4 (not clip-2: no earlier clip's result is there)."""
    drop(tmp_path, "clip.mp4")
    a, b = (Watcher(tmp_path, restyler=Spy(), settle=0, poll=0.01, prompt="x") for _ in range(2))
    a_named, b_claimed = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=10)

    class Paused(Claims):
        def claim(self, name, stem, prepare=None):
            def then():  # A's name is on disk, the video's lock not yet
                a_named.wait()
                b_claimed.wait()
                return prepare()
            return super().claim(name, stem, then)

    a.claims = Paused(tmp_path)
    taken = {}
    t = threading.Thread(target=lambda: taken.update(a=a.claim("clip.mp4", dict(a.scan()[0])["clip.mp4"])))
    t.start()
    a_named.wait()
    taken["b"] = b.claim("clip.mp4", dict(b.scan()[0])["clip.mp4"])
    b_claimed.wait()
    t.join()
    (held,) = [c for c in taken.values() if c is not None]
    assert held.stem == "clip"
    (a if taken["a"] else b).process(held)
    assert listing(tmp_path / "restyled") == ["clip.restyled.mp4"] and listing(tmp_path / "done") == ["clip.mp4"]
    assert locks(tmp_path) == []


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
