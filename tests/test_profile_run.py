"""scripts/profile_run.py: a restyle's time by model and kernel family, and the idle gaps, from torch.profiler.
On the CPU end to end (tiny models, a few frames); the CUDA summary (kernels linked to the ops that launched
them, the GPU's timeline) on a made-up event list. Speed itself is never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import profile_run as P  # noqa: E402

MARKED = ("unet_spatial", "motion_modules", "controlnet", "vae_decode", "text_encoder", "pose")


def _check_sums(s: dict) -> None:
    """Families add up to each model's total, and each family's total over the models, within rounding."""
    for name, m in s["models"].items():
        assert m["ms"] == pytest.approx(sum(m["families"].values()), abs=1e-3 * len(m["families"])), name
        assert set(m["families"]) <= set(P.FAMILIES) and all(v > 0 for v in m["families"].values()), name
    for fam, ms in s["families"].items():
        assert ms == pytest.approx(sum(m["families"].get(fam, 0.0) for m in s["models"].values()),
                                   abs=1e-3 * len(s["models"])), fam


def _check_gaps(s: dict) -> None:
    g = s["gaps"]
    lengths = [x["ms"] for x in g["largest"]]
    assert all(x >= 0 for x in lengths) and lengths == sorted(lengths, reverse=True)
    assert len(lengths) == min(10, g["count"]) and sum(lengths) <= g["total_ms"] + 1e-3 * len(lengths)
    assert sum(b["count"] for b in g["by_length"].values()) == g["count"]
    assert sum(b["ms"] for b in g["by_length"].values()) == pytest.approx(g["total_ms"], abs=1e-2)
    assert s["busy_ms"] + g["total_ms"] == pytest.approx(s["span_ms"], abs=1e-2)  # (one timeline, no overlaps)
    for x in g["largest"]:
        assert 0 <= x["at_ms"] <= s["span_ms"] and x["after"] and x["host"]


def test_profile_run_cpu_tiny(tmp_path, tiny_models, capsys):
    from torch.nn.modules import module as M

    hooks = (len(M._global_forward_pre_hooks), len(M._global_forward_hooks))
    out = tmp_path / "profile.json"
    s = P.main(["--device", "cpu", "--models", "tiny", "--frames", "8", "--warmup", "4", "--size", "64",
                "--json", str(out)])
    assert (len(M._global_forward_pre_hooks), len(M._global_forward_hooks)) == hooks  # the ranges are gone
    assert out.stat().st_size < 12_000  # a summary, never a trace
    saved = json.loads(out.read_text())
    assert saved["frames"] == 8 and saved["device"] == "cpu" and saved["all_threads"] is True
    assert saved["wall_s"] > 0 and saved["fps"] > 0 and saved["seconds"]["total"] > 0
    assert saved["timeline"] == "outermost torch ops of every thread"
    for name in MARKED:  # every model was seen, its forwards counted (pose: on the pose workers' threads)
        m = saved["models"][name]
        assert m["ms"] > 0 and m["calls"] >= 1 and m["host_ms"] > 0, name
    assert saved["models"]["pose"]["families"] == {"host": saved["models"]["pose"]["ms"]}  # onnxruntime: no torch op
    assert saved["models"]["unet_spatial"]["families"]["conv"] > 0
    assert saved["models"]["motion_modules"]["families"]["gemm"] > 0  # attention projections: no convolution
    assert "conv" not in saved["models"]["motion_modules"]["families"]
    _check_sums(saved)
    _check_gaps(saved)
    assert saved["busy_ms"] > 0 and saved["span_ms"] <= saved["wall_s"] * 1000
    assert saved["top"] and saved["top"] == sorted(saved["top"], key=lambda k: -k["ms"])
    text = capsys.readouterr().out
    assert all(name in text for name in MARKED) and "idle gaps:" in text and str(out) in text
    assert s == saved


def test_bench_profiles_after_the_lengths_whatever_the_deadline(tmp_path, tiny_models):
    """bench.py --profile: the profile runs on the bench's warm models before the levers, and --deadline (which
    skips the levers) does not skip it; its summary lands beside the bench's JSON."""
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu", "--models", "tiny",
                        "--frames", "8", "--size", "64", "--no-baseline", "--io-repeats", "1", "--levers", "8",
                        "--lever-list", "default", "--deadline", "0", "--profile", "8", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["levers"]["default"] == {"skipped": "past the deadline"}
    entry = report["profile"]
    assert entry["json"] == "b-profile.json" and entry["frames"] == 8
    s = json.loads((tmp_path / "b-profile.json").read_text())
    assert s["env"]["models"] == "tiny" and all(s["models"][m]["ms"] > 0 for m in MARKED)
    assert entry["models_ms"] == {k: v["ms"] for k, v in s["models"].items()}
    _check_sums(s)
    assert "idle gaps:" in r.stdout


