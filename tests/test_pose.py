"""Pose stage: keypoints + JSON, control-map drawing (vs controlnet_aux), DWPose maths and the tiny ONNX path."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
import types
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from v2v.errors import InvalidOptions, ModelLoadError, ModelNotFound
from v2v.pose import DWPose, FramePose, Person, load_pose_json, poses_from_json, poses_to_json, render_pose, \
    save_pose_json
from v2v.pose import dwpose as dw


# ------------------------------------------------------------------------------------------------ helpers

def make_person(rng, w, h, *, hands=True, face=True, missing=0.25) -> Person:
    def pts(n, cx, cy, spread):
        a = np.zeros((n, 3), np.float32)
        a[:, 0] = cx + rng.uniform(-spread, spread, n)
        a[:, 1] = cy + rng.uniform(-spread, spread, n)
        a[:, 2] = rng.uniform(0.35, 1.0, n)
        a[rng.random(n) < missing, 2] = rng.uniform(0.0, 0.3)   # below the drawing threshold
        return a
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    return Person(pts(18, cx, cy, 0.3 * min(w, h)),
                  pts(21, cx - 20, cy + 10, 25) if hands else None,
                  pts(21, cx + 20, cy + 10, 25) if hands else None,
                  pts(70, cx, cy - 30, 20) if face else None)


def assert_people_equal(a: list[Person], b: list[Person], atol=1e-4):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        for name, x in p.parts().items():
            y = q.parts()[name]
            assert (x is None) == (y is None), name
            if x is not None:
                np.testing.assert_allclose(x, y, atol=atol, err_msg=name)


# ---------------------------------------------------------------------------------------- keypoints + JSON

def test_person_shapes_and_dtype():
    p = Person(np.zeros((18, 3)), None, np.ones((21, 3)), None)
    assert p.body.dtype == np.float32 and p.hand_right.dtype == np.float32
    with pytest.raises(InvalidOptions):
        Person(np.zeros((17, 3)))
    with pytest.raises(InvalidOptions):
        Person(np.zeros((18, 3)), face=np.zeros((68, 3)))


def test_scaled_moves_coordinates_keeps_confidence():
    p = Person(np.tile([[100.0, 50.0, 0.7]], (18, 1)), face=np.tile([[10.0, 20.0, 0.9]], (70, 1)))
    fp = FramePose([p], 200, 100).scaled(400, 300)
    q = fp.people[0]
    assert (fp.width, fp.height) == (400, 300)
    np.testing.assert_allclose(q.body[0], [200.0, 150.0, 0.7], rtol=1e-6)
    np.testing.assert_allclose(q.face[0], [20.0, 60.0, 0.9], rtol=1e-6)
    assert q.hand_left is None
    np.testing.assert_allclose(p.body[0], [100.0, 50.0, 0.7], rtol=1e-6)   # the original is untouched


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = [FramePose([make_person(rng, 320, 240), make_person(rng, 320, 240, hands=False),
                         make_person(rng, 320, 240, face=False)], 320, 240),
              FramePose([], 320, 240)]
    frames[0].people[1].hand_right = np.asarray(rng.uniform(0, 1, (21, 3)) * [320, 240, 1], np.float32)
    obj = poses_to_json(frames)
    assert len(obj[0]["people"][0]["pose_keypoints_2d"]) == 54
    assert len(obj[0]["people"][0]["face_keypoints_2d"]) == 210
    assert len(obj[0]["people"][0]["hand_left_keypoints_2d"]) == 63
    assert obj[0]["canvas_width"] == 320 and obj[0]["canvas_height"] == 240
    back = poses_from_json(json.loads(json.dumps(obj)))
    assert [(f.width, f.height) for f in back] == [(320, 240), (320, 240)]
    for f, g in zip(frames, back):
        assert_people_equal(f.people, g.people, atol=0)
    assert back[0].people[1].hand_left is None and back[0].people[1].hand_right is not None
    path = save_pose_json(tmp_path / "sub" / "poses.json", frames)
    for f, g in zip(frames, load_pose_json(path)):
        assert_people_equal(f.people, g.people, atol=0)


def test_comfyui_style_json_import():
    body = np.zeros((18, 3))
    body[:, 0] = np.linspace(0.1, 0.9, 18)
    body[:, 1] = np.linspace(0.2, 0.8, 18)
    body[:, 2] = 1.0
    body[3] = 0.0                                   # a missing point
    frame = {"people": [{"pose_keypoints_2d": body.reshape(-1).tolist(), "face_keypoints_2d": None,
                         "hand_left_keypoints_2d": [], }],
             "canvas_width": 512, "canvas_height": 768}
    fps = poses_from_json([frame])
    p = fps[0].people[0]
    assert (fps[0].width, fps[0].height) == (512, 768)
    np.testing.assert_allclose(p.body[0], [0.1 * 512, 0.2 * 768, 1.0], rtol=1e-6)
    np.testing.assert_allclose(p.body[3], [0, 0, 0])
    assert p.hand_left is None and p.hand_right is None and p.face is None
    # a single frame object, pixel coordinates, 68-point face, BODY_25 body
    b25 = np.arange(75, dtype=float).reshape(25, 3) + 2
    face68 = np.tile([100.0, 120.0, 0.9], (68, 1))
    one = {"people": [{"pose_keypoints_2d": b25.reshape(-1).tolist(),
                       "face_keypoints_2d": face68.reshape(-1).tolist()}],
           "canvas_width": 640, "canvas_height": 480}
    q = poses_from_json(one)[0].people[0]
    np.testing.assert_allclose(q.body[8], b25[9])      # RHip: BODY_25 9 -> COCO 8 (MidHip dropped)
    np.testing.assert_allclose(q.body[17], b25[18])
    assert q.face.shape == (70, 3) and q.face[68:, 2].sum() == 0 and q.face[0, 0] == 100.0
    # OpenPose's own files have no canvas: the caller gives one
    no_canvas = {"version": 1.3, "people": [{"pose_keypoints_2d": b25.reshape(-1).tolist()}]}
    assert poses_from_json(no_canvas, 640, 480)[0].width == 640
    with pytest.raises(InvalidOptions):
        poses_from_json(no_canvas)


@pytest.mark.parametrize("bad", [
    42, [1, 2], [{"people": "x", "canvas_width": 1, "canvas_height": 1}],
    [{"people": [{"pose_keypoints_2d": [1.0] * 10}], "canvas_width": 10, "canvas_height": 10}],
    [{"people": [{"pose_keypoints_2d": ["a"] * 54}], "canvas_width": 10, "canvas_height": 10}],
    [{"people": [{"pose_keypoints_2d": [1.0] * 54, "hand_left_keypoints_2d": [1.0] * 60}],
      "canvas_width": 10, "canvas_height": 10}],
    [{"people": [], "canvas_width": -5, "canvas_height": 10}],
])
def test_bad_json_is_invalid_options(bad):
    with pytest.raises(InvalidOptions) as e:
        poses_from_json(bad)
    assert "\n" not in str(e.value)


def test_bad_json_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text("{not json")
    with pytest.raises(InvalidOptions) as e:
        load_pose_json(f)
    assert "\n" not in str(e.value) and "p.json" in str(e.value)
    with pytest.raises(InvalidOptions):
        load_pose_json(tmp_path / "missing.json")


# -------------------------------------------------------------------------------- render vs controlnet_aux

def _controlnet_aux_util():
    """controlnet_aux/open_pose/util.py loaded on its own (the top-level package imports every detector)."""
    pytest.importorskip("matplotlib")
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("controlnet_aux is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "open_pose" / "util.py"
    name = "_v2v_test_cnaux_open_pose"
    if name + ".util" in sys.modules:
        return sys.modules[name + ".util"]
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(path.parent)]
    body = types.ModuleType(name + ".body")   # util.py imports only these two names from body.py (torch, scipy)

    class Keypoint(NamedTuple):
        x: float
        y: float
        score: float = 1.0
        id: int = -1

    class BodyResult(NamedTuple):
        keypoints: list
        total_score: float
        total_parts: int

    body.Keypoint, body.BodyResult = Keypoint, BodyResult
    sys.modules[name], sys.modules[name + ".body"] = pkg, body
    uspec = importlib.util.spec_from_file_location(name + ".util", path)
    util = importlib.util.module_from_spec(uspec)
    sys.modules[name + ".util"] = util
    uspec.loader.exec_module(util)
    return util


def _reference_render(util, fp: FramePose, W, H, parts=("body", "hands", "face"), thr=0.3):
    """controlnet_aux's draw_poses (open_pose/__init__.py) on controlnet_aux keypoints (normalised, None/-1)."""
    K = util.Keypoint
    cw, ch = float(fp.width), float(fp.height)
    canvas = np.zeros((H, W, 3), np.uint8)
    for p in fp.people:
        body = [K(float(x) / cw, float(y) / ch) if c > thr else None for x, y, c in p.body]
        hands = [None if hd is None else [K(float(x) / cw, float(y) / ch) if c > thr else K(-1.0, -1.0)
                                          for x, y, c in hd] for hd in (p.hand_left, p.hand_right)]
        face = None if p.face is None else [K(float(x) / cw, float(y) / ch) if c > thr else K(-1.0, -1.0)
                                            for x, y, c in p.face]
        if "body" in parts:
            canvas = util.draw_bodypose(canvas, body)
        if "hands" in parts:
            canvas = util.draw_handpose(canvas, hands[0])
            canvas = util.draw_handpose(canvas, hands[1])
        if "face" in parts:
            canvas = util.draw_facepose(canvas, face)
    return canvas


