"""v2v: restyle the people in a video, keeping their motion, the timing and the audio.

    import v2v
    result = v2v.restyle("dance.mp4", prompt="claymation astronaut")          # -> dance.restyled.mp4
    r = v2v.Restyler(models="tiny"); r.restyle("a.mp4", prompt="x"); r.restyle("b.mp4", prompt="y")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (ClusterError, EmptyInput, InputError, InputNotFound, InputNotReadable,  # noqa: E402
                     Interrupted, InvalidOptions, ModelLoadError, ModelNotFound, NoVideoStream, OutOfMemory,
                     OutputError, V2VError, VideoDecodeError)
from .options import RestyleOptions  # noqa: E402

__all__ = ["restyle", "Restyler", "RestyleOptions", "RestyleResult", "V2VError", "InvalidOptions", "InputError",
           "InputNotFound", "InputNotReadable", "EmptyInput", "VideoDecodeError", "NoVideoStream", "OutputError",
           "ModelNotFound", "ModelLoadError", "OutOfMemory", "ClusterError", "Interrupted", "__version__"]


def __getattr__(name: str):  # the pipeline (and its heavy imports) loads on first use
    if name in ("restyle", "Restyler", "RestyleResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'v2v' has no attribute {name!r}")
