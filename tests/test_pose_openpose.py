"""OpenPose through controlnet_aux's networks: tiny .pth files through the real loading code, known answers."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from v2v.errors import ModelLoadError, ModelNotFound
from v2v.pose.openpose import OpenPose, controlnet_aux_open_pose

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def op_dir(tiny_models):
    return tiny_models["openpose"]


def test_tiny_files_load_through_the_real_loader(op_dir):
    assert all((op_dir / f).stat().st_size < 1_000_000 for f in
               ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"))
    assert "controlnet_aux" not in sys.modules              # its top-level package (every detector) never ran
    d = OpenPose.from_spec(str(op_dir), parts=("body",))
    assert d.hand is None and d.face is None               # parts not asked for are not loaded
    (f,) = d.detect([np.zeros((48, 64, 3), np.uint8)])
    assert (f.width, f.height) == (64, 48) and f.people == []   # random weights: nobody, and no error


def test_missing_or_unsafe_files(tmp_path, op_dir):
    with pytest.raises(ModelNotFound):
        OpenPose.from_spec(str(tmp_path))
    for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        (tmp_path / name).write_bytes((op_dir / name).read_bytes())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (tmp_path / "body_pose_model.pth").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ModelLoadError) as e:                  # weights_only=True refuses arbitrary objects
        OpenPose.from_spec(str(tmp_path))
    assert "\n" not in str(e.value) and "body_pose_model.pth" in str(e.value)


def test_known_answer_mapping_with_real_hand_network(op_dir):
    """A fake body result and face heatmaps: keypoints, confidences and the 70 face rows land where expected."""
    d = OpenPose.from_spec(str(op_dir))
    m = controlnet_aux_open_pose()
    # one person, standing, facing the camera, in a 200x300 image (OpenPose COCO-18 order)
    pts = {0: (100, 40), 1: (100, 80), 2: (70, 80), 3: (60, 130), 4: (55, 180), 5: (130, 80), 6: (140, 130),
           7: (145, 180), 8: (80, 170), 9: (80, 230), 10: (80, 290), 11: (120, 170), 12: (120, 230),
           13: (120, 290), 14: (92, 32), 15: (108, 32), 16: (84, 38), 17: (116, 38)}
    candidate = np.array([[x, y, 0.5 + k / 40, k] for k, (x, y) in sorted(pts.items())], np.float64)
    subset = np.array([list(range(18)) + [10.0, 18]], np.float64)
    subset[0, 7] = -1                                        # one wrist not found: one hand crop only (fast)
    candidate[7, 2] = 0.0

    class Body:
        def __call__(self, img):
            return candidate, subset

    class Face:
        def __call__(self, crop):
            h = np.zeros((71, crop.shape[0], crop.shape[1]), np.float32)
            h[10, 5, 7] = 0.8                                # landmark 10 at crop (7, 5)
            h[20, 1, 1] = 0.04                               # below controlnet_aux's 0.05: missing
            return h

    d.body, d._face_heatmaps = Body(), Face()  # the face network's step (v2v's float32 call of it)
    (f,) = d.detect([np.full((300, 200, 3), 90, np.uint8)])
    (p,) = f.people
    found = np.arange(18) != 7
    np.testing.assert_allclose(p.body[found, :2], candidate[found, :2])
    np.testing.assert_allclose(p.body[found, 2], candidate[found, 2], rtol=1e-6)   # real scores, not 1.0
    np.testing.assert_array_equal(p.body[7], [0, 0, 0])                          # missing: confidence 0
    x, y, w = m.util.faceDetect(m.body.Body.format_body_result(candidate, subset)[0], np.zeros((300, 200, 3)))
    assert p.face.shape == (70, 3)
    np.testing.assert_allclose(p.face[10], [x + 7, y + 5, 0.8], rtol=1e-6)
    assert p.face[20, 2] == 0 and (p.face[:, 2] > 0).sum() == 1
    hands = [h for h in (p.hand_left, p.hand_right) if h is not None]
    assert len(hands) == 1                                   # the real (tiny) hand network ran on the one crop
    for hand in hands:
        assert hand.shape == (21, 3)
        assert np.all((hand[:, 2] >= 0) & (hand[:, 2] <= 1))
        assert np.all(hand[hand[:, 2] == 0] == 0)            # missing points are (0, 0, 0)


def test_pose_command_with_openpose_on_fake_hub(tmp_path, fake_hub):
    import json
    import subprocess

    js = tmp_path / "p.json"
    env = {"HF_HUB_CACHE": str(fake_hub), "HF_HUB_OFFLINE": "1"}
    import os
    r = subprocess.run([sys.executable, "-m", "v2v", "pose", str(ROOT / "samples" / "dance.mp4"), "--pose",
                        "openpose", "--pose-parts", "body", "--size", "64", "--max-frames", "2", "--json", str(js)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    frames = json.loads(js.read_text())
    assert len(frames) == 2 and frames[0]["canvas_width"] == 384
