# Sourced by the prepared GPU scripts (gpu_bench.sh, gpu_tests.sh), from the repository root: makes the carried
# wheels (.whl: diffusers, av, platformdirs, pytest... which the lent GPU machine lacks) importable, puts the
# checkout first on the path, and prints the GPU. The wheels are installed only when one of the modules named in
# $NEEDED (default: diffusers av platformdirs) is missing.
_needed="${NEEDED:-diffusers av platformdirs}"
if ! python3 -c "import ${_needed// /, }" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
