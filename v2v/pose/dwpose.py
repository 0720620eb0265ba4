"""DWPose (YOLOX-L person boxes + DWPose-L whole-body SimCC) through onnxruntime or TorchScript.

Two runtimes run the same two networks (see :func:`choose_runtime`):

* ``onnx``: DWPose's ONNX files (``yzd-v/DWPose``) on onnxruntime, on the GPU when ``onnxruntime-gpu``'s CUDA
  provider loads, else on the CPU;
* ``torch``: the TorchScript exports of the same networks that ComfyUI's DWPose node uses
  (``hr16/yolox-onnx`` ``yolox_l.torchscript.pt``, ``hr16/DWPose-TorchScript-BatchSize5``
  ``dw-ll_ucoco_384_bs5.torchscript.pt``) on torch's device: pose on the GPU with nothing more to install.
  Their inputs and outputs are the ONNX files' (same pre/post-processing); a file named ``..._bsN...`` was
  traced for batches of N, so crops go in chunks of N (the last one padded), and any other TorchScript file
  gets one image at a time.

Pre/post-processing follows DWPose's ONNX reference code (``annotator/dwpose/onnxdet.py`` / ``onnxpose.py``):

* detector: letterbox to 640x640 (scale ``r = min(640/h, 640/w)``, ``cv2.INTER_LINEAR``, image at the top left,
  padding value 114), BGR channel order, float 0..255 without normalisation; output ``1x8400x85`` decoded with the
  grid + strides (8, 16, 32) rule (``xy = (out + grid) * stride``, ``wh = exp(out) * stride``), score
  ``objectness * class`` (the ONNX output is already sigmoid-ed), class-aware NMS at IoU 0.45 with the ``+1``
  pixel area convention over the candidates scoring above 0.1, taken in the order numpy's
  ``scores.argsort()[::-1]`` gives them (equal scores too), person class 0 kept when its score > 0.3.
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
import re
import threading
import warnings
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from ..models import hub
from ..errors import InvalidOptions, ModelLoadError
from ..options import POSE_RUNTIMES as RUNTIMES
from .keypoints import FramePose, Person

log = logging.getLogger("v2v")

DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
DEFAULT_REPO = "yzd-v/DWPose"
# the TorchScript exports (runtime "torch"), where ComfyUI's DWPose node downloads them from
TORCH_DET = ("hr16/yolox-onnx", "yolox_l.torchscript.pt")
TORCH_POSE = ("hr16/DWPose-TorchScript-BatchSize5", "dw-ll_ucoco_384_bs5.torchscript.pt")

DET_SIZE = (640, 640)            # (h, w)
DET_STRIDES = (8, 16, 32)
DET_PAD_VALUE = 114
DET_SCORE_THR = 0.3
NMS_SCORE_THR = 0.1  # NMS runs over the candidates above this, then DET_SCORE_THR filters what it kept
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
    """Indices kept by greedy NMS, best first, as the reference computes them: candidates in the order of
    ``scores.argsort()[::-1]`` (which box of equal scores comes first decides which one is kept), areas with the
    ``+1`` pixel convention, in the boxes' own precision."""
    boxes = np.asarray(boxes)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.asarray(scores).argsort()[::-1]
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

    The reference's steps for class 0: NMS over every candidate above 0.1, then the boxes it kept that score
    above ``score_thr``. NMS over the 0.3 candidates alone keeps other people where scores are equal: the order
    numpy's sort gives equal scores depends on the whole array sorted.
    """
    s = scores[:, PERSON_CLASS] if scores.ndim == 2 else scores  # all classes' scores, or the person's alone
    m = s > min(NMS_SCORE_THR, score_thr)
    if not np.any(m):
        return np.zeros((0, 4), np.float32)
    b, s = boxes[m] / ratio, s[m]
    keep = nms(b, s, iou_thr)
    return b[keep[s[keep] > score_thr]].astype(np.float32)


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


# ------------------------------------------------------------------------------------------------ runtimes

def ort_has_cuda() -> bool:
    """True when onnxruntime offers its CUDA provider (``onnxruntime-gpu`` installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def choose_runtime(requested: str, device) -> str:
    """The runtime ``requested`` ("auto", "onnx" or "torch") stands for on ``device``.

    "auto" is onnxruntime, except on a CUDA device that onnxruntime cannot use (no ``onnxruntime-gpu``) and torch
    can: there the TorchScript files run on the GPU rather than the ONNX ones on the CPU."""
    if requested not in RUNTIMES:
        raise InvalidOptions(f"--pose-runtime must be one of {', '.join(RUNTIMES)}, not {requested!r}")
    if requested != "auto":
        return requested
    if not str(device or "cpu").lower().startswith("cuda") or ort_has_cuda():
        return "onnx"
    import torch

    return "torch" if torch.cuda.is_available() else "onnx"  # no GPU at all: onnxruntime on the CPU, as asked


def torchscript_available(spec: str) -> bool:
    """Whether ``spec``'s TorchScript files can be had without surprises: the default repo (downloaded like any
    model; offline, only when already cached), a folder holding both files, another repo only when both are
    cached (such a repo, or a folder of ONNX files, is the user's choice of the ONNX files)."""
    from huggingface_hub import try_to_load_from_cache

    if hub.is_local(spec):
        folder = Path(spec).expanduser()
        return folder.is_dir() and all((folder / name).is_file() for _, name in (TORCH_DET, TORCH_POSE))
    repos = (TORCH_DET, TORCH_POSE) if spec == DEFAULT_REPO else ((spec, TORCH_DET[1]), (spec, TORCH_POSE[1]))
    if spec == DEFAULT_REPO and not hub.offline():
        return True
    try:
        return all(isinstance(try_to_load_from_cache(repo, name), str) for repo, name in repos)
    except Exception:  # noqa: BLE001 - an odd repo id: not available
        return False


def resolve_runtime(requested: str, device, spec: str = DEFAULT_REPO, *, offload: bool = False) -> str:
    """The runtime a run with ``--pose-runtime requested`` and ``--pose-model spec`` uses on ``device``: "auto"
    is :func:`choose_runtime`'s pick, but stays onnxruntime (on the CPU) where the TorchScript files are not
    to be had (a folder or repo of ONNX files, offline without them cached) or with ``offload`` (a small GPU:
    the pose networks' memory would compete with the denoiser's)."""
    runtime = choose_runtime(requested, device)
    if requested == "auto" and runtime == "torch":
        if offload:
            log.info("DWPose runs on the CPU (onnxruntime) with --offload; --pose-runtime torch runs it on the GPU")
            return "onnx"
        if not torchscript_available(spec):
            log.info("DWPose runs on the CPU (onnxruntime): onnxruntime has no CUDA provider here and %s has no "
                     "TorchScript files (%s, %s)", spec, TORCH_DET[1], TORCH_POSE[1])
            return "onnx"
    return runtime


def _providers(device) -> tuple[list[str], bool]:
    """onnxruntime providers for ``device``; the flag says a GPU was asked for but is not available."""
    dev = str(device or "cpu").lower()
    if dev.startswith("cuda"):
        if ort_has_cuda():
            dev_id = int(dev.split(":", 1)[1]) if ":" in dev else 0
            return [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"], False
        return ["CPUExecutionProvider"], True
    return ["CPUExecutionProvider"], False


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class _OnnxNet:
    """One ONNX network on onnxruntime: ``input_shape`` (static dims, else None), ``run(x) -> outputs``."""

    def __init__(self, path: Path, providers, what: str):
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls") and any(isinstance(p, tuple) for p in providers):
            try:  # onnxruntime-gpu >= 1.21 finds CUDA/cuDNN in the nvidia-* wheels torch installed
                ort.preload_dlls()
            except Exception as e:  # noqa: BLE001 - a failed preload leaves the system's libraries to try
                log.debug("onnxruntime.preload_dlls: %s", e)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own types for corrupt or foreign files
            msg = _first_line(e)
            raise ModelLoadError(f"{what} '{path}' cannot be loaded by onnxruntime ({msg[:200]}): "
                                 f"use DWPose's {path.name} or delete it to download it again") from e
        i = self.session.get_inputs()[0]
        self.input_name, self.input_shape = i.name, [_static(d) for d in i.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})


def _traced_batch(path: Path) -> int:
    """The batch a TorchScript file was traced for: N of ``..._bsN...`` in its name, else 1."""
    m = re.search(r"_bs(\d+)(?:\.|_|$)", path.name)
    return max(1, int(m.group(1))) if m else 1


class _TorchScriptNet:
    """One TorchScript network on torch's ``device``, with the interface of :class:`_OnnxNet`. Inputs are cast
    to the network's own dtype (float16 exports take float16), outputs come back as float32 arrays."""

    def __init__(self, path: Path, device, what: str, expected_file: str):
        import torch

        self._torch = torch
        self.device = torch.device(str(device or "cpu"))
        try:
            with warnings.catch_warnings():  # torch >= 2.10 calls TorchScript deprecated; the files are TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location=self.device)
        except Exception as e:  # a corrupt file, a pickle rather than TorchScript, a CUDA-only export on a CPU
            msg = _first_line(e)
            raise ModelLoadError(f"{what} '{path}' cannot be loaded as TorchScript ({msg[:200]}): use "
                                 f"{expected_file}, delete it to download it again, or use --pose-runtime onnx") from e
        self.net = net.eval()
        param = next(iter(self.net.parameters()), None)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.input_shape = [_traced_batch(path), 3, None, None]  # TorchScript keeps no input metadata
        self.output_names: list[str] = []
        self.providers = [f"torch:{self.device}"]
        self._local = threading.local()  # per-thread CUDA streams (run() may be called from several threads)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        stream = self._stream()
        with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None else nullcontext()):
            out = self.net(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype))
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            return [o.float().cpu().numpy() for o in outs]  # waits for this stream only

    def _stream(self):
        """On CUDA, a stream of this thread's own: the pose stage runs while the denoiser fills the GPU, and its
        results must not wait behind the denoiser's queued kernels on the default stream."""
        if self.device.type != "cuda":
            return None
        if not hasattr(self._local, "stream"):
            self._local.stream = self._torch.cuda.Stream(device=self.device)
        return self._local.stream


