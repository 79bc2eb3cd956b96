#!/usr/bin/env bash
# The checks of a GPU machine, in one run (under 8 minutes on one GPU):
#   1. the device tests (tests/test_device.py on DEVICE: DyT's gathered
#      evaluation, autocast in bfloat16 and float16, an AMP training step,
#      host synchronisations),
#   2. the speed table of ViT-B/16 224 at batches 1 and 8: dense, adapter-only
#      and DyT, eager and compiled, in float32 and in each low precision
#      (bfloat16, and float16 on a GPU), timed with CUDA events on a GPU, with
#      each model's host synchronisations per forward, as JSON in OUT_DIR.
#
# Usage: tools/analysis_tools/gpu_check.sh [DEVICE] [OUT_DIR] [BENCHMARK ARGS...]
#   DEVICE    cuda (default), cuda:1, ... or cpu (the test suite runs it so)
#   OUT_DIR   work_dirs/gpu_check by default: tests.log, speed_<dtype>.json
#   BENCHMARK ARGS replace the speed table's setting
#             (default: --preset vit-b-224 --batch 1 8 --repeats 20)
# COMPILE_BACKEND=eager compiles without generating code (quicker, for tests).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
DEVICE=${1:-cuda}
OUT=${2:-work_dirs/gpu_check}
shift $(( $# < 2 ? $# : 2 ))
SETTING=("$@")
if (( ${#SETTING[@]} == 0 )); then
    SETTING=(--preset vit-b-224 --batch 1 8 --repeats 20)
fi
mkdir -p "$OUT"

if [[ $DEVICE == cuda* ]]; then
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
        || { echo "gpu_check: CUDA is not available here" >&2; exit 1; }
    DTYPES=(bfloat16 float16)
    TIMER=events
else
    DTYPES=(bfloat16)
    TIMER=wall
fi

echo "[gpu_check] $(date +%H:%M:%S) device tests on $DEVICE"
MMDYT_TEST_DEVICE=$DEVICE "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_device.py 2>&1 | tee "$OUT/tests.log"

for dtype in "${DTYPES[@]}"; do
    echo "[gpu_check] $(date +%H:%M:%S) speed table, $dtype"
    "$PY" tools/analysis_tools/benchmark_backbone.py "${SETTING[@]}" \
        --device "$DEVICE" --timer "$TIMER" --bf16 --amp-dtype "$dtype" \
        --compile --compile-backend "${COMPILE_BACKEND:-inductor}" \
        --json "$OUT/speed_$dtype.json" 2>&1 | tee "$OUT/speed_$dtype.log"
done
echo "[gpu_check] $(date +%H:%M:%S) done: $OUT"
