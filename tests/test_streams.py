"""prefetch: same items in the same order, errors where they happened, early exits stop the producer."""

import threading
import time

import pytest

from v2v.streams import prefetch


def test_same_items_in_order():
    assert list(prefetch(range(1000), depth=3)) == list(range(1000))
    assert list(prefetch([], depth=1)) == []


def test_runs_ahead_on_another_thread_bounded_by_depth():
    produced, threads = [], set()

    def gen():
        for i in range(50):
            threads.add(threading.get_ident())
            produced.append(i)
            yield i

    it = prefetch(gen(), depth=4)
    assert next(it) == 0
    time.sleep(0.2)
    assert 2 <= len(produced) <= 1 + 4 + 1  # ahead of the consumer, but never more than depth (+ one in hand)
    assert threading.get_ident() not in threads
    assert list(it) == list(range(1, 50))


def test_error_raised_at_its_position():
    def gen():
        yield 1
        yield 2
        raise ValueError("broken frame")

    got = []
    with pytest.raises(ValueError, match="broken frame"):
        for x in prefetch(gen(), depth=8):
            got.append(x)
    assert got == [1, 2]


def test_early_exit_closes_the_producer():
    closed = threading.Event()

    def gen():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.set()

    it = prefetch(gen(), depth=2)
    for x in it:
        if x == 5:
            break
    it.close()
    assert closed.wait(2.0)


def test_bad_depth():
    with pytest.raises(ValueError):
        next(prefetch([1], depth=0))


def test_background_returns_value_and_raises_errors():
    import threading

    from v2v.streams import Background

    started = threading.Event()

    def work():
        started.set()
        return threading.current_thread().name

    b = Background(work, name="bg-test")
    assert started.wait(5)
    assert b.result() == "bg-test" and b.result() == "bg-test"

    def fail():
        raise KeyError("model missing")

    with pytest.raises(KeyError, match="model missing"):
        Background(fail).result()
