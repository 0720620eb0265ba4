"""The batch's pure parts, without Ray: reading JOBS (manifests, folders with sidecars, globs), each job's options
and done-key, names in OUT_DIR, what batch.jsonl says on a rerun, which job a free worker takes, writing results.
The end-to-end runs on a local Ray instance are in test_batch.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from media import run_v2v
from watch_helpers import SAMPLE

from v2v.batch import run
from v2v.batch.jobs import DONE, FAILED, FAILED_BEFORE, RUN, SKIPPED, Job, plan_jobs
from v2v.batch.ledger import LEDGER, Ledger, latest_by_key, read_ledger
from v2v.batch.runner import pick, write_results
from v2v.batch.sources import read_jobs
from v2v.batch.worker import relocate, sweep_dead_workers
from v2v.errors import InputNotFound, InvalidOptions, OutputError

MB = 2**20


def plan(rows, out_dir, **kw):
    kw.setdefault("batch_options", {"models": "tiny"})
    kw.setdefault("max_input_bytes", 512 * MB)
    return plan_jobs(rows, out_dir, **kw)


# ---------------------------------------------------------------------------------------------- reading JOBS
def test_csv_manifest_cells_are_typed_and_inputs_are_relative_to_the_manifest(tmp_path):
    (tmp_path / "clips").mkdir()
    m = tmp_path / "jobs.csv"
    m.write_text("input,prompt,seed,steps,loop,fps,pose_parts,keep_pose,guidance\n"
                 "clips/a.mp4,claymation astronaut,3,2,yes,30000/1001,\"body,hands\",true,1.5\n"
                 "b.mp4,anime,,,,,,,\n"
                 ",,,,,,,,\n")  # a blank row is no job
    a, b = read_jobs(m)
    assert a.input == tmp_path / "clips" / "a.mp4" and b.input == tmp_path / "b.mp4"
    assert a.options == {"prompt": "claymation astronaut", "seed": 3, "steps": 2, "loop": True,
                         "fps": Fraction(30000, 1001), "pose_parts": "body,hands", "keep_pose": True,
                         "guidance": 1.5}
    assert b.options == {"prompt": "anime"} and a.error is None and b.source == "jobs.csv line 3"


def test_jsonl_and_json_array_manifests(tmp_path):
    m = tmp_path / "jobs.jsonl"
    m.write_text('{"input": "a.mp4", "prompt": "oil", "seed": 7, "format": "vp9"}\n\n'
                 '{"input": "/abs/b.mov", "prompt": "ink", "preset": "fast"}\n')
    a, b = read_jobs(m)
    assert a.options == {"prompt": "oil", "seed": 7, "format": "vp9"} and a.input == tmp_path / "a.mp4"
    assert b.input == Path("/abs/b.mov") and b.options["preset"] == "fast" and b.source == "jobs.jsonl line 3"
    arr = tmp_path / "jobs.json"
    arr.write_text(json.dumps([{"input": "a.mp4", "prompt": "x"}, {"input": "c.mp4", "steps": 8}]))
    assert [r.options for r in read_jobs(arr)] == [{"prompt": "x"}, {"steps": 8}]


@pytest.mark.parametrize("text, says", [
    ("input,prompt,stepz\na.mp4,x,2\n", "unknown option(s): stepz (did you mean \"steps\"?)"),
    ("input,prompt,output\na.mp4,x,o.mp4\n", "\"output\" cannot be set in a manifest"),
    ("video,prompt\na.mp4,x\n", "an 'input' column"),
    ("input,prompt\n", "lists no jobs"),
    ("input,prompt\na.mp4,x,extra\n", "more cells than columns"),
])
def test_a_malformed_csv_manifest_fails_whole(tmp_path, text, says):
    m = tmp_path / "jobs.csv"
    m.write_text(text)
    with pytest.raises(InvalidOptions) as e:
        read_jobs(m)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, says", [
    ('{"input": "a.mp4", "prompt": "x"}\n{"input": "b.mp4", "sed": 3}\n', "jobs.jsonl line 2: unknown option(s): sed"),
    ('{"input": "a.mp4"}\nnot json\n', "jobs.jsonl line 2 is not valid JSON"),
    ('["a.mp4"]\n', "must be a JSON object"),
    ('{"prompt": "x"}\n', "no \"input\""),
])
def test_a_malformed_jsonl_manifest_fails_whole(tmp_path, text, says):
    m = tmp_path / "jobs.jsonl"
    m.write_text(text)
    with pytest.raises(InvalidOptions) as e:
        read_jobs(m)
    assert says in str(e.value)


def test_a_bad_value_fails_its_job_alone(tmp_path):
    m = tmp_path / "jobs.csv"
    m.write_text("input,prompt,steps,keep_pose\na.mp4,x,many,\nb.mp4,y,2,\nc.mp4,z,,maybe\n")
    a, b, c = read_jobs(m)
    assert "\"steps\" must be a whole number" in a.error and a.options == {}
    assert b.error is None and b.options == {"prompt": "y", "steps": 2}
    assert "keep_pose" in c.error


def test_a_folder_reads_each_videos_sidecars_as_watch_mode_does(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    shutil.copy(SAMPLE, tmp_path / "b.mov")
    shutil.copy(SAMPLE, tmp_path / "c.mp4")
    (tmp_path / "a.txt").write_text("claymation\n")
    (tmp_path / "b.json").write_text('{"prompt": "anime", "seed": 4, "keep_pose": true}')
    (tmp_path / "c.json").write_text('{"output": "elsewhere.mp4"}')
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "clip.mp4.part").write_bytes(b"partial")
    a, b, c = read_jobs(tmp_path)
    assert (a.input.name, a.options, a.source) == ("a.mp4", {"prompt": "claymation"}, "a.txt")
    assert b.options == {"prompt": "anime", "seed": 4, "keep_pose": True}
    assert "cannot be set in a sidecar" in c.error


def test_a_glob_and_one_video(tmp_path):
    for name in ("x1.mp4", "x2.mp4", "y.mp4"):
        shutil.copy(SAMPLE, tmp_path / name)
    assert [r.input.name for r in read_jobs(str(tmp_path / "x*.mp4"))] == ["x1.mp4", "x2.mp4"]
    assert [r.input.name for r in read_jobs(tmp_path / "y.mp4")] == ["y.mp4"]
    with pytest.raises(InputNotFound, match="no videos match"):
        read_jobs(str(tmp_path / "z*.mp4"))
    with pytest.raises(InputNotFound, match="does not exist"):
        read_jobs(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- planning
def manifest(tmp_path, lines: list[str], header="input,prompt,seed,steps,format") -> Path:
    m = tmp_path / "jobs.csv"
    m.write_text("\n".join([header, *lines]) + "\n")
    return m


def test_done_keys_follow_the_input_content_and_the_settings(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    shutil.copy(SAMPLE, tmp_path / "copy of a.mp4")
    (tmp_path / "other.mp4").write_bytes(SAMPLE.read_bytes()[:-100])
    rows = read_jobs(manifest(tmp_path, ["a.mp4,clay,1,1,", "copy of a.mp4,clay,1,1,", "a.mp4,clay,2,1,",
                                         "a.mp4,anime,1,1,", "other.mp4,clay,1,1,", "a.mp4,clay,1,2,"]))
    jobs = plan(rows, tmp_path / "out")
    assert jobs[0].key == jobs[1].key  # same content, same settings: the same job, whatever the file's name
    assert len({j.key for j in jobs[1:]}) == 5
    assert jobs[0].models == jobs[3].models == jobs[4].models  # the prompt and the input load nothing
    assert jobs[0].models != jobs[5].models  # 2 steps: the 2-step Lightning motion module
    assert [j.state for j in jobs] == [RUN, SKIPPED, RUN, RUN, RUN, RUN]  # a job listed twice runs once
    assert "the same job as jobs.csv line 2" in jobs[1].error


def test_jobs_that_cannot_run_fail_before_any_work(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    rows = read_jobs(manifest(tmp_path, ["a.mp4,,1,1,", "missing.mp4,x,1,1,", "a.mp4,x,0,1,", "a.mp4,x,1,1,gif"],
                              header="input,prompt,steps,seed,format"))
    jobs = plan(rows, tmp_path / "out")
    assert [j.state for j in jobs] == [FAILED, FAILED, FAILED, RUN]
    assert "no prompt for a.mp4" in jobs[0].error and "does not exist" in jobs[1].error
    assert "--steps must be between 1 and 100" in jobs[2].error
    big = plan(rows[3:], tmp_path / "out", max_input_bytes=1000)[0]
    assert big.state == SKIPPED and "over the batch's limit" in big.error and "--max-input-mb" in big.error


def test_precedence_row_over_its_preset_over_the_batch(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    m = tmp_path / "jobs.jsonl"
    m.write_text('{"input": "a.mp4", "preset": "fast", "seed": 9}\n{"input": "a.mp4", "preset": "fast", "steps": 8}\n'
                 '{"input": "a.mp4", "preset": "nope"}\n')
    jobs = plan(read_jobs(m), tmp_path / "out", batch_options={"models": "tiny", "prompt": "p", "steps": 4, "seed": 1})
    assert jobs[0].options == {"models": "tiny", "prompt": "p", "steps": 2, "seed": 9, "keep_pose": False}
    assert jobs[1].options["steps"] == 8 and jobs[2].state == FAILED and "unknown preset 'nope'" in jobs[2].error


def test_names_in_out_dir_as_watch_mode_gives_them(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    shutil.copy(SAMPLE, tmp_path / "b.mp4")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.restyled.mp4").write_bytes(b"an earlier result")
    rows = read_jobs(manifest(tmp_path, ["a.mp4,one,1,1,", "a.mp4,two,1,1,vp9", "b.mp4,three,1,1,", "a.mp4,x,1,1,png"]))
    jobs = plan(rows, out)
    assert [j.output.name for j in jobs] == ["a.restyled.mp4", "a-2.restyled.webm", "b-2.restyled.mp4",
                                             "a-3.restyled"]


def test_a_rerun_skips_what_is_done_and_what_failed_unless_asked(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    shutil.copy(SAMPLE, tmp_path / "b.mp4")
    out = tmp_path / "out"
    rows = read_jobs(manifest(tmp_path, ["a.mp4,one,1,1,", "b.mp4,two,1,1,", "a.mp4,three,1,1,"]))
    first = plan(rows, out)
    out.mkdir()
    (out / "a.restyled.mp4").write_bytes(b"done")
    with Ledger(out) as ledger:
        ledger.write({"key": first[0].key, "status": "done", "output": str(out / "a.restyled.mp4")})
        ledger.write({"key": first[1].key, "status": "failed", "error": "boom"})
        ledger.write({"key": first[2].key, "status": "done", "output": str(out / "a-2.restyled.mp4")})  # deleted since
    with open(out / LEDGER, "a") as f:
        f.write('{"key": "cut short by a ki')  # a driver killed while writing
    latest = latest_by_key(read_ledger(out))
    again = plan(rows, out, latest=latest)
    assert [j.state for j in again] == [DONE, FAILED_BEFORE, RUN] and again[1].error == "boom"
    assert again[0].output == out / "a.restyled.mp4" and again[2].output.name == "a-2.restyled.mp4"
    assert [j.state for j in plan(rows, out, latest=latest, retry_failed=True)] == [DONE, RUN, RUN]
    moved = tmp_path / "moved"
    out.rename(moved)  # OUT_DIR moved since: its records still count
    assert [j.state for j in plan(rows, moved, latest=latest)] == [DONE, FAILED_BEFORE, RUN]


# ---------------------------------------------------------------------------------------------- the driver's choices
def job(models: str, avoid=()) -> Job:
    return Job(0, Path("x.mp4"), "", models=models, avoid=set(avoid))


def test_a_free_worker_takes_a_job_of_the_model_set_it_holds_first():
    pending = [job("A"), job("B"), job("A"), job("C")]
    workers = {"w0", "w1"}
    assert pick(pending, "w0", {"w0": "B"}, workers) == 1  # its own set, though not the oldest job
    assert pick(pending, "w1", {"w0": "A"}, workers) == 1  # no set: one no worker holds (B), not w0's A
    assert pick(pending, "w1", {"w0": "A", "w1": "C"}, workers) == 3
    assert pick([job("A"), job("A")], "w1", {"w0": "A", "w1": "B"}, workers) == 0  # nothing else: the oldest
    assert pick([], "w0", {}, workers) is None


def test_a_job_whose_worker_died_goes_to_another_worker_first():
    retried = job("A", avoid={"w0"})
    assert pick([retried], "w0", {}, {"w0", "w1"}) is None  # w1 will take it
    assert pick([retried, job("B")], "w0", {}, {"w0", "w1"}) == 1
    assert pick([retried], "w1", {}, {"w0", "w1"}) == 0
    assert pick([retried], "w0", {}, {"w0"}) == 0  # the only worker
    assert pick([job("A", avoid={"w0", "w1"})], "w0", {}, {"w0", "w1"}) == 0  # every worker died on it


def test_results_are_written_under_temp_names_then_renamed_the_output_last(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    j = Job(0, Path("a.mp4"), "", output=out / "a.restyled.mp4")
    order = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b)))
    write_results(out, j, [("a.pose.mp4", b"pose"), ("a.restyled.mp4", b"video"), ("a.restyled.json", b"{}"),
                           ("a.restyled.compare.mp4", b"cmp")])
    assert order[-1] == "a.restyled.mp4" and sorted(order) == sorted(p.name for p in out.iterdir())
    assert (out / "a.restyled.mp4").read_bytes() == b"video"
    png = Job(1, Path("b.mp4"), "", output=out / "b.restyled")
    write_results(out, png, [("b.restyled/frame_000000.png", b"0"), ("b.restyled/frame_000001.png", b"1")])
    assert sorted(p.name for p in (out / "b.restyled").iterdir()) == ["frame_000000.png", "frame_000001.png"]
    with pytest.raises(OutputError, match="appeared in"):  # never replaces a file that is there
        write_results(out, j, [("a.restyled.mp4", b"again")])
    assert (out / "a.restyled.mp4").read_bytes() == b"video" and not [p for p in out.iterdir()
                                                                       if p.name.startswith(".")]


def test_records_name_the_originals_not_the_workers_copies():
    record = {"input": {"path": "/tmp/w/in/a.mp4", "name": "a.mp4"},
              "options": {"keep_pose": "/tmp/w/out/a.pose.mp4", "pose_json": "/tmp/w/in/pose_json-k.json"},
              "models": {"base": {"path": "/models/base"}}, "output": "a.restyled.mp4", "x": ["/tmp/w/inside"]}
    moved = relocate(record, {"/tmp/w/in/a.mp4": "/clips/a.mp4", "/tmp/w/out": "/out",
                              "/tmp/w/in/pose_json-k.json": "/clips/k.json"})
    assert moved["input"] == {"path": "/clips/a.mp4", "name": "a.mp4"}
    assert moved["options"] == {"keep_pose": "/out/a.pose.mp4", "pose_json": "/clips/k.json"}
    assert moved["models"] == record["models"] and moved["x"] == ["/tmp/w/inside"]  # only under the moved paths


def test_a_second_batch_on_the_same_out_dir_is_refused_and_stale_temp_files_are_swept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.restyled.1a2b3c4d.part.mp4").write_bytes(b"half")
    (out / ".a.restyled.json.0badf00d.tmp").write_bytes(b"{")
    (out / ".keep-me").write_bytes(b"user's")
    with Ledger(out) as held:
        with pytest.raises(OutputError, match="another v2v batch is writing"):
            Ledger(out).lock()
        assert sorted(held.sweep()) == [".a.restyled.1a2b3c4d.part.mp4", ".a.restyled.json.0badf00d.tmp"]
    assert sorted(p.name for p in out.iterdir()) == [".batch.lock", ".keep-me"]
    Ledger(out).lock()  # released


def test_a_killed_workers_job_folders_are_swept_by_the_next_worker(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / gone.stdout.strip(), tmp_path / str(os.getppid())
    for d in (dead, alive):
        (d / "job-x").mkdir(parents=True)
    assert sweep_dead_workers(tmp_path) == [dead]
    assert not dead.exists() and alive.exists()


# ---------------------------------------------------------------------------------------------- before any job starts
def test_a_manifest_with_an_unknown_option_fails_before_any_job_starts(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    m = manifest(tmp_path, ["a.mp4,x,1,1,", "a.mp4,y,1,1,"], header="input,prompt,steps,seed,colour")
    out = tmp_path / "out"
    with pytest.raises(InvalidOptions, match="jobs.csv: unknown option"):
        run(m, out, models="tiny", workers=2)
    assert not out.exists()  # no ledger, no worker, nothing
    r = run_v2v("batch", m, "--out", out, "--models", "tiny")
    assert r.returncode == 2 and "unknown option(s): colour" in r.stderr and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_bad_batch_arguments_fail_before_anything(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "a.mp4")
    for kw, says in [({"workers": 0}, "--workers"), ({"gpus_per_job": -1}, "--gpus-per-job"),
                     ({"max_retries": -1}, "--max-retries"), ({"steps": 0}, "--steps"), ({"colour": 1}, "unknown"),
                     ({"keep_pose": "p.mp4"}, "keep_pose")]:
        with pytest.raises(InvalidOptions, match=says):
            run(tmp_path / "a.mp4", tmp_path / "out", **kw)
    with pytest.raises(InvalidOptions, match="is the folder of the videos"):
        run(tmp_path, tmp_path, prompt="x")
    assert not (tmp_path / "out").exists()