@pytest.mark.parametrize("size", [(320, 240), (512, 512), (200, 333)])
def test_render_matches_controlnet_aux(size):
    util = _controlnet_aux_util()
    rng = np.random.default_rng(size[0])
    cw, ch = 320, 240
    people = [make_person(rng, cw, ch), make_person(rng, cw, ch, hands=False),
              make_person(rng, cw, ch, face=False, missing=0.5), make_person(rng, cw, ch)]
    # points on and beyond the edges, a body point far outside, a hand point at the origin
    people[0].body[0, :2] = [-15.0, 10.0]
    people[0].body[1, :2] = [cw + 30.0, ch - 1.0]
    people[3].hand_left[0, :2] = [0.0, 0.0]
    people[3].face[5, :2] = [0.2, 100.0]
    fp = FramePose(people, cw, ch)
    W, H = size
    ours = render_pose(fp, W, H)
    ref = _reference_render(util, fp, W, H)
    assert ours.shape == (H, W, 3) and ours.dtype == np.uint8
    assert (ours > 0).any(axis=2).mean() > 0.02             # something was drawn
    assert np.array_equal(ours, ref), f"{int((ours != ref).any(axis=2).sum())} pixels differ"
    for parts in [("body",), ("hands",), ("face",), ("body", "face")]:
        assert np.array_equal(render_pose(fp, W, H, parts=parts), _reference_render(util, fp, W, H, parts))


