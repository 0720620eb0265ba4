"""Pose detection speed on the CPU: frames/s of DWPose and OpenPose with the tiny models (real network sizes for
OpenPose, tiny graphs for DWPose), on samples/dance.mp4 decoded at the processing size.

    .venv/bin/python scripts/bench_pose.py [--size 256] [--frames 16] [--threads N] [--device cpu|cuda]
                                           [--detectors dwpose-onnx,dwpose-torch,openpose]

Prints one line per detector (DWPose on onnxruntime and on torch with the TorchScript twins, OpenPose). The tiny
DWPose graphs are far cheaper than the real ONNX models, so its figure
measures v2v's pre/post-processing and batching, not the network; OpenPose's tiny files have the real
architecture (only the weights are fake), but random weights find no person, so the hand/face networks are
not run and the figure is the body network's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu or cuda (DWPose on torch: the GPU; onnx: CUDA provider)")
    ap.add_argument("--detectors", default="dwpose-onnx,dwpose-torch,openpose")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from v2v.media import decode, probe, timing
    from v2v.pose.dwpose import DWPose
    from v2v.pose.openpose import OpenPose
    from v2v.tiny import tiny_model_paths

    t = tiny_model_paths()
    info = probe.probe(ROOT / "samples" / "dance.mp4")
    w, h = timing.processing_size(info.display_width, info.display_height, a.size)
    frames = [f.image for f in decode.Decoder(info, w, h, max_frames=a.frames)]
    make = {"dwpose-onnx": lambda: DWPose.from_spec(str(t["dwpose"]), a.device, runtime="onnx"),
            "dwpose-torch": lambda: DWPose.from_spec(str(t["dwpose"]), a.device, runtime="torch"),
            "openpose": lambda: OpenPose.from_spec(str(t["openpose"]), a.device)}
    for name in a.detectors.split(","):
        det = make[name]()
        det.detect(frames[:1])                                  # warm-up
        t0 = time.perf_counter()
        poses = []
        for i in range(0, len(frames), 8):                      # the pipeline's batch of 8 frames
            poses += det.detect(frames[i:i + 8])
        dt = time.perf_counter() - t0
        people = sum(len(p.people) for p in poses)
        print(f"{name:12s} {w}x{h}  {len(frames)} frames  {len(frames) / dt:7.2f} frames/s  "
              f"({people} people found, {a.threads} threads, {a.device})")


if __name__ == "__main__":
    main()
