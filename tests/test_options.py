"""RestyleOptions: the one validator, derived values. Pure, no models."""

import re
from fractions import Fraction
from pathlib import Path

import pytest

from v2v.errors import InvalidOptions
from v2v.option_values import lightning_for_steps, parse_fps
from v2v.options import RestyleOptions


@pytest.mark.parametrize("steps,expected", [(1, 1), (2, 2), (3, 2), (4, 4), (5, 4), (7, 4), (8, 8), (25, 8)])
def test_lightning_checkpoint_follows_steps(steps, expected):
    assert lightning_for_steps(steps) == expected
    assert RestyleOptions(prompt="x", steps=steps).lightning_steps == expected


def test_lightning_can_be_chosen_apart_from_steps():
    o = RestyleOptions(prompt="x", steps=3, lightning=2).validate()
    assert (o.steps, o.lightning_steps) == (3, 2)


def test_default_short_side_depends_on_model_set():
    assert RestyleOptions(prompt="x").short_side == 512
    assert RestyleOptions(prompt="x", models="tiny").short_side == 128
    assert RestyleOptions(prompt="x", models="tiny", size=256).short_side == 256


@pytest.mark.parametrize("changes,needle", [
    ({"prompt": "  "}, "prompt"),
    ({"steps": 0}, "--steps"),
    ({"lightning": 3}, "--lightning"),
    ({"guidance": 0.5}, "--guidance"),
    ({"negative_prompt": "blurry"}, "--guidance"),
    ({"size": 512, "width": 512}, "--size"),
    ({"width": 500}, "multiple of 8"),
    ({"height": 32}, "--height"),
    ({"start": -1.0}, "--start"),
    ({"start": 2.0, "end": 1.0}, "--end"),
    ({"max_frames": 0}, "--max-frames"),
    ({"every_nth": 0}, "--every-nth"),
    ({"fps": Fraction(12), "every_nth": 2}, "--fps"),
    ({"context": 33}, "--context"),
    ({"context": 8, "overlap": 8}, "--overlap"),
    ({"models": "huge"}, "--models"),
    ({"dtype": "int8"}, "--dtype"),
    ({"device": "gpu0"}, "--device"),
    ({"device": "cpu", "dtype": "float16"}, "float16"),
    ({"crf": 64}, "--crf"),  # beyond every codec's scale (VP9's 0-63 is the widest)
    ({"crf": 52, "format": "h264"}, "--crf"),
    ({"crf": 0, "format": "av1"}, "--crf"),
    ({"format": "mkv"}, "--format"),
    ({"gif_loop": -1}, "--gif-loop"),
    ({"gif_loop": 2, "format": "vp9"}, "--gif-loop"),
])
def test_invalid_options_name_the_fix(changes, needle):
    with pytest.raises(InvalidOptions) as e:
        RestyleOptions(**{"prompt": "a dancer", **changes}).validate()
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_valid_combinations_pass():
    o = RestyleOptions(prompt="x", negative_prompt="blurry", guidance=1.5, width=512, start=1, end=2,
                       fps=Fraction(30000, 1001), context=32, overlap=8, device="cuda:1", dtype="bfloat16")
    assert o.validate() is o  # no error, and validate() hands back the same options to chain
    assert (o.lightning_steps, o.short_side) == (4, 512)


@pytest.mark.parametrize("text,value", [("24", Fraction(24)), ("29.97", Fraction(2997, 100)),
                                        ("30000/1001", Fraction(30000, 1001)), (None, None)])
def test_parse_fps(text, value):
    assert parse_fps(text) == value


@pytest.mark.parametrize("text", ["fast", "0", "-3", "1/0"])
def test_parse_fps_rejects(text):
    with pytest.raises(InvalidOptions):
        parse_fps(text)


def test_settings_are_json_friendly():
    import json

    s = RestyleOptions(prompt="x", fps=Fraction(12)).settings()
    assert json.loads(json.dumps(s))["fps"] == "12"
    assert s["lightning_steps"] == 4


