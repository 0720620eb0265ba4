"""Every input of a run shows in its output: whole runs (``Restyler.restyle``, the tiny models, PNG frames), one
test per input. Changing the input moves some pixel by at least FACTOR times the equality tests' tolerance;
leaving it alone (the same value given again, or spelled another way) leaves the frames bit-identical.
docs/testing.md lists the factor each input reaches (``python tests/test_inputs.py`` prints them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import v2v

import media

TOLERANCE = 1  # levels in 255: output frames equal diffusers' within this (test_sampler.py, test_control_path.py)
FACTOR = 100  # an input that changes moves some pixel by FACTOR * TOLERANCE levels at least
W, H, N = 80, 64, 6  # the clip: one motion window, 10 x 8 latents

# Files the cases name, made by Runs: the poses of each frame, the same poses one frame late (frame i gets frame
# i + 1's), other poses, the same poses plus a person with no point drawn; another source clip and a copy of the
# clip; a motion LoRA; the 1-step motion module; the base's own VAE and another one.
POSES, LATE, OTHER_POSES, UNSEEN = "@poses", "@late", "@other_poses", "@unseen"
NEGATED, COPY, LORA, ONE_STEP, OWN_VAE, OTHER_VAE = "@negated", "@copy", "@lora", "@one_step", "@own_vae", "@vae"

# input: (the base run, the input changed, the input left alone), each as changes to Runs.BASE
CASES = {
    "pose maps": ({}, {"pose_json": OTHER_POSES}, {"pose_json": UNSEEN}),
    "which frame gets which map": ({}, {"pose_json": LATE}, {"pose_json": UNSEEN}),
    "prompt": ({}, {"prompt": "a knight"}, {"prompt": "A Robot"}),  # CLIP's tokenizer lower-cases
    "negative prompt (CFG)": ({"guidance": 2.0, "negative_prompt": "blurry photo"},
                              {"guidance": 2.0, "negative_prompt": "a bright photo"},
                              {"guidance": 2.0, "negative_prompt": "Blurry Photo"}),
    "seed": ({}, {"seed": 1}, {"seed": np.int64(0)}),
    "motion module": ({}, {"lightning": 2}, {"motion": ONE_STEP}),
    "motion LoRA": ({}, {"motion_loras": (f"{LORA}:0.8",)}, {"motion_loras": (f"{LORA}:0",)}),
    "motion LoRA strength": ({"motion_loras": (f"{LORA}:0.8",)}, {"motion_loras": (f"{LORA}:0.4",)},
                             {"motion_loras": (f"{LORA}:0.8",)}),
    "VAE": ({}, {"vae": OTHER_VAE}, {"vae": OWN_VAE}),
    "ControlNet scale": ({}, {"pose_strength": 0.5}, {"pose_strength": 1}),
    "ControlNet start": ({"steps": 2}, {"steps": 2, "control_start": 0.5}, {"steps": 2, "control_start": 0}),
    "ControlNet end": ({"steps": 4}, {"steps": 4, "control_end": 0.5}, {"steps": 4, "control_end": 1}),
    "source latents (--strength)": ({"steps": 2, "strength": 0.5}, {"steps": 2, "strength": 0.5, "clip": NEGATED},
                                    {"steps": 2, "strength": 0.5, "clip": COPY}),
    "prompt travel keyframes": ({"prompt_at": "0:a robot;1:a knight"}, {"prompt_at": "0:a robot;5:a knight"},
                                {"prompt_at": "1:a knight"}),  # -p 'a robot' holds until the first keyframe
}


def random_poses(seed: int, n: int) -> list[dict]:
    """OpenPose JSON frames: one person per frame, every body point somewhere else in each frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        body = np.concatenate([rng.uniform(2, W - 2, (18, 1)), rng.uniform(2, H - 2, (18, 1)), np.ones((18, 1))], 1)
        frames.append({"people": [{"pose_keypoints_2d": body.round(2).ravel().tolist()}],
                       "canvas_width": W, "canvas_height": H})
    return frames


