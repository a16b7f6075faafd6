#!/usr/bin/env bash
# Install from scratch into ./.venv, lint, type-check the package, and run the whole
# test suite: two workers (pytest-xdist; most tests wait on a child process or use one
# core), each test file on one worker (the PostgreSQL tests share a server database).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q --benchmark-disable --durations=15 -n 2 --dist loadfile "$@"
