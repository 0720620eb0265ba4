"""The mutation check: deliberate bugs, each a small patch on the code, applied one at a time to a temporary copy
of the checkout (never to the working tree), with the tests that should catch it run against each. A mutant is
killed when its tests fail; every one must be. Run on demand, not in CI (docs/testing.md gives the last score):

    python scripts/mutants.py                 # every mutant
    python scripts/mutants.py --list          # their names and bugs
    python scripts/mutants.py NAME [NAME...]  # some of them

The tests first run once on the unpatched copy (they must pass there, or a kill means nothing); the tiny models
are built once for every run (V2V_TEST_TINY_DIR, which tests/conftest.py honours). Exit status: 0 when every
mutant was killed, 1 when any survived or its tests could not run, 2 when the unpatched code fails them.
tests/test_mutants.py checks, in the default test run, that every mutant's old text still occurs exactly once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what the patch breaks, in words
    file: str  # relative to the checkout
    old: str  # exact text, occurring once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids or files that should fail


E2E = "tests/test_inputs.py::test_a_run_equals_the_diffusers_pipeline_given_the_maps_of_its_poses"
EQUAL_1W = "tests/test_sampler.py::test_one_window_equals_diffusers_pipeline"
INPUTS = "tests/test_inputs.py::test_input_shows_in_the_frames"

MUTANTS: tuple[Mutant, ...] = (
    # --- the control path
    Mutant("map-late-in-segment", "each frame of a segment gets the next frame's pose map (the last its own)",
           "v2v/sampler.py", "cond = maps(seg.frames)", "cond = maps(seg.frames[1:] + seg.frames[-1:])",
           (EQUAL_1W, E2E)),
    Mutant("map-late-in-cache", "the control-map cache hands each frame its neighbour's map",
           "v2v/stages/generate.py", "held[j] = self._map(i)",
           "held[j] = self._map(indices[min(j + 1, len(indices) - 1)])",
           ("tests/test_generation_options.py::test_control_maps_are_the_rendered_poses_in_order", E2E)),
    Mutant("maps-bgr-from-cache", "the control maps leave the cache in BGR order",
           "v2v/stages/generate.py", "return out.permute(0, 3, 1, 2)  # uint8",
           "return out.permute(0, 3, 1, 2).flip(1)  # uint8",
           ("tests/test_generation_options.py::test_control_maps_are_the_rendered_poses_in_order", E2E)),
    Mutant("maps-bgr-on-device", "maps sent as bytes reach the ControlNet in BGR order",
           "v2v/sampler.py", ".float().div_(255.0).to(dtype)", ".float().div_(255.0).to(dtype).flip(1)",
           ("tests/test_sampler.py::test_control_as_bytes_equals_control_as_floats", E2E)),
    Mutant("maps-drawn-bgr", "pose maps drawn in BGR order", "v2v/pose/render.py", "    return canvas\n",
           "    return canvas[..., ::-1].copy()\n", ("tests/test_pose.py",)),
    Mutant("fusion-one-window-flat", "the last window of each segment fused with flat weights, not pyramid",
           "v2v/windows.py", "raw = [fusion_weights(len(w), kind).astype(np.float64) for w in segment.windows]",
           "raw = [fusion_weights(len(w), kind if k < len(segment.windows) - 1 else 'flat').astype(np.float64)\n"
           "           for k, w in enumerate(segment.windows)]",
           ("tests/test_windows.py", "tests/test_sampler.py::test_budget_of_one_window_is_whole_unet_context_windows")),
    Mutant("last-segment-without-control", "the last segment of the video runs without its control maps",
           "v2v/sampler.py", "pose_strength * scales[step])", "pose_strength * scales[step] * (k < len(plans) - 1))",
           ("tests/test_sampler.py::test_budget_of_one_window_is_whole_unet_context_windows",
            "tests/test_sampler.py::test_segments_do_spatial_work_once_within_the_budget")),
    Mutant("control-scale-lost", "the ControlNet runs at scale 1 whatever --pose-strength says",
           "v2v/sampler.py", "conditioning_scale=float(pose_scale)", "conditioning_scale=1.0", (INPUTS, EQUAL_1W)),
    Mutant("control-end-ignored", "--control-end has no effect", "v2v/windows.py",
           "float(i / steps < start or (i + 1) / steps > end)", "float(i / steps < start)",
           ("tests/test_windows.py", INPUTS)),
    # --- guidance, text, noise
    Mutant("cfg-negative-branch-ignored", "classifier-free guidance returns the text branch alone",
           "v2v/sampler.py", "pred = uncond + guidance * (txt - uncond)", "pred = txt", (EQUAL_1W, INPUTS)),
    Mutant("negative-prompt-ignored", "the negative prompt is replaced by the empty one", "v2v/sampler.py",
           "negative_prompt if cfg else None", "'' if cfg else None", (INPUTS, E2E)),
    Mutant("prompt-travel-not-blended", "prompt travel holds each keyframe's prompt instead of blending",
           "v2v/sampler.py", "pos = self.keys[self.lo[idx]] * (1 - b) + self.keys[self.hi[idx]] * b",
           "pos = self.keys[self.lo[idx]]", ("tests/test_sampler.py::test_prompt_travel", INPUTS)),
    Mutant("seed-ignored", "every run draws the noise of seed 0", "v2v/sampler.py", "manual_seed(int(seed))",
           "manual_seed(0)", (INPUTS,)),
    Mutant("source-latents-ignored", "--strength starts from noised zeros, not the source's latents",
           "v2v/sampler.py", "return scheduler.add_noise(init_latents.float().cpu(), noise, timesteps[:1])",
           "return scheduler.add_noise(init_latents.float().cpu() * 0, noise, timesteps[:1])",
           (INPUTS, "tests/test_sampler.py::test_strength_equals_diffusers_video_to_video")),
    # --- models
    Mutant("lora-strength-ignored", "motion LoRAs merged at strength 1 whatever was asked",
           "v2v/models/motion.py", "out[target] = w.float() + strength * delta.reshape(w.shape)",
           "out[target] = w.float() + delta.reshape(w.shape)", (INPUTS,)),
    Mutant("vae-option-ignored", "--vae is ignored (the base's VAE decodes)", "v2v/models/modelset.py",
           "vae=o.vae or alias_vae,", "vae=alias_vae,", (INPUTS,)),
    Mutant("lightning-file-ignored", "the 4-step Lightning module is loaded whatever the steps",
           "v2v/models/modelset.py", "lightning_steps=o.lightning_steps,", "lightning_steps=4,", (INPUTS,)),
    # --- timing, audio, subtitles
    Mutant("audio-offset-ignored", "audio that starts after the video is moved to the output's start",
           "v2v/media/writers/audio.py", "shift = int(round(self.cut.start / self.tb))",
           "shift = int(round(max(self.cut.start, self.in_stream.start_time * self.tb) / self.tb))",
           ("tests/test_video.py",)),
    Mutant("frame-times-wrong-time-base", "frame times rescaled with 1/fps instead of the stream's time base",
           "v2v/media/writers/video.py", "pts = int(round(t / self.time_base))", "pts = int(round(t * self.fps))",
           ("tests/test_video.py",)),
    Mutant("second-audio-dropped", "only the first audio stream is kept", "v2v/media/writers/video.py",
           "for index in cut.audio_streams:", "for index in cut.audio_streams[:1]:",
           ("tests/test_source_streams.py",)),
    Mutant("subtitles-dropped", "subtitle streams are dropped", "v2v/media/writers/video.py",
           "self._sources += subtitle_sources(cut, self._out, c)", "pass", ("tests/test_source_streams.py",)),
    # --- the run, the watch, the pose, the command line
    Mutant("wrong-count-not-regenerated", "a run streamed on a wrong header count is not generated again",
           "v2v/stages/generate.py", "if expected and (latents is None or len(poses) != expected):",
           "if expected and latents is None:", ("tests/test_overlap.py",)),
    Mutant("claim-lock-not-exclusive", "a claim file replaces one that exists instead of failing",
           "v2v/claims.py", "os.link(tmp, path)  # atomic", "os.replace(tmp, path)  # atomic",
           ("tests/test_claims.py",)),
    Mutant("dwpose-tie-order", "DWPose's NMS takes equal scores in a stable order, not the reference's",
           "v2v/pose/dwpose.py", "order = np.asarray(scores).argsort()[::-1]",
           "order = np.argsort(-np.asarray(scores), kind='stable')", ("tests/test_pose.py",)),
    Mutant("keep-pose-slash-dropped", "--keep-pose NEWDIR/ loses its slash (parsed as a Path)", "v2v/cli.py",
           '"float": float}.get(kind, str)', '"float": float, "Path": Path}.get(kind, str)',
           ("tests/test_cli.py::test_keep_pose_into_a_folder_to_be_made_keeps_its_slash",)),
)


def patched(text: str, m: Mutant) -> str:
    """``text`` with the mutant's patch; ValueError unless its old text occurs exactly once."""
    count = text.count(m.old)
    if count != 1:
        raise ValueError(f"{m.name}: its old text occurs {count} times in {m.file}, not once: update the mutant")
    return text.replace(m.old, m.new)


