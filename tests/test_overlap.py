"""Generation starts while the pose stage runs: the same frames as one stage after the other, the first denoising
step reaching frames before the last are posed, a wrong frame count in the header caught, errors on both sides."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import v2v
import v2v.stages.generate as G_stage
from v2v.device import resolve_device, resolve_dtype
from v2v.errors import VideoDecodeError
from v2v.media import decode, probe
from v2v.pipeline import Restyler
from v2v.plan import InputPlan, plan_restyle
from v2v.stages.generate import ControlMaps, GenerateStage, streamable_frames

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "dance.mp4"
KW = dict(models="tiny", size=64, max_frames=40, frame_budget=16, steps=2, pose_cache=False, show_progress=False)


@pytest.fixture(autouse=True)
def overlap_on_cpu(monkeypatch):
    """The overlap is for GPU runs (on the CPU both stages share the cores); here it runs on the CPU."""
    monkeypatch.setattr(G_stage, "OVERLAP_ON_CPU", True)


_WARM: list = []


def warm() -> Restyler:
    """One Restyler with its models already loaded, so that the timing assertions below compare the pose stage
    with generation, not with how long a loaded machine takes to load the models."""
    if not _WARM:
        r = Restyler(**KW)
        o = r.options_for("x")
        device = resolve_device(o.device)
        r.diffusion_models(o, device, resolve_dtype(o.dtype, device))
        _WARM.append(r)
    return _WARM[0]


def frames_of(folder: Path) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(f)) for f in sorted(folder.glob("*.png"))]


class SlowDetector:
    """The real detector, each batch a little slower and its start and end times recorded."""

    thread_safe = True

    def __init__(self, inner, delay=0.05, fail_at=None, hold=None):
        self.inner, self.delay, self.fail_at = inner, delay, fail_at
        self.hold = hold  # (call number, seconds): that batch takes so much longer
        self.ends: list[float] = []
        self.calls = 0
        self.lock = threading.Lock()

    def detect(self, images):
        with self.lock:
            self.calls += 1
            k = self.calls
        if self.fail_at is not None and k >= self.fail_at:
            raise VideoDecodeError("frame 30 of 'dance.mp4' cannot be decoded (test)")
        time.sleep(self.delay + (self.hold[1] if self.hold and k == self.hold[0] else 0.0))
        out = self.inner.detect(images)
        with self.lock:
            self.ends.append(time.perf_counter())
        return out


@pytest.fixture
def slow(monkeypatch, tiny_models):
    real = Restyler.pose_detector
    made = []

    def pose_detector(self, o, device, **kw):
        made.append(SlowDetector(real(self, o, device), **kw))
        return made[-1]

    def use(**kw):
        monkeypatch.setattr(Restyler, "pose_detector", lambda self, o, device: pose_detector(self, o, device, **kw))
        return made

    return use


@pytest.fixture
def control_calls(monkeypatch):
    calls: list[float] = []
    real = ControlMaps.__call__

    def call(self, indices):
        calls.append(time.perf_counter())
        return real(self, indices)

    monkeypatch.setattr(ControlMaps, "__call__", call)
    return calls


def run(tmp_path: Path, name: str, **kw) -> list[np.ndarray]:
    out = tmp_path / name
    warm().restyle(SAMPLE, out, prompt="claymation", format="png", **kw)
    return frames_of(out)


def test_streamed_equals_one_stage_after_the_other_and_starts_early(tmp_path, slow, control_calls, monkeypatch):
    made = slow(delay=0.08)
    streamed = run(tmp_path, "streamed")
    assert len(streamed) == 40
    ends = made[-1].ends
    # the sampler asked for its first control maps while frames were still being posed
    assert control_calls[0] < max(ends)
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 0)  # the pose stage first, then generation
    control_calls.clear()
    serial = run(tmp_path, "serial")
    assert control_calls[0] > max(made[-1].ends)
    assert len(serial) == 40 and all(np.array_equal(a, b) for a, b in zip(streamed, serial))


def test_control_wait_is_the_time_the_sampler_waited_for_the_pose_stage(tmp_path, slow, monkeypatch):
    """seconds["control_wait"]: with the last frames' poses held back 1.5 s, the sampler waits about that long for
    their maps (it can run only the passes before them meanwhile); with the pose stage done first, it hardly
    waits (the maps are drawn ahead)."""
    slow(delay=0.0, hold=(5, 1.5))  # 40 frames: batches of 8, the fifth holds frames 32-39
    streamed = warm().restyle(SAMPLE, tmp_path / "s.mp4", prompt="claymation")
    s = streamed.seconds
    assert 1.0 < s["control_wait"] <= s["generate"], s
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 0)  # the pose stage first, then generation
    serial = warm().restyle(SAMPLE, tmp_path / "p.mp4", prompt="claymation")
    assert 0.0 < serial.seconds["control_wait"] < 0.5 < s["control_wait"], serial.seconds


@pytest.mark.parametrize("wrong", [+6, -6])
def test_a_wrong_frame_count_in_the_header_generates_again(tmp_path, tiny_models, monkeypatch, caplog, wrong):
    """The container's count is only an estimate: too many (the stream ends early) or too few (the plan was for
    fewer frames) both end in a second generation with the true count, giving the same frames."""
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 0)
    want = run(tmp_path, "want")
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 40 + wrong)
    passes = []
    with caplog.at_level(logging.INFO, logger="v2v"):
        out = tmp_path / f"got{wrong}"
        warm().restyle(SAMPLE, out, prompt="claymation", format="png",
                               progress=lambda s, d, t: passes.append((d, t)) if s == "generate" else None)
        got = frames_of(out)
    assert "generating again" in caplog.text and "not the %d" % (40 + wrong) in caplog.text
    assert len(got) == 40 and all(np.array_equal(a, b) for a, b in zip(got, want))
    # the first attempt stopped before its last pass (the second starts again from 0)
    restart = next(i for i in range(1, len(passes)) if passes[i][0] < passes[i - 1][0])
    assert passes[restart - 1][0] < passes[restart - 1][1]


def test_a_header_count_too_small_caught_after_the_sampler_finished_generates_again(tmp_path, slow, monkeypatch,
                                                                                     caplog):
    """The header promised 32 frames and the sampler made all 32 while the pose stage still held the last 8: the
    count proves wrong only when the pose stage ends, after sampling, and the run generates the 40 again."""
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 0)
    want = run(tmp_path, "want")
    slow(delay=0.0, hold=(5, 3.0))  # batches of 8: the fifth (frames 32-39) comes 3 s late
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 32)
    passes = []
    with caplog.at_level(logging.INFO, logger="v2v"):
        warm().restyle(SAMPLE, tmp_path / "got", prompt="claymation", format="png",
                       progress=lambda s, d, t: passes.append((d, t)) if s == "generate" else None)
    got = frames_of(tmp_path / "got")
    assert "generating again" in caplog.text and "not the 32" in caplog.text
    assert len(got) == 40 and all(np.array_equal(a, b) for a, b in zip(got, want))
    restart = next(i for i in range(1, len(passes)) if passes[i][0] < passes[i - 1][0])
    assert passes[restart - 1][0] == passes[restart - 1][1]  # the first attempt ran to its last pass


def test_streamable_frames_rules(monkeypatch, tmp_path, tiny_models):
    import dataclasses

    o = v2v.RestyleOptions(prompt="x", models="tiny", max_frames=40, size=64, device="cpu").validate()
    plan = plan_restyle(o, probe.probe(SAMPLE), tmp_path / "o.mp4")

    def frames(device=None, **changes):
        p = plan.with_options(**changes) if changes else plan
        return streamable_frames(dataclasses.replace(p, device=device) if device else p)

    assert frames() == 40
    assert frames("cuda:1") == 40
    monkeypatch.setattr(G_stage, "OVERLAP_ON_CPU", False)
    assert frames("cpu") == 0
    assert frames("cuda") == 40
    monkeypatch.setattr(G_stage, "OVERLAP_ON_CPU", True)
    assert frames(strength=0.5) == 0
    assert frames(prompt_at=((0, "a"), (39, "b"))) == 40
    assert frames(prompt_at=((0, "a"), (40, "b"))) == 0


def test_a_pose_error_reaches_the_caller_as_itself_and_nothing_is_written(tmp_path, slow):
    slow(delay=0.02, fail_at=3)
    out = tmp_path / "o.mp4"
    with pytest.raises(VideoDecodeError, match="cannot be decoded"):
        Restyler(**KW).restyle(SAMPLE, out, prompt="x")
    assert not out.exists() and not list(tmp_path.glob("*.restyled.json"))


def test_a_generation_error_stops_the_pose_thread(tmp_path, slow, monkeypatch):
    """40 frames are 5 batches of 0.3 s on one thread: the sampler fails on the first frame, and the pose thread
    ends after the batch in hand instead of posing the other frames for nothing."""
    monkeypatch.setenv("V2V_POSE_WORKERS", "1")
    made = slow(delay=0.3)

    def broken(self, *a, **kw):
        self.poses[0]  # waits for the first frame, then fails as an out-of-memory would
        raise RuntimeError("sampler broke")

    monkeypatch.setattr(ControlMaps, "__call__", broken)
    with pytest.raises(RuntimeError, match="sampler broke"):
        warm().restyle(SAMPLE, tmp_path / "o.mp4", prompt="x")
    deadline = time.perf_counter() + 5
    while any(t.name == "v2v-pose" and t.is_alive() for t in threading.enumerate()) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "v2v-pose" and t.is_alive() for t in threading.enumerate())
    assert made[-1].calls <= 3  # of 5: it stopped


def test_progress_reports_from_both_stages_are_serialized(tmp_path, slow):
    slow(delay=0.03)
    inside, overlaps, seen = [0], [0], []
    lock = threading.Lock()

    def progress(stage, done, total):
        with lock:
            inside[0] += 1
            overlaps[0] = max(overlaps[0], inside[0])
        time.sleep(0.002)
        seen.append((stage, done, total))
        with lock:
            inside[0] -= 1

    warm().restyle(SAMPLE, tmp_path / "o.mp4", prompt="x", progress=progress)
    assert overlaps[0] == 1
    for stage in ("pose", "generate", "encode"):
        done = [d for s, d, _ in seen if s == stage]
        assert done[0] == 0 and done == sorted(done)
    assert [s for s, _, _ in seen].index("generate") < max(i for i, (s, _, _) in enumerate(seen) if s == "pose")


class SlowDecoder:
    """A decoder that takes 30 ms a frame (so the pose stage is still running when the main thread fails)."""

    def __init__(self, inner, delay=0.03):
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        for f in self.inner:
            time.sleep(self.delay)
            yield f


@pytest.mark.parametrize("source", ["cache", "json"])
def test_a_failed_run_leaves_no_pose_thread_behind(tmp_path, tiny_models, monkeypatch, source):
    """With keypoints from the cache or --pose-json nothing reaches the sampler until every frame is decoded; a
    failure meanwhile (here the models) must still stop the pose thread before restyle() returns, or in watch
    mode it would report progress into the next video's run."""
    from v2v.errors import ModelLoadError

    kw = dict(KW, max_frames=96)
    if source == "cache":
        Restyler(**dict(kw, pose_cache=True)).pose(SAMPLE, tmp_path / "p.mp4")  # fills the cache
        extra = dict(pose_cache=True)
    else:
        extra = dict(pose_json=str(SAMPLE.with_suffix(".pose.json")))
    real = InputPlan.decoder
    monkeypatch.setattr(InputPlan, "decoder", lambda plan: SlowDecoder(real(plan)))  # ~3 s for 96 frames

    def broken(self, o, device, dtype):
        time.sleep(0.2)
        raise ModelLoadError("bad checkpoint (test)")

    monkeypatch.setattr(Restyler, "diffusion_models", broken)
    calls = []
    with pytest.raises(ModelLoadError):
        Restyler(**dict(kw, **extra)).restyle(SAMPLE, tmp_path / "o.mp4", prompt="x",
                                              progress=lambda s, d, t: calls.append(time.perf_counter()))
    t_raise = time.perf_counter()
    assert not any(t.name == "v2v-pose" and t.is_alive() for t in threading.enumerate())
    time.sleep(0.5)
    assert not [c for c in calls if c > t_raise]