def test_render_colours_threshold_and_empty():
    body = np.zeros((18, 3), np.float32)
    body[1] = [50, 50, 1.0]       # neck
    body[2] = [90, 50, 1.0]       # right shoulder: limb 0 (neck - right shoulder), colour (153, 0, 0)
    fp = FramePose([Person(body)], 200, 100)
    img = render_pose(fp, 200, 100)
    assert tuple(img[50, 70]) == (153, 0, 0)                 # the limb, at 0.6 of red
    assert tuple(img[50, 50]) == (255, 85, 0)                # the neck dot (colour 1)
    assert tuple(img[50, 90]) == (255, 170, 0)               # the right shoulder dot (colour 2)
    body[2, 2] = 0.3                                         # at the threshold: not drawn
    img = render_pose(FramePose([Person(body)], 200, 100), 200, 100)
    assert not img[50, 70].any() and img[50, 50].any()
    assert not render_pose(FramePose([], 200, 100), 64, 32).any()
    with pytest.raises(InvalidOptions):
        render_pose(fp, 64, 64, parts=("feet",))


# -------------------------------------------------------------------------------------------- DWPose maths

def test_letterbox_bgr_pad_and_ratio():
    img = np.zeros((160, 320, 3), np.uint8)
    img[..., 0] = 255                                        # pure red (RGB)
    x, r = dw.letterbox(img)
    assert x.shape == (3, 640, 640) and x.dtype == np.float32 and r == 2.0
    assert x[2, 0, 0] == 255 and x[0, 0, 0] == 0             # BGR: red is channel 2
    assert np.all(x[:, 320:, :] == 114) and np.all(x[:, :320, :] != 114)