def _ev(name, kind, thread, start_ms, end_ms, corr=0, linked=0):
    return P.Ev(name, kind, thread, int(start_ms * 1e6), int(end_ms * 1e6), corr, linked)


def test_summarise_cuda_events():
    """Kernels count for the model around the op that launched them (found by the op's correlation id, else by
    the launch's), the GPU's gaps are found on the kernels' timeline, and the host's activity in the largest is
    read on the thread that launched the kernel ending it, and on the others."""
    ann = "annotation"
    events = [
        _ev("v2v.model/unet_spatial", ann, 1, 0, 100, corr=1),
        _ev("aten::conv2d", "op", 1, 10, 20, corr=2),
        _ev("cudaLaunchKernel", "runtime", 1, 12, 14, corr=900, linked=2),
        _ev("v2v.model/motion_modules", ann, 1, 30, 60, corr=3),
        _ev("v2v.model/motion_modules", ann, 1, 30.5, 59.5, corr=33),  # v2v's window wrapper, then the module
        _ev("aten::linear", "op", 1, 31, 35, corr=4),
        _ev("cudaLaunchKernel", "runtime", 1, 32, 33, corr=901, linked=4),
        _ev("aten::_local_scalar_dense", "op", 1, 62, 80, corr=5),
        _ev("cudaStreamSynchronize", "runtime", 1, 63, 79, corr=902, linked=5),
        _ev("aten::add", "op", 1, 81, 84, corr=6),
        _ev("cudaLaunchKernel", "runtime", 1, 82, 83, corr=903, linked=6),
        _ev("aten::mul", "op", 1, 120, 121, corr=7),  # outside every model (the sampler's step)
        _ev("cudaLaunchKernel", "runtime", 1, 120.2, 120.4, corr=904, linked=7),
        _ev("v2v.model/pose", ann, 2, 50, 90, corr=8),  # a pose worker
        _ev("aten::conv2d", "op", 2, 65, 75, corr=9),
        _ev("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc", "work", 7, 15, 40, 900, 2),
        _ev("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "work", 7, 45, 55, 901, 0),  # linked by its launch
        _ev("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::Half>>", "work", 7,
            85, 90, 903, 6),
        _ev("onnxruntime_kernel", "work", 7, 95, 98, 999, 0),  # launched by no torch op
        _ev("void at::native::vectorized_elementwise_kernel<4, at::native::MulFunctor<float>>", "work", 7,
            122, 123, 904, 7),
    ]
    s = P.summarise(events, cuda=True)
    assert s["timeline"] == "GPU kernels and copies"
    m = s["models"]
    assert m["unet_spatial"]["families"] == {"conv": 25.0, "elementwise": 5.0}
    assert m["motion_modules"]["families"] == {"gemm": 10.0} and m["motion_modules"]["calls"] == 1
    assert m["unlinked"]["families"] == {"other": 3.0} and m["outside_models"]["families"] == {"elementwise": 1.0}
    assert m["pose"] == {"ms": 0.0, "host_ms": 40.0, "calls": 1, "families": {}}  # no kernel of its own here
    # host time: the model's ranges less the models nested in them (ops, CUDA calls, Python)
    assert (m["unet_spatial"]["host_ms"], m["motion_modules"]["host_ms"], m["outside_models"]["host_ms"]) \
        == (70.0, 30.0, 1.0)
    assert list(m) == ["unet_spatial", "motion_modules", "pose", "outside_models", "unlinked"]
    _check_sums(s)
    assert (s["span_ms"], s["busy_ms"]) == (108.0, 44.0)
    g = s["gaps"]
    assert [x["ms"] for x in g["largest"]] == [30.0, 24.0, 5.0, 5.0] and g["count"] == 4
    assert g["by_length"] == {"1-10ms": {"count": 2, "ms": 10.0}, ">=10ms": {"count": 2, "ms": 54.0}}
    top = g["largest"][0]
    assert (top["at_ms"], top["after_model"], top["before"]) == (40.0, "unet_spatial", events[16].name)
    assert top["after"] == "at::native::vectorized_elementwise_kernel"
    assert top["host"] == "unet_spatial > aten::_local_scalar_dense > cudaStreamSynchronize"
    assert top["other_threads"] == ["pose > aten::conv2d"]
    second = g["largest"][1]  # the host in Python between the UNet and the sampler's step: nothing open
    assert second["after_model"] == "outside_models" and second["host"].startswith("(no torch op open")
    _check_gaps(s)
    assert s["top"][0] == {"name": P.short_name(events[15].name), "ms": 25.0, "count": 1, "family": "conv"}


@pytest.mark.parametrize("name,fam", [
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "conv"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>", "attention"),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)", "attention"),
    ("void at::native::(anonymous namespace)::softmax_warp_forward<c10::Half, c10::Half, float, 7>", "attention"),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "gemm"),
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_f16_s161616gemm_f16_32x32_128x2_tn_align8>", "gemm"),
    ("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<c10::Half, float>", "norm"),
    ("void at::native::(anonymous namespace)::ComputeFusedParamsCUDAKernel<float>", "norm"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>", "norm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::Half>>", "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel(...)::{lambda()#1}>", "elementwise"),
    ("void at::native::elementwise_kernel<128, 2, at::native::direct_copy_kernel_cuda(...)>", "copy"),
    ("Memcpy HtoD (Pinned -> Device)", "copy"),
    ("Memset (Device)", "copy"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<c10::Half, unsigned int, 4, 64, 64>", "copy"),
    ("void at::native::upsample_nearest2d_out_frame<c10::Half, &at::native::nearest_idx>", "copy"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float>>>", "other"),
    ("aten::conv2d", "conv"), ("aten::mkldnn_convolution", "conv"), ("aten::linear", "gemm"), ("aten::bmm", "gemm"),
    ("aten::addmm", "gemm"), ("aten::group_norm", "norm"), ("aten::native_layer_norm", "norm"),
    ("aten::scaled_dot_product_attention", "attention"), ("aten::silu", "elementwise"), ("aten::add_", "elementwise"),
    ("aten::mul", "elementwise"), ("aten::copy_", "copy"), ("aten::to", "copy"), ("aten::cat", "copy"),
    ("aten::index_select", "copy"), ("aten::constant_pad_nd", "copy"), ("aten::empty", "other"),
    ("aten::resolve_neg", "other"), ("aten::dropout", "other"),
])
def test_families_by_name(name, fam):
    assert P.family(name) == fam


def test_model_ranges_leave_the_models_as_they_were(tiny_models):
    """The hooks are global and found by identity: nothing is added to the models, and all of it goes on exit
    (a forward that raises closes its range too)."""
    from types import SimpleNamespace

    from torch.nn.modules import module as M

    class Det:
        def detect(self, images):
            return ["pose"] * len(images)

    unet = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
    unet.down_blocks = [SimpleNamespace(motion_modules=torch.nn.ModuleList([torch.nn.Linear(2, 2)]))]
    models = SimpleNamespace(unet=unet, controlnet=torch.nn.Linear(2, 2), text_encoder=torch.nn.Linear(2, 2),
                             vae=SimpleNamespace(decoder=torch.nn.Identity(), post_quant_conv=torch.nn.Identity()),
                             decoder=None)
    det = Det()
    before = (len(M._global_forward_pre_hooks), len(M._global_forward_hooks))
    from torch.profiler import ProfilerActivity, profile

    with P.ModelRanges(models, det), profile(activities=[ProfilerActivity.CPU]) as prof:
        unet(torch.zeros(1, 1, 2, 2))
        models.unet.down_blocks[0].motion_modules[0](torch.zeros(1, 2))
        assert det.detect([1, 2]) == ["pose", "pose"]
        with pytest.raises(RuntimeError):
            models.controlnet(torch.zeros(1, 3))  # wrong shape: raises inside the forward
        models.text_encoder(torch.zeros(1, 2))
    names = [e.name for e in sorted(P.profiler_events(prof), key=lambda e: e.start) if e.kind == "annotation"]
    assert names == [P.PREFIX + n for n in ("unet_spatial", "motion_modules", "pose", "controlnet", "text_encoder")]
    assert (len(M._global_forward_pre_hooks), len(M._global_forward_hooks)) == before
    assert "detect" not in vars(det) and not unet._forward_pre_hooks and not unet._forward_hooks
