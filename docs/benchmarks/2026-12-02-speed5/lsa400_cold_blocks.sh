#!/usr/bin/env bash
# Issue 18, item "cfg_lsa_400s run cold on one H200": not yet run (device time ran out on
# 2026-12-02). One nvidia-h200 call of ~8 min (timeout_s 560): a cold cache, the new default
# train.compile_scope=blocks; compare steps reached and eval/lsa/optimal_cost_rate with the
# 3,350 steps / 83.1% of the cold `step`-scope run in DESIGN.md. Results land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
timeout 520 python3 pretrain.py --config-name cfg_lsa_400s logging.run_name=cold400 logging.runs_dir=/tmp/runs \
  logging.progress=false logging.wandb_mode=disabled 2>&1 | tee "$OUT/lsa400_cold.log" | tail -3
cp /tmp/runs/*/cold400/metrics.jsonl "$OUT/lsa400_cold.metrics.jsonl"