def test_yolox_decode_known_box():
    raw = np.zeros((1, 8400, 85), np.float32)
    row = 80 * 80 + 40 * 40 + 2 * 20 + 3                    # stride 32, cell x=3, y=2
    raw[0, row, :4] = [0.5, 0.5, math.log(2.0), math.log(3.0)]
    raw[0, row, 4] = 0.9
    raw[0, row, 5] = 0.8
    raw[0, 5, :4] = [0.0, 0.0, 0.0, 0.0]                     # stride 8, cell x=5, y=0
    boxes, scores = dw.decode_yolox(raw)
    np.testing.assert_allclose(boxes[0, row], [112 - 32, 80 - 48, 112 + 32, 80 + 48], atol=1e-4)
    np.testing.assert_allclose(boxes[0, 5], [40 - 4, -4, 40 + 4, 4], atol=1e-5)
    assert scores.shape == (1, 8400, 80) and scores[0, row, 0] == pytest.approx(0.72)
    kept = dw.person_boxes(boxes[0], scores[0], ratio=0.5)
    np.testing.assert_allclose(kept, [[160, 64, 288, 256]], atol=1e-3)   # back to image pixels
    # the person column alone (what the detector asks for): the same boxes, the same scores
    raw[0, :, 5:] = np.random.default_rng(1).random((8400, 80), dtype=np.float32) * 0.1
    boxes, scores = dw.decode_yolox(raw)
    b1, person = dw.decode_yolox(raw, classes=(dw.PERSON_CLASS,))
    b2, picked = dw.decode_yolox(raw, classes=(7, 0))
    assert person.shape == (1, 8400, 1) and np.array_equal(b1, boxes)
    assert np.array_equal(person[..., 0], scores[..., 0]) and np.array_equal(picked, scores[..., [7, 0]])
    np.testing.assert_array_equal(dw.person_boxes(boxes[0], person[0, :, 0], ratio=0.5),
                                  dw.person_boxes(boxes[0], scores[0], ratio=0.5))


def test_nms_and_person_filter():
    boxes = np.array([[0, 0, 100, 100],       # best
                      [5, 5, 105, 105],       # IoU ~0.82 with the best: removed
                      [200, 200, 260, 300],   # disjoint: kept
                      [0, 0, 100, 90],        # overlaps, lower: removed
                      [60, 0, 160, 100]],     # IoU ~0.25 with the best: kept
                     np.float32)
    s = np.array([0.9, 0.8, 0.7, 0.95 * 0.5, 0.6])
    assert dw.nms(boxes, s, 0.45).tolist() == [0, 2, 4]
    scores = np.zeros((5, 80), np.float32)
    scores[:, 0] = s
    scores[2, 0], scores[2, 7] = 0.2, 0.99                   # box 2 is a truck-ish thing, not a person
    kept = dw.person_boxes(boxes, scores, ratio=1.0)
    np.testing.assert_allclose(kept, boxes[[0, 4]])
    assert dw.person_boxes(boxes, scores * 0.1, ratio=1.0).shape == (0, 4)


def _reference_warp(center, scale, size):
    """DWPose onnxpose.get_warp_matrix (rot 0), rewritten from its three-point construction."""
    src_w, (dst_w, dst_h) = scale[0], size
    src = np.array([center, center + [0.0, -0.5 * src_w], [0, 0]], np.float32)
    d = src[0] - src[1]
    src[2] = src[1] + [-d[1], d[0]]
    dst = np.array([[dst_w / 2, dst_h / 2], [dst_w / 2, dst_h / 2 - 0.5 * dst_w], [0, 0]], np.float32)
    d = dst[0] - dst[1]
    dst[2] = dst[1] + [-d[1], d[0]]
    return cv2.getAffineTransform(src, dst)


