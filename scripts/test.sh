#!/usr/bin/env bash
# Install from scratch into ./.venv, lint, type-check the package, and run the whole
# test suite on two workers (pytest-xdist; most tests wait on a child process or use one
# core), test by test (the PostgreSQL tests keep to a schema per worker).
# The kernel builds every CPU's tests load (native, portable) compile side by side while
# mypy runs, as a first run would compile them (XNORBENCH_BUILD_DIR, default
# ~/.cache/xnorbench/extensions); a current build is reused, a failed one fails here.
# Bytecode is written by the first import of each module instead of by pip for every
# file installed (PYTHONDONTWRITEBYTECODE, where the machine sets it, is unset here).
set -euo pipefail
cd "$(dirname "$0")/.."
unset PYTHONDONTWRITEBYTECODE
XNORBENCH_PIP_COMPILE=0 bash scripts/install.sh
.venv/bin/ruff check .
builds=()
for b in native portable; do
  .venv/bin/python -c "from xnorbench.xnor.kernels import load_kernels; load_kernels(build='$b')" &
  builds+=($!)
done
.venv/bin/mypy
for pid in "${builds[@]}"; do wait "$pid"; done
.venv/bin/python -m pytest -q --benchmark-disable --durations=15 -n 2 --dist load "$@"
