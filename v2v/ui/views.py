"""What the page shows, as HTML and text: the input's facts, the progress bars, the players side by side, the
downloads, the error line, a run's details. Pure functions of their arguments (the tests read them too).

Files are shown through the web server's file route (``gradio_api/file=PATH``, relative to the page), which serves
only the folders the server allows (``--out`` and ``--in``).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from urllib.parse import quote

from ..progress import STAGES

STAGE_NAMES = {"pose": "Poses", "generate": "Generating", "encode": "Writing the video"}
UNPLAYABLE = {".mov": "ProRes", ".gif": None}  # browsers cannot play ProRes; a GIF is shown as a picture
MUTED_NOTE = "Click a player to play all of them together; the sound is the result's."


def file_url(path: Path) -> str:
    return "gradio_api/file=" + quote(str(Path(path).resolve()), safe="/")


def plural(word: str, n: int) -> str:
    return word if n == 1 else word + ("es" if word.endswith("s") else "s")


def seconds(s: float) -> str:
    """1.5 -> '1.5 s', 83 -> '1:23'."""
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m}:{sec:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{sec:02d}"


def input_info(info, name: str) -> str:
    """One line of Markdown: the input's name, duration, frame rate, size and audio."""
    fps = float(info.fps)
    rate = f"{fps:.0f}" if abs(fps - round(fps)) < 0.005 else f"{fps:.2f}"
    duration = seconds(float(info.duration)) if info.duration else "unknown length"
    if info.audio is not None:
        channels = {1: "mono", 2: "stereo"}.get(info.audio.channels, f"{info.audio.channels} channels")
        audio = f"audio: {info.audio.codec}, {info.audio.sample_rate / 1000:g} kHz, {channels}"
    else:
        audio = "no audio"
    return (f"**{html.escape(name)}** · {duration} · {rate} fps · {info.display_width}×{info.display_height} · "
            f"{audio}")


def error_html(message: str | None) -> str:
    """The error line: the one-line message the command line prints (empty when there is none)."""
    if not message:
        return '<div id="v2v-error" class="v2v-error v2v-empty"></div>'
    return f'<div id="v2v-error" class="v2v-error" role="alert">{html.escape(message)}</div>'


def _stage_html(prefix: str, name: str, st) -> str:
    unit = STAGES.get(name, "item")
    if st is None:
        done = total = 0
        text = "waiting"
    else:
        done, total = st.done, st.total
        eta = st.eta()
        left = f" · about {seconds(eta)} left" if eta is not None and done < total else ""
        text = f"{done} of {total} {plural(unit, total)}{left}" if total else f"{done} {plural(unit, done)}"
    pct = 100.0 * done / total if total else 0.0
    return (f'<div class="v2v-stage" id="{prefix}-stage-{name}" data-done="{done}" data-total="{total}">'
            f'<span class="v2v-stage-name">{STAGE_NAMES.get(name, name)}</span>'
            f'<div class="v2v-bar"><div class="v2v-fill" style="width:{pct:.1f}%"></div></div>'
            f'<span class="v2v-stage-count">{text}</span></div>')


def progress_html(job, place: int = 0, now: float | None = None, prefix: str = "v2v") -> str:
    """The job's state and one bar per stage (its units done, the ETA at its rate so far). ``prefix`` names the
    panel's elements (PREFIX-progress, PREFIX-stage-STAGE): the pose preview's panel is another one."""
    if job is None:
        return f'<div id="{prefix}-progress" class="v2v-progress" data-state="idle"></div>'
    now = time.monotonic() if now is None else now
    what = "Posing" if job.kind == "pose" else "Restyling"
    if job.state == "queued":
        status = (f"Waiting: {place} {plural('job', place)} ahead of this one (one runs at a time)"
                  if place else "Starting…")
    elif job.state == "running":
        status = f"{what}…"
    elif job.state == "done":
        took = (job.finished_at or now) - (job.started or now)
        status = f"Done in {seconds(took)}."
    elif job.state == "cancelled":
        status = "Cancelled: nothing was written."
    else:
        status = "Failed: see the message above."
    stages = ("pose",) if job.kind == "pose" else tuple(STAGES)
    bars = "".join(_stage_html(prefix, name, job.stages.get(name)) for name in stages)
    return (f'<div id="{prefix}-progress" class="v2v-progress" data-state="{job.state}" data-kind="{job.kind}" '
            f'data-place="{place}"><div class="v2v-status">{html.escape(status)}</div>{bars}</div>')


