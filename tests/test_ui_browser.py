"""`v2v ui` in a real browser: headless Chromium (Debian's) driven by Playwright loads the page served by
``v2v ui --models tiny`` on a free port, and does what a creator does: upload a clip, see its poses, restyle it
watching the progress bars move, play the result beside the source, download the video, the keypoints and the
settings, reuse a run's settings; cancel a run (nothing is left); upload bad files (the error line says why).

Every request the page makes is recorded and must go to the server; the server's own connections and name
lookups are recorded by an audit hook and must stay on this machine. Screenshots of each state are saved in
``.ui-screenshots/`` (or $V2V_UI_SCREENSHOTS), not committed. Without Chromium or Playwright the tests are skipped,
except under CI (CI=true), where they fail: .ci/run installs Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from media import HAVE_FFMPEG, ffprobe_frame_count, ffprobe_frame_times, ffprobe_streams, make_video

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("V2V_UI_SCREENSHOTS", ROOT / ".ui-screenshots"))
# the flags Debian's chromium needs on a closed network (no background requests, no sandbox as root)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage"]
MAX_UPLOAD = 1_000_000  # the server's --max-upload in these tests: 1 MB
# a browser that stops answering fails its test after 5 minutes, with every thread's stack, instead of holding
# the whole run (pytest-timeout; each test takes under a minute alone, two on a busy 2-core machine)
pytestmark = pytest.mark.timeout(300)

# The server, run with an audit hook that writes down every connection and name lookup the process makes.
AUDITED_SERVER = """
import sys
log = open(sys.argv[1], "a", buffering=1)
def hook(event, args):
    if event == "socket.connect":
        log.write("connect %r\\n" % (args[1],))
    elif event == "socket.getaddrinfo":
        log.write("resolve %r\\n" % (args[0],))
