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
if ! python3 -c "import diffusers, av, platformdirs, pytest" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="" tests/test_generate.py tests/test_pose_runtime.py "$@"
