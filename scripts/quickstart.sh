#!/usr/bin/env bash
# Install into ./.venv and run the main job: a short MNIST / LeNet-5 accuracy run (float
# and XNOR), then the results table. Data: $XNORBENCH_DATA if set, else ./data (downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ -n "${XNORBENCH_DATA:-}" ]; then
  data=(--data-dir "$XNORBENCH_DATA")
else
  data=(--data-dir data --download)
fi
.venv/bin/xnorbench run accuracy --dataset mnist --model lenet5 --epochs 1 "${data[@]}"
.venv/bin/xnorbench table