def test_an_error_from_a_wrong_count_is_retried_with_the_true_one(tmp_path, tiny_models, monkeypatch):
    """A sampler error on the header's count (46; say a plan the model cannot take) is not the user's: with the
    true count (40) the run goes through. The same error on the true count is raised as it is."""
    from v2v.errors import InvalidOptions

    real = GenerateStage.sample

    def picky(self, models, poses, n, *a, **kw):
        if n == 46:
            raise InvalidOptions("46 frames do not fit (test)")
        return real(self, models, poses, n, *a, **kw)

    monkeypatch.setattr(GenerateStage, "sample", picky)
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 46)
    assert len(run(tmp_path, "retried")) == 40
    monkeypatch.setattr(GenerateStage, "sample", lambda *a, **kw: (_ for _ in ()).throw(InvalidOptions("no (test)")))
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 40)
    with pytest.raises(InvalidOptions, match="no \\(test\\)"):
        run(tmp_path, "raised")


@pytest.mark.parametrize("case", ["vfr-mkv", "webm-resampled", "every-nth-trimmed", "rotated"])
def test_streamed_equals_serial_on_varied_inputs(tmp_path, tiny_models, monkeypatch, case):
    """Containers whose frame count is estimated (mkv/webm carry none), irregular frame times, resampling,
    trimming and rotation: the overlapped run gives the serial run's frames, whether the estimate held or not."""
    from media import make_video

    spec = {"vfr-mkv": (dict(path="v.mkv", seconds=1.6, vfr=True), {}),
            "webm-resampled": (dict(path="v.webm", seconds=1.6, fps=25, vcodec="libvpx-vp9", acodec="libopus"),
                               {"fps": 12}),
            "every-nth-trimmed": (dict(path="v.mp4", seconds=2.4, fps=30), {"every_nth": 3, "start": 0.31,
                                                                             "end": 2.05}),
            "rotated": (dict(path="v.mp4", seconds=1.2, rotation=90), {})}[case]
    video = make_video(tmp_path / spec[0].pop("path"), size=(96, 64), **spec[0])
    opts = dict(KW, max_frames=None, **spec[1])

    def out(name):
        folder = tmp_path / name
        Restyler(**opts).restyle(video, folder, prompt="x", format="png")
        return frames_of(folder)

    streamed = out("streamed")
    monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 0)
    serial = out("serial")
    assert len(streamed) == len(serial) > 8
    assert all(np.array_equal(a, b) for a, b in zip(streamed, serial))


