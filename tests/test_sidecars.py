"""Watch-mode sidecars: NAME.json (options) and NAME.txt (prompt) beside a video, a settings record used as one,
and what a sidecar may not set. read_sidecars directly, and through watch (a spy restyler records the options)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from watch_helpers import SAMPLE, Spy, drop, listing

import v2v
from v2v.errors import InvalidOptions
from v2v.sidecars import MODEL_KEYS, OUTPUT_KEYS, read_sidecars, sidecar_paths
from v2v.watch import watch


# ------------------------------------------------------------------------------------------- read_sidecars
def test_read_sidecars_types_values_and_lets_the_json_prompt_win(tmp_path, caplog):
    video = drop(tmp_path, "clip.mp4")
    assert read_sidecars(video) == ({}, [])
    (tmp_path / "clip.txt").write_text("\ufeff  a\n  prompt \n")
    assert read_sidecars(video) == ({"prompt": "a prompt"}, [tmp_path / "clip.txt"])
    (tmp_path / "clip.json").write_text(json.dumps({"prompt": "json", "seed": 3.0, "pose_json": "p.json",
                                                    "keep_pose": True, "preset": "fast"}))
    with caplog.at_level(logging.INFO, logger="v2v"):
        options, found = read_sidecars(video)
    assert options == {"prompt": "json", "seed": 3, "pose_json": tmp_path / "p.json", "keep_pose": True,
                       "preset": "fast"}
    assert type(options["seed"]) is int and found == sidecar_paths(video)
    assert "the prompt in clip.json wins over clip.txt" in caplog.text


@pytest.mark.parametrize("data,message", [
    ({"out_dir": "/tmp"}, '"out_dir" cannot be set in a sidecar'),
    ({"keep_pose": "/tmp/x.pose.mp4"}, '"keep_pose" must be true or false'),
    ({"preset": ""}, '"preset" must be a preset name'),
    ({"colour": "red", "size": 64}, "unknown option(s): colour"),
    ([{"people": []}], "holds keypoints (OpenPose JSON), not options: rename it clip.pose.json"),
])
def test_read_sidecars_refuses_what_a_sidecar_cannot_set(tmp_path, data, message):
    video = drop(tmp_path, "clip.mp4")
    (tmp_path / "clip.json").write_text(json.dumps(data))
    with pytest.raises(InvalidOptions) as e:
        read_sidecars(video)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_output_and_model_keys():
    assert {"output", "out_dir", "input"} <= OUTPUT_KEYS and not OUTPUT_KEYS & MODEL_KEYS
    assert {"base", "motion", "controlnet", "steps"} <= MODEL_KEYS


# ------------------------------------------------------------------------------------------- through watch
def test_sidecar_precedence_and_outputs_stay_in_out_dir(tmp_path):
    for n in "abcdef":
        drop(tmp_path, f"{n}.mp4")
    (tmp_path / "a.json").write_text(json.dumps({"prompt": "from json", "seed": 5, "steps": 2, "fps": "30000/1001",
                                                 "pose_cache": False, "pose_parts": ["body", "hands"]}))
    (tmp_path / "a.txt").write_text("from txt")
    (tmp_path / "b.txt").write_text("  from\n txt \n")
    (tmp_path / "d.json").write_text(json.dumps({"keep_pose": True}))
    (tmp_path / "e.json").write_text(json.dumps({"prompt": "x", "output": "/tmp/elsewhere.mp4"}))
    (tmp_path / "f.json").write_text(json.dumps({"keep_pose": "/tmp/elsewhere.pose.mp4"}))
    spy = Spy()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="base", seed=1)
    calls = {c.name: c for c in spy.calls}
    assert sorted(calls) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]  # e and f never reach the restyler
    assert calls["a.mp4"].prompt == "from json" and calls["a.mp4"].options["seed"] == 5
    assert calls["a.mp4"].options["steps"] == 2 and calls["a.mp4"].options["fps"] == v2v.options.Fraction(30000, 1001)
    assert calls["a.mp4"].options["pose_cache"] is False and calls["a.mp4"].options["pose_parts"] == ("body", "hands")
    assert calls["b.mp4"].prompt == "from txt" and calls["b.mp4"].options["seed"] == 1
    assert calls["c.mp4"].prompt == "base" and calls["c.mp4"].options == {"seed": 1}
    assert calls["d.mp4"].options["keep_pose"] == tmp_path / "restyled" / "d.pose.mp4"
    assert "keep_pose" not in calls["c.mp4"].options
    assert listing(tmp_path / "done") == ["a.json", "a.mp4", "a.txt", "b.mp4", "b.txt", "c.mp4", "d.json", "d.mp4"]
    assert listing(tmp_path / "failed") == ["e.error.txt", "e.json", "e.mp4", "f.error.txt", "f.json", "f.mp4"]
    errors = {v.name: v.error for v in s.failed}
    assert '"output" cannot be set in a sidecar' in errors["e.mp4"]
    assert "keep_pose" in errors["f.mp4"] and "true or false" in errors["f.mp4"]
    assert not Path("/tmp/elsewhere.mp4").exists() and not Path("/tmp/elsewhere.pose.mp4").exists()


def test_a_settings_record_beside_a_video_restyles_it_the_same_way(tmp_path, tiny_models):
    """NAME.json that is a run's settings record (`restyle -o x.mp4` writes x.json) gives its options, not an error
    about its "input"; keypoints from `v2v pose --json` named like a sidecar fail with what to do instead."""
    from v2v.settings import sidecar_path

    first = tmp_path / "first.mp4"
    r = v2v.restyle(SAMPLE, first, prompt="from the record", seed=9, steps=2, models="tiny", size=64,
                    max_frames=4)
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(SAMPLE, in_dir / "clip.mp4")
    shutil.copy(sidecar_path(r.output), in_dir / "clip.json")
    (in_dir / "clip.txt").write_text("from txt")
    v2v.Restyler(models="tiny").pose(SAMPLE, json_path=in_dir / "other.json", max_frames=2, size=64)
    drop(in_dir, "other.mp4")
    spy = Spy()
    s = watch(in_dir, restyler=spy, once=True, settle=0, poll=0.01, prompt="base", seed=1)
    (call,) = spy.calls
    assert call.name == "clip.mp4" and call.prompt == "from the record"
    assert (call.options["seed"], call.options["steps"], call.options["max_frames"]) == (9, 2, 4)
    assert call.options["models"] == "tiny" and call.options["size"] == 64
    (failed,) = s.failed
    assert failed.name == "other.mp4" and "keypoints" in failed.error and '"pose_json"' in failed.error


def test_a_record_with_another_videos_keypoints_fails_that_video(tmp_path, tiny_models):
    """A record made with --pose-json names keypoints detected in its own input: beside a copy of that input it
    reruns with them; beside another video it fails that video, saying to remove "pose_json"."""
    from media import make_video

    from v2v.settings import sidecar_path

    poses = tmp_path / "dance.pose.json"
    restyler = v2v.Restyler(models="tiny", size=64, max_frames=4)
    restyler.pose(SAMPLE, json_path=poses)
    r = restyler.restyle(SAMPLE, tmp_path / "first.mp4", prompt="p", pose_json=poses)
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(SAMPLE, in_dir / "same.mp4")
    make_video(in_dir / "other.mp4", seconds=0.5, fps=25, size=(64, 48))
    for name in ("same", "other"):
        shutil.copy(sidecar_path(r.output), in_dir / f"{name}.json")
    spy = Spy()
    s = watch(in_dir, restyler=spy, once=True, settle=0, poll=0.01)
    assert [c.name for c in spy.calls] == ["same.mp4"] and spy.calls[0].options["pose_json"] == poses
    (failed,) = s.failed
    assert failed.name == "other.mp4" and '"pose_json"' in failed.error and "another video" in failed.error


def test_malformed_sidecars_fail_their_video_alone(tmp_path):
    bad = {"g.json": "{prompt: 'x'", "h.json": json.dumps({"colour": "red"}), "i.json": json.dumps({"steps": 0}),
           "j.json": json.dumps({"steps": "four"}), "k.json": "[1, 2]", "l.txt": "  \n",
           "m.json": json.dumps({"size": 64, "width": 64}), "n.json": json.dumps({"pose_cache": "no"})}
    for name, text in bad.items():
        drop(tmp_path, name[0] + ".mp4")
        (tmp_path / name).write_text(text)
    drop(tmp_path, "ok.mp4")
    drop(tmp_path, "noprompt.mp4")
    spy = Spy()
    s = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, **{"prompt": None})
    assert spy.names() == []  # no prompt anywhere for ok.mp4 either
    assert {v.name for v in s.failed} == {"g.mp4", "h.mp4", "i.mp4", "j.mp4", "k.mp4", "l.mp4", "m.mp4", "n.mp4",
                                          "ok.mp4", "noprompt.mp4"}
    (tmp_path / "failed" / "ok.mp4").rename(tmp_path / "ok.mp4")
    s2 = watch(tmp_path, restyler=spy, once=True, settle=0, poll=0.01, prompt="fine")
    assert spy.names() == ["ok.mp4"] and [v.name for v in s2.done] == ["ok.mp4"]
    reasons = {v.name: (tmp_path / "failed" / f"{v.name[:-4]}.error.txt").read_text() for v in s.failed}
    assert "g.json is not valid JSON" in reasons["g.mp4"]
    assert "unknown option(s): colour" in reasons["h.mp4"]
    assert "--steps must be between 1 and 100" in reasons["i.mp4"]
    assert '"steps" must be a whole number, got "four"' in reasons["j.mp4"]
    assert "must hold a JSON object" in reasons["k.mp4"]
    assert "l.txt is empty" in reasons["l.mp4"]
    assert "either --size or --width" in reasons["m.mp4"]
    assert '"pose_cache" must be true or false' in reasons["n.mp4"]
    assert "no prompt for noprompt.mp4" in reasons["noprompt.mp4"]
    for name in bad:  # each sidecar moved along with its video
        assert (tmp_path / "failed" / name).is_file() and not (tmp_path / name).exists()
