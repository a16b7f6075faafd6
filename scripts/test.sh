#!/usr/bin/env bash
# Install from scratch into ./.venv, lint, type-check the package, and run the whole
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q --benchmark-disable --durations=15 "$@"