@pytest.mark.parametrize("fmt", ["png", "h264"])
def test_finished_frames_are_encoded_while_later_ones_denoise(tmp_path, tiny_models, monkeypatch, fmt):
    """The passes sweep along the video, so the first frames have had every step after a few passes: they are
    decoded and handed to the encoder then, before the first step has even reached the end of the video, and the
    frames are the ones a run that steps the whole video step by step, then encodes, writes."""
    import v2v.sampler as G
    from v2v.windows import plan_segments, plan_windows, sampling_order

    def restyle(name):
        seen = []
        out = tmp_path / (name if fmt == "png" else f"{name}.mp4")
        warm().restyle(SAMPLE, out, prompt="claymation", format=fmt, progress=lambda s, d, t: seen.append((s, d, t)))
        if fmt == "png":
            frames = frames_of(out)
        else:
            info = probe.probe(out)
            frames = list(decode.Decoder(info, info.width, info.height))
        return seen, frames

    seen, early = restyle("early")
    gen = [(i, d) for i, (s, d, t) in enumerate(seen) if s == "generate" and d > 0]
    enc = [i for i, (s, d, t) in enumerate(seen) if s == "encode" and d > 0]
    assert len(enc) == 40 and len(gen) == seen[gen[-1][0]][2]
    order = sampling_order(plan_segments(plan_windows(40, 16, 4), 16), 2)  # KW: 40 frames, budget 16, 2 steps
    assert len(order) == len(gen) and len(set(k for _, k in order)) >= 3
    end_of_step0 = gen[order.index((0, max(k for _, k in order)))][0]  # the progress report of step 0's last pass
    assert enc[0] < end_of_step0, "frames were encoded before the first step reached the end of the video"
    monkeypatch.setattr(G, "_ELEMENTWISE_STEPS", ())  # step by step, every frame handed on at the end, as before
    seen2, after = restyle("after")
    gen2 = [i for i, (s, d, t) in enumerate(seen2) if s == "generate" and d > 0]
    assert min(i for i, (s, d, t) in enumerate(seen2) if s == "encode" and d > 0) > gen2[-1]
    assert len(early) == len(after) == 40
    if fmt == "png":
        assert all(np.array_equal(a, b) for a, b in zip(early, after))
    else:  # the same encoder input gives the same stream
        assert [f.time for f in early] == [f.time for f in after]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(early, after))


