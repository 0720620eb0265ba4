#!/usr/bin/env bash
# The prepared GPU benchmark: one command on a lent GPU machine (it has torch, transformers and onnxruntime,
# not diffusers, av or platformdirs). Fetch the missing wheels here first, for the device's Python (3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl diffusers av platformdirs importlib_metadata lazy-importer
# then run (from the repository root, carrying .whl):  bash scripts/gpu_bench.sh
# Writes the JSON to $OUT (when set) or ./benchmarks/ after every row and lever, and prints the table. About 4
# minutes on an H200 without a compile lever, 7-8 with one (its first run compiles: longer since the whole UNet
# compiles); DEADLINE=250 skips the levers that would start later. Levers in order of what is least known;
# fast_decode_compile (TAESD + torch.compile: the fastest options together) last, as its first run compiles.
# FRAMES (default 48,160,480), LEVERS (frames of the one-lever-at-a-time runs, default 240; 0: none),
# LEVER_LIST and DEADLINE (seconds after which no lever run starts) pass through to scripts/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-').lower())")
dest="${OUT:-benchmarks}/${gpu}-sd15-random-$(date +%F).json"
python3 scripts/bench.py --device cuda --models sd15-random --frames "${FRAMES:-48,160,480}" --classic \
  --classic-max-frames "${CLASSIC_MAX:-160}" --levers "${LEVERS:-240}" \
  --lever-list "${LEVER_LIST:-default,step_by_step,pose_then_generate,pose_onnx,fast_decode,fast_decode_compile}" \
  --deadline "${DEADLINE:-inf}" --json "$dest"
echo "figures: $dest"
