"""--compile on the tiny models: how much of the networks dynamo compiled, and the time of each run.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_compile.py [--frames 40,72,40] [--size 64] [--device cpu]

Runs one Restyler with ``compile=True`` over videos of the given lengths (a new length means new segment
lengths, so new shapes for the compiled blocks) and prints, per run, its seconds and dynamo's counters: the
graphs compiled, and how many of the frames dynamo saw it compiled ("frames ok" < "frames total" means some fell
back to eager, e.g. at the recompile limit). Speed on the tiny models says little; the counters say whether the
whole UNet is compiled.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", default="40,72,40")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frame-budget", type=int, default=32)
    a = ap.parse_args()

    from torch._dynamo.utils import counters

    import v2v
    from make_sample import make

    class LimitHits(logging.Handler):
        def __init__(self):
            super().__init__()
            self.hits = 0

        def emit(self, record):
            self.hits += "recompile_limit" in record.getMessage()

    hits = LimitHits()
    logging.getLogger("torch._dynamo").addHandler(hits)
    work = Path(tempfile.mkdtemp(prefix="v2v-compile-"))
    r = v2v.Restyler(models="tiny", device=a.device, size=a.size, compile=True, show_progress=False,
                     pose_cache=False, frame_budget=a.frame_budget)
    for n in (int(x) for x in a.frames.split(",")):
        video = work / f"s{n}" / "dance.mp4"
        if not video.exists():
            make(video.parent, seconds=n / 24, fps=24, width=a.size, height=a.size)
        t = time.perf_counter()
        r.restyle(video, work / f"o{n}.mp4", prompt="x")
        print(f"{n} frames: {time.perf_counter() - t:.1f} s, graphs {counters['stats']['unique_graphs']}, "
              f"frames ok {counters['frames']['ok']} of {counters['frames']['total']}, "
              f"recompile-limit hits {hits.hits}", flush=True)


if __name__ == "__main__":
    main()
