"""Views inside the motion modules: the temporal layers attend within windows, everything else sees whole segments.

A segment of S frames goes through the UNet in one call, so every spatial layer (ResNets, spatial attention, the
ControlNet) runs once per frame; each motion module (diffusers' ``AnimateDiffTransformer3D``, trained on 16
frames) runs once per window of the segment's plan, and the windows' outputs are fused frame by frame with the
plan's shares. A window covering the whole segment is the unmodified module, bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

log = logging.getLogger("v2v")


class MotionPlan:
    """The windows the motion modules use for the segment now in the UNet (shared by every wrapped module)."""

    # windows of one length go through the module together, as one batch (fewer, larger kernels); False: one
    # call per window (the benchmark's comparison)
    batch_windows = True

    def __init__(self) -> None:
        self.windows: list[tuple[torch.Tensor | slice, torch.Tensor, int]] | None = None
        self.groups: list[tuple[torch.Tensor, list[int]]] = []  # (frame index of all its windows, which windows)
        self.frames = 0
        self.calls = 0  # motion-module calls made for windows (one per batch of windows), for tests and benchmarks

    def set(self, num_frames: int, windows: Sequence[Sequence[int]], shares: Sequence[np.ndarray],
            device, dtype) -> None:
        """Windows as positions into the segment's ``num_frames`` frames, with each frame's share (see
        ``windows.segment_weights``). One window over all the frames: the plain module runs."""
        self.frames = num_frames
        if len(windows) == 1 and tuple(windows[0]) == tuple(range(num_frames)):
            self.windows, self.groups = None, []
            return
        plan, by_length = [], {}
        for k, (w, s) in enumerate(zip(windows, shares)):
            w = [int(i) for i in w]
            contiguous = w == list(range(w[0], w[0] + len(w)))
            index = slice(w[0], w[0] + len(w)) if contiguous else torch.tensor(w, device=device)
            plan.append((index, torch.as_tensor(s, device=device, dtype=dtype).view(1, -1, 1, 1, 1), len(w)))
            by_length.setdefault(len(w), []).append(k)
        self.windows = plan
        self.groups = [(torch.tensor([i for k in ks for i in windows[k]], device=device), ks)
                       for ks in by_length.values()]

    def clear(self) -> None:
        self.windows, self.groups, self.frames = None, [], 0


class WindowedMotionModule(torch.nn.Module):
    """Wraps one motion module; same call signature as ``AnimateDiffTransformer3D.forward``."""

    def __init__(self, inner: torch.nn.Module, plan: MotionPlan):
        super().__init__()
        self.inner = inner
        self.plan = plan

    def forward(self, hidden_states, encoder_hidden_states=None, timestep=None, class_labels=None, num_frames=1,
                cross_attention_kwargs=None):
        plan = self.plan
        if plan.windows is None:
            return self.inner(hidden_states, encoder_hidden_states, timestep, class_labels, num_frames,
                              cross_attention_kwargs)
        if num_frames != plan.frames:
            raise RuntimeError(f"motion plan is for {plan.frames} frames, the UNet passed {num_frames}")
        bf, c, h, w = hidden_states.shape
        b = bf // num_frames
        x = hidden_states.view(b, num_frames, c, h, w)
        out = torch.zeros_like(x)

        def add(k: int, yw: torch.Tensor) -> None:  # window k's output, times its shares, into its frames
            index, share, _ = plan.windows[k]
            if isinstance(index, slice):
                out[:, index] += yw * share
            else:  # a window that wraps (--loop): its frames are distinct, so the sum is deterministic
                out.index_add_(1, index, yw * share)

        if plan.batch_windows:
            for flat, ks in plan.groups:  # the windows of one length as one batch: (b, k, n) -> b * k clips
                n = plan.windows[ks[0]][2]
                xw = x.index_select(1, flat).view(b * len(ks) * n, c, h, w)
                y = self.inner(xw, encoder_hidden_states, timestep, class_labels, n,
                               cross_attention_kwargs).view(b, len(ks), n, c, h, w)
                for j, k in enumerate(ks):
                    add(k, y[:, j])
                plan.calls += 1
            return out.view(bf, c, h, w)
        for k, (index, _, n) in enumerate(plan.windows):
            xw = x[:, index] if isinstance(index, slice) else x.index_select(1, index)
            add(k, self.inner(xw.reshape(b * n, c, h, w), encoder_hidden_states, timestep, class_labels, n,
                              cross_attention_kwargs).view(b, n, c, h, w))
            plan.calls += 1
        return out.view(bf, c, h, w)


def _motion_lists(unet: torch.nn.Module) -> Iterator[torch.nn.ModuleList]:
    for block in (*getattr(unet, "down_blocks", ()), getattr(unet, "mid_block", None), *getattr(unet, "up_blocks", ())):
        mm = getattr(block, "motion_modules", None) if block is not None else None
        if isinstance(mm, torch.nn.ModuleList):
            yield mm


def count_motion_modules(unet: torch.nn.Module) -> int:
    return sum(len(mm) for mm in _motion_lists(unet))


@contextmanager
def motion_windows(unet: torch.nn.Module) -> Iterator[MotionPlan]:
    """Wrap every motion module of ``unet`` for the duration; yields the plan to set per segment. If the UNet is
    wrapped already (e.g. kept wrapped for torch.compile), its plan is reused and left in place."""
    base = getattr(unet, "_orig_mod", unet)  # a torch.compile'd UNet
    existing = getattr(base, "_v2v_motion_plan", None)
    if existing is not None:
        try:
            yield existing
        finally:
            existing.clear()
        return
    plan = MotionPlan()
    wrapped = install_motion_windows(base, plan)
    if not wrapped:
        raise ValueError("the UNet has no motion modules: is the motion module loaded?")
    try:
        yield plan
    finally:
        remove_motion_windows(base)


def install_motion_windows(unet: torch.nn.Module, plan: MotionPlan | None = None) -> int:
    """Wrap the motion modules in place (kept until ``remove_motion_windows``); returns how many."""
    plan = plan or MotionPlan()
    n = 0
    for mm in _motion_lists(unet):
        for i, m in enumerate(mm):
            if not isinstance(m, WindowedMotionModule):
                mm[i] = WindowedMotionModule(m, plan)
                n += 1
    unet._v2v_motion_plan = plan
    return n


def remove_motion_windows(unet: torch.nn.Module) -> None:
    for mm in _motion_lists(unet):
        for i, m in enumerate(mm):
            if isinstance(m, WindowedMotionModule):
                mm[i] = m.inner
    if hasattr(unet, "_v2v_motion_plan"):
        del unet._v2v_motion_plan
