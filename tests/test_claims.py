"""The claim protocol (v2v.claims): claims of a video and of a job's name, restarts after kill -9, dead and foreign
owners, watchers racing on one folder (threads and processes), filing into done/ and failed/ under free names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from watch_helpers import ROOT, Spy, drop, listing, locks, wait_for

from v2v import claims
from v2v.claims import Claims, create_exclusive, file_away, file_failure, free_stem, move_exclusive
from v2v.watch import Watcher, watch

DEAD = {"pid": os.getpid(), "host": socket.gethostname(), "start": "1"}  # this pid, started at another time: reused


def record(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------- claims
def test_a_claim_holds_the_jobs_name_then_the_video(tmp_path):
    drop(tmp_path, "clip.mp4")
    c = Claims(tmp_path)
    c.dir.mkdir()
    asked = []
    claim = c.claim("clip.mp4", "clip", lambda: asked.append(locks(tmp_path)) or {"output_before": None})
    assert asked == [["clip.name"]]  # once the name is held, before the video is
    assert claim is not None and (claim.stem, claim.video) == ("clip", tmp_path / "clip.mp4")
    assert locks(tmp_path) == ["clip.mp4.lock", "clip.name"] and c.held("clip.mp4")
    assert c.reserved() == {"clip"} and c.reserved(taking="clip.mp4") == set()  # being taken at this moment
    assert c.reserved(taking="clip.mov") == {"clip"}
    for path in (claim.lock, claim.reservation):
        r = record(path)
        assert (r["token"], r["video"], r["stem"], r["pid"]) == (claim.token, "clip.mp4", "clip", os.getpid())
    assert record(claim.lock)["output_before"] is None
    assert c.claim("clip.mp4", "clip-2") is None  # the video is held: the name taken for it is given back
    assert c.claim("clip.mov", "clip") is None  # the name is held
    assert c.claim("clip.mov", "clip-2", lambda: None) is None  # prepare gave the name back
    with pytest.raises(KeyError):
        c.claim("clip.mov", "clip-2", lambda: {}["no"])
    assert locks(tmp_path) == ["clip.mp4.lock", "clip.name"] and listing(c.dir) == ["clip.mp4.lock", "clip.name"]
    os.utime(claim.reservation, (1, 1))
    assert c.reserved(taking="clip.mp4") == {"clip"}  # held that long: not a claim being made
    c.release(claim)
    assert locks(tmp_path) == [] and not c.held("clip.mp4")
    again = c.claim("clip.mp4", "clip")
    c.finish(again)
    assert locks(tmp_path) == []


def test_a_claim_gives_back_only_its_own_files(tmp_path):
    c = Claims(tmp_path)
    c.dir.mkdir()
    claim = c.claim("clip.mp4", "clip")
    claim.lock.unlink()  # taken back meanwhile, and the video claimed again by another watcher
    other = c.claim("clip.mp4", "clip-2")
    c.release(claim)
    assert other.lock.exists() and record(other.lock)["token"] == other.token
    assert locks(tmp_path) == ["clip-2.name", "clip.mp4.lock"]


def test_one_name_claimed_for_two_videos_at_the_same_moment_goes_to_one(tmp_path):
    for name in ("clip.mp4", "clip.mov"):
        drop(tmp_path, name)
    (tmp_path / ".processing").mkdir()
    both = threading.Barrier(2, timeout=10)
    held = {}

    def take(name):
        c = Claims(tmp_path)  # a watcher each
        both.wait()
        held[name] = c.claim(name, "clip")

    threads = [threading.Thread(target=take, args=(n,)) for n in ("clip.mp4", "clip.mov")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (winner,) = [c for c in held.values() if c is not None]
    assert locks(tmp_path) == sorted([f"{winner.name}.lock", "clip.name"])


def test_exclusive_files_never_replace_one_another(tmp_path, monkeypatch):
    for hard_links in (True, False):
        folder = tmp_path / str(hard_links)
        folder.mkdir()
        if not hard_links:  # a file system without them: O_EXCL, and a check before the rename
            monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(PermissionError("no links")))
        assert create_exclusive(folder / "a", "one") and not create_exclusive(folder / "a", "two")
        assert (folder / "a").read_text() == "one" and listing(folder) == ["a"]  # no temp file left
        (folder / "b").write_text("b")
        with pytest.raises(FileExistsError):
            move_exclusive(folder / "b", folder / "a")
        with pytest.raises(FileNotFoundError):
            move_exclusive(folder / "nothing", folder / "c")
        move_exclusive(folder / "b", folder / "c")
        assert listing(folder) == ["a", "c"] and (folder / "a").read_text() == "one"



def test_moving_without_hard_links_never_replaces_a_file_filed_there_meanwhile(tmp_path, monkeypatch):
    """Without hard links a move is not one step: another watcher filing under the same name between this one's
    check and its rename must not be replaced by it, nor replace it; one of the two gives way."""
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(PermissionError("no links")))
    for name in ("mine", "theirs"):
        (tmp_path / name).write_text(name)
    dst, gave_way, real_replace = tmp_path / "clip.mp4", [], os.replace

    def replace(src, dst_):
        if Path(src).name == "mine":  # this watcher is about to rename: the other one files there first
            try:
                move_exclusive(tmp_path / "theirs", dst)
            except FileExistsError:
                gave_way.append("theirs")
        return real_replace(src, dst_)

    monkeypatch.setattr(os, "replace", replace)
    try:
        move_exclusive(tmp_path / "mine", dst)
    except FileExistsError:
        gave_way.append("mine")
    assert len(gave_way) == 1 and (tmp_path / gave_way[0]).read_text() == gave_way[0]
    assert listing(tmp_path) == sorted(["clip.mp4", gave_way[0]]) and dst.read_text() != gave_way[0]

# ------------------------------------------------------------------------------------------- reclaiming
def test_reclaim_takes_back_dead_claims_and_keeps_live_and_foreign_ones(tmp_path):
    c = Claims(tmp_path)
    c.dir.mkdir()
    me = socket.gethostname()
    live = c.claim("live.mp4", "live")
    for name, owner in (("dead", DEAD), ("foreign", {"pid": 1, "host": "some-other-host", "start": None})):
        for suffix in (".mp4.lock", ".name"):
            (c.dir / f"{name}{suffix}").write_text(json.dumps({**owner, "token": name, "stem": name}))
    (c.dir / "half.name").write_text(json.dumps({**DEAD, "token": "t"}))  # killed before it took its video
    (c.dir / ".claim-t").write_text(json.dumps({**DEAD, "token": "t"}))  # killed while writing a claim
    (c.dir / "mine.name").write_text(json.dumps({"pid": os.getpid(), "host": me, "start": None, "token": "m"}))
    seen = []
    assert c.reclaim(lambda *a: seen.append(a)) == ["dead.mp4"]
    assert seen == [("dead.mp4", "dead", {**DEAD, "token": "dead", "stem": "dead"})]
    assert locks(tmp_path) == ["foreign.mp4.lock", "foreign.name", "live.mp4.lock", "live.name", "mine.name"]
    assert not (c.dir / ".claim-t").exists() and live.lock.exists()
    assert c.reclaim() == []


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



def test_a_stale_claim_reclaimed_meanwhile_and_claimed_again_is_left_to_its_new_owner(tmp_path):
    """Watcher A finds clip.mp4.lock unreadable and old (its writer killed mid-way: file systems without hard
    links create claims with O_EXCL, then write them). Before A holds the host mutex, watcher B takes that lock
    back and a live watcher starts writing a new one: A must leave the new one alone."""
    c = Claims(tmp_path)
    c.dir.mkdir()
    lock = c.lock_path("clip.mp4")
    lock.write_text("")
    os.utime(lock, (1, 1))
    a_checked, b_done, first = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=10), []

    class Late(Claims):
        def mutex(self):
            if not first:
                first.append(1)
                a_checked.wait()  # A has seen the old unreadable lock
                b_done.wait()
            return super().mutex()

    taken = {}
    t = threading.Thread(target=lambda: taken.update(a=Late(tmp_path).reclaim()))
    t.start()
    a_checked.wait()
    taken["b"] = Claims(tmp_path).reclaim()
    lock.write_text("")  # a live watcher's claim, being written
    b_done.wait()
    t.join()
    assert taken == {"b": ["clip.mp4"], "a": []} and lock.exists()

# ------------------------------------------------------------------------------------------- restarts
HELPER = r'''
import os, sys, time
from pathlib import Path
from types import SimpleNamespace
from v2v.watch import Watcher, watch

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
    # this checkout's v2v first: a script's own folder, not the current one, starts sys.path, and an installed v2v
    # (an editable install of another checkout) would be imported in its place
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, str(helper), mode, str(in_dir), str(log)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": path, **env}, stderr=subprocess.PIPE, text=True)


def test_the_watchers_started_here_run_this_checkouts_v2v(tmp_path):
    script = tmp_path / "where.py"
    script.write_text("import v2v.claims, sys; sys.stderr.write(v2v.claims.__file__)")
    p = _start(script, "-", tmp_path, tmp_path / "log")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and Path(err) == ROOT / "v2v" / "claims.py", err


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


@pytest.mark.parametrize("earlier,ext", [(False, ".mp4"), (True, ".mp4"), (False, ".webm")])
def test_kill_9_after_the_output_was_written_does_not_restyle_again(tmp_path, helper, earlier, ext):
    """The killed run's result is found and its input filed, not restyled again. ``earlier``: a result of an
    earlier clip.mp4 is there, so the job was clip-2 (its claim records that name; the restart looks for it).
    ``ext``: .webm when the video's sidecar chose VP9 (the claim records the output it was to write)."""
    in_dir, log = tmp_path / "in", tmp_path / "calls.log"
    (in_dir / "restyled").mkdir(parents=True)
    if earlier:
        (in_dir / "restyled" / "clip.restyled.mp4").write_bytes(b"the first clip's result")
    drop(in_dir, "clip.mp4")
    if ext == ".webm":
        (in_dir / "clip.json").write_text(json.dumps({"format": "vp9"}))
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
        ("clip.mp4", "done", f"{stem}.mp4", f"{stem}.restyled{ext}")]
    sidecar = [f"{stem}.json"] if ext == ".webm" else []
    assert listing(in_dir / "done") == sorted([f"{stem}.mp4", *sidecar]) and locks(in_dir) == []
    assert (in_dir / "restyled" / f"{stem}.restyled{ext}").read_bytes() == f"restyled by {p.pid}".encode()
    if earlier:
        assert (in_dir / "restyled" / "clip.restyled.mp4").read_bytes() == b"the first clip's result"


