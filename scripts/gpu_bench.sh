#!/usr/bin/env bash
# The prepared GPU benchmark: one command on a lent GPU machine (it has torch, transformers and onnxruntime,
# not diffusers, av or platformdirs). Fetch the missing wheels here first, for the device's Python (3.12), and
# run it (from the repository root, carrying .whl) after scripts/gpu_tests.sh: the exact commands are in
# docs/performance.md, "The prepared GPU run".
#
# In order, all in one process on the same warm models:
#   1. the lengths (FRAMES, default 48,160,480): v2v, whole-UNet windows up to CLASSIC_MAX frames, diffusers'
#      pipeline, the I/O path;
#   2. the profile (PROFILE frames, default 240; 0: none): one default run under torch.profiler, summed by model
#      and kernel family, with the GPU's idle gaps (scripts/profile_run.py), into NAME-profile.json beside the
#      bench's JSON. It comes before the levers and DEADLINE does not apply to it, so every run brings it back;
#   3. the levers (LEVERS frames, default 240; 0: none), one changed at a time, in LEVER_LIST's order: least
#      known first, fast_decode_compile (TAESD + torch.compile: the fastest options together) last, as its first
#      run compiles the whole UNet for minutes. No lever starts DEADLINE seconds (default 270) after the bench
#      started; DEADLINE=inf runs them all.
# Why 270: in run 2 (BENCHMARKS.md) step 1 took about 2 minutes (model build, warm-up, the three lengths and
# diffusers' pipeline; the classic rows at 48 and 160 frames and the ffmpeg I/O baselines add some now), a
# 240-frame lever about 15 s and the compile lever's first run 163 s; the profile adds a 240-frame run under the
# profiler and its summary, not yet timed on a GPU. So the compile lever starts only if it can end by about 7.5
# minutes, which with gpu_tests.sh's minute or so keeps the prepared command near the 9 minutes a lease allows.
# The JSON goes to $OUT (when set) or ./benchmarks/, saved after every row, the profile and every lever (a run
# cut off keeps what it measured); the table is printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-').lower())")
dest="${OUT:-benchmarks}/${gpu}-sd15-random-$(date +%F).json"
python3 scripts/bench.py --device cuda --models sd15-random --frames "${FRAMES:-48,160,480}" --classic \
  --classic-max-frames "${CLASSIC_MAX:-160}" --profile "${PROFILE:-240}" --levers "${LEVERS:-240}" \
  --lever-list "${LEVER_LIST:-default,step_by_step,pose_then_generate,pose_onnx,fast_decode,fast_decode_compile}" \
  --deadline "${DEADLINE:-270}" --json "$dest"
echo "figures: $dest and ${dest%.json}-profile.json"
