"""Temporal smoothing of keypoints: people tracked across frames, a One Euro filter per point.

:func:`smooth_poses` is a pure function over a list of :class:`FramePose` (and, optionally, each frame's time):

* **Tracking.** People are matched to tracks frame by frame (Hungarian assignment on the mean distance between
  a track's *predicted* body points, position + velocity x elapsed time, and a detection's body points, relative to
  the person's size), so two dancers who cross keep their own filters, and the output lists each frame's people
  in track order (person 0 stays person 0). A detection matching no track (cost > 1 person size) starts a track;
  a track unseen for longer than ``max_gap`` seconds ends.
* **Filtering.** One Euro filter (Casiez et al. 2012) per point, in canvas units (coordinates / max(w, h)):
  the cut-off frequency rises with the point's speed (``min_cutoff + beta * speed``), so jitter on a still or
  slow point is removed while a fast limb is followed with little lag.
* **Missing points** (confidence <= ``threshold`` or a missing part) are passed through unchanged, never pulled
  towards (0, 0) or towards an old position; the filter state of the point is kept for a short gap (``max_gap``)
  so a point that flickers out for a frame continues smoothly, and restarts from the new detection after that.
  Confidences are never changed.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from .keypoints import N_BODY, N_FACE, N_HAND, FramePose, Person

_SLICES = {"body": slice(0, N_BODY), "hand_left": slice(N_BODY, N_BODY + N_HAND),
           "hand_right": slice(N_BODY + N_HAND, N_BODY + 2 * N_HAND),
           "face": slice(N_BODY + 2 * N_HAND, N_BODY + 2 * N_HAND + N_FACE)}
_N = N_BODY + 2 * N_HAND + N_FACE
DEFAULT_FPS = 30.0      # frame spacing assumed when no times are given
D_CUTOFF = 1.0          # Hz, the derivative's own low-pass
MATCH_LIMIT = 1.0       # a detection further than this (in person sizes) from every track starts a new track


def filter_params(strength: float) -> tuple[float, float]:
    """``(min_cutoff Hz, beta)`` for a smoothing strength in (0, 1]: 0.25 -> 3.2 Hz, 0.5 -> 1 Hz, 1 -> 0.1 Hz."""
    s = float(min(max(strength, 1e-6), 1.0))
    return 10.0 ** (1.0 - 2.0 * s), 20.0


def _alpha(te: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / te)


def _stack(p: Person) -> np.ndarray:
    """The person's points as one ``(130, 3)`` array; a missing part is all zeros."""
    out = np.zeros((_N, 3), np.float64)
    for name, sl in _SLICES.items():
        a = getattr(p, name)
        if a is not None:
            out[sl] = a
    return out


