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
