"""The batch's jobs worked out before any starts: each row's options merged and validated, its done-key (same input
content + same settings = the same job), its model set, its output name, and what an earlier run of the same batch
says about it (``OUT_DIR/batch.jsonl``). Pure: no Ray, no model.

Which value wins, highest first (as in watch mode): the row (a manifest's cells, a video's sidecars) > the row's
``preset`` > the batch's options (the command line's over the config and ``--preset``) > built-in defaults.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputNotFound, InvalidOptions, V2VError, one_line
from ..media.outputs import default_output
from .sources import Row

log = logging.getLogger("v2v")

# the settings that decide what a worker loads: jobs that share them share its loaded models
MODEL_FIELDS = ("models", "base", "motion", "controlnet", "vae", "fast_decode", "motion_loras", "lightning_steps",
                "device", "dtype", "compile", "offload", "pose", "pose_model", "pose_runtime")
RUN, DONE, FAILED, SKIPPED = "run", "done", "failed", "skipped"  # a job's state once planned
FAILED_BEFORE = "failed-before"  # failed in an earlier run: left alone unless retry_failed


@dataclass
class Job:
    """One job of the batch, planned."""

    index: int  # its place in JOBS
    input: Path
    source: str  # where it came from ("jobs.csv line 3"), for messages
    options: dict = field(default_factory=dict)  # for Restyler.restyle: prompt included; keep_pose a bool
    key: str | None = None  # done-key: sha256 of the input's fingerprint and the settings
    models: str = ""  # the model set's key (MODEL_FIELDS)
    stem: str = ""  # the name its results are written under: NAME, or NAME-2... when NAME is taken
    output: Path | None = None  # OUT_DIR/STEM.restyled.mp4 (the format's extension)
    size: int = 0  # the input's bytes
    signature: tuple | None = None  # (size, mtime_ns) when planned: the input must not change meanwhile
    state: str = RUN
    error: str | None = None  # why it failed or was skipped
    attempts: int = 0  # tries that reached a worker
    avoid: set = field(default_factory=set)  # workers that died running it: another one goes first

    @property
    def prompt(self) -> str | None:
        return self.options.get("prompt")


def merge_options(row: Row, batch_options: dict, config) -> dict:
    """The row's options over its preset and the batch's options; ``config``: where the presets are."""
    own = dict(row.options)
    preset = {}
    if "preset" in own:
        from ..config import load_config

        name = own.pop("preset")
        try:
            preset = (config if config is not None else load_config()).preset(name)
        except InvalidOptions as e:
            raise InvalidOptions(f"{row.source}: {e}") from None
    return {**batch_options, **preset, **own}


def done_key(settings: dict, fingerprint: str) -> str:
    """What makes two jobs the same: the input's content and every setting (prompt and seed included)."""
    blob = json.dumps({"v": 1, "input": fingerprint, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def model_key(settings: dict) -> str:
    """A short key of the model set these settings load (jobs with one key share a worker's models)."""
    blob = json.dumps({k: settings.get(k) for k in MODEL_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan_job(index: int, row: Row, *, batch_options: dict, config, keep_pose: bool, max_input_bytes: int) -> Job:
    """A job from one row: FAILED with the reason (bad values, no prompt, no input) or SKIPPED (too large)."""
    from ..pipeline import Restyler
    from ..pose.cache import file_fingerprint

    job = Job(index, row.input, row.source)
    if row.error:
        job.state, job.error = FAILED, row.error
        return job
    try:
        options = merge_options(row, batch_options, config)
        keep = options.pop("keep_pose", keep_pose)
        prompt = options.pop("prompt", None)
        if not prompt:
            raise InvalidOptions(f"no prompt for {row.input.name}: give the batch a prompt (-p), or the job one (a "
                                 f"'prompt' in the manifest, or {row.input.stem}.txt beside the video)")
        o = Restyler().options_for(prompt, **options)
        if not row.input.is_file():
            raise InputNotFound(f"input '{row.input}' does not exist or is not a file ({row.source})")
        st = row.input.stat()
        job.size, job.signature = st.st_size, (st.st_size, st.st_mtime_ns)
        if st.st_size > max_input_bytes:
            job.state = SKIPPED
            job.error = (f"{row.input.name} is {st.st_size / 2**20:.0f} MB, over the batch's limit of "
                         f"{max_input_bytes / 2**20:.0f} MB (videos travel to the workers as bytes): raise "
                         "--max-input-mb, or cut the video")
            return job
        settings = {**o.settings(), "keep_pose": bool(keep)}
        if o.pose_json is not None:  # the keypoints' content, not their path
            settings["pose_json"] = file_fingerprint(o.pose_json)
        job.key = done_key(settings, file_fingerprint(row.input))
        job.models = model_key(settings)
        job.options = {**options, "prompt": prompt, "keep_pose": bool(keep)}
    except V2VError as e:
        job.state, job.error = FAILED, one_line(e)
    except OSError as e:
        job.state, job.error = FAILED, f"input '{row.input}' cannot be read ({one_line(e)})"
    return job


def check_batch_options(batch_options: dict) -> None:
    """The batch's own options, checked before anything starts (a placeholder prompt when it gives none)."""
    from ..pipeline import Restyler

    merged = dict(batch_options)
    merged.pop("keep_pose", None)
    prompt = merged.pop("prompt", None) or "(checked per job)"
    try:
        Restyler().options_for(prompt, **merged)
    except TypeError as e:  # a value of the wrong type reached a comparison
        raise InvalidOptions(f"invalid option value ({one_line(e)})") from None


def apply_ledger(jobs: list[Job], latest: dict[str, dict], retry_failed: bool, out_dir: Path) -> None:
    """What an earlier run says: a job done (its output still in OUT_DIR, wherever OUT_DIR was then) is DONE, one
    that failed is FAILED_BEFORE unless ``retry_failed``; a job listed twice in JOBS runs once."""
    first: dict[str, Job] = {}
    for job in jobs:
        if job.state != RUN:
            continue
        if job.key in first:
            job.state, job.error = SKIPPED, f"the same job as {first[job.key].source} (same input and settings)"
            continue
        first[job.key] = job
        rec = latest.get(job.key)
        if rec is None:
            continue
        output = out_dir / Path(rec["output"]).name if isinstance(rec.get("output"), str) else None
        if rec.get("status") == "done" and output is not None and output.exists():
            job.state, job.output = DONE, output
        elif rec.get("status") == "failed" and not retry_failed:
            job.state, job.error = FAILED_BEFORE, rec.get("error")


def name_jobs(jobs: list[Job], out_dir: Path) -> None:
    """Give each job to run its results' name in OUT_DIR: the input's name, or NAME-2, NAME-3... when results of
    that name are there (an earlier video's, or another job of this batch's), as watch mode names them."""
    taken: set[str] = set()
    for job in jobs:
        if job.state != RUN:
            continue
        stem, k = job.input.stem, 1
        while stem in taken or stem_used(out_dir, stem):
            k += 1
            stem = f"{job.input.stem}-{k}"
        taken.add(stem)
        job.stem = stem
        job.output = out_dir / default_output(Path(stem + job.input.suffix), job.options.get("format")).name


def stem_used(out_dir: Path, stem: str) -> bool:
    """Whether results named ``stem`` are in OUT_DIR: STEM.restyled.* (and its folder), or STEM.pose.*."""
    esc = glob.escape(stem)
    return any(out_dir.glob(f"{esc}.restyled*")) or any(out_dir.glob(f"{esc}.pose.*"))


def plan_jobs(rows: list[Row], out_dir: Path, *, batch_options: dict, config=None, keep_pose: bool = False,
              max_input_bytes: int, latest: dict[str, dict] | None = None, retry_failed: bool = False) -> list[Job]:
    """Every row as a planned job, in order; ``latest``: the ledger's last record per done-key."""
    jobs = [plan_job(i, row, batch_options=batch_options, config=config, keep_pose=keep_pose,
                     max_input_bytes=max_input_bytes) for i, row in enumerate(rows)]
    apply_ledger(jobs, latest or {}, retry_failed, out_dir)
    name_jobs(jobs, out_dir)
    return jobs
