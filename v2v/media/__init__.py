"""The I/O side: a frame's way in and out.

    probe.py     what a video is (VideoInfo: size, rotation, frame rate, time base, audio)
    timing.py    pure maths: the processing size, resampling, every n-th, each output frame's time
    decode.py    the source's frames, RGB at the processing size, each with its exact time
    formats.py   the output formats (H.264, H.265, VP9, AV1, ProRes, GIF, PNG) and which one a path gets
    writers/     one writer interface and its implementations (video, audio, GIF, PNG, full size, compare)
    outputs.py   where outputs go: default names, checks before any work, temp file then rename
    pyav.py      what the PyAV users share (errors, swscale threads, the message for a failed write)
"""