def _player(role: str, label: str, path: Path | None, sound: bool) -> str:
    if path is None:
        return ""
    url = html.escape(file_url(path))
    if path.suffix.lower() == ".gif":
        media = f'<img data-role="{role}" src="{url}" alt="{label}">'
    else:
        muted = "" if sound else " muted"
        media = (f'<video data-role="{role}" data-v2v-sync src="{url}" controls playsinline preload="auto"'
                 f'{muted}></video>')
        if path.suffix.lower() == ".mov":
            media += '<div class="v2v-note">Browsers cannot play ProRes: download it.</div>'
    return f'<div class="v2v-slot"><div class="v2v-label">{label}</div>{media}</div>'


def compare_html(source: Path | None, pose: Path | None = None, result: Path | None = None,
                 downloads: list[tuple[str, str, Path]] = ()) -> str:
    """The source, its poses and the result side by side, played together (the page's script keeps them in
    step); ``downloads``: (id, label, file) links under them."""
    if source is None and pose is None and result is None:
        return ('<div id="v2v-compare" class="v2v-compare v2v-empty">Drop a video on the left: it plays here, with '
                'its poses and the result beside it.</div>')
    players = (_player("source", "Source", source, sound=result is None)
               + _player("pose", "Poses", pose, sound=False)
               + _player("result", "Result", result, sound=True))
    links = "".join(f'<a id="v2v-download-{key}" class="v2v-download" href="{html.escape(file_url(path))}" '
                    f'download="{html.escape(path.name)}">⬇ {html.escape(label)}</a>'
                    for key, label, path in downloads if path is not None)
    note = f'<div class="v2v-note">{MUTED_NOTE}</div>' if sum(x is not None for x in (source, pose, result)) > 1 \
        else ""
    return (f'<div id="v2v-compare" class="v2v-compare"><div class="v2v-players">{players}</div>{note}'
            f'<div class="v2v-downloads">{links}</div></div>')


def run_downloads(run) -> list[tuple[str, str, Path]]:
    return [("video", "Video", run.video), ("keypoints", "Keypoints (OpenPose JSON)", run.pose_json),
            ("settings", "Settings record", run.settings_file)]


def pose_summary(preview) -> str:
    """'12 frames posed · 3 without people' for a pose preview."""
    empty = preview.frames_without_people
    people = (f"{empty} without people (nobody found: those frames get no pose to follow)" if empty
              else "a person found in every frame")
    return (f'<div id="v2v-pose-summary" data-frames="{preview.frames}" data-empty="{empty}"><b>Poses:</b> '
            f'{preview.frames} {plural("frame", preview.frames)} · {people}</div>')


def run_caption(run) -> str:
    prompt = run.prompt if len(run.prompt) <= 60 else run.prompt[:57] + "…"
    return f"{prompt} · seed {run.seed} · {run.created}"


def run_details(run) -> str:
    """Markdown: what a run was made with."""
    if run is None:
        return ""
    rec = run.record or {}
    opts = rec.get("options", {}) if isinstance(rec.get("options"), dict) else {}
    base = ((rec.get("models") or {}).get("base") or {}).get("spec", "") if isinstance(rec.get("models"), dict) \
        else ""
    facts = [f"seed {run.seed}", f"{opts.get('steps', '?')} steps", f"base {base or '?'}", run.created]
    return f"**{html.escape(run.prompt) or '(no record)'}** · " + " · ".join(html.escape(str(f)) for f in facts)