def test_finished_frames_wait_for_the_pose_stage_without_stopping_the_sampler(tmp_path, slow, monkeypatch):
    """Frames can be final while the pose stage still works on the last ones (the output's frame count, times and
    audio span are only known at its end): they wait as latents, and the sampler goes on with later passes
    instead of waiting for the pose stage there. The outputs open once the pose stage has ended."""
    monkeypatch.setenv("V2V_POSE_WORKERS", "1")
    made = slow(delay=0.01)
    fifth_pass, released = threading.Event(), []
    real_detect = SlowDetector.detect

    def detect(self, images):
        if self.calls == 7:  # the last batch (frames 56-63) waits until the sampler has done its fifth pass
            released.append(fifth_pass.wait(30))
        return real_detect(self, images)

    def progress(stage, done, total):
        seen.append((stage, done, total))
        if stage == "generate" and done >= 5:
            fifth_pass.set()

    monkeypatch.setattr(SlowDetector, "detect", detect)
    import v2v.vae as G

    real_decode, decoded = G.decode_latents, []

    def decode(models, latents, **kw):
        decoded.append(latents.shape[0])
        return real_decode(models, latents, **kw)

    monkeypatch.setattr(G, "decode_latents", decode)
    seen = []
    warm().restyle(SAMPLE, tmp_path / "o.mp4", prompt="x", max_frames=64, progress=progress)
    # the runs that waited (frames 0-11 after pass 3, 12-23 after pass 5, ...) are decoded together
    assert sum(decoded) == 64 and decoded[0] >= 24
    # 64 frames, budget 16, 2 steps: passes (0,0) (0,1) (1,0) -> frames 0-11 final, (0,2) (1,1) -> 12-23 ...
    assert made[-1].calls == 8 and released == [True], "the sampler waited for the pose stage's end"
    pose_end = max(i for i, e in enumerate(seen) if e[0] == "pose")
    enc = [i for i, e in enumerate(seen) if e[0] == "encode"]
    assert enc and min(enc) > pose_end and sum(1 for i in enc if seen[i][1] > 0) == 64


