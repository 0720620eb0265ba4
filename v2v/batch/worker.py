"""The batch's worker: one :class:`v2v.Restyler` kept across jobs (its models stay loaded), taking a job's input
as bytes and giving back its result files as bytes, so that no folder needs to be shared with the driver.

Plain Python: the runner makes it a Ray actor (``ray.remote(Worker)``, one GPU each), and the tests can call it
directly. Each job runs in a temp folder of its own under ``TMP/v2v-batch/<pid>/``, removed when the job ends; a
worker killed mid-job leaves its folder, which the next worker started on that machine removes.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from .. import __version__
from ..errors import Interrupted, V2VError, one_line

log = logging.getLogger("v2v")

TMP_ROOT = "v2v-batch"


def worker_root(pid: int | None = None) -> Path:
    """This worker process's folder for its jobs' temp files."""
    return Path(tempfile.gettempdir()) / TMP_ROOT / str(pid if pid is not None else os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_dead_workers(root: Path) -> list[Path]:
    """Remove the job folders of workers that are gone (killed mid-job): ``root``/<pid> with no such process."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for d in entries:
        if d.is_dir() and d.name.isdigit() and int(d.name) != os.getpid() and not _alive(int(d.name)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def worker_info() -> dict:
    """Who runs the jobs: pid, host, the node's address, the GPUs Ray gave it (None: a CPU worker), v2v's version."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "node": None, "gpu": None, "v2v": __version__}
    try:
        import ray

        if ray.is_initialized():
            info["node"] = ray.util.get_node_ip_address()
            gpus = ray.get_gpu_ids()
            info["gpu"] = [str(g) for g in gpus] or None
    except ImportError:  # called outside Ray (the tests)
        pass
    if info["gpu"]:
        try:
            import torch

            info["gpu_name"] = torch.cuda.get_device_name(0)
        except Exception:  # no CUDA torch: the ids say enough
            pass
    return info


def relocate(value, moves: dict[str, str]):
    """``value`` (a settings record) with each path under a key of ``moves`` moved under its value: the worker's
    copies of the inputs become the originals, its temp output folder becomes OUT_DIR."""
    if isinstance(value, dict):
        return {k: relocate(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, moves) for v in value]
    if isinstance(value, str):
        for old, new in moves.items():
            if value == old or value.startswith(old + os.sep):
                return new + value[len(old):]
    return value


class Worker:
    """Restyles one job at a time with the models it keeps; ``status()`` and ``cancel()`` answer meanwhile (the
    actor runs them on threads of their own)."""

    def __init__(self):
        from ..pipeline import Restyler

        self.restyler = Restyler(show_progress=False)
        self.root = worker_root()
        for d in sweep_dead_workers(self.root.parent):
            log.info("batch worker: removed %s, left by a worker that was killed mid-job", d)
        self.root.mkdir(parents=True, exist_ok=True)
        self._status: dict = {"job": None}
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def hello(self) -> dict:
        return worker_info()

    def status(self) -> dict:
        """The job in progress (None when idle), its stage, and its progress in that stage."""
        return dict(self._status)

    def cancel(self, job_id: str) -> None:
        """Stop job ``job_id`` (now, or as soon as it starts): it ends "interrupted", leaving nothing."""
        with self._lock:
            self._cancels.setdefault(job_id, threading.Event()).set()

    def restyle(self, job: dict, data: bytes) -> dict:
        """Run one job: ``job`` as the runner builds it (id, name, mtime, output, stem, options, files, paths,
        max_bytes), ``data`` the input's bytes. Returns its status, error, result files and timings; never
        raises for a job's own failure."""
        t0 = time.perf_counter()
        with self._lock:
            cancel = self._cancels.setdefault(job["id"], threading.Event())
        before = [id(m) for m in self.restyler.loaded_models]
        self._status = {"job": job["id"], "stage": "start", "done": 0, "total": 0}
        out = {"status": "failed", "error": None, "exit_code": None, "files": [], "seconds": {}, "frames": 0}
        moves: dict[str, str] = {}  # this worker's temp paths -> what they stand for on the driver
        try:
            with tempfile.TemporaryDirectory(dir=self.root, prefix="job-") as tmp:
                out.update(self._run(job, data, Path(tmp).resolve(), cancel, moves))
        except Interrupted:
            out.update(status="interrupted", error="stopped: the batch was interrupted; rerun the same command to do "
                                                   "it", exit_code=130)
        except V2VError as e:
            out.update(error=_mention(one_line(e), moves), exit_code=e.exit_code)
        except Exception as e:  # a bug: this job fails, the worker goes on; the traceback in the worker's log
            log.debug("batch worker: %s raised", job.get("name"), exc_info=True)
            out.update(error=f"internal error ({type(e).__name__}: {_mention(one_line(e), moves)}); rerun with "
                             "--debug and report it", exit_code=1)
        finally:
            self._status = {"job": None}
            with self._lock:
                self._cancels.pop(job["id"], None)
        after = [id(m) for m in self.restyler.loaded_models]
        out["loaded"] = bool(after) and after != before  # this job loaded a model set
        out["worker"] = worker_info()
        out["worker_seconds"] = time.perf_counter() - t0
        return out

    def _progress(self, stage: str, done: int, total: int) -> None:
        self._status = {**self._status, "stage": stage, "done": done, "total": total}

    def _run(self, job: dict, data: bytes, tmp: Path, cancel: threading.Event, moves: dict[str, str]) -> dict:
        in_dir, out_dir = tmp / "in", tmp / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        src = in_dir / job["name"]
        moves.update({str(src): job["paths"]["input"], str(out_dir): job["paths"]["out_dir"]})
        src.write_bytes(data)
        os.utime(src, (job["mtime"], job["mtime"]))  # the record's input mtime is the original's
        options = dict(job["options"])
        prompt = options.pop("prompt")
        for key, (name, blob) in job.get("files", {}).items():  # the job's other inputs (keypoints)
            p = in_dir / f"{key}-{name}"
            p.write_bytes(blob)
            options[key] = p
            moves[str(p)] = job["paths"][key]
        output = out_dir / job["output"]
        options["keep_pose"] = out_dir / f"{job['stem']}.pose.mp4" if options.get("keep_pose") else None
        result = self.restyler.restyle(src, output, prompt=prompt, progress=self._progress, cancel=cancel, **options)
        files = collect_files(out_dir, moves)
        size = sum(len(b) for _, b in files)
        if size > job["max_bytes"]:
            return {"status": "failed", "exit_code": 4,
                    "error": f"the results are {size / 2**20:.0f} MB, over the batch's limit of "
                             f"{job['max_bytes'] / 2**20:.0f} MB: raise --max-input-mb, or lower --size"}
        return {"status": "done", "files": files, "frames": result.frames,
                "seconds": {k: round(v, 3) for k, v in result.seconds.items()}}


def _mention(text: str, moves: dict[str, str]) -> str:
    """A message naming the driver's paths instead of this worker's temp copies."""
    for old, new in moves.items():
        text = text.replace(old, new)
    return text


def collect_files(out_dir: Path, moves: dict[str, str]) -> list[tuple[str, bytes]]:
    """Every file the job wrote, as (path relative to ``out_dir``, bytes); its settings records rewritten to name
    the original input and OUT_DIR instead of this worker's temp copies."""
    from ..settings import SCHEMA, to_json

    files = []
    for p in sorted(out_dir.rglob("*")):
        if not p.is_file():
            continue
        rel, blob = p.relative_to(out_dir).as_posix(), p.read_bytes()
        if p.suffix == ".json" and p.parent == out_dir:
            import json

            try:
                record = json.loads(blob)
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("schema") == SCHEMA:
                blob = (to_json(relocate(record, moves)) + "\n").encode()
        files.append((rel, blob))
    return files