def copy_checkout(dest: Path) -> None:
    """The working tree's files (tracked, and untracked ones git does not ignore) copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run_tests(copy: Path, tests, env: dict, log: Path) -> tuple[int, float]:
    """pytest on ``tests`` in ``copy`` (stopping at the first failure): (exit status, seconds)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                            cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy and the logs")
    a = ap.parse_args(argv)
    if a.list:
        for m in MUTANTS:
            print(f"{m.name:30s} {m.file:28s} {m.bug}")
        return 0
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in a.names if n not in known]
    if unknown:
        print(f"unknown mutant(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    chosen = [known[n] for n in a.names] if a.names else list(MUTANTS)
    for m in chosen:  # a mutant whose text moved fails here, before any work
        patched((ROOT / m.file).read_text(), m)

    work = Path(tempfile.mkdtemp(prefix="v2v-mutants-"))
    copy, logs = work / "checkout", work / "logs"
    logs.mkdir()
    copy_checkout(copy)
    env = {**os.environ, "PYTHONPATH": str(copy), "V2V_TEST_TINY_DIR": str(work / "tiny"),
           "V2V_TINY_DIR": str(work / "tiny")}
    started = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", "from v2v.tiny import tiny_model_paths; tiny_model_paths()"],
                       cwd=copy, env=env, check=True, capture_output=True)
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        rc, took = run_tests(copy, tests, env, logs / "unpatched.log")
        print(f"unpatched: {len(tests)} test selections {'pass' if rc == 0 else 'FAIL'} ({took:.0f} s)", flush=True)
        if rc != 0:
            print(f"the unpatched code fails them: see {logs / 'unpatched.log'}", file=sys.stderr)
            a.keep = True
            return 2
        results = []
        for m in chosen:
            target = copy / m.file
            original = target.read_text()
            target.write_text(patched(original, m))
            try:
                rc, took = run_tests(copy, m.tests, env, logs / f"{m.name}.log")
            finally:
                target.write_text(original)
            verdict = {0: "SURVIVED", 1: "killed"}.get(rc, f"ERROR (pytest exit {rc})")
            results.append((m, verdict))
            print(f"{verdict:22s} {m.name:30s} {took:5.0f} s  {m.bug}", flush=True)
        killed = sum(v == "killed" for _, v in results)
        print(f"\nscore: {killed}/{len(results)} killed in {time.perf_counter() - started:.0f} s")
        bad = [(m, v) for m, v in results if v != "killed"]
        for m, v in bad:
            print(f"  {v}: {m.name} ({m.file}): {m.bug}; log {logs / (m.name + '.log')}")
        a.keep = a.keep or bool(bad)
        return 1 if bad else 0
    finally:
        if a.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
