"""Pure window planning and fusion weights for sampling long videos with a motion module of limited context."""

from __future__ import annotations

import numpy as np

FUSION_KINDS = ("pyramid", "flat")


def plan_windows(num_frames: int, context: int = 16, overlap: int = 4) -> list[range]:
    """Overlapping windows of ``context`` frames that cover ``range(num_frames)``.

    The first window starts at 0, consecutive windows start ``context - overlap`` frames apart, and the last one
    is aligned to the end (so it may overlap its neighbour by more than ``overlap``). A video shorter than
    ``context`` is one window of ``num_frames`` frames.
    """
    for name, v in (("num_frames", num_frames), ("context", context), ("overlap", overlap)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, not {v!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, not {num_frames}")
    if context < 1:
        raise ValueError(f"context must be at least 1, not {context}")
    if not 0 <= overlap < context:
        raise ValueError(f"overlap must be in [0, context - 1] = [0, {context - 1}], not {overlap}")
    if num_frames <= context:
        return [range(0, num_frames)]
    stride = context - overlap
    starts = list(range(0, num_frames - context, stride))
    last = num_frames - context
    if not starts or starts[-1] != last:
        starts.append(last)
    return [range(s, s + context) for s in starts]


def fusion_weights(length: int, kind: str = "pyramid") -> np.ndarray:
    """Per-frame weights (float32, all > 0) for fusing a window's predictions with its neighbours'.

    ``pyramid``: 1, 2, ... up to the middle and back down (``min(i + 1, length - i)``), so frames near a window's
    edge defer to the window where they sit nearer the middle. ``flat``: all ones (plain averaging).
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive integer, not {length!r}")
    if kind == "flat":
        return np.ones(length, dtype=np.float32)
    if kind == "pyramid":
        i = np.arange(length)
        return np.minimum(i + 1, length - i).astype(np.float32)
    raise ValueError(f"fusion kind must be one of {', '.join(FUSION_KINDS)}, not {kind!r}")
