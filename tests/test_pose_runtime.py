"""DWPose on torch (--pose-runtime torch): the TorchScript files give what the ONNX ones give, crops go in chunks
of the traced batch, "auto" picks the runtime the machine can use, and the choice reaches the pose cache and the
settings record. The tiny TorchScript files are traced twins of the tiny ONNX models (same weights)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from v2v import InvalidOptions, ModelLoadError, ModelNotFound, Restyler, RestyleOptions
from v2v.pose import DWPose
from v2v.pose import dwpose as dw

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "dance.mp4"
ONNX = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
TORCH = ("yolox_l.torchscript.pt", "dw-ll_ucoco_384_bs5.torchscript.pt")


@pytest.fixture
def offline_hub(fake_hub, monkeypatch):
    """The fake Hugging Face cache (the tiny set under the real repo ids), offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fake_hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return fake_hub


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from v2v.tiny.pose import write_tiny_dwpose
    d = tmp_path_factory.mktemp("dwpose")
    write_tiny_dwpose(d)
    return d


def _people_image(rng, n, h=344, w=256):
    img = np.full((h, w, 3), 25, np.uint8)
    for _ in range(n):
        x, y = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 60))
        img[y:y + 60, x:x + 50] = (235, 220, 210)
    return img


def _assert_same_frames(a, b):
    """Same people; confidences equal to float rounding; positions within one SimCC bin (half a crop pixel,
    under one image pixel here), since float rounding can move an argmax between two near-equal bins."""
    assert [len(f.people) for f in a] == [len(f.people) for f in b]
    for fa, fb in zip(a, b):
        assert (fa.width, fa.height) == (fb.width, fb.height)
        for pa, pb in zip(fa.people, fb.people):
            for part in ("body", "hand_left", "hand_right", "face"):
                x, y = getattr(pa, part), getattr(pb, part)
                np.testing.assert_allclose(x[:, 2], y[:, 2], atol=1e-5)
                np.testing.assert_allclose(x[:, :2], y[:, :2], atol=1.0)
                assert np.mean(np.abs(x[:, :2] - y[:, :2]) < 1e-3) > 0.9   # nearly all exactly equal


# ------------------------------------------------------------------------------------------- the two runtimes

def test_torchscript_equals_onnx(tiny_dir):
    """Same frames, same people, same keypoints and confidences, from either runtime; several people per frame
    and a crop count that is not a multiple of the traced batch of 5 (the last chunk padded)."""
    onnx = DWPose(*(tiny_dir / f for f in ONNX))
    torch_ = DWPose(*(tiny_dir / f for f in TORCH))
    assert (onnx.runtime, torch_.runtime) == ("onnx", "torch")
    assert torch_._pose_batch == 5 and torch_._det_batch == 1
    assert torch_.det_size == onnx.det_size and torch_.pose_size == onnx.pose_size
    rng = np.random.default_rng(3)
    images = [_people_image(rng, n) for n in (1, 3, 0, 2, 1)] + [np.zeros((100, 180, 3), np.uint8)]
    a, b = onnx.detect(images), torch_.detect(images)
    crops = sum(len(f.people) for f in a)
    assert crops % 5 and crops > 5, crops                  # padding and more than one chunk are exercised
    _assert_same_frames(a, b)
    assert b[-1].people == []                              # a black frame: nobody, from torch too


