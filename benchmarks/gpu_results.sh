#!/usr/bin/env bash
# One GPU window: train the runs of a profile still missing from results/<profile> that fit the budget,
# several at once, and pack everything finished into OUT/results-<profile>.tar.gz (one file, well under
# 16 MB). Run from the repository root on the GPU machine (PYTHONPATH=$PWD when skinlib is not installed),
# with the data in $SKINLIB_DATA_DIR or data/. Afterwards, on your machine:
#   tar -xzf OUT/results-gpu.tar.gz -C results/ && git add results/gpu && make book PROFILE=gpu
#
#   PYTHONPATH=$PWD benchmarks/gpu_results.sh 480 "$OUT"           # gpu profile, 8 minutes
#   benchmarks/gpu_results.sh 120 /tmp/out smoke -p subset 0.03     # CPU dry run
set -euo pipefail
budget="${1:?usage: benchmarks/gpu_results.sh SECONDS OUT [PROFILE] [skinlib options...]}"
out="${2:?usage: benchmarks/gpu_results.sh SECONDS OUT [PROFILE] [skinlib options...]}"
profile="${3:-gpu}"
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
"${PYTHON:-python}" -m skinlib results window --profile "$profile" --budget "$budget" --out "$out" \
  --jobs "${SKINLIB_JOBS:-auto}" "$@" 2>&1 | tee "$out/window.log"
