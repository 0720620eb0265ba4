"""OpenPose (body, hands, face) through controlnet_aux's networks and pre/post-processing.

Weights: ``lllyasviel/Annotators`` files ``body_pose_model.pth``, ``hand_pose_model.pth``, ``facenet.pth`` (or a
local folder holding them), resolved via :func:`v2v.hub.resolve_file` and read with
``torch.load(weights_only=True)`` (controlnet_aux itself unpickles them without that guard).

Only controlnet_aux's ``open_pose`` submodules are loaded, under a private package name, without running
``controlnet_aux/__init__.py`` (which imports every detector) or ``open_pose/__init__.py`` (which pulls the hub
and PIL helpers in). What v2v adds over ``OpenposeDetector``:

* real confidences: body points keep the network's peak scores; hand points get their heatmap peak value (0 when
  controlnet_aux finds no peak); face points get their heatmap peak value, one row per landmark (controlnet_aux
  drops missing face landmarks, which shifts every later index), missing = confidence 0;
* parts not asked for are not computed (the hand network runs at 4 scales: it is the slow part);
* coordinates in the image's pixels, :class:`FramePose` out, frames without a person give an empty frame.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np

from ..models import hub
from ..errors import InvalidOptions, ModelLoadError
from .keypoints import N_BODY, N_FACE, N_HAND, FramePose, Person

log = logging.getLogger("v2v")

DEFAULT_REPO = "lllyasviel/Annotators"
BODY_FILE, HAND_FILE, FACE_FILE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"
PARTS = ("body", "hands", "face")
FACE_PEAK_THRESHOLD = 0.05  # controlnet_aux's compute_peaks_from_heatmaps threshold
_PKG = "_v2v_controlnet_aux_open_pose"


def controlnet_aux_open_pose() -> types.SimpleNamespace:
    """controlnet_aux's open_pose ``model``, ``util``, ``body``, ``hand``, ``face`` modules, loaded on their own."""
    if _PKG in sys.modules and hasattr(sys.modules[_PKG], "_v2v_modules"):
        return sys.modules[_PKG]._v2v_modules
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("OpenPose needs controlnet_aux: pip install controlnet_aux, or use --pose dwpose")
    folder = Path(list(spec.submodule_search_locations)[0]) / "open_pose"
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [str(folder)]
    sys.modules[_PKG] = pkg
    try:
        mods = types.SimpleNamespace(**{name: importlib.import_module(f"{_PKG}.{name}")
                                        for name in ("util", "model", "body", "hand", "face")})
    except ImportError as e:
        del sys.modules[_PKG]
        raise ModelLoadError(f"controlnet_aux's OpenPose cannot be imported ({e}): reinstall controlnet_aux, "
                             f"or use --pose dwpose") from e
    pkg._v2v_modules = mods
    return mods


def _state(path: Path, what: str) -> dict:
    import torch

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{what} '{path}' cannot be read as a weights-only PyTorch file ({msg[:160]}): "
                             f"use lllyasviel/Annotators' {path.name} or delete it to download it again") from e
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{what} '{path}' holds no state dict: use lllyasviel/Annotators' {path.name}")
    return sd


def _load(net, sd: dict, path: Path, what: str, transfer=None):
    try:
        net.load_state_dict(transfer(net, sd) if transfer else sd)
    except (KeyError, RuntimeError) as e:
        raise ModelLoadError(f"{what} '{path}' does not fit OpenPose's network ({type(e).__name__}): "
                             f"use lllyasviel/Annotators' {path.name}") from e
    return net.eval()


