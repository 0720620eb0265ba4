"""`v2v ui` without a browser: upload storage and name sanitising, the size limit, the job runner (one at a time,
places, progress and ETA, cancel, errors), the form <-> options mapping, run folders and the history (from the
JSON record and from the video's own metadata), what the page shows, and the access checks. The page itself is
driven in a real browser by tests/test_ui_browser.py."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from media import HAVE_FFMPEG, make_video
from v2v.errors import EmptyInput, InputError, Interrupted, InvalidOptions, OutOfMemory, VideoDecodeError
from v2v.options import RestyleOptions
from v2v.ui import form, runs, views
from v2v.ui.jobs import JobRunner
from v2v.ui.server import check_access, is_local, parse_auth
from v2v.ui.uploads import inside, list_inputs, parse_size, safe_extension, safe_name, store_upload

needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg makes the test clips")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    if not HAVE_FFMPEG:
        pytest.skip("ffmpeg makes the test clips")
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=0.5, fps=12, size=(64, 48))


# ---------------------------------------------------------------------------------------------- uploads
@pytest.mark.parametrize("name, stem", [
    ("../../etc/passwd.mp4", "passwd"),
    ("C:\\Users\\maya\\My Clip (1).MOV", "My_Clip_1"),
    ("été à Paris.mp4", "ete_a_Paris"),
    (".bashrc", "bashrc"),
    ("..", "video"),
    ("", "video"),
    ("a" * 300 + ".mp4", "a" * 60),
    ("clip;rm -rf ~.mp4", "clip_rm_-rf"),
])
def test_a_browser_name_becomes_a_safe_stem(name, stem):
    assert safe_name(name) == stem


def test_only_known_video_extensions_are_kept():
    assert safe_extension("x.MOV") == ".mov"
    assert safe_extension("x.mp4.exe") == ".video"
    assert safe_extension("noext") == ".video"
    assert safe_extension("../a.webm/..") == ".video"


@pytest.mark.parametrize("text, size", [("500MB", 500_000_000), ("4GB", 4_000_000_000), ("1.5 gb", 1_500_000_000),
                                        ("2000", 2000), ("4G", 4_000_000_000), ("1mb", 1_000_000)])
def test_upload_sizes_parse(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["big", "-1MB", "0", "1 XB"])
def test_bad_upload_sizes_are_refused(text):
    with pytest.raises(InvalidOptions, match="--max-upload"):
        parse_size(text)


def test_an_upload_is_stored_under_out_with_a_made_name_once(clip, tmp_path):
    out = tmp_path / "out"
    src = tmp_path / "upload.mp4"
    src.write_bytes(clip.read_bytes())
    path, info = store_upload(src, out, limit=10_000_000, name="../../evil name.mp4")  # as a browser might name it
    assert path.parent == out / "uploads"
    assert path.name.startswith("evil_name-") and path.suffix == ".mp4"
    assert path.read_bytes() == clip.read_bytes()
    assert info.path == path and info.width == 64
    again, _ = store_upload(src, out, limit=10_000_000, name="evil name.mp4")
    assert again == path
    assert sorted(p.name for p in (out / "uploads").iterdir()) == [path.name]  # no staging folder left


def test_an_upload_over_the_limit_is_refused_and_not_kept(clip, tmp_path):
    with pytest.raises(InputError, match=r"clip\.mp4 is .* the upload limit is 1 KB"):
        store_upload(clip, tmp_path / "out", limit=1000, name="clip.mp4")
    assert not list((tmp_path / "out").rglob("*.*"))


@pytest.mark.parametrize("content, error", [(b"", EmptyInput), (os.urandom(20_000), VideoDecodeError)])
def test_an_upload_that_is_not_a_video_is_refused_naming_it_and_not_kept(tmp_path, content, error):
    src = tmp_path / "x"
    src.write_bytes(content)
    with pytest.raises(error) as e:
        store_upload(src, tmp_path / "out", limit=10_000_000, name="holiday.mp4")
    assert "holiday.mp4" in str(e.value) and str(tmp_path) not in str(e.value)
    assert not list((tmp_path / "out").rglob("*.*"))


def test_a_truncated_upload_is_refused(clip, tmp_path):
    src = tmp_path / "cut.mp4"
    src.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    with pytest.raises(InputError):
        store_upload(src, tmp_path / "out", limit=10_000_000, name="cut.mp4")
    assert not list((tmp_path / "out").rglob("*.*"))


def test_outputs_are_named_after_the_creators_file_not_the_stored_one(tmp_path):
    from v2v.ui.uploads import original_stem

    assert original_stem(tmp_path / "uploads" / "dance-1a2b3c4d5e.mp4") == "dance"
    assert original_stem(tmp_path / "clips" / "dance-1a2b3c4d5e.mp4") == "dance-1a2b3c4d5e"  # not an upload
    assert original_stem(tmp_path / "uploads" / "my clip.mov") == "my_clip"


def test_inside_and_the_input_folder(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("b.MP4", "a.mov", "notes.txt", ".hidden.mp4"):
        (tmp_path / "in" / name).write_bytes(b"x")
    assert [p.name for p in list_inputs(tmp_path / "in")] == ["a.mov", "b.MP4"]
    assert list_inputs(None) == []
    assert inside(tmp_path / "in" / "a.mov", tmp_path / "out", tmp_path / "in")
    assert not inside(tmp_path / "in" / ".." / "secret.mp4", tmp_path / "in")
    assert not inside(Path("/etc/passwd"), tmp_path / "in", None)


# ---------------------------------------------------------------------------------------------- the job runner
class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_jobs_run_one_at_a_time_in_order_with_their_places():
    runner = JobRunner()
    gate, order, active, most = threading.Event(), [], [0], [0]

    def work(name, wait=False):
        def run(progress, cancel):
            active[0] += 1
            most[0] = max(most[0], active[0])
            if wait:
                gate.wait(10)
            order.append(name)
            active[0] -= 1
            return name
        return run

    first = runner.submit("restyle", work("first", wait=True))
    wait_for(lambda: first.state == "running")
    second = runner.submit("restyle", work("second"))
    third = runner.submit("restyle", work("third"))
    pose = runner.submit("pose", work("pose"), first=True)  # a preview goes ahead of the waiting restyles
    assert [runner.place(j) for j in (first, pose, second, third)] == [0, 1, 2, 3]
    gate.set()
    wait_for(lambda: third.finished)
    assert order == ["first", "pose", "second", "third"]
    assert most[0] == 1
    assert [j.state for j in (first, second, third, pose)] == ["done"] * 4 and third.result == "third"
    runner.close()


def test_progress_per_stage_with_an_eta_and_a_stage_that_starts_again():
    clock = Clock()
    runner = JobRunner(clock=clock)
    step = threading.Event()
    seen = []

    def work(progress, cancel):
        progress("pose", 0, 10)
        clock.t += 2
        progress("pose", 4, 10)
        seen.append(dict(job.stages))
        step.wait(10)
        progress("generate", 0, 8)
        clock.t += 1
        progress("generate", 2, 8)
        progress("generate", 0, 12)  # the frame count proved wrong: generation starts again
        return "ok"

    job = runner.submit("restyle", work)
    wait_for(lambda: seen)
    pose = seen[0]["pose"]
    assert (pose.done, pose.total) == (4, 10) and pose.eta() == pytest.approx(2 / 4 * 6)
    step.set()
    wait_for(lambda: job.finished)
    gen = job.stages["generate"]
    assert (gen.done, gen.total, gen.eta()) == (0, 12, None)
    html = views.progress_html(job)
    assert 'id="v2v-stage-pose" data-done="4" data-total="10"' in html and "0 of 12 passes" in html
    runner.close()


def test_cancel_stops_a_running_job_and_drops_a_waiting_one():
    from v2v.progress import cancellable

    runner = JobRunner()
    started, calls = threading.Event(), []

    def work(progress, cancel):
        progress = cancellable(progress, cancel)  # as the API does with cancel=
        started.set()
        for i in range(1000):
            progress("generate", i, 1000)
            time.sleep(0.01)
        return "finished"

    running = runner.submit("restyle", work)
    waiting = runner.submit("restyle", lambda p, c: calls.append("ran"))
    started.wait(10)
    assert runner.cancel(waiting.id) and runner.cancel(running.id)
    wait_for(lambda: running.finished)
    assert running.state == "cancelled" and running.result is None and "cancelled" in running.error
    assert waiting.state == "cancelled" and "before it started" in waiting.error
    time.sleep(0.1)
    assert calls == []
    assert not runner.cancel(running.id) and not runner.cancel("nope") and not runner.cancel(None)
    runner.close()


def test_errors_are_one_line_and_the_runner_keeps_serving():
    runner = JobRunner()

    def oom(progress, cancel):
        raise OutOfMemory("the cuda ran out of memory: lower --frame-budget")

    def bug(progress, cancel):
        raise KeyError("line one\nline two")

    def stopped(progress, cancel):
        raise Interrupted("interrupted: no output was written")

    jobs = [runner.submit("restyle", w) for w in (oom, bug, stopped, lambda p, c: 42)]
    wait_for(lambda: jobs[-1].finished)
    assert [j.state for j in jobs] == ["failed", "failed", "cancelled", "done"]
    assert jobs[0].error == "the cuda ran out of memory: lower --frame-budget"
    assert jobs[1].error.startswith("internal error: KeyError: 'line one") and "\n" not in jobs[1].error
    assert jobs[3].result == 42
    runner.close()


def test_follow_yields_until_the_job_has_finished_and_close_cancels():
    runner = JobRunner()
    release = threading.Event()
    job = runner.submit("pose", lambda p, c: (p("pose", 1, 2), release.wait(10), p("pose", 2, 2)))
    states = []
    for j in runner.follow(job, interval=0.02):
        states.append(j.state)
        release.set()
    assert states[-1] == "done" and len(states) >= 2
    blocker = runner.submit("restyle", lambda p, c: c.wait(10))
    queued = runner.submit("restyle", lambda p, c: None)
    wait_for(lambda: blocker.state == "running")
    runner.close()
    assert blocker.state == "done" and blocker.cancel.is_set()  # its work saw the cancel and returned
    assert queued.state == "cancelled"
    with pytest.raises(Interrupted):
        runner.submit("restyle", lambda p, c: None)


# ---------------------------------------------------------------------------------------------- the form
def test_the_default_form_runs_restyle_options_defaults():
    prompt, opts = form.run_options(form.defaults({}))
    assert prompt == ""
    made = RestyleOptions(prompt="x", **opts).validate()
    assert made == RestyleOptions(prompt="x", format="h264").validate()


def test_server_options_are_the_form_defaults():
    values = form.defaults({"steps": 2, "seed": 7, "prompt": "clay", "models": "tiny", "size": 64})
    assert (values["steps"], values["seed"], values["prompt"], values["size"]) == (2, 7, "clay", 64)
    assert "models" not in values


def test_a_record_fills_the_form_and_reruns_the_same_options():
    recorded = {"prompt": "anime girl", "seed": 12345678901234567890, "steps": 3, "strength": 0.5,
                "negative_prompt": "blur", "guidance": 1.5, "base": "toonyou", "size": 384, "start": 1.5,
                "end": 4.0, "motion_loras": ("guoyww/animatediff-motion-lora-zoom-in:0.7",), "fast_decode": True,
                "pose": "openpose", "pose_smoothing": 0.2, "format": "vp9", "context": 24, "device": "cuda",
                "models": "default", "keep_pose": "/x/pose.mp4"}
    values, extras = form.form_values(recorded)
    assert extras == {"context": 24}  # machine options and outputs are not taken from a record
    assert values["motion_loras"] == "guoyww/animatediff-motion-lora-zoom-in" and values["lora_strength"] == 0.7
    prompt, opts = form.run_options({**values, "seed": str(values["seed"])}, extras, duration=10.0)
    assert prompt == "anime girl"
    for key in ("seed", "steps", "strength", "negative_prompt", "guidance", "base", "size", "start", "end",
                "motion_loras", "fast_decode", "pose", "pose_smoothing", "format", "context"):
        assert opts[key] == recorded[key], key
    assert form.describe_extras(extras) == "context 24"


def test_trim_and_loras_from_the_form():
    values = {**form.defaults({}), "start": 0, "end": 10.0, "motion_loras": "a/zoom\nb/pan:0.5", "lora_strength": 0.6}
    _, opts = form.run_options(values, duration=10.0)
    assert opts["start"] is None and opts["end"] is None  # the whole clip
    assert opts["motion_loras"] == ("a/zoom:0.6", "b/pan:0.5")
    assert form.form_values({"motion_loras": opts["motion_loras"]})[0]["motion_loras"] == "a/zoom:0.6\nb/pan:0.5"


@pytest.mark.parametrize("field, value", [("steps", "two"), ("steps", 2.5), ("seed", "nan"), ("guidance", "inf"),
                                          ("format", "png")])
def test_bad_form_numbers_are_one_line_errors(field, value):
    with pytest.raises(InvalidOptions, match=field.replace("_", " ")):
        form.run_options({**form.defaults({}), field: value})


def test_strengths_follow_the_step_grid():
    assert [v for _, v in form.strength_choices(4)] == [1.0, 0.75, 0.5, 0.25]
    assert form.nearest_strength(2, 0.75) in (0.5, 1.0) and form.nearest_strength(8, 0.75) == 0.75
    for steps in form.STEP_CHOICES:
        for _, v in form.strength_choices(steps):
            RestyleOptions(prompt="x", steps=steps, strength=v).validate()
    assert form.step_label(3) == "3 (the 2-step model)"


# ---------------------------------------------------------------------------------------------- what the page shows
def test_the_error_line_and_the_players_escape_what_they_show(tmp_path):
    assert "<script>" not in views.error_html("<script>alert(1)</script> is not a video")
    assert "v2v-empty" in views.error_html(None)
    weird = tmp_path / "a b&c.mp4"
    html = views.compare_html(weird, None, tmp_path / "r.gif", [("video", "Video", tmp_path / "r.gif")])
    assert "gradio_api/file=" + str(tmp_path.resolve()) + "/a%20b%26c.mp4" in html
    assert '<img data-role="result"' in html and 'id="v2v-download-video"' in html
    source = re.search(r'<video data-role="source"[^>]*>', html).group(0)
    assert "data-v2v-sync" in source and " muted" in source  # the result's sound is the one heard


# ---------------------------------------------------------------------------------------------- access
def test_only_this_machine_goes_without_a_login(monkeypatch):
    monkeypatch.delenv("V2V_UI_AUTH", raising=False)
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1") and not is_local("0.0.0.0")
    assert check_access("127.0.0.1", None) is None
    with pytest.raises(InvalidOptions, match="--auth USER:PASS"):
        check_access("0.0.0.0", None)
    assert check_access("0.0.0.0", "maya:secret") == ("maya", "secret")
    monkeypatch.setenv("V2V_UI_AUTH", "ren:pw:with:colons")
    assert check_access("192.168.1.5", None) == ("ren", "pw:with:colons")
    for bad in ("nopassword", ":pw", "user:"):
        with pytest.raises(InvalidOptions):
            parse_auth(bad)


def test_the_command_refuses_an_open_host_without_a_login(capsys, monkeypatch):
    from v2v.cli import main

    monkeypatch.delenv("V2V_UI_AUTH", raising=False)
    assert main(["ui", "--host", "0.0.0.0", "--out", "/nonexistent/never-made"]) == 2
    err = capsys.readouterr().err
    assert "add --auth USER:PASS" in err and "Traceback" not in err
    assert not Path("/nonexistent/never-made").exists()


# ---------------------------------------------------------------------------------------------- runs and the history
@pytest.fixture(scope="module")
def restyled(clip, tiny_models, tmp_path_factory):
    """One real (tiny) restyle through runs.restyle_run, shared by the history tests."""
    from v2v.pipeline import Restyler

    out = tmp_path_factory.mktemp("ui-out")
    restyler = Restyler(models="tiny", size=64, show_progress=False)
    stages = []
    run = runs.restyle_run(restyler, clip, out, "clay robot", {"steps": 1, "seed": 5, "max_frames": 4},
                           lambda s, d, t: stages.append(s), threading.Event())
    return restyler, out, run, stages


def test_a_run_folder_holds_the_video_its_record_poses_keypoints_and_thumbnail(restyled):
    _, out, run, stages = restyled
    assert run.folder.parent == out / "runs" and {"pose", "generate", "encode"} <= set(stages)
    names = sorted(p.name for p in run.folder.iterdir())
    assert names == ["clip.pose.json", "clip.pose.mp4", "clip.restyled.json", "clip.restyled.mp4", "thumb.jpg"]
    assert len(json.loads(run.pose_json.read_text())) == 4
    assert (run.prompt, run.seed) == ("clay robot", 5)


def test_the_history_lists_finished_runs_newest_first_and_reads_embedded_records(restyled, tmp_path):
    import shutil

    _, out, run, _ = restyled
    hist = tmp_path / "out"
    shutil.copytree(out / "runs", hist / "runs")
    older = hist / "runs" / "19990101-000000-old"
    shutil.copytree(run.folder, older)
    (older / "clip.restyled.json").unlink()  # the record is in the video too
    os.utime(older / "clip.restyled.mp4", (1, 1))
    (hist / "runs" / "20990101-000000-half").mkdir()  # a server killed mid-run: no video, not listed
    (hist / "runs" / "20990101-000000-half" / "clip.pose.mp4").write_bytes(b"x")
    listed = runs.list_runs(hist)
    assert [r.id for r in listed] == [run.folder.name, "19990101-000000-old"]
    assert listed[1].settings_file is None and listed[1].prompt == "clay robot" and listed[1].seed == 5
    assert runs.find_run(hist, "../runs") is None and runs.find_run(hist, ".x") is None


def test_use_these_settings_fills_the_form_from_a_run(restyled):
    pytest.importorskip("gradio")
    from v2v.ui.handlers import Page

    restyler, out, run, _ = restyled
    page = Page(restyler=restyler, out=out, server_options={"models": "tiny"})
    try:
        filled = page.use_run(run.id, None)
        by_name = dict(zip(form.FIELDS, filled))
        assert by_name["prompt"]["value"] == "clay robot" and by_name["seed"]["value"] == 5
        assert by_name["steps"]["value"] == 1
        extras = filled[len(form.FIELDS)]
        assert extras["max_frames"] == 4
        missing = page.use_run("20990101-nope", None)
        assert "choose a run" in missing[len(form.FIELDS) + 3]
    finally:
        page.runner.close()


def test_a_cancelled_run_leaves_nothing(restyled, clip):
    restyler, out, _, _ = restyled
    before = sorted(p.name for p in (out / "runs").iterdir())
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        runs.restyle_run(restyler, clip, out, "x", {"steps": 1, "max_frames": 4}, None, cancel)
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    assert not [p for p in out.rglob("*") if ".part" in p.name]


def test_the_page_refuses_work_without_an_input_or_a_prompt(restyled):
    pytest.importorskip("gradio")
    from v2v.ui.handlers import Page

    restyler, out, run, _ = restyled
    page = Page(restyler=restyler, out=out)
    try:
        values = form.defaults({})
        first = next(page.restyle(None, None, values, {}))
        assert "drop a video" in first[3]
        first = next(page.restyle(str(run.video), 1.0, {**values, "prompt": " "}, {}))
        assert "write a prompt" in first[3]
        first = next(page.restyle(str(run.video), 1.0, {**values, "prompt": "x", "steps": 0}, {}))
        assert "--steps must be between 1 and 100" in first[3]
    finally:
        page.runner.close()
