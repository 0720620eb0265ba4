"""Many videos on many GPUs: ``v2v batch`` on Ray (the extra ``v2v[ray]``).

    from v2v.batch import run
    summary = run("campaign.csv", "out/", prompt="claymation")          # a local Ray instance, one worker per GPU
    summary = run("clips/*.mp4", "out/", prompt="anime", workers=2)     # no GPU: two CPU workers
    summary = run("clips/", "out/", address="ray://head:10001")         # a cluster's workers

JOBS are read and every job's options checked before any starts (``sources.py``, ``jobs.py``); each worker is a
Ray actor around one Restyler (``worker.py``); the driver schedules, retries and writes (``runner.py``), and
records every job in ``OUT_DIR/batch.jsonl`` (``ledger.py``). See docs/batch.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidOptions
from ..options import option_names
from .jobs import check_batch_options, plan_jobs
from .ledger import Ledger, latest_by_key, read_ledger
from .runner import BatchRunner, BatchSummary, JobResult
from .sources import read_jobs

__all__ = ["run", "BatchSummary", "JobResult"]

MAX_INPUT_MB = 512.0


def run(jobs: str | os.PathLike, out_dir: str | os.PathLike, *, prompt: str | None = None, address: str | None = None,
        workers: int | None = None, gpus_per_job: float = 1.0, cpus_per_worker: float | None = None,
        max_input_mb: float = MAX_INPUT_MB, max_retries: int = 2, retry_failed: bool = False,
        keep_pose: bool = False, config=None, dashboard: bool = False, on_event=None, **options) -> BatchSummary:
    """Restyle every job of ``jobs`` into ``out_dir`` on Ray workers, each keeping its models loaded.

    ``jobs``: a folder of videos (with their sidecars, as watch mode reads them), a glob, one video, or a manifest
    (.csv, or .jsonl: ``input``, ``prompt`` and any option per row). ``prompt`` and ``options`` (RestyleOptions
    fields): for every job, under each row's own. ``address``: a Ray cluster ("ray://HOST:10001", or "auto" on
    a machine of it); default a local Ray instance (joined when this process has already started Ray).
    ``workers``: how many (default one per GPU, else 1); ``gpus_per_job``: GPUs each worker reserves (0: CPU
    workers); ``cpus_per_worker``: CPUs each reserves (default 1 with a GPU, else the machine's cores shared).
    ``max_input_mb``: a larger input is skipped (videos travel as bytes). ``max_retries``: how often a job whose
    worker died is tried again. ``retry_failed``: run again the jobs that failed in an earlier run (done ones are
    always skipped). ``keep_pose``: also write OUT_DIR/NAME.pose.mp4. ``config``: the v2v.config.Config whose
    presets a row's "preset" names (default the user's). ``dashboard``: start Ray's dashboard with a local
    instance (needs ray[default]). ``on_event(dict)``: each event ("batch", then "job" with status started,
    retry, done, failed, skipped, interrupted).

    Returns a :class:`BatchSummary`. Raises before any job starts: InvalidOptions (bad options, a manifest with
    an unknown option), InputNotFound (no such JOBS); OutputError (OUT_DIR not writable, or another batch writing
    there); ClusterError (no Ray, no cluster, no worker); Interrupted on Ctrl-C (``.summary``: what was done).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidOptions(f"--workers must be a whole number >= 1, got {workers!r}")
    for name, value, low in (("--gpus-per-job", gpus_per_job, 0), ("--max-input-mb", max_input_mb, 1e-9),
                             ("--cpus-per-worker", cpus_per_worker or 1, 1e-9)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise InvalidOptions(f"{name} must be a number {'>= 0' if low == 0 else '> 0'}, got {value!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidOptions(f"--max-retries must be a whole number >= 0, got {max_retries!r}")
    if not isinstance(keep_pose, bool):
        raise InvalidOptions("keep_pose in a batch is true or false: each job's pose video goes to OUT_DIR as "
                             "NAME.pose.mp4")
    batch_options = {k: v for k, v in {**options, "prompt": prompt}.items() if v is not None}
    unknown = set(batch_options) - option_names() - {"prompt"}
    if unknown:
        raise InvalidOptions(f"unknown option(s): {', '.join(sorted(unknown))}")
    check_batch_options(batch_options)
    out = Path(out_dir).expanduser().resolve()
    jobs_path = Path(os.fspath(jobs)).expanduser()
    if jobs_path.is_dir() and jobs_path.resolve() == out:
        raise InvalidOptions(f"--out '{out}' is the folder of the videos: its results would be taken as videos on "
                             "the next run; choose another --out")
    rows = read_jobs(jobs)
    max_bytes = int(max_input_mb * 2**20)
    with Ledger(out) as ledger:
        ledger.sweep()
        planned = plan_jobs(rows, out, batch_options=batch_options, config=config, keep_pose=keep_pose,
                            max_input_bytes=max_bytes, latest=latest_by_key(read_ledger(out)),
                            retry_failed=retry_failed)
        return BatchRunner(planned, out, ledger, address=address, workers=workers, gpus_per_job=float(gpus_per_job),
                           cpus_per_worker=cpus_per_worker, max_retries=max_retries, max_bytes=max_bytes,
                           dashboard=dashboard, on_event=on_event).run()
