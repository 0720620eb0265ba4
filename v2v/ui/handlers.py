"""What the page's buttons do: each handler takes the form's plain values and returns what the page shows, by
calling the API (through the job runner for anything that takes time). ``app.py`` wires them to the page.

Every error reaches the page as the error line: the one-line message the command line prints, never a trace.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..errors import InvalidOptions, V2VError, one_line
from . import form, runs, views
from .jobs import JobRunner
from .uploads import DEFAULT_LIMIT, inside, list_inputs, original_stem, store_upload

log = logging.getLogger("v2v")


@dataclass
class Page:
    """The server's side of the page: one Restyler (models loaded once), one job runner, the folders."""

    restyler: object
    out: Path
    in_dir: Path | None = None
    max_upload: int = DEFAULT_LIMIT
    server_options: dict = field(default_factory=dict)  # `v2v ui` options, config and preset: the form's defaults
    presets: dict = field(default_factory=dict)
    runner: JobRunner = field(default_factory=JobRunner)

    # ------------------------------------------------------------------ the input
    def _show_input(self, path: Path, info, name: str) -> tuple:
        duration = round(float(info.duration), 2) if info.duration else None
        return (str(path), duration, views.input_info(info, name), views.compare_html(path), 0, None,
                views.error_html(None), "")

    def _no_input(self, message: str | None) -> tuple:
        return None, None, "", views.compare_html(None), 0, None, views.error_html(message), ""

    def upload(self, file: str | None, name: str | None = None) -> tuple:
        """A dropped file: stored under OUT/uploads once it proves a video. Returns (input, duration, info,
        players, start, end, error line, pose line, the drop zone: emptied when the file was refused)."""
        if not file:
            return (*self._no_input(None), _skip())
        try:
            path, info = store_upload(file, self.out, limit=self.max_upload, name=name or Path(file).name)
        except V2VError as e:
            return (*self._no_input(one_line(e)), None)
        return (*self._show_input(path, info, Path(name or file).name), _skip())

    def input_choices(self) -> list[str]:
        return [p.name for p in list_inputs(self.in_dir)]

    def pick(self, name: str | None) -> tuple:
        """A video of the --in folder, chosen by name (only a name the folder lists)."""
        from ..media.probe import probe

        if not name:
            return self._no_input(None)
        found = {p.name: p for p in list_inputs(self.in_dir)}
        if name not in found:
            return self._no_input(f"'{name}' is not in the input folder any more: refresh the list")
        try:
            info = probe(found[name])
        except V2VError as e:
            return self._no_input(one_line(e))
        return self._show_input(found[name], info, name)

    # ------------------------------------------------------------------ the form
    def form_update(self, values: dict) -> list:
        """The form's components' new values in form.FIELDS order (a field not in ``values`` keeps its own)."""
        import gradio as gr

        out = []
        for name in form.FIELDS:
            if name == "strength" and "strength" in values:
                steps = values.get("steps", 4)
                out.append(gr.update(choices=form.strength_choices(steps),
                                     value=form.nearest_strength(steps, values["strength"])))
            elif name == "steps" and "steps" in values:
                steps = int(values["steps"])
                choices = [(form.step_label(s), s) for s in sorted({*form.STEP_CHOICES, steps})]
                out.append(gr.update(choices=choices, value=steps))
            else:
                out.append(gr.update(value=values[name]) if name in values else gr.update())
        return out

    def steps_changed(self, steps, strength):
        import gradio as gr

        try:
            steps = int(steps)
        except (TypeError, ValueError):
            return gr.update()
        return gr.update(choices=form.strength_choices(steps),
                         value=form.nearest_strength(steps, strength if strength is not None else 1.0))

    @staticmethod
    def dice() -> int:
        return random.randrange(2**31)

    def preset(self, name: str | None) -> list:
        """The form filled with a preset's options (its other options kept as extras). Form fields, extras,
        extras line."""
        if not name or name not in self.presets:
            return [*self.form_update({}), *_extras({})]
        values, extras = form.form_values(dict(self.presets[name]))
        return [*self.form_update(values), *_extras(extras)]

    def _from_record(self, source: Path) -> tuple[dict, dict, object]:
        from ..settings import load_settings

        recorded = load_settings(source)
        values, extras = form.form_values(recorded.options)
        return values, extras, recorded

    def settings_file(self, file: str | None) -> list:
        """A settings record dropped on the page (NAME.restyled.json, or a video v2v wrote): into the form.
        Form fields, extras, extras line, error line."""
        if not file:
            return [*self.form_update({}), *_unchanged(3), views.error_html(None)]
        try:
            values, extras, _ = self._from_record(Path(file))
        except V2VError as e:
            return [*self.form_update({}), *_unchanged(3), views.error_html(one_line(e))]
        return [*self.form_update(values), *_extras(extras), views.error_html(None)]

    # ------------------------------------------------------------------ work
    def _run_options(self, input: str | None, duration, values: dict, extras: dict | None,
                     need_prompt: bool = True) -> tuple[str, dict]:
        if not input:
            raise InvalidOptions("drop a video on the page first (or pick one from the input folder)")
        prompt, options = form.run_options(values, extras, duration)
        if need_prompt and not prompt.strip():
            raise InvalidOptions("write a prompt first: the new look, e.g. 'claymation astronaut'")
        # every option checked before the job is queued
        self.restyler.options_for(prompt or None, need_prompt=need_prompt, **options)
        return prompt, options

    def poses(self, input, duration, values: dict, extras: dict | None):
        """Generator: the pose preview's progress, then its summary and the pose-map video beside the source.
        Yields (pose job id, pose line, players, error line)."""
        try:
            _, options = self._run_options(input, duration, values, extras, need_prompt=False)
        except V2VError as e:
            yield None, "", _skip(), views.error_html(one_line(e))
            return
        work = partial(runs.pose_preview, self.restyler, Path(input), self.out, options)
        job = self.runner.submit("pose", work, first=True)
        for j in self.runner.follow(job):
            if not j.finished:
                yield job.id, views.progress_html(j, self.runner.place(j), prefix="v2v-pose"), _skip(), \
                    views.error_html(None)
        if job.state == "done":
            p = job.result
            yield (job.id, views.pose_summary(p), views.compare_html(Path(input), p.video,
                                                                      downloads=[("keypoints", "Keypoints", p.json)]),
                   views.error_html(None))
        else:
            yield job.id, views.progress_html(job, prefix="v2v-pose"), _skip(), views.error_html(_failure(job))

    def restyle(self, input, duration, values: dict, extras: dict | None):
        """Generator: the run's place in the line and its progress, then the result beside the source and its
        poses, the downloads and the history. Yields (job id, progress, players, error line, history, its ids)."""
        try:
            prompt, options = self._run_options(input, duration, values, extras)
        except V2VError as e:
            yield None, views.progress_html(None), _skip(), views.error_html(one_line(e)), _skip(), _skip()
            return
        work = partial(runs.restyle_run, self.restyler, Path(input), self.out, prompt, options)
        job = self.runner.submit("restyle", work)
        for j in self.runner.follow(job):
            if not j.finished:
                yield (job.id, views.progress_html(j, self.runner.place(j)), _skip(), views.error_html(None), _skip(),
                       _skip())
        if job.state == "done":
            yield (job.id, views.progress_html(job), self.show_run(job.result, Path(input)), views.error_html(None),
                   *self.history())
        else:
            yield job.id, views.progress_html(job), _skip(), views.error_html(_failure(job)), _skip(), _skip()

    def cancel(self, *job_ids: str | None) -> None:
        for job_id in job_ids:
            self.runner.cancel(job_id)

    # ------------------------------------------------------------------ the history
    def history(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The gallery, (thumbnail, caption) per finished run, newest first; and the runs' ids in that order."""
        items, ids = [], []
        for run in runs.list_runs(self.out):
            thumb = run.thumb or runs.thumbnail(run.video, run.folder / runs.THUMB)
            if thumb is not None:
                items.append((str(thumb), views.run_caption(run)))
                ids.append(run.id)
        return items, ids

    def show_run(self, run, source: Path | None = None) -> str:
        """A run in the players: its input (when it is still there, in --out or --in), poses and result."""
        src = source if source is not None else run.input
        if src is not None and not (src.is_file() and inside(src, self.out, self.in_dir)):
            src = None
        return views.compare_html(src, run.pose_video, run.video, views.run_downloads(run))

    def open_run(self, index: int | None, ids: list[str]) -> tuple:
        """A history entry chosen: (its id, its details, the players)."""
        run = runs.find_run(self.out, ids[index]) if ids and index is not None and 0 <= index < len(ids) else None
        if run is None:
            return None, "", _skip()
        return run.id, views.run_details(run), self.show_run(run)

    def use_run(self, run_id: str | None, input: str | None) -> list:
        """"Use these settings": the run's record into the form (from its JSON, else from the video's own
        metadata), and its input back when it is still there (in --out or --in). Form fields, extras, extras
        line, error line, then the input's (input, duration, info, players)."""
        run = runs.find_run(self.out, run_id)
        shown = _unchanged(4)
        if run is None:
            return [*self.form_update({}), *_unchanged(3), views.error_html("choose a run in the history first"),
                    *shown]
        try:
            values, extras, recorded = self._from_record(run.settings_file or run.video)
        except V2VError as e:
            return [*self.form_update({}), *_unchanged(3), views.error_html(one_line(e)), *shown]
        src = recorded.input
        if src is not None and src.is_file() and inside(src, self.out, self.in_dir) and str(src) != input:
            from ..media.probe import probe

            try:
                name = original_stem(src) + src.suffix
                shown = list(self._show_input(src, probe(src), name)[:3]) + [self.show_run(run, src)]
            except V2VError:
                pass
        return [*self.form_update(values), *_extras(extras), views.error_html(None), *shown]


def _failure(job) -> str | None:
    """The error line after a job: its message when it failed (a cancel is no error: the progress says it)."""
    return job.error if job.state == "failed" else None


def _extras(extras: dict) -> tuple:
    """The extras kept beside the form, their line, and the button that forgets them (shown when there are some)."""
    import gradio as gr

    note = form.describe_extras(extras)
    return extras, f"Also from the loaded settings: {note}" if note else "", gr.update(visible=bool(note))


def _unchanged(n: int) -> list:
    return [_skip() for _ in range(n)]


def _skip():
    """No change to a component (gradio's empty update)."""
    import gradio as gr

    return gr.update()