@pytest.mark.parametrize("changes,needle", [
    ({"steps": "4"}, "--steps must be a whole number"), ({"steps": 4.5}, "--steps must be a whole number"),
    ({"steps": True}, "--steps must be a whole number"), ({"seed": "7"}, "--seed must be a whole number"),
    ({"seed": 2**70}, "--seed must fit in 64 bits"), ({"guidance": "2"}, "--guidance must be a finite number"),
    ({"guidance": float("nan")}, "--guidance must be a finite number"),
    ({"pose_strength": float("inf")}, "--pose-strength must be a finite number"),
    ({"size": "128"}, "--size must be a whole number"), ({"start": "1"}, "--start must be a finite number"),
    ({"strength": "0.5"}, "--strength must be a finite number"), ({"fps": "abc"}, "--fps 'abc' is not a number"),
    ({"fps": float("nan")}, "--fps must be a frame rate"), ({"loop": "no"}, "--loop must be True or False"),
    ({"compare": "yes"}, "--compare must be True or False"), ({"ping_pong": 2}, "--ping-pong must be True or False"),
    ({"pose_cache": 0}, "--pose-cache must be True or False"), ({"keep_pose": 5}, "--keep-pose must be a file path"),
    ({"base": 5}, "--base must be a hub id or a path"), ({"prompt": 5}, "prompt must be a string"),
    ({"negative_prompt": 3, "guidance": 2.0}, "--negative-prompt must be a string"),
])
def test_values_of_the_wrong_type_are_named_errors(changes, needle):
    # the API takes any Python value: these reached a comparison (TypeError), a truth test ("no" turned --loop
    # on) or the sampler (NaN guidance, a seed torch cannot take) before
    with pytest.raises(InvalidOptions, match=re.escape(needle)):
        RestyleOptions(**{"prompt": "x", **changes}).validate()


def test_values_of_the_right_kind_pass():
    import numpy as np

    o = RestyleOptions(prompt="x", steps=np.int64(4), seed=-1, guidance=np.float64(1.5), fps="30000/1001", start=1,
                       base=Path("/models/base"), keep_pose=Path("p.mp4"), negative_prompt="blur").validate()
    assert o.fps == Fraction(30000, 1001)


def test_numpy_numbers_are_plain_numbers_downstream():
    # validate() passes np.int64/np.float32 (test above); the decoder, the writers and the size maths then refused
    # them mid-run: "max_frames must be an integer of at least 1, got np.int64(4)", "size must be an integer ...
    # got np.int64(64); try 512", and --crf np.int64(20) "must be a whole number"
    import numpy as np

    from v2v.media import decode, probe, timing

    o = RestyleOptions(prompt="x", max_frames=np.int64(4), every_nth=np.int32(2), size=np.int64(64),
                       crf=np.int64(20), gif_loop=np.int64(2), format="gif", seed=np.uint64(2**64 - 1),
                       start=np.float32(0.5), guidance=np.float32(1.5), fps=None).validate()
    assert [type(v) for v in (o.max_frames, o.every_nth, o.size, o.crf, o.gif_loop, o.seed)] == [int] * 6
    assert (o.start, o.guidance) == (0.5, 1.5) and type(o.start) is float
    assert RestyleOptions(prompt="x", fps=np.float32(29.97)).validate().fps == 29.97
    info = probe.probe(Path(__file__).resolve().parent.parent / "samples" / "dance.mp4")
    w, h = timing.processing_size(info.display_width, info.display_height, o.short_side, o.width, o.height)
    decode.Decoder(info, w, h, start=o.start, every_nth=o.every_nth, max_frames=o.max_frames)
    decode.Decoder(info, w, h, fps=RestyleOptions(prompt="x", fps=np.float32(12)).validate().fps)


def test_no_negative_prompt_is_the_empty_one():
    """negative_prompt=None, as diffusers' pipelines take it, means none (the type checks refused it), and the
    options record it as "" (a record with null could not be rerun)."""
    o = RestyleOptions(prompt="x", negative_prompt=None).validate()
    assert o.negative_prompt == ""
    assert RestyleOptions(prompt="x", negative_prompt=None, guidance=2.0).validate().negative_prompt == ""
