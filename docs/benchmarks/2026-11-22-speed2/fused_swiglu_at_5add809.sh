#!/usr/bin/env bash
# One nvidia-h200: the fused SwiGLU kernel (arch.fused_kernels), microbenchmark then whole steps, then GPU tests.
# Runs at commit 5add809 (the kernel was reverted after this measurement): git checkout 5add809 first.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
B="python3 scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs data.path=/tmp/d0"
python3 scripts/bench_kernels.py > "$out/bench_kernels.log" 2>&1; tail -4 "$out/bench_kernels.log"
$B --eval-passes 2 arch.fused_kernels=true > "$out/att_fused.log" 2>&1
$B --eval-passes 2 arch=trm_mlp arch.fused_kernels=true > "$out/mlp_fused.log" 2>&1
for f in "$out"/*_fused.log; do echo "== $f"; grep -E "steps/s|MFU|peak memory|eval samples|first step|Error|error" "$f" | head -12; done
python3 -m pytest -p no:logging -m gpu -q -rfE tests/test_kernels.py tests/test_gpu.py > "$out/gpu_tests.log" 2>&1; echo "pytest rc=$?"
grep -E "passed|failed|Error" "$out/gpu_tests.log" | tail -8
