"""The models v2v uses by default: hub ids, downloaded to the Hugging Face cache on first use."""

DEFAULT_BASE = "emilianJR/epiCRealism"
DEFAULT_MOTION = "ByteDance/AnimateDiff-Lightning"
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_openpose"
DEFAULT_DWPOSE = "yzd-v/DWPose"
DEFAULT_OPENPOSE = "lllyasviel/Annotators"  # body_pose_model.pth, hand_pose_model.pth, facenet.pth
DEFAULT_TAESD = "madebyollin/taesd"  # --fast-decode: TAESD, a diffusers AutoencoderTiny
