"""The pose stage in the pipeline: --pose-json in, the keypoint cache, parts/threshold, `v2v pose` outputs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import v2v
from v2v.errors import InvalidOptions
from v2v.options import RestyleOptions
from v2v.pipeline import Restyler
from v2v.pose import load_pose_json, render_pose
from v2v.media.timing import processing_size

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "dance.mp4"
SAMPLE_JSON = ROOT / "samples" / "dance.pose.json"


def video_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


class Counting:
    """Wraps a detector and counts the frames it is asked to detect."""

    def __init__(self, inner):
        self.inner, self.frames = inner, 0

    def detect(self, images):
        self.frames += len(images)
        return self.inner.detect(images)


@pytest.fixture
def counting(monkeypatch, tiny_models):
    real = Restyler.pose_detector
    made = []

    def pose_detector(self, o, device):
        made.append(Counting(real(self, o, device)))
        return made[-1]

    monkeypatch.setattr(Restyler, "pose_detector", pose_detector)
    return made


@pytest.fixture
def no_detector(monkeypatch):
    def refuse(self, o, device):
        raise AssertionError("the pose models must not be loaded")

    monkeypatch.setattr(Restyler, "pose_detector", refuse)


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("changes,needle", [
    ({"pose": "mediapipe"}, "--pose"),
    ({"pose_parts": "body,feet"}, "--pose-parts"),
    ({"pose_parts": ""}, "--pose-parts"),
    ({"pose_threshold": 1.0}, "--pose-threshold"),
    ({"pose_smoothing": -0.1}, "--pose-smoothing"),
    ({"pose_json": "/nonexistent/poses.json"}, "--pose-json"),
])
def test_pose_options_rejected(changes, needle):
    with pytest.raises(InvalidOptions) as e:
        RestyleOptions(prompt="x", **changes).validate()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_pose_parts_parsed_in_canonical_order():
    o = RestyleOptions(prompt="x", pose_parts="face, body").validate()
    assert o.pose_parts == ("body", "face")
    assert o.settings()["pose_parts"] == ["body", "face"]


# ---------------------------------------------------------------- --pose-json

def test_pose_json_renders_the_given_keypoints_without_pose_models(tmp_path, no_detector, tiny_models):
    r = Restyler(models="tiny", show_progress=False)
    res = r.pose(SAMPLE, png_dir=tmp_path / "png", pose_json=SAMPLE_JSON, size=128, pose_smoothing=0)
    assert res.frames == 96
    given = load_pose_json(SAMPLE_JSON)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 96
    for i in (0, 50, 95):
        img = cv2.imread(str(pngs[i]))[:, :, ::-1]
        h, w = img.shape[:2]
        assert (w, h) == processing_size(384, 512, 128)  # the processing size of the 384x512 source
        np.testing.assert_array_equal(img, render_pose(given[i].scaled(w, h), w, h))   # scaled from source pixels
        assert img.any()


def test_pose_json_frame_count_must_match_kept_frames(tmp_path, no_detector):
    with pytest.raises(InvalidOptions) as e:
        Restyler(models="tiny", show_progress=False).restyle(SAMPLE, tmp_path / "o.mp4", prompt="x",
                                                            pose_json=SAMPLE_JSON, max_frames=50)
    msg = str(e.value)
    assert "96" in msg and "50" in msg and "dance.pose.json" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_restyle_cli_with_pose_json_skips_detection(tmp_path, tiny_models):
    # a pose model path that does not exist: the run succeeds only if it is never loaded
    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "v2v", "restyle", str(SAMPLE), "-p", "x", "--models", "tiny",
                        "--size", "64", "--pose-json", str(SAMPLE_JSON), "--pose-model", str(tmp_path / "none"),
                        "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert video_frames(out) == 96
    assert "0 without people" in r.stdout


# ---------------------------------------------------------------- cache

def _entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "poses").glob("*.json.gz"))


def test_second_run_uses_the_cache_and_corrupt_entry_is_rebuilt(tmp_path, counting, monkeypatch, caplog):
    monkeypatch.setenv("V2V_CACHE_DIR", str(tmp_path / "cache"))
    r = Restyler(models="tiny", size=64, max_frames=12, show_progress=False)
    a = r.pose(SAMPLE, json_path=tmp_path / "a.json")
    assert [c.frames for c in counting] == [12]
    (entry,) = _entries(tmp_path / "cache")
    b = r.pose(SAMPLE, json_path=tmp_path / "b.json", pose_smoothing=0.8)   # smoothing is applied after the cache
    assert len(counting) == 1                                               # the detector was not asked again
    assert (a.frames, b.frames) == (12, 12)
    raw = r.pose(SAMPLE, json_path=tmp_path / "c.json", pose_smoothing=0)
    assert len(counting) == 1
    assert json.loads((tmp_path / "a.json").read_text()) != json.loads((tmp_path / "c.json").read_text())

    entry.write_bytes(b"\x1f\x8b garbage")                                   # corrupt entry
    with caplog.at_level(logging.WARNING, logger="v2v"):
        d = r.pose(SAMPLE, json_path=tmp_path / "d.json", pose_smoothing=0)
    assert any("cache" in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)
    assert [c.frames for c in counting] == [12, 12]                         # detected again ...
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads((tmp_path / "c.json").read_text())
    assert _entries(tmp_path / "cache") == [entry]                           # ... and the entry rebuilt
    r.pose(SAMPLE, json_path=tmp_path / "e.json")
    assert len(counting) == 2

    r.pose(SAMPLE, json_path=tmp_path / "f.json", pose_cache=False)         # --no-cache
    r.pose(SAMPLE, json_path=tmp_path / "g.json", max_frames=8)             # other trimming: another key
    assert [c.frames for c in counting] == [12, 12, 12, 8]
    assert len(_entries(tmp_path / "cache")) == 2
    assert raw.frames == d.frames == 12


# ---------------------------------------------------------------- parts, threshold, empty frames

def test_parts_and_threshold(tmp_path, tiny_models):
    r = Restyler(models="tiny", size=64, max_frames=6, show_progress=False)
    res = r.pose(SAMPLE, json_path=tmp_path / "body.json", pose_parts="body")
    frames = json.loads((tmp_path / "body.json").read_text())
    people = [p for f in frames for p in f["people"]]
    assert people and all(p["hand_left_keypoints_2d"] == [] and p["face_keypoints_2d"] == [] for p in people)
    assert all(len(p["pose_keypoints_2d"]) == 54 for p in people)
    assert res.frames_without_people == 0
    # a high threshold: frames whose every point is at or below it give empty maps, counted, no error
    thr = 0.999
    res = r.pose(SAMPLE, png_dir=tmp_path / "png", json_path=tmp_path / "all.json", pose_threshold=thr)
    frames = json.loads((tmp_path / "all.json").read_text())
    visible = [any(c > thr for p in f["people"] for k in ("pose_keypoints_2d", "hand_left_keypoints_2d",
                                                          "hand_right_keypoints_2d", "face_keypoints_2d")
                   for c in p[k][2::3]) for f in frames]
    assert 0 < res.frames_without_people == visible.count(False)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [bool(cv2.imread(str(p)).any()) for p in pngs] == visible


# ---------------------------------------------------------------- `v2v pose`

def test_pose_command_outputs(tmp_path, tiny_models):
    out, js, png = tmp_path / "pose.mp4", tmp_path / "pose.json", tmp_path / "png"
    r = subprocess.run([sys.executable, "-m", "v2v", "pose", str(SAMPLE), "--models", "tiny", "--size", "64",
                        "--max-frames", "10", "-o", str(out), "--json", str(js), "--png", str(png)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert video_frames(out) == 10
    frames = json.loads(js.read_text())
    assert len(frames) == 10
    assert {(f["canvas_width"], f["canvas_height"]) for f in frames} == {(384, 512)}   # source display size
    assert len(list(png.glob("*.png"))) == 10
    assert "without people" in r.stdout


def test_api_exports_pose_names():
    assert v2v.RestyleOptions(prompt="x").pose == "dwpose"


def test_pose_detection_on_several_threads_gives_the_same_keypoints_in_order(tmp_path, tiny_models, monkeypatch):
    """The pose stage hands batches to several threads when the detector allows it (DWPose does); the keypoints
    and their order are those of one thread, and a detector without ``thread_safe`` stays on one thread."""
    import threading
    import time

    real = Restyler.pose_detector
    threads: list[set] = []

    class Recording:
        def __init__(self, inner, safe):
            self.inner, self.thread_safe, self.seen = inner, safe, set()

        def detect(self, images):
            self.seen.add(threading.get_ident())
            time.sleep(0.2)  # slower than decoding a batch: the next batch comes while this one is busy, so the
            #                  pool must use another thread (else, on a fast machine, one idle thread takes all)
            return self.inner.detect(images)

    def run(workers: str, safe: bool) -> list:
        monkeypatch.setenv("V2V_POSE_WORKERS", workers)

        def pose_detector(self, o, device):
            d = Recording(real(self, o, device), safe)
            threads.append(d.seen)
            return d

        monkeypatch.setattr(Restyler, "pose_detector", pose_detector)
        js = tmp_path / f"{workers}-{safe}.json"
        Restyler(models="tiny", size=64, pose_cache=False, show_progress=False).pose(SAMPLE, json_path=js,
                                                                                     max_frames=40)
        return json.loads(js.read_text())

    from v2v.pose.dwpose import DWPose

    assert DWPose.thread_safe is True
    one = run("1", True)
    assert len(threads[-1]) == 1
    many = run("3", True)
    assert len(threads[-1]) > 1  # 5 batches of 8 frames over 3 threads
    assert many == one and len(one) == 40
    run("3", False)
    assert len(threads[-1]) == 1



def test_pose_outputs_that_cannot_be_written_fail_before_detection(tmp_path, tiny_models, monkeypatch):
    # --png under a file, or a --json/--png folder that cannot be written: exit 4 (OutputError) before any frame
    # is detected; --png under a file was an internal error (exit 1) after the whole detection
    from v2v.media import outputs

    (tmp_path / "file").write_bytes(b"x")
    r = Restyler(models="tiny", show_progress=False)
    with pytest.raises(v2v.OutputError, match="--png"):
        r.pose(SAMPLE, png_dir=tmp_path / "file" / "maps")
    with pytest.raises(v2v.OutputError, match="is a file"):
        r.pose(SAMPLE, png_dir=tmp_path / "file")
    with pytest.raises(v2v.OutputError, match="is a folder"):  # an internal error after the detection before
        r.pose(SAMPLE, json_path=tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    real = outputs.writable
    monkeypatch.setattr(outputs, "writable", lambda folder: folder != locked and real(folder))
    with pytest.raises(v2v.OutputError, match="not writable"):
        r.pose(SAMPLE, json_path=locked / "p.json")
    with pytest.raises(v2v.OutputError, match="not writable"):
        r.pose(SAMPLE, png_dir=locked / "maps")
    assert r.loaded_detectors == []  # no detector was built
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "locked"] and list(locked.iterdir()) == []
