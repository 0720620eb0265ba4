"""Tiny deterministic random-weight stand-ins for DWPose's two ONNX files (for tests and ``--models tiny``).

Same file names, input/output names and shapes as the real models:

* ``yolox_l.onnx``: ``images`` float ``1x3x640x640`` -> ``output`` ``1x8400x85`` (YOLOX raw: box regression,
  then sigmoid objectness and 80 sigmoid class scores; rows for strides 8, 16, 32).
* ``dw-ll_ucoco_384.onnx``: ``input`` float ``Nx3x384x288`` (dynamic N) -> ``simcc_x`` ``Nx133x576``,
  ``simcc_y`` ``Nx133x768``.

The tiny detector is a "bright blob" detector: at stride 32 a cell's objectness grows with the cell's mean
brightness (mean > ~140 of 255 passes the 0.3 person threshold; the 114 letterbox padding and dark images do
not), the person class is likely, and boxes are 320 px (of the 640 input) wide/high around the cell.
So a synthetic image with a bright rectangle has people, a black one has none. The tiny pose model predicts,
for each of the 133 points, a position from pooled image features and a Gaussian-shaped SimCC
distribution whose peak value (the confidence) varies from point to point. Its output is meaningless; only shapes and
plumbing are real.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

SEED = 1234
OPSET = 17
IR_VERSION = 8
DET_NAME, POSE_NAME = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:  # onnx is a dev dependency
        from ..errors import ModelLoadError
        raise ModelLoadError("building the tiny DWPose models needs the 'onnx' package: pip install onnx") from e
    return onnx, TensorProto, helper, numpy_helper


def _tiny_detector(rng: np.random.Generator):
    _, TensorProto, helper, nh = _onnx()
    inits, nodes, level_outputs = [], [], []
    for s in (8, 16, 32):
        w = (rng.standard_normal((85, 3, 1, 1)) * 1e-3).astype(np.float32)
        b = np.zeros(85, np.float32)
        b[0:2] = rng.uniform(-0.2, 0.2, 2)          # centre offset within the cell
        b[2:4] = np.log(10.0)                        # boxes 10 cells (10 * stride) wide and high
        b[5] = 3.0                                   # person class likely ...
        b[6:] = rng.uniform(-4, -2, 79)              # ... other classes not
        if s == 32:
            w[4] = 0.1 / 3.0                         # objectness logit = 0.1 * (mean brightness - 150)
            b[4] = -15.0
        else:
            w[4] = 0.0
            b[4] = -20.0                             # no boxes from the finer levels
        inits += [nh.from_array(w, f"w{s}"), nh.from_array(b, f"b{s}")]
        nodes += [
            helper.make_node("AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Conv", [f"p{s}", f"w{s}", f"b{s}"], [f"c{s}"]),
            helper.make_node("Reshape", [f"c{s}", "shape_b85"], [f"r{s}"]),
        ]
        level_outputs.append(f"r{s}")
    inits += [nh.from_array(np.array([1, 85, -1], np.int64), "shape_b85"),
              nh.from_array(np.array([4, 81], np.int64), "split_sizes")]
    nodes += [
        helper.make_node("Concat", level_outputs, ["cat"], axis=2),          # 1x85x8400
        helper.make_node("Transpose", ["cat"], ["rows"], perm=[0, 2, 1]),    # 1x8400x85
        helper.make_node("Split", ["rows", "split_sizes"], ["reg", "logits"], axis=2),
        helper.make_node("Sigmoid", ["logits"], ["probs"]),
        helper.make_node("Concat", ["reg", "probs"], ["output"], axis=2),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])],
        inits)
    return graph


def _tiny_pose(rng: np.random.Generator):
    _, TensorProto, helper, nh = _onnx()
    k, nx, ny, feat = 133, 576, 768, 3 * 4 * 3
    inits = [
        nh.from_array((rng.standard_normal((feat, k)) * 0.3).astype(np.float32), "wx"),
        nh.from_array((rng.standard_normal((feat, k)) * 0.3).astype(np.float32), "wy"),
        nh.from_array((rng.standard_normal((feat, k)) * 0.3).astype(np.float32), "wc"),
        nh.from_array(rng.uniform(-1.5, 1.5, k).astype(np.float32), "bc"),
        nh.from_array(((np.arange(nx) + 0.5) / nx).astype(np.float32), "bins_x"),
        nh.from_array(((np.arange(ny) + 0.5) / ny).astype(np.float32), "bins_y"),
        nh.from_array(np.array([-400.0], np.float32), "sharp"),
        nh.from_array(np.array([2], np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[96, 96], strides=[96, 96]),  # Nx3x4x3
        helper.make_node("Flatten", ["pooled"], ["f"], axis=1),                                         # Nx36
    ]
    for c in ("x", "y"):
        nodes += [
            helper.make_node("MatMul", ["f", f"w{c}"], [f"m{c}"]),
            helper.make_node("Sigmoid", [f"m{c}"], [f"pos{c}"]),                       # N x 133 in (0, 1)
            helper.make_node("Unsqueeze", [f"pos{c}", "axis2"], [f"u{c}"]),             # N x 133 x 1
            helper.make_node("Sub", [f"bins_{c}", f"u{c}"], [f"d{c}"]),                # N x 133 x bins
            helper.make_node("Mul", [f"d{c}", f"d{c}"], [f"dd{c}"]),
            helper.make_node("Mul", [f"dd{c}", "sharp"], [f"e{c}"]),
            helper.make_node("Exp", [f"e{c}"], [f"g{c}"]),
            helper.make_node("Mul", [f"g{c}", "conf3"], [f"simcc_{c}"]),
        ]
    nodes += [
        helper.make_node("MatMul", ["f", "wc"], ["mc"]),
        helper.make_node("Add", ["mc", "bc"], ["lc"]),
        helper.make_node("Sigmoid", ["lc"], ["conf"]),
        helper.make_node("Unsqueeze", ["conf", "axis2"], ["conf3"]),
    ]
    # topological order: the confidence branch first
    nodes = nodes[:2] + nodes[-4:] + nodes[2:-4]
    graph = helper.make_graph(
        nodes, "tiny_dwpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 384, 288])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, ["batch", k, nx]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, ["batch", k, ny])],
        inits)
    return graph


def _save(graph, path: Path) -> None:
    onnx, _, helper, _ = _onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="v2v-tiny")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)


def write_tiny_dwpose(folder) -> None:
    """Write ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` (tiny, deterministic) into ``folder``, and their
    TorchScript twins ``yolox_l.torchscript.pt`` and ``dw-ll_ucoco_384_bs5.torchscript.pt`` (the same
    functions of the same weights, for ``--pose-runtime torch``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    _save(_tiny_detector(rng), folder / DET_NAME)
    _save(_tiny_pose(rng), folder / POSE_NAME)
    write_tiny_dwpose_torchscript(folder)


# ------------------------------------------------------------------------------- DWPose (TorchScript twins)

TORCH_DET_NAME, TORCH_POSE_NAME = "yolox_l.torchscript.pt", "dw-ll_ucoco_384_bs5.torchscript.pt"
TORCH_POSE_BATCH = 5  # traced for batches of 5, like hr16/DWPose-TorchScript-BatchSize5: other batches fail


def _initializers(path: Path) -> dict[str, np.ndarray]:
    onnx, _, _, nh = _onnx()
    return {t.name: nh.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _torch_twins(w_det: dict, w_pose: dict):
    """torch modules computing what the tiny ONNX graphs compute, from their weights."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32))

    class TinyDetector(nn.Module):
        def __init__(self):
            super().__init__()
            self.strides = (8, 16, 32)
            for s in self.strides:
                self.register_parameter(f"w{s}", nn.Parameter(t(w_det[f"w{s}"]), requires_grad=False))
                self.register_parameter(f"b{s}", nn.Parameter(t(w_det[f"b{s}"]), requires_grad=False))

        def forward(self, images):
            levels = []
            for s in self.strides:
                c = F.conv2d(F.avg_pool2d(images, s, s), getattr(self, f"w{s}"), getattr(self, f"b{s}"))
                levels.append(c.reshape(1, 85, -1))
            rows = torch.cat(levels, 2).transpose(1, 2)                 # 1 x 8400 x 85
            return torch.cat([rows[..., :4], torch.sigmoid(rows[..., 4:])], 2)

    class TinyPose(nn.Module):
        def __init__(self):
            super().__init__()
            for k in ("wx", "wy", "wc", "bc"):
                self.register_parameter(k, nn.Parameter(t(w_pose[k]), requires_grad=False))
            for k in ("bins_x", "bins_y", "sharp"):
                self.register_buffer(k, t(w_pose[k]))

        def forward(self, x):
            f = F.avg_pool2d(x, 96, 96).reshape(TORCH_POSE_BATCH, -1)  # the batch is fixed, as in the real export
            conf = torch.sigmoid(f @ self.wc + self.bc).unsqueeze(2)
            out = []
            for w, bins in ((self.wx, self.bins_x), (self.wy, self.bins_y)):
                d = bins - torch.sigmoid(f @ w).unsqueeze(2)
                out.append(torch.exp(d * d * self.sharp) * conf)
            return out[0], out[1]

    return TinyDetector().eval(), TinyPose().eval()


def write_tiny_dwpose_torchscript(folder) -> None:
    """Trace the tiny ONNX models' torch twins into ``yolox_l.torchscript.pt`` (batch 1) and
    ``dw-ll_ucoco_384_bs5.torchscript.pt`` (batch 5) in ``folder``, which must hold the ONNX files."""
    import torch

    folder = Path(folder)
    det, pose = _torch_twins(_initializers(folder / DET_NAME), _initializers(folder / POSE_NAME))
    for net, example, name in ((det, torch.zeros(1, 3, 640, 640), TORCH_DET_NAME),
                               (pose, torch.zeros(TORCH_POSE_BATCH, 3, 384, 288), TORCH_POSE_NAME)):
        with torch.no_grad(), warnings.catch_warnings():  # TorchScript is deprecated; the real files are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(net, example, check_trace=False)
            path = folder / name
            tmp = path.with_name(path.name + ".tmp")
            traced.save(str(tmp))
        tmp.replace(path)


# ------------------------------------------------------------------------------------------ OpenPose (.pth)

OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")


def _tiny_state(net, rng: np.random.Generator, strip_prefix: bool) -> dict:
    """A state dict with the network's keys and shapes whose tensors are small random per-output-channel values
    broadcast (stride 0) over the other dimensions: torch.save stores only the small base, so a file is a few
    KB instead of 50-200 MB, and it loads through the real loader (load_state_dict copies the broadcast)."""
    import torch

    sd = {}
    for k, v in net.state_dict().items():
        out = v.shape[0] if v.ndim else 1
        fan_in = int(np.prod(v.shape[1:])) if v.ndim > 1 else 1
        base = rng.standard_normal(out).astype(np.float32) * (1.0 / np.sqrt(fan_in) if v.ndim > 1 else 0.1)
        t = torch.from_numpy(base).reshape((out,) + (1,) * (v.ndim - 1)) if v.ndim else torch.tensor(base[0])
        sd[(".".join(k.split(".")[1:]) if strip_prefix else k)] = t.expand(v.shape) if v.ndim else t
    return sd


def write_tiny_openpose(folder) -> None:
    """Write ``body_pose_model.pth``, ``hand_pose_model.pth``, ``facenet.pth`` (tiny files, deterministic, the
    real keys and shapes of controlnet_aux's networks, in lllyasviel/Annotators' layout: body/hand keys without
    the block prefix, as controlnet_aux's ``util.transfer`` expects; face keys as ``FaceNet.state_dict()``)."""
    import torch

    from ..pose.openpose import controlnet_aux_open_pose

    m = controlnet_aux_open_pose()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED + 1)
    for name, net, strip in ((OPENPOSE_FILES[0], m.model.bodypose_model(), True),
                             (OPENPOSE_FILES[1], m.model.handpose_model(), True),
                             (OPENPOSE_FILES[2], m.face.FaceNet(), False)):
        path = folder / name
        tmp = path.with_name(path.name + ".tmp")
        torch.save(_tiny_state(net, rng, strip), str(tmp))
        tmp.replace(path)
