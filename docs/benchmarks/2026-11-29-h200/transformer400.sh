#!/usr/bin/env bash
# The transformer baseline under cfg_lsa_400s's recipe and budget (400 s of training, compile included, as for TRM),
# one nvidia-h200, 2026-11-29.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
timeout 480 python3 pretrain.py --config-name cfg_lsa_400s arch=transformer "data.path=$PWD/data/lsa-9x9-10k-aug10" \
  logging.runs_dir=/tmp/runs logging.run_name=lsa400-transformer logging.progress=false 2>&1 | grep -v "^W1\|^I1" | tail -8 \
  | tee "$OUT/lsa400_transformer.log"
cp /tmp/runs/trm-lsa/lsa400-transformer/metrics.jsonl "$OUT/lsa400_transformer.metrics.jsonl"