@pytest.mark.parametrize("error,streamed", [("output", True), ("interrupt", False), ("oom", True)])
def test_an_error_while_finished_frames_are_encoded_leaves_nothing_behind(tmp_path, tiny_models, monkeypatch,
                                                                           streamed, error):
    """The outputs open while frames still denoise: an error then (the writer, Ctrl-C, out of memory in the
    VAE decode) reaches the caller as v2v's type, leaves no temp file, output, compare video or settings record,
    and no pose, encoder or control-map thread running."""
    import torch

    import v2v.vae as G
    from v2v.errors import Interrupted, OutOfMemory, OutputError

    if not streamed:
        monkeypatch.setattr(G_stage, "streamable_frames", lambda plan: 0)
    real = G.decode_latents
    calls = []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second run of finished frames: the outputs are open and hold frames
            raise {"output": OutputError("disk full (test)"), "interrupt": KeyboardInterrupt(),
                   "oom": torch.OutOfMemoryError("CUDA out of memory (test)")}[error]
        return real(*a, **kw)

    monkeypatch.setattr(G, "decode_latents", failing)
    out = tmp_path / "o.mp4"
    want = {"output": OutputError, "interrupt": Interrupted, "oom": OutOfMemory}[error]
    with pytest.raises(want):
        warm().restyle(SAMPLE, out, prompt="x", compare=True)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    deadline = time.perf_counter() + 5
    names = ("v2v-pose", "v2v-encode", "v2v-control", "v2v-prefetch")
    while time.perf_counter() < deadline and any(t.name.startswith(names) for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(names)]


def test_keep_pose_is_not_written_when_generation_fails_after_the_outputs_opened(tmp_path, tiny_models,
                                                                                   monkeypatch):
    """Ctrl-C while finished frames are encoded says 'no output was written': the pose video (--keep-pose) must
    not have been written either (it is written once generation is done, as before the outputs opened early)."""
    import v2v.vae as G
    from v2v.errors import Interrupted

    real, calls = G.decode_latents, []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt()
        return real(*a, **kw)

    monkeypatch.setattr(G, "decode_latents", failing)
    with pytest.raises(Interrupted, match="no output was written"):
        warm().restyle(SAMPLE, tmp_path / "o.mp4", prompt="x", keep_pose=str(tmp_path / "pose.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(G, "decode_latents", real)
    r = warm().restyle(SAMPLE, tmp_path / "o.mp4", prompt="x", keep_pose=str(tmp_path / "pose.mp4"))
    assert r.pose_output.is_file() and probe.probe(r.pose_output).frames == r.frames == 40


@pytest.mark.parametrize("fmt,name,named", [("h264", "o.mp4", "o.mp4"), ("png", "o", "dance_000000.png")])
def test_a_write_error_names_the_output_not_its_temp_file(tmp_path, tiny_models, monkeypatch, fmt, name, named):
    """The writers work on a temp file beside the output (renamed at the end): a write error names the output the
    user asked for, in one line, and leaves nothing behind."""
    import av.error
    import cv2

    from v2v.media.writers import video as video_writer
    from v2v.errors import OutputError

    if fmt == "h264":
        def failing(self, frame, t):
            raise av.error.FFmpegError(28, "No space left on device")

        monkeypatch.setattr(video_writer.VideoWriter, "_encode", failing)
    else:
        monkeypatch.setattr(cv2, "imwrite", lambda *a: False)
    with pytest.raises(OutputError) as e:
        warm().restyle(SAMPLE, tmp_path / name, prompt="x", format=fmt)
    msg = str(e.value)
    assert f"writing {named} failed" in msg and ".part" not in msg and "\n" not in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []
