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


# ------------------------------------------------------------------ parallel_map

from v2v.streams import default_workers, parallel_map  # noqa: E402


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_parallel_map_keeps_order_whatever_finishes_first(workers):
    def slow_for_small(i):
        time.sleep(0.002 * ((7 - i) % 7))  # later items often finish first
        return i * i

    assert list(parallel_map(slow_for_small, range(40), workers)) == [i * i for i in range(40)]
    assert list(parallel_map(slow_for_small, [], workers)) == []


def test_parallel_map_runs_items_at_once_on_other_threads():
    running, peak, lock, threads = [0], [0], threading.Lock(), set()

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.get_ident())
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return i

    assert list(parallel_map(work, range(12), 3)) == list(range(12))
    assert peak[0] == 3  # three at once, never more
    assert threading.get_ident() not in threads


def test_parallel_map_takes_a_bounded_number_of_items_ahead():
    taken = []

    def items():
        for i in range(1000):
            taken.append(i)
            yield i

    it = parallel_map(lambda i: i, items(), 3)
    assert next(it) == 0
    time.sleep(0.1)
    assert len(taken) <= 3 + 2  # workers + 1 in flight, plus the one handed out
    it.close()


@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_map_raises_at_the_failing_item_and_closes_the_source(workers):
    closed = threading.Event()

    def items():
        try:
            yield from range(100)
        finally:
            closed.set()

    def fn(i):
        if i == 6:
            raise ValueError("bad batch 6")
        return i

    got = []
    with pytest.raises(ValueError, match="bad batch 6"):
        for x in parallel_map(fn, items(), workers):
            got.append(x)
    assert got == list(range(6))
    assert closed.is_set()


def test_parallel_map_early_exit_waits_for_started_work_and_skips_the_rest():
    started, finished = [], []

    def work(i):
        started.append(i)
        time.sleep(0.03)
        finished.append(i)
        return i

    it = parallel_map(work, range(100), 2)
    assert [next(it), next(it)] == [0, 1]
    it.close()  # leaving the loop
    assert sorted(finished) == sorted(started)  # nothing left running behind the caller's back
    assert len(started) < 10


def test_parallel_map_rejects_no_workers():
    with pytest.raises(ValueError, match="at least 1"):
        list(parallel_map(str, [1], 0))


def test_default_workers(monkeypatch):
    monkeypatch.delenv("V2V_POSE_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_workers() == 4
    monkeypatch.setattr("os.cpu_count", lambda: 128)
    assert default_workers() == 4
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_workers() == 1
    monkeypatch.setenv("V2V_POSE_WORKERS", "6")
    assert default_workers() == 6
    monkeypatch.setenv("V2V_POSE_WORKERS", "many")
    with pytest.raises(ValueError, match="V2V_POSE_WORKERS"):
        default_workers()
