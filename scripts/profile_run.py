#!/usr/bin/env python3
"""Where a restyle's device time goes: one v2v run (public API, default options) under torch.profiler, its time
summed by model (UNet spatial layers, motion modules, ControlNet, VAE decode, text encoder, pose) and by kernel
family (conv, gemm, attention, norm, elementwise, copy, other), with the idle gaps on the device's timeline and
what the host was doing in each. Writes a small JSON summary (a few KB: never the trace) and prints a table.

    python scripts/profile_run.py --device cpu --models tiny --frames 16                # here: under a minute
    python scripts/profile_run.py --device cuda --models sd15-random --frames 240       # on a GPU

``scripts/bench.py --profile N`` runs the same profile inside the bench, on the models it has loaded and warmed
(that is how scripts/gpu_bench.sh runs it).

How time is attributed. Each model's forward is marked with a ``torch.profiler.record_function`` range named
``v2v.model/<model>`` (forward hooks installed here, on the loaded models, for this run only; the motion modules
are told apart from the rest of the UNet, which is "unet_spatial"; pose: the detector's ``detect``). On CUDA,
each kernel counts for the innermost range around the torch op that launched it (by the profiler's correlation
ids): device time is GPU kernel time. On the CPU, each torch op's self CPU time counts for the innermost range
on its thread; a range's own self time (Python, numpy, onnxruntime: no torch op) is the family "host".
"outside_models" is torch work in no model (the sampler's fusion and Euler steps, casts, control-map uploads);
"unlinked" is device work that no torch op launched (onnxruntime-gpu's, say).
The timeline: on CUDA the GPU's kernels and copies; on the CPU the outermost torch ops of every thread. A gap is a
stretch of it with nothing running; for the largest, the host's activity at its midpoint: the chain of ranges and
ops open then on the thread that launched the work that ended it, and on the others.
The wall time and frames/s are measured under the profiler, which slows the host: compare them with the bench's,
not with a target.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

for _var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
    os.environ.setdefault(_var, "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

PREFIX = "v2v.model/"
MODELS = ("unet_spatial", "motion_modules", "controlnet", "vae_decode", "vae_encode", "text_encoder", "pose")
OUTSIDE, UNLINKED = "outside_models", "unlinked"
FAMILIES = ("conv", "gemm", "attention", "norm", "elementwise", "copy", "other", "host")
GAP_BUCKETS = ((10e3, "<10us"), (100e3, "10-100us"), (1e6, "0.1-1ms"), (10e6, "1-10ms"), (float("inf"), ">=10ms"))
DEVICE_WORK = {"kernel", "gpu_memcpy", "gpu_memset"}  # device activity types that are work (not annotations)

# Kernel (CUDA) and op (CPU) names to families, first match wins: the order settles names that fit several
# (cuDNN's "..._fprop_implicit_gemm..." is a convolution, a flash-attention kernel may say "gemm", a cast is an
# elementwise kernel named "copy").
_FAMILY_RULES = [
    ("attention", r"flash|fmha|attention|sdpa|softmax|cutlassF|cutlassB"),
    ("conv", r"conv|fprop|dgrad|wgrad|winograd|implicit_gemm|implicit_convolve|cudnn"),
    ("gemm", r"gemm|gemv|nvjet|cublas|cutlass|matmul|\baddmm\b|\bbmm\b|\bbaddbmm\b|\bmm\b|\blinear\b|\bdot\b"),
    ("norm", r"norm|Moments|FusedParams|welford"),
    # data movement: copies and casts, layout changes, concatenation, gathers, nearest upsampling, padding
    ("copy", r"memcpy|memset|copy|CatArray|\bcat\b|nchwToNhwc|nhwcToNchw|transpose|contiguous|\bclone\b|"
             r"_to_copy|aten::to\b|\bindex|gather|scatter|upsample|\w_pad|\bpad\b"),
    ("elementwise", r"elementwise|silu|gelu|sigmoid|tanh|\b(add|sub|mul|div|exp|pow|sqrt|rsqrt|neg|abs|clamp|"
                    r"round|where|lerp|addcmul|fill|fill_|add_|mul_|div_|sub_|clamp_|silu_)\b"),
]
_FAMILY_RE = [(fam, re.compile(rx, re.IGNORECASE)) for fam, rx in _FAMILY_RULES]


def family(name: str) -> str:
    """The kernel family of a CUDA kernel's or a torch op's name."""
    for fam, rx in _FAMILY_RE:
        if rx.search(name):
            return fam
    return "other"


def short_name(name: str, width: int = 60) -> str:
    """A kernel's name without its template arguments and signature, at most ``width`` characters."""
    name = name.removeprefix("void ")
    cut = min((i for i in (name.find("<"), name.find("(")) if i > 0), default=len(name))
    return name[:cut][:width]