# ------------------------------------------------------------------------------------------- races
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


# ------------------------------------------------------------------------------------------- filing
def test_filing_takes_a_free_name_and_the_sidecars_along(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    drop(done, "clip.mp4")
    video = drop(tmp_path, "clip.mp4", b"second")
    (tmp_path / "clip.txt").write_text("p")
    assert free_stem(done, "clip", [".mp4", ".txt"]) == "clip-2" and free_stem(done, "clip", [".mov"]) == "clip"
    assert file_away(video, done) == done / "clip-2.mp4"
    assert listing(done) == ["clip-2.mp4", "clip-2.txt", "clip.mp4"] and listing(tmp_path) == ["done"]
    assert file_away(video, done) is None  # no longer there
    video = drop(tmp_path, "x.mp4")
    (tmp_path / "x.json").write_text("{}")
    assert file_away(video, done, "x", shared=lambda v: True) == done / "x.mp4"  # another x.* still needs x.json
    assert (tmp_path / "x.json").is_file() and (done / "x.json").is_file()



def test_a_sidecar_that_cannot_be_copied_stays_beside_where_its_video_was(tmp_path, monkeypatch, caplog):
    (tmp_path / "done").mkdir()
    video = drop(tmp_path, "y.mp4")
    (tmp_path / "y.txt").write_text("p")
    (tmp_path / "y.json").write_text("{}")
    real = shutil.copy2
    monkeypatch.setattr(shutil, "copy2", lambda src, dst: (_ for _ in ()).throw(OSError("disk error"))
                        if Path(src).suffix == ".txt" else real(src, dst))
    assert file_away(video, tmp_path / "done") == tmp_path / "done" / "y.mp4"
    assert listing(tmp_path / "done") == ["y.json", "y.mp4"] and (tmp_path / "y.txt").read_text() == "p"
    assert "could not file y.txt" in caplog.text and "disk error" in caplog.text


def test_filing_under_a_name_taken_meanwhile_gives_back_what_it_made_there(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "a.json").write_text("another video's")  # filed under 'a' by another watcher since 'a' was chosen
    (done / "b.mp4").write_text("another video's")
    for name in ("a", "b"):
        drop(tmp_path, f"{name}.mp4")
        (tmp_path / f"{name}.json").write_text("{}")
        assert file_away(tmp_path / f"{name}.mp4", done, name) == done / f"{name}-2.mp4"
    assert listing(done) == ["a-2.json", "a-2.mp4", "a.json", "b-2.json", "b-2.mp4", "b.mp4"]
    assert (done / "a.json").read_text() == "another video's" and listing(tmp_path) == ["done"]


def test_two_failures_filed_under_one_name_at_the_same_moment_keep_both_reasons(tmp_path, monkeypatch):
    """clip.mp4 and clip.mov failing at once on two watchers, each finding failed/clip.* free: neither
    reason may replace the other."""
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    failed = tmp_path / "failed"
    failed.mkdir()
    both_chose, first = threading.Barrier(2, timeout=10), set()
    real = claims.free_stem

    def free(*args):
        stem = real(*args)
        if threading.get_ident() not in first:
            first.add(threading.get_ident())
            both_chose.wait()  # each has found the name free before the other filed anything
        return stem

    monkeypatch.setattr(claims, "free_stem", free)
    messages = {"clip.mp4": "bad a", "clip.mov": "bad b"}
    filed = {}

    def fail(name):
        filed[name] = file_failure(tmp_path / name, failed, messages[name])

    threads = [threading.Thread(target=fail, args=(n,)) for n in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, (moved, error_file) in filed.items():
        assert error_file.read_text() == messages[name] + "\n"
        assert error_file.name == f"{moved.stem}.error.txt" and moved.suffix == Path(name).suffix
    assert sorted(listing(failed)) == sorted([p.name for pair in filed.values() for p in pair])
    assert len({error_file for _, error_file in filed.values()}) == 2


def test_two_videos_sharing_a_sidecar_filed_at_the_same_moment_each_keep_it(tmp_path, monkeypatch):
    """clip.mp4 and clip.mov beside one clip.json, finished at once by two watchers that each moved its video
    before either looked for the other: each is filed with its own copy of clip.json."""
    drop(tmp_path, "clip.mp4")
    drop(tmp_path, "clip.mov")
    (tmp_path / "clip.json").write_text(json.dumps({"seed": 7}))
    spy = Spy()
    watchers = [Watcher(tmp_path, restyler=spy, settle=0, poll=0.01, prompt="x") for _ in range(2)]
    held = [w.claim(name, dict(w.scan()[0])[name]) for w, name in zip(watchers, ("clip.mp4", "clip.mov"))]
    both_moved, real = threading.Barrier(2, timeout=10), claims.move_exclusive

    def move(src, dst):
        real(src, dst)
        if Path(dst).suffix in (".mp4", ".mov"):
            both_moved.wait()  # both videos have left IN_DIR; neither has filed the sidecar yet

    monkeypatch.setattr(claims, "move_exclusive", move)
    threads = [threading.Thread(target=w.process, args=(c,)) for w, c in zip(watchers, held)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.options["seed"] for c in spy.calls) == [7, 7]
    done = tmp_path / "done"
    stems = {c.video.suffix: c.stem for c in held}
    videos = [f"{stems['.mp4']}.mp4", f"{stems['.mov']}.mov"]
    assert listing(done) == sorted([*videos, *(f"{s}.json" for s in stems.values())])
    assert all(json.loads((done / f"{s}.json").read_text()) == {"seed": 7} for s in stems.values())
    assert listing(tmp_path) == [".processing", "done", "failed", "restyled"] and locks(tmp_path) == []
