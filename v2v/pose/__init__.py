"""Pose stage: keypoints and OpenPose JSON, control-map drawing, DWPose detection (onnxruntime)."""

from .dwpose import DWPose
from .keypoints import FramePose, Person, load_pose_json, poses_from_json, poses_to_json, save_pose_json
from .render import render_pose

__all__ = ["DWPose", "FramePose", "Person", "load_pose_json", "poses_from_json", "poses_to_json",
           "render_pose", "save_pose_json"]