def test_torchscript_crops_go_in_chunks_of_the_traced_batch(tiny_dir):
    """The tiny pose file, like hr16's, was traced for batches of 5 and fails on any other batch: DWPose must
    feed it 5 at a time and drop the padding's results."""
    import torch

    net = dw.load_net(tiny_dir / TORCH[1], "cpu", "DWPose model", dw.POSE_FILE)
    with pytest.raises(Exception):
        net.run(np.zeros((3, 3, 384, 288), np.float32))     # the traced batch is baked in
    x, y = net.run(np.zeros((5, 3, 384, 288), np.float32))
    assert x.shape == (5, 133, 576) and y.shape == (5, 133, 768) and x.dtype == np.float32

    d = DWPose(*(tiny_dir / f for f in TORCH))
    seen = []
    real = d.pose.run

    class Spy:
        output_names = []

        def run(self, chunk):
            seen.append(len(chunk))
            return real(chunk)

    d.pose = Spy()
    crops = np.random.default_rng(0).standard_normal((12, 3, 384, 288)).astype(np.float32)
    sx, sy = d.run_pose(crops)
    assert seen == [5, 5, 5] and sx.shape == (12, 133, 576) and sy.shape == (12, 133, 768)
    ref = DWPose(*(tiny_dir / f for f in ONNX)).run_pose(crops)
    np.testing.assert_allclose(sx, ref[0], atol=1e-5)
    np.testing.assert_allclose(sy, ref[1], atol=1e-5)
    assert torch.get_default_dtype() == torch.float32


def test_wrong_torchscript_networks_fail_at_load(tiny_dir, tmp_path):
    """A TorchScript file keeps no metadata: DWPose probes it once at load, so swapped files or a network with
    the wrong outputs fail there, in one line, naming the file."""
    import torch

    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / TORCH[0]).write_bytes((tiny_dir / TORCH[1]).read_bytes())      # the pose net as the detector
    (swapped / TORCH[1]).write_bytes((tiny_dir / TORCH[0]).read_bytes())
    with pytest.raises(ModelLoadError) as e:
        DWPose.from_spec(str(swapped), runtime="torch")
    assert TORCH[0] in str(e.value) and "\n" not in str(e.value)

    class OneOutput(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)).unsqueeze(1)

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / TORCH[0]).write_bytes((tiny_dir / TORCH[0]).read_bytes())
    torch.jit.trace(OneOutput(), torch.zeros(5, 3, 384, 288)).save(str(odd / TORCH[1]))
    with pytest.raises(ModelLoadError) as e:
        DWPose.from_spec(str(odd), runtime="torch")
    assert TORCH[1] in str(e.value) and "--pose-runtime onnx" in str(e.value)


def test_traced_batch_from_the_file_name():
    assert dw._traced_batch(Path("dw-ll_ucoco_384_bs5.torchscript.pt")) == 5
    assert dw._traced_batch(Path("rtmpose-m_ap10k_256_bs12.torchscript.pt")) == 12
    assert dw._traced_batch(Path("model_bs3")) == 3
    assert dw._traced_batch(Path("yolox_l.torchscript.pt")) == 1       # no batch in the name: one at a time
    assert dw._traced_batch(Path("jobs5.torchscript.pt")) == 1


def test_float16_export_gets_float16_input(tiny_dir, tmp_path):
    """An export whose weights are float16 takes float16 input; outputs come back as float32 arrays."""
    import torch

    net = torch.jit.load(str(tiny_dir / TORCH[1]))
    half = tmp_path / "dw-ll_ucoco_384_bs5.torchscript.pt"
    net.to(torch.bfloat16).save(str(half))                  # bfloat16: the CPU runs it (float16 too on a GPU)
    n = dw.load_net(half, "cpu", "DWPose model", dw.POSE_FILE)
    assert n.dtype == torch.bfloat16
    x, _ = n.run(np.zeros((5, 3, 384, 288), np.float32))
    assert x.dtype == np.float32 and np.isfinite(x).all()


def test_bad_torchscript_file_is_a_model_load_error(tiny_dir, tmp_path):
    (tmp_path / TORCH[0]).write_bytes(b"not a zip archive")
    (tmp_path / TORCH[1]).write_bytes((tiny_dir / TORCH[1]).read_bytes())
    with pytest.raises(ModelLoadError) as e:
        DWPose.from_spec(str(tmp_path), runtime="torch")
    msg = str(e.value)
    assert "\n" not in msg and "TorchScript" in msg and "--pose-runtime onnx" in msg
    with pytest.raises(ModelNotFound):                       # a folder without the TorchScript files
        DWPose.from_spec(str(tmp_path / "nowhere"), runtime="torch")


