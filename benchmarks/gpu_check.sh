#!/usr/bin/env bash
# The one script to run when a GPU is lent: builds the environment (scripts/env.sh, minutes on
# a fresh machine, timed apart), checks that torch sees CUDA (else fails), then runs
# benchmarks/gpu_check.py: the whole pipeline with resnet18 at 224 px on generated images and
# the training throughput table (bf16 + channels_last, compile on/off, data on the device vs
# streamed, train.devices=auto). Under 5 minutes on one H200 once the environment exists.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine, from anywhere
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # tiny sizes on the CPU: checks the script
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
PATH="$(bash scripts/env.sh)/bin:$PATH"
export PATH
echo "environment ready in $((SECONDS - start))s"
if [ "${1:-}" != "--cpu-dry-run" ]; then
    if ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        python -c 'import torch; print(f"torch {torch.__version__}, torch.version.cuda={torch.version.cuda}")' >&2
        if command -v nvidia-smi >/dev/null; then nvidia-smi >&2 || true; fi
        echo "gpu_check: FAILED: CUDA is not available to torch; this check needs a GPU" \
            "(use --cpu-dry-run to check the script itself on the CPU)" >&2
        exit 1
    fi
    if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
fi
exec python benchmarks/gpu_check.py "$@"
