"""Pure window planning and fusion weights for sampling long videos with a motion module of limited context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def plan_loop_windows(num_frames: int, context: int = 16, overlap: int = 4) -> list[tuple[int, ...]]:
    """Windows for a closed loop: like ``plan_windows``, but the video wraps around, so the last windows take
    frames from the start and the end flows into the beginning (for seamless looping GIFs and clips).

    Windows start ``context - overlap`` frames apart, ``ceil(num_frames / stride)`` of them, each ``context``
    frames long taken modulo ``num_frames``; every pair of neighbours, the last and the first included, shares at
    least ``overlap`` frames. A video no longer than ``context`` is one plain window (nothing to wrap).
    """
    plan_windows(num_frames, context, overlap)  # the same argument checks
    if num_frames <= context:
        return [tuple(range(num_frames))]
    stride = context - overlap
    count = -(-num_frames // stride)
    return [tuple((k * stride + i) % num_frames for i in range(context)) for k in range(count)]


@dataclass(frozen=True)
class Segment:
    """Frames that go through the whole UNet (spatial layers and ControlNet) together, once per step.

    ``frames``: video frame indices in the order the motion module sees them. ``windows``: each motion window
    as positions into ``frames``; the motion modules attend within each window and fuse the windows' outputs.
    """

    frames: tuple[int, ...]
    windows: tuple[tuple[int, ...], ...]


def plan_segments(windows: Sequence[Sequence[int]], budget: int) -> list[Segment]:
    """Group consecutive motion windows into segments of at most ``budget`` frames (at least one window each).

    Inside a segment every frame's spatial work is done once per step and the windows meet only in the motion
    modules; neighbouring segments share the frames of the windows where they meet (``overlap`` frames with the
    default plan), whose predictions are fused. ``budget`` >= the longest window. The grouping is the one with
    the fewest frames in all (the fewest spatial passes), then the fewest segments: balanced, so a short tail
    never gets a segment of its own when moving a window over costs less. With one window per segment this is
    whole-UNet context windows; with one segment for the whole video, views inside the motion modules only.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be an integer, not {budget!r}")
    windows = [tuple(int(i) for i in w) for w in windows]
    if not windows or any(not w for w in windows):
        raise ValueError("there must be at least one window and no empty window")
    longest = max(len(set(w)) for w in windows)
    if budget < longest:
        raise ValueError(f"the frame budget ({budget}) must hold at least one window ({longest} frames)")
    # best[j]: (frames, segments) of the best grouping of windows[:j]; a segment is windows[i:j]
    inf = (float("inf"), 0)
    best, cut = [(0, 0)] + [inf] * len(windows), [0] * (len(windows) + 1)
    for j in range(1, len(windows) + 1):
        union: set[int] = set()
        for i in range(j - 1, -1, -1):  # grow the segment ending at window j-1 backwards while it fits
            union.update(windows[i])
            if len(union) > budget:
                break
            cand = (best[i][0] + len(union), best[i][1] + 1)
            if cand < best[j]:
                best[j], cut[j] = cand, i
    bounds, j = [], len(windows)
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    segments = []
    for i, j in reversed(bounds):
        frames: dict[int, int] = {}  # frame -> position, in order of first appearance
        for w in windows[i:j]:
            for f in w:
                frames.setdefault(f, len(frames))
        segments.append(_segment(frames, windows[i:j]))
    return segments


def plan_video(num_frames: int, context: int, overlap: int, budget: int, loop: bool = False
               ) -> tuple[list[tuple[int, ...]], list[Segment]]:
    """The sampler's whole plan for a video: its motion windows (``context`` and ``overlap`` cut down to what
    the video holds; wrapping around with ``loop``) and their segments within ``budget`` frames."""
    ctx = min(context, num_frames)
    ovl = min(overlap, ctx - 1)
    if loop:
        windows = plan_loop_windows(num_frames, ctx, ovl)
    else:
        windows = [tuple(w) for w in plan_windows(num_frames, ctx, ovl)]
    return windows, plan_segments(windows, budget)


def _segment(frames: dict[int, int], group: list[tuple[int, ...]]) -> Segment:
    return Segment(tuple(frames), tuple(tuple(frames[i] for i in w) for w in group))


def segment_weights(segment: Segment, kind: str = "pyramid") -> tuple[np.ndarray, list[np.ndarray]]:
    """Fusion weights of one segment: (per-frame total weight, each window's weights normalised per frame).

    The first is the segment's say for each of its frames when neighbouring segments' predictions are fused (the
    sum of the fusion weights of its windows that cover the frame); the second gives, per window, the share of
    each of its frames in the motion modules' fused output (shares of the windows covering a frame sum to 1).
    """
    total = np.zeros(len(segment.frames), dtype=np.float64)
    raw = [fusion_weights(len(w), kind).astype(np.float64) for w in segment.windows]
    for w, r in zip(segment.windows, raw):
        np.add.at(total, list(w), r)
    if (total <= 0).any():
        raise ValueError("every frame of a segment must be in one of its windows")
    shares = [(r / total[list(w)]).astype(np.float32) for w, r in zip(segment.windows, raw)]
    return total.astype(np.float32), shares