# ------------------------------------------------------------------------------------------ choosing a runtime

@pytest.mark.parametrize("device, ort_cuda, torch_cuda, expected", [
    ("cpu", False, False, "onnx"),
    ("cpu", True, True, "onnx"),          # the CPU: onnxruntime, always
    ("cuda", True, True, "onnx"),         # onnxruntime-gpu: the ONNX files on the GPU
    ("cuda:1", True, True, "onnx"),
    ("cuda", False, True, "torch"),       # a GPU onnxruntime cannot use: TorchScript on it
    ("cuda:1", False, True, "torch"),
    ("cuda", False, False, "onnx"),       # no GPU at all: onnxruntime on the CPU (with a warning)
])
def test_auto_runtime(monkeypatch, device, ort_cuda, torch_cuda, expected):
    import torch

    monkeypatch.setattr(dw, "ort_has_cuda", lambda: ort_cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_cuda)
    assert dw.choose_runtime("auto", device) == expected
    assert dw.choose_runtime("onnx", device) == "onnx" and dw.choose_runtime("torch", device) == "torch"


def test_unknown_runtime_is_invalid():
    with pytest.raises(InvalidOptions):
        dw.choose_runtime("tensorrt", "cpu")
    with pytest.raises(InvalidOptions) as e:
        RestyleOptions(prompt="x", pose_runtime="tensorrt").validate()
    assert "--pose-runtime" in str(e.value)
    # DWPose's runtime does not apply to OpenPose: a rerun of a DWPose run's record (which names its runtime)
    # with --pose openpose must work, and OpenPose takes its own files whatever the field says
    RestyleOptions(prompt="x", pose="openpose", pose_runtime="torch").validate()


def test_auto_falls_back_to_onnx_where_torchscript_files_are_not_to_be_had(tiny_dir, tmp_path, monkeypatch,
                                                                           offline_hub):
    """On a GPU onnxruntime cannot use, "auto" takes the TorchScript files where they are to be had (the default
    repo, a folder holding them), and stays on onnxruntime for a folder of ONNX files, for the default repo
    offline without them cached, and with --offload (a small GPU)."""
    monkeypatch.setattr(dw, "choose_runtime", lambda requested, device: "onnx" if requested == "onnx" else "torch")
    onnx_only = tmp_path / "onnx-only"
    onnx_only.mkdir()
    for f in ONNX:
        (onnx_only / f).write_bytes((tiny_dir / f).read_bytes())
    assert dw.resolve_runtime("auto", "cuda", str(tiny_dir)) == "torch"          # both kinds of files there
    assert dw.resolve_runtime("auto", "cuda", str(onnx_only)) == "onnx"          # only ONNX: the user's choice
    assert dw.resolve_runtime("auto", "cuda", dw.DEFAULT_REPO) == "torch"         # cached (the fake hub)
    assert dw.resolve_runtime("auto", "cuda", dw.DEFAULT_REPO, offload=True) == "onnx"
    assert dw.resolve_runtime("torch", "cuda", str(onnx_only)) == "torch"        # asked for: not second-guessed
    assert dw.resolve_runtime("auto", "cuda", "someone/dwpose-mirror") == "onnx"  # another repo, nothing cached
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert dw.resolve_runtime("auto", "cuda", dw.DEFAULT_REPO) == "onnx"          # offline, not cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert dw.resolve_runtime("auto", "cuda", dw.DEFAULT_REPO) == "torch"         # online: downloaded on use