class OpenPose:
    """OpenPose body (+ hands, + face) of every person, one frame at a time (controlnet_aux's networks).

    ``OpenPose(body_path, hand_path=None, face_path=None, device="cpu", parts=("body", "hands", "face"))``.
    """

    def __init__(self, body_path, hand_path=None, face_path=None, device="cpu", *, parts=PARTS):
        import torch

        self.parts = tuple(parts)
        if "hands" in self.parts and hand_path is None or "face" in self.parts and face_path is None:
            raise InvalidOptions("OpenPose hands/face need hand_pose_model.pth/facenet.pth: give their paths")
        m = controlnet_aux_open_pose()
        self._m = m
        self.device = torch.device("cpu" if str(device) in ("auto", "") else str(device))
        self.body = m.body.Body.__new__(m.body.Body)
        self.body.model = _load(m.model.bodypose_model(), _state(Path(body_path), "OpenPose body model"),
                                Path(body_path), "OpenPose body model", m.util.transfer).to(self.device)
        self.hand = self.face = None
        self._hand_scores: list[float] = []
        if "hands" in self.parts:
            self.hand = m.hand.Hand.__new__(m.hand.Hand)
            self.hand.model = _load(m.model.handpose_model(), _state(Path(hand_path), "OpenPose hand model"),
                                    Path(hand_path), "OpenPose hand model", m.util.transfer).to(self.device)
            # the hand module's own util, with npmax recording the peak value (its confidence)
            util = types.SimpleNamespace(**{k: v for k, v in vars(m.util).items() if not k.startswith("__")})
            npmax = m.util.npmax

            def recording_npmax(array):
                y, x = npmax(array)
                self._hand_scores.append(float(array[y, x]))
                return y, x

            util.npmax = recording_npmax
            m.hand.util = util
        if "face" in self.parts:
            self.face = m.face.Face.__new__(m.face.Face)
            self.face.inference_size, self.face.sigma, self.face.threshold = 736, 2.5, 0.1
            self.face.model = _load(m.face.FaceNet(), _state(Path(face_path), "OpenPose face model"),
                                    Path(face_path), "OpenPose face model").to(self.device)

    @staticmethod
    def model_files(spec: str = DEFAULT_REPO, parts=PARTS) -> list[Path]:
        files = [hub.resolve_file(spec, BODY_FILE, what="OpenPose body model")]
        if "hands" in parts:
            files.append(hub.resolve_file(spec, HAND_FILE, what="OpenPose hand model"))
        if "face" in parts:
            files.append(hub.resolve_file(spec, FACE_FILE, what="OpenPose face model"))
        return files

    @classmethod
    def from_spec(cls, spec: str = DEFAULT_REPO, device="cpu", *, parts=PARTS) -> "OpenPose":
        files = cls.model_files(spec, parts)
        body = files[0]
        hand = files[1] if "hands" in parts else None
        face = files[-1] if "face" in parts else None
        return cls(body, hand, face, device=device, parts=parts)

    # -- per part
    def _hands(self, body_result, bgr) -> tuple[np.ndarray | None, np.ndarray | None]:
        left = right = None
        for x, y, w, is_left in self._m.util.handDetect(body_result, bgr):
            self._hand_scores.clear()
            peaks = np.asarray(self.hand(bgr[y:y + w, x:x + w, :]), dtype=np.float32).reshape(-1, 2)
            if peaks.shape != (N_HAND, 2):
                continue
            scores = np.clip(np.asarray(self._hand_scores + [0.0] * N_HAND, np.float32)[:N_HAND], 0, 1)
            found = ~((peaks[:, 0] < 1e-6) & (peaks[:, 1] < 1e-6))   # controlnet_aux's "no peak": (0, 0)
            # npmax is called only for parts with a peak, in order: spread the recorded scores over them
            conf = np.zeros(N_HAND, np.float32)
            conf[found] = scores[:int(found.sum())]
            pts = np.concatenate([peaks + [x, y], conf[:, None]], 1)
            pts[~found] = 0
            if is_left:
                left = pts
            else:
                right = pts
        return left, right

    def _face_heatmaps(self, face_img: np.ndarray) -> np.ndarray:
        """controlnet_aux's ``Face.__call__`` with its input made float32 explicitly: it divides a uint8 tensor by
        256.0, which takes torch's default dtype, and that is float16/bfloat16 for a while as diffusers and
        transformers load models (on another thread, alongside the pose stage): the face network then fails on
        a dtype mismatch."""
        import torch
        from torch.nn import functional as F

        size = 384  # the network's input, as controlnet_aux's Face
        h, w = face_img.shape[:2]
        net = self.face.model
        x = torch.from_numpy(self._m.util.smart_resize(face_img, (size, size))).permute(2, 0, 1)
        x = (x.to(torch.float32) / 256.0 - 0.5).to(next(iter(net.parameters())).device)
        with torch.no_grad():
            hs = net(x[None])
            return F.interpolate(hs[-1].float(), (h, w), mode="bilinear", align_corners=True).cpu().numpy()[0]

    def _face(self, body_result, bgr) -> np.ndarray | None:
        box = self._m.util.faceDetect(body_result, bgr)
        if box is None:
            return None
        x, y, w = box
        heat = self._face_heatmaps(bgr[y:y + w, x:x + w, :])           # (71, w, w)
        pts = np.zeros((N_FACE, 3), np.float32)
        for k in range(min(N_FACE, heat.shape[0])):
            hm = heat[k]
            iy, ix = np.unravel_index(int(np.argmax(hm)), hm.shape)
            v = float(hm[iy, ix])
            if v > FACE_PEAK_THRESHOLD:
                pts[k] = [ix + x, iy + y, min(v, 1.0)]
        return pts

    def detect(self, images: list[np.ndarray]) -> list[FramePose]:
        """One :class:`FramePose` per uint8 HxWx3 RGB image, in its pixels; an empty one where nobody is found."""
        import torch

        out = []
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise InvalidOptions(f"OpenPose.detect needs uint8 HxWx3 RGB images; image {i} is "
                                     f"{getattr(im, 'dtype', type(im).__name__)} {getattr(im, 'shape', '')}")
            bgr = np.ascontiguousarray(im[:, :, ::-1])
            people = []
            with torch.no_grad():
                candidate, subset = self.body(bgr)
                for br in self._m.body.Body.format_body_result(candidate, subset):
                    body = np.zeros((N_BODY, 3), np.float32)
                    for k, kp in enumerate(br.keypoints[:N_BODY]):
                        if kp is not None:
                            body[k] = [kp.x, kp.y, min(max(float(kp.score), 0.0), 1.0)]
                    left, right = self._hands(br, bgr) if self.hand is not None else (None, None)
                    face = self._face(br, bgr) if self.face is not None else None
                    people.append(Person(body, left, right, face))
            out.append(FramePose(people, im.shape[1], im.shape[0]))
        return out

    __call__ = detect
