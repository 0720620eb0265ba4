#!/usr/bin/env python3
"""Make samples/dance.mp4 (a procedural dancing figure with music) and samples/dance.pose.json (its true keypoints).

Procedural and deterministic: no downloads, no randomness. The figure is drawn from an OpenPose 18-point
skeleton that moves to the beat, so the JSON is the exact ground truth of every frame (OpenPose format, source
pixels, one object per frame).

    python scripts/make_sample.py [--out samples] [--seconds 4] [--fps 24] [--width 384] [--height 512]
"""

from __future__ import annotations

import argparse
import json
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# OpenPose 18-point order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear
LIMBS = [(1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13)]
BPM = 120


def skeleton(t: float, w: int, h: int) -> np.ndarray:
    """The 18 body points (x, y) at time t: a figure that sways, bounces and waves its arms to the beat."""
    beat = 2 * math.pi * t * BPM / 60
    s = h / 512  # scale
    cx = w / 2 + 40 * s * math.sin(beat / 2)  # sway left and right every two beats
    bounce = 10 * s * abs(math.sin(beat))
    neck = np.array([cx, 150 * s + bounce])
    hip_c = neck + [0, 150 * s]
    p = np.zeros((18, 2))
    p[1] = neck
    p[0] = neck + [6 * s * math.sin(beat), -45 * s]
    p[14], p[15] = p[0] + [-10 * s, -8 * s], p[0] + [10 * s, -8 * s]
    p[16], p[17] = p[0] + [-22 * s, -2 * s], p[0] + [22 * s, -2 * s]
    p[2], p[5] = neck + [-45 * s, 5 * s], neck + [45 * s, 5 * s]
    # arms: shoulder angle and elbow bend follow the beat, the two arms in counter-phase
    for sh, el, wr, side, phase in ((2, 3, 4, -1, 0.0), (5, 6, 7, 1, math.pi)):
        a = math.radians(100) + math.radians(70) * math.sin(beat / 2 + phase)  # from straight down
        upper = 70 * s * np.array([side * math.sin(a), math.cos(a)])
        p[el] = p[sh] + upper
        b = a + math.radians(40) * (1 + math.sin(beat + phase))
        p[wr] = p[el] + 65 * s * np.array([side * math.sin(b), math.cos(b)])
    p[8], p[11] = hip_c + [-28 * s, 0], hip_c + [28 * s, 0]
    # legs: alternate knee lifts on the beat
    for hip, knee, ank, side, phase in ((8, 9, 10, -1, 0.0), (11, 12, 13, 1, math.pi)):
        lift = max(0.0, math.sin(beat + phase))
        a = math.radians(8) + math.radians(45) * lift
        p[knee] = p[hip] + 85 * s * np.array([side * math.sin(a) * 0.6, math.cos(a)])
        p[ank] = p[knee] + 85 * s * np.array([side * 0.15, 1.0 - 0.3 * lift])
    return p


def draw(points: np.ndarray, w: int, h: int, t: float) -> np.ndarray:
    """A person-like figure: a shaded background, a floor, a torso, limbs with thickness, a head."""
    y = np.linspace(0, 1, h)[:, None, None]
    img = (np.array([70, 90, 130]) * (1 - y) + np.array([170, 150, 120]) * y).astype(np.uint8)
    img = np.ascontiguousarray(np.broadcast_to(img, (h, w, 3)))
    floor = int(h * 0.86)
    img[floor:] = (90, 70, 50)
    s = h / 512
    shirt = (200, 60, 60) if math.sin(2 * math.pi * t * BPM / 120) > 0 else (60, 120, 200)
    skin, trousers = (230, 190, 160), (40, 40, 90)
    pt = lambda i: tuple(int(round(v)) for v in points[i])  # noqa: E731
    torso = np.array([points[2], points[5], points[11], points[8]], dtype=np.int32)
    cv2.fillConvexPoly(img, torso, shirt, lineType=cv2.LINE_AA)
    for a, b in LIMBS:
        colour = shirt if b in (3, 6) else skin if b in (4, 7) else trousers if a >= 8 or b >= 8 else shirt
        if (a, b) in ((1, 2), (1, 5), (1, 8), (1, 11)):
            continue
        cv2.line(img, pt(a), pt(b), colour, max(2, int(22 * s)), lineType=cv2.LINE_AA)
    cv2.line(img, pt(1), pt(0), skin, max(2, int(18 * s)), lineType=cv2.LINE_AA)
    cv2.circle(img, pt(0), int(30 * s), skin, -1, lineType=cv2.LINE_AA)
    for e in (14, 15):
        cv2.circle(img, pt(e), max(1, int(3 * s)), (30, 30, 30), -1, lineType=cv2.LINE_AA)
    return img


def audio(seconds: float, rate: int = 44100) -> np.ndarray:
    """A little tune: a bass note on every beat and a melody of sines, stereo float32 (2, n)."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    beat_t = (t * BPM / 60) % 1.0
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-beat_t * 8)
    notes = np.array([440.0, 554.37, 659.25, 554.37])
    melody = np.sin(2 * np.pi * notes[(t * BPM / 60).astype(int) % 4] * t) * 0.3
    left, right = 0.5 * kick + melody, 0.5 * kick + 0.8 * melody
    return (np.stack([left, right]) * 0.5).astype(np.float32)


def make(out: Path, seconds: float = 4.0, fps: int = 24, width: int = 384, height: int = 512) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    video_path, json_path = out / "dance.mp4", out / "dance.pose.json"
    n = int(round(seconds * fps))
    frames_json = []
    with av.open(str(video_path), "w", options={"movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "medium"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        rate = 44100
        aus = c.add_stream("aac", rate=rate, layout="stereo")
        for i in range(n):
            t = i / fps
            pts = skeleton(t, width, height)
            frame = av.VideoFrame.from_ndarray(draw(pts, width, height, t), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                c.mux(p)
            body = np.concatenate([pts, np.ones((18, 1))], axis=1)
            frames_json.append({
                "people": [{"pose_keypoints_2d": [round(float(v), 2) for v in body.ravel()],
                            "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": []}],
                "canvas_width": width, "canvas_height": height})
        for p in vs.encode():
            c.mux(p)
        samples = audio(n / fps, rate)
        chunk = 1024
        for k in range(0, samples.shape[1], chunk):
            block = np.ascontiguousarray(samples[:, k:k + chunk])
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = rate, k, Fraction(1, rate)
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)
    json_path.write_text(json.dumps(frames_json, separators=(",", ":")) + "\n")
    return video_path, json_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--height", type=int, default=512)
    a = ap.parse_args()
    v, j = make(a.out, a.seconds, a.fps, a.width, a.height)
    print(f"wrote {v} ({v.stat().st_size // 1024} KiB) and {j}")


if __name__ == "__main__":
    main()
