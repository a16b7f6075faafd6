#!/usr/bin/env bash
# Before the tree is copied to a machine without .git (the device machine): write the
# commit and whether the tree is dirty to .xnorbench-commit, so the runs made there record
# them (scripts/gpu_results.py and scripts/device_kernels.sh export them as
# XNORBENCH_GIT_COMMIT / XNORBENCH_GIT_DIRTY).
set -euo pipefail
cd "$(dirname "$0")/.."
dirty=0
[ -n "$(git status --porcelain --untracked-files=no)" ] && dirty=1
echo "$(git rev-parse HEAD) $dirty" > .xnorbench-commit
cat .xnorbench-commit