def test_affine_crop_known_pixel():
    center, scale = dw.box_center_scale(np.array([[100, 140, 200, 260]]))   # 100x120 box
    np.testing.assert_allclose(center, [[150, 200]])
    np.testing.assert_allclose(scale, [[125, 125 / 0.75]])   # padded 125 x 150, widened to the 288:384 aspect
    center, scale = np.array([[150.0, 200.0]]), np.array([[144.0, 192.0]])      # crop scale: 2 px per px
    m = dw.crop_matrices(center, scale)
    np.testing.assert_allclose(m[0], _reference_warp(center[0], scale[0], (288, 384)), atol=1e-3)
    img = np.zeros((400, 300, 3), np.uint8)
    img[205, 160] = 255                                       # (x=160, y=205) -> crop (164, 202)
    crop = dw.crop_people(img, m)[0]
    assert crop.shape == (384, 288, 3)
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert (x, y) == (164, 202)
    back = dw.crop_to_image(np.array([[[164.0, 202.0], [144.0, 192.0]]]), center, scale)
    np.testing.assert_allclose(back[0], [[160, 205], [150, 200]], atol=1e-4)
    norm = dw.normalise_crops(crop[None])
    assert norm.shape == (1, 3, 384, 288)
    assert norm[0, 0, 202, 164] == pytest.approx((255 - 123.675) / 58.395, rel=1e-5)


def test_simcc_decode_known_peak():
    sx = np.zeros((2, 133, 576), np.float32)
    sy = np.zeros((2, 133, 768), np.float32)
    sx[0, 5, 300], sy[0, 5, 400] = 0.9, 0.8
    sx[1, 0, 10], sy[1, 0, 700] = 0.4, 0.6
    kp, sc = dw.decode_simcc(sx, sy)
    assert kp.shape == (2, 133, 2) and sc.shape == (2, 133)
    np.testing.assert_allclose(kp[0, 5], [150, 200])
    assert sc[0, 5] == pytest.approx(0.8) and sc[1, 0] == pytest.approx(0.4)
    np.testing.assert_allclose(kp[1, 0], [5, 350])
    np.testing.assert_allclose(kp[0, 6], [-0.5, -0.5])       # no response: location -1 before the split ratio
    assert sc[0, 6] == 0
    img_kp = dw.crop_to_image(kp, np.array([[150.0, 200.0], [0, 0]]), np.array([[144.0, 192.0], [288, 384]]))
    np.testing.assert_allclose(img_kp[0, 5], [150 / 288 * 144 + 150 - 72, 200 / 384 * 192 + 200 - 96])


def test_wholebody_to_openpose_mapping():
    kp = np.stack([np.arange(133), 1000 + np.arange(133)], -1)[None].astype(np.float32)
    sc = np.linspace(0.05, 0.95, 133)[None].astype(np.float32)
    sc[0, 6] = -0.2                                           # negative scores become 0
    (p,) = dw.wholebody_to_openpose(kp, sc)
    # controlnet_aux dwpose/wholebody.py's rule, replayed: insert the neck at 17, then permute
    info = np.concatenate([kp, sc[..., None]], -1)
    neck = info[:, [5, 6]].mean(1)
    new = np.insert(info, 17, neck, axis=1)
    mm = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]
    op = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
    new[:, op] = new[:, mm]
    np.testing.assert_allclose(p.body[:, :2], new[0, :18, :2])
    np.testing.assert_allclose(p.body[[0, 2, 14], 0], [0, 6, 2])       # nose, right shoulder, right eye
    assert p.body[1, 2] == 0.0                                           # neck = min(l_sho, r_sho) = 0
    assert p.body[2, 2] == 0.0 and p.body[5, 2] == pytest.approx(sc[0, 5])
    np.testing.assert_allclose(p.hand_left[:, 0], np.arange(91, 112))
    np.testing.assert_allclose(p.hand_right[:, 0], np.arange(112, 133))
    np.testing.assert_allclose(p.face[:68, 0], np.arange(23, 91))
    np.testing.assert_allclose(p.face[:68, 2], sc[0, 23:91])
    assert np.all(p.face[68:] == 0)                                      # pupils: missing


# ---------------------------------------------------------------------------------------- tiny ONNX models

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from v2v.tiny.pose import write_tiny_dwpose
    d = tmp_path_factory.mktemp("dwpose")
    write_tiny_dwpose(d)
    return d


