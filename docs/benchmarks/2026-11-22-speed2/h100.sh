#!/usr/bin/env bash
# One nvidia-h100-x1: the reference-shape benchmarks (attention with the reference-style eval loop; MLP), then the GPU tests.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
B="python3 scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs data.path=/tmp/d0"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/h100_device.txt"
$B --reference-loop > "$out/h100_attention.log" 2>&1
$B --eval-passes 2 arch=trm_mlp > "$out/h100_mlp.log" 2>&1
for f in "$out"/h100_*.log; do echo "== $f"; grep -E "device|steps/s|MFU|peak memory|eval samples|first step|Error|error" "$f" | head -12; done
python3 -m pytest -p no:logging -m gpu -rA tests/test_gpu.py > "$out/h100_gpu_tests.log" 2>&1; echo "pytest rc=$?"
grep -E "^(PASSED|FAILED|ERROR)|passed|failed" "$out/h100_gpu_tests.log" | tail -12