def load_net(path: Path, device, what: str, expected_file: str):
    """``path`` as a network: an ``.onnx`` file on onnxruntime (its CUDA provider on a CUDA ``device`` when
    installed, else the CPU), anything else as TorchScript on torch's ``device``."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _OnnxNet(path, _providers(device)[0], what)
    return _TorchScriptNet(path, device, what, expected_file)


def _expected(onnx_name: str, path: Path) -> str:
    """The file a model of ``path``'s format should be (for error messages)."""
    if Path(path).suffix.lower() == ".onnx":
        return onnx_name
    return TORCH_DET[1] if onnx_name == DET_FILE else TORCH_POSE[1]


def _warn_if_cpu(nets, device) -> None:
    """One warning when a GPU was asked for and an ONNX network runs on the CPU, saying what to do."""
    onnx = [n for n in nets if isinstance(n, _OnnxNet)]
    if not onnx or not str(device or "cpu").lower().startswith("cuda"):
        return
    if not ort_has_cuda():
        log.warning("DWPose: onnxruntime has no CUDA provider here (install onnxruntime-gpu, or use "
                    "--pose-runtime torch); running pose detection on the CPU")
    elif any("CUDAExecutionProvider" not in n.providers for n in onnx):
        log.warning("DWPose: onnxruntime's CUDA provider did not load (CUDA or cuDNN libraries not found), so "
                    "pose detection runs on the CPU: use --pose-runtime torch to run it on the GPU")


