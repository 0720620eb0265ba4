"""Keypoint data (OpenPose layout) and OpenPose-format JSON in and out.

A :class:`Person` holds float32 ``(x, y, confidence)`` rows in the pixel coordinates of its
:class:`FramePose`'s canvas: 18 body points (OpenPose COCO-18 order), 21 + 21 hand points and 70 face points
(OpenPose's 68 landmarks + 2 pupils). A missing point has confidence 0. A missing part (no hand, no face) is
``None``.

JSON: a list with one object per frame::

    {"people": [{"pose_keypoints_2d": [54 floats], "face_keypoints_2d": [210],
                 "hand_left_keypoints_2d": [63], "hand_right_keypoints_2d": [63]}],
     "canvas_width": W, "canvas_height": H}

Reading also accepts what ComfyUI saves as POSE_KEYPOINT JSON (coordinates normalised to 0..1, empty or missing
hand/face arrays), a single frame object instead of a list, OpenPose BODY_25 bodies (mapped to COCO-18) and
68-point faces (pupils added with confidence 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InvalidOptions

N_BODY, N_HAND, N_FACE = 18, 21, 70

# OpenPose BODY_25 -> COCO-18: drop MidHip (8) and the feet (19..24).
_BODY25_TO_COCO18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


def _points(a, n: int, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.shape != (n, 3):
        raise InvalidOptions(f"{name} keypoints must have shape ({n}, 3), got {arr.shape}: pass x, y, confidence rows")
    return np.ascontiguousarray(arr)


@dataclass(eq=False)
class Person:
    """One person: body (18, 3), hands (21, 3) or None, face (70, 3) or None; float32 x, y, confidence."""

    body: np.ndarray
    hand_left: np.ndarray | None = None
    hand_right: np.ndarray | None = None
    face: np.ndarray | None = None

    def __post_init__(self):
        self.body = _points(self.body, N_BODY, "body")
        self.hand_left = None if self.hand_left is None else _points(self.hand_left, N_HAND, "left hand")
        self.hand_right = None if self.hand_right is None else _points(self.hand_right, N_HAND, "right hand")
        self.face = None if self.face is None else _points(self.face, N_FACE, "face")

    def parts(self) -> dict[str, np.ndarray | None]:
        return {"body": self.body, "hand_left": self.hand_left, "hand_right": self.hand_right, "face": self.face}

    def transformed(self, sx: float, sy: float) -> "Person":
        """A copy with x scaled by ``sx`` and y by ``sy`` (confidences kept)."""
        def tr(a):
            if a is None:
                return None
            b = a.copy()
            b[:, 0] *= sx
            b[:, 1] *= sy
            return b
        return Person(tr(self.body), tr(self.hand_left), tr(self.hand_right), tr(self.face))


@dataclass(eq=False)
class FramePose:
    """All people of one frame; ``width, height`` is the canvas the coordinates are in."""

    people: list[Person] = field(default_factory=list)
    width: int = 0
    height: int = 0

    def scaled(self, width: int, height: int) -> "FramePose":
        """A copy on a ``width`` x ``height`` canvas (coordinates rescaled, confidences kept)."""
        sx = width / self.width if self.width else 1.0
        sy = height / self.height if self.height else 1.0
        return FramePose([p.transformed(sx, sy) for p in self.people], int(width), int(height))


# ----------------------------------------------------------------------------------------------- JSON out

def _flat(a: np.ndarray | None) -> list[float]:
    if a is None:
        return []
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def poses_to_json(poses: list[FramePose]) -> list[dict]:
    """OpenPose-format JSON objects, one per frame, in pixel coordinates. A missing hand/face is ``[]``."""
    out = []
    for fp in poses:
        out.append({
            "people": [{
                "pose_keypoints_2d": _flat(p.body),
                "face_keypoints_2d": _flat(p.face),
                "hand_left_keypoints_2d": _flat(p.hand_left),
                "hand_right_keypoints_2d": _flat(p.hand_right),
            } for p in fp.people],
            "canvas_width": int(fp.width),
            "canvas_height": int(fp.height),
        })
    return out


def save_pose_json(path, poses: list[FramePose]) -> Path:
    """Write ``poses`` as an OpenPose-format JSON list to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(poses_to_json(poses)), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        from ..errors import OutputError
        raise OutputError(f"cannot write pose JSON '{path}': {e.strerror or e}: choose a writable path") from e
    return path


# ------------------------------------------------------------------------------------------------ JSON in

def _array(values, where: str) -> np.ndarray | None:
    if values is None:
        return None
    if not isinstance(values, (list, tuple)):
        raise InvalidOptions(f"{where} must be a list of numbers: fix the pose JSON")
    if len(values) == 0:
        return None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidOptions(f"{where} holds something that is not a number: fix the pose JSON") from None
    if arr.ndim != 1 or arr.size % 3:
        raise InvalidOptions(f"{where} must be a flat list of x, y, confidence triples "
                             f"(got {arr.size} values): fix the pose JSON")
    if not np.all(np.isfinite(arr)):
        raise InvalidOptions(f"{where} holds NaN or infinity: fix the pose JSON")
    return arr.reshape(-1, 3)