def sampling_order(segments: Sequence[Segment], steps: int, wavefront: bool = True) -> list[tuple[int, int]]:
    """The order in which (step, segment) passes run: every segment once per step, the segments of a step in
    their order (so predictions meeting on a frame are summed in the same order whatever this returns).

    A pass (s, k) needs every frame of segment k stepped s times, that is step s - 1 done by every segment that
    shares a frame with k. ``wavefront=False``: step by step (all segments of step 0, then of step 1...).
    ``wavefront=True``: the pass of the highest step that may run, so the steps sweep along the video one behind
    the other: while later segments still wait for their first step (and their frames' poses), earlier ones go
    on, and the first frames are final after (steps - 1)(steps + 2) / 2 + 1 passes where segments meet only
    their neighbours (10 for 4 steps), instead of after all but the last step's worth. The result
    is the same in either order (each pass sees the same inputs). With loop windows (the last segment shares
    frames with the first) the wavefront orders the passes step by step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    n = len(segments)
    if not wavefront:
        return [(s, k) for s in range(steps) for k in range(n)]
    frames = [set(seg.frames) for seg in segments]
    # the last segment sharing a frame with segment k (itself at least): step s of k waits for step s - 1 of it
    reach = [max(j for j in range(n) if j == k or frames[j] & frames[k]) for k in range(n)]
    nxt = [0] * steps  # the next segment of each step
    order: list[tuple[int, int]] = []
    while len(order) < steps * n:
        for s in range(steps - 1, -1, -1):
            k = nxt[s]
            if k < n and (s == 0 or nxt[s - 1] > reach[k]):
                order.append((s, k))
                nxt[s] += 1
                break
        else:  # cannot happen: step 0 can always go on until it is done
            raise AssertionError("no pass can run")
    return order


def spatial_passes(segments: Sequence[Segment], num_frames: int) -> float:
    """Spatial frame-passes per output frame per step: how often each frame's ResNets, spatial attention and
    ControlNet run, on average (1.0 = once; whole-UNet windows of 16 overlapping by 4 give about 1.33)."""
    return sum(len(s.frames) for s in segments) / num_frames


# Activation memory of one frame in the UNet + ControlNet at 512x512 in float16 without CFG (measured: see
# BENCHMARKS.md); it scales with the latent pixels, the bytes per value and the CFG halves.
BYTES_PER_FRAME_512_FP16 = 90 * 2**20
DEFAULT_FRAME_BUDGET = 64  # frames per segment when memory allows: spatial passes <= 1.07 at the defaults


def auto_frame_budget(free_bytes: int, height: int, width: int, *, dtype_bytes: int = 2, cfg: bool = False,
                      context: int = 16, cap: int = DEFAULT_FRAME_BUDGET, fraction: float = 0.7) -> int:
    """The frames per segment that fit in ``fraction`` of ``free_bytes`` (never below ``context``, never above
    ``cap``): a fixed cap keeps peak memory flat from short clips to long ones."""
    per_frame = BYTES_PER_FRAME_512_FP16 * (height * width) / (512 * 512) * (dtype_bytes / 2) * (2 if cfg else 1)
    fits = int(fraction * max(free_bytes, 0) // max(per_frame, 1))
    return int(max(context, min(cap, fits)))


def prompt_schedule(keyframes: Sequence[tuple[int, str]], num_frames: int
                    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Prompt travel: per frame, the two keyframe prompts it lies between and how far along it is.

    ``keyframes``: (frame, prompt) pairs, frames strictly increasing from 0. Returns the distinct prompts, and
    per frame the index of the prompt before, the one after, and the blend (0 = all before, 1 = all after):
    frames before the first keyframe or after the last hold that prompt; in between, the blend is linear.
    """
    keys = [(int(f), str(p)) for f, p in keyframes]
    if not keys:
        raise ValueError("prompt travel needs at least one keyframe")
    frames_ = [f for f, _ in keys]
    if frames_[0] != 0:
        raise ValueError(f"the first prompt keyframe must be at frame 0, not {frames_[0]}")
    if any(b <= a for a, b in zip(frames_, frames_[1:])):
        raise ValueError(f"prompt keyframes must be in increasing frame order, got {frames_}")
    prompts = list(dict.fromkeys(p for _, p in keys))
    pid = [prompts.index(p) for _, p in keys]
    lo = np.zeros(num_frames, dtype=np.int64)
    hi = np.zeros(num_frames, dtype=np.int64)
    blend = np.zeros(num_frames, dtype=np.float32)
    for i in range(num_frames):
        k = int(np.searchsorted(frames_, i, side="right")) - 1  # the last keyframe at or before i
        lo[i] = pid[k]
        if k + 1 < len(keys):
            hi[i] = pid[k + 1]
            blend[i] = (i - frames_[k]) / (frames_[k + 1] - frames_[k])
        else:
            hi[i] = pid[k]
    return prompts, lo, hi, blend


def control_scales(steps: int, start: float = 0.0, end: float = 1.0) -> list[float]:
    """Per denoising step, 1.0 where the ControlNet acts and 0.0 where it does not, as diffusers' pipelines
    decide with ``control_guidance_start/end``: step i of n acts unless i/n < start or (i+1)/n > end."""
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"control start/end must satisfy 0 <= start < end <= 1, got {start}, {end}")
    return [1.0 - float(i / steps < start or (i + 1) / steps > end) for i in range(steps)]
