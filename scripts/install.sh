#!/usr/bin/env bash
# Create ./.venv (if missing) and install xnorbench with its test extras into it.
# XNORBENCH_PIP_COMPILE=0 leaves byte-compiling to the first import of each module
# (pip byte-compiles every file it installs: 58 s of the install on a 2-vCPU Zen 3), for
# a run that writes bytecode (PYTHONDONTWRITEBYTECODE unset): scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
compile=""
if [ "${XNORBENCH_PIP_COMPILE:-1}" = 0 ]; then compile="--no-compile"; fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q $compile torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q $compile -e ".[test]"