class _Track:
    def __init__(self, tid: int):
        self.id = tid
        self.x = np.zeros((_N, 2))       # filtered position (canvas units)
        self.dx = np.zeros((_N, 2))      # filtered velocity (canvas units / s)
        self.t = np.full(_N, -np.inf)    # when each point was last seen
        self.seen = -np.inf              # when the person was last seen
        self.size = 0.1                  # body extent, canvas units

    def predict_body(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        b = slice(0, N_BODY)
        ok = np.isfinite(self.t[b])
        dt = np.where(ok, t - self.t[b], 0.0)[:, None]
        return self.x[b] + self.dx[b] * dt, ok


def _match_cost(track: _Track, body: np.ndarray, present: np.ndarray, t: float) -> float:
    pred, ok = track.predict_body(t)
    both = ok & present
    if not np.any(both):
        if not np.any(ok) or not np.any(present):
            return math.inf
        d = float(np.linalg.norm(pred[ok].mean(0) - body[present].mean(0)))   # centroids
    else:
        d = float(np.linalg.norm(pred[both] - body[both], axis=1).mean())
    return d / max(track.size, 0.02)


def _assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """(row, col) pairs minimising the total cost; pairs above MATCH_LIMIT dropped."""
    if cost.size == 0:
        return []
    big = np.where(np.isfinite(cost), cost, 1e9)
    try:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(big)
        pairs = list(zip(rows.tolist(), cols.tolist()))
    except ImportError:  # greedy: cheapest pair first
        pairs, used_r, used_c = [], set(), set()
        for flat in np.argsort(big, axis=None, kind="stable"):
            r, c = divmod(int(flat), big.shape[1])
            if r not in used_r and c not in used_c:
                pairs.append((r, c))
                used_r.add(r)
                used_c.add(c)
    return [(r, c) for r, c in pairs if cost[r, c] <= MATCH_LIMIT]


class PoseSmoother:
    """:func:`smooth_poses` one frame at a time: ``smoother(frame_pose, t)`` returns that frame smoothed.

    Tracking and filtering look only at earlier frames, so frame ``i``'s result is final as soon as it is
    pushed: the pose stage hands smoothed frames to the sampler while later frames are still being detected.
    ``strength`` must be > 0 (0 means no smoothing: skip the smoother). Arguments as :func:`smooth_poses`.
    """

    def __init__(self, *, strength: float = 0.5, threshold: float = 0.3, max_gap: float = 0.25,
                 min_cutoff: float | None = None, beta: float | None = None):
        if strength <= 0:
            raise ValueError("PoseSmoother needs a strength > 0 (0: no smoothing)")
        mc, b = filter_params(strength)
        self.min_cutoff = mc if min_cutoff is None else float(min_cutoff)
        self.beta = b if beta is None else float(beta)
        self.threshold, self.max_gap = threshold, max_gap
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.prev_t: float | None = None

    def __call__(self, fp: FramePose, t: float | Fraction) -> FramePose:
        t = float(t)
        if self.prev_t is not None and t <= self.prev_t:  # equal or backwards times: fall back to a nominal spacing
            t = self.prev_t + 1.0 / DEFAULT_FPS
        self.prev_t = t
        mc, b, threshold, max_gap = self.min_cutoff, self.beta, self.threshold, self.max_gap
        scale = float(max(fp.width, fp.height, 1))
        raw = [_stack(p) for p in fp.people]
        pts = [r[:, :2] / scale for r in raw]
        present = [r[:, 2] > threshold for r in raw]
        self.tracks = tracks = [tr for tr in self.tracks if t - tr.seen <= max_gap + 1e-9]
        cost = np.array([[_match_cost(tr, pts[j][:N_BODY], present[j][:N_BODY], t) for j in range(len(raw))]
                         for tr in tracks]).reshape(len(tracks), len(raw))
        owner: dict[int, _Track] = {j: tracks[i] for i, j in _assign(cost)}
        for j in range(len(raw)):
            if j not in owner:
                owner[j] = _Track(self.next_id)
                self.next_id += 1
                tracks.append(owner[j])
        smoothed: list[tuple[int, Person]] = []
        for j, person in enumerate(fp.people):
            tr, obs, ok = owner[j], pts[j], present[j]
            gap = t - tr.t
            cont = ok & (gap <= max_gap + 1e-9)      # points that continue a recent state
            fresh = ok & ~cont
            if np.any(cont):
                te = gap[cont][:, None]
                dx = (obs[cont] - tr.x[cont]) / te
                tr.dx[cont] += _alpha(te, np.full_like(te, D_CUTOFF)) * (dx - tr.dx[cont])
                cutoff = mc + b * np.linalg.norm(tr.dx[cont], axis=1, keepdims=True)
                tr.x[cont] += _alpha(te, cutoff) * (obs[cont] - tr.x[cont])
            tr.x[fresh], tr.dx[fresh] = obs[fresh], 0.0
            tr.t[ok] = t
            if np.any(ok[:N_BODY]):
                tr.seen = t
                body = obs[:N_BODY][ok[:N_BODY]]
                tr.size = float(max(np.ptp(body[:, 0]), np.ptp(body[:, 1]), 0.02)) if len(body) > 1 else tr.size
            elif np.any(ok):
                tr.seen = t
            res = raw[j].copy()
            res[ok, :2] = tr.x[ok] * scale
            parts = {name: (None if getattr(person, name) is None else res[sl].astype(np.float32))
                     for name, sl in _SLICES.items()}
            smoothed.append((tr.id, Person(**parts)))
        smoothed.sort(key=lambda x: x[0])
        return FramePose([p for _, p in smoothed], fp.width, fp.height)


def smooth_poses(poses: Sequence[FramePose], times: Sequence[float | Fraction] | None = None, *,
                 strength: float = 0.5, threshold: float = 0.3, max_gap: float = 0.25,
                 min_cutoff: float | None = None, beta: float | None = None) -> list[FramePose]:
    """Smoothed copies of ``poses`` (same canvases, same confidences, people in track order).

    ``times`` are each frame's time in seconds (default: ``i / 30``). ``strength`` 0 returns unchanged copies;
    ``min_cutoff``/``beta`` override the values :func:`filter_params` derives from it. Points with confidence
    ``<= threshold`` count as missing. Frame ``i``'s result depends on frames ``0..i`` only (see
    :class:`PoseSmoother`, which this runs).
    """
    if times is None:
        ts = [i / DEFAULT_FPS for i in range(len(poses))]
    else:
        if len(times) != len(poses):
            raise ValueError(f"{len(times)} times for {len(poses)} frames")
        ts = [float(t) for t in times]
    if strength <= 0:
        return [FramePose([p.transformed(1.0, 1.0) for p in fp.people], fp.width, fp.height) for fp in poses]
    smoother = PoseSmoother(strength=strength, threshold=threshold, max_gap=max_gap, min_cutoff=min_cutoff,
                            beta=beta)
    return [smoother(fp, t) for fp, t in zip(poses, ts)]


def jitter(poses: Sequence[FramePose], threshold: float = 0.3) -> float:
    """Mean absolute second difference of the present body points of person 0 (pixels): a jitter measure."""
    tracks = []
    for fp in poses:
        tracks.append(fp.people[0].body if fp.people else None)
    acc = []
    for a, b, c in zip(tracks, tracks[1:], tracks[2:]):
        if a is None or b is None or c is None:
            continue
        ok = (a[:, 2] > threshold) & (b[:, 2] > threshold) & (c[:, 2] > threshold)
        acc.append(np.abs(a[ok, :2] - 2 * b[ok, :2] + c[ok, :2]).ravel())
    return float(np.concatenate(acc).mean()) if acc else 0.0
