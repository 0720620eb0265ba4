#!/usr/bin/env bash
# The GPU tests (pytest -m gpu): a minute's check of the CUDA-only code paths before the benchmark, on a lent GPU
# machine. It has torch, transformers and onnxruntime; diffusers, av, platformdirs, pytest and its dependencies
# come from the carried wheels, fetched here first for the device's Python (3.12). Run it from the repository
# root, carrying .whl, before scripts/gpu_bench.sh: the exact commands are in docs/performance.md, "The prepared
# GPU run".
# Every file holding GPU tests, and only those: a file importing the optional controlnet_aux at module level would
# fail to import there (that machine lacks it). tests/test_gpu_scripts.py checks this list against the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDED="diffusers av platformdirs pytest"
source scripts/device_env.sh
python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="" tests/test_sampler.py tests/test_pose_runtime.py \
  tests/test_flops.py tests/test_generation_options.py "$@"
