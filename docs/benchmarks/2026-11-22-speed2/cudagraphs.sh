#!/usr/bin/env bash
# One nvidia-h200: does train.compile_mode=reduce-overhead (CUDA graphs) work through the real loop, and what does it gain?
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs data.path=/tmp/d0 --eval-passes 1 \
  train.compile_mode=reduce-overhead > "$out/att_reduce_overhead.log" 2>&1; echo "benchmark rc=$?"
grep -E "steps/s|MFU|peak memory|eval samples|first step|Error|error" "$out/att_reduce_overhead.log" | head -12
timeout 200 python3 pretrain.py --config-name cfg_lsa data.path=/tmp/d0 logging.runs_dir=/tmp/runs logging.progress=false \
  train.compile_mode=reduce-overhead train.max_steps=120 train.log_every=20 train.eval_interval=60 logging.run_name=ro \
  > "$out/pretrain_reduce_overhead.log" 2>&1; echo "pretrain rc=$?"
grep -v "^\[\|^[VIW]1" "$out/pretrain_reduce_overhead.log" | tail -15
