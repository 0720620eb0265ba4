#!/usr/bin/env bash
# The prepared GPU benchmark: one command on a lent GPU machine (it has torch, transformers and onnxruntime,
# not diffusers, av or platformdirs). Fetch the missing wheels here first, for the device's Python:
#   pip download --no-deps diffusers av platformdirs importlib_metadata -d .whl --python-version 3.12 --only-binary=:all:
# then run (from the repository root, carrying .whl):  bash scripts/gpu_bench.sh
# Writes the JSON to $OUT (when set) or ./benchmarks/, and prints the table. About 5 minutes on an H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import diffusers, av, platformdirs" 2>/dev/null; then
  python3 -m pip install -q --no-deps .whl/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-').lower())")
dest="${OUT:-benchmarks}/${gpu}-sd15-random-$(date +%F).json"
python3 scripts/bench.py --device cuda --models sd15-random --frames "${FRAMES:-48,160,480}" --classic --json "$dest"
echo "figures: $dest"
