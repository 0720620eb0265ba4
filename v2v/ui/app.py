"""The page's layout (Gradio Blocks) and which handler each control calls (v2v/ui/handlers.py does the work).

Left: the input (drop or pick, its facts, the trim), the form, the buttons, the progress. Right: the source, its
poses and the result side by side, played together, with the downloads; the history of runs in --out. The error
line stays at the top of the window.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import form, views
from .handlers import Page

HERE = Path(__file__).parent
TRIM_JS = ("() => { const v = document.querySelector('#v2v-compare video[data-role=source]'); "
           "return v ? Math.round(v.currentTime * 100) / 100 : %s; }")


def base_choices(models: str) -> list[tuple[str, str]]:
    """The base models `v2v models` lists, those already downloaded marked; first the model set's default."""
    from ..models.catalog import BASE_MODELS, cached_repos

    cached = {r["alias"] for r in cached_repos() if r.get("alias")}
    first = "the tiny set's own (test models)" if models == "tiny" else "default: epiCRealism"
    return [(first, "")] + [(f"{m.name} · {m.title}{' · downloaded' if m.name in cached else ''}", m.name)
                            for m in BASE_MODELS if m.repo]


def _header(page: Page) -> str:
    tiny = page.server_options.get("models") == "tiny"
    note = ('<p class="v2v-tiny">Running the tiny test models (<code>--models tiny</code>): the result is noise; '
            'it checks the whole path.</p>') if tiny else ""
    return ('<div class="v2v-header"><h1>v2v: restyle the people in a video</h1><p>1. Drop a video. 2. See its '
            'poses. 3. Write the new look and restyle: same motion, same timing, same sound.</p>' + note + '</div>')


def _form(page: Page, d: dict) -> dict:
    """The form's components, by form.FIELDS name (the trim's start and end are made with the input)."""
    f: dict = {}
    f["prompt"] = gr.Textbox(label="Prompt: the new look", value=d.get("prompt", ""), lines=2, elem_id="v2v-prompt",
                             placeholder="claymation astronaut, studio lighting")
    with gr.Row():
        f["negative_prompt"] = gr.Textbox(label="Negative prompt", value=d.get("negative_prompt", ""),
                                          elem_id="v2v-negative", info="what to avoid (acts with guidance above 1)")
        f["guidance"] = gr.Slider(1.0, 3.0, step=0.1, value=d.get("guidance", 1.0), label="Guidance",
                                  info="1: the Lightning models' own; above 1 the negative prompt acts (slower)")
    with gr.Row():
        f["preset"] = gr.Dropdown(["(none)", *page.presets], value="(none)", label="Preset", elem_id="v2v-preset",
                                  info="fills the form")
        f["base"] = gr.Dropdown(base_choices(page.server_options.get("models", "default")), value=d.get("base", ""),
                                allow_custom_value=True, label="Base model", elem_id="v2v-base",
                                info="or a hub id, a folder, a .safetensors file")
    with gr.Row():
        f["steps"] = gr.Dropdown([(form.step_label(s), s) for s in sorted({*form.STEP_CHOICES, d.get("steps", 4)})],
                                 value=d.get("steps", 4), label="Steps", elem_id="v2v-steps",
                                 info="more: better and slower")
        f["strength"] = gr.Dropdown(form.strength_choices(d.get("steps", 4)),
                                    value=form.nearest_strength(d.get("steps", 4), d.get("strength", 1.0)),
                                    label="Strength", elem_id="v2v-strength", info="below 1 keeps the source's colours")
    with gr.Row():
        f["seed"] = gr.Number(value=d.get("seed", 0), precision=0, label="Seed", elem_id="v2v-seed",
                              info="the same seed and settings give the same video", scale=3)
        f["dice"] = gr.Button("⚄ Roll a new seed", elem_id="v2v-dice", scale=1, size="sm", min_width=90)
    with gr.Row():
        f["pose_strength"] = gr.Slider(0.0, 2.0, step=0.05, value=d.get("pose_strength", 1.0), label="Pose strength",
                                       info="how strongly the poses steer", elem_id="v2v-pose-strength")
        f["size"] = gr.Dropdown(list(form.SIZE_CHOICES), value=d.get("size", "auto"), allow_custom_value=True,
                                label="Size (short side, pixels)", elem_id="v2v-size",
                                info="auto: 512 (128 with the tiny models)")
    with gr.Accordion("Advanced", open=False, elem_id="v2v-advanced"):
        f["motion_loras"] = gr.Textbox(label="Motion LoRA", value=d.get("motion_loras", ""), elem_id="v2v-lora",
                                       info="a camera move: a hub repo or a file, one per line, e.g. "
                                            "guoyww/animatediff-motion-lora-zoom-in")
        f["lora_strength"] = gr.Slider(0.0, 1.5, step=0.05, value=d.get("lora_strength", form.DEFAULT_LORA_STRENGTH),
                                       label="LoRA strength", info="0.7-0.8 suggested")
        f["fast_decode"] = gr.Checkbox(value=d.get("fast_decode", False), label="Fast decode",
                                       info="TAESD instead of the VAE: much faster, a little softer")
        f["pose"] = gr.Radio(list(form.POSE_CHOICES), value=d.get("pose", "dwpose"), label="Pose detector")
        f["pose_smoothing"] = gr.Slider(0.0, 1.0, step=0.05, value=d.get("pose_smoothing", 0.5),
                                        label="Pose smoothing", info="0: off; steadier poses toward 1")
        f["format"] = gr.Dropdown(list(form.FORMAT_CHOICES), value=d.get("format", "h264"), label="Output format",
                                  elem_id="v2v-format")
    return f


