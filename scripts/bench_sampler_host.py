#!/usr/bin/env python3
"""The sampler's own work between two passes, on the host: fusing a segment's prediction into the video's latents
and stepping the frames it finishes (the scheduler's step), as ``v2v.sampler`` does after every pass while the
GPU waits for the next pass's first kernel. No model runs: the predictions are random, the plan and the order
are the sampler's (``windows.plan_video``, ``windows.sampling_order``).

    OMP_NUM_THREADS=1 python scripts/bench_sampler_host.py --frames 480 --size 512
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from diffusers import EulerDiscreteScheduler

    from v2v.sampler import _Fusion
    from v2v.windows import DEFAULT_FRAME_BUDGET, plan_video, sampling_order, segment_weights

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=480)
    ap.add_argument("--size", type=int, default=512, help="square processing size (latents are 1/8 of it)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--frame-budget", type=int, default=DEFAULT_FRAME_BUDGET)
    ap.add_argument("--repeats", type=int, default=3, help="runs timed; the best is kept")
    a = ap.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)  # scale_model_input is not called here: no model
    _, segments = plan_video(a.frames, 16, 4, a.frame_budget)
    order = sampling_order(segments, a.steps, wavefront=True)
    scheduler = EulerDiscreteScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(a.steps, device="cpu")
    gen = torch.Generator().manual_seed(0)
    side = a.size // 8
    latents = torch.randn(a.frames, 4, side, side, generator=gen)
    preds = [torch.randn(len(s.frames), 4, side, side, generator=gen) for s in segments]
    weights = [segment_weights(s)[0] for s in segments]
    best = float("inf")
    for _ in range(a.repeats):
        fuse = _Fusion(scheduler, scheduler.timesteps, latents.clone(), segments, gen, elementwise=True)
        spent = 0.0
        for step, k in order:
            fuse.scheduler_at(step, segments[k].frames)
            t = time.perf_counter()
            fuse.add(step, segments[k].frames, preds[k], weights[k])
            spent += time.perf_counter() - t
        assert fuse.final == a.frames
        best = min(best, spent)
    print(f"{a.frames} frames at {a.size}x{a.size}, {len(segments)} segments, {len(order)} passes: "
          f"{best:.3f} s of fusing and stepping in all, {1000 * best / len(order):.1f} ms a pass (best of {a.repeats}, "
          f"{torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
