#!/usr/bin/env bash
# Sets up v2v in ./.venv (created if missing). `--dev` adds the test dependencies.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.v2v-installed${extra:+-dev}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing v2v${extra} into .venv (first time: a few minutes; torch is large)" >&2
  .venv/bin/python -m pip install --disable-pip-version-check -q -e ".${extra}"
  touch "$stamp"
fi
