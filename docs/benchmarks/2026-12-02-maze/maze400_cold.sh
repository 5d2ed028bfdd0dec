#!/usr/bin/env bash
# Issue 19, item 4: one cold 400-second `cfg_maze_400s` run on one H200 (nvidia-h200, carry .whl,
# timeout_s 590): new empty Inductor and Triton caches, the dataset built on first use (30x30,
# 1000 x 8 training mazes, 1000 test). Log and metrics.jsonl land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader > "$OUT/machine.log" 2>&1
timeout 540 python3 pretrain.py --config-name cfg_maze_400s logging.run_name=maze400 logging.runs_dir=/tmp/runs \
  logging.progress=false logging.wandb_mode=disabled 2>&1 | tee "$OUT/maze400_cold.log" | grep -v '^step [0-9]*/' | tail -4
cp /tmp/runs/*/maze400/metrics.jsonl "$OUT/maze400_cold.metrics.jsonl"
