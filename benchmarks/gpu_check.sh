#!/usr/bin/env bash
# The GPU path in one go, at most about 5 minutes on one CUDA GPU:
#   1. the tests that need CUDA (tests/test_cuda.py; skipped on a machine without one),
#   2. dreamed transitions/s at batch 256, 1,024 and 4,096 in bf16 for every shipped dream (every
#      family), beside fp32 and bf16 matmul peaks timed in the same run,
#   3. the Boxing token dream at those batches again with speculative decoding on at every batch
#      size (on a CPU it pays only up to 16 dreams, docs/speed_levers.md; on a GPU, whose calls are
#      launch-bound, it may pay at any size: compare with step 2's token rows),
#   4. the KungFuMaster diffusion dream compiled with torch.compile's "reduce-overhead" mode (CUDA
#      graphs) at batch 1,024 and 4,096 (compiling counts against the 2 minutes it is given; on a
#      CPU the compiled U-Net runs 1.2 to 1.3 times as fast, docs/speed_levers.md).
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
python -c "from neuralenvs.cli import main; main()" resample --checkpoint checkpoints/boxing-token \
    --out "$out/boxing-token-draft" --set draft_max_batch=4096
timeout 45 python benchmarks/dream_speed.py --device cuda --precision bf16 --batches 256 1024 4096 \
    --dreams "$out/boxing-token-draft" --seconds 3 --loop-steps 0 --out "$out/dream_speed_cuda_bf16_token_draft.json" \
    2>&1 | tee "$out/dream_speed_token_draft.log"
timeout 120 python benchmarks/dream_speed.py --device cuda --precision bf16 --batches 1024 4096 \
    --dreams neuralenvs/KungFuMaster-diffusion-v0 --compile reduce-overhead --seconds 3 --loop-steps 0 \
    --out "$out/dream_speed_cuda_bf16_compiled.json" 2>&1 | tee "$out/dream_speed_compiled.log" \
    || echo "gpu_check.sh: the compiled run did not finish in 2 minutes"
echo "gpu_check.sh: results in $out"