def build(page: Page) -> gr.Blocks:
    """The page, wired to ``page``'s handlers."""
    d = form.defaults(page.server_options)
    with gr.Blocks(title="v2v: restyle a video", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        input_path, duration, extras = gr.State(None), gr.State(None), gr.State({})
        job_id, pose_job, ids, selected = gr.State(None), gr.State(None), gr.State([]), gr.State(None)
        error = gr.HTML(views.error_html(None), elem_id="v2v-error-box")
        gr.HTML(_header(page))
        with gr.Row():
            with gr.Column(scale=2, min_width=360):
                upload = gr.File(label="Video: drop it here, or click to choose", file_count="single",
                                 type="filepath", elem_id="v2v-upload", height=110)
                picker = refresh = None
                if page.in_dir is not None:
                    with gr.Row(equal_height=True):
                        picker = gr.Dropdown(page.input_choices(), value=None, label=f"…or one from {page.in_dir}",
                                             elem_id="v2v-pick", scale=4)
                        refresh = gr.Button("↻", scale=1, size="sm")
                info = gr.Markdown(elem_id="v2v-input-info")
                with gr.Row():
                    start = gr.Number(value=0, minimum=0, label="Start (s)", elem_id="v2v-start", min_width=90)
                    end = gr.Number(value=None, minimum=0, label="End (s)", elem_id="v2v-end", min_width=90,
                                    placeholder="the end of the clip")
                with gr.Row():
                    start_here = gr.Button("◷ Start at the player's time", size="sm", elem_id="v2v-start-here")
                    end_here = gr.Button("◷ End at the player's time", size="sm", elem_id="v2v-end-here")
                f = _form(page, d)
                f["start"], f["end"] = start, end
                with gr.Row(equal_height=True):
                    extras_note = gr.Markdown(elem_id="v2v-extras")
                    forget = gr.Button("Forget those", size="sm", scale=0, visible=False, elem_id="v2v-forget")
                with gr.Row():
                    poses_btn = gr.Button("Poses", elem_id="v2v-poses", min_width=80, scale=1)
                    restyle_btn = gr.Button("Restyle", variant="primary", elem_id="v2v-restyle", min_width=100,
                                            scale=2)
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="v2v-cancel", min_width=80, scale=1)
            with gr.Column(scale=3):
                compare = gr.HTML(views.compare_html(None))
                progress = gr.HTML(views.progress_html(None))
                pose_line = gr.HTML(elem_id="v2v-pose-line")
                gallery = gr.Gallery(label="Earlier runs (in the output folder)", columns=4, height=260,
                                     allow_preview=False, elem_id="v2v-history", object_fit="contain",
                                     interactive=False, fit_columns=False)
                details = gr.Markdown(elem_id="v2v-run-details")
                use_btn = gr.Button("Use these settings", elem_id="v2v-use")
                settings_file = gr.File(label="Or take the settings of a file: a NAME.restyled.json, or a video v2v "
                                              "made", type="filepath", elem_id="v2v-settings-file", height=90)
        _wire(page, demo, f, locals())
    return demo


