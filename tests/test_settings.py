"""Reproducibility: the settings record embedded in the output (read back by ffprobe) and written beside it, the
`--settings` rerun, and the errors for records this version cannot read."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import v2v
from v2v import settings as run_settings
from v2v.errors import InvalidOptions, OutputError
from v2v.models.modelset import ModelSet

import media

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "dance.mp4"
needs_ffprobe = pytest.mark.skipif(not media.HAVE_FFMPEG, reason="ffprobe is the judge of outputs")


def run_v2v(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return media.run_v2v(*args, env=env, timeout=timeout, cwd=ROOT)


def frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def first_run(tiny_models, tmp_path_factory):
    """One tiny restyle through the API: (the result, its folder, the input copy)."""
    folder = tmp_path_factory.mktemp("settings")
    src = folder / "clip one.mp4"
    shutil.copy(SAMPLE, src)
    r = v2v.Restyler(models="tiny", show_progress=False).restyle(
        src, prompt="claymation astronaut", seed=5, size=64, max_frames=8, pose_smoothing=0.25)
    return r, folder, src


@needs_ffprobe
def test_record_embedded_and_beside_the_output(first_run):
    import torch

    r, folder, src = first_run
    side = folder / "clip one.restyled.json"
    assert r.output == (folder / "clip one.restyled.mp4").resolve() and side.is_file()
    record = json.loads(side.read_text())
    assert record == json.loads(json.dumps(r.settings))  # RestyleResult.settings carries the same record
    assert record["schema"] == "v2v.settings" and record["version"] == run_settings.SCHEMA_VERSION
    assert record["prompt"] == "claymation astronaut" and record["seed"] == 5
    assert record["options"]["pose_smoothing"] == 0.25 and record["options"]["max_frames"] == 8
    assert record["options"]["steps"] == 4 and record["options"]["models"] == "tiny"  # defaults recorded too
    assert record["input"]["name"] == "clip one.mp4" and record["input"]["size"] == src.stat().st_size
    assert record["output"] == "clip one.restyled.mp4" and record["v2v"] == v2v.__version__
    assert record["runtime"]["torch"] == torch.__version__
    assert record["runtime"]["device"] == "cpu" and record["runtime"]["dtype"] == "float32"
    # the tiny models are local: path + size + sha256, the file actually taken from the motion folder
    assert set(record["models"]) >= {"base", "motion", "controlnet", "pose_model"}
    motion = record["models"]["motion"]
    assert motion["path"].endswith("animatediff_lightning_4step_diffusers.safetensors")
    assert motion["size"] == Path(motion["path"]).stat().st_size and len(motion["sha256"]) == 64
    # embedded: ffprobe (not PyAV) reads the same record back from the mp4's metadata
    tags = media.ffprobe_streams(r.output)["format"]["tags"]
    assert json.loads(tags["v2v_settings"]) == record
    assert "claymation astronaut" in tags["comment"]


def test_rerun_from_settings_reproduces_the_frames(first_run, tmp_path):
    """`v2v restyle --settings NAME.restyled.json` (no input: the recorded one) makes the same frames, and with
    --quiet prints nothing at all. (Options typed over a record: tests/test_config.py.)"""
    r, folder, _ = first_run
    side = folder / "clip one.restyled.json"
    again = tmp_path / "again.mp4"
    p = run_v2v("restyle", "--settings", side, "-o", again, "--quiet")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == ""  # --quiet: no bars, no log, no summary line
    assert np.array_equal(frames(again), frames(r.output))
    rec = json.loads(again.with_suffix(".json").read_text())
    assert rec["input"]["path"] == str((folder / "clip one.mp4").resolve())
    assert rec["options"] == r.settings["options"] and (rec["prompt"], rec["seed"]) == ("claymation astronaut", 5)


def test_load_settings_from_json_and_from_video_agree(first_run):
    r, folder, _ = first_run
    a = run_settings.load_settings(folder / "clip one.restyled.json")
    b = run_settings.load_settings(r.output)
    assert a.options == b.options and a.input == b.input == (folder / "clip one.mp4").resolve()
    assert a.options["prompt"] == "claymation astronaut" and a.options["seed"] == 5
    assert a.options["pose_parts"] == ("body", "hands", "face")  # typed back (a tuple, as RestyleOptions holds)
    assert "keep_pose" not in a.options and "short_side" not in a.options  # outputs and derived values: not rerun
    v2v.RestyleOptions(**a.options).validate()


def _record(**changes) -> dict:
    rec = {"schema": "v2v.settings", "version": 1, "prompt": "x", "seed": 1, "options": {"steps": 2}}
    rec.update(changes)
    return rec


@pytest.mark.parametrize("record, words", [
    (_record(version=2), ["newer v2v", "version 2"]),
    (_record(schema="something.else"), ["not a v2v settings file"]),
    ({"prompt": "x"}, ["not a v2v settings file"]),
    (_record(colour="red"), ["unknown key", "colour"]),
    (_record(options={"steps": 2, "stpes": 3}), ["unknown option", "stpes"]),
    (_record(options={"steps": "two"}), ["steps", "whole number"]),
    (_record(version="1"), ["version", "whole number"]),
])
def test_unreadable_records_are_clear_errors(tmp_path, record, words):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(record))
    with pytest.raises(InvalidOptions) as e:
        run_settings.load_settings(f)
    for w in words:
        assert w in str(e.value)
    assert "s.json" in str(e.value)


def test_input_removed_before_the_record_is_built_is_a_named_error(tmp_path):
    # the decoder reads an open file, so a video removed mid-run surfaces only when its record is built
    o = v2v.RestyleOptions(prompt="x").validate()
    with pytest.raises(v2v.InputNotFound, match="removed or moved"):
        run_settings.build_settings(o, ModelSet.for_options(o), input_path=tmp_path / "gone.mp4",
                                    output_path=tmp_path / "o.mp4",
                                    device="cpu", dtype="float32")


def test_settings_file_errors(tmp_path):
    with pytest.raises(InvalidOptions, match="does not exist"):
        run_settings.load_settings(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidOptions, match="not valid JSON"):
        run_settings.load_settings(bad)
    with pytest.raises(InvalidOptions, match="holds no v2v settings"):
        run_settings.load_settings(SAMPLE)  # a video without the tag


def test_cli_settings_errors(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(_record(version=9)))
    p = run_v2v("restyle", "--settings", f, "--models", "tiny")
    assert p.returncode == 2 and "newer v2v" in p.stderr and "Traceback" not in p.stderr
    gone = tmp_path / "gone.json"
    gone.write_text(json.dumps(_record(input={"path": str(tmp_path / "deleted.mp4")})))
    p = run_v2v("restyle", "--settings", gone, "--models", "tiny")
    assert p.returncode == 3 and "deleted.mp4" in p.stderr and "on the command line" in p.stderr
    p = run_v2v("restyle", "-p", "x")
    assert p.returncode == 2 and "give the video" in p.stderr


def test_sidecar_never_overwrites_a_foreign_file(tmp_path, tiny_models):
    src = tmp_path / "clip.mp4"
    shutil.copy(SAMPLE, src)
    mine = tmp_path / "take2.json"
    mine.write_text('{"my": "notes"}')
    r = v2v.Restyler(models="tiny", size=64, max_frames=4, show_progress=False)
    with pytest.raises(OutputError, match="not a v2v settings file"):
        r.restyle(src, tmp_path / "take2.mp4", prompt="x")
    assert mine.read_text() == '{"my": "notes"}' and not (tmp_path / "take2.mp4").exists()
    with pytest.raises(OutputError, match="input of this run"):  # the sidecar would be the --pose-json input
        r.restyle(src, tmp_path / "take2.mp4", prompt="x", pose_json=mine)


def test_hub_models_recorded_with_cached_revision(fake_hub, tmp_path, monkeypatch):
    """On the default (hub) models, each model is recorded as repo + the commit in the HF cache, and the motion
    and pose files taken from their repos are named."""
    from huggingface_hub import constants

    from v2v.models.defaults import DEFAULT_BASE, DEFAULT_DWPOSE, DEFAULT_MOTION
    from v2v.tiny.diffusion import fake_commit

    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fake_hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    r = v2v.Restyler(size=64, max_frames=4, show_progress=False, pose_cache=False).restyle(
        SAMPLE, tmp_path / "o.mp4", prompt="x", steps=2)
    m = r.settings["models"]
    assert m["base"] == {"spec": DEFAULT_BASE, "repo": DEFAULT_BASE, "revision": fake_commit(DEFAULT_BASE)}
    assert m["motion"]["revision"] == fake_commit(DEFAULT_MOTION)
    assert m["motion"]["files"] == ["animatediff_lightning_2step_diffusers.safetensors"]
    assert m["pose_model"]["revision"] == fake_commit(DEFAULT_DWPOSE)
    assert m["pose_model"]["files"] == ["dw-ll_ucoco_384.onnx", "yolox_l.onnx"]
    assert m["vae"] is None
