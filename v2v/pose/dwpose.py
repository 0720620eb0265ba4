"""DWPose (YOLOX-L person boxes + DWPose-L whole-body SimCC) through onnxruntime.

Pre/post-processing follows DWPose's ONNX reference code (``annotator/dwpose/onnxdet.py`` / ``onnxpose.py``):

* detector: letterbox to 640x640 (scale ``r = min(640/h, 640/w)``, ``cv2.INTER_LINEAR``, image at the top left,
  padding value 114), BGR channel order, float 0..255 without normalisation; output ``1x8400x85`` decoded with the
  grid + strides (8, 16, 32) rule (``xy = (out + grid) * stride``, ``wh = exp(out) * stride``), score
  ``objectness * class`` (the ONNX output is already sigmoid-ed), class-aware NMS at IoU 0.45 with the ``+1``
  pixel area convention, person class 0 kept when its score > 0.3.
* pose: box -> centre/scale with padding 1.25, aspect ratio fixed to 288/384, affine crop to 288x384
  (``cv2.INTER_LINEAR``, black border), mean (123.675, 116.28, 103.53) / std (58.395, 57.12, 57.375);
  SimCC argmax decoding with split ratio 2.0, confidence = min(max_x, max_y), mapped back through the crop.

Differences from the reference, on purpose:

* the pose model runs once for all the person crops of all the frames given to :meth:`DWPose.detect`
  (batched; the reference runs one crop at a time);
* the pose model gets RGB crops (its mmpose config has ``bgr_to_rgb=True``, so it was trained on RGB), the
  detector gets BGR (mmdet/YOLOX train on BGR); the reference feeds one array to both;
* a frame without a person gives an empty :class:`FramePose` (the reference then runs the pose model on the
  whole image and invents a person);
* real confidences are kept (neck = min of the two shoulders, so "neck > t" iff "both shoulders > t", the
  reference's rule), nothing is binarised.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .. import hub
from ..errors import InvalidOptions, ModelLoadError
from .keypoints import FramePose, Person

log = logging.getLogger("v2v")

DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
DEFAULT_REPO = "yzd-v/DWPose"

DET_SIZE = (640, 640)            # (h, w)
DET_STRIDES = (8, 16, 32)
DET_PAD_VALUE = 114
DET_SCORE_THR = 0.3
NMS_IOU_THR = 0.45
PERSON_CLASS = 0

POSE_SIZE = (288, 384)           # (w, h)
BBOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
MAX_POSE_BATCH = 64              # crops per pose-model call (bounds memory on long batches)

# COCO-WholeBody 133 -> OpenPose COCO-18 body. -1 is the neck (mean of the shoulders 5 and 6).
# Same order as DWPose's mmpose_idx/openpose_idx mapping (controlnet_aux dwpose/wholebody.py).
WHOLEBODY_TO_OPENPOSE = np.array([0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3])
FACE_SLICE = slice(23, 91)         # 68 face landmarks
LEFT_HAND_SLICE = slice(91, 112)   # the person's left hand
RIGHT_HAND_SLICE = slice(112, 133)


# --------------------------------------------------------------------------------------------- detector maths

def letterbox(image_rgb: np.ndarray, size=DET_SIZE) -> tuple[np.ndarray, float]:
    """YOLOX input (3, h, w) float32 BGR 0..255 and the scale ratio ``r`` (image pixels * r = input pixels)."""
    h, w = image_rgb.shape[:2]
    r = min(size[0] / h, size[1] / w)
    nw, nh = int(w * r), int(h * r)
    out = np.full((size[0], size[1], 3), DET_PAD_VALUE, dtype=np.uint8)
    out[:nh, :nw] = cv2.resize(image_rgb[..., ::-1], (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32), r


def yolox_grids(size=DET_SIZE, strides=DET_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell (x, y) and stride of every YOLOX output row: ``(A, 2)`` and ``(A, 1)``."""
    grids, strs = [], []
    for s in strides:
        hs, ws = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strs.append(np.full((hs * ws, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strs).astype(np.float32)


def decode_yolox(raw: np.ndarray, size=DET_SIZE, strides=DET_STRIDES,
                 classes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw YOLOX output ``(..., A, 5 + C)`` -> boxes ``(..., A, 4)`` xyxy in input pixels, scores ``(..., A, C)``
    (with ``classes``, only those columns, in that order: the detector needs the person class alone, and
    scoring all 80 classes cost more than the rest of the decoding)."""
    grids, strs = yolox_grids(size, strides)
    if raw.shape[-2] != len(grids):
        raise ModelLoadError(f"person detector gave {raw.shape[-2]} boxes, expected {len(grids)} for a "
                             f"{size[1]}x{size[0]} input: use DWPose's yolox_l.onnx")
    raw = np.asarray(raw, dtype=np.float32)
    xy = (raw[..., :2] + grids) * strs
    wh = np.exp(raw[..., 2:4]) * strs
    boxes = np.concatenate([xy - wh / 2.0, xy + wh / 2.0], -1)
    cls = raw[..., 5:] if classes is None else raw[..., [5 + c for c in classes]]
    scores = raw[..., 4:5] * cls
    return boxes, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float = NMS_IOU_THR) -> np.ndarray:
    """Indices kept by greedy NMS, best first (areas with the ``+1`` pixel convention of the reference)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def person_boxes(boxes: np.ndarray, scores: np.ndarray, ratio: float, score_thr: float = DET_SCORE_THR,
                 iou_thr: float = NMS_IOU_THR) -> np.ndarray:
    """Person boxes ``(n, 4)`` xyxy in image pixels, best first, from one image's decoded boxes/scores
    (``scores``: every class's ``(A, C)``, or the person class's alone ``(A,)``).

    Same result as the reference's class-aware NMS at score 0.1 followed by "class 0 and score > 0.3": boxes
    between 0.1 and 0.3 can only suppress boxes scoring even lower, which the 0.3 filter drops anyway.
    """
    s = scores[:, PERSON_CLASS] if scores.ndim == 2 else scores  # all classes' scores, or the person's alone
    m = s > score_thr
    if not np.any(m):
        return np.zeros((0, 4), np.float32)
    b = boxes[m] / ratio
    return b[nms(b, s[m], iou_thr)].astype(np.float32)


# ------------------------------------------------------------------------------------------------ pose maths

def box_center_scale(boxes: np.ndarray, padding: float = BBOX_PADDING, size=POSE_SIZE):
    """Centre ``(n, 2)`` and scale ``(n, 2)`` of xyxy boxes, padded, aspect ratio fixed to ``w / h`` of ``size``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    center = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    scale = (boxes[:, 2:] - boxes[:, :2]) * padding
    aspect = size[0] / size[1]
    w, h = scale[:, :1], scale[:, 1:]
    scale = np.where(w > h * aspect, np.hstack([w, w / aspect]), np.hstack([h * aspect, h]))
    return center, scale


def crop_matrices(center: np.ndarray, scale: np.ndarray, size=POSE_SIZE) -> np.ndarray:
    """``(n, 2, 3)`` affine matrices mapping image pixels to crop pixels (the box centre to the crop centre)."""
    s = size[0] / scale[:, 0]
    m = np.zeros((len(center), 2, 3), dtype=np.float64)
    m[:, 0, 0] = s
    m[:, 1, 1] = s
    m[:, 0, 2] = size[0] * 0.5 - s * center[:, 0]
    m[:, 1, 2] = size[1] * 0.5 - s * center[:, 1]
    return m


def crop_people(image_rgb: np.ndarray, matrices: np.ndarray, size=POSE_SIZE) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 crops of one image."""
    out = np.empty((len(matrices), size[1], size[0], 3), dtype=np.uint8)
    for i, m in enumerate(matrices):
        out[i] = cv2.warpAffine(image_rgb, m, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)
    return out


def normalise_crops(crops: np.ndarray) -> np.ndarray:
    """uint8 ``(n, h, w, 3)`` -> float32 ``(n, 3, h, w)`` with DWPose's mean/std."""
    x = (crops.astype(np.float32) - POSE_MEAN) / POSE_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO):
    """SimCC argmax: keypoints ``(n, K, 2)`` in crop pixels and scores ``(n, K)`` = min(max_x, max_y).

    A point whose score is <= 0 gets location -1 (as the reference), before the split-ratio division.
    """
    locs = np.stack([np.argmax(simcc_x, -1), np.argmax(simcc_y, -1)], -1).astype(np.float32)
    vals = np.minimum(np.max(simcc_x, -1), np.max(simcc_y, -1)).astype(np.float32)
    locs[vals <= 0] = -1
    return locs / split_ratio, vals


def crop_to_image(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, size=POSE_SIZE) -> np.ndarray:
    """Crop-pixel keypoints ``(n, K, 2)`` back to image pixels."""
    size = np.asarray(size, dtype=np.float64)
    return (keypoints / size * scale[:, None, :] + center[:, None, :] - scale[:, None, :] / 2).astype(np.float32)


def wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> list[Person]:
    """133 COCO-WholeBody points per person -> OpenPose people (18 body, 21 + 21 hands, 70 face).

    Confidences are kept (clipped at 0). OpenPose's face has 70 points: the 68 landmarks (wholebody 23..90) and
    two pupils (68: the eye of landmarks 36-41, 69: of 42-47) that DWPose does not predict; the pupils are written
    as missing points (confidence 0) rather than invented, so a drawing shows DWPose's 68 dots.
    """
    kp = np.asarray(keypoints, dtype=np.float32).reshape(-1, 133, 2)
    sc = np.clip(np.asarray(scores, dtype=np.float32).reshape(-1, 133), 0, None)
    pts = np.concatenate([kp, sc[..., None]], -1)                       # (n, 133, 3)
    neck = np.empty((len(pts), 1, 3), np.float32)
    neck[:, 0, :2] = (pts[:, 5, :2] + pts[:, 6, :2]) / 2
    neck[:, 0, 2] = np.minimum(pts[:, 5, 2], pts[:, 6, 2])
    idx = WHOLEBODY_TO_OPENPOSE.copy()
    body = pts[:, np.where(idx < 0, 0, idx)]
    body[:, idx < 0] = neck
    face = np.concatenate([pts[:, FACE_SLICE], np.zeros((len(pts), 2, 3), np.float32)], 1)
    return [Person(body[i], pts[i, LEFT_HAND_SLICE], pts[i, RIGHT_HAND_SLICE], face[i]) for i in range(len(pts))]


# ---------------------------------------------------------------------------------------------- the detector

def _providers(device) -> tuple[list[str], bool]:
    """onnxruntime providers for ``device``; the flag says a GPU was asked for but is not available."""
    import onnxruntime as ort

    dev = str(device or "cpu").lower()
    if dev.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            dev_id = int(dev.split(":", 1)[1]) if ":" in dev else 0
            return [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"], False
        return ["CPUExecutionProvider"], True
    return ["CPUExecutionProvider"], False


def _session(path: Path, providers, what: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own types for corrupt or foreign files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{what} '{path}' cannot be loaded by onnxruntime ({msg[:200]}): "
                             f"use DWPose's {path.name} or delete it to download it again") from e


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class DWPose:
    """Whole-body pose (body, hands, face) of every person in a batch of frames.

    ``DWPose(det_path, pose_path, device="cpu")``; ``device="cuda"`` uses onnxruntime's CUDA provider when it is
    installed (``onnxruntime-gpu``), else the CPU with one warning.
    """

    thread_safe = True  # detect() may run on several threads at once (onnxruntime sessions allow concurrent runs)

    def __init__(self, det_path, pose_path, device="cpu", *, score_threshold: float = DET_SCORE_THR,
                 iou_threshold: float = NMS_IOU_THR, max_batch: int = MAX_POSE_BATCH):
        providers, missing_gpu = _providers(device)
        if missing_gpu:
            log.warning("DWPose: onnxruntime has no CUDA provider here (install onnxruntime-gpu); "
                        "running pose detection on the CPU")
        self.device = str(device)
        self.det_path, self.pose_path = Path(det_path), Path(pose_path)
        self.det = _session(self.det_path, providers, "person detector")
        self.pose = _session(self.pose_path, providers, "DWPose model")
        self.providers = self.pose.get_providers()
        self.score_threshold, self.iou_threshold, self.max_batch = score_threshold, iou_threshold, max(1, max_batch)

        di = self.det.get_inputs()[0]
        if len(di.shape) != 4:
            raise ModelLoadError(f"person detector '{self.det_path}' takes {di.shape}, not NCHW images: "
                                 f"use DWPose's {DET_FILE}")
        self._det_input = di.name
        self._det_batch = _static(di.shape[0])
        self.det_size = (_static(di.shape[2]) or DET_SIZE[0], _static(di.shape[3]) or DET_SIZE[1])
        pi = self.pose.get_inputs()[0]
        outs = [o.name for o in self.pose.get_outputs()]
        if len(pi.shape) != 4 or len(outs) != 2:
            raise ModelLoadError(f"DWPose model '{self.pose_path}' does not look like a SimCC pose model "
                                 f"(input {pi.shape}, {len(outs)} outputs): use DWPose's {POSE_FILE}")
        self._pose_input, self._pose_outputs = pi.name, outs
        self._pose_batch = _static(pi.shape[0])
        self.pose_size = (_static(pi.shape[3]) or POSE_SIZE[0], _static(pi.shape[2]) or POSE_SIZE[1])  # (w, h)

    @staticmethod
    def model_files(spec: str = DEFAULT_REPO) -> list[Path]:
        """The two ONNX files of ``spec`` (hub id or folder), resolved without loading them."""
        return [hub.resolve_file(spec, DET_FILE, what="DWPose person detector"),
                hub.resolve_file(spec, POSE_FILE, what="DWPose model")]

    @classmethod
    def from_spec(cls, spec: str = DEFAULT_REPO, device="cpu", *, det_file: str = DET_FILE,
                  pose_file: str = POSE_FILE, **kwargs) -> "DWPose":
        """DWPose from a hub repo id (default ``yzd-v/DWPose``) or a local folder holding the two ONNX files."""
        det = hub.resolve_file(spec, det_file, what="DWPose person detector")
        pose = hub.resolve_file(spec, pose_file, what="DWPose model")
        return cls(det, pose, device=device, **kwargs)

    # -- stages
    def detect_boxes(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Person boxes ``(n, 4)`` xyxy in image pixels for each image."""
        inputs, ratios = zip(*[letterbox(im, self.det_size) for im in images]) if images else ((), ())
        step = self._det_batch or len(images) or 1
        raws = []
        for i in range(0, len(images), step):
            chunk = np.stack(inputs[i:i + step])
            if self._det_batch and len(chunk) < self._det_batch:   # a fixed batch > 1: pad the last chunk
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self._det_batch - len(chunk), 0)])
            raws.append(self.det.run(None, {self._det_input: chunk})[0][:min(step, len(images) - i)])
        raw = np.concatenate(raws) if raws else np.zeros((0, 0, 85), np.float32)
        boxes, scores = decode_yolox(raw, self.det_size, classes=(PERSON_CLASS,)) if len(images) else (raw, raw)
        return [person_boxes(boxes[i], scores[i, :, 0], ratios[i], self.score_threshold, self.iou_threshold)
                for i in range(len(images))]

    def run_pose(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pose model on normalised crops ``(n, 3, h, w)``, in chunks; returns (simcc_x, simcc_y)."""
        step = min(self._pose_batch or self.max_batch, self.max_batch)
        xs, ys = [], []
        for i in range(0, len(batch), step):
            chunk = batch[i:i + step]
            n = len(chunk)
            if self._pose_batch and n < self._pose_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self._pose_batch - n, 0)])
            out = dict(zip(self._pose_outputs, self.pose.run(self._pose_outputs, {self._pose_input: chunk})))
            sx, sy = out.get("simcc_x"), out.get("simcc_y")
            if sx is None or sy is None:  # unknown names: the x distribution is the shorter one (w < h)
                sx, sy = sorted(out.values(), key=lambda a: a.shape[-1])
            xs.append(sx[:n])
            ys.append(sy[:n])
        return np.concatenate(xs), np.concatenate(ys)

    def detect(self, images: list[np.ndarray]) -> list[FramePose]:
        """One :class:`FramePose` per image (uint8 ``HxWx3`` RGB), in the pixel coordinates of that image.

        All the person crops of all the images go through the pose model together (batched).
        """
        images = list(images)
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise InvalidOptions(f"DWPose.detect needs uint8 HxWx3 RGB images; image {i} is "
                                     f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}")
        boxes = self.detect_boxes(images)
        owners = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]) if images else np.zeros(0)
        all_boxes = np.concatenate(boxes) if images else np.zeros((0, 4), np.float32)
        result = [FramePose([], im.shape[1], im.shape[0]) for im in images]
        if len(all_boxes) == 0:
            return result
        center, scale = box_center_scale(all_boxes, BBOX_PADDING, self.pose_size)
        mats = crop_matrices(center, scale, self.pose_size)
        crops = np.concatenate([crop_people(images[i], mats[owners == i], self.pose_size)
                                for i in range(len(images)) if np.any(owners == i)])
        # crops are concatenated in image order, as owners is sorted
        simcc_x, simcc_y = self.run_pose(normalise_crops(crops))
        kps, scores = decode_simcc(simcc_x, simcc_y, SIMCC_SPLIT_RATIO)
        kps = crop_to_image(kps, center, scale, self.pose_size)
        people = wholebody_to_openpose(kps, scores)
        for person, owner in zip(people, owners):
            result[int(owner)].people.append(person)
        return result

    __call__ = detect
