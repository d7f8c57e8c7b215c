#!/usr/bin/env bash
# The GPU path in one go, at most about 5 minutes on one CUDA GPU:
#   1. the tests that need CUDA (tests/test_cuda.py; skipped on a machine without one),
#   2. dreamed transitions/s at batch 256, 1,024 and 4,096 in bf16 for every shipped dream (every
#      family), beside fp32 and bf16 matmul peaks timed in the same run.
# Writes everything under one folder (default benchmarks/results/gpu; first argument to change it).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs torch with CUDA plus this package's dependencies. On a machine with torch but not gymnasium,
# ale-py or stable-baselines3, install their wheels first (see docs/usage.md, "On a GPU machine").
set -euo pipefail
out="${1:-benchmarks/results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"

python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh: torch sees no CUDA device here; nothing to check")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PY

python -m pytest -q -p no:cacheprovider tests/test_cuda.py -o addopts="" 2>&1 | tee "$out/tests.log"

timeout 240 python benchmarks/dream_speed.py --device cuda --precision bf16 --batches 256 1024 4096 \
    --seconds 3 --loop-steps 0 --out "$out/dream_speed_cuda_bf16.json" 2>&1 | tee "$out/dream_speed.log"
echo "gpu_check.sh: results in $out"
