"""The plan of a run (v2v/plan.py) and the device it runs on (v2v/device.py): worked out before any work, from the
probed input and the options; no model is loaded here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import v2v
from v2v.errors import InvalidOptions, OutputError
from v2v.media.probe import probe
from v2v.media.timing import processing_size
from v2v.plan import RunPlan, check_paths, plan_input, plan_restyle
from v2v.tiny import tiny_model_paths

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "dance.mp4"


def options(**kw) -> v2v.RestyleOptions:
    return v2v.RestyleOptions(**{"prompt": "x", "models": "tiny", "device": "cpu", **kw}).validate()


def test_the_plan_holds_what_the_later_steps_take(tmp_path, tiny_models):
    info = probe(SAMPLE)
    plan = plan_restyle(options(size=64, max_frames=5), info, tmp_path / "out.webm")
    assert isinstance(plan, RunPlan) and plan.input == SAMPLE and plan.info == info
    assert (plan.width, plan.height) == processing_size(info.display_width, info.display_height, 64)
    assert plan.out_size == (plan.width, plan.height)  # not --full-size
    assert plan.output == (tmp_path / "out.webm").resolve() and plan.format.name == "vp9"
    assert plan.settings_file == (tmp_path / "out.json").resolve()
    assert plan.device == "cpu" and str(plan.dtype) == "torch.float32"
    assert plan.options.pose_runtime == "onnx"  # "auto" made concrete for the device
    assert plan.models.base == str(tiny_model_paths()["base"])
    assert (plan.pose_video, plan.compare) == (None, None)
    frames = list(plan.decoder())
    assert len(frames) == 5 and frames[0].image.shape == (plan.height, plan.width, 3)


def test_full_size_compare_and_keep_pose_paths(tmp_path, tiny_models):
    info = probe(SAMPLE)
    plan = plan_restyle(options(full_size=True, compare=True, keep_pose=tmp_path / "p.gif"), info,
                        tmp_path / "o.mp4")
    assert plan.out_size == (info.display_width - info.display_width % 2, info.display_height - info.display_height % 2)
    assert plan.compare == (tmp_path / "o.compare.mp4").resolve()
    assert plan.pose_video == (tmp_path / "p.gif").resolve() and plan.pose_format.name == "gif"
    frames = plan_restyle(options(compare=True), info, str(tmp_path / "frames") + "/")
    assert frames.format.name == "png" and frames.compare == (tmp_path / "frames.compare.mp4").resolve()


@pytest.mark.parametrize("kw,output,error,needle", [
    (dict(keep_pose="SAME"), "o.mp4", OutputError, "--keep-pose must differ"),
    (dict(gif_loop=2), "o.mp4", InvalidOptions, "--gif-loop applies to GIF output only"),
    (dict(crf=60), "o.mp4", InvalidOptions, "--crf for H.264 must be between 0 and 51"),
    (dict(), "o.txt", OutputError, "not a supported output"),
])
def test_output_problems_are_found_before_any_work(tmp_path, tiny_models, kw, output, error, needle):
    if kw.get("keep_pose") == "SAME":
        kw = dict(keep_pose=tmp_path / output)
    with pytest.raises(error, match=needle):
        plan_restyle(options(**kw), probe(SAMPLE), tmp_path / output)
    assert list(tmp_path.iterdir()) == []


def test_the_input_plan_serves_the_pose_command(tiny_models):
    info = probe(SAMPLE)
    plan = plan_input(options(size=96, pose="openpose"), info)
    assert (plan.width, plan.height) == processing_size(info.display_width, info.display_height, 96)
    assert plan.models.pose_model.endswith("openpose")
    assert plan.options.pose_runtime == "auto"  # OpenPose has no runtime to choose
    changed = plan.with_options(frame_budget=32)
    assert changed.options.frame_budget == 32 and plan.options.frame_budget is None
    assert dataclasses.replace(changed, device="cuda:1").device == "cuda:1"


@pytest.mark.parametrize("bad", [5, None, b"in.mp4", ""])
def test_path_arguments_are_paths(bad):
    with pytest.raises(InvalidOptions, match="must be a path"):
        check_paths(input=bad)


def test_a_gpu_index_the_machine_lacks_is_refused_before_any_work(monkeypatch):
    """--device cuda:N names a GPU that must exist (an index past the last one fails in one line up front)."""
    import torch

    from v2v.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cuda") == "cuda"
    with pytest.raises(InvalidOptions) as e:
        resolve_device("cuda:2")
    assert "2 CUDA GPUs (cuda:0 to cuda:1)" in str(e.value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidOptions) as e:
        resolve_device("cuda:1")
    assert "1 CUDA GPU (cuda:0)" in str(e.value)


