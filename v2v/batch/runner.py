"""The batch's driver: Ray started (or joined), one worker actor per GPU (or N CPU workers), the jobs handed to the
free workers (a job goes first to a worker that has its model set loaded), each result written into OUT_DIR
atomically and recorded in ``batch.jsonl``.

What Ray does, and v2v does not redo: placing the workers on GPUs and machines (``num_gpus``), moving the bytes
(its object store), and restarting a worker process that died (``max_restarts=-1``). What v2v decides: which job
goes to which free worker, and where a job whose worker died goes next: Ray's own task retries
(``max_task_retries``) would send it back to the same actor and not say how often it was tried, so actor tasks are
at-most-once here and the driver requeues the job, to another worker first, ``max_retries`` times at most.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ClusterError, Interrupted, OutputError, one_line
from ..media.outputs import atomic_output
from ..settings import sidecar_path
from .jobs import DONE, FAILED, FAILED_BEFORE, RUN, SKIPPED, Job
from .ledger import Ledger

log = logging.getLogger("v2v")

CANCEL_GRACE = 30.0  # seconds the workers get to stop their jobs cleanly after Ctrl-C (a cold first step of a
#                     job on a busy machine takes several seconds) before they are killed
WAIT_NOTICE = 60.0  # seconds between "waiting for workers" notices
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CARRIED = re.compile(r"[A-Za-z_.]*(Error|Exception): \S")


@dataclass
class JobResult:
    """What happened to one job in this run (the line written to batch.jsonl, typed)."""

    input: Path
    status: str  # "done", "failed", "skipped" or "interrupted"
    output: Path | None = None
    error: str | None = None
    seconds: float = 0.0  # wall time from its first start to its result written
    worker: str | None = None  # the Ray actor's name
    pid: int | None = None
    node: str | None = None  # the worker's machine (its IP address)
    gpu: list | None = None  # the GPU ids Ray gave the worker (None: a CPU worker)
    attempts: int = 0  # tries that reached a worker (more than 1: its worker died and it was retried)
    source: str = ""
    record: dict = field(default_factory=dict)


@dataclass
class BatchSummary:
    """What one batch run did: ``results`` (this run's jobs, in the order they ended), ``already_done`` (outputs of
    jobs an earlier run did), ``failed_before`` (inputs that failed in an earlier run, left alone without
    retry_failed), the ledger's path, and ``stopped`` ("" when it ran to the end, "interrupted" after Ctrl-C)."""

    out_dir: Path
    ledger: Path
    results: list[JobResult] = field(default_factory=list)
    already_done: list[Path] = field(default_factory=list)
    failed_before: list[Path] = field(default_factory=list)
    workers: int = 0
    stopped: str = ""

    def _with(self, status: str) -> list[JobResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[JobResult]:
        return self._with("done")

    @property
    def failed(self) -> list[JobResult]:
        return self._with("failed")

    @property
    def skipped(self) -> list[JobResult]:
        return self._with("skipped")


def pick(pending: list[Job], worker: str, loaded: dict[str, str], workers) -> int | None:
    """Which pending job the free ``worker`` takes (its index), or None: first a job of the model set it has
    loaded, then one of a set no worker has loaded, then the oldest. A job whose worker died goes to another worker
    first (while there is another)."""
    others = set(workers) - {worker}
    eligible = [i for i, j in enumerate(pending) if worker not in j.avoid or others <= j.avoid]
    if not eligible:
        return None
    mine = loaded.get(worker)
    for i in eligible:
        if mine is not None and pending[i].models == mine:
            return i
    held = set(loaded.values())
    for i in eligible:
        if pending[i].models not in held:
            return i
    return eligible[0]


def connect(address: str | None, dashboard: bool) -> bool:
    """Join Ray: the cluster at ``address`` ("auto": the one running on this machine), else a new local instance.
    Returns whether this call started it (and so should shut it down)."""
    try:
        import ray
    except ImportError:
        raise ClusterError("v2v batch needs Ray: install it with pip install 'v2v[ray]'") from None
    if ray.is_initialized():
        return False
    debug = log.isEnabledFor(logging.DEBUG)
    kwargs = dict(logging_level=logging.INFO if debug else logging.ERROR, log_to_driver=debug)
    try:
        if address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a creator's own instance reports to no one
            ray.init(include_dashboard=dashboard, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError... from a wrong or dead address
        where = "start a local Ray instance" if address is None else f"connect to the Ray cluster at {address}"
        fix = ("check that Ray runs there (`ray start --head` on the head machine) and the address (ray://HOST:10001"
               ", or auto on a machine of the cluster)") if address else "run with --debug to see Ray's log"
        raise ClusterError(f"cannot {where} ({_first_line(e)}): {fix}") from None
    return True


def _first_line(e: BaseException, limit: int = 240) -> str:
    """Ray's long message in one line: the error it carries (``ImportError: No module named 'v2v'``) when it
    carries one, else its first line."""
    lines = [ANSI.sub("", s).strip() for s in str(e).splitlines()]
    errors = [s for s in lines if CARRIED.match(s)]
    line = errors[-1] if errors else next((s for s in lines if s), type(e).__name__)
    return line[:limit]


def worker_died(e: BaseException) -> str:
    """Why a worker died, in a few words (Ray's message is long)."""
    text = str(e)
    if "OutOfMemory" in text or "out of memory" in text.lower() or "memory monitor" in text.lower():
        return "its machine ran out of memory"
    return _first_line(e)


def write_results(out_dir: Path, job: Job, files: list[tuple[str, bytes]]) -> None:
    """A job's result files into OUT_DIR, each written to a temp name and renamed; the output itself last, so that
    when it is there, so are its settings record and pose video. OutputError when one cannot be written."""
    tops: dict[str, list[tuple[str, bytes]]] = {}
    for rel, blob in files:
        tops.setdefault(rel.split("/", 1)[0], []).append((rel, blob))
    for top in tops:
        if (out_dir / top).exists():
            raise OutputError(f"'{top}' appeared in {out_dir} while the batch ran: move it away and rerun the batch")
    main = job.output.name
    for top in sorted(tops, key=lambda t: (t == main, t == sidecar_path(job.output).name)):
        target = out_dir / top
        try:
            with atomic_output(target) as tmp:
                items = tops[top]
                if len(items) == 1 and items[0][0] == top:
                    tmp.write_bytes(items[0][1])
                    continue
                for rel, blob in items:  # a folder (a PNG sequence)
                    dest = tmp / rel.split("/", 1)[1]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(blob)
        except OSError as e:
            raise OutputError(f"cannot write '{target}' ({e.strerror or one_line(e)}): check the disk and the "
                              "output folder") from None


class BatchRunner:
    """One batch's run over planned jobs (``v2v.batch.run`` is the front door)."""

    def __init__(self, jobs: list[Job], out_dir: Path, ledger: Ledger, *, address: str | None = None,
                 workers: int | None = None, gpus_per_job: float = 1.0, cpus_per_worker: float | None = None,
                 max_retries: int = 2, max_bytes: int, dashboard: bool = False, on_event=None):
        self.jobs, self.out_dir, self.ledger = jobs, out_dir, ledger
        self.address, self.n_workers, self.gpus_per_job = address, workers, gpus_per_job
        self.cpus_per_worker, self.max_retries, self.max_bytes = cpus_per_worker, max_retries, max_bytes
        self.dashboard, self.on_event = dashboard, on_event
        self.run_id = uuid.uuid4().hex[:6]
        self.summary = BatchSummary(out_dir, ledger.path)
        self.actors: dict = {}  # name -> actor handle
        self.info: dict[str, dict] = {}  # name -> worker_info() (pid, node, gpu)
        self.loaded: dict[str, str | None] = {}  # name -> the model set it holds (or is loading)
        self.held_before: dict[str, str | None] = {}  # name -> the set it held before its current job
        self.free: list[str] = []
        self.starting: dict = {}  # hello ref -> name: a worker starting, or restarting after it died
        self.in_flight: dict = {}  # restyle ref -> (job, worker name, the job id it was sent with)
        self.started_at: dict[int, float] = {}  # job index -> its first start
        self.total = sum(j.state == RUN for j in jobs)

    # ------------------------------------------------------------------ events and records
    def emit(self, event: str, **fields) -> None:
        if self.on_event is not None:
            counts = {"done": len(self.summary.done), "failed": len(self.summary.failed),
                      "running": len(self.in_flight), "total": self.total}
            self.on_event({"event": event, **fields, "batch": counts})

    def finish(self, job: Job, status: str, error: str | None = None, name: str | None = None,
               result: dict | None = None, ledger: bool = True) -> JobResult:
        """Record a job's end: batch.jsonl (unless ``ledger`` is False), the summary, the event."""
        info = self.info.get(name, {}) if name else {}
        seconds = time.perf_counter() - self.started_at[job.index] if job.index in self.started_at else 0.0
        output = job.output if status == "done" else None
        record = {"input": str(job.input), "output": str(output) if output else None, "status": status,
                  "error": error, "seconds": round(seconds, 3), "worker": name, "pid": info.get("pid"),
                  "node": info.get("node"), "gpu": info.get("gpu"), "attempts": job.attempts, "key": job.key,
                  "models": job.models or None, "prompt": job.prompt, "source": job.source, "run": self.run_id}
        if info.get("gpu_name"):
            record["gpu_name"] = info["gpu_name"]
        if result:
            record.update(frames=result.get("frames"), stages=result.get("seconds"), loaded=result.get("loaded"))
        if ledger:
            record = self.ledger.write(record)
        item = JobResult(job.input, status, output, error, seconds, name, info.get("pid"), info.get("node"),
                         info.get("gpu"), job.attempts, job.source, record)
        self.summary.results.append(item)
        if status == "done":
            log.info("batch: %s done in %.1f s on %s -> %s", job.input.name, seconds, name, output)
        else:
            log.warning("batch: %s %s: %s", job.input.name, status, error)
        self.emit("job", status=status, input=str(job.input), output=str(output) if output else None, error=error,
                  seconds=round(seconds, 3), worker=name, pid=info.get("pid"), node=info.get("node"),
                  gpu=info.get("gpu"), attempts=job.attempts)
        return item

    # ------------------------------------------------------------------ the run
    def run(self) -> BatchSummary:
        to_run = []
        for job in self.jobs:
            if job.state == RUN:
                to_run.append(job)
            elif job.state == DONE:
                self.summary.already_done.append(job.output)
            elif job.state == FAILED_BEFORE:
                self.summary.failed_before.append(job.input)
            elif job.state in (FAILED, SKIPPED):  # found before any work; a repeated job is not recorded again
                duplicate = job.state == SKIPPED and job.key is not None
                self.finish(job, "failed" if job.state == FAILED else "skipped", job.error, ledger=not duplicate)
        if self.summary.already_done or self.summary.failed_before:
            log.info("batch: %d job(s) already done, %d failed before%s", len(self.summary.already_done),
                     len(self.summary.failed_before), " (--retry-failed retries them)"
                     if self.summary.failed_before else "")
        if not to_run:
            self.emit("batch", status="started", jobs=0, workers=0, out=str(self.out_dir))
            return self.summary
        started = connect(self.address, self.dashboard)
        try:
            self.start_workers(len(to_run))
            self.emit("batch", status="started", jobs=len(to_run), workers=len(self.actors), out=str(self.out_dir))
            self.loop(to_run)
        except KeyboardInterrupt:
            self.interrupt()
        finally:
            self.stop_workers(started)
        return self.summary

    def start_workers(self, n_jobs: int) -> None:
        import ray

        from .worker import Worker

        res = ray.cluster_resources()
        gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
        use_gpu = gpus > 0 and self.gpus_per_job > 0
        n = self.n_workers or (int(gpus // self.gpus_per_job) if use_gpu else 1)
        n = max(1, min(n, n_jobs))
        if self.cpus_per_worker:
            num_cpus = self.cpus_per_worker
        elif use_gpu:
            num_cpus = 1
        else:  # the machine's cores shared among the CPU workers, within the largest machine
            node_cpus = max((float(nd["Resources"].get("CPU", 0)) for nd in ray.nodes() if nd.get("Alive")),
                            default=cpus)
            num_cpus = max(1, min(int(cpus // n), int(node_cpus)))
        if use_gpu and n * self.gpus_per_job > gpus:
            log.warning("batch: %d workers of %g GPU each, and the cluster has %g GPUs: some wait", n,
                        self.gpus_per_job, gpus)
        options = dict(num_cpus=num_cpus, num_gpus=self.gpus_per_job if use_gpu else 0, max_restarts=-1,
                       max_task_retries=0, max_concurrency=4)
        here = str(Path(__file__).resolve().parent.parent.parent)
        if self.address is None and Path(here).name not in ("site-packages", "dist-packages"):
            # a local instance and a v2v run from a checkout: the workers import this one
            paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}
        cls = ray.remote(Worker)
        for i in range(n):
            name = f"v2v-batch-{self.run_id}-{i}"
            self.actors[name] = cls.options(name=name, **options).remote()
            self.starting[self.actors[name].hello.remote()] = name
        log.info("batch: %d job(s) on %d %s worker(s) (%s)", n_jobs, n, "GPU" if use_gpu else "CPU",
                 f"{self.gpus_per_job:g} GPU each" if use_gpu else f"{num_cpus:g} CPU each")
        self.summary.workers = n

    def loop(self, pending: list[Job]) -> None:
        import ray

        notice = time.monotonic()
        while pending or self.in_flight:
            self.assign(pending)
            refs = [*self.starting, *self.in_flight]
            if not refs:
                raise ClusterError("no worker is left to run the batch: see the errors above, then rerun")
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            for ref in ready:
                self.handle(ref, pending)
            if not ready and not self.in_flight and time.monotonic() - notice > WAIT_NOTICE:
                notice = time.monotonic()
                log.info("batch: waiting for %d worker(s) to start (the cluster may lack free GPUs)",
                         len(self.starting))

    def assign(self, pending: list[Job]) -> None:
        for name in list(self.free):
            i = pick(pending, name, self.loaded, self.actors)
            if i is not None:
                self.submit(pending.pop(i), name)

    def submit(self, job: Job, name: str) -> None:
        try:
            st = job.input.stat()
            if (st.st_size, st.st_mtime_ns) != job.signature:
                self.finish(job, "failed", f"{job.input.name} changed since the batch started: rerun the batch")
                return
            data = job.input.read_bytes()
            files = {}
            if job.options.get("pose_json") is not None:
                pj = Path(job.options["pose_json"])
                files["pose_json"] = (pj.name, pj.read_bytes())
        except OSError as e:
            self.finish(job, "failed", f"input '{job.input}' cannot be read ({one_line(e)})")
            return
        spec = {"id": f"{self.run_id}-{job.index}-{job.attempts}", "name": job.input.name, "mtime": st.st_mtime,
                "output": job.output.name, "stem": job.stem, "files": files, "max_bytes": self.max_bytes,
                "options": {k: v for k, v in job.options.items() if k != "pose_json" or not files},
                "paths": {"input": str(job.input), "out_dir": str(self.out_dir),
                          **({"pose_json": str(Path(job.options["pose_json"]).resolve())} if files else {})}}
        ref = self.actors[name].restyle.remote(spec, data)  # Ray puts the bytes in its object store
        job.attempts += 1
        self.started_at.setdefault(job.index, time.perf_counter())
        self.free.remove(name)
        self.held_before[name] = self.loaded.get(name)
        self.loaded[name] = job.models
        self.in_flight[ref] = (job, name, spec["id"])
        info = self.info.get(name, {})
        log.info("batch: %s -> %s (pid %s)%s", job.input.name, name, info.get("pid"),
                 f", try {job.attempts}" if job.attempts > 1 else "")
        self.emit("job", status="started", input=str(job.input), output=str(job.output), worker=name,
                  pid=info.get("pid"), node=info.get("node"), gpu=info.get("gpu"), attempts=job.attempts)

    def handle(self, ref, pending: list[Job]) -> None:
        import ray
        from ray.exceptions import RayActorError, RayError

        if ref in self.starting:
            self.worker_ready(ref)
            return
        job, name, _ = self.in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as e:  # the worker died (killed, out of memory) or cannot be reached
            self.requeue(job, name, worker_died(e), pending)
            return
        except RayError as e:  # not a job's failure (the worker returns those): a bug
            self.free.append(name)
            self.finish(job, "failed", f"internal error ({_first_line(e)}); rerun with --debug and report it", name)
            return
        self.info[name] = result.get("worker") or self.info.get(name, {})
        if not result.get("loaded") and result["status"] != "done":  # it failed before loading: the old set stays
            self.loaded[name] = self.held_before.get(name)
        self.free.append(name)
        status, error = result["status"], result.get("error")
        if status == "done":
            try:
                write_results(self.out_dir, job, result["files"])
            except OutputError as e:
                if "appeared" not in str(e):  # the disk or the folder: every job would fail
                    self.finish(job, "failed", one_line(e), name, result)
                    raise
                status, error = "failed", one_line(e)
        self.finish(job, status, error, name, result)

    def worker_ready(self, ref) -> None:
        import ray
        from ray.exceptions import RayError

        name = self.starting.pop(ref)
        try:
            self.info[name] = ray.get(ref)
        except RayError as e:  # its constructor failed: v2v or its dependencies missing on that machine
            del self.actors[name]
            log.error("batch: worker %s could not start (%s): install v2v[ray], the same version as here, on every "
                      "machine of the cluster", name, _first_line(e))
            return
        from .. import __version__

        if self.info[name].get("v2v") != __version__:
            log.warning("batch: worker %s runs v2v %s, this is v2v %s: results may differ", name,
                        self.info[name].get("v2v"), __version__)
        self.free.append(name)

    def requeue(self, job: Job, name: str, why: str, pending: list[Job]) -> None:
        """A job whose worker died: again, on another worker first, up to max_retries times; Ray restarts the
        worker, which rejoins once it answers."""
        self.loaded.pop(name, None)  # a restarted worker holds no models
        job.avoid.add(name)
        self.starting[self.actors[name].hello.remote()] = name
        if self.summary.stopped:  # Ctrl-C meanwhile: no retry (interrupt() records it)
            pending.append(job)
            return
        if job.attempts <= self.max_retries:
            log.warning("batch: %s: worker %s died (%s): trying again", job.input.name, name, why)
            self.emit("job", status="retry", input=str(job.input), worker=name, error=why, attempts=job.attempts)
            pending.insert(0, job)
            return
        self.finish(job, "failed", f"its worker died {job.attempts} times while restyling it ({why}): check the "
                    "machine's memory, then rerun with --retry-failed", name)

    def interrupt(self) -> None:
        """Ctrl-C: the jobs in progress are stopped on their workers, within a frame or a pass, and recorded as
        interrupted (nothing of theirs is written; one that finished meanwhile is kept); then Interrupted."""
        import ray

        self.summary.stopped = "interrupted"
        running = list(self.in_flight.items())
        for ref, (job, name, job_id) in running:
            self.actors[name].cancel.remote(job_id)
        ready, left = [], []
        if running:
            log.warning("batch: stopping %d job(s) in progress (Ctrl-C again to kill their workers now)", len(running))
            ready, _ = ray.wait([r for r, _ in running], num_returns=len(running), timeout=CANCEL_GRACE)
        for ref in ready:
            self.handle(ref, left)  # a worker that died meanwhile leaves its job in left
        for job in left:
            self.finish(job, "interrupted", "stopped by Ctrl-C (its worker died meanwhile): rerun the same command "
                        "to do it")
        for ref, (job, name, _) in list(self.in_flight.items()):
            self.finish(job, "interrupted", f"stopped by Ctrl-C; its worker did not stop within {CANCEL_GRACE:g} s "
                        "and was killed: rerun the same command to do it", name)
        self.in_flight.clear()
        stopped = sum(r.status == "interrupted" for r in self.summary.results)
        err = Interrupted(f"interrupted: {stopped} job(s) in progress were stopped and left no output; rerun the "
                          "same command to finish the batch")
        err.summary = self.summary
        raise err from None

    def stop_workers(self, started: bool) -> None:
        import ray

        for actor in self.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors.clear()
        if started:
            ray.shutdown()
