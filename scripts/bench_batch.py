"""Batch throughput: jobs per minute of ``v2v batch`` with 1 worker against N workers, in the same run, on one
local Ray instance (CPU workers and the tiny models here; one worker per GPU on a GPU machine).

    .venv/bin/python scripts/bench_batch.py [--jobs 8] [--workers 1,2] [--size 128] [--frames 16] [--steps 4]
                                            [--device cpu] [--json benchmarks/batch-cpu.json]

Each job restyles samples/dance.mp4 with its own seed (so no two jobs are the same job). For each worker count:
the wall time of the whole ``v2v.batch.run`` (workers starting, models loading, every job), jobs per minute over
it, and the steady rate: jobs ended after each worker's first, over the time from the first job's end to the last
one's (workers warm, models loaded). The CPU workers share the machine's cores (1 worker: all of them; 2: half
each), so the figures compare one process using every core with several processes sharing them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(workers: int, manifest: Path, out: Path, options: dict) -> dict:
    from v2v.batch import run

    ends: list[tuple[float, str]] = []

    def on_event(event: dict) -> None:
        if event["event"] == "job" and event["status"] in ("done", "failed"):
            ends.append((time.perf_counter(), event["worker"]))

    t0 = time.perf_counter()
    summary = run(manifest, out, workers=workers, on_event=on_event, **options)
    wall = time.perf_counter() - t0
    seen, warm = set(), []
    for t, w in ends:  # each worker's first job carries its start and model load
        if w in seen:
            warm.append(t)
        seen.add(w)
    steady = (len(warm) / (warm[-1] - ends[0][0]) * 60) if len(warm) > 1 else None
    return {"workers": workers, "jobs": len(summary.results), "done": len(summary.done),
            "failed": len(summary.failed), "wall_s": round(wall, 2), "jobs_per_min": round(len(ends) / wall * 60, 2),
            "steady_jobs_per_min": round(steady, 2) if steady else None,
            "job_seconds": [round(r.seconds, 2) for r in summary.results]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, in this order")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--models", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()
    import ray

    os.environ.setdefault("V2V_TINY_DIR", str(Path(tempfile.gettempdir()) / "v2v-bench-tiny"))
    from v2v.tiny import tiny_model_paths

    tiny_model_paths()  # built once, before the workers start
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as v2v batch starts its own instance
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    cpus = ray.cluster_resources().get("CPU")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "jobs.jsonl"
        manifest.write_text("".join(json.dumps({"input": str(ROOT / "samples" / "dance.mp4"), "seed": i}) + "\n"
                                    for i in range(a.jobs)))
        options = dict(prompt="claymation astronaut", models=a.models, size=a.size, max_frames=a.frames,
                       steps=a.steps, device=a.device, pose_cache=False)
        for i, n in enumerate(int(x) for x in a.workers.split(",")):
            r = one(n, manifest, Path(tmp) / f"out-{i}", options)  # a fresh OUT_DIR: nothing already done
            results.append(r)
            print(f"{n} worker(s): {r['done']}/{a.jobs} jobs in {r['wall_s']:.1f} s = {r['jobs_per_min']:.1f} "
                  f"jobs/min (steady {r['steady_jobs_per_min']} jobs/min); per job {r['job_seconds']}", flush=True)
    ray.shutdown()
    report = {"bench": "batch", "cpus": cpus, "load_average_after": os.getloadavg(), "jobs": a.jobs, "size": a.size,
              "frames": a.frames, "steps": a.steps,
              "models": a.models, "device": a.device, "command": " ".join(sys.argv), "results": results}
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
