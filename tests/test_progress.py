"""The JSON-lines progress reporter (throttling, the last update always written, stage clocks) and the pose
stage's frame-count estimate."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

from v2v.progress import STAGES, JsonLines, expected_frames


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_throttled_but_first_and_last_always_written():
    buf, clock = io.StringIO(), Clock()
    rep = JsonLines(buf, interval=0.1, clock=clock)
    for done in range(0, 101):  # 101 updates within 0.5 s
        rep("encode", done, 100)
        clock.t += 0.005
    out = lines(buf)
    assert out[0]["done"] == 0 and out[-1]["done"] == 100  # the first and the last
    assert len(out) <= 2 + 0.505 / 0.1 + 1  # about one line per 0.1 s in between
    assert [x["done"] for x in out] == sorted(x["done"] for x in out)
    assert all(x["unit"] == STAGES["encode"] for x in out)


def test_held_back_update_is_written_when_the_next_stage_starts():
    buf, clock = io.StringIO(), Clock()
    rep = JsonLines(buf, interval=10, clock=clock)
    rep("pose", 0, 50)
    clock.t += 1
    rep("pose", 40, 50)  # held back (interval not over), and the stage ends at 40 of an estimated 50
    rep("generate", 0, 8)
    assert [(x["stage"], x["done"]) for x in lines(buf)] == [("pose", 0), ("pose", 40), ("generate", 0)]
    rep("generate", 3, 8)
    rep.event("done", output="o.mp4")  # an event writes what is held back first
    out = lines(buf)
    assert (out[-2]["stage"], out[-2]["done"]) == ("generate", 3) and out[-1] == {"event": "done", "output": "o.mp4"}


def test_elapsed_and_eta_from_the_stage_start():
    buf, clock = io.StringIO(), Clock()
    rep = JsonLines(buf, interval=0, clock=clock)
    rep("generate", 0, 10)
    clock.t += 2.0
    rep("generate", 4, 10)
    first, second = lines(buf)
    assert first["eta"] is None and first["elapsed"] == 0
    assert second["elapsed"] == pytest.approx(2.0) and second["eta"] == pytest.approx(3.0)  # 2 s per 4 -> 6 left
    rep.context = {"video": "a.mp4"}
    rep("pose", 0, 5)  # a new stage (or the next video) starts its own clock; context fields are added
    assert lines(buf)[-1] == {"stage": "pose", "done": 0, "total": 5, "unit": "frame", "elapsed": 0.0, "eta": None,
                              "video": "a.mp4"}


def decoder(frames=96, fps=24, start=None, end=None, every_nth=1, max_frames=None, out_fps=None):
    info = SimpleNamespace(duration=Fraction(frames, fps), frames=frames, fps=Fraction(fps), path=Path("x"))
    return SimpleNamespace(info=info, start=start, end=end, every_nth=every_nth, max_frames=max_frames,
                           fps=out_fps)


@pytest.mark.parametrize("kw, expected", [
    ({}, 96), ({"start": 1, "end": 3}, 48), ({"every_nth": 5}, 20), ({"max_frames": 10}, 10),
    ({"out_fps": 12}, 48), ({"start": 1, "end": 3, "out_fps": 12}, 24), ({"end": 100}, 96),
])
def test_expected_frames(kw, expected):
    assert expected_frames(decoder(**kw)) == expected


def test_expected_frames_matches_the_decoder(tmp_path):
    """Against the real decoder on the sample: the estimate is the count decoded."""
    from v2v.media import decode, probe

    sample = Path(__file__).resolve().parent.parent / "samples" / "dance.mp4"
    info = probe.probe(sample)
    cases = [{}, {"start": 0.5, "end": 2.25}, {"every_nth": 3}, {"fps": Fraction(10)}]
    # trims that fall between frames (the count a GPU run plans its segments with before posing)
    cases += [{"start": s, "end": e, "every_nth": k} for s in (None, 0.3, 0.5, 1.01) for e in (None, 2.3, 3.49)
              for k in (1, 2, 5)]
    cases += [{"start": s, "end": e, "fps": f} for s in (None, 0.3) for e in (None, 2.3) for f in (12, 10, 7.5, 30)]
    for kw in cases:
        dec = decode.Decoder(info, 32, 32, **kw)
        assert expected_frames(dec) == sum(1 for _ in dec), kw
