#!/usr/bin/env bash
# Kernel check on a lent GPU machine's host CPU (an AVX-512 VPOPCNTDQ Xeon so far): the
# exactness tests on that ISA, the channel / filter-size sweep at 1 and 2 threads, the
# speedup floors, and the report, all under $OUT. The kernels there are the AVX-512 path,
# which this workplace's AMD CPUs (AVX2) never build.
#
# First `bash scripts/stamp_commit.sh` here (the copy has no .git), then run through the
# device tool with carry [".whl"] (the pure-Python SQLAlchemy wheel):
#   bash scripts/device_kernels.sh
set -uo pipefail
: "${OUT:?OUT must name the output folder}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
if [ -f .xnorbench-commit ]; then   # left by scripts/stamp_commit.sh (a copy's .git may be stale)
  read -r XNORBENCH_GIT_COMMIT XNORBENCH_GIT_DIRTY < .xnorbench-commit
  export XNORBENCH_GIT_COMMIT XNORBENCH_GIT_DIRTY
fi
log="$OUT/device_kernels.log"
db="$OUT/xnorbench.db"
cp reports/gpu-h200/xnorbench.db "$db"   # new runs append; the newest sweep wins a point
{
  date -u; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Flags" | sed 's/Flags:.*\(avx512[a-z_]*popcnt[a-z]*\).*/Flags: ... \1 .../'
  python3 -c "import torch; print('torch', torch.__version__)"
  python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py
  python3 -c "from xnorbench.xnor.kernels import kernel_isa; print('kernel path', kernel_isa())"
  for t in 1 2; do
    python3 -m xnorbench.cli --db "$db" sweep --threads "$t" --rounds 7 --no-progress
  done
  XNORBENCH_CHECK_TARGETS=1 python3 -m pytest -q -p no:cacheprovider tests/benchmarks \
    -k targets -rA
  python3 -m xnorbench.cli --db "$db" table --suite sweep
  python3 -m xnorbench.cli --db "$db" report --output "$OUT/REPORT.md"
  date -u
} 2>&1 | tee "$log"
