"""The stages of a restyle that run alongside each other, each an object the orchestrator (v2v/pipeline.py)
wires together:

    pose.py      PoseStage: decode -> keypoints -> smoothed poses, on the v2v-pose thread, streamed (PoseStream)
    generate.py  GenerateStage: the sampler over the poses as they come; ControlMaps draws the control maps
    encode.py    EncodeStage: finished latents VAE-decoded and written (OutputFiles: the temp files and record)
"""