sys.addaudithook(hook)
from v2v.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _need(what: str, ok: bool) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing: CI must have it (.ci/run installs chromium, the dev extra Playwright)")
        pytest.skip(f"{what} is missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """``v2v ui --models tiny`` on a free port, its output under a temp folder; stopped with SIGTERM."""
    _need("ffmpeg (makes the clips) and ffprobe", HAVE_FFMPEG)
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            _need(f"the Python package {module}", False)
    _need("chromium", Path(CHROMIUM).exists())
    folder = tmp_path_factory.mktemp("ui")
    out, port, audit = folder / "out", _free_port(), folder / "connections.txt"
    args = ["ui", "--models", "tiny", "--port", str(port), "--out", str(out), "--size", "64", "--steps", "2",
            "--max-upload", f"{MAX_UPLOAD}B"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-c", AUDITED_SERVER, str(audit), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=folder)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    end = time.monotonic() + 180
    while not any("open http" in line for line in lines):
        assert proc.poll() is None, "v2v ui stopped:\n" + "".join(lines)
        assert time.monotonic() < end, "v2v ui did not start in 180 s:\n" + "".join(lines)
        time.sleep(0.1)
    started = next(line for line in lines if "open http" in line)
    assert f"http://127.0.0.1:{port}/" in started
    clips = folder / "clips"
    clips.mkdir()
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", out=out, proc=proc, log=lines, audit=audit, clips=clips)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, "".join(lines[-30:])
    _assert_stayed_local(audit)


def _assert_stayed_local(audit: Path) -> None:
    """The server connected to, and looked up, nothing but this machine."""
    import ast

    local_hosts = {"127.0.0.1", "::1", "localhost", "0.0.0.0", None, ""}
    for line in audit.read_text().splitlines():
        kind, _, value = line.partition(" ")
        value = ast.literal_eval(value)
        host = value[0] if isinstance(value, tuple) else value if kind == "resolve" else None
        if isinstance(host, bytes):
            host = host.decode()
        if kind == "connect" and isinstance(value, str):  # a unix socket
            continue
        assert host in local_hosts or str(host).startswith("127."), f"the server reached out: {line}"


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, request):
    """A fresh page on the server; every request it makes is recorded and checked to stay on the server."""
    # tall enough for the whole page (about 1,450 pixels): screenshots of the viewport show it all
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1600})
    pg = context.new_page()
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.shots = SHOTS / request.node.name
    pg.shots.mkdir(parents=True, exist_ok=True)
    pg.goto(server.url)
    pg.wait_for_selector("#v2v-upload input[type=file]", state="attached", timeout=30_000)
    yield pg
    context.close()
    outside = [u for u in pg.requests if not u.startswith((server.url, "data:", "blob:"))]
    assert not outside, f"the page asked another host: {outside[:5]}"


def shot(page, name: str) -> None:
    """A screenshot of the page's state, for a person to look at (nothing asserts on it). The viewport only:
    a full-page capture resizes the page to its height and back, which on a busy machine Chromium now and then
    refuses ("Unable to capture screenshot"). A refusal is tried again, then given up with a warning rather
    than failing a test of the page over a picture."""
    from playwright.sync_api import Error

    page.bring_to_front()  # Chromium captures a page behind another slowly, or hangs (Playwright issue 20434)
    path = str(page.shots / f"{name}.png")
    for _ in range(3):
        try:
            page.screenshot(path=path, timeout=30_000)
            return
        except Error as e:
            problem = e
            time.sleep(0.5)
    warnings.warn(f"no screenshot {name}: {str(problem).splitlines()[0]}")


def error_line(page) -> str:
    return page.locator("#v2v-error").inner_text().strip()


def upload(page, path: Path) -> None:
    page.locator("#v2v-upload input[type=file]").set_input_files(str(path))


def until(page, condition: str, arg=None, timeout: float = 60_000) -> None:
    """Waits for a JavaScript condition, checked every 100 ms: Playwright's default checks once per animation
    frame, and Chromium may run none in a page that is not in front."""
    page.wait_for_function(condition, arg=arg, timeout=timeout, polling=100)


def wait_text(page, selector: str, text: str, timeout: float = 60_000) -> None:
    until(page, "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
          arg=[selector, text], timeout=timeout)


def progress(page) -> tuple[str, tuple]:
    return tuple(page.evaluate("""() => { const p = document.querySelector('#v2v-progress');
        return [p.dataset.state, [...p.querySelectorAll('.v2v-stage')].map(s => [s.id, +s.dataset.done])]; }"""))


def watch_progress(page, timeout: float = 120) -> list:
    """The progress panel's states, each time it changed, until the run finished."""
    seen, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        state = progress(page)
        state = (state[0], tuple(tuple(s) for s in state[1]))
        if not seen or seen[-1] != state:
            seen.append(state)
        if state[0] in ("done", "failed", "cancelled"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the run did not finish in {timeout} s: {seen[-3:]}")


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def download(page, link: str, dest: Path) -> Path:
    with page.expect_download() as d:
        page.click(link)
    d.value.save_as(dest)
    return dest


def players(page) -> dict:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#v2v-compare video')].map(
        v => [v.dataset.role, {t: v.currentTime, paused: v.paused, error: v.error && v.error.code}]))""")


# ---------------------------------------------------------------------------------------------- the tests
def test_upload_poses_restyle_play_download_and_rerun(server, page, tmp_path):
    clip = make_video(server.clips / "dance.mp4", seconds=1.0, fps=12, size=(96, 64))
    shot(page, "1-empty")
    upload(page, clip)
    wait_text(page, "#v2v-input-info", "fps")
    assert page.inner_text("#v2v-input-info") == "dance.mp4 · 1.0 s · 12 fps · 96×64 · audio: aac, 48 kHz, mono"
    page.wait_for_selector("#v2v-compare video[data-role=source]")
    shot(page, "2-input")

    t = time.monotonic()
    page.click("#v2v-poses")
    page.wait_for_selector("#v2v-pose-summary", timeout=60_000)
    posed = time.monotonic() - t
    assert page.get_attribute("#v2v-pose-summary", "data-frames") == "12"
    assert page.get_attribute("#v2v-pose-summary", "data-empty").isdigit()
    page.wait_for_selector("#v2v-compare video[data-role=pose]")
    assert not any("loading models" in line for line in server.log), "the poses loaded the diffusion models"
    shot(page, "3-poses")

    page.fill("#v2v-prompt textarea", "claymation astronaut")
    # 8 steps at 256 pixels: the generate bar moves a step at a time for seconds (at 64 pixels, 2 steps, the run
    # can end between two of the page's updates, and no bar is seen moving)
    choose(page, "v2v-steps", "8")
    choose(page, "v2v-size", "256")
    page.click("#v2v-restyle")
    seen = watch_progress(page)
    assert seen[-1][0] == "done", error_line(page)
    dones = [dict(s[1]) for s in seen if s[0] == "running"]
    moved = {stage for stage in ("v2v-stage-generate", "v2v-stage-encode")
             if len({d.get(stage, 0) for d in dones}) > 1}
    assert moved, f"the progress bars did not move: {seen}"
    page.wait_for_selector("#v2v-compare video[data-role=result]")
    assert error_line(page) == ""

    # the three players, together
    until(page, "[...document.querySelectorAll('#v2v-compare video')].every(v => v.readyState >= 2)")
    page.evaluate("document.querySelector('#v2v-compare video[data-role=result]').play()")
    until(page, "document.querySelector('#v2v-compare video[data-role=result]').currentTime > 0.3")
    playing = players(page)
    assert set(playing) == {"source", "pose", "result"} and not any(p["error"] for p in playing.values())
    assert not any(p["paused"] for p in playing.values()), playing
    times = [p["t"] for p in playing.values()]
    assert max(times) - min(times) < 0.3, playing
    shot(page, "4-result")
    page.evaluate("document.querySelector('#v2v-compare video[data-role=result]').pause()")
    page.evaluate("document.querySelector('#v2v-compare video[data-role=result]').currentTime = 0.5")
    until(page, """[...document.querySelectorAll('#v2v-compare video')].every(
        v => v.paused && Math.abs(v.currentTime - 0.5) < 0.1)""")

    # the downloads, judged by ffprobe and by their content
    video = download(page, "#v2v-download-video", tmp_path / "result.mp4")
    assert ffprobe_frame_count(video) == 12
    assert ffprobe_frame_times(video) == [t - ffprobe_frame_times(clip)[0] for t in ffprobe_frame_times(clip)]
    streams = ffprobe_streams(video)
    assert streams["audio"] is not None and abs(float(streams["format"]["duration"]) - 1.0) < 0.1
    keypoints = json.loads(download(page, "#v2v-download-keypoints", tmp_path / "k.json").read_text())
    assert len(keypoints) == 12 and all("people" in frame for frame in keypoints)
    record = json.loads(download(page, "#v2v-download-settings", tmp_path / "s.json").read_text())
    assert record["schema"] == "v2v.settings" and record["prompt"] == "claymation astronaut"

    # the history: reopen the run, put its settings back into the form
    page.wait_for_selector("#v2v-history img")
    page.fill("#v2v-prompt textarea", "something else")
    page.locator("#v2v-history img").first.click()
    wait_text(page, "#v2v-run-details", "claymation astronaut")
    page.click("#v2v-use")
    until(page, "document.querySelector('#v2v-prompt textarea').value === 'claymation astronaut'")
    shot(page, "5-history")
    print(f"\nposes shown {posed:.1f} s after the click; progress states seen: {len(seen)}")


def test_cancel_stops_the_run_and_leaves_nothing(server, page):
    # 256 pixels: the tiny models take about half a second a frame there, so the first run is still generating
    # when the cancel comes, whatever the machine's speed
    clip = make_video(server.clips / "long.mp4", seconds=15.0, fps=12, size=(96, 64))
    # the second visitor's page is loaded and filled in before the first run starts: only clicks are left to time
    other = page.context.new_page()
    other.on("request", lambda r: page.requests.append(r.url))
    other.goto(server.url)
    other.wait_for_selector("#v2v-upload input[type=file]", state="attached")
    upload(other, clip)
    wait_text(other, "#v2v-input-info", "long.mp4")
    other.fill("#v2v-prompt textarea", "watercolour")

    page.bring_to_front()  # each page is brought to the front before it is used, as a visitor's would be
    upload(page, clip)
    wait_text(page, "#v2v-input-info", "long.mp4")
    page.fill("#v2v-prompt textarea", "oil painting")
    choose(page, "v2v-steps", "8")
    choose(page, "v2v-size", "256")
    runs_before = sorted(p.name for p in (server.out / "runs").glob("*")) if (server.out / "runs").exists() else []
    page.click("#v2v-restyle")
    until(page, "+document.querySelector('#v2v-stage-generate')?.dataset.done > 0", timeout=120_000)
    shot(page, "1-running")

    # a second visitor's run waits its turn, its place shown; cancelled there, it never runs
    other.bring_to_front()
    other.click("#v2v-restyle")
    wait_text(other, "#v2v-progress", "Waiting: 1 job ahead of this one")
    assert other.get_attribute("#v2v-progress", "data-state") == "queued"
    other.shots = page.shots
    shot(other, "2-queued")
    other.click("#v2v-cancel")
    wait_text(other, "#v2v-progress", "Cancelled: nothing was written")
    assert progress(page)[0] == "running"

    page.bring_to_front()
    page.click("#v2v-cancel")
    seen = watch_progress(page, timeout=60)
    assert seen[-1][0] == "cancelled"
    wait_text(page, "#v2v-progress", "Cancelled: nothing was written")
    shot(page, "3-cancelled")
    runs_after = sorted(p.name for p in (server.out / "runs").glob("*"))
    assert runs_after == runs_before
    leftovers = [p for p in server.out.rglob("*") if ".part" in p.name or p.name.startswith(".staging")]
    assert not leftovers
    assert error_line(page) == ""


def test_bad_uploads_get_the_error_line_and_the_server_keeps_serving(server, page):
    first_line = len(server.log)  # the server's output from here on is this test's
    bad = server.clips / "broken.mp4"
    bad.write_bytes(os.urandom(30_000))
    upload(page, bad)
    wait_text(page, "#v2v-error", "broken.mp4")
    message = error_line(page)
    assert "cannot read broken.mp4 as a video" in message and "Traceback" not in message and "/" not in message
    shot(page, "1-not-a-video")

    good = make_video(server.clips / "ok.mp4", seconds=1.0, fps=12, size=(96, 64))
    cut = server.clips / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    upload(page, cut)
    wait_text(page, "#v2v-error", "cut.mp4")
    shot(page, "2-truncated")

    huge = server.clips / "huge.mp4"
    huge.write_bytes(os.urandom(MAX_UPLOAD + 500_000))
    uploads_before = sorted((server.out / "uploads").glob("*"))
    upload(page, huge)
    wait_text(page, "#v2v-error", "huge.mp4 is 1.5 MB: the upload limit is 1 MB")
    time.sleep(0.5)
    assert sorted((server.out / "uploads").glob("*")) == uploads_before  # never sent, never kept
    shot(page, "3-too-big")

    upload(page, good)  # the server still serves: a good clip after the bad ones
    wait_text(page, "#v2v-input-info", "ok.mp4")
    assert error_line(page) == ""
    assert not any("Traceback" in line for line in server.log[first_line:]), "".join(server.log[first_line:])
