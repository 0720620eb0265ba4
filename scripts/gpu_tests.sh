#!/usr/bin/env bash
# The GPU tests (pytest -m gpu): a minute's check of the CUDA-only code paths before the benchmark, on a lent GPU
# machine (torch, transformers, onnxruntime there; diffusers, av, platformdirs, pytest and its dependencies from
# the carried wheels, fetched here first for the device's Python (3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl diffusers av platformdirs importlib_metadata lazy-importer \
#       pytest pluggy iniconfig pygments packaging
# then run (from the repository root, carrying .whl):  bash scripts/gpu_tests.sh
# The files holding GPU tests only (the others import the optional controlnet_aux, which that machine lacks).
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDED="diffusers av platformdirs pytest"
source scripts/device_env.sh
python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="" tests/test_generate.py tests/test_pose_runtime.py \
  tests/test_flops.py "$@"