def _person_image(h=240, w=320):
    img = np.full((h, w, 3), 40, np.uint8)
    img[h // 6: h - h // 6, w // 3: w // 3 + w // 5] = (230, 210, 200)   # a bright upright "person"
    return img


def test_tiny_models_files_and_io(tiny_dir, tmp_path):
    import onnxruntime as ort
    from v2v.tiny.pose import write_tiny_dwpose
    det, pose = tiny_dir / "yolox_l.onnx", tiny_dir / "dw-ll_ucoco_384.onnx"
    assert det.stat().st_size < 1_000_000 and pose.stat().st_size < 1_000_000
    write_tiny_dwpose(tmp_path)
    assert (tmp_path / "yolox_l.onnx").read_bytes() == det.read_bytes()   # deterministic
    s = ort.InferenceSession(str(pose), providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["input"]
    assert [o.name for o in s.get_outputs()] == ["simcc_x", "simcc_y"]
    x, y = s.run(None, {"input": np.zeros((3, 3, 384, 288), np.float32)})
    assert x.shape == (3, 133, 576) and y.shape == (3, 133, 768)
    s = ort.InferenceSession(str(det), providers=["CPUExecutionProvider"])
    (out,) = s.run(None, {"images": np.full((1, 3, 640, 640), 114, np.float32)})
    assert out.shape == (1, 8400, 85) and np.all((out[..., 4:] >= 0) & (out[..., 4:] <= 1))


def test_tiny_end_to_end(tiny_dir):
    d = DWPose.from_spec(str(tiny_dir))
    calls = []
    run = d.pose.run

    class Counting:
        output_names = d.pose.output_names

        def run(self, x):
            calls.append(x.shape[0])
            return run(x)

    d.pose = Counting()
    images = [_person_image(), np.zeros((120, 200, 3), np.uint8), _person_image(200, 300)]
    frames = d.detect(images)
    assert len(frames) == 3
    assert [(f.width, f.height) for f in frames] == [(320, 240), (200, 120), (300, 200)]
    assert len(frames[0].people) >= 1 and len(frames[2].people) >= 1
    assert frames[1].people == []                           # black image: no person, no error
    assert len(calls) == 1 and calls[0] == len(frames[0].people) + len(frames[2].people)   # one batched call
    for f in frames:
        for p in f.people:
            assert p.body.shape == (18, 3) and p.hand_left.shape == (21, 3) and p.hand_right.shape == (21, 3)
            assert p.face.shape == (70, 3) and p.body.dtype == np.float32
            assert np.all(np.isfinite(p.body)) and np.all((p.body[:, 2] >= 0) & (p.body[:, 2] <= 1))
            assert 0 < np.ptp(p.body[:, 2])                  # real, varied confidences
    img = render_pose(frames[0], 320, 240)
    assert img.shape == (240, 320, 3) and img.any()
    # JSON of real detections round-trips
    back = poses_from_json(json.loads(json.dumps(poses_to_json(frames))))
    for f, g in zip(frames, back):
        assert_people_equal(f.people, g.people, atol=1e-4)
    assert d.detect([]) == []


def test_known_answer_through_detect(tiny_dir):
    """Fake model outputs (one box, one peak per point): the keypoints land where the maths says."""
    d = DWPose(tiny_dir / "yolox_l.onnx", tiny_dir / "dw-ll_ucoco_384.onnx")

    class Det:
        def run(self, x):
            raw = np.zeros((1, 8400, 85), np.float32)
            row = 6400 + 1600 + 5 * 20 + 4                    # stride 32 cell (4, 5): centre (144, 160)
            raw[0, row, :4] = [0.5, 0.0, math.log(3.0), math.log(4.0)]   # 96 x 128 in the 640 input
            raw[0, row, 4:6] = [0.95, 0.95]
            return [raw]

    class Pose:
        output_names = ["simcc_x", "simcc_y"]

        def run(self, x):
            n = x.shape[0]
            sx = np.zeros((n, 133, 576), np.float32)
            sy = np.zeros((n, 133, 768), np.float32)
            sx[:, :, 288], sy[:, :, 384] = 0.9, 0.7           # every point at the crop centre
            return [sx, sy]

    d.det, d.pose = Det(), Pose()
    img = np.zeros((320, 640, 3), np.uint8)                   # ratio 1
    (f,) = d.detect([img])
    assert len(f.people) == 1
    p = f.people[0]
    np.testing.assert_allclose(p.body[0], [144, 160, 0.7], atol=1e-3)   # the box centre
    np.testing.assert_allclose(p.face[10], [144, 160, 0.7], atol=1e-3)
    np.testing.assert_allclose(p.body[1], [144, 160, 0.7], atol=1e-3)   # neck


def test_no_person_when_scores_low(tiny_dir):
    d = DWPose(tiny_dir / "yolox_l.onnx", tiny_dir / "dw-ll_ucoco_384.onnx")
    real = d.det

    class Low:
        def run(self, x):
            out = real.run(x)[0].copy()
            out[..., 4] *= 0.1                                  # objectness forced low
            return [out]

    d.det = Low()
    (f,) = d.detect([_person_image()])
    assert f.people == [] and (f.width, f.height) == (320, 240)


def test_models_missing_or_corrupt(tmp_path, tiny_dir, caplog):
    with pytest.raises(ModelNotFound):
        DWPose.from_spec(str(tmp_path / "nowhere"))
    (tmp_path / "yolox_l.onnx").write_bytes(b"not an onnx file")
    (tmp_path / "dw-ll_ucoco_384.onnx").write_bytes((tiny_dir / "dw-ll_ucoco_384.onnx").read_bytes())
    with pytest.raises(ModelLoadError) as e:
        DWPose.from_spec(str(tmp_path))
    assert "\n" not in str(e.value)
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with caplog.at_level(logging.WARNING, logger="v2v"):
            d = DWPose.from_spec(str(tiny_dir), device="cuda")
        assert len([r for r in caplog.records if "CUDA" in r.getMessage()]) == 1
        assert d.providers == ["CPUExecutionProvider"]
    with pytest.raises(InvalidOptions):
        DWPose.from_spec(str(tiny_dir)).detect([np.zeros((10, 10), np.uint8)])


def reference_person_boxes(boxes: np.ndarray, scores: np.ndarray, ratio: float) -> np.ndarray:
    """DWPose's detector post-processing for the person class (IDEA-Research/DWPose, annotator/dwpose/onnxdet.py,
    inference_detector and its class-aware NMS), restated: the candidates scoring above 0.1, in the order numpy's
    ``argsort()[::-1]`` gives their scores, greedy NMS at IoU 0.45 (areas with +1 pixel), then the kept boxes
    scoring above 0.3, in float32 as the network's outputs are."""
    s = scores[:, 0]
    b, s = boxes[s > 0.1] / ratio, s[s > 0.1]
    x1, y1, x2, y2 = b.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = s.argsort()[::-1], []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        order = rest[w * h / (area[best] + area[rest] - w * h) <= 0.45]
    keep = np.asarray(keep, dtype=np.int64)
    return b[keep[s[keep] > 0.3]]


def test_equal_scores_keep_the_people_the_reference_keeps():
    """Two overlapping boxes of the same score: the reference takes them in argsort()[::-1] order, the later one
    first, and keeps it (a stable descending sort kept the other)."""
    boxes = np.array([[0, 0, 100, 200], [4, 0, 104, 200]], np.float32)
    scores = np.array([[0.9], [0.9]], np.float32)
    np.testing.assert_array_equal(dw.person_boxes(boxes, scores, ratio=1.0), boxes[[1]])
    np.testing.assert_array_equal(reference_person_boxes(boxes, scores, 1.0), boxes[[1]])


@pytest.mark.parametrize("seed", range(20))
def test_person_boxes_equal_the_reference_with_many_equal_scores(seed):
    """Crowds of overlapping boxes whose scores take a few values, candidates between 0.1 and 0.3 among them
    (they are sorted with the rest in the reference): the same boxes, in the same order."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    xy = rng.uniform(0, 400, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(30, 120, (n, 2)).astype(np.float32)], 1)
    scores = rng.choice(np.array([0.05, 0.15, 0.2, 0.5, 0.75, 0.9], np.float32), (n, 1))
    np.testing.assert_array_equal(dw.person_boxes(boxes, scores, ratio=0.5),
                                  reference_person_boxes(boxes, scores, 0.5))
