"""OpenPose-style control maps, drawn exactly as ControlNet OpenPose's annotator draws them.

The drawing reproduces controlnet_aux's ``open_pose.util.draw_bodypose / draw_handpose / draw_facepose`` and
``open_pose.draw_poses`` pixel for pixel (tests compare against them): same limb order, colours, stick width,
ellipse polygons, hand colours from HSV, face dots, same coordinate arithmetic (coordinates are normalised by the
pose's canvas, then multiplied by the output size and truncated with ``int``), same drawing order (per person:
body, left hand, right hand, face). controlnet_aux is not imported: it is an optional dependency.
"""

from __future__ import annotations

import math
from typing import Iterable

import cv2
import numpy as np

from ..errors import InvalidOptions
from .keypoints import FramePose

# OpenPose COCO-18 limbs (1-based, as in the annotator); only the first 17 are drawn (no ear-shoulder limbs).
LIMB_SEQ = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
            (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]
BODY_COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
               (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
               (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
LIMB_COLORS = [tuple(int(float(c) * 0.6) for c in col) for col in BODY_COLORS]
STICK_WIDTH = 4
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]
_EPS = 0.01  # the annotator skips hand/face points whose truncated pixel x or y is not > 0.01 (i.e. <= 0)
PARTS = ("body", "hands", "face")


def _hsv_to_rgb_full(h: float) -> tuple[float, float, float]:
    """matplotlib.colors.hsv_to_rgb([h, 1, 1]) with the same float operations (so the same rounding)."""
    s = v = 1.0
    i = int(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i %= 6
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


# cv2 rounds these float colours itself (as it does for the annotator's float arrays).
HAND_COLORS = [tuple(c * 255.0 for c in _hsv_to_rgb_full(ie / float(len(HAND_EDGES)))) for ie in range(len(HAND_EDGES))]


def _norm(points: np.ndarray, cw: float, ch: float) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points, dtype=np.float64)
    return pts[:, 0] / cw, pts[:, 1] / ch


def _draw_body(canvas, body, cw, ch, threshold):
    H, W = canvas.shape[:2]
    nx, ny = _norm(body, cw, ch)
    ok = np.asarray(body)[:, 2] > threshold
    for (a, b), color in zip(LIMB_SEQ, LIMB_COLORS):
        a, b = a - 1, b - 1
        if not (ok[a] and ok[b]):
            continue
        Y = np.array([nx[a], nx[b]]) * float(W)
        X = np.array([ny[a], ny[b]]) * float(H)
        mX, mY = np.mean(X), np.mean(Y)
        length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
        polygon = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, color)
    for k, color in enumerate(BODY_COLORS):
        if ok[k]:
            cv2.circle(canvas, (int(nx[k] * W), int(ny[k] * H)), 4, color, thickness=-1)


def _pixels(points, cw, ch, W, H, threshold):
    """Truncated pixel coordinates and whether each point is drawn (present and strictly inside x, y > 0)."""
    nx, ny = _norm(points, cw, ch)
    xs = [int(v * W) for v in nx]
    ys = [int(v * H) for v in ny]
    conf = np.asarray(points)[:, 2]
    draw = [bool(conf[i] > threshold) and xs[i] > _EPS and ys[i] > _EPS for i in range(len(xs))]
    return xs, ys, draw


def _draw_hand(canvas, hand, cw, ch, threshold):
    H, W = canvas.shape[:2]
    xs, ys, draw = _pixels(hand, cw, ch, W, H, threshold)
    for (a, b), color in zip(HAND_EDGES, HAND_COLORS):
        if draw[a] and draw[b]:
            cv2.line(canvas, (xs[a], ys[a]), (xs[b], ys[b]), color, thickness=2)
    for i in range(len(xs)):
        if draw[i]:
            cv2.circle(canvas, (xs[i], ys[i]), 4, (0, 0, 255), thickness=-1)


def _draw_face(canvas, face, cw, ch, threshold):
    H, W = canvas.shape[:2]
    xs, ys, draw = _pixels(face, cw, ch, W, H, threshold)
    for i in range(len(xs)):
        if draw[i]:
            cv2.circle(canvas, (xs[i], ys[i]), 3, (255, 255, 255), thickness=-1)


def render_pose(frame_pose: FramePose, width: int, height: int, parts: Iterable[str] = PARTS,
                threshold: float = 0.3) -> np.ndarray:
    """The control map of one frame: ``(height, width, 3)`` uint8 RGB, black background.

    Points with confidence ``<= threshold`` are not drawn (DWPose's annotator uses 0.3). ``parts`` picks among
    ``"body"``, ``"hands"``, ``"face"``. The pose is drawn scaled from its own canvas to ``width`` x ``height``.
    """
    parts = set(parts)
    unknown = parts - set(PARTS)
    if unknown:
        raise InvalidOptions(f"unknown pose part(s) {sorted(unknown)}: choose among body, hands, face")
    if int(width) <= 0 or int(height) <= 0:
        raise InvalidOptions(f"control map size must be positive, got {width}x{height}")
    W, H = int(width), int(height)
    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    cw = float(frame_pose.width or W)
    ch = float(frame_pose.height or H)
    for p in frame_pose.people:
        if "body" in parts:
            _draw_body(canvas, p.body, cw, ch, threshold)
        if "hands" in parts:
            for hand in (p.hand_left, p.hand_right):
                if hand is not None:
                    _draw_hand(canvas, hand, cw, ch, threshold)
        if "face" in parts and p.face is not None:
            _draw_face(canvas, p.face, cw, ch, threshold)
    return canvas