# ---------------------------------------------------------------------------------------------- the detector

class DWPose:
    """Whole-body pose (body, hands, face) of every person in a batch of frames.

    ``DWPose(det_path, pose_path, device="cpu")``. Each file runs on the runtime its format calls for: an ONNX
    file on onnxruntime (with ``device="cuda"``, its CUDA provider when ``onnxruntime-gpu`` is installed, else
    the CPU with one warning), a TorchScript file on torch's ``device``.
    """

    thread_safe = True  # detect() may run on several threads at once (onnxruntime sessions and TorchScript
    #                     modules allow concurrent calls)

    def __init__(self, det_path, pose_path, device="cpu", *, score_threshold: float = DET_SCORE_THR,
                 iou_threshold: float = NMS_IOU_THR, max_batch: int = MAX_POSE_BATCH):
        self.device = str(device)
        self.det_path, self.pose_path = Path(det_path), Path(pose_path)
        self.det = load_net(self.det_path, device, "person detector", _expected(DET_FILE, self.det_path))
        self.pose = load_net(self.pose_path, device, "DWPose model", _expected(POSE_FILE, self.pose_path))
        _warn_if_cpu((self.det, self.pose), device)
        self.providers = self.pose.providers
        self.runtime = "onnx" if isinstance(self.pose, _OnnxNet) else "torch"
        self.score_threshold, self.iou_threshold, self.max_batch = score_threshold, iou_threshold, max(1, max_batch)

        ds = self.det.input_shape
        if len(ds) != 4:
            raise ModelLoadError(f"person detector '{self.det_path}' takes {ds}, not NCHW images: "
                                 f"use DWPose's {DET_FILE}")
        self._det_batch = ds[0]
        self.det_size = (ds[2] or DET_SIZE[0], ds[3] or DET_SIZE[1])
        ps = self.pose.input_shape
        if len(ps) != 4 or (self.pose.output_names and len(self.pose.output_names) != 2):
            raise ModelLoadError(f"DWPose model '{self.pose_path}' does not look like a SimCC pose model "
                                 f"(input {ps}, {len(self.pose.output_names)} outputs): use DWPose's {POSE_FILE}")
        self._pose_batch = ps[0]
        self.pose_size = (ps[3] or POSE_SIZE[0], ps[2] or POSE_SIZE[1])  # (w, h)
        if self.runtime == "torch" or isinstance(self.det, _TorchScriptNet):
            self._probe_torchscript()

    def _probe_torchscript(self) -> None:
        """TorchScript files keep no input/output metadata: one run on blank input checks what they give, so a
        wrong or broken file (or one traced with a device baked in) fails here, in one line, not mid-video."""
        checks = []
        if isinstance(self.det, _TorchScriptNet):
            checks.append((self.det, self.det_path, TORCH_DET[1],
                           np.full((self._det_batch, 3, *self.det_size), DET_PAD_VALUE, np.float32)))
        if isinstance(self.pose, _TorchScriptNet):
            checks.append((self.pose, self.pose_path, TORCH_POSE[1],
                           np.zeros((self._pose_batch, 3, self.pose_size[1], self.pose_size[0]), np.float32)))
        for net, path, expected, x in checks:
            try:
                outs = net.run(x)
            except Exception as e:  # noqa: BLE001 - any failure of a foreign file is the file's ...
                if type(e).__name__ == "OutOfMemoryError":  # ... but running out of memory is not
                    raise
                msg = " ".join(str(e).split())[-200:] if str(e).strip() else type(e).__name__
                raise ModelLoadError(f"'{path.name}' fails on a {'x'.join(map(str, x.shape))} input (the batch a "
                                     f"TorchScript file takes is read from '_bsN' in its name, else 1) ({msg}): use "
                                     f"{expected}, or --pose-runtime onnx") from e
            n = len(x)
            if net is self.det:
                ok = len(outs) >= 1 and outs[0].ndim == 3 and outs[0].shape[0] == n and outs[0].shape[2] >= 6
            else:
                ok = (len(outs) == 2 and all(o.ndim == 3 and o.shape[0] == n for o in outs)
                      and outs[0].shape[1] == outs[1].shape[1])
            if not ok:
                raise ModelLoadError(f"'{path}' gives {[tuple(o.shape) for o in outs]}, not what the TorchScript "
                                     f"export of {expected} gives: use that file, or --pose-runtime onnx")

    @staticmethod
    def model_files(spec: str = DEFAULT_REPO, runtime: str = "onnx") -> list[Path]:
        """The two model files of ``spec`` (hub id or folder) for ``runtime`` ("onnx" or "torch"), resolved
        without loading them. For "torch", the default repo stands for the TorchScript repos (TORCH_DET,
        TORCH_POSE); a folder or another repo must hold both TorchScript files under those names."""
        if runtime == "torch":
            if spec == DEFAULT_REPO:
                return [hub.resolve_file(TORCH_DET[0], TORCH_DET[1], what="DWPose person detector (TorchScript)"),
                        hub.resolve_file(TORCH_POSE[0], TORCH_POSE[1], what="DWPose model (TorchScript)")]
            return [hub.resolve_file(spec, TORCH_DET[1], what="DWPose person detector (TorchScript)"),
                    hub.resolve_file(spec, TORCH_POSE[1], what="DWPose model (TorchScript)")]
        if runtime != "onnx":
            raise InvalidOptions(f"DWPose runtime must be onnx or torch here, not {runtime!r}")
        return [hub.resolve_file(spec, DET_FILE, what="DWPose person detector"),
                hub.resolve_file(spec, POSE_FILE, what="DWPose model")]

    @classmethod
    def from_spec(cls, spec: str = DEFAULT_REPO, device="cpu", *, runtime: str = "auto", **kwargs) -> "DWPose":
        """DWPose from a hub repo id (default ``yzd-v/DWPose``) or a local folder holding the two model files of
        ``runtime`` (:func:`choose_runtime`: "auto" is TorchScript on a GPU onnxruntime cannot use)."""
        det, pose = cls.model_files(spec, choose_runtime(runtime, device))
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
            raws.append(self.det.run(chunk)[0][:min(step, len(images) - i)])
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
            outs = self.pose.run(chunk)
            if len(outs) != 2:
                raise ModelLoadError(f"DWPose model '{self.pose_path}' gave {len(outs)} outputs, not SimCC's "
                                     f"two: use DWPose's {POSE_FILE}")
            out = dict(zip(self.pose.output_names, outs))
            sx, sy = out.get("simcc_x"), out.get("simcc_y")
            if sx is None or sy is None:  # unknown names: the x distribution is the shorter one (w < h)
                sx, sy = sorted(outs, key=lambda a: a.shape[-1])
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