# ------------------------------------------------------------------------- marking the models


class ModelRanges:
    """While entered, every marked model's forward runs inside a ``record_function`` range ``v2v.model/<name>``:
    global module forward hooks look each module up (by identity, so nothing is added to the models), and the
    motion-window wrappers v2v makes per run are recognised by class. The pose detector's ``detect`` is wrapped
    on the instance. Everything is undone on exit."""

    def __init__(self, models, detector=None):
        from v2v.motion_windows import WindowedMotionModule, _motion_lists

        self._wrapper = WindowedMotionModule
        self.labels: dict[int, str] = {}
        unet = getattr(models.unet, "_orig_mod", models.unet)  # a torch.compile'd UNet
        self._mark(unet, "unet_spatial")
        for mm in _motion_lists(unet):
            for m in mm:
                self._mark(getattr(m, "inner", m), "motion_modules")
        self._mark(models.controlnet, "controlnet")
        self._mark(models.text_encoder, "text_encoder")
        for vae in (models.vae, getattr(models, "decoder", None)):  # the VAE, and TAESD with --fast-decode
            for attr, name in (("post_quant_conv", "vae_decode"), ("decoder", "vae_decode"),
                               ("quant_conv", "vae_encode"), ("encoder", "vae_encode")):
                self._mark(getattr(vae, attr, None), name)
        self.detector = detector
        self._local = threading.local()
        self._handles: list = []

    def _mark(self, module, name: str) -> None:
        if isinstance(module, torch.nn.Module):
            self.labels[id(getattr(module, "_orig_mod", module))] = name
            self.labels[id(module)] = name

    def _label(self, module) -> str | None:
        name = self.labels.get(id(module))
        return name if name is not None or not isinstance(module, self._wrapper) else "motion_modules"

    def _pre(self, module, args):
        name = self._label(module)
        if name is not None:
            rf = torch.autograd.profiler.record_function(PREFIX + name)
            rf.__enter__()
            self._stack().append((id(module), rf))

    def _post(self, module, args, output):
        stack = self._stack()
        if stack and stack[-1][0] == id(module):
            stack.pop()[1].__exit__(None, None, None)

    def _stack(self) -> list:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def __enter__(self) -> ModelRanges:
        from torch.nn.modules import module as M

        self._handles.append(M.register_module_forward_pre_hook(self._pre))
        try:  # always_call: a range is closed even when a forward raises
            self._handles.append(M.register_module_forward_hook(self._post, always_call=True))
        except TypeError:
            self._handles.append(M.register_module_forward_hook(self._post))
        if self.detector is not None:
            inner = self.detector.detect

            def detect(images):
                with torch.autograd.profiler.record_function(PREFIX + "pose"):
                    return inner(images)

            self.detector.detect = detect  # an instance attribute: shadows the method until deleted
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.detector is not None and "detect" in vars(self.detector):
            del self.detector.detect


# ------------------------------------------------------------------------- the profile's events


@dataclass(slots=True)
class Ev:
    """One profiler event: kind "op" (a torch op on the host), "annotation" (a record_function range),
    "runtime" (a CUDA runtime call: launch, copy, synchronize) or "work" (a kernel, copy or memset on the
    device). ``corr``: its correlation id; ``linked``: for runtime calls and device work, the host op's."""

    name: str
    kind: str
    thread: int
    start: int  # ns
    end: int  # ns
    corr: int = 0
    linked: int = 0