def test_cuda_provider_that_fails_to_load_warns_once(tiny_dir, monkeypatch, caplog):
    """onnxruntime lists its CUDA provider but the session falls back to the CPU (CUDA/cuDNN libraries missing):
    one warning naming the way out."""
    monkeypatch.setattr(dw, "ort_has_cuda", lambda: True)
    monkeypatch.setattr(dw, "_providers", lambda device: (["CPUExecutionProvider"], False))
    with caplog.at_level(logging.WARNING, logger="v2v"):
        d = DWPose(*(tiny_dir / f for f in ONNX), device="cuda")
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(msgs) == 1 and "--pose-runtime torch" in msgs[0]
    assert d.providers == ["CPUExecutionProvider"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="v2v"):
        DWPose(*(tiny_dir / f for f in ONNX), device="cpu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------------------- through the pipeline

def test_default_repos_for_each_runtime(offline_hub):
    """With the default model set, "torch" takes the two hr16 repos (ComfyUI's), "onnx" yzd-v/DWPose."""
    onnx = DWPose.model_files(dw.DEFAULT_REPO, "onnx")
    torch_ = DWPose.model_files(dw.DEFAULT_REPO, "torch")
    assert [p.name for p in onnx] == list(ONNX) and [p.name for p in torch_] == list(TORCH)
    assert "models--yzd-v--DWPose" in str(onnx[0])
    assert "models--hr16--yolox-onnx" in str(torch_[0])
    assert "models--hr16--DWPose-TorchScript-BatchSize5" in str(torch_[1])
    d = DWPose.from_spec(dw.DEFAULT_REPO, runtime="torch")
    assert d.runtime == "torch" and d.pose_path == torch_[1]


def test_pose_command_same_keypoints_either_runtime(tmp_path, tiny_models):
    """`Restyler.pose` on the sample: the torch runtime's JSON equals the onnx runtime's; the two runs do not
    share a pose-cache entry (different model files)."""
    r = Restyler(models="tiny", device="cpu", size=128, max_frames=12, pose_smoothing=0)
    out = {}
    for rt in ("onnx", "torch"):
        res = r.pose(SAMPLE, json_path=tmp_path / f"{rt}.json", pose_runtime=rt)
        assert res.frames == 12
        out[rt] = json.loads((tmp_path / f"{rt}.json").read_text())
    assert len(out["onnx"]) == len(out["torch"]) == 12
    people = 0
    for a, b in zip(out["onnx"], out["torch"]):
        assert len(a["people"]) == len(b["people"])
        for pa, pb in zip(a["people"], b["people"]):
            people += 1
            for k in ("pose_keypoints_2d", "hand_left_keypoints_2d", "face_keypoints_2d"):
                np.testing.assert_allclose(pa[k], pb[k], atol=1.5)  # source pixels: one SimCC bin
    assert people > 0
    o = RestyleOptions(prompt="x", models="tiny", device="cpu")
    from v2v.media.probe import probe
    from v2v.plan import plan_input
    from v2v.stages.pose import cache_key

    keys = {rt: cache_key(plan_input(o.replace(pose_runtime=rt), probe(SAMPLE))) for rt in ("onnx", "torch")}
    assert keys["onnx"] != keys["torch"]


def test_auto_is_recorded_as_what_ran(tmp_path, monkeypatch, tiny_models):
    """The settings record names the runtime that ran (so a --settings rerun runs the same), never "auto", and
    the pose model files that runtime took."""
    r = Restyler(models="tiny", device="cpu", size=64, max_frames=4, steps=1, pose_cache=False)  # detect
    res = r.restyle(SAMPLE, tmp_path / "out.mp4", prompt="a robot")
    assert res.settings["options"]["pose_runtime"] == "onnx"          # the CPU: onnxruntime
    files = [Path(f["path"]).name for f in res.settings["models"]["pose_model"]["files"]]
    assert files == list(ONNX)
    (loaded,) = r.loaded_detectors                                      # what actually ran
    assert loaded.runtime == "onnx" and loaded.pose_path.name == ONNX[1]
    monkeypatch.setattr(dw, "choose_runtime", lambda requested, device: "torch")   # as on a GPU without ORT-gpu
    res = r.restyle(SAMPLE, tmp_path / "out2.mp4", prompt="a robot")
    assert res.settings["options"]["pose_runtime"] == "torch"
    files = [Path(f["path"]).name for f in res.settings["models"]["pose_model"]["files"]]
    assert files == list(TORCH)
    (loaded,) = r.loaded_detectors
    assert loaded.runtime == "torch" and [loaded.det_path.name, loaded.pose_path.name] == list(TORCH)


def test_default_torch_files_recorded_with_their_repos(offline_hub):
    """With the default repo, the torch runtime's files come from hr16's two repos: the record names those
    (not yzd-v/DWPose, which holds neither)."""
    from v2v import settings as run_settings

    rec = run_settings.model_record(dw.DEFAULT_REPO, DWPose.model_files(dw.DEFAULT_REPO, "torch"))
    assert [(s["repo"], s["file"]) for s in rec["sources"]] == [dw.TORCH_DET, dw.TORCH_POSE]
    assert all(len(s["revision"]) == 40 for s in rec["sources"])
    rec = run_settings.model_record(dw.DEFAULT_REPO, DWPose.model_files(dw.DEFAULT_REPO, "onnx"))
    assert rec["repo"] == dw.DEFAULT_REPO and rec["files"] == sorted(ONNX)


def test_no_deprecation_noise_when_loading(tiny_dir):
    """torch calls TorchScript deprecated; loading the files must not print that at the user."""
    import torch

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        d = DWPose(*(tiny_dir / f for f in TORCH))
    assert d.runtime == "torch" and d.providers == ["torch:cpu"]      # the TorchScript files did load
    assert [str(w.message) for w in seen if issubclass(w.category, FutureWarning)] == []
    with warnings.catch_warnings(record=True) as seen:                # and torch does warn without the filter
        warnings.simplefilter("always")
        torch.jit.load(str(tiny_dir / TORCH[1]))
    assert any(issubclass(w.category, FutureWarning) for w in seen)


def test_cli_pose_runtime(tmp_path, tiny_models):
    """`v2v pose --pose-runtime torch` runs the TorchScript files; a bad value is a one-line usage error."""
    import subprocess
    import sys

    def v2v(*args):
        return subprocess.run([sys.executable, "-m", "v2v", *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    common = ("pose", SAMPLE, "--models", "tiny", "--device", "cpu", "--size", "64", "--max-frames", "3",
              "--no-cache", "--json")
    r = v2v(*common, tmp_path / "t.json", "--pose-runtime", "torch")
    assert r.returncode == 0, r.stderr
    assert "dwpose (torch)" in r.stderr                       # the log names the runtime
    assert len(json.loads((tmp_path / "t.json").read_text())) == 3
    r = v2v(*common, tmp_path / "x.json", "--pose-runtime", "tensorrt")
    assert r.returncode == 2 and "--pose-runtime" in r.stderr


@pytest.mark.gpu
def test_torch_runtime_on_the_gpu_equals_onnx_on_the_cpu(tiny_dir):
    """On a CUDA machine: the TorchScript files run on the GPU and give the CPU onnxruntime's keypoints."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    gpu = DWPose(*(tiny_dir / f for f in TORCH), device="cuda")
    assert gpu.providers == ["torch:cuda"]
    cpu = DWPose(*(tiny_dir / f for f in ONNX), device="cpu")
    rng = np.random.default_rng(5)
    images = [_people_image(rng, n) for n in (2, 1, 3)]
    _assert_same_frames(cpu.detect(images), gpu.detect(images))


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_torch_detector_is_built_before_the_diffusion_models_load(tiny_models, tmp_path, monkeypatch, runtime):
    """Loading the diffusion models changes process-wide torch state for a while (default dtype float16 under
    diffusers/transformers, accelerate's patched register_parameter): a detector made of torch modules is built
    before that starts. An ONNX detector is not waited for: the models load while it is built."""
    import threading

    events = []
    loading_started = threading.Event()
    real_detector, real_models = Restyler.pose_detector, Restyler.diffusion_models

    def pose_detector(self, o, device):
        if runtime == "onnx":  # the models' loading must start without waiting for this detector
            events.append(("load started first", loading_started.wait(20)))
        d = real_detector(self, o, device)
        events.append(("detector", d.runtime))
        return d

    def diffusion_models(self, o, device, dtype):
        events.append(("load", None))
        loading_started.set()
        return real_models(self, o, device, dtype)

    monkeypatch.setattr(Restyler, "pose_detector", pose_detector)
    monkeypatch.setattr(Restyler, "diffusion_models", diffusion_models)
    r = Restyler(models="tiny", device="cpu", size=64, max_frames=4, steps=1, pose_cache=False,
                 pose_runtime=runtime, show_progress=False)
    r.restyle(SAMPLE, tmp_path / "o.mp4", prompt="x")
    if runtime == "torch":
        assert events.index(("detector", "torch")) < events.index(("load", None))
    else:
        assert ("load started first", True) in events


def test_failed_model_load_leaves_torch_default_dtype_alone(tiny_models, tmp_path, monkeypatch):
    """A load that fails half-way (inside diffusers, with float16 set as torch's default) must not leave the
    process (a watch loop) making float16 tensors."""
    import torch

    import v2v.models.load as vm

    def failing(*args, **kwargs):
        torch.set_default_dtype(torch.float16)     # what diffusers' from_pretrained does while loading ...
        raise vm.ModelLoadError("broken checkpoint")  # ... and a failure before it restores it

    monkeypatch.setattr(vm, "load_diffusion_models", failing)
    r = Restyler(models="tiny", device="cpu", size=64, max_frames=4, steps=1, show_progress=False)
    with pytest.raises(ModelLoadError):
        r.restyle(SAMPLE, tmp_path / "o.mp4", prompt="x")
    assert torch.get_default_dtype() == torch.float32



def test_openpose_face_works_under_a_float16_default_dtype(tiny_models):
    """While diffusers/transformers load models (on another thread) torch's default dtype is float16/bfloat16 for
    a while; controlnet_aux's face network divided a uint8 tensor into that dtype and failed on a dtype mismatch.
    v2v's face step makes its input float32, and gives the same heatmaps either way."""
    import torch

    from v2v.pose.openpose import OpenPose

    d = OpenPose.from_spec(str(tiny_models["openpose"]))
    face = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    ref = d._face_heatmaps(face)
    assert ref.shape[1:] == (40, 48) and ref.dtype == np.float32
    np.testing.assert_allclose(ref, d.face(face), atol=1e-6)      # controlnet_aux's own call, default float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with pytest.raises(RuntimeError):
            d.face(face)                                           # what failed: controlnet_aux's own call
        np.testing.assert_allclose(d._face_heatmaps(face), ref, atol=1e-6)
    finally:
        torch.set_default_dtype(old)


def test_a_pose_stage_that_fails_first_loads_no_models(tiny_models, tmp_path, monkeypatch):
    """A torch detector that cannot be built fails the run; the diffusion models, which the loader holds back
    until the detector is built, are then not loaded at all (a load left running would hold the loading lock
    into the next video of a watch loop)."""
    loads = []
    monkeypatch.setattr(Restyler, "diffusion_models", lambda self, *a, **k: loads.append(1))

    def broken(self, o, device):
        raise ModelLoadError("broken pose model")

    monkeypatch.setattr(Restyler, "pose_detector", broken)
    r = Restyler(models="tiny", device="cpu", size=64, max_frames=4, steps=1, pose_cache=False,
                 pose_runtime="torch", show_progress=False)
    with pytest.raises(ModelLoadError):
        r.restyle(SAMPLE, tmp_path / "o.mp4", prompt="x")
    import time

    time.sleep(0.3)  # the loader thread has had time to start a load, were it going to
    assert loads == []
