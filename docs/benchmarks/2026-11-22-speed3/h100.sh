#!/usr/bin/env bash
# nvidia-h100-x1, the current build (SwiGLU as two matmuls): attention (with the reference-style
# evaluation loop) and the MLP variant, on the LSA 9x9 shape.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > "$out/h100_device.txt"
B="python3 scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs data.path=/tmp/d0"
$B --reference-loop > "$out/h100_attention.log" 2>&1
grep -E "steps/s|MFU|peak memory|eval samples|first step" "$out/h100_attention.log"
$B arch=trm_mlp --eval-passes 1 > "$out/h100_mlp.log" 2>&1
grep -E "steps/s|MFU|peak memory|eval samples|first step" "$out/h100_mlp.log"
