#!/usr/bin/env bash
# Install from scratch into ./.venv, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q --benchmark-disable "$@"