def profiler_events(prof) -> list[Ev]:
    """The profile's raw events (not ``prof.events()``, whose Python objects cost seconds per 100k events)."""
    from torch.autograd import DeviceType

    out = []
    for e in prof.profiler.kineto_results.events():
        act = e.activity_type() if hasattr(e, "activity_type") else None
        if act == "overhead" or (hasattr(e, "is_hidden_event") and e.is_hidden_event()):
            continue
        start = e.start_ns()
        end = start + e.duration_ns()
        if e.device_type() == DeviceType.CPU:
            if e.start_thread_id() != e.end_thread_id():  # an async span: no nesting on one thread
                continue
            kind = ("annotation" if e.is_user_annotation() else "runtime" if e.linked_correlation_id() > 0
                    else "op")
        elif (act in DEVICE_WORK) if act is not None else not (e.is_user_annotation() or e.name().startswith(PREFIX)):
            kind = "work"
        else:  # the device-side copies of the annotations
            continue
        out.append(Ev(e.name(), kind, e.start_thread_id(), start, end, e.correlation_id(), e.linked_correlation_id()))
    return out


class _Threads:
    """The host events nested per thread: parents, the innermost model range of each, self times."""

    def __init__(self, events: list[Ev]):
        self.ev = [e for e in events if e.kind != "work"]
        n = len(self.ev)
        self.parent = [-1] * n
        self.model: list[str | None] = [None] * n
        self.under_op = [False] * n  # an op is open around it
        self.self_ns = [e.end - e.start for e in self.ev]
        self.by_thread: dict[int, list[int]] = {}
        for i in sorted(range(n), key=lambda i: (self.ev[i].thread, self.ev[i].start, -self.ev[i].end)):
            self.by_thread.setdefault(self.ev[i].thread, []).append(i)
        for order in self.by_thread.values():
            stack: list[int] = []
            for i in order:
                e = self.ev[i]
                while stack and self.ev[stack[-1]].end <= e.start:
                    stack.pop()
                p = stack[-1] if stack else -1
                self.parent[i] = p
                if p >= 0:
                    self.model[i] = self.model[p]
                    self.under_op[i] = self.under_op[p] or self.ev[p].kind == "op"
                    self.self_ns[p] -= min(e.end, self.ev[p].end) - e.start
                if e.kind == "annotation" and e.name.startswith(PREFIX):
                    self.model[i] = e.name[len(PREFIX):]
                stack.append(i)
        self.self_ns = [max(0, s) for s in self.self_ns]
        self.starts = {t: [self.ev[i].start for i in order] for t, order in self.by_thread.items()}
        # a kernel's linked id is its host op's correlation id; its own id is its launch's (CUDA runtime call's)
        self.by_corr = {e.corr: i for i, e in enumerate(self.ev) if e.kind in ("op", "annotation") and e.corr}
        self.launches = {e.corr: i for i, e in enumerate(self.ev) if e.kind == "runtime" and e.corr}

    def launcher(self, work: Ev) -> int | None:
        """The host event that launched device work: its torch op, else its CUDA runtime call, else None."""
        i = self.by_corr.get(work.linked) if work.linked else None
        return i if i is not None else self.launches.get(work.corr)

    def open_at(self, thread: int, t: int) -> list[int]:
        """The events open on ``thread`` at time ``t``, outermost first."""
        order = self.by_thread.get(thread, [])
        k = bisect.bisect_right(self.starts.get(thread, []), t) - 1
        i = order[k] if k >= 0 else -1
        while i >= 0 and self.ev[i].end < t:  # the innermost open one is the last started or an ancestor of it
            i = self.parent[i]
        chain = []
        while i >= 0:
            chain.append(i)
            i = self.parent[i]
        return chain[::-1]

    def chain_text(self, chain: list[int]) -> str:
        names: list[str] = []
        for i in chain:  # (a motion module inside v2v's window wrapper: one name)
            name = short_name(self.ev[i].name.removeprefix(PREFIX), 48)
            if not names or names[-1] != name:
                names.append(name)
        return " > ".join(names if len(names) <= 5 else [names[0], "...", *names[-3:]])


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def summarise(events: list[Ev], cuda: bool, largest: int = 10) -> dict:
    """Device time per model and kernel family, the timeline's gaps, the top kernels: a few KB of JSON."""
    th = _Threads(events)
    per_model: dict[str, dict[str, float]] = {}
    host_ms: dict[str, float] = {}
    calls: dict[str, int] = {}
    for i, e in enumerate(th.ev):  # host time per model (on CUDA: is a model launch-bound?)
        m = th.model[i] or OUTSIDE
        if e.kind in ("op", "runtime") or (e.kind == "annotation" and th.model[i] is not None):
            host_ms[m] = host_ms.get(m, 0.0) + th.self_ns[i]
        if e.kind == "annotation" and e.name.startswith(PREFIX) and (th.parent[i] < 0
                                                                      or th.model[th.parent[i]] != th.model[i]):
            calls[th.model[i]] = calls.get(th.model[i], 0) + 1

    def add(model: str, fam: str, ns: float) -> None:
        d = per_model.setdefault(model, {})
        d[fam] = d.get(fam, 0.0) + ns

    kernels: dict[str, list] = {}
    if cuda:
        work = sorted((e for e in events if e.kind == "work"), key=lambda e: e.start)
        for e in work:
            i = th.launcher(e)
            model = UNLINKED if i is None else (th.model[i] or OUTSIDE)
            fam = family(e.name)
            add(model, fam, e.end - e.start)
            k = kernels.setdefault(short_name(e.name), [0.0, 0, fam])
            k[0] += e.end - e.start
            k[1] += 1
        timeline = [(e.start, e.end, e, th.launcher(e)) for e in work]
    else:
        for i, e in enumerate(th.ev):
            if e.kind == "op":
                add(th.model[i] or OUTSIDE, family(e.name), th.self_ns[i])
            elif e.kind == "annotation" and th.model[i] is not None:
                add(th.model[i], "host", th.self_ns[i])
        ops = [i for i, e in enumerate(th.ev) if e.kind == "op" and not th.under_op[i]]
        for i in ops:
            k = kernels.setdefault(short_name(th.ev[i].name), [0.0, 0, family(th.ev[i].name)])
            k[0] += th.ev[i].end - th.ev[i].start
            k[1] += 1
        timeline = sorted(((th.ev[i].start, th.ev[i].end, th.ev[i], i) for i in ops), key=lambda x: x[:2])

    models = {}
    for m in (*MODELS, OUTSIDE, UNLINKED):
        if m in per_model or m in calls:  # (a model with host time only: onnxruntime's pose on a GPU machine)
            fams = {f: _ms(per_model.get(m, {})[f]) for f in FAMILIES if per_model.get(m, {}).get(f)}
            models[m] = {"ms": round(sum(fams.values()), 3), "host_ms": _ms(host_ms.get(m, 0.0)),
                         "calls": calls.get(m, 0), "families": fams}
    families = {f: round(sum(v["families"].get(f, 0.0) for v in models.values()), 3) for f in FAMILIES}
    families = {f: v for f, v in families.items() if v}
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:12]
    return {"timeline": "GPU kernels and copies" if cuda else "outermost torch ops of every thread",
            "models": models, "families": families, **_gaps(timeline, th, largest),
            "top": [{"name": k, "ms": _ms(v[0]), "count": v[1], "family": v[2]} for k, v in top]}