def _wire(page: Page, demo: gr.Blocks, f: dict, c: dict) -> None:
    """Each control to its handler. ``c``: build()'s components by name."""
    fields = [f[name] for name in form.FIELDS]
    shown_input = [c["input_path"], c["duration"], c["info"], c["compare"], c["start"], c["end"], c["error"],
                   c["pose_line"]]
    filled = [*fields, c["extras"], c["extras_note"], c["forget"]]
    quick = dict(concurrency_limit=None, show_progress="hidden")

    c["upload"].upload(page.upload, c["upload"], [*shown_input, c["upload"]], **quick)
    c["upload"].clear(lambda: page.upload(None), None, [*shown_input, c["upload"]], **quick)
    if c["picker"] is not None:
        c["picker"].input(page.pick, c["picker"], shown_input, **quick)
        c["refresh"].click(lambda: gr.update(choices=page.input_choices()), None, c["picker"], **quick)
    c["start_here"].click(None, None, c["start"], js=TRIM_JS % "0")
    c["end_here"].click(None, None, c["end"], js=TRIM_JS % "null")
    f["dice"].click(page.dice, None, f["seed"], **quick)
    f["steps"].input(page.steps_changed, [f["steps"], f["strength"]], f["strength"], **quick)
    f["preset"].input(page.preset, f["preset"], filled, **quick)
    c["forget"].click(lambda: ({}, "", gr.update(visible=False)), None, [c["extras"], c["extras_note"], c["forget"]],
                      **quick)
    c["settings_file"].upload(page.settings_file, c["settings_file"], [*filled, c["error"]], **quick)

    work_inputs = [c["input_path"], c["duration"], c["extras"], *fields]

    def poses(inp, dur, ex, *values):
        yield from page.poses(inp, dur, dict(zip(form.FIELDS, values)), ex)

    def restyle(inp, dur, ex, *values):
        yield from page.restyle(inp, dur, dict(zip(form.FIELDS, values)), ex)

    c["poses_btn"].click(poses, work_inputs, [c["pose_job"], c["pose_line"], c["compare"], c["error"]], **quick)
    c["restyle_btn"].click(restyle, work_inputs, [c["job_id"], c["progress"], c["compare"], c["error"],
                                                  c["gallery"], c["ids"]], **quick)
    c["cancel_btn"].click(page.cancel, [c["job_id"], c["pose_job"]], None, **quick)

    def select(ids, evt: gr.SelectData):
        return page.open_run(evt.index, ids)

    c["gallery"].select(select, c["ids"], [c["selected"], c["details"], c["compare"]], **quick)
    c["use_btn"].click(page.use_run, [c["selected"], c["input_path"]],
                       [*filled, c["error"], c["input_path"], c["duration"], c["info"], c["compare"]], **quick)
    demo.load(page.history, None, [c["gallery"], c["ids"]], **quick)


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: nothing is fetched from a font service."""
    return gr.themes.Default(font=["system-ui", "Segoe UI", "Roboto", "sans-serif"],
                             font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


def head(max_upload: int) -> str:
    """The page's script (the upload's size check, the players kept in step), inline: no file to fetch."""
    script = (HERE / "page.js").read_text(encoding="utf-8")
    return f"<script>window.V2V_MAX_UPLOAD = {int(max_upload)};\n{script}</script>"


def css() -> str:
    return (HERE / "page.css").read_text(encoding="utf-8")