class Runs:
    """The clips, pose files and models the cases name, and one Restyler; ``frames(changes)`` runs BASE with them."""

    BASE = dict(prompt="a robot", steps=1, seed=0, format="png", pose_json=POSES)

    def __init__(self, folder: Path, tiny: dict):
        from v2v.models.motion import lightning_filename
        from v2v.tiny.diffusion import write_tiny_motion_lora

        self.folder = folder
        clip = media.make_video(folder / "clip.mp4", seconds=N / 25, fps=25, size=(W, H))
        poses = random_poses(1, N + 1)
        unseen = [{**f, "people": f["people"] + [{"pose_keypoints_2d": [5.0, 5.0, 0.0] * 18}]} for f in poses[:N]]
        self.files = {
            "@clip": clip, COPY: shutil.copyfile(clip, folder / "copy.mp4"),
            NEGATED: media.make_video(folder / "negated.mp4", seconds=N / 25, fps=25, size=(W, H),
                                      extra=("-vf", "negate")),
            POSES: self._json("poses", poses[:N]), LATE: self._json("late", poses[1:]),
            OTHER_POSES: self._json("other", random_poses(2, N)), UNSEEN: self._json("unseen", unseen),
            LORA: write_tiny_motion_lora(folder / "lora", fmt="diffusers"),
            ONE_STEP: tiny["motion"] / lightning_filename(1), OWN_VAE: tiny["base"] / "vae", OTHER_VAE: tiny["vae"],
        }
        self.restyler = v2v.Restyler(models="tiny", show_progress=False, size=64)
        self.count = 0
        self.bases: dict[str, np.ndarray] = {}

    def _json(self, name: str, frames: list[dict]) -> Path:
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(frames))
        return path

    def _named(self, value):
        if isinstance(value, tuple):
            return tuple(self._named(v) for v in value)
        if isinstance(value, str) and value.startswith("@"):
            name, _, rest = value.partition(":")
            return str(self.files[name]) + (f":{rest}" if rest else "")
        return value

    def frames(self, changes: dict) -> np.ndarray:
        """(N, H, W, 3) uint8: the PNG frames of a run of BASE with ``changes``."""
        self.count += 1
        options = {k: self._named(v) for k, v in {**self.BASE, "clip": "@clip", **changes}.items()}
        clip = options.pop("clip")
        out = self.restyler.restyle(clip, self.folder / f"run{self.count}/", **options).output
        return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])

    def base(self, changes: dict) -> np.ndarray:
        """frames(changes), run once for the cases that share it."""
        key = repr(sorted(changes.items()))
        if key not in self.bases:
            self.bases[key] = self.frames(changes)
        return self.bases[key]


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("inputs"), tiny_models)


def moved(a: np.ndarray, b: np.ndarray) -> int:
    """The most any pixel value moved, in levels."""
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("name", list(CASES))
def test_input_shows_in_the_frames(runs, name):
    base_changes, changed, left_alone = CASES[name]
    base = runs.base(base_changes)
    assert base.shape == (N, H, W, 3) and base.std() > 20, "the base run's frames are flat"
    levels = moved(base, runs.frames(changed))
    assert levels >= FACTOR * TOLERANCE, f"{name}: changing it moved the frames by {levels} levels only"
    assert np.array_equal(runs.frames(left_alone), base), f"{name}: left alone, the frames changed"


def test_a_frame_late_shows_before_the_last_frame(runs):
    """Each frame given its neighbour's map moves the frames that have a map of their own, not only the last."""
    base = runs.base({})
    late = runs.frames({"pose_json": LATE})
    assert moved(base[:-1], late[:-1]) >= FACTOR * TOLERANCE


def test_a_run_equals_the_diffusers_pipeline_given_the_maps_of_its_poses(runs, tiny_models):
    """The whole path (pose JSON, control maps, sampler with CFG, VAE, PNG frames) gives the frames of diffusers'
    AnimateDiffControlNetPipeline on the same models, prompts, seed and scale, fed the maps render_pose draws
    from the same poses (render_pose is checked against controlnet_aux's drawing in test_pose.py). A map given
    to the wrong frame or in the wrong colour order, CFG's negative branch dropped or the scale lost show here."""
    from test_sampler import run_pipeline

    from v2v.models.load import load_diffusion_models
    from v2v.pose.keypoints import load_pose_json
    from v2v.pose.render import render_pose

    kw = dict(prompt="a robot", negative_prompt="blurry photo", guidance=2.0, pose_strength=0.8, steps=2, seed=3)
    got = runs.frames({**kw, "pose_smoothing": 0.0})
    maps = np.stack([render_pose(p, W, H) for p in load_pose_json(runs.files[POSES], W, H)])
    models = load_diffusion_models(tiny_models["base"], tiny_models["motion"], tiny_models["controlnet"],
                                   lightning_steps=2)
    _, want = run_pipeline(models, frames=maps, **kw)
    want = np.round(want * 255).astype(np.int16)
    assert got.shape == want.shape and moved(got, want) <= TOLERANCE


if __name__ == "__main__":  # the factor each input reaches, for docs/testing.md
    import os
    import tempfile

    from v2v.tiny import tiny_model_paths

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("V2V_TINY_DIR", str(Path(tmp) / "tiny"))
        r = Runs(Path(tmp), tiny_model_paths())
        print(f"{'input':30s} {'max levels':>10s} {'factor':>7s} {'mean':>6s} {'moved':>6s}")
        for name, (b, c, _) in CASES.items():
            a, d = r.base(b).astype(np.int16), r.frames(c).astype(np.int16)
            diff = np.abs(a - d)
            print(f"{name:30s} {diff.max():10d} {diff.max() / TOLERANCE:7.0f} {diff.mean():6.1f} "
                  f"{(diff > TOLERANCE).mean():6.0%}")
