"""Which device and dtype a run uses: ``--device auto`` and ``--dtype auto`` made concrete, in one place."""

from __future__ import annotations

from .errors import InvalidOptions


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a CUDA GPU is visible, else "cpu"; a CUDA device that is not there is InvalidOptions."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidOptions(f"--device {device}: no CUDA GPU is visible: use --device cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise InvalidOptions(f"--device {device}: this machine has {n} CUDA GPU{'s' if n != 1 else ''} "
                             f"(cuda:0{f' to cuda:{n - 1}' if n > 1 else ''}): choose one of them")
    return device


def resolve_dtype(dtype: str, device: str):
    """"auto" -> float16 on CUDA, float32 elsewhere; else the torch dtype of that name."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def concrete_pose_runtime(o, device: str, pose_model: str):
    """The options ``o`` with DWPose's runtime "auto" made concrete for ``device`` and the pose model ``pose_model``
    (so the keypoint cache, the model files and the settings record name what runs, and a rerun runs the same)."""
    if o.pose != "dwpose" or o.pose_runtime != "auto":
        return o
    from .pose.dwpose import resolve_runtime

    return o.replace(pose_runtime=resolve_runtime("auto", device, pose_model, offload=o.offload))