def _gaps(timeline: list, th: _Threads, largest: int) -> dict:
    """The timeline's busy time and its idle gaps: total, count, by length, the largest with the host's doings.
    ``timeline``: (start, end, event, index of the host op that launched it or is it, or None), by start."""
    if not timeline:
        return {"span_ms": 0.0, "busy_ms": 0.0, "gaps": {"total_ms": 0.0, "count": 0, "by_length": {},
                                                          "largest": []}}
    t0 = timeline[0][0]
    busy, gaps = 0, []  # gaps: (length, start, end, the work before, the work after, its host op)
    cur_s, cur_e, last = timeline[0][0], timeline[0][1], timeline[0][2]
    for s, e, ev, host in timeline[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            gaps.append((s - cur_e, cur_e, s, last, ev, host))
            cur_s = s
        if e >= cur_e:
            cur_e, last = e, ev
    busy += cur_e - cur_s
    by_length: dict[str, list] = {}
    for g in gaps:
        label = next(name for top, name in GAP_BUCKETS if g[0] < top)
        b = by_length.setdefault(label, [0, 0.0])
        b[0] += 1
        b[1] += g[0]
    out = []
    for length, start, end, before, after, launcher in sorted(gaps, key=lambda g: -g[0])[:largest]:
        mid = (start + end) // 2
        thread = th.ev[launcher].thread if launcher is not None else None
        host = th.chain_text(th.open_at(thread, mid)) if thread is not None else ""
        others = []
        for t in th.by_thread:
            chain = th.open_at(t, mid) if t != thread else []
            if chain:
                others.append(th.chain_text(chain))
        out.append({"at_ms": _ms(start - t0), "ms": _ms(length),
                    "before": short_name(before.name), "after": short_name(after.name),
                    "after_model": UNLINKED if launcher is None else (th.model[launcher] or OUTSIDE),
                    "host": host or "(no torch op open: Python, or waiting)", "other_threads": others[:3]})
    return {"span_ms": _ms(cur_e - t0), "busy_ms": _ms(busy),
            "gaps": {"total_ms": _ms(sum(g[0] for g in gaps)), "count": len(gaps),
                     "by_length": {name: {"count": by_length[name][0], "ms": _ms(by_length[name][1])}
                                   for _, name in GAP_BUCKETS if name in by_length},
                     "largest": out}}


# ------------------------------------------------------------------------- the run


def profile_restyle(restyler, video: Path, out: Path, device: str, largest: int = 10, **options) -> dict:
    """One restyle of ``video`` under torch.profiler, its models marked; ``restyler`` must have run once with
    these options already (models and pose detector loaded and warm). Returns the summary (see summarise)."""
    from torch.profiler import ProfilerActivity, profile

    if not restyler.loaded_models or not restyler.loaded_detectors:
        raise RuntimeError("profile_restyle needs a Restyler that has run once (models loaded and warm)")
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:  # every thread's ops (pose workers, the VAE decode's), not only this one's (torch >= 2.7)
        from torch._C._profiler import _ExperimentalConfig

        kwargs = {"experimental_config": _ExperimentalConfig(profile_all_threads=True)}
        all_threads = True
    except (ImportError, TypeError):
        kwargs, all_threads = {}, False
    with ModelRanges(restyler.loaded_models[0], restyler.loaded_detectors[0]):
        with profile(activities=activities, record_shapes=False, with_stack=False, **kwargs) as prof:
            t = time.perf_counter()
            r = restyler.restyle(video, out, prompt="claymation astronaut", **options)
            if cuda:
                torch.cuda.synchronize(torch.device(device))
            wall = time.perf_counter() - t
    t = time.perf_counter()
    events = profiler_events(prof)
    summary = summarise(events, cuda, largest)
    work = wall - r.seconds.get("load", 0.0)
    return {"frames": r.frames, "width": r.width, "height": r.height, "device": device,
            "all_threads": all_threads, "events": len(events), "wall_s": round(wall, 3),
            "fps": round(r.frames / work, 3), "seconds": {k: round(v, 3) for k, v in r.seconds.items()},
            "settings": {k: r.settings["options"].get(k) for k in ("steps", "frame_budget", "context", "overlap",
                                                                   "dtype", "pose_runtime", "fast_decode",
                                                                   "compile")},
            **summary, "summarise_s": round(time.perf_counter() - t, 2)}


def table(s: dict) -> str:
    """The summary as text: per model and family, the gaps, the top kernels."""
    cuda = s["device"].startswith("cuda")
    lines = [f"profile: {s['frames']} frames at {s['width']}x{s['height']} on {s['device']}: {s['wall_s']:.2f} s "
             f"under the profiler ({s['fps']:.2f} frames/s); timeline ({s['timeline']}) busy {s['busy_ms']:.0f} of "
             f"{s['span_ms']:.0f} ms",
             ("GPU kernel ms by model and family (host ms: the CPU time of the model's forwards)" if cuda else
              "self CPU ms by model and family (host: the model's Python, numpy, onnxruntime: no torch op)")]
    fams = [f for f in FAMILIES if f in s["families"]]
    host = (lambda m: f" | {m:>9}") if cuda else (lambda m: "")
    lines.append(f"{'model':>15} | {'ms':>9} | {'share':>6} | {'calls':>5}{host('host ms')} | "
                 + " | ".join(f"{f:>11}" for f in fams))
    total = sum(m["ms"] for m in s["models"].values()) or 1.0
    for name, m in s["models"].items():
        lines.append(f"{name:>15} | {m['ms']:>9.1f} | {m['ms'] / total:>6.1%} | {m['calls']:>5}"
                     f"{host(format(m['host_ms'], '.1f'))} | "
                     + " | ".join(f"{m['families'].get(f, 0.0):>11.1f}" for f in fams))
    lines.append(f"{'all':>15} | {total:>9.1f} | {1:>6.0%} | {'':>5}{host('')} | "
                 + " | ".join(f"{s['families'][f]:>11.1f}" for f in fams))
    g = s["gaps"]
    lines.append(f"idle gaps: {g['total_ms']:.1f} ms in {g['count']} ("
                 + ", ".join(f"{k}: {v['count']} = {v['ms']:.1f} ms" for k, v in g["by_length"].items()) + ")")
    for x in g["largest"]:
        lines.append(f"  {x['ms']:8.2f} ms at {x['at_ms']:9.1f} ms, then {x['after_model']}: {x['after'][:40]}; "
                     f"host: {x['host']}" + (f"; also {' | '.join(x['other_threads'])}" if x["other_threads"] else ""))
    lines.append("top: " + ", ".join(f"{k['name'][:40]} {k['ms']:.1f} ms x{k['count']} ({k['family']})"
                                      for k in s["top"][:6]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", choices=("tiny", "sd15-random"), default="tiny")
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--size", type=int, default=None, help="short side (default 512, 128 for tiny)")
    ap.add_argument("--warmup", type=int, default=16, help="frames of the untimed run before the profiled one")
    ap.add_argument("--largest", type=int, default=10, help="how many of the largest gaps to describe")
    ap.add_argument("--json", type=Path, default=Path("profile.json"))
    a = ap.parse_args(argv)
    if a.frames < 1 or a.warmup < 1:
        raise SystemExit("--frames and --warmup must be at least 1")

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="v2v-profile-"))
    try:
        if a.models != "tiny":  # a private, offline hub cache, as bench.py's
            os.environ["HF_HUB_CACHE"] = str(work / "hub")
            os.environ["HF_HUB_OFFLINE"] = "1"
        logging.getLogger("v2v").setLevel(logging.WARNING)
        import v2v
        from make_sample import make

        cuda = a.device.startswith("cuda")
        size = a.size or (128 if a.models == "tiny" else 512)
        if a.models == "tiny":
            from v2v.tiny import tiny_model_paths

            paths = tiny_model_paths()
        else:
            from bench import build_sd15_random

            paths = build_sd15_random(work / "models", a.device)
        restyler = v2v.Restyler(base=str(paths["base"]), motion=str(paths["motion"]),
                                controlnet=str(paths["controlnet"]), pose_model=str(paths["dwpose"]), device=a.device,
                                dtype="float16" if cuda else "float32", size=size, pose_cache=False,
                                show_progress=False, models="tiny" if a.models == "tiny" else "default")

        def clip(n: int) -> Path:
            make(work / f"s{n}", seconds=n / 24, fps=24, width=size, height=size)
            return work / f"s{n}" / "dance.mp4"

        restyler.restyle(clip(a.warmup), work / "warm.mp4", prompt="warm-up")  # loads, warms: untimed
        s = profile_restyle(restyler, clip(a.frames), work / "out.mp4", a.device, a.largest)
        s["env"] = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "models": a.models, "gpu": torch.cuda.get_device_name(torch.device(a.device)) if cuda else None}
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(s, indent=1))
        print(table(s))
        print(f"summary: {a.json} ({a.json.stat().st_size} bytes)")
        return s
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