def _body(values, where: str) -> np.ndarray:
    arr = _array(values, where)
    if arr is None:
        return np.zeros((N_BODY, 3), np.float64)
    if len(arr) == 25:
        return arr[_BODY25_TO_COCO18]
    if len(arr) != N_BODY:
        raise InvalidOptions(f"{where} has {len(arr)} points, expected 18 (COCO) or 25 (BODY_25): fix the pose JSON")
    return arr


def _hand(values, where: str) -> np.ndarray | None:
    arr = _array(values, where)
    if arr is not None and len(arr) != N_HAND:
        raise InvalidOptions(f"{where} has {len(arr)} points, expected 21: fix the pose JSON")
    return arr


def _face(values, where: str) -> np.ndarray | None:
    arr = _array(values, where)
    if arr is None:
        return None
    if len(arr) == 68:  # no pupils: add them as missing points
        arr = np.concatenate([arr, np.zeros((2, 3))], 0)
    if len(arr) != N_FACE:
        raise InvalidOptions(f"{where} has {len(arr)} points, expected 70 (or 68): fix the pose JSON")
    return arr


def _canvas_size(frame: dict, key: str, default, where: str) -> int:
    v = frame.get(key, default)
    if v is None:
        raise InvalidOptions(f"{where} has no {key}: add canvas_width and canvas_height to the pose JSON")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 or v != int(v):
        raise InvalidOptions(f"{where} {key} must be a positive integer, got {v!r}: fix the pose JSON")
    return int(v)


def poses_from_json(obj, width: int | None = None, height: int | None = None) -> list[FramePose]:
    """Frames from OpenPose-format JSON (a list of frame objects, or one frame object).

    ``width, height`` is the canvas used when a frame has no ``canvas_width``/``canvas_height`` (OpenPose's own
    per-frame files have none). Coordinates that are all within 0..1 (ComfyUI style) are taken as normalised and
    scaled to the canvas. Raises ``InvalidOptions`` with a one-line message on anything malformed.
    """
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise InvalidOptions("pose JSON must be a list of frame objects with 'people': fix the pose JSON")
    frames = []
    for i, frame in enumerate(obj):
        where = f"pose JSON frame {i}"
        if not isinstance(frame, dict) or not isinstance(frame.get("people", None), list):
            raise InvalidOptions(f"{where} must be an object with a 'people' list: fix the pose JSON")
        w = _canvas_size(frame, "canvas_width", width, where)
        h = _canvas_size(frame, "canvas_height", height, where)
        raw = []
        for j, person in enumerate(frame["people"]):
            pw = f"{where} person {j}"
            if not isinstance(person, dict):
                raise InvalidOptions(f"{pw} must be an object: fix the pose JSON")
            raw.append([
                _body(person.get("pose_keypoints_2d"), pw + " pose_keypoints_2d"),
                _hand(person.get("hand_left_keypoints_2d"), pw + " hand_left_keypoints_2d"),
                _hand(person.get("hand_right_keypoints_2d"), pw + " hand_right_keypoints_2d"),
                _face(person.get("face_keypoints_2d"), pw + " face_keypoints_2d"),
            ])
        # Normalised coordinates (ComfyUI): every point that is present lies within 0..1.
        present = [a[a[:, 2] > 0, :2] for parts in raw for a in parts if a is not None]
        present = np.concatenate(present, 0) if present else np.zeros((0, 2))
        normalised = present.size > 0 and float(np.abs(present).max()) <= 1.0
        people = []
        for parts in raw:
            if normalised:
                for a in parts:
                    if a is not None:
                        a[:, 0] *= w
                        a[:, 1] *= h
            people.append(Person(*[None if a is None else a.astype(np.float32) for a in parts]))
        frames.append(FramePose(people, w, h))
    return frames


def load_pose_json(path, width: int | None = None, height: int | None = None) -> list[FramePose]:
    """Read an OpenPose-format JSON file (see :func:`poses_from_json`)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidOptions(f"pose JSON file '{path}' does not exist: check the path")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidOptions(f"pose JSON file '{path}' is not valid JSON ({str(e).splitlines()[0]}): "
                             f"fix or re-export it") from None
    return poses_from_json(obj, width, height)


# ------------------------------------------------------------------------------------------------ selection

def keep_parts(frame: FramePose, parts) -> FramePose:
    """A copy keeping only ``parts`` (any of "body", "hands", "face"); a dropped body becomes all-missing points."""
    parts = set(parts)
    people = []
    for p in frame.people:
        people.append(Person(p.body.copy() if "body" in parts else np.zeros((N_BODY, 3), np.float32),
                             p.hand_left if "hands" in parts else None,
                             p.hand_right if "hands" in parts else None,
                             p.face if "face" in parts else None))
    return FramePose(people, frame.width, frame.height)


def has_visible_person(frame: FramePose, threshold: float = 0.3) -> bool:
    """True when some point of some person has confidence above ``threshold`` (its map is not empty)."""
    for p in frame.people:
        for a in p.parts().values():
            if a is not None and np.any(a[:, 2] > threshold):
                return True
    return False
