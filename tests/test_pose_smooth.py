"""Temporal keypoint smoothing: jitter reduced, fast motion followed, identities kept, missing points untouched."""

from __future__ import annotations

import numpy as np
import pytest

from v2v.pose.keypoints import FramePose, Person
from v2v.pose.smooth import jitter, smooth_poses

FPS = 24
BASE = np.stack([np.linspace(100, 300, 18), np.linspace(100, 400, 18), np.full(18, 0.9)], 1).astype(np.float32)


def trajectory(n, offset, noise=0.0, seed=0, hands=False):
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for i in range(n):
        b = BASE.copy()
        b[:, :2] += offset(i)
        truth.append(b.copy())
        b[:, :2] += rng.normal(0, noise, (18, 2))
        hand = np.concatenate([b[:1, :2] + rng.normal(0, 1, (21, 2)), np.full((21, 1), 0.8)], 1) if hands else None
        frames.append(FramePose([Person(b, hand_left=hand)], 512, 512))
    return frames, truth


def times(n):
    return [i / FPS for i in range(n)]


def mean_error(frames, truth):
    return float(np.mean([np.abs(f.people[0].body[:, :2] - t[:, :2]).mean() for f, t in zip(frames, truth)]))


def test_jitter_reduced_by_a_measured_factor_and_closer_to_truth():
    frames, truth = trajectory(96, lambda i: np.array([40 * np.sin(i / 15), 20 * np.cos(i / 20)]), noise=2.0)
    out = smooth_poses(frames, times(96))
    assert jitter(out) < jitter(frames) / 2.0            # measured: 3.9 -> 1.5 px
    assert mean_error(out, truth) < mean_error(frames, truth)
    # the input is not modified, confidences and shapes are kept
    assert np.all(frames[5].people[0].body[:, 2] == np.float32(0.9))
    assert np.all(out[5].people[0].body[:, 2] == np.float32(0.9))
    stronger = smooth_poses(frames, times(96), strength=0.9)
    assert jitter(stronger) < jitter(out)


def test_fast_linear_motion_tracked_with_small_lag():
    speed = 12.0                                          # px per frame: 288 px/s, across a 512 canvas in 1.8 s
    frames, truth = trajectory(48, lambda i: np.array([i * speed, 0.0]))
    out = smooth_poses(frames, times(48))
    lag = [t[0, 0] - f.people[0].body[0, 0] for f, t in zip(out, truth)]
    assert max(lag) < 0.6 * speed                         # measured 0.57 frame at the start from rest
    assert max(abs(v) for v in lag[10:]) < 0.4 * speed     # measured 0.35 frame once moving


def test_off_is_identity():
    frames, _ = trajectory(10, lambda i: np.array([i * 5.0, 0.0]), noise=3.0)
    out = smooth_poses(frames, times(10), strength=0)
    for a, b in zip(frames, out):
        np.testing.assert_array_equal(a.people[0].body, b.people[0].body)


def _dancer(x, y, arms_up):
    b = BASE.copy()
    b[:, 0] = b[:, 0] - 200 + x
    b[:, 1] = b[:, 1] - 250 + y
    if arms_up:
        b[4, 1] = b[7, 1] = y - 300                      # wrists far above the head: a signature
    return b


def test_two_people_crossing_keep_identities():
    n, rng = 40, np.random.default_rng(3)
    frames = []
    for i in range(n):
        a = _dancer(100 + i * 15, 300, True)             # left to right
        b = _dancer(700 - i * 15, 320, False)            # right to left: they cross at i = 20
        people = [Person(a), Person(b)]
        if rng.random() < 0.5:
            people.reverse()                             # the detector lists them in any order
        frames.append(FramePose(people, 800, 600))
    out = smooth_poses(frames, times(n))
    first_up = out[0].people[0].body[4, 1] < 100
    for f in out:
        assert len(f.people) == 2
        ups = [p.body[4, 1] < 100 for p in f.people]
        assert ups == [first_up, not first_up]           # person k stays the same dancer
    # and nobody's limbs are blended with the other's: the arms-up wrist stays far above
    up = 0 if first_up else 1
    assert max(f.people[up].body[4, 1] for f in out) < 50
    xs = [f.people[up].body[0, 0] for f in out]
    assert all(b > a for a, b in zip(xs, xs[1:]))        # keeps moving right, through the crossing


def test_missing_points_are_not_smeared():
    frames, truth = trajectory(30, lambda i: np.array([i * 4.0, 0.0]), hands=True)
    for i in (10, 11, 20):                               # the right wrist is lost for a while, point 0 once
        frames[i].people[0].body[4] = 0.0                # missing: x = y = confidence = 0
    frames[15].people[0].body[0, 2] = 0.1                # below the threshold
    frames[25].people = []                               # nobody in this frame
    out = smooth_poses(frames, times(30))
    for i in (10, 11, 20):
        np.testing.assert_array_equal(out[i].people[0].body[4], [0, 0, 0])
    assert out[15].people[0].body[0, 2] == np.float32(0.1)
    assert out[25].people == []
    # after the gap, the wrist continues near the truth, not dragged from (0, 0)
    for i in (12, 13, 21, 22):
        assert abs(out[i].people[0].body[4, 0] - truth[i][4, 0]) < 8
        assert abs(out[i].people[0].body[4, 1] - truth[i][4, 1]) < 1
    assert out[26].people[0].hand_left is not None and out[26].people[0].hand_right is None


def test_times_must_match():
    frames, _ = trajectory(3, lambda i: np.zeros(2))
    with pytest.raises(ValueError):
        smooth_poses(frames, [0.0, 0.1])


def test_frame_by_frame_equals_the_whole_sequence_and_ignores_later_frames():
    """The pose stage streams: frame i's smoothed pose must not depend on frames after i, and PoseSmoother fed
    one frame at a time gives exactly smooth_poses' result (two dancers crossing, one vanishing for a while)."""
    from v2v.pose.smooth import PoseSmoother

    a, _ = trajectory(60, lambda i: np.array([6.0 * i, 0.0]), noise=2.0, seed=1, hands=True)
    b, _ = trajectory(60, lambda i: np.array([360 - 6.0 * i, 10.0]), noise=2.0, seed=2)
    frames = [FramePose(fa.people + ([] if 20 <= i < 30 else fb.people), 512, 512)
              for i, (fa, fb) in enumerate(zip(a, b))]
    ts = times(60)
    whole = smooth_poses(frames, ts)
    prefix = smooth_poses(frames[:37], ts[:37])
    smoother = PoseSmoother()
    one_by_one = [smoother(f, t) for f, t in zip(frames, ts)]

    def same(x, y):
        return len(x.people) == len(y.people) and all(
            np.array_equal(p.body, q.body) and ((p.hand_left is None) == (q.hand_left is None))
            and (p.hand_left is None or np.array_equal(p.hand_left, q.hand_left)) for p, q in zip(x.people, y.people))

    assert all(same(x, y) for x, y in zip(whole, one_by_one))
    assert all(same(x, y) for x, y in zip(whole[:37], prefix))
    assert not same(whole[40], frames[40])  # it did smooth
    with pytest.raises(ValueError, match="strength"):
        PoseSmoother(strength=0)
