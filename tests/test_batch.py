"""``v2v batch`` end to end on a local Ray instance (started once for this module: 2 CPUs, no dashboard) with 2
CPU workers and the tiny models: a manifest of six jobs (two model sets, one bad file), a rerun, a worker killed
mid-job, Ctrl-C. The outputs are judged by ffprobe; batch.jsonl says what happened. The pure parts are tested in
test_batch_jobs.py."""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
from media import HAVE_FFMPEG, ffprobe_frame_count, ffprobe_streams, make_video, run_v2v
from watch_helpers import SAMPLE, wait_for

from v2v.batch import run
from v2v.batch.ledger import read_ledger
from v2v.batch.worker import worker_root
from v2v.errors import Interrupted
from v2v.pose.cache import file_fingerprint

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg and ffprobe")

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(models="tiny", size=64, max_frames=6)


@pytest.fixture(scope="module", autouse=True)
def local_ray(tiny_models):
    """One local Ray instance for the module; the workers import this checkout's v2v and build nothing (the tiny
    models' folder is in the environment they inherit); Ray's usage stats off, as v2v starts its own instance."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("batch.jsonl", ".batch.lock"))


def killer(events: list, name: str, until: set, act) -> callable:
    """An on_event that, once job ``name`` has started, calls ``act(event)`` from a thread as soon as its worker
    reports a stage in ``until`` (the job is under way there)."""
    def on_event(event):
        events.append(event)
        if event["event"] == "job" and event["status"] == "started" and Path(event["input"]).name == name \
                and event["attempts"] == 1:
            def watch():
                worker = ray.get_actor(event["worker"])
                assert wait_for(lambda: ray.get(worker.status.remote()).get("stage") in until, timeout=60)
                act(event)
            threading.Thread(target=watch, daemon=True).start()
    return on_event


# ---------------------------------------------------------------------------------------------- six jobs
@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """A manifest of six jobs (two model sets: 1 and 2 steps; a bad file; a clip twice with two prompts) and a
    seventh whose base model cannot load, run once by 2 workers."""
    d = tmp_path_factory.mktemp("six")
    (d / "clips").mkdir()
    shutil.copy(SAMPLE, d / "a.mp4")
    shutil.copy(SAMPLE, d / "b.mp4")
    make_video(d / "clips" / "c.mp4", seconds=0.5, size=(96, 64))
    (d / "bad.mp4").write_text("this is not a video\n")
    m = d / "jobs.csv"
    m.write_text("input,prompt,steps,seed,keep_pose,format,base\n"
                 "a.mp4,claymation,1,1,,,\n"
                 "b.mp4,anime,2,,true,,\n"
                 "a.mp4,oil painting,2,3,,,\n"
                 "clips/c.mp4,ink,1,,,vp9,\n"
                 "bad.mp4,noise,1,,,,\n"
                 "b.mp4,watercolour,1,5,,,\n"
                 f"a.mp4,bronze,1,,,,{d / 'no-such-model.safetensors'}\n")  # a model that cannot load
    events: list = []
    t = time.perf_counter()
    summary = run(m, d / "out", workers=2, on_event=events.append, **TINY)
    return d, m, summary, events, time.perf_counter() - t


def test_six_jobs_on_two_workers(six):
    d, m, summary, events, seconds = six
    out = d / "out"
    assert sorted(r.input.name for r in summary.done) == ["a.mp4", "a.mp4", "b.mp4", "b.mp4", "c.mp4"]
    bad, model = sorted(summary.failed, key=lambda r: r.input.name, reverse=True)
    assert bad.input == d / "bad.mp4" and "bad.mp4" in bad.error and "\n" not in bad.error
    assert "v2v-batch" not in bad.error  # the driver's path, not the worker's copy
    assert model.input == d / "a.mp4" and "no-such-model.safetensors" in model.error and "\n" not in model.error
    assert outputs(out) == ["a-2.restyled.json", "a-2.restyled.mp4", "a.restyled.json", "a.restyled.mp4",
                            "b-2.restyled.json", "b-2.restyled.mp4", "b.pose.mp4", "b.restyled.json",
                            "b.restyled.mp4", "c.restyled.json", "c.restyled.webm"]  # nothing else, no temp file
    for name, codec in [("a.restyled.mp4", "h264"), ("a-2.restyled.mp4", "h264"), ("b.restyled.mp4", "h264"),
                        ("b-2.restyled.mp4", "h264"), ("b.pose.mp4", "h264"), ("c.restyled.webm", "vp9")]:
        probe = ffprobe_streams(out / name)
        assert probe["video"]["codec_name"] == codec and probe["audio"] is not None, name
        assert ffprobe_frame_count(out / name) == 6, name
    for name, src, prompt in [("a", "a.mp4", "claymation"), ("a-2", "a.mp4", "oil painting"), ("b", "b.mp4", "anime"),
                              ("c", "clips/c.mp4", "ink")]:
        record = json.loads((out / f"{name}.restyled.json").read_text())
        assert record["prompt"] == prompt and record["input"]["path"] == str(d / src)  # the original, not a copy
        assert record["input"]["fingerprint"] == file_fingerprint(d / src)
        assert record["output"] == next(p.name for p in out.glob(f"{name}.restyled.*") if p.suffix != ".json")
    assert json.loads((out / "b.restyled.json").read_text())["options"]["keep_pose"] == str(out / "b.pose.mp4")

    lines = read_ledger(out)
    assert len(lines) == 7 and sorted(r["status"] for r in lines) == ["done"] * 5 + ["failed"] * 2
    for r in lines:
        assert r["worker"].startswith("v2v-batch-") and isinstance(r["pid"], int) and r["node"] and r["gpu"] is None
        assert r["attempts"] == 1 and r["seconds"] > 0 and r["key"] and r["input"].startswith(str(d))
    assert len({r["worker"] for r in lines}) == 2  # both workers worked
    assert {r["output"] for r in lines if r["status"] == "done"} == {str(out / n) for n in outputs(out)
                                                                      if ".restyled." in n and "json" not in n}
    loads = sum(bool(r["loaded"]) for r in lines)
    assert 2 <= loads <= 3  # each worker loads a set once, and one switch at most (5 good jobs, two sets)
    ends = [e for e in events if e["event"] == "job" and e["status"] in ("done", "failed")]
    assert len(ends) == 7 and ends[-1]["batch"] == {"done": 5, "failed": 2, "running": 0, "total": 7}
    assert events[0]["event"] == "batch" and events[0]["jobs"] == 7 and events[0]["workers"] == 2
    print(f"seven jobs on 2 workers: {seconds:.1f} s")


def test_a_rerun_skips_the_jobs_done_and_retries_the_failed_one_only_when_asked(six):
    d, m, first, _, _ = six
    out = d / "out"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = run_v2v("batch", m, "--out", out, "--workers", "2", "--models", "tiny", "--size", "64", "--max-frames", "6",
                "--progress", "json")
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 3, r.stderr  # not every job is done: two failed before
    assert last["event"] == "done" and last["already_done"] == 5 and last["done"] == []
    assert sorted(last["failed_before"]) == [str(d / "a.mp4"), str(d / "bad.mp4")]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing run, nothing written
    again = run(m, out, workers=1, retry_failed=True, **TINY)  # one worker starts: both fail at once
    assert len(again.already_done) == 5 and sorted(r.input.name for r in again.failed) == ["a.mp4", "bad.mp4"]
    assert len(read_ledger(out)) == 9 and outputs(out) == [n for n in sorted(before) if n not in
                                                           ("batch.jsonl", ".batch.lock")]


# ---------------------------------------------------------------------------------------------- faults
def test_a_worker_killed_mid_job_has_its_job_retried_elsewhere_and_one_output(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "k1.mp4")
    make_video(tmp_path / "k2.mp4", seconds=0.5, size=(96, 64))
    killed: dict = {}

    def kill(event):
        killed.update(event)
        os.kill(event["pid"], signal.SIGKILL)

    events: list = []
    summary = run(str(tmp_path / "k*.mp4"), tmp_path / "out", prompt="bronze statue", workers=2,
                  on_event=killer(events, "k1.mp4", {"pose", "generate"}, kill), **TINY)
    assert killed, "the worker was not killed"
    by_name = {r.input.name: r for r in summary.results}
    k1 = by_name["k1.mp4"]
    assert k1.status == "done" and k1.attempts == 2 and k1.pid != killed["pid"] and k1.worker != killed["worker"]
    assert by_name["k2.mp4"].status == "done" and len(summary.results) == 2
    retries = [e for e in events if e["event"] == "job" and e["status"] == "retry"]
    assert len(retries) == 1 and retries[0]["worker"] == killed["worker"] and Path(retries[0]["input"]).name == "k1.mp4"
    assert outputs(tmp_path / "out") == ["k1.restyled.json", "k1.restyled.mp4", "k2.restyled.json",
                                         "k2.restyled.mp4"]  # exactly one output for the killed job
    assert ffprobe_frame_count(tmp_path / "out" / "k1.restyled.mp4") == 6
    lines = [r for r in read_ledger(tmp_path / "out") if r["input"].endswith("k1.mp4")]
    assert len(lines) == 1 and lines[0]["status"] == "done" and lines[0]["attempts"] == 2


def test_ctrl_c_stops_the_batch_and_leaves_no_partial_output(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "i1.mp4")
    make_video(tmp_path / "i2.mp4", seconds=0.5, size=(96, 64))
    started: dict = {}

    def interrupt(event):
        started.update(event)
        _thread.interrupt_main()  # Ctrl-C in the driver's main thread

    out = tmp_path / "out"
    with pytest.raises(Interrupted) as e:
        run(tmp_path, out, prompt="marble", workers=1,
            on_event=killer([], "i1.mp4", {"pose", "generate"}, interrupt), **TINY)
    assert started and e.value.summary.stopped == "interrupted" and "rerun the same command" in str(e.value)
    assert outputs(out) == []  # no output, no temp file
    [line] = read_ledger(out)
    assert line["status"] == "interrupted" and line["input"] == str(tmp_path / "i1.mp4")
    assert "the batch was interrupted" in line["error"]  # the worker stopped it itself (not killed after a wait)
    assert list(worker_root(started["pid"]).iterdir()) == []  # the worker removed its copy of the job
