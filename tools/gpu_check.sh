#!/usr/bin/env bash
# GPU check for sessions lent a GPU: bf16 throughput and MFU of SFT, KD (1.5B-shaped teacher) and GRPO steps
# of a Qwen2.5-0.5B-shaped model (random weights), measured by the step benchmark (`tools/bench.py step`,
# workload random-0.5b). Results as JSON under $OUT (default ./gpu_check_out).
# Uses the machine's own torch/transformers/lightning; the repository is put on PYTHONPATH (no install).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia_smi.csv" 2>&1 || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$out/versions.txt"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout 540 \
  python3 tools/gpu_check.py --out "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.log"
