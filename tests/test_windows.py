import numpy as np
import pytest

from v2v.windows import fusion_weights, plan_windows


def check_plan(n, context, overlap):
    wins = plan_windows(n, context, overlap)
    assert wins[0].start == 0
    assert wins[-1].stop == n
    covered = np.zeros(n, dtype=int)
    for w in wins:
        assert w.step == 1
        assert 0 <= w.start < w.stop <= n
        assert len(w) == (context if n >= context else n)
        covered[w.start:w.stop] += 1
    assert (covered >= 1).all(), "every frame is covered"
    for a, b in zip(wins, wins[1:]):
        assert a.start < b.start, "windows move forward"
        assert a.stop - b.start >= overlap, "consecutive windows overlap by at least `overlap`"
        assert b.start <= a.stop, "no gap"
    return wins


@pytest.mark.parametrize("n", list(range(1, 80)) + [100, 257, 1000])
@pytest.mark.parametrize("context,overlap", [(16, 4), (16, 0), (16, 8), (16, 15), (8, 2), (1, 0), (32, 4), (2, 1)])
def test_plan_properties(n, context, overlap):
    wins = check_plan(n, context, overlap)
    if n > context:
        stride = context - overlap
        # all but the last window are exactly `stride` apart; the last is pulled back to the end
        assert [w.start for w in wins[:-1]] == list(range(0, stride * (len(wins) - 1), stride))
        assert len(wins) == -(-(n - context) // stride) + 1  # the fewest windows that cover n


def test_edge_cases():
    assert plan_windows(1) == [range(0, 1)]
    assert plan_windows(16) == [range(0, 16)]
    assert plan_windows(10) == [range(0, 10)]
    assert plan_windows(17) == [range(0, 16), range(1, 17)]
    assert plan_windows(33) == [range(0, 16), range(12, 28), range(17, 33)]
    assert plan_windows(28) == [range(0, 16), range(12, 28)]
    assert plan_windows(40, 16, 4) == [range(0, 16), range(12, 28), range(24, 40)]
    assert plan_windows(32, 16, 0) == [range(0, 16), range(16, 32)]
    assert plan_windows(33, 16, 0) == [range(0, 16), range(16, 32), range(17, 33)]


@pytest.mark.parametrize("args", [(0,), (-3,), (10, 0), (10, -1), (10, 16, 16), (10, 16, 17), (10, 16, -1),
                                  (2.5,), (10, 16.0), (True,), ("16",), (10, 16, None)])
def test_invalid_args(args):
    with pytest.raises(ValueError):
        plan_windows(*args)


def test_fusion_weights():
    np.testing.assert_array_equal(fusion_weights(1), [1])
    np.testing.assert_array_equal(fusion_weights(4), [1, 2, 2, 1])
    np.testing.assert_array_equal(fusion_weights(5), [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(fusion_weights(6, "flat"), np.ones(6))
    for n in range(1, 40):
        for kind in ("pyramid", "flat"):
            w = fusion_weights(n, kind)
            assert w.shape == (n,) and w.dtype == np.float32
            assert (w > 0).all()
            np.testing.assert_array_equal(w, w[::-1])  # symmetric
    w = fusion_weights(16)
    assert w.argmax() in (7, 8) and w.max() == 8


@pytest.mark.parametrize("args", [(0,), (-1,), (3, "gaussian"), (2.0,), (True,)])
def test_fusion_invalid(args):
    with pytest.raises(ValueError):
        fusion_weights(*args)


# ---------------------------------------------------------------- loops, segments and the rest of the plan
from v2v.windows import (Segment, auto_frame_budget, control_scales, plan_loop_windows, plan_segments,  # noqa: E402
                         prompt_schedule, segment_weights, spatial_passes)


@pytest.mark.parametrize("n", list(range(1, 70)) + [97, 480])
@pytest.mark.parametrize("context,overlap", [(16, 4), (16, 0), (8, 3), (16, 15), (4, 1)])
def test_loop_windows(n, context, overlap):
    wins = plan_loop_windows(n, context, overlap)
    if n <= context:
        assert wins == [tuple(range(n))]
        return
    covered = np.zeros(n, int)
    for w in wins:
        assert len(w) == context
        assert all((b - a) % n == 1 for a, b in zip(w, w[1:])), "consecutive frames, wrapping at the end"
        covered[list(w)] += 1
    assert (covered >= 1).all()
    for a, b in zip(wins, wins[1:] + wins[:1]):  # neighbours, the last and the first too
        assert len(set(a) & set(b)) >= overlap
    assert wins[0][0] == 0 and len(wins) == -(-n // (context - overlap))


def check_segments(wins, budget):
    segs = plan_segments(wins, budget)
    assert [tuple(tuple(s.frames[p] for p in w) for w in s.windows) for s in segs] == \
        [tuple(w) for w in _chunks(wins, segs)], "the windows, in order, each in exactly one segment"
    for s in segs:
        assert len(s.frames) <= budget and len(set(s.frames)) == len(s.frames)
        assert set(s.frames) == set().union(*[set(s.frames[p] for p in w) for w in s.windows])
    if len(wins) <= 10:  # the fewest frames of all groupings (brute force over every way to cut the windows)
        import itertools

        best = min(sum(len(set().union(*map(set, wins[i:j]))) for i, j in zip((0,) + cuts, cuts + (len(wins),)))
                   for k in range(len(wins)) for cuts in itertools.combinations(range(1, len(wins)), k)
                   if all(len(set().union(*map(set, wins[i:j]))) <= budget
                          for i, j in zip((0,) + cuts, cuts + (len(wins),))))
        assert sum(len(s.frames) for s in segs) == best
    return segs


def _chunks(wins, segs):
    out, i = [], 0
    for s in segs:
        out.append(tuple(tuple(w) for w in wins[i:i + len(s.windows)]))
        i += len(s.windows)
    assert i == len(wins)
    return out


@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 48, 100, 160, 257, 480])
@pytest.mark.parametrize("budget", [16, 20, 28, 40, 64, 100, 1000])
def test_segments(n, budget):
    wins = plan_windows(n, 16, 4)
    segs = check_segments(wins, budget)
    for s in segs:
        assert list(s.frames) == list(range(s.frames[0], s.frames[-1] + 1)), "contiguous, in time order"
    assert sum(len(s.windows) for s in segs) == len(wins)
    passes = spatial_passes(segs, n)
    assert 1.0 <= passes <= spatial_passes(plan_segments(wins, 16), n) + 1e-9, "never worse than one per window"
    if budget >= n:
        assert len(segs) == 1 and passes == 1.0
    if budget >= 64:
        assert passes <= 1.15  # the target at the default budget
    if budget == 16:
        assert len(segs) == len(wins)


@pytest.mark.parametrize("n", range(17, 600, 7))
def test_default_budget_meets_the_target(n):
    assert spatial_passes(plan_segments(plan_windows(n, 16, 4), 64), n) <= 1.15


@pytest.mark.parametrize("n", [17, 40, 100])
def test_loop_segments(n):
    wins = plan_loop_windows(n, 16, 4)
    for budget in (16, 30, 64, 1000):
        segs = check_segments(wins, budget)
        total, shares = segment_weights(segs[-1])
        assert (total > 0).all()


def test_segment_weights():
    seg = Segment((5, 6, 7, 8, 9, 10), ((0, 1, 2, 3), (2, 3, 4, 5)))
    total, shares = segment_weights(seg)
    np.testing.assert_allclose(total, [1, 2, 2 + 1, 1 + 2, 2, 1])
    np.testing.assert_allclose(shares[0], [1, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(shares[1], [1 / 3, 2 / 3, 1, 1])
    cover = np.zeros(6)
    for w, s in zip(seg.windows, shares):
        cover[list(w)] += s
    np.testing.assert_allclose(cover, 1, rtol=1e-6)  # shares of the windows covering a frame sum to 1
    total, shares = segment_weights(seg, "flat")
    np.testing.assert_allclose(total, [1, 1, 2, 2, 1, 1])
    with pytest.raises(ValueError):
        segment_weights(Segment((0, 1, 2), ((0, 1),)))  # frame 2 in no window


def test_segment_args():
    with pytest.raises(ValueError, match="budget"):
        plan_segments([range(0, 16)], 15)
    for bad in ([], [()], ):
        with pytest.raises(ValueError):
            plan_segments(bad, 16)
    with pytest.raises(ValueError):
        plan_segments([range(0, 4)], 4.0)


def test_auto_frame_budget():
    gib = 2**30
    assert auto_frame_budget(80 * gib, 512, 512) == 64  # capped: memory stays flat with the video's length
    assert auto_frame_budget(80 * gib, 512, 512, cap=1000) > 500
    small = auto_frame_budget(4 * gib, 512, 512)
    assert 16 <= small < 64
    assert auto_frame_budget(4 * gib, 512, 512, cfg=True) <= small  # CFG doubles the batch
    assert auto_frame_budget(4 * gib, 256, 256) >= small  # smaller frames, more of them
    assert auto_frame_budget(4 * gib, 512, 512, dtype_bytes=4) <= small
    assert auto_frame_budget(0, 512, 512) == 16 and auto_frame_budget(0, 512, 512, context=8) == 8


def test_prompt_schedule():
    prompts, lo, hi, blend = prompt_schedule([(0, "a"), (4, "b"), (6, "a")], 9)
    assert prompts == ["a", "b"]
    assert [prompts[i] for i in lo] == list("aaaabbaaa")
    assert [prompts[i] for i in hi] == list("bbbbaaaaa")
    np.testing.assert_allclose(blend, [0, .25, .5, .75, 0, .5, 0, 0, 0])
    assert prompt_schedule([(0, "x")], 3)[0] == ["x"]
    for bad in ([], [(1, "a")], [(0, "a"), (0, "b")], [(0, "a"), (5, "b"), (3, "c")]):
        with pytest.raises(ValueError):
            prompt_schedule(bad, 10)


def test_control_scales():
    assert control_scales(4) == [1, 1, 1, 1]
    assert control_scales(4, 0.0, 0.5) == [1, 1, 0, 0]
    assert control_scales(4, 0.25, 1.0) == [0, 1, 1, 1]
    assert control_scales(1, 0.0, 1.0) == [1]
    for steps in range(1, 9):
        for start in np.linspace(0, 0.9, 10):
            for end in np.linspace(start + 0.1, 1, 5):
                s = control_scales(steps, float(start), float(end))
                acting = [i for i, v in enumerate(s) if v]
                assert acting == list(range(acting[0], acting[-1] + 1)) if acting else True  # one run
    for bad in ((4, -0.1, 1), (4, 0.5, 0.5), (4, 0, 1.1)):
        with pytest.raises(ValueError):
            control_scales(*bad)


# ---------------------------------------------------------------- the order of the passes
from v2v.windows import sampling_order  # noqa: E402


def _check_order(segs, steps, order):
    """Every (step, segment) once; segments of a step in order; a pass only once every segment sharing a frame
    with it has run the step before."""
    assert sorted(order) == [(s, k) for s in range(steps) for k in range(len(segs))]
    for s in range(steps):
        assert [k for st, k in order if st == s] == list(range(len(segs)))
    pos = {u: i for i, u in enumerate(order)}
    for (s, k), i in pos.items():
        if s == 0:
            continue
        for j, other in enumerate(segs):
            if j == k or set(other.frames) & set(segs[k].frames):
                assert pos[(s - 1, j)] < i, f"({s}, {k}) ran before ({s - 1}, {j})"


@pytest.mark.parametrize("n", [1, 16, 17, 40, 64, 65, 100, 161, 480])
@pytest.mark.parametrize("budget", [16, 28, 64])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("loop", [False, True])
def test_sampling_order(n, budget, steps, loop):
    segs = plan_segments(plan_loop_windows(n, 16, 4) if loop else plan_windows(n, 16, 4), budget)
    stepwise = sampling_order(segs, steps, wavefront=False)
    assert stepwise == [(s, k) for s in range(steps) for k in range(len(segs))]
    wave = sampling_order(segs, steps)
    _check_order(segs, steps, wave)
    if loop and len(segs) > 2:  # the last segment wraps onto the first: no pass can go ahead
        assert wave == stepwise
    if not loop and len(segs) > steps and steps > 1:
        # the last step reaches the first segment on the diagonal ((s, 0) after s + 1 passes of step 0, s of
        # step 1...: (steps - 1)(steps + 2) / 2 passes before it), long before step 0 ends
        first_final = wave.index((steps - 1, 0))
        assert first_final < wave.index((0, len(segs) - 1))
        assert first_final <= (steps - 1) * (steps + 2) // 2
    if not loop:  # greedy: at every point, the pass of the highest step that may run
        for i, (s, k) in enumerate(wave):
            done = set(wave[:i])
            for s2 in range(s + 1, steps):
                k2 = sum(1 for st, _ in done if st == s2)
                if k2 < len(segs):
                    ok = all((s2 - 1, j) in done for j, o in enumerate(segs)
                             if j == k2 or set(o.frames) & set(segs[k2].frames))
                    assert not ok, f"({s2}, {k2}) could have run before ({s}, {k})"


def test_sampling_order_rejects_no_steps():
    with pytest.raises(ValueError, match="at least 1"):
        sampling_order([Segment((0,), ((0,),))], 0)


from v2v.windows import plan_video  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 40, 97, 480])
@pytest.mark.parametrize("loop", [False, True])
def test_plan_video_cuts_context_to_the_video_and_groups_its_windows(n, loop):
    windows, segments = plan_video(n, 16, 4, 24, loop)
    ctx = min(16, n)
    assert all(len(w) == ctx for w in windows)
    covered = sorted({f for w in windows for f in w})
    assert covered == list(range(n))
    if loop and n > ctx:  # some window wraps past the end to the first frames
        assert any(list(w) != list(range(w[0], w[0] + ctx)) for w in windows)
    if not loop:
        assert windows == [tuple(w) for w in plan_windows(n, ctx, min(4, ctx - 1))]
    # the segments hold the windows in order, each within the budget
    assert [tuple(s.frames[i] for i in w) for s in segments for w in s.windows] == [tuple(w) for w in windows]
    assert all(len(s.frames) <= 24 for s in segments)
    with pytest.raises(ValueError, match="budget"):
        plan_video(n, 16, 4, ctx - 1 if ctx > 1 else 0, loop)
